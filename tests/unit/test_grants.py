"""The grant grammar and its planner: pure, no database."""

from __future__ import annotations

import pytest
from psycopg import sql

from provision.db import grants
from provision.db.grants import Grant, Held, ObjectAcl, parse_grant, parse_grants, plan_grant, plan_revoke
from provision.errors import Forbidden, InvalidInput, NotFound


def text(composed: sql.Composable) -> str:
    # Rendering without a connection: identifiers are quoted the same way.
    return composed.as_string(None)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("USAGE ON SCHEMA app", Grant(("USAGE",), "schema", "app")),
        ("create, usage on schema App", Grant(("USAGE", "CREATE"), "schema", "app")),
        ('USAGE ON SCHEMA "My Schema"', Grant(("USAGE",), "schema", "My Schema")),
        ("INSERT, SELECT ON ALL TABLES IN SCHEMA app", Grant(("SELECT", "INSERT"), "all_tables", "app")),
        ("USAGE, SELECT ON ALL SEQUENCES IN SCHEMA app", Grant(("USAGE", "SELECT"), "all_sequences", "app")),
        ("SELECT ON TABLE app.orders", Grant(("SELECT",), "table", "app", "orders")),
        ('SELECT ON TABLE "a.b"."c""d"', Grant(("SELECT",), "table", "a.b", 'c"d')),
        (
            "SELECT ON FUTURE TABLES IN SCHEMA app FOR ROLE owner",
            Grant(("SELECT",), "future_tables", "app", owner="owner"),
        ),
    ],
)
def test_parse(given: str, expected: Grant) -> None:
    assert parse_grant(given) == expected
    assert parse_grant(str(expected)) == expected  # the canonical text reads back the same


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "expected a privilege"),
        ("ON SCHEMA app", "expected a privilege"),
        ("USAGE SCHEMA app", "expected ON"),
        ("USAGE ON app", "expected SCHEMA, ALL TABLES"),
        ("SELECT ON SCHEMA app", "SELECT is not a privilege on schema"),
        ("CREATE ON ALL TABLES IN SCHEMA app", "CREATE is not a privilege on tables"),
        ("DELETE ON ALL SEQUENCES IN SCHEMA app", "DELETE is not a privilege on sequences"),
        ("ALL ON SCHEMA app", "ALL is not a privilege on schema"),
        ("SELECT, SELECT ON TABLE app.t", "named twice"),
        ("SELECT ON TABLE orders", "expected '.'"),
        ("USAGE ON SCHEMA app; DROP ROLE x", "unexpected ';"),
        ("USAGE ON SCHEMA app extra", "expected the end"),
        ('USAGE ON SCHEMA ""', "cannot be empty"),
        ("USAGE ON SCHEMA " + "a" * 64, "at most 63 bytes"),
        ("SELECT ON FUTURE TABLES IN SCHEMA app", "expected FOR"),
        ("SELECT ON FUTURE TABLES IN SCHEMA app FOR ROLE", "expected a owner name"),
        ("USAGE ON SCHEMA 'app'", "unexpected"),
    ],
)
def test_bad_grants_say_what_is_wrong_in_one_line(given: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_grant(given)
    assert message in raised.value.message
    assert "\n" not in raised.value.message
    assert raised.value.exit_status == 2


def test_one_object_in_two_grants_is_refused() -> None:
    with pytest.raises(InvalidInput, match="one object is named in two grants"):
        parse_grants(["SELECT ON ALL TABLES IN SCHEMA app", "INSERT ON ALL TABLES IN SCHEMA app"])


def test_hostile_names_stay_identifiers() -> None:
    grant = parse_grant('SELECT ON TABLE "x""; DROP ROLE admin; --"."t"')
    step = plan_grant(grant, 'r"1', Held(True, (ObjectAcl("t", frozenset()),)))
    assert text(step.sql[0]) == 'GRANT SELECT ON TABLE "x""; DROP ROLE admin; --"."t" TO "r""1"'


def test_plan_grants_only_what_is_missing() -> None:
    grant = parse_grant("SELECT, INSERT ON ALL TABLES IN SCHEMA app")
    held = Held(True, (ObjectAcl("a", frozenset({"SELECT", "INSERT"})), ObjectAcl("b", frozenset({"SELECT"}))))
    step = plan_grant(grant, "app1", held)
    assert (step.action.verb, step.action.reason) == ("grant", "missing on 1 of 2")
    assert [text(s) for s in step.sql] == ['GRANT INSERT ON ALL TABLES IN SCHEMA "app" TO "app1"']


def test_plan_grant_in_sync_is_a_noop() -> None:
    grant = parse_grant("USAGE ON SCHEMA app")
    step = plan_grant(grant, "app1", Held(True, (ObjectAcl("app", frozenset({"USAGE", "CREATE"})),)))
    assert (step.action.verb, step.sql) == ("noop", [])


def test_plan_grant_on_an_empty_schema_is_a_noop() -> None:
    step = plan_grant(parse_grant("SELECT ON ALL TABLES IN SCHEMA app"), "app1", Held(True, ()))
    assert step.action.verb == "noop"
    assert "no tables yet" in step.action.reason


def test_plan_grant_on_a_missing_object_is_refused() -> None:
    with pytest.raises(NotFound, match="table app.t does not exist"):
        plan_grant(parse_grant("SELECT ON TABLE app.t"), "app1", Held(False))


def test_plan_future_tables() -> None:
    grant = parse_grant("SELECT ON FUTURE TABLES IN SCHEMA app FOR ROLE owner")
    step = plan_grant(grant, "app1", Held(True, (ObjectAcl("owner", frozenset()),)))
    assert [text(s) for s in step.sql] == [
        'ALTER DEFAULT PRIVILEGES FOR ROLE "owner" IN SCHEMA "app" GRANT SELECT ON TABLES TO "app1"'
    ]
    revoke = plan_revoke(grant, "app1", Held(True, (ObjectAcl("owner", frozenset({"SELECT"})),)))
    assert [text(s) for s in revoke.sql] == [
        'ALTER DEFAULT PRIVILEGES FOR ROLE "owner" IN SCHEMA "app" REVOKE SELECT ON TABLES FROM "app1"'
    ]


def test_plan_revoke_only_what_is_declared_and_held() -> None:
    grant = parse_grant("USAGE, CREATE ON SCHEMA app")
    step = plan_revoke(grant, "app1", Held(True, (ObjectAcl("app", frozenset({"USAGE"})),)))
    assert [text(s) for s in step.sql] == ['REVOKE USAGE ON SCHEMA "app" FROM "app1"']
    assert plan_revoke(grant, "app1", Held(True, (ObjectAcl("app", frozenset()),))).action.verb == "noop"
    assert plan_revoke(grant, "app1", Held(False)).action.verb == "noop"


def test_every_kind_has_both_statements() -> None:
    for kind in grants.PRIVILEGES:
        for verb in ("grant", "revoke"):
            assert f"{verb}_{kind}" in grants.statements("grants")


def test_a_privilege_the_admin_may_not_grant_is_refused_not_silently_skipped() -> None:
    grant = parse_grant("USAGE, CREATE ON SCHEMA public")
    acl = ObjectAcl("public", grantable=frozenset({"USAGE"}))
    with pytest.raises(Forbidden, match="the admin may not grant CREATE on public"):
        plan_grant(grant, "app1", Held(True, (acl,)))


def test_a_privilege_public_has_and_the_admin_may_not_grant_is_a_noop() -> None:
    grant = parse_grant("USAGE ON SCHEMA public")
    acl = ObjectAcl("public", public=frozenset({"USAGE"}), grantable=frozenset())
    step = plan_grant(grant, "app1", Held(True, (acl,)))
    assert (step.action.verb, step.action.reason) == ("noop", "held through PUBLIC (the admin may not grant it)")
