"""No command lets a secret out. Every command runs with -v -v against the local Azure stack, in runs
that succeed and runs that fail (unknown client id, a role that is not an Entra role, a refused
password, a missing role, another cloud, dry runs, JSON output, a psql stand-in, PGPASSWORD set to
the admin's token), and their stdout and stderr, the emulator's request log, its own log and the
database servers' logs are searched for tokens and passwords: any JWT, the identity-specific middle
of the real tokens issued in the test, the exact tokens and passwords handed to the commands, and
Authorization header values. Only `provision token` prints a token, on its stdout.

What the tool really sent is judged from the emulator's unredacted capture (the request log is masked
by the emulator, so a token there would not show): a token travels only in the Authorization header of
Resource Manager requests, and only a Resource Manager token; to a database server only as the password
message; never in a query, a body, another header, a startup packet or a statement."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import admin_options, login_user, server_options

from provision.emulator import seed
from provision.emulator.arm.service import MANAGEMENT_AUDIENCES
from provision.emulator.arm.world import EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RG = seed.RESOURCE_GROUP
NEW_IDENTITY = "secretsIdentity"
STRANGER = str(uuid.UUID(int=0x5EC2E7))  # a client id no identity has
ARM_RESOURCE = seed.ARM_AUDIENCE.rstrip("/")
# Resource Manager takes tokens for both its audiences; the tool asks for the one /metadata/endpoints lists first.
ARM_RESOURCES = {audience.rstrip("/") for audience in MANAGEMENT_AUDIENCES}
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{20,}")
AUTHORIZATION = re.compile(r"(?i)\bauthorization\b['\"]?\s*[:=]\s*['\"]?(?!redacted|<redacted>)[^\s'\",}]+")
# Claims that are the same in every token of one identity for one audience, in the order they are
# encoded; what comes before them (iat, nbf, exp) and after (uti) changes with every token.
STABLE_CLAIMS = (b'"tid"', b'"uti"')


def stable_middle(token: str) -> str:
    """The part of a token's payload that every token of the same identity and audience shares, in its
    base64url form: what a leaked token of that identity contains, whenever it was issued."""
    payload = token.split(".")[1]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    start, end = decoded.index(STABLE_CLAIMS[0]), decoded.index(STABLE_CLAIMS[1])
    # Whole base64 groups only: 3 bytes are 4 characters.
    first, last = -(-start // 3), end // 3
    return payload[first * 4 : last * 4]


@dataclass
class Secrets:
    exact: dict[str, str] = field(default_factory=dict)  # label -> a value that must appear nowhere

    def add_token(self, label: str, token: str) -> None:
        self.exact[label] = token
        self.exact[f"middle of {label}"] = stable_middle(token)

    def leaks(self, where: str, text: str) -> list[str]:
        found = [f"{where}: {label}" for label, value in self.exact.items() if value in text]
        found += [f"{where}: a JWT at offset {match.start()}" for match in JWT.finditer(text)]
        found += [
            f"{where}: an Authorization value at offset {match.start()}" for match in AUTHORIZATION.finditer(text)
        ]
        return found


@dataclass
class Command:
    label: str
    expect: int  # exit status: each command does what it is meant to, success or failure
    args: list[str]
    env: dict[str, str | None] = field(default_factory=dict)
    prints_token: bool = False  # `provision token`: its stdout is the token


def run(emulator: Any, command: Command) -> subprocess.CompletedProcess[str]:
    result = emulator.run("-v", "-v", *command.args, env=command.env)
    assert result.returncode == command.expect, f"{command.label}: exit {result.returncode}\n{result.stderr}"
    return result


def stand_in_psql(directory: Path) -> tuple[Path, Path]:
    """A psql that records whether it got a token in PGPASSWORD (never the token) and prints a line."""
    report = directory / "psql-saw.json"
    program = directory / "bin" / "psql"
    program.parent.mkdir()
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, os, re, sys\n"
        "password = os.environ.get('PGPASSWORD', '')\n"
        "jwt = re.fullmatch(r'eyJ[\\w-]+\\.[\\w-]+\\.[\\w-]+', password)\n"
        f"with open({str(report)!r}, 'w') as out:\n"
        "    json.dump({'argv': sys.argv[1:], 'token': bool(jwt),\n"
        "               'in_argv': any(password and password in arg for arg in sys.argv)}, out)\n"
        "print('stand-in psql ran')\n"
    )
    program.chmod(0o755)
    return program.parent, report


def test_the_middle_of_a_token_gives_away_any_token_of_that_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provision.emulator import keys

    authority = keys.Authority.load_or_create(tmp_path)
    identity = {"client_id": EXISTING_CLIENT_ID, "principal_id": EXISTING_PRINCIPAL_ID, "resource_id": "/x/y"}
    other = {**identity, "client_id": STRANGER}
    issued = []
    for now, who in ((1_900_000_000, identity), (1_900_000_777, identity), (1_900_000_777, other)):
        monkeypatch.setattr(keys.time, "time", lambda now=now: float(now))
        issued.append(authority.mint_token(seed.DATABASE_AUDIENCE, who, 3600)[0])
    secrets = Secrets()
    secrets.add_token("the first", issued[0])

    middle = secrets.exact["middle of the first"]
    assert len(middle) >= 40 and issued[1] != issued[0]
    # Without its header, which the JWT pattern would catch anyway.
    assert "later: middle of the first" in secrets.leaks("later", issued[1].split(".", 1)[1])
    assert "another: middle of the first" not in secrets.leaks("another", issued[2].split(".", 1)[1])


def log_positions(directory: Path) -> dict[Path, int]:
    """Where each log of the emulator ends now: the request log, its stderr, the database servers' logs."""
    logs = [directory / "requests.jsonl", directory / "emulator.stderr", *directory.glob("postgres/*/server.log")]
    return {path: path.stat().st_size for path in logs}


def identity_commands() -> list[Command]:
    new = ["-g", RG, "-n", NEW_IDENTITY]
    return [
        Command("identity create, dry run", 3, ["--dry-run", "identity", "create", "-g", RG, "-n", "dryRun",
                                                "--vm", seed.VM_NAME]),
        Command("identity assign, json dry run", 3, ["-o", "json", "--dry-run", "identity", "assign", *new,
                                                     "--vmss", seed.VMSS_NAME]),
        Command("identity show, missing", 1, ["identity", "show", "-g", RG, "-n", "missingIdentity"]),
        Command("identity assign, missing VM", 1, ["identity", "assign", *new, "--vm", "noSuchVM"]),
        Command("identity show, unknown subscription", 1, ["--subscription", STRANGER, "identity", "show", *new]),
        Command("identity create, refused (409)", 1, ["identity", "create", "-g", RG, "-n", "conflicted"]),
        Command("token, unknown client id", 1, ["token", "--client-id", STRANGER]),
    ]  # fmt: skip


def database_commands(emulator: Any, flavor: str, admin_token: str, wrong_password: str, path: str) -> list[Command]:
    admin = admin_options(emulator, flavor)
    server = server_options(emulator, flavor)
    ids = ["--client-id", EXISTING_CLIENT_ID] if flavor == "single" else ["--object-id", EXISTING_PRINCIPAL_ID]
    user = ["--user", login_user(flavor, "myuser")]
    app = [*server, *user, "--client-id", EXISTING_CLIENT_ID]
    nobody = [*server, "--user", login_user(flavor, "nobody"), "--client-id", EXISTING_CLIENT_ID]
    return [
        Command(f"{flavor}: role create", 0, ["-o", "json", "role", "create", *admin, "--name", "myuser", *ids]),
        Command(f"{flavor}: role create, dry run", 3, ["--dry-run", "role", "create", *admin, "--name", "dry", *ids]),
        Command(f"{flavor}: role create, admin token in PGPASSWORD, identity from Resource Manager", 0,
                ["role", "create", *admin, "--name", "viaToken", "--identity", NEW_IDENTITY, "-g", RG],
                env={"PGPASSWORD": admin_token}),
        Command(f"{flavor}: role create of a role that is not an Entra role", 1,
                ["role", "create", *admin, "--name", "postgres", *ids]),
        Command(f"{flavor}: role list, refused password", 1, ["role", "list", *admin],
                env={"PGPASSWORD": wrong_password}),
        Command(f"{flavor}: role show", 0, ["-o", "json", "role", "show", *admin, "--name", "myuser"]),
        Command(f"{flavor}: role list", 0, ["role", "list", *admin]),
        Command(f"{flavor}: role drop", 0, ["role", "drop", *admin, "--name", "viaToken"]),
        Command(f"{flavor}: check", 0, ["check", *app]),
        Command(f"{flavor}: check, json, missing role", 1, ["-o", "json", "check", *nobody]),
        Command(f"{flavor}: check, unknown client id", 1, ["check", *server, *user, "--client-id", STRANGER]),
        Command(f"{flavor}: check, another cloud", 1, ["--cloud", "AzureChinaCloud", "check", *app]),
        Command(f"{flavor}: psql", 0, ["psql", *app, "--", "-tAc", "select current_user"]),
        Command(f"{flavor}: psql, missing role", 2, ["psql", *nobody, "--", "-c", "select 1"]),
        Command(f"{flavor}: psql stand-in", 0, ["psql", *app, "--", "-c", "select 1"], env={"PATH": path}),
    ]  # fmt: skip


def token_audience(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["aud"])


def leaks_in_what_was_sent(secrets: Secrets, captured: list[dict[str, Any]]) -> list[str]:
    """Secrets anywhere in the captured requests and client messages but where they belong: a Resource
    Manager token as a Resource Manager request's bearer token, a token or password as a database password."""
    leaks: list[str] = []
    for entry in captured:
        if entry["service"] == "postgres":
            where = f"{entry['server']} session {entry['session']}, {entry['message']} message"
            if entry["message"] != "password":
                leaks += secrets.leaks(where, entry["data"])
            continue
        where = f"{entry['service']} {entry['method']} {urllib.parse.urlsplit(entry['target']).path}"
        leaks += secrets.leaks(f"{where} (path and query)", urllib.parse.unquote(entry["target"]))
        leaks += secrets.leaks(f"{where} (body)", entry["body"])
        for name, value in entry["headers"]:
            if entry["service"] == "arm" and name.lower() == "authorization":
                scheme, _, token = value.partition(" ")
                if scheme != "Bearer" or token_audience(token).rstrip("/") not in ARM_RESOURCES:
                    leaks.append(f"{where}: an Authorization header that is not a Resource Manager bearer token")
            else:
                leaks += secrets.leaks(f"{where} (header {name})", value)
    return leaks


def test_no_command_lets_a_secret_out(fresh_emulator: Any, tmp_path: Path) -> None:
    emulator, secrets = fresh_emulator, Secrets()
    positions = log_positions(emulator.directory)
    emulator.admin("POST", "capture")
    assert len(positions) == 4, f"expected the request log, the emulator's stderr and 2 server logs: {positions}"
    outputs: list[tuple[Command, subprocess.CompletedProcess[str]]] = []

    def step(command: Command) -> subprocess.CompletedProcess[str]:
        result = run(emulator, command)
        outputs.append((command, result))
        return result

    def token(label: str, *args: str, output: str = "text") -> str:
        result = step(Command(label, 0, ["-o", output, "token", *args], prints_token=True))
        value = json.loads(result.stdout)["accessToken"] if output == "json" else result.stdout.strip()
        assert JWT.match(value), label
        secrets.add_token(label, value)
        return value

    new = ["-g", RG, "-n", NEW_IDENTITY]
    step(Command("identity create", 0, ["identity", "create", *new, "--vm", seed.VM_NAME]))
    created = json.loads(step(Command("identity show", 0, ["-o", "json", "identity", "show", *new])).stdout)
    admin_token = token("the admin's database token")
    token("the admin's Resource Manager token", "--resource", ARM_RESOURCE)
    token("a user-assigned identity's database token", "--client-id", EXISTING_CLIENT_ID)
    token("a new identity's database token, json", "--client-id", created["clientId"], output="json")
    wrong_password = f"not-the-password-{uuid.uuid4().hex}"
    secrets.exact["a refused PGPASSWORD"] = wrong_password

    emulator.fault("conflict", path="*/userAssignedIdentities/conflicted", method="PUT")
    for command in identity_commands():
        step(command)
    psql_dir, psql_report = stand_in_psql(tmp_path)
    for flavor in ("single", "flexible"):
        psql_path = f"{psql_dir}:{os.environ['PATH']}"
        for command in database_commands(emulator, flavor, admin_token, wrong_password, psql_path):
            step(command)
        saw = json.loads(psql_report.read_text())
        assert saw == {"argv": ["-c", "select 1"], "token": True, "in_argv": False}, saw
    step(Command("identity remove", 0, ["identity", "remove", *new, "--vm", seed.VM_NAME]))
    step(Command("identity delete", 0, ["identity", "delete", *new]))

    captured = emulator.admin("GET", "capture")["requests"]
    services = {entry["service"] for entry in captured}
    assert services == {"arm", "imds", "postgres"}, services
    passwords = [e for e in captured if e["service"] == "postgres" and e["message"] == "password"]
    assert any(admin_token in e["data"] for e in passwords) and any(wrong_password in e["data"] for e in passwords)
    leaks = leaks_in_what_was_sent(secrets, captured)
    for command, result in outputs:
        if not command.prints_token:
            leaks += secrets.leaks(f"{command.label} (stdout)", result.stdout)
        leaks += secrets.leaks(f"{command.label} (stderr)", result.stderr)
    for path, start in positions.items():
        with path.open("rb") as log:
            log.seek(start)
            leaks += secrets.leaks(str(path.relative_to(emulator.directory)), log.read().decode(errors="replace"))
    print(
        f"\n{len(outputs)} commands with -v -v, {len(positions)} logs, {len(captured)} captured requests and"
        f" messages, {len(secrets.exact)} secret values searched"
    )
    assert not leaks, "\n".join(leaks)
