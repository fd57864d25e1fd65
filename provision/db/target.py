"""Where and how to connect: the libpq parameters every command shares, validated up front."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision import validate
from provision.errors import InvalidInput


@dataclass(frozen=True)
class Target:
    host: str
    user: str
    port: int = 5432
    database: str = "postgres"
    sslmode: str = "require"
    sslrootcert: str | None = None

    def __post_init__(self) -> None:
        validate.host(self.host)
        validate.port(self.port)
        validate.sslmode(self.sslmode)
        if not self.user:
            raise InvalidInput("--user: a user name cannot be empty")
        if not self.database or "\x00" in self.database:
            raise InvalidInput(f"--database {self.database!r}: expected a database name")
        if self.sslmode == "verify-full" and not _root_certificate_known(self.sslrootcert):
            raise InvalidInput(
                "--sslmode verify-full needs --sslrootcert (or PGSSLROOTCERT): the CA that signed the server"
            )

    def connect_kwargs(self, password: str) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect. The password travels here, never in a conninfo string."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "password": password,
            "sslmode": self.sslmode,
            "connect_timeout": 10,
            "application_name": "provision",
        }
        if self.sslrootcert:
            kwargs["sslrootcert"] = self.sslrootcert
        return kwargs

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def _root_certificate_known(sslrootcert: str | None) -> bool:
    """Whether libpq has a CA to verify the server with: given, in PGSSLROOTCERT, or its default file."""
    return bool(sslrootcert or os.environ.get("PGSSLROOTCERT") or (Path.home() / ".postgresql" / "root.crt").exists())
