"""Least-privilege grants for a managed identity's role: a small grammar, parsed into a Grant (never SQL
passed through), planned against the privileges the role holds by direct grants (the ACLs of
pg_namespace and pg_class, pg_default_acl), and composed with psycopg.sql.

    PRIV[, PRIV]... ON SCHEMA s
                     | ALL TABLES IN SCHEMA s | ALL SEQUENCES IN SCHEMA s | TABLE s.t
                     | FUTURE TABLES IN SCHEMA s FOR ROLE owner

Names follow PostgreSQL: unquoted ones fold to lower case, "quoted" ones are kept as written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from provision import deadline, validate
from provision.db.roles.planning import Step
from provision.db.roles.sql_text import rows, statement, statements
from provision.errors import Forbidden, InvalidInput, NotFound
from provision.plan import Action, Result

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

# The privileges each kind of object takes (PostgreSQL docs, GRANT), in the order they are shown.
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
PRIVILEGES = {
    "schema": ("USAGE", "CREATE"),
    "all_tables": TABLE_PRIVILEGES,
    "table": TABLE_PRIVILEGES,
    "future_tables": TABLE_PRIVILEGES,
    "all_sequences": ("USAGE", "SELECT", "UPDATE"),
}
# The pg_class kinds GRANT ... ON ALL TABLES / ALL SEQUENCES reach (PostgreSQL docs, GRANT: "ALL TABLES
# also affects views and foreign tables"; partitioned and materialized ones are tables there too).
RELATION_KINDS = {"all_tables": ["r", "v", "m", "f", "p"], "table": ["r", "v", "m", "f", "p"], "all_sequences": ["S"]}
NOUNS = {"schema": "schema", "all_tables": "tables", "table": "table", "all_sequences": "sequences"}

_TOKEN = re.compile(r'\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_$]*)|(?P<quoted>"(?:[^"]|"")*")|(?P<punct>[,.]))')


@dataclass(frozen=True)
class Grant:
    privileges: tuple[str, ...]  # in PRIVILEGES order, no repeats
    kind: str  # schema | all_tables | all_sequences | table | future_tables
    schema: str
    table: str | None = None
    owner: str | None = None  # future_tables: whose new tables

    def __str__(self) -> str:
        on = {
            "schema": f"SCHEMA {_quoted(self.schema)}",
            "all_tables": f"ALL TABLES IN SCHEMA {_quoted(self.schema)}",
            "all_sequences": f"ALL SEQUENCES IN SCHEMA {_quoted(self.schema)}",
            "table": f"TABLE {_quoted(self.schema)}.{_quoted(self.table or '')}",
            "future_tables": f"FUTURE TABLES IN SCHEMA {_quoted(self.schema)} FOR ROLE {_quoted(self.owner or '')}",
        }[self.kind]
        return f"{', '.join(self.privileges)} ON {on}"


def _quoted(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Token:
    kind: str  # word | name | punct
    text: str  # a word upper-cased; a name as PostgreSQL reads it


def _tokens(text: str, option: str) -> list[_Token]:
    found, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None:
            raise InvalidInput(f"{option} {text!r}: unexpected {text[position:].strip()[:20]!r}")
        if match["word"]:
            found.append(_Token("word", match["word"]))
        elif match["quoted"]:
            found.append(_Token("name", match["quoted"][1:-1].replace('""', '"')))
        else:
            found.append(_Token("punct", match["punct"]))
        position = match.end()
    return found


class _Reader:
    def __init__(self, text: str, option: str) -> None:
        self.text, self.option = text, option
        self.tokens = _tokens(text, option)
        self.index = 0

    def fail(self, expected: str) -> InvalidInput:
        got = self.tokens[self.index].text if self.index < len(self.tokens) else "the end"
        return InvalidInput(f"{self.option} {self.text!r}: expected {expected}, found {got!r}")

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def keyword(self, *words: str) -> None:
        for word in words:
            token = self.peek()
            if token is None or token.kind != "word" or token.text.upper() != word:
                raise self.fail(word)
            self.index += 1

    def keyword_if(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.upper() == word:
            self.index += 1
            return True
        return False

    def name(self, what: str) -> str:
        token = self.peek()
        if token is None or token.kind == "punct":
            raise self.fail(f"a {what} name")
        self.index += 1
        # Unquoted names fold to lower case, as PostgreSQL reads them.
        value = token.text.lower() if token.kind == "word" else token.text
        return validate.role_name(value, f"{self.option} {self.text!r}: {what}")

    def punct(self, mark: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == mark:
            self.index += 1
            return True
        return False


def parse_grant(text: str, option: str = "--grant") -> Grant:
    """The Grant `text` describes, or InvalidInput saying what is wrong with it (one line)."""
    reader = _Reader(text, option)
    named: list[str] = []
    while True:
        token = reader.peek()
        if token is None or token.kind != "word" or token.text.upper() == "ON":
            raise reader.fail("a privilege")
        named.append(token.text.upper())
        reader.index += 1
        if not reader.punct(","):
            break
    reader.keyword("ON")
    table = owner = None
    if reader.keyword_if("SCHEMA"):
        kind, schema = "schema", reader.name("schema")
    elif reader.keyword_if("ALL"):
        if reader.keyword_if("TABLES"):
            kind = "all_tables"
        else:
            reader.keyword("SEQUENCES")
            kind = "all_sequences"
        reader.keyword("IN", "SCHEMA")
        schema = reader.name("schema")
    elif reader.keyword_if("TABLE"):
        kind, schema = "table", reader.name("schema")
        if not reader.punct("."):
            raise reader.fail("'.' and a table name (TABLE schema.table)")
        table = reader.name("table")
    elif reader.keyword_if("FUTURE"):
        reader.keyword("TABLES", "IN", "SCHEMA")
        kind, schema = "future_tables", reader.name("schema")
        reader.keyword("FOR", "ROLE")
        owner = reader.name("owner")
    else:
        raise reader.fail("SCHEMA, ALL TABLES, ALL SEQUENCES, TABLE or FUTURE TABLES")
    if reader.peek() is not None:
        raise reader.fail("the end")
    allowed = PRIVILEGES[kind]
    for privilege in named:
        if privilege not in allowed:
            raise InvalidInput(
                f"{option} {text!r}: {privilege} is not a privilege on {NOUNS.get(kind, 'tables')}"
                f" (one of {', '.join(allowed)})"
            )
    if len(set(named)) != len(named):
        raise InvalidInput(f"{option} {text!r}: a privilege is named twice")
    return Grant(tuple(p for p in allowed if p in named), kind, schema, table, owner)


def parse_grants(texts: tuple[str, ...] | list[str], option: str = "--grant") -> tuple[Grant, ...]:
    grants = tuple(parse_grant(text, option) for text in texts)
    objects = [(g.kind, g.schema, g.table, g.owner) for g in grants]
    if len(set(objects)) != len(objects):
        raise InvalidInput(f"{option}: one object is named in two grants; give its privileges in one")
    return grants


# --- planning (pure) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectAcl:
    """One object in a grant's scope: the privileges the role holds on it by a direct grant, those PUBLIC
    holds, and those the admin may grant (None: any, as for default privileges)."""

    name: str
    held: frozenset[str] = frozenset()
    public: frozenset[str] = frozenset()
    grantable: frozenset[str] | None = None

    def may_grant(self, privilege: str) -> bool:
        return self.grantable is None or privilege in self.grantable


@dataclass(frozen=True)
class Held:
    """What the server says about one grant's object: whether it exists, and each object in its scope
    (the schema, the table, every table or sequence of the schema, the owner's future tables)."""

    exists: bool
    objects: tuple[ObjectAcl, ...] = ()


def plan_grant(grant: Grant, role: str, held: Held) -> Step:
    target = f"{grant} to role {role}"
    if not held.exists:
        raise NotFound(f"--grant {str(grant)!r}: {_missing(grant)} does not exist on this server")
    if not held.objects:
        return Step(Action("noop", target, f"schema {grant.schema} has no {NOUNS[grant.kind]} yet"))
    lacking = [(o, p) for o in held.objects for p in grant.privileges if p not in o.held]
    # PostgreSQL only warns when the admin lacks the grant option, and grants nothing: decide it here.
    refused = [(o, p) for o, p in lacking if not o.may_grant(p) and p not in o.public]
    if refused:
        shown = ", ".join(f"{p} on {o.name}" for o, p in refused[:5])
        raise Forbidden(
            f"--grant {str(grant)!r}: the admin may not grant {shown} (no grant option), and PUBLIC does not have it",
            hint="Ask the owner of those objects to grant them to the admin WITH GRANT OPTION, or grant them yourself.",
        )
    needed = [(o, p) for o, p in lacking if o.may_grant(p)]
    missing = [p for p in grant.privileges if any(p == wanted for _, wanted in needed)]
    if not missing:
        reason = "already granted" if not lacking else "held through PUBLIC (the admin may not grant it)"
        return Step(Action("noop", target, reason))
    short = len({o.name for o, _ in needed})
    reason = "not granted yet" if len(held.objects) == 1 else f"missing on {short} of {len(held.objects)}"
    return Step(Action("grant", target, reason), [_sql("grant", grant, role, missing)])


def plan_revoke(grant: Grant, role: str, held: Held) -> Step:
    target = f"{grant} from role {role}"
    if not held.exists:
        return Step(Action("noop", target, f"{_missing(grant)} does not exist"))
    present = [p for p in grant.privileges if any(p in o.held for o in held.objects)]
    if not present:
        return Step(Action("noop", target, "not granted"))
    return Step(Action("revoke", target, "granted"), [_sql("revoke", grant, role, present)])


def _missing(grant: Grant) -> str:
    if grant.kind == "table":
        return f"table {grant.schema}.{grant.table}"
    return f"schema {grant.schema}"


def _sql(verb: str, grant: Grant, role: str, privileges: list[str]) -> sql.Composed:
    from psycopg import sql

    # The privilege keywords come from PRIVILEGES (parse_grant admits no others): never user text.
    assert set(privileges) <= set(PRIVILEGES[grant.kind])
    parts: dict[str, sql.Composable] = {
        "privileges": sql.SQL(", ").join(sql.SQL(privilege) for privilege in privileges),
        "role": sql.Identifier(role),
        "schema": sql.Identifier(grant.schema),
    }
    if grant.table is not None:
        parts["table"] = sql.Identifier(grant.schema, grant.table)
    if grant.owner is not None:
        parts["owner"] = sql.Identifier(grant.owner)
    return sql.SQL(statements("grants")[f"{verb}_{grant.kind}"]).format(**parts)


# --- reading and applying ----------------------------------------------------------------------------


def read_held(conn: psycopg.Connection, role: str, grant: Grant) -> Held:
    params: dict[str, object] = {"role": role, "schema": grant.schema, "privileges": list(grant.privileges)}
    # The schema's own privileges are asked about only for a schema grant (SELECT is none of them).
    schema = rows(conn, "grants", "schema", params if grant.kind == "schema" else {**params, "privileges": []})
    if grant.kind == "future_tables":
        (row,) = rows(conn, "grants", "future", {**params, "owner": grant.owner})
        exists = bool(schema) and bool(row["owner_exists"])
        return Held(exists, (ObjectAcl(str(row["object"]), frozenset(row["held"])),))
    if grant.kind == "schema" or not schema:
        return Held(bool(schema), tuple(_acl(r) for r in schema))
    found = rows(conn, "grants", "relations", {**params, "kinds": RELATION_KINDS[grant.kind], "table": grant.table})
    return Held(grant.kind != "table" or bool(found), tuple(_acl(r) for r in found))


def _acl(row: dict) -> ObjectAcl:
    return ObjectAcl(str(row["object"]), frozenset(row["held"]), frozenset(row["public"]), frozenset(row["grantable"]))


def converge(conn: psycopg.Connection, role: str, grants: tuple[Grant, ...], revoke: bool, dry_run: bool) -> Result:
    """Grant (or revoke) exactly the declared privileges, in one transaction holding the role name's
    advisory lock (the one the role commands take); a dry run shows the SQL and rolls back."""
    import psycopg

    from provision.db.roles.commands import _explained, _transaction

    doing = f"{'revoking' if revoke else 'granting'} privileges of role {role}"
    result = Result(dry_run=dry_run)
    if not grants:
        return result
    with _explained(doing), _transaction(conn, doing) as (transaction, _):
        conn.execute(statement("lock", "role"), {"role": role})
        for step in list(_steps(conn, role, grants, revoke)):  # every grant planned before any runs
            texts = [composed.as_string(conn) for composed in step.sql]
            if texts:
                step.action.request = {"sql": texts}
            if not dry_run:
                for composed in step.sql:
                    conn.execute(composed)
            result.add(step.action)
        if dry_run:
            raise psycopg.Rollback(transaction)
    return result


def _steps(conn: psycopg.Connection, role: str, grants: tuple[Grant, ...], revoke: bool) -> Iterator[Step]:
    plan = plan_revoke if revoke else plan_grant
    for grant in grants:
        deadline.current().check(f"planning {grant}")
        yield plan(grant, role, read_held(conn, role, grant))
