"""Concurrent pipelines: many writers on one VM lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

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
