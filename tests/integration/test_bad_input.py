"""Bad input, every command: exit 2, one line on stderr naming the bad value or option, and nothing
changed. Each case runs as a real CLI process against the local Azure stack; afterwards no request
of any case reached Resource Manager or the metadata service, and the roles on both database servers
are what they were.

Not bad input, so not here: role names with quotes, semicolons, spaces or non-ASCII (they are quoted
and harmless; test_role_cli.py creates them), an --identity-id in another subscription (a full
resource id names its own subscription), and a Single Server user without @server for `check`,
`psql` or `role --flavor auto` (only the server can tell its flavor; `check` explains it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import WRITE_METHODS, admin_options, invoke, roles, server_options

from provision.emulator import seed
from provision.emulator.arm.world import EXISTING_CLIENT_ID

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RG = seed.RESOURCE_GROUP
SUB = seed.SUBSCRIPTION_ID
CLIENT_ID = EXISTING_CLIENT_ID
OBJECT_ID = seed.OPERATOR_PRINCIPAL_ID
IDENTITY_PROVIDER = "providers/Microsoft.ManagedIdentity/userAssignedIdentities"
PARALLEL = 6  # CLI processes at a time
USER_AGENT = "bad-input-case/"  # azure-core appends AZURE_HTTP_USER_AGENT: it tells whose request it was

# Stand-ins, expanded per emulator: an admin's server options, or a server's for the VM-side commands.
FLEX_ADMIN, SINGLE_ADMIN = "<flexible admin>", "<single admin>"
FLEX, SINGLE = "<flexible server>", "<single server>"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    names: str  # the message names the bad value (or the option)
    env: dict[str, str | None] = field(default_factory=dict)
    in_process: bool = False  # a NUL byte cannot travel in argv: these run through click's test runner
    reads: bool = False  # only Azure can tell (the subscription's regions): reads allowed, writes never


def case(id: str, names: str, *args: str, env: dict[str, str | None] | None = None) -> Case:
    return Case(id, args, names, env or {})


def read_case(id: str, names: str, *args: str) -> Case:
    return Case(id, args, names, reads=True)


def nul_case(id: str, names: str, *args: str) -> Case:
    return Case(id, args, names, in_process=True)


CREATE = ("identity", "create", "-g", RG, "-n", "myManagedIdentity")
ROLE_FLEX = ("role", "create", FLEX_ADMIN)
ROLE_AS_ADMIN = (*ROLE_FLEX, "--name", "myuser", "--object-id", OBJECT_ID)
VM_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{seed.VM_NAME}"

CASES = [
    # identity: names, groups, machines, regions, tags, conflicting options
    case("rg-empty", "--resource-group ''", "identity", "create", "-g", "", "-n", "myManagedIdentity"),
    case("rg-too-long", "--resource-group 'rrrr", "identity", "create", "-g", "r" * 91, "-n", "myManagedIdentity"),
    case("rg-ends-in-dot", "--resource-group 'rg.'", "identity", "create", "-g", "rg.", "-n", "myManagedIdentity"),
    case("rg-space", "--resource-group 'a b'", "identity", "delete", "-g", "a b", "-n", "myManagedIdentity"),
    case("name-empty", "--name ''", "identity", "create", "-g", RG, "-n", ""),
    case("name-too-short", "--name 'ab'", "identity", "create", "-g", RG, "-n", "ab"),
    case("name-too-long", "--name 'aaaa", "identity", "create", "-g", RG, "-n", "a" * 129),
    case("name-slash", "--name 'bad/name'", "identity", "create", "-g", RG, "-n", "bad/name"),
    case("name-semicolon", "--name 'x;y'", "identity", "show", "-g", RG, "-n", "x;y"),
    case("name-newline", "--name 'a\\nb'", "identity", "show", "-g", RG, "-n", "a\nb"),
    case("name-non-ascii", "--name 'ünïcode'", "identity", "delete", "-g", RG, "-n", "ünïcode"),
    case("vm-space", "--vm 'bad vm'", *CREATE, "--vm", "bad vm"),
    case("vm-too-long", "--vm 'vvvv", *CREATE, "--vm", "v" * 65),
    case("vm-ends-in-dash", "--vm 'vm-'", "identity", "remove", "-g", RG, "-n", "myManagedIdentity", "--vm", "vm-"),
    case("vmss-leading-dash", "--vmss '-bad'", "identity", "assign", "-g", RG, "-n", "abc", "--vmss", "-bad"),
    case("vm-and-vmss", "--vm and --vmss", *CREATE, "--vm", seed.VM_NAME, "--vmss", seed.VMSS_NAME),
    case("vm-rg-alone", "--vm-resource-group needs --vm", *CREATE, "--vm-resource-group", RG),
    case("vm-rg-pipe", "--vm-resource-group 'a|b'", *CREATE, "--vm", seed.VM_NAME, "--vm-resource-group", "a|b"),
    case("assign-no-machine", "--vm or --vmss is required", "identity", "assign", "-g", RG, "-n", "abc"),
    case("location-slash", "--location 'west/europe'", *CREATE, "-l", "west/europe"),
    case("tag-no-value", "--tag 'novalue'", *CREATE, "--tag", "novalue"),
    case("tag-key-angle", "--tag 'a<b=c'", *CREATE, "--tag", "a<b=c"),
    case("tag-key-513", "--tag 'kkkk", *CREATE, "--tag", "k" * 513 + "=v"),
    case("tag-value-257", "--tag 'k=vvvv", *CREATE, "--tag", "k=" + "v" * 257),
    case("tags-51", "51 tags given; Azure allows at most 50", *CREATE,
         *(word for i in range(51) for word in ("--tag", f"t{i}=v"))),
    case("tag-keys-differ-in-case", "--tag 'env': the tag is also given as 'Env'", *CREATE, "--tag", "Env=a",
         "--tag", "env=b"),
    read_case("location-made-up", "--location 'marsnorth': subscription", *CREATE, "-l", "Mars North"),
    read_case("location-made-up-dry-run", "--location 'atlantis'", "--dry-run", *CREATE, "-l", "atlantis"),
    # global options, on the command line and from the environment
    case("subscription-word", "--subscription 'not-a-guid'", "--subscription", "not-a-guid", "identity", "show",
         "-g", RG, "-n", "abc"),
    case("subscription-short", f"--subscription '{SUB[:-1]}'", "--subscription", SUB[:-1], "identity", "show",
         "-g", RG, "-n", "abc"),
    case("subscription-env", "--subscription 'my-sub'", "identity", "show", "-g", RG, "-n", "abc",
         env={"AZURE_SUBSCRIPTION_ID": "my-sub"}),
    case("cloud-unknown", "unknown cloud 'AzureMoon'", "--cloud", "AzureMoon", "identity", "show", "-g", RG,
         "-n", "abc"),
    case("cloud-env", "unknown cloud 'Mars'", "token", env={"PROVISION_CLOUD": "Mars"}),
    case("arm-endpoint-ftp", "--arm-endpoint 'ftp://x'", "--arm-endpoint", "ftp://x", "identity", "show",
         "-g", RG, "-n", "abc"),
    case("arm-endpoint-no-host", "--arm-endpoint 'https://'", "--arm-endpoint", "https://", "identity", "show",
         "-g", RG, "-n", "abc"),
    case("arm-endpoint-space", "--arm-endpoint 'https://exa mple'", "--arm-endpoint", "https://exa mple",
         "identity", "show", "-g", RG, "-n", "abc"),
    case("arm-endpoint-query", "--arm-endpoint 'https://127.0.0.1:1/?x=1'", "--arm-endpoint",
         "https://127.0.0.1:1/?x=1", "identity", "show", "-g", RG, "-n", "abc"),
    case("arm-endpoint-bad-port", "--arm-endpoint 'https://localhost:http'", "identity", "show", "-g", RG,
         "-n", "abc", env={"PROVISION_ARM_ENDPOINT": "https://localhost:http"}),
    case("arm-audience-http", "--arm-audience 'http://management.azure.com/'", "--arm-audience",
         "http://management.azure.com/", "identity", "show", "-g", RG, "-n", "abc"),
    case("output-yaml", "'yaml'", "-o", "yaml", "identity", "show", "-g", RG, "-n", "abc"),
    # role create: names, ids, the ways to name an identity, flavors, the admin
    case("role-empty", "--name: a role name cannot be empty", "role", "create", FLEX_ADMIN, "--name", "",
         "--object-id", OBJECT_ID),
    case("role-64-bytes", "--name 'rrrr", *ROLE_FLEX, "--name", "r" * 64, "--object-id", OBJECT_ID),
    case("role-64-bytes-utf8", "--name 'éééé", *ROLE_FLEX, "--name", "é" * 32, "--object-id", OBJECT_ID),
    nul_case("role-nul", "cannot contain NUL", *ROLE_FLEX, "--name", "my\x00user", "--object-id", OBJECT_ID),
    nul_case("member-of-nul", "--member-of", *ROLE_AS_ADMIN, "--member-of", "pg_\x00monitor"),
    case("member-of-itself", "--member-of 'myuser'", *ROLE_AS_ADMIN, "--member-of", "myuser"),
    case("member-of-too-long", "--member-of 'gggg", *ROLE_AS_ADMIN, "--member-of", "g" * 64),
    case("object-id-word", "--object-id 'not-a-guid'", *ROLE_FLEX, "--name", "myuser", "--object-id", "not-a-guid"),
    case("client-id-short", "--client-id '1234'", *ROLE_FLEX, "--name", "myuser", "--client-id", "1234"),
    case("client-id-braces", f"--client-id '{{{CLIENT_ID}}}'", *ROLE_FLEX, "--name", "myuser", "--client-id",
         f"{{{CLIENT_ID}}}"),
    case("client-id-and-identity", "give the identity one way", *ROLE_FLEX, "--name", "myuser", "--client-id",
         CLIENT_ID, "--identity", seed.EXISTING_IDENTITY_NAME, "-g", RG),
    case("identity-without-g", "--identity needs -g", *ROLE_FLEX, "--name", "myuser", "--identity",
         seed.EXISTING_IDENTITY_NAME),
    case("g-without-identity", "-g/--resource-group goes with --identity", *ROLE_FLEX, "--name", "myuser",
         "--object-id", OBJECT_ID, "-g", RG),
    case("identity-bad-name", "--identity 'bad name!'", *ROLE_FLEX, "--name", "myuser", "--identity", "bad name!",
         "-g", RG),
    case("no-identity", "which identity?", *ROLE_FLEX, "--name", "myuser"),
    case("identity-id-vm", "--identity-id '/subscriptions/", *ROLE_FLEX, "--name", "myuser", "--identity-id", VM_ID),
    case("identity-id-subscription-word", "--identity-id subscription 'my-sub'", *ROLE_FLEX, "--name", "myuser",
         "--identity-id", f"/subscriptions/my-sub/resourceGroups/{RG}/{IDENTITY_PROVIDER}/abc"),
    case("identity-id-child", "--identity-id '/subscriptions/", *ROLE_FLEX, "--name", "myuser", "--identity-id",
         f"/subscriptions/{SUB}/resourceGroups/{RG}/{IDENTITY_PROVIDER}/abc/federatedIdentityCredentials/x"),
    case("identity-id-truncated", "--identity-id '/subscriptions/x'", *ROLE_FLEX, "--name", "myuser",
         "--identity-id", "/subscriptions/x"),
    case("flavor-unknown", "'weird'", *ROLE_AS_ADMIN, "--flavor", "weird"),
    case("flavor-single-object-id", "give --client-id", "role", "create", SINGLE_ADMIN, "--name", "myuser",
         "--object-id", OBJECT_ID, "--flavor", "single"),
    case("flavor-flexible-client-id", "give --object-id", *ROLE_FLEX, "--name", "myuser", "--client-id", CLIENT_ID,
         "--flavor", "flexible"),
    case("single-admin-without-server", "--admin-user 'aadadmin'", "role", "create",
         *("--admin-user", seed.DATABASE_ADMIN), SINGLE, "--name", "myuser", "--client-id", CLIENT_ID,
         "--flavor", "single"),
    case("admin-user-empty", "--admin-user", "role", "create", FLEX, "--admin-user", "", "--name", "myuser",
         "--object-id", OBJECT_ID),
    case("admin-client-id-word", "--admin-client-id 'nope'", *ROLE_AS_ADMIN, "--admin-client-id", "nope"),
    # role drop, show, list: where to connect
    case("host-bang", "--host 'bad host!'", "role", "drop", "--host", "bad host!", "--admin-user", "a",
         "--name", "myuser"),
    case("host-semicolon", "--host 'db;rm -rf'", "role", "list", "--host", "db;rm -rf", "--admin-user", "a"),
    case("port-zero", "--port '0'", "role", "drop", FLEX_ADMIN, "--port", "0", "--name", "myuser"),
    nul_case("drop-nul", "cannot contain NUL", "role", "drop", FLEX_ADMIN, "--name", "\x00"),
    case("port-70000", "--port '70000'", "role", "show", FLEX_ADMIN, "--port", "70000", "--name", "myuser"),
    case("show-64-bytes", "--name 'ssss", "role", "show", FLEX_ADMIN, "--name", "s" * 64),
    nul_case("show-nul", "cannot contain NUL", "role", "show", FLEX_ADMIN, "--name", "a\x00"),
    case("port-word", "'abc'", "role", "list", FLEX_ADMIN, "--port", "abc"),
    case("port-env", "--port '-5'", "role", "list", "--host", "127.0.0.1", "--admin-user", "a", env={"PGPORT": "-5"}),
    case("sslmode-unknown", "--sslmode 'verify-everything'", "role", "list", FLEX_ADMIN, "--sslmode",
         "verify-everything"),
    case("sslmode-env", "--sslmode 'bogus'", "role", "list", FLEX_ADMIN, env={"PGSSLMODE": "bogus"}),
    case("sslmode-disable", "--sslmode disable: refused", "role", "list", FLEX_ADMIN, "--sslmode", "disable"),
    case("sslmode-allow", "--sslmode allow: refused", *ROLE_AS_ADMIN, "--sslmode", "allow"),
    case("sslmode-prefer-env", "--sslmode prefer: refused", "role", "list", FLEX_ADMIN, env={"PGSSLMODE": "prefer"}),
    case("sslrootcert-missing", "--sslrootcert '/nonexistent/ca.pem': no such file", "role", "list", FLEX_ADMIN,
         "--sslrootcert", "/nonexistent/ca.pem"),
    case("database-empty", "--database ''", "role", "list", FLEX_ADMIN, "--database", ""),
    # on the VM
    case("token-client-id-word", "--client-id 'nope'", "token", "--client-id", "nope"),
    case("token-client-id-short", f"--client-id '{CLIENT_ID[:-1]}'", "token", "--client-id", CLIENT_ID[:-1]),
    case("token-resource-words", "--resource 'not a url'", "token", "--resource", "not a url"),
    case("token-resource-scope", "not a scope", "token", "--resource", seed.DATABASE_AUDIENCE + "/.default"),
    case("check-host-empty", "--host ''", "check", "--host", "", "--user", "myuser"),
    case("check-user-empty", "--user", "check", FLEX, "--user", ""),
    case("check-client-id-word", "--client-id 'xyz'", "check", FLEX, "--user", "myuser", "--client-id", "xyz"),
    case("check-port-99999", "--port '99999'", "check", FLEX, "--port", "99999", "--user", "myuser"),
    case("check-sslmode", "--sslmode 'bogus'", "check", FLEX, "--user", "myuser", "--sslmode", "bogus"),
    case("check-sslmode-disable", "--sslmode disable: refused", "check", FLEX, "--user", "myuser", "--sslmode",
         "disable"),
    case("psql-sslmode-prefer", "--sslmode prefer: refused", "psql", FLEX, "--user", "myuser", "--sslmode", "prefer"),
    case("psql-sslrootcert-env", "--sslrootcert '/nonexistent'", "psql", FLEX, "--user", "myuser",
         env={"PGSSLROOTCERT": "/nonexistent"}),
    case("psql-client-id", "--client-id 'g-h'", "psql", FLEX, "--user", "myuser", "--client-id", "g-h"),
    case("psql-host-dots", "--host 'a..b'", "psql", "--host", "a..b", "--user", "myuser"),
    case("psql-port-negative", "--port '-1'", "psql", FLEX, "--port", "-1", "--user", "myuser"),
]  # fmt: skip


def expand(emulator: Any, args: tuple[str, ...]) -> list[str]:
    stand_ins = {
        FLEX_ADMIN: admin_options(emulator, "flexible"),
        SINGLE_ADMIN: admin_options(emulator, "single"),
        SINGLE: server_options(emulator, "single"),
        FLEX: server_options(emulator, "flexible"),
    }
    return [word for arg in args for word in stand_ins.get(arg, [arg])]


@dataclass
class Outcome:
    case: Case
    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float

    def problems(self) -> list[str]:
        found = []
        if self.exit_code != 2:
            found.append(f"exit {self.exit_code}, not 2")
        lines = self.stderr.splitlines()
        if len(lines) != 1:
            found.append(f"{len(lines)} lines on stderr, not 1")
        if not self.stderr.startswith("error: "):
            found.append("stderr does not start with 'error: '")
        if self.case.names not in self.stderr:
            found.append(f"the message does not name {self.case.names!r}")
        if self.stdout:
            found.append("something on stdout")
        return found


def run_in_processes(emulator: Any, cases: list[Case]) -> Iterator[Outcome]:
    """Each case as `python -m provision ...`, PARALLEL at a time."""
    pending = list(cases)
    while pending:
        batch, pending = pending[:PARALLEL], pending[PARALLEL:]
        started = []
        for item in batch:
            merged = {**os.environ, **emulator.env, "AZURE_HTTP_USER_AGENT": USER_AGENT + item.id, **item.env}
            started.append(
                (
                    item,
                    time.monotonic(),
                    subprocess.Popen(
                        [sys.executable, "-m", "provision", *expand(emulator, item.args)],
                        env={name: value for name, value in merged.items() if value is not None},
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    ),
                )
            )
        for item, start, process in started:
            try:
                stdout, stderr = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            yield Outcome(item, process.returncode, stdout, stderr, time.monotonic() - start)


def run_in_this_process(emulator: Any, cases: list[Case], monkeypatch: pytest.MonkeyPatch) -> Iterator[Outcome]:
    for item in cases:
        with monkeypatch.context() as patch:
            patch.setenv("AZURE_HTTP_USER_AGENT", USER_AGENT + item.id)
            start = time.monotonic()
            status, stdout, stderr = invoke(*expand(emulator, item.args))
        yield Outcome(item, status, stdout, stderr, time.monotonic() - start)


def requests_by_case(emulator: Any, since: int) -> dict[str, list[str]]:
    """The requests recorded since a mark, by the case whose process sent them ("?" when none can be told)."""
    sent: dict[str, list[str]] = {}
    for request in emulator.requests(since=since):
        agent = next((value for name, value in request["headers"].items() if name.lower() == "user-agent"), "")
        owner = agent.split(USER_AGENT, 1)[1].split()[0] if USER_AGENT in agent else "?"
        sent.setdefault(owner, []).append(f"{request['service']} {request['method']} {request['path']}")
    return sent


def test_every_bad_input_exits_2_with_one_line_and_changes_nothing(
    fresh_emulator: Any, emulator_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(CASES) >= 40 and len({item.id for item in CASES}) == len(CASES)
    before = roles(fresh_emulator)
    mark = fresh_emulator.mark()

    outcomes = list(run_in_processes(fresh_emulator, [item for item in CASES if not item.in_process]))
    outcomes += run_in_this_process(fresh_emulator, [item for item in CASES if item.in_process], monkeypatch)

    sent = requests_by_case(fresh_emulator, mark)
    after = roles(fresh_emulator)
    print(f"\n{'case':32} exit  seconds  message")
    for outcome in outcomes:
        print(f"{outcome.case.id:32} {outcome.exit_code!s:4}  {outcome.seconds:7.2f}  {outcome.stderr.strip()[:110]}")
    print(f"{len(outcomes)} bad inputs ({sum(o.case.in_process for o in outcomes)} in-process: NUL cannot be in argv)")

    failures = {outcome.case.id: outcome.problems() for outcome in outcomes}
    reading = {item.id for item in CASES if item.reads}
    for owner, requests in sent.items():
        written = [request for request in requests if request.split()[1] in WRITE_METHODS]
        if owner in reading and not written:
            continue
        failures.setdefault(owner, []).append(
            f"sent {len(requests)} requests, {len(written)} of them writes: {(written or requests)[:3]}"
        )
    failures = {name: problems for name, problems in failures.items() if problems}
    assert not failures, "\n".join(f"{name}: {'; '.join(problems)}" for name, problems in failures.items())
    assert after == before
