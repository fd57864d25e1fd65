"""`make bench`: the speed figures of provision against their targets, measured side by side in one run
against the local Azure stack. Nothing here is a test; it prints a table and exits 0."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from emulator_fixtures import EmulatorProcess, _state_directory  # noqa: E402

from provision.emulator import seed  # noqa: E402
from provision.emulator.postgres import cluster  # noqa: E402
from provision.emulator.stack import AZ_CLOUD_NAME  # noqa: E402

PYTHON = sys.executable
PROVISION = str(Path(PYTHON).parent / "provision")
# azure-postgresql-auth in its own virtual environment (the Makefile's AZPGAUTH), to compare with provision
# installed as users install it, from its wheel, in one of its own (BENCH_VENV).
AZPGAUTH_PYTHON = str(ROOT / ".cache" / "venv-azpgauth" / "bin" / "python")
PROVISION_PYTHON = str(ROOT / ".cache" / "venv-bench" / "bin" / "python")
RG = seed.RESOURCE_GROUP
rows: list[tuple[str, str, str, str]] = []


def record(figure: str, value: str, target: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("ok" if met else "MISSED")
    rows.append((figure, value, target, verdict))
    print(f"  {figure}: {value} {f'(target {target}) {verdict}' if target else ''}", file=sys.stderr, flush=True)


def median_seconds(command: list[str], runs: int = 10, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli(emulator: EmulatorProcess, *args: str) -> dict[str, Any]:
    done = emulator.run("-o", "json", *args)
    if done.returncode not in (0, 3):
        raise SystemExit(f"provision {' '.join(args)} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout))


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def bench_help() -> None:
    baseline = median_seconds([PYTHON, "-c", "import click"])
    help_time = median_seconds([PROVISION, "--help"])
    record("python -c 'import click' (baseline, median of 10)", f"{baseline:.3f} s")
    record(
        "provision --help cold start (median of 10)",
        f"{help_time:.3f} s ({help_time / baseline:.1f}x baseline)",
        "<= 0.15 s and <= 2x baseline",
        help_time <= 0.15 and help_time <= 2 * baseline,
    )


def bench_identity(emulator: EmulatorProcess) -> None:
    emulator.reset()
    emulator.set_operation_seconds(4)
    create = ("identity", "create", "-g", RG, "-n", "benchIdentity", "--vm", seed.VM_NAME)
    mark = emulator.mark()
    seconds, _ = timed(lambda: cli(emulator, *create))
    first = emulator.requests(since=mark)
    record(
        "identity create + attach, operation of 4 s, no Retry-After",
        f"{seconds:.2f} s",
        "<= 4.5 s (the operation + 0.5 s; az CLI: 31-32 s)",
        seconds <= 4.5,
    )
    mark = emulator.mark()
    rerun_seconds, _ = timed(lambda: cli(emulator, *create))
    again = emulator.requests(since=mark)
    rerun_writes = [r for r in again if r["method"] in ("PUT", "PATCH", "DELETE")]
    polls = sum(1 for r in first if "/operations/" in r["path"])
    record("requests, first run", f"{len(first)}, {polls} of them polls ({', '.join(request_kinds(first))})")
    record(
        "requests, re-run",
        f"{len(again)}, {len(rerun_writes)} writes, {rerun_seconds:.2f} s ({', '.join(request_kinds(again))})",
        "0 writes",
        not rerun_writes,
    )
    # The same command for another identity, with -vv: azure-core logs each request and its answer, which
    # tells the requests made one after the other from those in flight together (load does not change it).
    mark = emulator.mark()
    logged = emulator.run("-v", "-v", *create[:5], "benchIdentityCounted", *create[6:])
    if logged.returncode:
        raise SystemExit(f"provision -vv {' '.join(create)} failed:\n{logged.stderr}")
    before, after = serial_round_trips(logged.stderr, emulator.requests(since=mark))
    record("serial round trips, first run (polls aside)", f"{before} before the PATCH and it, {after} after the polls")


def request_kinds(requests: list[dict[str, Any]]) -> list[str]:
    """`3 GET userAssignedIdentities`, ...: what was asked for, by method and resource type."""
    counts: dict[str, int] = {}
    for r in requests:
        path = r["path"]
        kind = "operation" if "/operations/" in path else path.rstrip("/").split("/")[-2 if path.count("/") > 3 else -1]
        name = f"{r['method']} {'token' if r['service'] == 'imds' else kind}"
        counts[name] = counts.get(name, 0) + 1
    return [f"{count} {name}" for name, count in counts.items()]


def serial_round_trips(verbose_log: str, requests: list[dict[str, Any]]) -> tuple[int, int]:
    """Round trips before the polls (the PATCH included) and after them, from a -vv log: a request sent while
    another is in flight shares its round trip. /metadata/endpoints is read before any other request and is
    not in azure-core's log (a pipeline of its own): it adds one when the emulator saw it."""
    trips, in_flight, polled = [0, 0], 0, False
    for line in verbose_log.splitlines():
        if "Request URL:" in line:
            if "/operations/" in line:
                polled = True
                continue
            trips[polled] += in_flight == 0
            in_flight += 1
        elif "Response status:" in line and in_flight:
            in_flight -= 1
    trips[0] += any(r["path"] == "/metadata/endpoints" for r in requests)
    return trips[0], trips[1]


AZ = ROOT / ".cache" / "venv-az" / "bin" / "az"


# `az vm identity assign` as measured in this run: the fleet figures are shown beside it, times 50.
az_measured: list[float] = []


def az_assign_seconds(emulator: EmulatorProcess, identity: str, vm: str) -> float | None:
    """One real `az vm identity assign` (pinned azure-cli, `make az`) signed in to the emulator through its
    IMDS; None when az is not installed."""
    if not AZ.exists():
        return None
    with tempfile.TemporaryDirectory() as config:
        env = {**os.environ, **emulator.env, "AZURE_CONFIG_DIR": config}

        def az(*args: str) -> None:
            done = subprocess.run([str(AZ), *args, "-o", "none"], env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"az {' '.join(args)} failed:\n{done.stderr}")

        endpoint = emulator.env["PROVISION_ARM_ENDPOINT"]
        az("cloud", "register", "-n", AZ_CLOUD_NAME, "--endpoint-resource-manager", endpoint)
        az("cloud", "set", "-n", AZ_CLOUD_NAME)
        az("login", "--identity")
        seconds, _ = timed(lambda: az("vm", "identity", "assign", "-g", RG, "-n", vm, "--identities", identity))
    az_measured.append(seconds)
    return seconds


def bench_az_side_by_side(emulator: EmulatorProcess) -> None:
    """The real `az vm identity assign` and `provision identity assign`, one after the other against the same
    4 s update."""
    emulator.reset()
    emulator.set_operation_seconds(4)
    for name in ("benchAz", "benchProvision"):
        cli(emulator, "identity", "create", "-g", RG, "-n", name)
    az_seconds = az_assign_seconds(emulator, "benchAz", seed.VM_NAME)
    if az_seconds is None:
        record("az vm identity assign vs provision identity assign", f"skipped: no {AZ} (`make az`)")
        return
    provision_seconds, _ = timed(
        lambda: cli(emulator, "identity", "assign", "-g", RG, "-n", "benchProvision", "--vm", seed.VM_NAME)
    )
    record(
        "az vm identity assign vs provision identity assign, operation of 4 s, no Retry-After",
        f"az {az_seconds:.2f} s, provision {provision_seconds:.2f} s ({az_seconds / provision_seconds:.1f}x)",
        "provision <= 4.5 s and >= 6x faster",
        provision_seconds <= 4.5 and az_seconds >= 6 * provision_seconds,
    )


def bench_library(emulator: EmulatorProcess) -> None:
    emulator.reset()
    created = cli(emulator, "identity", "create", "-g", RG, "-n", "benchLibrary", "--vm", seed.VM_NAME)
    flex = ("--host", emulator.env["PROVISION_FLEX_HOST"], "--port", emulator.env["PROVISION_FLEX_PORT"])
    cli(
        emulator,
        "role",
        "create",
        *flex,
        "--admin-user",
        "aadadmin",
        "--name",
        "benchapp",
        "--object-id",
        created["principalId"],
    )
    host, port, client_id = flex[1], flex[3], created["clientId"]
    for python in (PROVISION_PYTHON, AZPGAUTH_PYTHON):
        if not Path(python).exists():
            record("the libraries side by side: not measured", f"{python} is missing (make bench creates it)")
            return
    scripts = {
        ("provision", "sequential"): (PROVISION_PYTHON, PROVISION_SEQUENTIAL),
        ("azure-postgresql-auth 1.1.0", "sequential"): (AZPGAUTH_PYTHON, AZPGAUTH_SEQUENTIAL),
        ("provision", "concurrent async"): (PROVISION_PYTHON, PROVISION_CONCURRENT),
        ("azure-postgresql-auth 1.1.0", "concurrent async"): (AZPGAUTH_PYTHON, AZPGAUTH_CONCURRENT),
    }
    # The machine's load varies from second to second: the libraries take turns, round after round.
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in scripts}
    cpu: dict[tuple[str, str], list[float]] = {key: [] for key in scripts}
    requests: dict[tuple[str, str], list[int]] = {key: [] for key in scripts}
    for _ in range(LIBRARY_ROUNDS):
        for key, (python, code) in scripts.items():
            mark = emulator.mark()
            done = subprocess.run(
                [python, "-c", code, host, port, client_id, emulator.env["PGSSLROOTCERT"]],
                env={**os.environ, **emulator.env},
                cwd=tempfile.gettempdir(),  # not the source tree, which `python -c` would import provision from
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise SystemExit(f"{key[0]} failed:\n{done.stderr}")
            wall, used = done.stdout.split()
            seconds[key].append(float(wall))
            cpu[key].append(float(used))
            requests[key].append(emulator.token_requests(mark))
    for (label, kind), times in seconds.items():
        most = max(requests[label, kind])
        record(
            f"{label}: 100 {kind} connects (median of {LIBRARY_ROUNDS}: wall, process CPU), metadata requests (most)",
            f"{statistics.median(times):.2f} s, CPU {statistics.median(cpu[label, kind]):.2f} s, {most}",
            "1",
            most == 1,
        )
    # Each round's two processes ran one after the other, under the same load: their ratio is compared, round
    # by round, and the median of the rounds' ratios judged (the machine's load drifts between rounds).
    for kind in ("sequential", "concurrent async"):
        ours, theirs = ("provision", kind), ("azure-postgresql-auth 1.1.0", kind)
        for what, figures in (("wall time", seconds), ("process CPU", cpu)):
            ratios = sorted(a / b for a, b in zip(figures[ours], figures[theirs], strict=True))
            ratio = statistics.median(ratios)
            record(
                f"provision / azure-postgresql-auth, 100 {kind} connects, {what} (median of the rounds' ratios)",
                f"{ratio:.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})",
                "<= 1.00",
                ratio <= 1,
            )


LIBRARY_ROUNDS = 9


# Each script times the whole of what a process pays for its connections: importing the library (its
# drivers and azure-identity), the first token, then the connects; both libraries are timed alike. They
# print the wall time since the script began and the CPU time of the whole process (its start included).
_ARGS = (
    "import asyncio, sys, time\nstarted = time.perf_counter()\n"
    "host, port, client_id, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]\n"
)
_KW = "host=host, port=port, user='benchapp', dbname='postgres', sslmode='verify-full', sslrootcert=ca"
PROVISION_SEQUENTIAL = _ARGS + (
    "import provision\nfor _ in range(100):\n"
    "    provision.connect(host, 'benchapp', client_id=client_id, port=port, sslrootcert=ca).close()\n"
    "print(time.perf_counter() - started, time.process_time())\n"
)
PROVISION_CONCURRENT = _ARGS + (
    "import provision\nkw = dict(client_id=client_id, port=port, sslrootcert=ca)\nasync def one():\n"
    "    await (await provision.connect_async(host, 'benchapp', **kw)).close()\n"
    "async def main():\n    await asyncio.gather(*(one() for _ in range(100)))\n"
    "asyncio.run(main())\nprint(time.perf_counter() - started, time.process_time())\n"
)
AZPGAUTH_SEQUENTIAL = _ARGS + (
    "from azure.identity import ManagedIdentityCredential\nfrom azure_postgresql_auth.psycopg3 import EntraConnection\n"
    "credential = ManagedIdentityCredential(client_id=client_id)\n"
    f"for _ in range(100):\n    EntraConnection.connect({_KW}, credential=credential).close()\n"
    "print(time.perf_counter() - started, time.process_time())\n"
)
AZPGAUTH_CONCURRENT = _ARGS + (
    "from azure.identity.aio import ManagedIdentityCredential\n"
    "from azure_postgresql_auth.psycopg3 import AsyncEntraConnection\n"
    "async def main():\n    credential = ManagedIdentityCredential(client_id=client_id)\n"
    f"    async def one():\n        await (await AsyncEntraConnection.connect({_KW}, credential=credential)).close()\n"
    "    await asyncio.gather(*(one() for _ in range(100)))\n    await credential.close()\n"
    "asyncio.run(main())\nprint(time.perf_counter() - started, time.process_time())\n"
)


def bench_roles(emulator: EmulatorProcess) -> None:
    emulator.reset()
    created = cli(emulator, "identity", "create", "-g", RG, "-n", "benchRoles")
    single = ("--host", emulator.env["PROVISION_SINGLE_HOST"], "--port", emulator.env["PROVISION_SINGLE_PORT"])
    admin = ("--admin-user", emulator.env["PROVISION_SINGLE_ADMIN"], "--client-id", created["clientId"])

    def create(index: int) -> None:
        cli(emulator, "role", "create", *single, *admin, "--name", f"bench_role_{index:03d}")

    with ThreadPoolExecutor(max_workers=4) as workers:
        seconds, _ = timed(lambda: list(workers.map(create, range(100))))
    listed = cli(emulator, "role", "list", *single, "--admin-user", emulator.env["PROVISION_SINGLE_ADMIN"])
    count = sum(1 for principal in listed["principals"] if principal["role"].startswith("bench_role_"))
    record(
        "100 role create (CLI processes, 4 at a time) against one server",
        f"{seconds:.1f} s ({seconds / 100:.2f} s a role, {count} roles listed)",
    )


def bench_connect_latency(emulator: EmulatorProcess) -> None:
    token = emulator.run("token").stdout.strip()
    code = (
        "import statistics, sys, time, psycopg\n"
        "def median(**kw):\n"
        "    times = []\n"
        "    for _ in range(50):\n"
        "        t = time.perf_counter()\n"
        "        with psycopg.connect(**kw) as c:\n"
        "            c.execute('SELECT 1')\n"
        "        times.append(time.perf_counter() - t)\n"
        "    return statistics.median(times) * 1000\n"
        "gateway = median(host=sys.argv[1], port=int(sys.argv[2]), user='aadadmin', dbname='postgres',\n"
        "                 password=sys.stdin.read(), sslmode='verify-full', sslrootcert=sys.argv[4])\n"
        "direct = median(host=sys.argv[3], user='postgres', dbname='postgres')\n"
        "print(f'{gateway:.1f} {direct:.1f}')\n"
    )
    socket_dir = Path(emulator.env["PROVISION_EMULATOR_DIR"]) / "postgres" / "flexible"
    done = subprocess.run(
        [
            PYTHON,
            "-c",
            code,
            emulator.env["PROVISION_FLEX_HOST"],
            emulator.env["PROVISION_FLEX_PORT"],
            str(socket_dir),
            emulator.env["PGSSLROOTCERT"],
        ],
        input=token,
        capture_output=True,
        text=True,
        check=True,
    )
    gateway, direct = done.stdout.split()
    record(
        "connect + SELECT 1, median of 50: through the TLS gateway vs the cluster's socket",
        f"{gateway} ms vs {direct} ms",
    )


def fleet_manifest(emulator: EmulatorProcess, path: Path, count: int) -> None:
    lines = [
        "[defaults]",
        f'resource_group = "{RG}"',
        f'host = "{emulator.env["PROVISION_FLEX_HOST"]}"',
        f"port = {emulator.env['PROVISION_FLEX_PORT']}",
        f'admin_user = "{emulator.env["PROVISION_FLEX_ADMIN"]}"',
    ]
    for n in range(1, count + 1):
        lines += ["", "[[binding]]", f'identity = "svc{n}-id"', f'vm = "vm-{n}"', f'role = "svc{n}"']
        lines.append('grants = ["USAGE ON SCHEMA public"]')
    path.write_text("\n".join(lines) + "\n")


def bench_fleet(postgres_version: int) -> None:
    """apply, plan and destroy of 50 bindings on 50 VMs (4 s updates) with 50 roles on one server, beside
    one `az vm identity assign` (this run's, or measured here) times 50."""
    count = 50
    directory = _state_directory()
    emulator = EmulatorProcess(directory, postgres_version, "--vms", str(count))
    try:
        emulator.set_operation_seconds(4)
        if not az_measured:
            cli(emulator, "identity", "create", "-g", RG, "-n", "benchAz")
            az_assign_seconds(emulator, "benchAz", "vm-1")
        path = directory / "fleet.toml"
        fleet_manifest(emulator, path, count)
        for command, target, limit in (
            ("apply", "<= 15 s", 15.0),
            ("plan", "<= 5 s, 0 writes", 5.0),
            ("destroy", "<= 15 s", 15.0),
        ):
            mark = emulator.mark()
            seconds, done = timed(lambda command=command: emulator.run("-o", "json", command, "-f", str(path)))
            if done.returncode != 0:
                raise SystemExit(f"provision {command} failed:\n{done.stdout}{done.stderr}")
            sent = emulator.requests(since=mark)
            written = sum(1 for r in sent if r["method"] in ("PUT", "PATCH", "DELETE"))
            lists = sum(1 for r in sent if r["method"] == "GET" and r["path"].endswith("/virtualMachines"))
            # The emulator refuses what Azure's request limits would (429): a fleet that fits them gets none.
            throttled = sum(1 for r in sent if r["status"] == 429)
            met = seconds <= limit and (command != "plan" or written == 0) and throttled == 0
            record(
                f"{command} of {count} bindings ({count} VMs, 4 s updates, {count} roles on one server)",
                f"{seconds:.1f} s, {len(sent)} requests, {written} writes, {lists} lists of the VMs,"
                f" {throttled} throttled",
                f"{target}, none throttled",
                met,
            )
        if az_measured:
            az_seconds = az_measured[0]
            record(
                f"az vm identity assign x {count}, one after the other",
                f"{az_seconds * count / 60:.1f} min ({count} x this run's {az_seconds:.1f} s)",
            )
        else:
            record(f"az vm identity assign x {count}", f"not measured: no {AZ} (`make az`)")
    finally:
        emulator.stop()
        subprocess.run(["rm", "-rf", str(directory)], check=False)


# The sections that run against one emulator, by the name `--only` takes.
EMULATOR_SECTIONS: dict[str, Callable[[EmulatorProcess], None]] = {
    "identity": bench_identity,
    "az": bench_az_side_by_side,
    "library": bench_library,
    "connect": bench_connect_latency,
    "roles": bench_roles,
}


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg()) + " (1, 5, 15 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted([*EMULATOR_SECTIONS, "fleet"]), help="measure this section alone")
    only = parser.parse_args().only
    print("measuring (2 cores; figures vary with load)...", file=sys.stderr)
    record("machine at the start", load())
    if only is None:
        bench_help()
    postgres_version = max(cluster.installations())
    if only != "fleet":  # the fleet starts an emulator of its own
        directory = _state_directory()
        seconds, emulator = timed(lambda: EmulatorProcess(directory, postgres_version))
        record(
            "emulator start (Resource Manager, IMDS, two PostgreSQL servers) until ready",
            f"{seconds:.2f} s",
            "<= 5 s",
            seconds <= 5,
        )
        try:
            for name, section in EMULATOR_SECTIONS.items():
                if only in (None, name):
                    section(emulator)
        finally:
            emulator.stop()
            subprocess.run(["rm", "-rf", str(directory)], check=False)
    if only in (None, "fleet"):
        bench_fleet(postgres_version)
    record("machine at the end", load())
    width = [max(len(row[i]) for row in rows + [("figure", "value", "target", "")]) for i in range(4)]
    print()
    for row in [("figure", "value", "target", ""), *rows]:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip())


if __name__ == "__main__":
    main()
