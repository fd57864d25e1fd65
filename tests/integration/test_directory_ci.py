"""The CI pipeline's service principal: it signs in to the emulated Entra with its client secret (azure-identity's
ClientSecretCredential and, through the tool's DefaultAzureCredential, EnvironmentCredential), and the real CLI
works as it within its role assignment (Contributor of the resource group), and no further; so does the real
Azure CLI (`az login --service-principal`)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import jwt
import pytest
from helpers import AZ, machine_identities, require_installed, writes

from provision.emulator import seed
from provision.emulator.stack import AZ_CLOUD_NAME

pytestmark = pytest.mark.integration

ARM_SCOPE = seed.ARM_AUDIENCE + ".default"
GROUP = f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{seed.RESOURCE_GROUP}"
SECRET_NAME = "PROVISION_CI_CLIENT_SECRET"


@pytest.fixture(autouse=True)
def seed_roles_afterwards(fresh_emulator: Any, emulator_environ: dict[str, str]) -> Any:
    yield
    fresh_emulator.reset()


def ci_secret(emulator: Any) -> str:
    """The secret, as env.sh holds it (the start's printed exports never carry it)."""
    lines = (Path(emulator.env["PROVISION_EMULATOR_DIR"]) / "env.sh").read_text().splitlines()
    exports = dict(shlex.split(line[len("export ") :])[0].split("=", 1) for line in lines)
    return exports[SECRET_NAME]


def pipeline_env(emulator: Any, secret: str | None = None) -> dict[str, str]:
    """What a pipeline sets for azure-identity's EnvironmentCredential from the emulator's exports."""
    return {
        "AZURE_CLIENT_ID": emulator.env["PROVISION_CI_CLIENT_ID"],
        "AZURE_TENANT_ID": emulator.env["PROVISION_TENANT_ID"],
        "AZURE_AUTHORITY_HOST": emulator.env["PROVISION_AUTHORITY_HOST"],
        "AZURE_CLIENT_SECRET": secret or ci_secret(emulator),
    }


def test_the_secret_is_in_env_sh_only_and_readable_by_its_owner(fresh_emulator: Any) -> None:
    env_sh = Path(fresh_emulator.env["PROVISION_EMULATOR_DIR"]) / "env.sh"
    assert SECRET_NAME not in fresh_emulator.env  # what `emulator start` printed
    assert len(ci_secret(fresh_emulator)) >= 32
    assert stat.S_IMODE(env_sh.stat().st_mode) == 0o600


def test_client_secret_credential_gets_a_token_for_the_service_principal(fresh_emulator: Any) -> None:
    from azure.identity import ClientSecretCredential

    env = pipeline_env(fresh_emulator)
    credential = ClientSecretCredential(
        env["AZURE_TENANT_ID"],
        env["AZURE_CLIENT_ID"],
        env["AZURE_CLIENT_SECRET"],
        authority=env["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True,
    )
    claims = jwt.decode(credential.get_token(ARM_SCOPE).token, options={"verify_signature": False})
    assert (claims["aud"], claims["appid"], claims["oid"], claims["tid"], claims["idtyp"]) == (
        seed.ARM_AUDIENCE.rstrip("/"),
        seed.CI_CLIENT_ID,
        seed.CI_PRINCIPAL_ID,
        seed.TENANT_ID,
        "app",
    )
    assert "xms_mirid" not in claims  # not a managed identity


def test_a_wrong_secret_gets_entras_invalid_client_answer(fresh_emulator: Any) -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential

    env = pipeline_env(fresh_emulator)
    credential = ClientSecretCredential(
        env["AZURE_TENANT_ID"],
        env["AZURE_CLIENT_ID"],
        "not-the-secret",
        authority=env["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True,
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215: Invalid client secret provided"):
        credential.get_token(ARM_SCOPE)


def test_the_pipeline_creates_and_attaches_an_identity_as_its_service_principal(fresh_emulator: Any) -> None:
    env = pipeline_env(fresh_emulator)
    created = fresh_emulator.run(
        "-o", "json", "identity", "create", "-g", seed.RESOURCE_GROUP, "-n", "idPipeline", "--vm", seed.VM_NAME, env=env
    )
    assert created.returncode == 0, created.stderr
    assert "idPipeline" in machine_identities(fresh_emulator)[1]
    assert env["AZURE_CLIENT_SECRET"] not in created.stdout + created.stderr

    # Without its role on the resource group, Resource Manager refuses the service principal (not the operator,
    # who is still Owner of the subscription): so the CLI really ran as the pipeline.
    fresh_emulator.revoke(seed.CI_PRINCIPAL_ID, "Contributor", GROUP)
    mark = fresh_emulator.mark()
    refused = fresh_emulator.run(
        "-o", "json", "identity", "create", "-g", seed.RESOURCE_GROUP, "-n", "idLater", "--vm", seed.VM_NAME, env=env
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = json.loads(refused.stdout)["error"]["message"]
    assert "AuthorizationFailed" in said and seed.CI_PRINCIPAL_ID in said
    assert writes(fresh_emulator, mark) == []
    assert "idLater" not in machine_identities(fresh_emulator)[1]


def test_the_cli_with_a_wrong_secret_fails_with_entras_answer_and_never_prints_the_secret(
    fresh_emulator: Any,
) -> None:
    wrong = "wrong-secret-3f9a1c"
    mark = fresh_emulator.mark()
    result = fresh_emulator.run(
        "-vv", "identity", "show", "-g", seed.RESOURCE_GROUP, "-n", seed.EXISTING_IDENTITY_NAME,
        env=pipeline_env(fresh_emulator, wrong),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "could not get an access token" in result.stderr
    assert "AADSTS7000215" in result.stderr
    assert wrong not in result.stdout + result.stderr
    sent = [r for r in fresh_emulator.requests(since=mark) if r["service"] == "login"]
    assert sent and all(wrong not in json.dumps(r) for r in sent)  # the request log masks it


def test_az_login_as_the_service_principal_and_azs_answers_within_its_role(fresh_emulator: Any, tmp_path: Path) -> None:
    require_installed(AZ, "the Azure CLI", "az")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AZURE_")},
        **fresh_emulator.env,
        "AZURE_CONFIG_DIR": str(tmp_path / "az"),
    }

    def az(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(AZ), *args], env=env, capture_output=True, text=True, timeout=300)

    endpoints = ["--endpoint-resource-manager", env["PROVISION_ARM_ENDPOINT"]]
    assert az("cloud", "register", "-n", AZ_CLOUD_NAME, *endpoints, "--endpoint-active-directory",
              env["PROVISION_AUTHORITY_HOST"]).returncode == 0  # fmt: skip
    assert az("cloud", "set", "-n", AZ_CLOUD_NAME).returncode == 0
    secret_file, wrong_file = tmp_path / "secret", tmp_path / "wrong"
    secret_file.write_text(ci_secret(fresh_emulator))
    wrong_file.write_text("not-the-secret")
    login = ["login", "--service-principal", "-u", env["PROVISION_CI_CLIENT_ID"]]
    login += ["--tenant", env["PROVISION_TENANT_ID"]]

    refused = az(*login, "-p", f"@{wrong_file}")
    assert refused.returncode == 1 and "AADSTS7000215" in refused.stderr

    signed_in = az(*login, "-p", f"@{secret_file}", "-o", "json")
    assert signed_in.returncode == 0, signed_in.stderr
    [account] = json.loads(signed_in.stdout)
    assert account["user"] == {"name": seed.CI_CLIENT_ID, "type": "servicePrincipal"}
    created = az("identity", "create", "-g", seed.RESOURCE_GROUP, "-n", "idAzPipeline", "-o", "json")
    assert created.returncode == 0, created.stderr

    fresh_emulator.revoke(seed.CI_PRINCIPAL_ID, "Contributor", GROUP)
    denied = az("identity", "create", "-g", seed.RESOURCE_GROUP, "-n", "idAzLater")
    assert denied.returncode == 1 and "AuthorizationFailed" in denied.stderr
    assert ci_secret(fresh_emulator) not in signed_in.stdout + signed_in.stderr + denied.stderr
