"""The pure decisions of `provision server`: what to PATCH, whom to add or remove, who logs in as admin."""

from __future__ import annotations

import dataclasses

import pytest

from provision.azure.servers import (
    AdminLogin,
    EntraAdmin,
    FlexibleServer,
    admin_login_of,
    plan_admin_add,
    plan_admin_remove,
    plan_entra,
)
from provision.errors import Conflict, Forbidden, NotFound

OPERATOR = EntraAdmin("9e1b4d27-6c3f-4a85-b0d2-7f5e1c9a3b64", "aadadmin", "ServicePrincipal")
SERVER = FlexibleServer(
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/myflex",
    "myflex",
    "Microsoft.DBforPostgreSQL/flexibleServers",
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


def test_the_signed_in_admin_logs_in_under_its_admin_name_on_the_servers_host() -> None:
    me = dataclasses.replace(OPERATOR, object_id=OPERATOR.object_id.upper(), principal_name="5c3a7f0e-appid")
    assert admin_login_of(SERVER, me) == AdminLogin("myflex.postgres.database.azure.com", "flexible", "aadadmin")


def test_a_principal_that_is_not_an_admin_is_told_who_the_admins_are() -> None:
    stranger = EntraAdmin("00000000-0000-0000-0000-000000000001", "ci-pipeline", "ServicePrincipal")
    with pytest.raises(
        Forbidden,
        match=r"ci-pipeline .* is not an Entra admin of server myflex; its Entra admins:"
        r" aadadmin \(ServicePrincipal\)",
    ) as raised:
        admin_login_of(SERVER, stranger)
    assert raised.value.hint is not None and "server admin add -g rg -n myflex --me" in raised.value.hint


def test_no_admin_login_where_entra_logins_are_refused_or_the_type_is_not_a_flexible_server() -> None:
    with pytest.raises(Conflict, match="Microsoft Entra authentication disabled"):
        admin_login_of(dataclasses.replace(SERVER, entra_auth="Disabled"), OPERATOR)
    with pytest.raises(NotFound, match="Microsoft.DBforPostgreSQL/servers with no host name"):
        admin_login_of(dataclasses.replace(SERVER, type="Microsoft.DBforPostgreSQL/servers"), OPERATOR)
