"""A Flexible server as Azure creates one by default (`emulator start --flexible-entra disabled`: password
authentication only, no Entra admin), prepared by the real az and by provision: until Entra authentication is on
and the operator is an Entra admin, the operator's token logs in to nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_fixtures import EmulatorProcess, separate_emulator
from helpers import AZ, require_installed
from test_az_cli import AzureCli
from test_az_postgres import admins, auth_config

from provision.emulator import seed

pytestmark = pytest.mark.integration

RG, SERVER = seed.RESOURCE_GROUP, seed.FLEXIBLE_SERVER
SERVER_ARGS = ("-g", RG, "-n", SERVER)


@pytest.fixture(scope="module")
def unprepared_emulator(pytestconfig: pytest.Config) -> Iterator[EmulatorProcess]:
    with separate_emulator(pytestconfig, "--flexible-entra", "disabled") as running:
        yield running


@pytest.fixture
def unprepared(unprepared_emulator: EmulatorProcess) -> Iterator[EmulatorProcess]:
    unprepared_emulator.reset()
    yield unprepared_emulator
    unprepared_emulator.clear_faults()


def operator_logs_in_as_aadadmin(emulator: EmulatorProcess) -> bool:
    """Whether the operator's token (myVM's system-assigned identity) logs in to the Flexible server as aadadmin."""
    flexible = ("--host", emulator.env["PROVISION_FLEX_HOST"], "--port", emulator.env["PROVISION_FLEX_PORT"])
    done = emulator.run("role", "list", *flexible, "--admin-user", seed.DATABASE_ADMIN)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


@pytest.mark.slow
def test_the_server_starts_without_entra_and_provision_prepares_it(unprepared: EmulatorProcess) -> None:
    assert (auth_config(unprepared), admins(unprepared)) == (("Disabled", "Enabled"), {})
    assert not operator_logs_in_as_aadadmin(unprepared)

    enabled = unprepared.run("server", "entra", "enable", *SERVER_ARGS)
    assert enabled.returncode == 0, enabled.stderr
    assert auth_config(unprepared) == ("Enabled", "Enabled")
    # Entra authentication alone makes nobody an admin: the database has no aadadmin yet.
    assert not operator_logs_in_as_aadadmin(unprepared)

    admin = ("--object-id", seed.OPERATOR_PRINCIPAL_ID, "--principal-name", seed.DATABASE_ADMIN)
    added = unprepared.run("server", "admin", "add", *SERVER_ARGS, *admin, "--type", "ServicePrincipal")
    assert added.returncode == 0, added.stderr
    assert admins(unprepared) == {seed.OPERATOR_PRINCIPAL_ID: seed.DATABASE_ADMIN}
    assert operator_logs_in_as_aadadmin(unprepared)

    # A reset goes back to the server as Azure created it, the admin's role gone with the rest.
    unprepared.reset()
    assert (auth_config(unprepared), admins(unprepared)) == (("Disabled", "Enabled"), {})
    unprepared.run("server", "entra", "enable", *SERVER_ARGS)
    assert not operator_logs_in_as_aadadmin(unprepared)


@pytest.mark.slow
def test_az_prepares_the_server_and_the_admin_logs_in(unprepared: EmulatorProcess, tmp_path: Path) -> None:
    require_installed(AZ, "the Azure CLI", "az")
    unprepared.fault("retry_after", count=None, retry_after=1)  # az polls each second, not every 30 s
    az = AzureCli(unprepared, tmp_path / "az")
    az.sign_in()
    az.run("postgres", "flexible-server", "update", "-g", RG, "-n", SERVER, "--microsoft-entra-auth", "Enabled")
    assert auth_config(unprepared) == ("Enabled", "Enabled")
    az.run(
        *("postgres", "flexible-server", "microsoft-entra-admin", "create", "-g", RG, "-s", SERVER),
        *("-u", seed.DATABASE_ADMIN, "-i", seed.OPERATOR_PRINCIPAL_ID, "-t", "ServicePrincipal"),
    )
    assert admins(unprepared) == {seed.OPERATOR_PRINCIPAL_ID: seed.DATABASE_ADMIN}
    assert operator_logs_in_as_aadadmin(unprepared)


def test_a_bad_flexible_entra_value_is_refused_before_anything_starts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    start = [sys.executable, "-m", "provision", "emulator", "start", "--dir", str(state)]
    done = subprocess.run([*start, "--flexible-entra", "off"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Invalid value for '--flexible-entra': 'off' is not one of 'enabled', 'disabled'" in done.stderr
    assert (done.stdout, state.exists()) == ("", False)


@pytest.mark.slow
def test_the_default_server_is_ready_for_the_walkthrough(fresh_emulator: EmulatorProcess) -> None:
    shown = fresh_emulator.run("-o", "json", "server", "show", *SERVER_ARGS)
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["authConfig"]["activeDirectoryAuth"] == "Enabled"
    assert [a["principalName"] for a in body["entraAdmins"]] == [seed.DATABASE_ADMIN]
    assert operator_logs_in_as_aadadmin(fresh_emulator)
