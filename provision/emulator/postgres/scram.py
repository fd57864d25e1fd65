"""The emulated Single Server's client-id check, written from the SCRAM specification rather than taken
from the tool: Single Server keeps an identity's client id as its role's password, and PostgreSQL keeps
only the verifier `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (PostgreSQL's
src/common/scram-common.c, scram_build_secret)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PREFIX = "SCRAM-SHA-256$"


def derived_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) of RFC 5802 section 3 with SHA-256 (RFC 7677):
    SaltedPassword = Hi(password, salt, i), ClientKey = HMAC(SaltedPassword, "Client Key"),
    StoredKey = H(ClientKey), ServerKey = HMAC(SaltedPassword, "Server Key").
    Hi is PBKDF2 with HMAC as the pseudorandom function. The password goes unnormalised: client ids are
    ASCII, which SASLprep leaves as it is."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def verifies(verifier: str | None, password: str) -> bool:
    """Whether a stored SCRAM-SHA-256 verifier was made from `password`; anything else (no password, md5,
    a malformed verifier) is a refusal."""
    if not verifier or not verifier.startswith(PREFIX):
        return False
    try:
        parameters, keys = verifier[len(PREFIX) :].split("$")
        iterations, salt = parameters.split(":")
        stored_key, server_key = (base64.b64decode(key, validate=True) for key in keys.split(":"))
        expected = derived_keys(password, base64.b64decode(salt, validate=True), int(iterations))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(expected[0], stored_key) and hmac.compare_digest(expected[1], server_key)
