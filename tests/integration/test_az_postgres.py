"""The real Azure CLI's `az postgres flexible-server` commands (the pinned azure-cli in .cache/venv-az), unchanged,
against the emulated Flexible server: show, update of its authentication, its Microsoft Entra admins, and az and
provision taking turns on them. The oracle is the emulated Resource Manager itself, read with a token its own
authority signs (neither az nor provision in between)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import AZ, require_installed
from test_az_cli import AzureCli, arm_call, quick_polls

from provision.emulator import seed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["quick_polls"]  # a fixture of test_az_cli's, used here by name

RG, SERVER = seed.RESOURCE_GROUP, seed.FLEXIBLE_SERVER
GROUP = ("-g", RG)
SERVER_PATH = (
    f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{RG}/providers/Microsoft.DBforPostgreSQL/flexibleServers/"
    + SERVER
)
# What azure-cli 2.91.0 sends for flexibleServers and their administrators (its azure-mgmt-postgresqlflexibleservers
# 3.0.0b2), and what provision's own azure-mgmt-postgresqlflexibleservers 3.0.0 sends.
AZ_API_VERSION, PROVISION_API_VERSION = "2026-04-01-preview", "2026-10-01"
# The stable version whose REST specification examples the emulated provider follows, for the oracle's reads.
ORACLE_API_VERSION = "2025-08-01"
PERSON = ("11111111-2222-3333-4444-555555555555", "someone@contoso.com")


@pytest.fixture
def az(fresh_emulator: Any, quick_polls: None, tmp_path: Path) -> AzureCli:
    """az signed in as myVM's operator; Retry-After: 1 on every answer, so that it polls each second instead of
    every 30 s."""
    require_installed(AZ, "the Azure CLI", "az")
    cli = AzureCli(fresh_emulator, tmp_path / "az")
    cli.sign_in()
    return cli


def resource_manager(emulator: Any, method: str, path: str, body: Any = None) -> Any:
    """A call straight to the emulated Resource Manager as the operator, at the oracle's API version: the JSON
    answer."""
    return arm_call(emulator, method, path, body, api_version=ORACLE_API_VERSION)


def auth_config(emulator: Any) -> tuple[str, str]:
    """(activeDirectoryAuth, passwordAuth) as the emulator has them."""
    auth = resource_manager(emulator, "GET", SERVER_PATH)["properties"]["authConfig"]
    return auth["activeDirectoryAuth"], auth["passwordAuth"]


def admins(emulator: Any) -> dict[str, str]:
    """The server's Entra admins as the emulator has them: principal name by object id."""
    listed = resource_manager(emulator, "GET", f"{SERVER_PATH}/administrators")["value"]
    return {a["properties"]["objectId"]: a["properties"]["principalName"] for a in listed}


def postgres_api_versions(emulator: Any, since: int, by_az: bool) -> set[str]:
    """The api-versions of the flexibleServers requests since the mark sent by az (its User-Agent has AZURECLI),
    or else by an Azure SDK client outside az (provision's)."""
    versions = set()
    for entry in emulator.requests(since, service="arm"):
        agent = {k.lower(): v for k, v in entry["headers"].items()}.get("user-agent", "").lower()
        sdk_call = "/providers/microsoft.dbforpostgresql/" in entry["path"].lower() and "azsdk-python" in agent
        if sdk_call and ("azurecli" in agent) == by_az:
            versions.add(entry["query"]["api-version"])
    return versions


def test_az_shows_the_server_and_turns_its_authentication_on_and_off(az: AzureCli) -> None:
    emulator = az.emulator
    mark = emulator.mark()
    shown = az.json("postgres", "flexible-server", "show", *GROUP, "-n", SERVER)
    assert shown["fullyQualifiedDomainName"] == seed.host_name(SERVER)
    assert shown["authConfig"]["activeDirectoryAuth"] == "Enabled"
    assert shown["state"] == "Ready"

    # From a server created as Azure creates one by default (ServersGet: Entra off, passwords on).
    emulator.set_operation_seconds(0)
    patch = {"properties": {"authConfig": {"activeDirectoryAuth": "Disabled", "passwordAuth": "Enabled"}}}
    resource_manager(emulator, "PATCH", SERVER_PATH, patch)
    assert auth_config(emulator) == ("Disabled", "Enabled")
    emulator.set_operation_seconds(0.5)

    updated = az.json(
        "postgres", "flexible-server", "update", *GROUP, "-n", SERVER, "--microsoft-entra-auth", "Enabled"
    )
    assert updated["authConfig"] == {
        "activeDirectoryAuth": "Enabled",
        "passwordAuth": "Enabled",
        "tenantId": seed.TENANT_ID,
    }
    assert auth_config(emulator) == ("Enabled", "Enabled")
    az.run("postgres", "flexible-server", "update", *GROUP, "-n", SERVER, "--password-auth", "Disabled")
    assert auth_config(emulator) == ("Enabled", "Disabled")
    assert postgres_api_versions(emulator, mark, by_az=True) == {AZ_API_VERSION}


def test_az_creates_shows_lists_and_deletes_an_entra_admin(az: AzureCli) -> None:
    emulator = az.emulator
    admin = ("postgres", "flexible-server", "microsoft-entra-admin")
    object_id, name = PERSON
    mark = emulator.mark()
    created = az.json(*admin, "create", *GROUP, "-s", SERVER, "-u", name, "-i", object_id, "-t", "User")
    assert (created["objectId"], created["principalName"], created["principalType"]) == (object_id, name, "User")
    assert admins(emulator) == {seed.OPERATOR_PRINCIPAL_ID: seed.DATABASE_ADMIN, object_id: name}

    assert az.json(*admin, "show", *GROUP, "-s", SERVER, "-i", object_id)["principalName"] == name
    listed = az.json(*admin, "list", *GROUP, "-s", SERVER)
    assert sorted(a["principalName"] for a in listed) == sorted([seed.DATABASE_ADMIN, name])

    az.run(*admin, "delete", *GROUP, "-s", SERVER, "-i", object_id, "--yes")
    assert admins(emulator) == {seed.OPERATOR_PRINCIPAL_ID: seed.DATABASE_ADMIN}
    assert [a["principalName"] for a in az.json(*admin, "list", *GROUP, "-s", SERVER)] == [seed.DATABASE_ADMIN]
    assert postgres_api_versions(emulator, mark, by_az=True) == {AZ_API_VERSION}


def test_az_and_provision_take_turns_on_the_admins(az: AzureCli) -> None:
    emulator = az.emulator
    admin = ("postgres", "flexible-server", "microsoft-entra-admin")
    server = ("-g", RG, "-n", SERVER)

    def provision_admins() -> dict[str, str]:
        done = emulator.run("-o", "json", "server", "admin", "list", *server)
        assert done.returncode == 0, done.stderr
        return {a["objectId"]: a["principalName"] for a in json.loads(done.stdout)["entraAdmins"]}

    object_id, name = PERSON
    az.run(*admin, "create", *GROUP, "-s", SERVER, "-u", name, "-i", object_id, "-t", "User")
    assert provision_admins() == {seed.OPERATOR_PRINCIPAL_ID: seed.DATABASE_ADMIN, object_id: name}

    group_id, group_name = "22222222-3333-4444-5555-666666666666", "db-admins"
    mark = emulator.mark()
    added = emulator.run(
        "server", "admin", "add", *server, "--object-id", group_id, "--principal-name", group_name, "--type", "Group"
    )
    assert added.returncode == 0, added.stderr
    assert postgres_api_versions(emulator, mark, by_az=False) == {PROVISION_API_VERSION}
    listed = {
        a["objectId"]: (a["principalName"], a["principalType"]) for a in az.json(*admin, "list", *GROUP, "-s", SERVER)
    }
    assert listed == {
        seed.OPERATOR_PRINCIPAL_ID: (seed.DATABASE_ADMIN, "ServicePrincipal"),
        object_id: (name, "User"),
        group_id: (group_name, "Group"),
    }

    az.run(*admin, "delete", *GROUP, "-s", SERVER, "-i", object_id, "--yes")
    assert provision_admins() == {seed.OPERATOR_PRINCIPAL_ID: seed.DATABASE_ADMIN, group_id: group_name}
    assert admins(emulator) == provision_admins()
