"""Every Resource Manager call of `provision identity create --vm` meets every kind of fault, once: the
command succeeds after a bounded number of retries or exits 1 with a one-line `error:` message, and the
VM keeps the identities it had (system-assigned and existingIdentity) whatever happens. A run that
failed converges when run again. The summary table (call x fault -> outcome) is printed at the end.

The "slower than the timeout" cases run the command in this process with the client's read timeout
lowered, so the test waits seconds instead of minutes."""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import invoke, machine_identities

from provision.emulator import seed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RG = seed.RESOURCE_GROUP
NAME = "myManagedIdentity"
COMMAND = ("-o", "json", "identity", "create", "-g", RG, "-n", NAME, "--vm", seed.VM_NAME)
READ_TIMEOUT = 1.5  # the client's, for the "slower than the timeout" cases
SLOW_REPLY = READ_TIMEOUT + 0.5


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # shell-style, as the emulator's faults match it
    earlier: int = 0  # matching requests before this one in a run


@dataclass(frozen=True)
class Fault:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


VM_PATH = f"*/virtualMachines/{seed.VM_NAME}"
CALLS = {
    "GET VM": Call("GET", VM_PATH),
    "GET identity": Call("GET", f"*/userAssignedIdentities/{NAME}"),
    "GET resource group": Call("GET", f"*/resourcegroups/{RG}"),
    "PUT identity": Call("PUT", f"*/userAssignedIdentities/{NAME}"),
    "PATCH VM": Call("PATCH", VM_PATH),
    "GET operation status": Call("GET", "*/operations/*"),
    "final GET VM": Call("GET", VM_PATH, earlier=1),
}
FAULTS = {
    "429 Retry-After": Fault("throttle", {"retry_after": 1}),
    "500": Fault("server_error"),
    "409 in progress": Fault("conflict"),
    "operation failed": Fault("operation_failed"),
    "dropped connection": Fault("drop"),
    "slower than timeout": Fault("latency", {"seconds": SLOW_REPLY}),
}
MATRIX = [
    (call, fault) for call in CALLS for fault in FAULTS if fault != "operation failed" or CALLS[call].method == "PATCH"
]
# The cases that end in exit 1; every other one succeeds.
# - A 409 "another operation is in progress" is retried only on the PATCH: Resource Manager sends it for
#   writes to a busy machine, never for reads or for an identity.
# - The PATCH is not retried blindly after its reply was lost (azure-core retries no PATCH without a
#   status): the message says the change may have been made, and the re-run finds out.
# - A 409 on the operation's status or on the read that ends it (Azure sends none for a read) leaves the
#   accepted PATCH's outcome unknown: said so, exit 1, and the re-run finds out.
EXIT_1 = {
    ("GET operation status", "409 in progress"),
    ("final GET VM", "409 in progress"),
    ("GET VM", "409 in progress"),
    ("GET identity", "409 in progress"),
    ("GET resource group", "409 in progress"),
    ("PUT identity", "409 in progress"),
    ("PATCH VM", "operation failed"),
    ("PATCH VM", "dropped connection"),
    ("PATCH VM", "slower than timeout"),
}


@dataclass
class Row:
    call: str
    fault: str
    outcome: str = "?"
    seconds: float = 0.0
    sent: int = 0  # how often the faulted call went out
    message: str = ""


@pytest.fixture(scope="module")
def summary(request: pytest.FixtureRequest) -> Iterator[list[Row]]:
    """The matrix's rows, printed as a table once every case has run (also without -s)."""
    rows: list[Row] = []
    yield rows
    lines = [f"\n{'call':22} {'fault':20} {'outcome':26} {'seconds':>7}  sent  message"]
    for row in rows:
        lines.append(
            f"{row.call:22} {row.fault:20} {row.outcome:26} {row.seconds:7.1f}  {row.sent:4}  {row.message[:90]}"
        )
    lines.append(f"{len(rows)} cases, {sum(row.seconds for row in rows):.0f} s in the commands")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


def sent(emulator: Any, since: int, call: Call) -> list[dict[str, Any]]:
    return [
        request
        for request in emulator.requests(since=since, service="arm")
        if request["method"] == call.method and fnmatch.fnmatch(request["path"].lower(), call.path.lower())
    ][call.earlier :]


def wait_until_answered(emulator: Any, since: int, call: Call, timeout: float = 30) -> None:
    """A slow reply is still on its way after the client gave up: wait until the emulator has carried the
    request out, so that it cannot land in the next case's world."""
    deadline = time.monotonic() + timeout
    while not any(request["fault"] == "latency" for request in sent(emulator, since, call)):
        assert time.monotonic() < deadline, f"the slow {call.method} {call.path} was never answered"
        time.sleep(0.05)


@pytest.mark.parametrize(("call_name", "fault_name"), MATRIX, ids=[f"{c}-{f}".replace(" ", "_") for c, f in MATRIX])
def test_fault(
    fresh_emulator: Any,
    emulator_environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    summary: list[Row],
    call_name: str,
    fault_name: str,
) -> None:
    call, fault = CALLS[call_name], FAULTS[fault_name]
    row = Row(call_name, fault_name)
    summary.append(row)
    if call.earlier:  # let the earlier matching requests through untouched
        fresh_emulator.fault("latency", path=call.path, method=call.method, count=call.earlier, seconds=0)
    fresh_emulator.fault(fault.kind, path=call.path, method=call.method, **fault.params)
    mark = fresh_emulator.mark()

    start = time.monotonic()
    if fault.kind == "latency":
        monkeypatch.setattr("provision.azure.arm.READ_TIMEOUT", READ_TIMEOUT)
        status, stdout, stderr = invoke(*COMMAND)
        row.seconds = time.monotonic() - start
        wait_until_answered(fresh_emulator, mark, call)
    else:
        result = fresh_emulator.run(*COMMAND)
        status, stdout, stderr = result.returncode, result.stdout, result.stderr
        row.seconds = time.monotonic() - start
    fresh_emulator.clear_faults()
    row.sent = len(sent(fresh_emulator, mark, call))
    # With -o json a failure is one JSON object on stdout.
    error = json.loads(stdout)["error"] if status else None
    row.message = error["message"] if error else ""
    row.outcome = f"exit {status}"

    assert "Traceback" not in stdout + stderr, stderr
    if (call_name, fault_name) in EXIT_1:
        assert status == 1, stdout + stderr
        assert error is not None and error["message"] and json.loads(stdout)["exitStatus"] == 1, stdout
        # The VM's earlier identities are there after a failure too.
        kind, attached = machine_identities(fresh_emulator)
        assert kind is not None and "SystemAssigned" in kind, kind
        assert seed.EXISTING_IDENTITY_NAME in attached, attached
        again = fresh_emulator.run(*COMMAND)
        assert again.returncode == 0, again.stderr
        row.outcome += ", re-run converges"
    else:
        assert status == 0, stderr
        assert json.loads(stdout)["changed"] is True
        assert row.sent <= 4, f"{call_name} went out {row.sent} times"
    assert machine_identities(fresh_emulator) == (
        "SystemAssigned, UserAssigned",
        sorted([seed.EXISTING_IDENTITY_NAME, NAME]),
    )
