"""The SQL the role commands run, loaded from the package provision.sql (the repository's sql/)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql


@functools.cache
def statements(family: str) -> dict[str, str]:
    """The named statements of sql/<family>.sql: sections start with `-- name: NAME`; comments are dropped."""
    text = resources.files("provision.sql").joinpath(f"{family}.sql").read_text(encoding="utf-8")
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            current = found.setdefault(line.removeprefix("-- name:").strip(), [])
        elif line.strip() and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip().rstrip(";") for name, lines in found.items()}


def statement(
    family: str, name: str, identifiers: dict[str, str] | None = None, literals: dict[str, str] | None = None
) -> sql.SQL | sql.Composed:
    """One statement with its `{placeholders}` filled: names quoted as identifiers, values as literals."""
    from psycopg import sql

    text = sql.SQL(statements(family)[name])  # our own files, never user input
    if not identifiers and not literals:
        return text
    parts: dict[str, sql.Composable] = {key: sql.Identifier(value) for key, value in (identifiers or {}).items()}
    parts.update({key: sql.Literal(value) for key, value in (literals or {}).items()})
    return text.format(**parts)


def rows(conn: psycopg.Connection, family: str, name: str, params: dict[str, Any] | None = None) -> list[dict]:
    """The rows of one named statement, as dicts with lower-case keys."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(statement(family, name), params)
        return [{str(key).lower(): value for key, value in row.items()} for row in cursor.fetchall()]
