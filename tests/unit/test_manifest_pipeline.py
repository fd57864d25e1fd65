"""The order in which a fleet's work runs: each machine goes on to its roles as soon as it is attached
(apply), and is detached as soon as its roles are gone (destroy), while other machines are still at
work; an identity shared by machines is made once; an identity that cannot be made fails every binding
naming it. The Resource Manager and database steps are stand-ins that record what they were asked."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from provision import bind, manifest
from provision.azure import identities, machines
from provision.azure.machines import MachineState
from provision.errors import AzureError
from provision.plan import Action, Result

# Long enough for any machine, short enough that a test that would hang fails instead.
WAIT = 10.0

TEXT = """\
[defaults]
resource_group = "rg"
host = "myflex.postgres.database.azure.com"
admin_user = "aadadmin"
"""


def fleet(*bindings: tuple[str, str, str]) -> manifest.Manifest:
    tables = "".join(f'\n[[binding]]\nidentity = "{i}"\nvm = "{vm}"\nrole = "{role}"\n' for i, vm, role in bindings)
    return manifest.parse(TEXT + tables, "fleet.toml")


class FakeArm:
    subscription = "00000000-0000-0000-0000-000000000000"

    def identity_client(self) -> object:
        return object()

    def compute_client(self) -> object:
        return object()


@contextlib.contextmanager
def connection(_server: Any, _database: str) -> Iterator[object]:
    yield object()


class Steps:
    """The stand-ins: every call recorded in order, `events` set as each step ends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.events: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.before: dict[str, str] = {}  # a step that waits for another to have ended first
        self.failing: set[str] = set()
        monkeypatch.setattr(machines, "read_machine", lambda _c, _a, machine: self.state(machine.name))
        monkeypatch.setattr(bind, "ensure_identity", self.ensure_identity)
        monkeypatch.setattr(machines, "attach_all", self.machine_step("attach"))
        monkeypatch.setattr(machines, "detach_all", self.machine_step("detach"))
        monkeypatch.setattr(bind, "ensure_role", self.role_step("role"))
        monkeypatch.setattr(bind, "remove_role", self.role_step("drop"))
        monkeypatch.setattr(identities, "read_identity", lambda _m, _a, rg, name: self.identity(name))
        monkeypatch.setattr(identities, "MachineListing", lambda _c, _a: None)
        monkeypatch.setattr(bind, "delete_identity", lambda *_a: Action("delete", "identity", "created by provision"))

    def record(self, name: str) -> None:
        if name in self.before:
            assert self.event(self.before[name]).wait(WAIT), f"{name} waited for {self.before[name]} in vain"
        with self.lock:
            self.calls.append(name)
        if name in self.failing:
            raise AzureError(f"{name} failed")

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def ended(self, name: str) -> None:
        self.event(name).set()

    @staticmethod
    def state(name: str) -> MachineState:
        return MachineState("westeurope", '"1"', False, (), None, None)

    @staticmethod
    def identity(name: str) -> identities.Identity:
        return identities.Identity(
            id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            name=name,
            location="westeurope",
            client_id="11111111-1111-1111-1111-111111111111",
            principal_id="22222222-2222-2222-2222-222222222222",
        )

    def ensure_identity(self, _a: Any, _m: Any, _c: Any, binding: Any, _d: bool) -> tuple[Any, Action]:
        self.record(f"identity {binding.identity}")
        return self.identity(binding.identity), Action("create", f"identity {binding.identity}", "missing")

    def machine_step(self, verb: str) -> Any:
        def step(_c: Any, _a: Any, machine: Any, ids: tuple[str, ...], *_rest: Any) -> machines.Applied:
            name = f"{verb} {machine.name}"
            self.record(name)
            self.ended(name)
            state = self.state(machine.name)
            return machines.Applied(Action("update", name, "missing"), state, state)

        return step

    def role_step(self, verb: str) -> Any:
        def step(_databases: Any, _flavor: str, binding: Any, *_rest: Any) -> Result:
            name = f"{verb} {binding.role}"
            self.record(name)
            self.ended(name)
            result = Result()
            result.add(Action("create", name, "missing"))
            return result

        return step


def options(parallel: int = 1) -> manifest.RunOptions:
    return manifest.RunOptions(dry_run=False, parallel=parallel)


def test_apply_makes_a_machines_roles_while_the_next_machine_is_attached(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps(monkeypatch)
    steps.before["attach vm-2"] = "role app1"  # app1's role, made while vm-2 waits to be attached

    bindings = fleet(("app1-id", "vm-1", "app1"), ("app2-id", "vm-2", "app2"))
    report = manifest.apply(FakeArm(), connection, bindings, options())  # type: ignore[arg-type]

    assert [o.status(False) for o in report.outcomes] == ["changed", "changed"]
    assert steps.calls.index("role app1") < steps.calls.index("attach vm-2")
    assert steps.calls.index("attach vm-2") < steps.calls.index("role app2")


def test_destroy_detaches_a_machine_once_its_roles_are_gone_not_all_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps(monkeypatch)
    steps.before["drop app2"] = "detach vm-1"  # vm-1 is detached before app2's role is dropped

    bindings = fleet(("app1-id", "vm-1", "app1"), ("app2-id", "vm-2", "app2"))
    report = manifest.destroy(FakeArm(), connection, bindings, options(parallel=2))  # type: ignore[arg-type]

    assert [o.status(False) for o in report.outcomes] == ["changed", "changed"]
    assert steps.calls.index("drop app1") < steps.calls.index("detach vm-1")
    assert steps.calls.index("drop app2") < steps.calls.index("detach vm-2")


def test_an_identity_for_several_machines_is_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps(monkeypatch)
    shared = [("shared-id", f"vm-{n}", f"app{n}") for n in range(1, 6)]

    report = manifest.apply(FakeArm(), connection, fleet(*shared), options(parallel=5))  # type: ignore[arg-type]

    assert steps.calls.count("identity shared-id") == 1
    assert sorted(c for c in steps.calls if c.startswith("attach")) == [f"attach vm-{n}" for n in range(1, 6)]
    assert {o.status(False) for o in report.outcomes} == {"changed"}


def test_an_identity_that_cannot_be_made_fails_every_binding_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps(monkeypatch)
    steps.failing.add("identity shared-id")
    bindings = fleet(("shared-id", "vm-1", "app1"), ("other-id", "vm-2", "app2"), ("shared-id", "vm-3", "app3"))

    report = manifest.apply(FakeArm(), connection, bindings, options(parallel=3))  # type: ignore[arg-type]

    assert [o.status(False) for o in report.outcomes] == ["failed", "changed", "failed"]
    assert steps.calls.count("identity shared-id") == 1
    assert "attach vm-1" not in steps.calls and "attach vm-3" not in steps.calls
    assert "role app1" not in steps.calls and "role app3" not in steps.calls
