"""`provision plan|apply|destroy -f FILE` on a local Azure stack with a fleet of VMs (vm-1..vm-6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulator_fixtures import EmulatorProcess, separate_emulator
from helpers import admin_options, machine_identities, writes

from provision.emulator import seed

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP


@pytest.fixture(scope="module")
def fleet_emulator(pytestconfig: pytest.Config) -> Iterator[EmulatorProcess]:
    with separate_emulator(pytestconfig, "--vms", "6") as running:
        yield running


@pytest.fixture
def fleet(fleet_emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> EmulatorProcess:
    fleet_emulator.reset()
    for name, value in fleet_emulator.env.items():
        monkeypatch.setenv(name, value)
    return fleet_emulator


def manifest(emulator: Any, tmp_path: Path, bindings: list[dict[str, Any]], name: str = "fleet.toml") -> str:
    _, host, _, port, _, admin = admin_options(emulator, "flexible")
    lines = ["[defaults]", f'resource_group = "{RG}"', f'host = "{host}"', f"port = {port}", f'admin_user = "{admin}"']
    for binding in bindings:
        lines.append("\n[[binding]]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in binding.items())
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def fleet_of(count: int) -> list[dict[str, Any]]:
    return [{"identity": f"app{n}-id", "vm": f"vm-{n}", "role": f"app{n}"} for n in range(1, count + 1)]


def run(emulator: Any, command: str, path: str, *options: str) -> Any:
    return emulator.run("-o", "json", command, "-f", path, *options)


def report(result: Any) -> dict[str, Any]:
    return dict(json.loads(result.stdout))


def principals(emulator: Any) -> list[str]:
    from helpers import admin_connection

    with admin_connection(emulator, "flexible") as conn:
        return [row[0] for row in conn.execute("SELECT rolname FROM pgaadauth_list_principals(false) ORDER BY 1")]


def test_the_emulator_seeds_the_vms_asked_for(fleet: Any) -> None:
    result = fleet.run("-o", "json", "identity", "assign", "-g", RG, "-n", seed.EXISTING_IDENTITY_NAME, "--vm", "vm-6")
    assert result.returncode == 0, result.stderr
    missing = fleet.run("identity", "assign", "-g", RG, "-n", seed.EXISTING_IDENTITY_NAME, "--vm", "vm-7")
    assert missing.returncode == 1


@pytest.mark.slow
def test_apply_converges_and_plan_is_then_in_sync(fleet: Any, tmp_path: Path) -> None:
    # vm-4 carries two identities: one PATCH for both.
    bindings = [*fleet_of(3), {"identity": "app4-id", "vm": "vm-4", "role": "app4"}]
    bindings.append({"identity": "app5-id", "vm": "vm-4", "role": "app5"})
    path = manifest(fleet, tmp_path, bindings)

    mark = fleet.mark()
    planned = run(fleet, "plan", path)
    assert planned.returncode == 3, planned.stderr
    assert {b["status"] for b in report(planned)["bindings"]} == {"would change"}
    assert writes(fleet, mark) == []

    applying = fleet.mark()
    applied = run(fleet, "apply", path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert report(applied)["summary"] == {"changed": 5}
    patches = [w for w in writes(fleet, mark) if w.startswith("PATCH")]
    assert sorted(p.rsplit("/", 1)[-1] for p in patches) == ["vm-1", "vm-2", "vm-3", "vm-4"]
    # Five identities made in one resource group: its location is read once.
    groups = [
        r
        for r in fleet.requests(since=applying, service="arm")
        if r["path"].lower().endswith(f"/resourcegroups/{RG}".lower())
    ]
    assert len(groups) == 1
    assert sorted(machine_identities(fleet, "vm-4")[1]) == ["app4-id", "app5-id"]
    assert {f"app{n}" for n in range(1, 6)} <= set(principals(fleet))
    assert applied.stderr.count("\n") >= 5  # a progress line per binding

    mark = fleet.mark()
    again = run(fleet, "plan", path)
    assert again.returncode == 0, again.stdout
    assert report(again)["summary"] == {"in sync": 5}
    assert writes(fleet, mark) == []

    text = fleet.run("plan", "-f", path)
    assert text.returncode == 0
    assert "5 bindings: 5 in sync" in text.stdout


def test_a_failing_binding_does_not_stop_the_others(fleet: Any, tmp_path: Path) -> None:
    bindings = fleet_of(3)
    bindings[1]["vm"] = "vm-nosuch"
    bindings[2]["grants"] = ["USAGE ON SCHEMA nosuchschema"]
    path = manifest(fleet, tmp_path, [*bindings, {"identity": "app4-id", "vm": "vm-4", "role": "app4"}])
    result = run(fleet, "apply", path)
    assert result.returncode == 1, result.stdout
    statuses = {b["identity"]: b["status"] for b in report(result)["bindings"]}
    assert statuses == {"app1-id": "changed", "app2-id": "failed", "app3-id": "failed", "app4-id": "changed"}
    errors = {b["identity"]: b["error"]["message"] for b in report(result)["bindings"] if "error" in b}
    assert "vm-nosuch" in errors["app2-id"]
    assert "nosuchschema" in errors["app3-id"]
    assert {"app1", "app4"} <= set(principals(fleet))
    assert "app2" not in principals(fleet)
    # The machine is read before its identity is made: a typo in its name leaves no orphan identity.
    assert fleet.run("identity", "show", "-g", RG, "-n", "app2-id").returncode == 1
    text = fleet.run("apply", "-f", path)
    assert text.returncode == 1
    assert "4 bindings: 2 in sync, 2 failed" in text.stdout


def test_fail_fast_starts_nothing_after_a_failure(fleet: Any, tmp_path: Path) -> None:
    bindings = fleet_of(3)
    bindings[0]["vm"] = "vm-nosuch"
    path = manifest(fleet, tmp_path, bindings)
    result = run(fleet, "apply", path, "--parallel", "1", "--fail-fast")
    assert result.returncode == 1
    assert [b["status"] for b in report(result)["bindings"]] == ["failed", "skipped", "skipped"]
    assert not {"app1", "app2", "app3"} & set(principals(fleet))
    assert fleet.run("identity", "show", "-g", RG, "-n", "app2-id").returncode == 1  # not even the identity


@pytest.mark.slow
def test_destroy_removes_what_the_file_declares_and_nothing_else(fleet: Any, tmp_path: Path) -> None:
    path = manifest(fleet, tmp_path, fleet_of(2))
    assert run(fleet, "apply", path).returncode == 0
    # Not in the file: another identity on vm-1, its role, and the seed's existingIdentity on myVM.
    other = fleet.run("-o", "json", "identity", "create", "-g", RG, "-n", "other-id", "--vm", "vm-1")
    assert other.returncode == 0, other.stderr
    object_id = json.loads(other.stdout)["principalId"]
    created = fleet.run(
        "role", "create", *admin_options(fleet, "flexible"), "--name", "other", "--object-id", object_id
    )
    assert created.returncode == 0, created.stderr

    destroyed = run(fleet, "destroy", path)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert machine_identities(fleet, "vm-1")[1] == ["other-id"]
    assert machine_identities(fleet, "vm-2")[1] == []
    remaining = principals(fleet)
    assert "other" in remaining and "app1" not in remaining and "app2" not in remaining
    shown = fleet.run("identity", "show", "-g", RG, "-n", "app1-id")
    assert shown.returncode == 1  # provision created it: deleted
    assert fleet.run("identity", "show", "-g", RG, "-n", "other-id").returncode == 0
    assert seed.EXISTING_IDENTITY_NAME in machine_identities(fleet)[1]

    mark = fleet.mark()
    again = run(fleet, "destroy", path)
    assert again.returncode == 0
    assert report(again)["changed"] is False
    assert writes(fleet, mark) == []


def machine_listings(emulator: Any, since: int) -> list[str]:
    """The subscription-wide lists of VMs and scale sets sent since a mark."""
    lists = ("/providers/Microsoft.Compute/virtualMachines", "/providers/Microsoft.Compute/virtualMachineScaleSets")
    requests = emulator.requests(since=since, service="arm")
    return [r["path"].rsplit("/", 1)[-1] for r in requests if r["method"] == "GET" and r["path"].endswith(lists)]


def test_destroy_lists_the_machines_once_and_still_names_those_keeping_an_identity(fleet: Any, tmp_path: Path) -> None:
    path = manifest(fleet, tmp_path, fleet_of(3))
    assert run(fleet, "apply", path).returncode == 0
    kept = fleet.run("identity", "assign", "-g", RG, "-n", "app2-id", "--vm", "vm-5")  # vm-5 is not in the file
    assert kept.returncode == 0, kept.stderr
    mark = fleet.mark()
    destroyed = run(fleet, "destroy", path)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert sorted(machine_listings(fleet, mark)) == ["virtualMachineScaleSets", "virtualMachines"]
    # Each identity is read when the run starts and once more right before its delete (its tag may have changed).
    reads = [r["path"].rsplit("/", 1)[-1] for r in fleet.requests(since=mark, service="arm") if r["method"] == "GET"]
    assert sorted(name for name in reads if name.endswith("-id")) == sorted(2 * ["app1-id", "app2-id", "app3-id"])
    warnings = [w for binding in report(destroyed)["bindings"] for w in binding.get("warnings", [])]
    assert len(warnings) == 1 and "identity app2-id" in warnings[0] and "VM vm-5" in warnings[0], warnings
    assert fleet.run("identity", "show", "-g", RG, "-n", "app2-id").returncode == 1


def test_destroy_keeps_a_declared_identity_provision_did_not_create(fleet: Any, tmp_path: Path) -> None:
    binding = {"identity": seed.EXISTING_IDENTITY_NAME, "vm": "vm-1", "role": "existing"}
    path = manifest(fleet, tmp_path, [binding])
    assert run(fleet, "apply", path).returncode == 0
    destroyed = run(fleet, "destroy", path)
    assert destroyed.returncode == 0
    assert fleet.run("identity", "show", "-g", RG, "-n", seed.EXISTING_IDENTITY_NAME).returncode == 0
    assert machine_identities(fleet, "vm-1")[1] == []


@pytest.mark.slow
def test_concurrent_applies_of_one_file_lose_nothing(fleet: Any, tmp_path: Path) -> None:
    bindings = fleet_of(4)
    bindings.append({"identity": "app5-id", "vm": "vm-1", "role": "app5"})
    path = manifest(fleet, tmp_path, bindings)
    commands = [[sys.executable, "-m", "provision", "-o", "json", "apply", "-f", path] for _ in range(2)]
    processes = [
        subprocess.Popen(
            command, env={**os.environ, **fleet.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
    ]
    results = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results
    assert sorted(machine_identities(fleet, "vm-1")[1]) == ["app1-id", "app5-id"]
    for n in range(2, 5):
        assert machine_identities(fleet, f"vm-{n}")[1] == [f"app{n}-id"]
    names = principals(fleet)
    assert all(names.count(f"app{n}") == 1 for n in range(1, 6))
    assert run(fleet, "plan", path).returncode == 0


def test_a_bad_manifest_exits_2_with_the_line_and_sends_nothing(fleet: Any, tmp_path: Path) -> None:
    path = manifest(fleet, tmp_path, [*fleet_of(2), {"identity": "app3-id", "vm": "vm-3", "role": "app1"}])
    mark = fleet.mark()
    result = fleet.run("apply", "-f", path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}:17: role app1 on ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert fleet.requests(since=mark) == []
