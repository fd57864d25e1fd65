"""The database server goes away in the middle of `provision role create`: the command exits 1 with one
clear message, no half-created role is left behind (no role, no pgaadauth mapping, no membership),
and running it again creates the role.

Four moments, on both server flavors:
- while it waits for the role's advisory lock (held by another admin session), its backend is
  terminated; this runs the real CLI as a process;
- before the first write, its backend is terminated: nothing was changed, and the message says so;
- after every statement has run (the role exists inside the transaction) and before the commit, its
  backend is terminated, or its connection to the gateway is cut: the client notices only when its
  COMMIT goes unanswered, so it reports the outcome as unknown (exit 1) and a re-run settles it.
The last two run the command in this process, with a hook around the statements."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from helpers import FLAVORS, admin_connection, admin_options, invoke

from provision.db.roles import commands
from provision.db.roles.planning import Plan
from provision.db.roles.sql_text import statement
from provision.emulator.arm.world import EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID

pytestmark = pytest.mark.integration

ROLE = "interrupted"
GROUP = "pg_monitor"  # a membership granted in the same transaction


def create_args(emulator: Any, flavor: str) -> list[str]:
    ids = ["--client-id", EXISTING_CLIENT_ID] if flavor == "single" else ["--object-id", EXISTING_PRINCIPAL_ID]
    return [
        "role",
        "create",
        *admin_options(emulator, flavor),
        "--name",
        ROLE,
        *ids,
        "--member-of",
        GROUP,
        "--allow-predefined",
        GROUP,
    ]


def leftovers(emulator: Any, flavor: str) -> dict[str, Any]:
    """What is left of the role, as the admin sees it: nothing, after an interrupted create."""
    with admin_connection(emulator, flavor) as conn:
        found: dict[str, Any] = {
            "role": conn.execute("SELECT rolname FROM pg_roles WHERE rolname = %s", [ROLE]).fetchall(),
            "memberships": conn.execute(
                "SELECT roleid::regrole::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
                " WHERE r.rolname = %s",
                [ROLE],
            ).fetchall(),
        }
        if flavor == "flexible":
            found["principal"] = conn.execute(
                "SELECT * FROM pgaadauth_list_principals(false) WHERE rolname = %s", [ROLE]
            ).fetchall()
    return {what: rows for what, rows in found.items() if rows}


def assert_clean_failure(status: int, stderr: str) -> None:
    assert status == 1, stderr
    assert stderr.startswith(f"error: the connection to PostgreSQL was lost while creating role {ROLE} ("), stderr
    assert stderr.rstrip().endswith("run the command again") and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def assert_a_rerun_creates_it(emulator: Any, flavor: str) -> None:
    again = emulator.run(*create_args(emulator, flavor))
    assert again.returncode == 0, again.stderr
    assert leftovers(emulator, flavor)["role"] == [(ROLE,)]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.05)
    return found


@pytest.mark.parametrize("flavor", FLAVORS)
def test_terminated_while_waiting_for_the_role_lock(
    fresh_emulator: Any, emulator_environ: dict[str, str], flavor: str
) -> None:
    with admin_connection(fresh_emulator, flavor) as holder, admin_connection(fresh_emulator, flavor) as watcher:
        watcher.autocommit = True
        holder.execute(statement("lock", "role"), {"role": ROLE})  # held until holder's transaction ends
        create = subprocess.Popen(
            [sys.executable, "-m", "provision", *create_args(fresh_emulator, flavor)],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            (waiting,) = wait_for(
                lambda: watcher.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchall(),
                "the create waiting for the lock",
            )
            assert watcher.execute("SELECT pg_terminate_backend(%s, 10000)", waiting).fetchone() == (True,)
            _, stderr = create.communicate(timeout=60)
        finally:
            if create.poll() is None:
                create.kill()
        holder.rollback()

    assert_clean_failure(create.returncode, stderr)
    assert "terminating connection due to administrator command" in stderr
    assert leftovers(fresh_emulator, flavor) == {}
    assert_a_rerun_creates_it(fresh_emulator, flavor)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_lock_held_too_long_is_a_clear_conflict(
    fresh_emulator: Any, emulator_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch, flavor: str
) -> None:
    monkeypatch.setattr(commands, "LOCK_WAIT", 0.5)
    with admin_connection(fresh_emulator, flavor) as holder:
        holder.execute(statement("lock", "role"), {"role": ROLE})  # a run that never lets go
        status, _, stderr = invoke(*create_args(fresh_emulator, flavor))
        holder.rollback()
    assert status == 1, stderr
    assert stderr.startswith(f"error: another session has held the lock on role {ROLE} for 0.5 s"), stderr
    assert leftovers(fresh_emulator, flavor) == {}
    assert_a_rerun_creates_it(fresh_emulator, flavor)


def terminate_backend(emulator: Any, flavor: str, conn: psycopg.Connection) -> None:
    """The server ends the session, as on a failover or a restart."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()
    with admin_connection(emulator, flavor, autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s, 10000)", pid).fetchone() == (True,)


def cut_connection(emulator: Any, flavor: str, conn: psycopg.Connection) -> None:
    """The network between the client and the gateway goes away."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()
    with socket.socket(fileno=os.dup(conn.fileno())) as same:  # a shutdown acts on the socket, not the descriptor
        same.shutdown(socket.SHUT_RDWR)
    with admin_connection(emulator, flavor, autocommit=True) as other:
        wait_for(
            lambda: not other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid).fetchall(),
            "the backend ending after its client went away",
        )


def assert_outcome_unknown(status: int, stderr: str) -> None:
    assert status == 1, stderr
    assert stderr.startswith(
        f"error: the connection to PostgreSQL was lost during the commit while creating role {ROLE} ("
    )
    assert f"role {ROLE} may have been created, or not. Run the command again: it will show whether it was" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("interrupt", [terminate_backend, cut_connection], ids=["terminated", "cut"])
def test_a_session_lost_after_the_statements_is_noticed_at_the_commit_so_the_outcome_is_unknown(
    fresh_emulator: Any,
    emulator_environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    flavor: str,
    interrupt: Callable[[Any, str, psycopg.Connection], None],
) -> None:
    """The client learns of the loss only when its COMMIT gets no acknowledgement: from there it cannot
    tell a commit that never happened from one whose answer was lost (test_role_catalog shows the second)."""
    seen_inside: list[Any] = []
    apply = commands._apply

    def apply_then_interrupt(conn: psycopg.Connection, plan: Plan, dry_run: bool) -> Any:
        result = apply(conn, plan, dry_run)
        seen_inside.append(conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [ROLE, GROUP]).fetchone())
        interrupt(fresh_emulator, flavor, conn)
        return result

    with monkeypatch.context() as patch:
        patch.setattr(commands, "_apply", apply_then_interrupt)
        status, _, stderr = invoke(*create_args(fresh_emulator, flavor))

    assert seen_inside == [(True,)]  # inside the transaction the role existed, with its membership
    assert_outcome_unknown(status, stderr)
    assert leftovers(fresh_emulator, flavor) == {}  # here the session had ended before the COMMIT
    assert_a_rerun_creates_it(fresh_emulator, flavor)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_session_lost_before_the_writes_changed_nothing_and_says_so(
    fresh_emulator: Any, emulator_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch, flavor: str
) -> None:
    apply = commands._apply

    def interrupt_then_apply(conn: psycopg.Connection, plan: Plan, dry_run: bool) -> Any:
        terminate_backend(fresh_emulator, flavor, conn)
        return apply(conn, plan, dry_run)  # its first write finds the session gone

    with monkeypatch.context() as patch:
        patch.setattr(commands, "_apply", interrupt_then_apply)
        status, _, stderr = invoke(*create_args(fresh_emulator, flavor))

    assert_clean_failure(status, stderr)
    assert "before anything was committed: nothing was changed" in stderr
    assert leftovers(fresh_emulator, flavor) == {}
    assert_a_rerun_creates_it(fresh_emulator, flavor)
