"""The role commands: each is one transaction, with every wait in it bounded by what is left of the
command's time budget. Writing commands first take an advisory lock on the role name, so pipelines
that create the same role at once run one after the other: the first creates it, the others find it
mapped. A dry run is the same path with the writes skipped and the transaction rolled back."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from provision import deadline
from provision.db.roles.flavor import detect
from provision.db.roles.planning import (
    Plan,
    entra_refusal,
    plan_create,
    plan_drop,
    refuse_groups,
    refuse_ungrantable,
)
from provision.db.roles.request import RoleRequest
from provision.db.roles.sql_text import rows, statement
from provision.db.roles.state import entra_admins, read_groups, read_role
from provision.errors import Conflict, DatabaseError, Forbidden, NotFound, OutcomeUnknown, ProvisionError, TimedOut
from provision.plan import Result

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("provision.db")

ATTEMPTS = 3  # a concurrent CREATE by something that does not take our lock: re-check this often
LOCK_WAIT = 60.0  # seconds: longest wait for a lock, another run on the same role included (lock_timeout)
STATEMENT_WAIT = 60.0  # seconds: longest any one statement may run (statement_timeout)

T = TypeVar("T")


@dataclass(frozen=True)
class Bounds:
    """How long one statement, and one wait for a lock, may last in a command's transaction (seconds)."""

    statement: float
    lock: float

    @classmethod
    def within(cls, budget: deadline.Deadline, doing: str) -> Bounds:
        """The fixed bounds, shortened to what is left of the budget; TimedOut when nothing is left."""
        budget.check(doing)
        return cls(budget.cap(STATEMENT_WAIT), budget.cap(LOCK_WAIT))

    def settings(self) -> dict[str, str]:
        return {"statement": _milliseconds(self.statement), "lock": _milliseconds(self.lock)}


def _seconds(seconds: float) -> str:
    return f"{seconds:.2g} s"  # what is left of a budget is rarely round: 1.488 s reads as 1.5 s


def _milliseconds(seconds: float) -> str:
    # PostgreSQL reads 0 as "no timeout": never less than a millisecond.
    return f"{max(1, round(seconds * 1000))}ms"


def create_role(conn: psycopg.Connection, flavor: str, request: RoleRequest, dry_run: bool) -> Result:
    """Map a role to a managed identity, grant CONNECT on the connected database and the memberships."""
    from psycopg import errors

    def attempt() -> Result:
        server = detect(conn, flavor)
        state = read_role(conn, server, request.name)
        if request.member_of:
            reached = read_groups(conn, request.member_of)
            refuse_groups(request, reached, entra_admins(conn, server))
            refuse_ungrantable(server.admin, state, reached)
        return _apply(conn, plan_create(server, state, request), dry_run)

    doing = f"creating role {request.name}"
    with _explained(doing), _refused_by_entra(request.identity.object_id):
        tries = 1
        while True:
            try:
                return _locked(
                    conn, request.name, attempt, dry_run, doing, f"role {request.name} may have been created"
                )
            except (errors.DuplicateObject, errors.UniqueViolation):
                # Created between our check and our CREATE by something that does not take our lock.
                if tries == ATTEMPTS:
                    raise
                tries += 1
                log.info("role %s appeared while creating it; reading it again", request.name)


def drop_role(conn: psycopg.Connection, flavor: str, name: str, force: bool, dry_run: bool) -> Result:
    """Drop a Microsoft Entra role; with `force`, what it owns first goes to the admin."""

    def attempt() -> Result:
        server = detect(conn, flavor)
        return _apply(conn, plan_drop(server, read_role(conn, server, name), force), dry_run)

    doing = f"dropping role {name}"
    with _explained(doing):
        return _locked(conn, name, attempt, dry_run, doing, f"role {name} may have been dropped")


def show_role(conn: psycopg.Connection, flavor: str, name: str) -> Result:
    """One role's mapping, memberships and what it owns."""
    doing = f"reading role {name}"
    with _explained(doing), _transaction(conn, doing):
        server = detect(conn, flavor)
        state = read_role(conn, server, name)
    if not state.exists:
        raise NotFound(f"role {name} does not exist on this server")
    fields: dict[str, Any] = {"role": name, **server.fields(), "entra": state.entra}
    if server.flavor == "flexible":
        fields.update(objectId=state.object_id, principalType=state.principal_type)
    else:
        fields.update(recordedClientId=state.recorded_client_id)
    fields.update(
        administrator=state.administrator,
        canLogin=state.can_login,
        memberOf=list(state.member_of),
        connect="granted" if state.connect_granted else "through PUBLIC" if server.public_connect else "not granted",
        ownedObjects=len(state.owned),
    )
    return Result(fields=fields)


def list_roles(conn: psycopg.Connection, flavor: str) -> Result:
    """Every Microsoft Entra principal: pgaadauth_list_principals on Flexible, azure_ad_user's members on Single."""
    with _explained("listing roles"), _transaction(conn, "listing roles"):
        server = detect(conn, flavor)
        found = rows(conn, "principals", server.flavor)
    if server.flavor == "flexible":
        principals = [
            {
                "role": row.get("rolname"),
                "type": row.get("principaltype"),
                "objectId": row.get("objectid"),
                "admin": bool(row.get("isadmin")),
            }
            for row in found
        ]
    else:
        principals = [{"role": row["role"], "canLogin": row["can_login"]} for row in found]
    return Result(fields={**server.fields(), "principals": principals})


@contextlib.contextmanager
def _transaction(conn: psycopg.Connection, doing: str) -> Iterator[tuple[psycopg.Transaction, Bounds]]:
    """One transaction whose statements and lock waits end within their Bounds (SET LOCAL: they end with it)."""
    from psycopg import errors

    bounds = Bounds.within(deadline.current(), doing)
    try:
        with conn.transaction() as transaction:
            conn.execute(statement("lock", "bounds"), bounds.settings())
            yield transaction, bounds
    except (errors.QueryCanceled, errors.LockNotAvailable) as error:
        limit = bounds.lock if isinstance(error, errors.LockNotAvailable) else bounds.statement
        raise TimedOut(
            f"PostgreSQL did not finish {doing} within {_seconds(limit)} ({_message(error)}); the transaction was"
            " rolled back: nothing was changed",
            hint="Something held it up: a lock another session holds (pg_locks and pg_stat_activity show which)"
            " or a busy server. Run again later, or raise --timeout if the command needs longer.",
        ) from None


def _locked(
    conn: psycopg.Connection, name: str, body: Callable[[], Result], dry_run: bool, doing: str, maybe: str
) -> Result:
    """Run `body` in one transaction that holds the role name's advisory lock; a dry run rolls back.
    A connection lost once the COMMIT of a change is under way is OutcomeUnknown: the server may have
    committed it without the acknowledgement arriving."""
    import psycopg

    committing = False
    try:
        with _transaction(conn, doing) as (transaction, bounds):
            try:
                conn.execute(statement("lock", "role"), {"role": name})
            except psycopg.errors.LockNotAvailable:
                raise Conflict(
                    f"another session has held the lock on role {name} for {_seconds(bounds.lock)} (another provision"
                    " run, or a transaction left open); nothing was changed",
                    hint="Run again once it has finished; pg_locks shows who holds the advisory lock.",
                ) from None
            result = body()
            if dry_run:
                raise psycopg.Rollback(transaction)
            committing = result.changed  # leaving the block sends COMMIT
    except psycopg.Error as error:
        if committing and _connection_lost(error):
            raise OutcomeUnknown(
                f"the connection to PostgreSQL was lost during the commit while {doing} ({_message(error)}):"
                f" {maybe}, or not. Run the command again: it will show whether it was, and finish the job."
            ) from None
        raise
    return result


def _apply(conn: psycopg.Connection, plan: Plan, dry_run: bool) -> Result:
    """Run each step's SQL (or, in a dry run, only render it) and describe what was done."""
    rendered: list[str] = []
    for step in plan.steps:
        texts = [composed.as_string(conn) for composed in step.sql]
        if texts:
            step.action.request = {"sql": texts}
        for composed, text in zip(step.sql, texts, strict=True):
            if not dry_run:
                log.info("running: %s", text)
                conn.execute(composed)
        rendered.extend(texts)
    return Result(
        dry_run=dry_run,
        actions=[step.action for step in plan.steps],
        fields={**plan.fields, "statements": rendered},
        warnings=plan.warnings,
    )


def _connection_lost(error: Exception) -> bool:
    """The session ended under us: the server stopped or ended it (57P), or the connection failed (08,
    or no SQLSTATE at all when libpq noticed it itself)."""
    import psycopg

    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(error, psycopg.OperationalError) and (sqlstate is None or sqlstate.startswith(("57P", "08")))


@contextlib.contextmanager
def _explained(subject: str) -> Iterator[None]:
    """PostgreSQL errors as messages that say what was refused."""
    import psycopg
    from psycopg import errors

    try:
        yield
    except ProvisionError:
        raise
    except errors.InsufficientPrivilege as error:
        raise Forbidden(
            f"PostgreSQL refused {subject}: {_message(error)}",
            hint="The admin needs CREATEROLE and the right to grant the roles involved; on Azure, connect as the"
            " server's Microsoft Entra administrator.",
        ) from None
    except psycopg.Error as error:
        if _connection_lost(error):
            # Before the commit (that case is OutcomeUnknown): the server rolls the open transaction back.
            raise DatabaseError(
                f"the connection to PostgreSQL was lost while {subject} ({_message(error)}), before anything was"
                " committed: nothing was changed; run the command again"
            ) from None
        raise DatabaseError(f"PostgreSQL failed {subject}: {_message(error)}") from None


@contextlib.contextmanager
def _refused_by_entra(object_id: str | None) -> Iterator[None]:
    """Flexible Server's answer that Entra does not know `object_id` as a service principal, in plain words."""
    from psycopg import errors

    try:
        yield
    except errors.InternalError_ as error:
        refusal = entra_refusal(_message(error), object_id) if object_id else None
        if refusal is None:
            raise
        raise refusal from None


def _message(error: psycopg.Error) -> str:
    text = error.diag.message_primary or str(error)
    detail = error.diag.message_detail
    return f"{text} ({detail})" if detail else text
