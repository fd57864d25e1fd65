"""The emulator is an independent judge: it shares no code with the tool (an import-linter contract, run
by `make lint` and here), and its own pieces (the SCRAM check, the clouds' resources, the request log's
masking) are checked against outside references, not against the tool's versions of them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pkgutil
import subprocess
import sys
from email.message import Message
from pathlib import Path

import pytest

import provision
from provision.emulator import imds, recording
from provision.emulator.postgres import scram

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# RFC 7677 section 3: the SCRAM-SHA-256 exchange for user "user", password "pencil".
RFC_PASSWORD = "pencil"
RFC_SALT = "W22ZaJ0SNY7soEsUEjb6gQ=="
RFC_ITERATIONS = 4096
RFC_AUTH_MESSAGE = (
    "n=user,r=rOprNGfwEbeRWgbNEkqO,"
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
)
RFC_CLIENT_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
RFC_SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_verifier() -> str:
    stored_key, server_key = scram.derived_keys(RFC_PASSWORD, base64.b64decode(RFC_SALT), RFC_ITERATIONS)
    encode = base64.b64encode
    return f"SCRAM-SHA-256${RFC_ITERATIONS}:{RFC_SALT}${encode(stored_key).decode()}:{encode(server_key).decode()}"


def test_the_emulator_imports_nothing_from_the_tool() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--contract", "emulator-apart"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contract_forbids_every_module_of_the_tool() -> None:
    """A module added to the tool later is forbidden to the emulator too, or this fails."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["id"] == "emulator-apart"]
    modules = {f"provision.{m.name}" for m in pkgutil.iter_modules(provision.__path__)} - {"provision.emulator"}
    assert set(contract["forbidden_modules"]) == modules


def test_the_derived_keys_reproduce_rfc_7677s_exchange() -> None:
    stored_key, server_key = scram.derived_keys(RFC_PASSWORD, base64.b64decode(RFC_SALT), RFC_ITERATIONS)
    message = RFC_AUTH_MESSAGE.encode()
    server_signature = hmac.new(server_key, message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == RFC_SERVER_SIGNATURE
    client_signature = hmac.new(stored_key, message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(RFC_CLIENT_PROOF), client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key


def test_a_verifier_passes_only_for_its_own_password() -> None:
    verifier = rfc_verifier()
    assert scram.verifies(verifier, RFC_PASSWORD)
    assert not scram.verifies(verifier, "pencil2")


def test_a_verifier_with_another_server_key_is_refused() -> None:
    """Both keys are checked: a verifier whose ServerKey is not the password's was not made from it."""
    prefix, _, _ = rfc_verifier().rpartition(":")
    assert not scram.verifies(f"{prefix}:{base64.b64encode(bytes(32)).decode()}", RFC_PASSWORD)


@pytest.mark.parametrize(
    "verifier",
    [None, "", "md5" + "0" * 32, "SCRAM-SHA-256$4096:???$x:y", "SCRAM-SHA-256$many:AAAA$AAAA:AAAA", "SCRAM-SHA-1$x"],
)
def test_anything_but_a_scram_sha_256_verifier_is_refused(verifier: str | None) -> None:
    assert not scram.verifies(verifier, RFC_PASSWORD)


@pytest.mark.parametrize(
    "resource",
    [
        "https://management.azure.com/",
        "https://management.core.windows.net/",
        "https://ossrdbms-aad.database.windows.net",
        "https://management.chinacloudapi.cn",
        "https://ossrdbms-aad.database.chinacloudapi.cn",
        "https://management.usgovcloudapi.net/",
        "https://ossrdbms-aad.database.usgovcloudapi.net",
    ],
)
def test_imds_knows_each_clouds_resources(resource: str) -> None:
    assert resource.rstrip("/").lower() in imds.KNOWN_RESOURCES


def test_the_request_log_masks_tokens_wherever_they_are() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJvaWQiOiJ4In0.c2lnbmF0dXJl"
    headers = Message()
    headers["Authorization"] = "Bearer opaque-not-a-jwt"
    headers["X-Forwarded"] = f"for {token}"
    assert recording.masked_headers(headers) == {"Authorization": "<redacted>", "X-Forwarded": "for <redacted>"}
    assert recording.masked({"q": [f"t={token}", 3]}) == {"q": ["t=<redacted>", 3]}
