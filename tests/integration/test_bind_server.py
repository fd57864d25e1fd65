"""`provision bind --server NAME` and a manifest's `server = "NAME"`: the flexible server is named by its
Resource Manager name, and read once per command however many bindings use it."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
from helpers import machine_identities, writes

from provision.emulator import seed

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
SERVER_PATH = (
    f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{RG}"
    f"/providers/Microsoft.DBforPostgreSQL/flexibleServers/{seed.FLEXIBLE_SERVER}"
)


def server_reads(emulator: Any, since: int) -> int:
    """GETs of the flexible server itself (not of its admins) since a mark."""
    return sum(1 for r in emulator.requests(since, service="arm") if r["method"] == "GET" and r["path"] == SERVER_PATH)


def principals(emulator: Any) -> list[str]:
    from helpers import admin_connection

    with admin_connection(emulator, "flexible") as conn:
        return [row[0] for row in conn.execute("SELECT rolname FROM pgaadauth_list_principals(false) ORDER BY 1")]


def test_bind_and_unbind_with_server_name_the_flexible_server_by_its_resource_manager_name(
    fresh_emulator: Any, emulator_environ: dict[str, str]
) -> None:
    args = ["-g", RG, "--identity", "app1-id", "--vm", seed.VM_NAME, "--server", seed.FLEXIBLE_SERVER]
    args += ["--server-resource-group", RG, "--role", "app1"]

    mark = fresh_emulator.mark()
    bound = fresh_emulator.run("-o", "json", "bind", *args)
    assert bound.returncode == 0, bound.stderr
    assert server_reads(fresh_emulator, mark) == 1
    assert "app1" in principals(fresh_emulator)
    assert "app1-id" in machine_identities(fresh_emulator)[1]

    again = fresh_emulator.run("-o", "json", "bind", *args)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False

    unbound = fresh_emulator.run("-o", "json", "unbind", *args, "--delete-identity")
    assert unbound.returncode == 0, unbound.stderr
    assert "app1" not in principals(fresh_emulator)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", seed.FLEXIBLE_SERVER, "--host", "h.example"], "--server and --host: --server reads the host"),
        (["--host", "h.example", "--admin-user", "a", "--server-resource-group", RG], "goes with --server"),
        (["--server", seed.FLEXIBLE_SERVER, "--server-resource-group", "bad/rg"], "--server-resource-group"),
    ],
)
def test_bind_refuses_a_bad_way_to_name_the_server_before_any_request(
    fresh_emulator: Any, args: list[str], message: str
) -> None:
    mark = fresh_emulator.mark()
    result = fresh_emulator.run(
        "bind", "-g", RG, "--identity", "app1-id", "--vm", seed.VM_NAME, "--role", "app1", *args
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert fresh_emulator.requests(mark) == []


def manifest(emulator: Any, tmp_path: Path, bindings: list[str]) -> str:
    path = tmp_path / "fleet.toml"
    head = f'[defaults]\nresource_group = "{RG}"\nserver = "{seed.FLEXIBLE_SERVER}"\n'
    path.write_text(head + f"port = {emulator.env['PROVISION_FLEX_PORT']}\n" + "".join(bindings))
    return str(path)


def binding(n: int, extra: str = "") -> str:
    return f'\n[[binding]]\nidentity = "app{n}-id"\nvm = "{seed.VM_NAME}"\nrole = "app{n}"\n{extra}'


def test_a_manifest_reads_its_named_server_once_per_run(
    fresh_emulator: Any, emulator_environ: dict[str, str], tmp_path: Path
) -> None:
    path = manifest(fresh_emulator, tmp_path, [binding(1), binding(2), binding(3, f'server_resource_group = "{RG}"\n')])

    mark = fresh_emulator.mark()
    applied = fresh_emulator.run("-o", "json", "apply", "-f", path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert server_reads(fresh_emulator, mark) == 1
    assert {"app1", "app2", "app3"} <= set(principals(fresh_emulator))
    assert {b["server"] for b in json.loads(applied.stdout)["bindings"]} == {
        f"{seed.host_name(seed.FLEXIBLE_SERVER)}:{fresh_emulator.env['PROVISION_FLEX_PORT']}"
    }

    mark = fresh_emulator.mark()
    planned = fresh_emulator.run("-o", "json", "plan", "-f", path)
    assert planned.returncode == 0, planned.stdout
    assert server_reads(fresh_emulator, mark) == 1
    assert writes(fresh_emulator, mark) == []

    mark = fresh_emulator.mark()
    destroyed = fresh_emulator.run("-o", "json", "destroy", "-f", path)
    assert destroyed.returncode == 0, destroyed.stdout
    assert server_reads(fresh_emulator, mark) == 1
    assert not {"app1", "app2", "app3"} & set(principals(fresh_emulator))


def test_a_server_that_cannot_be_read_fails_only_its_bindings(
    fresh_emulator: Any, emulator_environ: dict[str, str], tmp_path: Path
) -> None:
    path = manifest(fresh_emulator, tmp_path, [binding(1), binding(2, 'server = "nosuchserver"\n')])

    mark = fresh_emulator.mark()
    result = fresh_emulator.run("-o", "json", "apply", "-f", path)

    assert result.returncode == 1, result.stdout
    first, second = json.loads(result.stdout)["bindings"]
    assert first["status"] == "changed"
    assert second["status"] == "failed" and "nosuchserver" in second["error"]["message"]
    assert not any("app2-id" in write for write in writes(fresh_emulator, mark))


def test_apply_on_a_terminal_rewrites_a_line_per_binding(
    fresh_emulator: Any, emulator_environ: dict[str, str], tmp_path: Path
) -> None:
    path = manifest(fresh_emulator, tmp_path, [binding(1), binding(2)])
    env = {**os.environ, **fresh_emulator.env, "TERM": "xterm"}
    for plain in ("CI", "NO_COLOR"):
        env.pop(plain, None)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "provision", "apply", "-f", path],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=env,
            text=True,
            timeout=120,
        )
    finally:
        os.close(terminal)
    shown = _read_all(controller).decode()

    assert result.returncode == 0, shown + result.stdout
    assert shown.startswith("line 6   app1  waiting\r\nline 11  app2  waiting\r\n")
    assert "\x1b[2A\r\x1b[2Kline 6   app1  attaching…\x1b[2B\r" in shown
    assert "\x1b[1A\r\x1b[2Kline 11  app2  done (create identity app2-id, " in shown
    assert "[1/2]" not in shown


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)
