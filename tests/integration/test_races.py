"""Concurrent pipelines: many writers on one VM lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from helpers import machine

from provision.emulator import seed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RG = seed.RESOURCE_GROUP


def _parallel(emulator: Any, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, **emulator.env}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "provision", "-o", "json", *command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    results = []
    for command, process in zip(commands, processes, strict=True):
        stdout, stderr = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return results


def test_ten_parallel_assigns_to_one_vm_all_land(fresh_emulator: Any) -> None:
    names = [f"racer{i:02d}" for i in range(10)]
    created = _parallel(fresh_emulator, [["identity", "create", "-g", RG, "-n", name] for name in names])
    assert all(result.returncode == 0 for result in created), [r.stderr for r in created]

    mark = fresh_emulator.mark()
    assigned = _parallel(
        fresh_emulator, [["identity", "assign", "-g", RG, "-n", name, "--vm", seed.VM_NAME] for name in names]
    )
    assert [r.returncode for r in assigned] == [0] * 10, [r.stderr for r in assigned if r.returncode]

    final = json.loads(
        fresh_emulator.run("-o", "json", "identity", "assign", "-g", RG, "-n", names[0], "--vm", seed.VM_NAME).stdout
    )
    assert final["changed"] is False
    assert final["machine"]["systemAssigned"] is True
    assert sorted(final["machine"]["userAssignedIdentities"]) == sorted([seed.EXISTING_IDENTITY_NAME, *names])
    statuses = [r["status"] for r in fresh_emulator.requests(since=mark, service="arm") if r["method"] == "PATCH"]
    print(f"\n10 parallel assigns: {len(statuses)} PATCHes, {statuses.count(412)} x 412, {statuses.count(409)} x 409")


def test_a_concurrent_change_of_the_system_assigned_identity_is_kept(fresh_emulator: Any) -> None:
    """Between our read and our write, someone gives the scale set a system-assigned identity: If-Match
    makes Azure answer 412, and the PATCH decided on the new state keeps their change (one without it
    would send the `type` it read, UserAssigned, and take the system-assigned identity away again)."""
    name = "myManagedIdentity"
    assert fresh_emulator.run("identity", "create", "-g", RG, "-n", name).returncode == 0
    fresh_emulator.fault(
        "concurrent_change", path=f"*/virtualMachineScaleSets/{seed.VMSS_NAME}", method="PATCH", system_assigned=True
    )
    mark = fresh_emulator.mark()
    result = fresh_emulator.run("identity", "assign", "-g", RG, "-n", name, "--vmss", seed.VMSS_NAME)
    assert result.returncode == 0, result.stderr
    sent = [r for r in fresh_emulator.requests(since=mark, service="arm") if r["method"] == "PATCH"]
    assert [(r["status"], r["body"]["identity"]["type"]) for r in sent] == [
        (412, "UserAssigned"),
        (200, "SystemAssigned, UserAssigned"),
    ]
    identity = machine(fresh_emulator, "vmss", seed.VMSS_NAME)["identity"]
    assert identity["type"] == "SystemAssigned, UserAssigned"
    assert [key.rsplit("/", 1)[-1] for key in identity["userAssignedIdentities"]] == [name]
