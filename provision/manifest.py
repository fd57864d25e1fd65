"""A fleet of bindings from one TOML file: `plan` (live state, no state file), `apply` and `destroy`.

The whole file is validated before any request. Then each machine goes its way as soon as one of
`parallel` workers is free: it is read (a typo leaves no orphan identity), its identities are made (each
once), it gets them all in one PATCH, and its bindings go on to their server, where the roles are made
with one connection per server and database, a transaction per role, while other machines are still
being updated. `destroy` runs the same steps backwards, the identities last. One binding's failure
stops only what depends on it, unless `fail_fast`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import queue
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from provision import bind as bind_
from provision import validate
from provision.azure import machines
from provision.azure.arm import Once
from provision.azure.machines import Machine
from provision.bind import ROLE_DATABASE, Binding, Databases
from provision.db.grants import parse_grants
from provision.errors import ExitStatus, InvalidInput, ProvisionError, unexpected
from provision.plan import Action, Failure, Result

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

if TYPE_CHECKING:
    import psycopg

    from provision.azure.arm import Arm
    from provision.azure.identities import Identity

FLAVORS = ("auto", "single", "flexible")
SERVER_KEYS = {"host", "port", "database", "admin_user", "sslmode", "sslrootcert", "flavor", "server_resource_group"}
# Two ways to name a binding's server: a binding that uses one replaces the other from [defaults].
BY_NAME, BY_HOST = ("server", "server_resource_group"), ("host", "admin_user")
DEFAULT_KEYS = {"resource_group", "server"} | SERVER_KEYS
BINDING_KEYS = {"identity", "vm", "vmss", "vm_resource_group", "role", "member_of", "grants"} | DEFAULT_KEYS
_BINDING_HEADER = re.compile(r"^\s*\[\[\s*binding\s*\]\]")

T = TypeVar("T")


@dataclass(frozen=True)
class Server:
    """Where a binding's role lives and how to log in there as the Entra administrator."""

    host: str
    port: int
    admin_user: str
    sslmode: str = "verify-full"
    sslrootcert: str | None = None
    flavor: str = "auto"
    named: tuple[str, str] | None = None  # `server =`: its resource group and name, until resolved

    @property
    def label(self) -> str:
        return self.named[1] if self.named else f"{self.host}:{self.port}"

    @property
    def key(self) -> tuple[Any, ...]:
        """The same server, however it is written."""
        return (self.named[0].lower(), self.named[1]) if self.named else (self.host.lower(), self.port)


@dataclass(frozen=True)
class Entry:
    binding: Binding
    server: Server
    line: int  # of its [[binding]] header


@dataclass(frozen=True)
class Manifest:
    path: str
    entries: tuple[Entry, ...]


# --- reading the file (pure) --------------------------------------------------------------------------


def parse(text: str, path: str) -> Manifest:
    """Every binding of the file, validated; InvalidInput naming the file and line of the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidInput(f"{path}: not valid TOML: {error}") from None
    lines = [number for number, line in enumerate(text.splitlines(), 1) if _BINDING_HEADER.match(line)]
    _refuse_unknown(text, path, 1, "the file", data, {"defaults", "binding"})
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InvalidInput(f"{path}: defaults must be a table ([defaults])")
    _refuse_unknown(text, path, _line_of(text, "[defaults]"), "[defaults]", defaults, DEFAULT_KEYS)
    bindings = data.get("binding", [])
    if not isinstance(bindings, list) or not bindings:
        raise InvalidInput(f"{path}: no bindings: add [[binding]] tables")
    entries = []
    for index, table in enumerate(bindings):
        line = lines[index] if index < len(lines) else 1
        if not isinstance(table, dict):
            raise InvalidInput(f"{path}: binding must be an array of tables ([[binding]])")
        _refuse_unknown(text, path, line, "[[binding]]", table, BINDING_KEYS)
        inherited = dict(defaults)
        for way, other in ((BY_NAME, BY_HOST), (BY_HOST, BY_NAME)):
            if any(key in table for key in way):
                for key in other:
                    inherited.pop(key, None)
        try:
            entries.append(_entry({**inherited, **table}, line))
        except InvalidInput as error:
            raise InvalidInput(f"{path}:{line}: {error.message}") from None
    _refuse_clashes(path, entries)
    return Manifest(path, tuple(entries))


def _line_of(text: str, needle: str) -> int:
    return next((number for number, line in enumerate(text.splitlines(), 1) if line.strip() == needle), 1)


def _refuse_unknown(text: str, path: str, start: int, where: str, table: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        key = unknown[0]
        written = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=.]")
        lines = text.splitlines()
        line = next((n for n in range(start, len(lines) + 1) if written.match(lines[n - 1])), start)
        raise InvalidInput(f"{path}:{line}: {where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def _text(values: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = values.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string, not {type(value).__name__}")
    return value


def _texts(values: dict[str, Any], key: str) -> tuple[str, ...]:
    value = values.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{key} must be a list of strings")
    return tuple(value)


def _entry(values: dict[str, Any], line: int) -> Entry:
    group = validate.resource_group(str(_text(values, "resource_group")), "resource_group")
    identity = validate.identity_name(str(_text(values, "identity")), "identity")
    vm, vmss = _text(values, "vm", False), _text(values, "vmss", False)
    if bool(vm) == bool(vmss):
        raise InvalidInput("give vm or vmss (one of them)")
    machine_group = _text(values, "vm_resource_group", False)
    machine = Machine(
        "vm" if vm else "vmss",
        validate.resource_group(machine_group, "vm_resource_group") if machine_group else group,
        validate.machine_name(str(vm or vmss), "vm" if vm else "vmss"),
    )
    role = validate.role_name(str(_text(values, "role")), "role")
    server = _server(values, group)
    database = _text(values, "database", False) or ROLE_DATABASE
    binding = Binding(
        group,
        identity,
        machine,
        role,
        _texts(values, "member_of"),
        parse_grants(_texts(values, "grants"), "grants"),
        database,
    )
    return Entry(binding, server, line)


def _server(values: dict[str, Any], group: str) -> Server:
    """host + admin_user, or server (+ server_resource_group, default: the binding's resource_group)."""
    from provision.azure.servers import server_name

    port = values.get("port", 5432)
    if not isinstance(port, int) or isinstance(port, bool):
        raise InvalidInput("port must be a number")
    flavor = _text(values, "flavor", False) or "auto"
    if flavor not in FLAVORS:
        raise InvalidInput(f"flavor {flavor!r}: one of {', '.join(FLAVORS)}")
    port = validate.port(port, "port")
    sslmode = validate.sslmode(_text(values, "sslmode", False) or "verify-full", "sslmode")
    sslrootcert = _text(values, "sslrootcert", False)
    name = _text(values, "server", False)
    if name is None:
        if "server_resource_group" in values:
            raise InvalidInput("server_resource_group goes with server")
        admin_user = str(_text(values, "admin_user"))
        if flavor == "single":
            validate.single_server_user(admin_user, "admin_user")
        host = validate.host(str(_text(values, "host")), "host")
        return Server(host, port, admin_user, sslmode, sslrootcert, flavor)
    given = [key for key in BY_HOST if key in values]
    if given:
        raise InvalidInput(
            f"server and {' and '.join(given)}: server reads the host and the admin from Resource Manager;"
            " give one way or the other"
        )
    if flavor == "single":
        raise InvalidInput(
            "server names a flexible server; Single Server was retired on 2025-03-28 and has no Resource Manager"
            " name here: give host and admin_user"
        )
    server_group = _text(values, "server_resource_group", False)
    named = (
        validate.resource_group(server_group, "server_resource_group") if server_group else group,
        server_name(name, "server"),
    )
    return Server("", port, "", sslmode, sslrootcert, "flexible", named)


def _refuse_clashes(path: str, entries: list[Entry]) -> None:
    """A role is the server's (not a database's): one role, one identity. The same binding twice is a typo."""
    seen: dict[tuple[Any, ...], Entry] = {}
    for entry in entries:
        b = entry.binding
        key = (entry.server.key, b.role)
        earlier = seen.setdefault(key, entry)
        if earlier is entry:
            continue
        e = earlier.binding
        if (e.resource_group.lower(), e.identity.lower()) != (b.resource_group.lower(), b.identity.lower()):
            raise InvalidInput(
                f"{path}:{entry.line}: role {b.role} on {entry.server.label} is given to two identities:"
                f" {e.identity} (line {earlier.line}) and {b.identity}"
            )
        if e.database == b.database:
            raise InvalidInput(f"{path}:{entry.line}: duplicate binding (the same as line {earlier.line})")


# --- running it ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one binding."""

    entry: Entry
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failure: Failure | None = None
    skipped: str | None = None  # why it was not run (--fail-fast)
    identity: Identity | None = None

    @property
    def failed(self) -> bool:
        return self.failure is not None or self.skipped is not None

    @property
    def changed(self) -> bool:
        return any(action.changes for action in self.actions)

    def status(self, dry_run: bool) -> str:
        if self.failure is not None:
            return "failed"
        if self.skipped is not None:
            return "skipped"
        if self.changed:
            return "would change" if dry_run else "changed"
        return "in sync"

    def as_dict(self, dry_run: bool) -> dict[str, Any]:
        b = self.entry.binding
        data: dict[str, Any] = {
            "line": self.entry.line,
            "identity": b.identity,
            "machine": {"kind": b.machine.kind, "name": b.machine.name},
            "role": b.role,
            "server": self.entry.server.label,
            "status": self.status(dry_run),
            "changed": self.changed,
            "actions": [action.as_dict() for action in self.actions],
        }
        if self.warnings:
            data["warnings"] = self.warnings
        if self.failure is not None:
            data["error"] = self.failure.as_dict()["error"]
        if self.skipped is not None:
            data["skipped"] = self.skipped
        return data


@dataclass
class Report:
    dry_run: bool
    outcomes: list[Outcome]

    @property
    def changed(self) -> bool:
        return any(outcome.changed for outcome in self.outcomes)

    @property
    def exit_status(self) -> ExitStatus:
        if any(outcome.failed for outcome in self.outcomes):
            return ExitStatus.FAILURE
        if self.dry_run and self.changed:
            return ExitStatus.PENDING_CHANGES
        return ExitStatus.SUCCESS

    def as_dict(self) -> dict[str, Any]:
        statuses = [outcome.status(self.dry_run) for outcome in self.outcomes]
        data: dict[str, Any] = {"changed": self.changed}
        if self.dry_run:
            data["dryRun"] = True
        data["bindings"] = [outcome.as_dict(self.dry_run) for outcome in self.outcomes]
        data["summary"] = {status: statuses.count(status) for status in dict.fromkeys(statuses)}
        return data

    def render_text(self) -> str:
        header = ("line", "identity", "machine", "role", "server", "result")
        rows = [
            (
                str(o.entry.line),
                o.entry.binding.identity,
                o.entry.binding.machine.label,
                o.entry.binding.role,
                o.entry.server.label,
                o.status(self.dry_run),
            )
            for o in self.outcomes
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]
        ]
        for outcome in self.outcomes:
            if self.dry_run:
                for action in outcome.actions:
                    if action.changes:
                        lines.append(
                            f"line {outcome.entry.line}: would {action.verb}: {action.target} ({action.reason})"
                        )
            if outcome.failure is not None:
                lines.append(f"line {outcome.entry.line}: error: {outcome.failure.message}")
        summary = self.as_dict()["summary"]
        lines.append(f"{len(self.outcomes)} bindings: " + ", ".join(f"{n} {status}" for status, n in summary.items()))
        return "\n".join(lines)


Connect = Callable[[Server, str], contextlib.AbstractContextManager["psycopg.Connection"]]


class Progress(Protocol):
    """Told how the bindings move on: every outcome first, then what each is doing and when each is done."""

    def begin(self, outcomes: Sequence[Outcome]) -> None: ...

    def doing(self, outcome: Outcome, what: str) -> None: ...

    def done(self, outcome: Outcome, count: int, total: int) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool
    parallel: int  # machines (and servers) worked on at once
    fail_fast: bool = False  # start nothing new once a binding has failed
    progress: Progress | None = None


class _Run:
    """One plan, apply or destroy: the outcomes, and the bounded pool every phase runs in."""

    def __init__(self, manifest: Manifest, options: RunOptions):
        self.outcomes = [Outcome(entry) for entry in manifest.entries]
        self.dry_run, self.parallel, self.fail_fast = options.dry_run, options.parallel, options.fail_fast
        self._progress = options.progress
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reported: set[int] = set()
        if self._progress is not None:
            self._progress.begin(self.outcomes)

    def alive(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.failed]

    def stopped(self) -> bool:
        return self._stop.is_set()

    def fail(self, outcomes: Iterable[Outcome], error: Exception) -> None:
        failure = Failure.of(error if isinstance(error, ProvisionError) else unexpected(error, os.environ))
        with self._lock:
            for outcome in outcomes:
                if not outcome.failed:
                    outcome.failure = failure
                    self._report(outcome)
            if self.fail_fast:
                self._stop.set()

    def finish(self, outcome: Outcome) -> None:
        with self._lock:
            self._report(outcome)

    def doing(self, outcomes: Iterable[Outcome], what: str) -> None:
        """What the progress shows for each binding from now on."""
        if self._progress is not None:
            with self._lock:
                for outcome in outcomes:
                    self._progress.doing(outcome, what)

    def _report(self, outcome: Outcome) -> None:
        if id(outcome) not in self._reported and self._progress is not None:
            self._reported.add(id(outcome))
            self._progress.done(outcome, len(self._reported), len(self.outcomes))

    def each(
        self, groups: dict[Any, list[Outcome]], work: Callable[[Any, list[Outcome]], None], doing: str | None = None
    ) -> None:
        """Run `work` on every group of still-alive outcomes, at most `parallel` at once; a group that
        raises fails its outcomes. With fail_fast, groups not started after a failure are skipped. `doing`
        is what the progress shows for each member while its group runs."""

        def run(key: Any, members: list[Outcome]) -> None:
            members = [m for m in members if not m.failed]
            if not members:
                return
            if self._stop.is_set():
                with self._lock:
                    for member in members:
                        member.skipped = "not run: --fail-fast after an earlier failure"
                        self._report(member)
                return
            if doing is not None:
                self.doing(members, doing)
            try:
                work(key, members)
            except Exception as error:
                self.fail(members, error)

        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="provision") as pool:
            for future in [pool.submit(run, key, members) for key, members in groups.items()]:
                future.result()


def _grouped(outcomes: list[Outcome], key: Callable[[Outcome], Any]) -> dict[Any, list[Outcome]]:
    groups: dict[Any, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(key(outcome), []).append(outcome)
    return groups


def _identity_key(outcome: Outcome) -> tuple[str, str]:
    b = outcome.entry.binding
    return (b.resource_group.lower(), b.identity.lower())


def _machine_key(outcome: Outcome) -> Machine:
    m = outcome.entry.binding.machine
    return Machine(m.kind, m.resource_group.lower(), m.name.lower())


@contextlib.contextmanager
def _server_databases(connect: Connect, server: Server) -> Iterator[Callable[[str], Databases]]:
    """One connection per database of the server, opened when first needed and closed at the end."""
    with contextlib.ExitStack() as stack:
        opened: dict[str, psycopg.Connection] = {}

        def conn(database: str) -> psycopg.Connection:
            if database not in opened:
                opened[database] = stack.enter_context(connect(server, database))
            return opened[database]

        yield lambda database: Databases(conn(ROLE_DATABASE), conn(database))


def _resolve_servers(arm: Arm, run: _Run) -> None:
    """Each server the file names by its Resource Manager name, read once for the run: its host, its flavor
    and the signed-in principal's admin login. A server that cannot be read fails its bindings only."""
    from provision.azure import servers

    named = [outcome for outcome in run.alive() if outcome.entry.server.named]
    if not named:
        return
    postgres = arm.postgres_client()

    def resolve(_: Any, members: list[Outcome]) -> None:
        named_as = members[0].entry.server.named
        assert named_as is not None
        login = servers.admin_login(postgres, arm, *named_as)
        for member in members:
            server = dataclasses.replace(
                member.entry.server, host=login.host, admin_user=login.user, flavor=login.flavor, named=None
            )
            member.entry = dataclasses.replace(member.entry, server=server)

    run.each(_grouped(named, lambda o: o.entry.server.key), resolve, "reading the server")


class _ServerWork:
    """The database side of the bindings, each handed over as soon as its Resource Manager side is done: a
    worker per server takes them in the order they come, on one connection per database (opened when first
    needed), a transaction each. `finish` when it is a binding's last step. A context manager: leaving it
    waits for every binding handed over."""

    def __init__(self, run: _Run, connect: Connect, step: Callable[[Databases, Server, Outcome], Result], finish: bool):
        self._run, self._connect, self._step, self._finish = run, connect, step, finish
        self._pool = ThreadPoolExecutor(max_workers=run.parallel, thread_name_prefix="provision-db")
        self._lock = threading.Lock()
        self._queues: dict[Server, queue.SimpleQueue[tuple[Outcome, threading.Event] | None]] = {}
        self._workers: list[Future[None]] = []
        self._closed = False

    def __enter__(self) -> _ServerWork:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        for worker in self._workers:
            worker.result()
        self._pool.shutdown()

    def close(self) -> None:
        """No binding comes after this: each worker ends once its queue is empty, making room for the workers
        of servers beyond `parallel`, which would otherwise wait for the end of the run to start."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for waiting in self._queues.values():
                    waiting.put(None)

    def hand_over(self, outcome: Outcome) -> threading.Event:
        """Queue the binding on its server; the event is set once its database side is done (or failed)."""
        done = threading.Event()
        server = outcome.entry.server
        with self._lock:
            assert not self._closed, "a binding handed over after close() would never be done"
            waiting = self._queues.get(server)
            if waiting is None:
                waiting = self._queues[server] = queue.SimpleQueue()
                self._workers.append(self._pool.submit(self._work, server, waiting))
        waiting.put((outcome, done))
        return done

    def _work(self, server: Server, waiting: queue.SimpleQueue[tuple[Outcome, threading.Event] | None]) -> None:
        with _server_databases(self._connect, server) as databases:
            while (item := waiting.get()) is not None:
                member, done = item
                try:
                    self._one(databases, server, member)
                finally:
                    done.set()

    def _one(self, databases: Callable[[str], Databases], server: Server, member: Outcome) -> None:
        run = self._run
        if run.stopped():
            member.skipped = "not run: --fail-fast after an earlier failure"
            run.finish(member)
            return
        run.doing([member], "role and grants" if self._finish else "revoking and dropping the role")
        try:
            result = self._step(databases(member.entry.binding.database), server, member)
        except Exception as error:
            run.fail([member], error)
            return
        member.actions.extend(result.actions)
        member.warnings.extend(result.warnings)
        if self._finish:
            run.finish(member)


def apply(arm: Arm, connect: Connect, manifest: Manifest, options: RunOptions) -> Report:
    """Converge, each machine as soon as a worker is free: read it, make its identities (each once, however
    many machines it goes to), attach them all with one PATCH, then hand its bindings to their servers for
    the roles and grants, while other machines are still being updated."""
    run = _Run(manifest, options)
    dry_run = options.dry_run
    _resolve_servers(arm, run)
    msi, compute = arm.identity_client(), arm.compute_client()
    made: Once[tuple[str, str], tuple[Identity, Action]] = Once()
    sharing = _grouped(run.outcomes, _identity_key)  # an identity's failure fails every binding that names it

    def role(databases: Databases, server: Server, member: Outcome) -> Result:
        assert member.identity is not None
        return bind_.ensure_role(databases, server.flavor, member.entry.binding, member.identity, dry_run)

    with _ServerWork(run, connect, role, finish=True) as roles:

        def machine(key: Machine, members: list[Outcome]) -> None:
            # The machine is read before any identity is made: a typo in its name leaves no orphan identity.
            state = machines.read_machine(compute, arm, members[0].entry.binding.machine)
            run.doing(members, "identity")
            for member in members:
                create = functools.partial(bind_.ensure_identity, arm, msi, compute, member.entry.binding, dry_run)
                try:
                    member.identity, action = made.get(_identity_key(member), create)
                except Exception as error:
                    run.fail(sharing[_identity_key(member)], error)
                    continue
                member.actions.append(action)
            alive = [m for m in members if not m.failed]
            if not alive:
                return
            run.doing(alive, "attaching")
            ids = tuple(dict.fromkeys(m.identity.id for m in alive if m.identity is not None))
            applied = machines.attach_all(compute, arm, alive[0].entry.binding.machine, ids, dry_run, None, state)
            for member in alive:
                member.actions.append(applied.action)
                roles.hand_over(member)

        run.each(_grouped(run.alive(), _machine_key), machine, "reading the machine")
    return Report(dry_run, run.outcomes)


def destroy(arm: Arm, connect: Connect, manifest: Manifest, options: RunOptions) -> Report:
    """Remove what the file declares: grants and roles, then attachments (a machine as soon as its roles
    are gone), then the identities provision created (tagged); nothing the file does not name."""
    from provision.azure import identities

    run = _Run(manifest, options)
    dry_run = options.dry_run
    _resolve_servers(arm, run)
    msi, compute = arm.identity_client(), arm.compute_client()

    def identity(_: Any, members: list[Outcome]) -> None:
        b = members[0].entry.binding
        found = identities.read_identity(msi, arm, b.resource_group, b.identity)
        for member in members:
            member.identity = found

    def role(databases: Databases, server: Server, member: Outcome) -> Result:
        return bind_.remove_role(databases, server.flavor, member.entry.binding, member.identity, dry_run)

    def detach(_: Machine, members: list[Outcome]) -> None:
        for member in members:  # its role goes first: detaching leaves the role unable to log in, not gone
            roles_done[id(member)].wait()
        members = [m for m in members if not m.failed]
        if not members:
            return
        run.doing(members, "detaching")
        ids = tuple(
            dict.fromkeys(
                m.identity.id if m.identity else m.entry.binding.identity_id(arm.subscription) for m in members
            )
        )
        applied = machines.detach_all(compute, arm, members[0].entry.binding.machine, ids, dry_run)
        for member in members:
            member.actions.append(applied.action)

    listed = identities.MachineListing(compute, arm)  # one listing for every delete, made after the detaches

    def delete(_: Any, members: list[Outcome]) -> None:
        # Only once every binding of the identity is undone: another machine may still use it otherwise.
        if len(members) == sum(1 for o in run.outcomes if _identity_key(o) == _identity_key(members[0])):
            warnings: list[str] = []
            action = bind_.delete_identity(arm, msi, members[0].entry.binding, dry_run, warnings.append, listed)
            members[0].actions.append(action)
            members[0].warnings.extend(warnings)
        for member in members:
            run.finish(member)

    run.each(_grouped(run.alive(), _identity_key), identity, "reading the identity")
    # Every role is handed over at once; a machine is detached as soon as its bindings' roles are gone.
    with _ServerWork(run, connect, role, finish=False) as roles:
        roles_done = {id(outcome): roles.hand_over(outcome) for outcome in run.alive()}
        roles.close()
        run.each(_grouped(run.alive(), _machine_key), detach, "waiting for the roles")
    run.each(_grouped(run.alive(), _identity_key), delete)
    return Report(dry_run, run.outcomes)
