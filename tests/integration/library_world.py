"""The world the library tests log in to: the emulator's variables in this process, an empty token
cache, and roles for the VM's identities on both server flavors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from provision.azure import imds
from provision.emulator import seed
from provision.emulator.arm.world import EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID

# The role of myVM's user-assigned identity is named after it, so the library can derive the user.
USER_ROLE = seed.EXISTING_IDENTITY_NAME


@dataclass(frozen=True)
class LibraryWorld:
    emulator: Any
    host: str
    flex_port: int
    single_port: int

    def flex(self, **kw: Any) -> dict[str, Any]:
        """Arguments for a library entry point that logs in to the Flexible server."""
        return {"host": self.host, "port": self.flex_port, **kw}

    def single(self, **kw: Any) -> dict[str, Any]:
        return {"host": self.host, "port": self.single_port, "single_server": seed.SINGLE_SERVER, **kw}


def prepare(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> LibraryWorld:
    for name, value in emulator.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(imds, "_cache", imds.TokenCache())
    env = emulator.env
    for prefix in ("PROVISION_FLEX", "PROVISION_SINGLE"):
        result = emulator.run(
            "role", "create", "--host", env[f"{prefix}_HOST"], "--port", env[f"{prefix}_PORT"],
            "--admin-user", env[f"{prefix}_ADMIN"], "--name", USER_ROLE,
            "--client-id", EXISTING_CLIENT_ID, "--object-id", EXISTING_PRINCIPAL_ID,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return LibraryWorld(
        emulator, env["PROVISION_FLEX_HOST"], int(env["PROVISION_FLEX_PORT"]), int(env["PROVISION_SINGLE_PORT"])
    )
