"""PostgreSQL password verifiers, checked without ever reading a password back.

Single Server keeps an identity's client id as its role's password; PostgreSQL stores only a
verifier. Both `provision role` (when the admin may read pg_authid) and the emulated Single Server's
login ask the same question: was this verifier made from that password?"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def made_from(verifier: str | None, password: str, role: str) -> bool:
    """Whether a stored verifier (SCRAM-SHA-256 or md5) was made from `password` for `role`.

    SCRAM: StoredKey = SHA-256(HMAC(PBKDF2-HMAC-SHA-256(password, salt, iterations), "Client Key"))."""
    if not verifier:
        return False
    if verifier.startswith("SCRAM-SHA-256$"):
        try:
            iterations_salt, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$")
            iterations, salt = iterations_salt.split(":")
            stored_key = base64.b64decode(keys.split(":")[0], validate=True)
            salted = hashlib.pbkdf2_hmac(
                "sha256", password.encode(), base64.b64decode(salt, validate=True), int(iterations)
            )
        except (ValueError, binascii.Error):
            return False
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)
    if verifier.startswith("md5"):
        expected = "md5" + hashlib.md5((password + role).encode(), usedforsecurity=False).hexdigest()
        return hmac.compare_digest(verifier, expected)
    return False
