"""Validation, plans and log redaction: the pieces every command shares."""

from __future__ import annotations

import json
import logging

import pytest

from provision import validate
from provision.errors import ExitStatus, InvalidInput
from provision.logs import RedactingFormatter, redact
from provision.plan import Action, Result

JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL29zc3JkYm1zIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "text",
    [
        f"token {JWT} leaked",
        f"Authorization: Bearer {JWT}",
        "conninfo host=x password=hunter2 user=y",
        '{"access_token": "abc.def", "x": 1}',
        "authorization='Bearer abc'",
    ],
)
def test_redact_removes_secrets(text: str) -> None:
    cleaned = redact(text)
    for secret in (JWT, "hunter2", "abc.def", "Bearer abc"):
        assert secret not in cleaned


def test_formatter_redacts_arguments() -> None:
    record = logging.LogRecord("provision", logging.INFO, __file__, 1, "sent %s", (JWT,), None)
    assert JWT not in RedactingFormatter("%(message)s").format(record)


@pytest.mark.parametrize("name", ["abc", "my-identity_1", "A" * 128, "0id"])
def test_identity_names_accepted(name: str) -> None:
    assert validate.identity_name(name) == name


@pytest.mark.parametrize("name", ["ab", "_abc", "-abc", "a b", "a.b", "A" * 129, "ïdentity"])
def test_identity_names_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate.identity_name(name)


def test_guid_is_normalised_and_checked() -> None:
    assert (
        validate.guid("5C3A7F0E-2B8D-4E61-9A1F-0D4C6E8B2A17", "--client-id") == "5c3a7f0e-2b8d-4e61-9a1f-0d4c6e8b2a17"
    )
    for bad in ["", "5c3a7f0e2b8d4e619a1f0d4c6e8b2a17", "{5c3a7f0e-2b8d-4e61-9a1f-0d4c6e8b2a17}", "nope"]:
        with pytest.raises(InvalidInput, match="--client-id"):
            validate.guid(bad, "--client-id")


def test_identity_id_parsing() -> None:
    sub = "00000000-1111-2222-3333-444444444444"
    parsed = validate.identity_id(
        f"/subscriptions/{sub}/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi1"
    )
    assert (parsed.subscription, parsed.resource_group, parsed.name) == (sub, "rg", "mi1")
    with pytest.raises(InvalidInput, match="expected /subscriptions"):
        validate.identity_id(f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v")


def test_same_resource_id_ignores_case_and_trailing_slash() -> None:
    assert validate.same_resource_id("/subscriptions/A/resourceGroups/RG/x", "/subscriptions/a/resourcegroups/rg/x/")


@pytest.mark.parametrize("name", ["", "a\x00b", "é" * 32])
def test_role_names_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate.role_name(name)


def test_dry_run_with_changes_exits_3_and_without_exits_0() -> None:
    pending = Result(dry_run=True, actions=[Action("create", "identity x", "missing")])
    settled = Result(dry_run=True, actions=[Action("noop", "identity x", "exists")])
    assert pending.exit_status == ExitStatus.PENDING_CHANGES
    assert settled.exit_status == ExitStatus.SUCCESS
    assert json.loads(pending.render("json"))["changed"] is True
    assert "would create: identity x (missing)" in pending.render("text")
