"""The emulator's certificate authority and token signing key, shared by all its services.

Both live in the state directory so that a restarted emulator keeps trusting what it issued:
`ca.pem` (what clients trust: REQUESTS_CA_BUNDLE, PGSSLROOTCERT), `ca-key.pem`, and
`signing-key.pem` (RS256 key for access tokens; its public half is served as JWKS by IMDS).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provision.emulator import seed

KEY_ID = "provision-emulator-1"


class TokenRejected(Exception):
    """A bearer token that the emulated services must refuse; `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # malformed | bad_signature | wrong_audience | expired | not_yet_valid


@dataclass
class Authority:
    directory: Path
    ca_cert: x509.Certificate
    ca_key: rsa.RSAPrivateKey
    signing_key: rsa.RSAPrivateKey

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def load_or_create(cls, directory: Path) -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        ca_path, ca_key_path, signing_path = (directory / n for n in ("ca.pem", "ca-key.pem", "signing-key.pem"))
        if ca_path.exists() and ca_key_path.exists() and signing_path.exists():
            return cls(
                directory,
                x509.load_pem_x509_certificate(ca_path.read_bytes()),
                _load_key(ca_key_path),
                _load_key(signing_path),
            )
        ca_key, signing_key = _new_key(), _new_key()
        # A name of its own: certificates are matched to their issuer by name, so two emulators' CAs
        # must not share one.
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"provision emulator CA {uuid.uuid4().hex[:12]}")])
        now = dt.datetime.now(dt.timezone.utc)
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(ca_key_path, _pem_key(ca_key))
        _write_private(signing_path, _pem_key(signing_key))
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, ca_cert, ca_key, signing_key)

    # -- TLS -----------------------------------------------------------------------------------

    def server_context(self, name: str, host_name: str | None = None) -> ssl.SSLContext:
        """A server-side TLS context with a certificate for `host_name` (if any) and the loopback names,
        issued by the CA.

        `name` picks the file names in the state directory (`<name>.pem`, `<name>-key.pem`): a
        certificate is reused only for the same name."""
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        if not (cert_path.exists() and key_path.exists()):
            key = _new_key()
            now = dt.datetime.now(dt.timezone.utc)
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (host_name, "localhost") if n]
            sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
            cert = (
                x509.CertificateBuilder()
                # A CN holds at most 64 characters; clients check the names in subjectAltName.
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"provision emulator {name}"[:64])]))
                .issuer_name(self.ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=825))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.ca_key, hashes.SHA256())
            )
            _write_private(key_path, _pem_key(key))
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.ca_path.read_bytes())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        return context

    # -- access tokens -------------------------------------------------------------------------

    def mint_token(self, audience: str, identity: dict[str, str], lifetime: int, **extra: Any) -> tuple[str, int]:
        """An RS256 access token shaped like Entra's for a service principal.

        `identity` carries `client_id` and `principal_id`, and for a managed identity `resource_id` (xms_mirid).
        Returns the token and its expiry (epoch seconds)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": seed.ISSUER,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "tid": seed.TENANT_ID,
            "appid": identity["client_id"],
            "appidacr": "2",
            "idtyp": "app",
            "oid": identity["principal_id"],
            "sub": identity["principal_id"],
            "uti": uuid.uuid4().hex,
            "ver": "1.0",
        }
        if identity.get("resource_id"):
            claims["xms_mirid"] = identity["resource_id"]
        claims.update(extra)
        token = jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"kid": KEY_ID})
        return token, claims["exp"]

    def verify_token(self, token: str, audiences: tuple[str, ...], leeway: int = 0) -> dict[str, Any]:
        """The claims of a token this emulator signed for one of `audiences`, or TokenRejected."""
        try:
            return jwt.decode(
                token,
                self.signing_key.public_key(),
                algorithms=["RS256"],
                audience=list(audiences),
                issuer=seed.ISSUER,
                leeway=leeway,
                options={"require": ["exp", "nbf", "aud", "oid", "appid"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired", "the access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("not_yet_valid", "the access token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong_audience", "the access token is for another audience") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad_signature", "the access token's signature does not verify") from None
        except jwt.PyJWTError as error:
            raise TokenRejected("malformed", f"the access token is not valid: {type(error).__name__}") from None

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.signing_key.public_key(), as_dict=True)
        jwk.update({"kid": KEY_ID, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
