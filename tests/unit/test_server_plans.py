"""The pure decisions of `provision server`: what to PATCH, whom to add or remove, who logs in as admin."""

from __future__ import annotations

import dataclasses

import pytest

from provision.azure.servers import (
    EntraAdmin,
    FlexibleServer,
    plan_admin_add,
    plan_admin_remove,
    plan_entra,
)
from provision.errors import Conflict

OPERATOR = EntraAdmin("9e1b4d27-6c3f-4a85-b0d2-7f5e1c9a3b64", "aadadmin", "ServicePrincipal")
SERVER = FlexibleServer(
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/myflex",
    "myflex",
    "rg",
    "myflex.postgres.database.azure.com",
    "17",
    "Ready",
    "Enabled",
    "Enabled",
    "t",
    (OPERATOR,),
)


def test_entra_is_patched_only_when_off_and_password_only_when_asked() -> None:
    assert plan_entra(SERVER, disable_password=False) is None
    assert plan_entra(SERVER, disable_password=True) == {"activeDirectoryAuth": "Enabled", "passwordAuth": "Disabled"}
    off = dataclasses.replace(SERVER, entra_auth="Disabled")
    assert plan_entra(off, disable_password=False) == {"activeDirectoryAuth": "Enabled"}


def test_an_admin_is_added_once_and_renamed_only_when_named() -> None:
    assert plan_admin_add(SERVER, OPERATOR) == "noop"
    renamed = dataclasses.replace(OPERATOR, principal_name="other")
    assert plan_admin_add(SERVER, renamed) == "update"
    assert plan_admin_add(SERVER, renamed, any_name=True) == "noop"
    assert plan_admin_add(SERVER, EntraAdmin("00000000-0000-0000-0000-000000000001", "x", "User")) == "create"


def test_the_last_admin_of_a_server_without_passwords_is_kept() -> None:
    assert plan_admin_remove(SERVER, OPERATOR.object_id) == OPERATOR
    with pytest.raises(Conflict, match="only Entra admin of server myflex"):
        plan_admin_remove(dataclasses.replace(SERVER, password_auth="Disabled"), OPERATOR.object_id.upper())
