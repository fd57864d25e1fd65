"""Reading a manifest: the whole file is validated before any request, and a problem names its line."""

from __future__ import annotations

import pytest

from provision.errors import InvalidInput
from provision.manifest import parse

HEAD = """\
[defaults]
resource_group = "myResourceGroup"
host = "myflex.postgres.database.azure.com"
admin_user = "aadadmin"
"""
NAMED = """\
[defaults]
resource_group = "myResourceGroup"
server = "myflex"
"""


def binding(identity: str = "app1-id", vm: str = "app1-vm", role: str = "app1", extra: str = "") -> str:
    return f'\n[[binding]]\nidentity = "{identity}"\nvm = "{vm}"\nrole = "{role}"\n{extra}'


def test_the_issue_example_reads_with_host_and_admin_user() -> None:
    text = HEAD + binding(
        extra='member_of = ["app_readers"]\n'
        'grants = ["USAGE ON SCHEMA public", "SELECT ON ALL TABLES IN SCHEMA public"]\n'
    )
    (entry,) = parse(text, "fleet.toml").entries
    b = entry.binding
    assert (b.identity, b.machine.name, b.machine.kind, b.role, b.member_of) == (
        "app1-id",
        "app1-vm",
        "vm",
        "app1",
        ("app_readers",),
    )
    assert [str(grant) for grant in b.grants] == ["USAGE ON SCHEMA public", "SELECT ON ALL TABLES IN SCHEMA public"]
    assert (entry.server.host, entry.server.port, entry.server.admin_user, entry.line) == (
        "myflex.postgres.database.azure.com",
        5432,
        "aadadmin",
        6,
    )


def test_a_binding_overrides_the_defaults() -> None:
    text = HEAD + binding(extra='resource_group = "other"\nport = 6432\ndatabase = "app"\n')
    (entry,) = parse(text, "f.toml").entries
    assert (entry.binding.resource_group, entry.server.port, entry.binding.database) == ("other", 6432, "app")


def test_a_server_is_named_in_the_defaults_or_per_binding_and_replaces_the_other_way() -> None:
    text = (
        NAMED
        + binding()
        + binding(identity="app2-id", vm="app2-vm", role="app2", extra='server_resource_group = "dbs"\nport = 6432\n')
        + binding(identity="app3-id", vm="app3-vm", role="app3", extra='host = "h.example"\nadmin_user = "dba"\n')
    )
    first, second, third = parse(text, "f.toml").entries
    assert (first.server.named, first.server.flavor, first.server.host) == (
        ("myResourceGroup", "myflex"),
        "flexible",
        "",
    )
    assert (second.server.named, second.server.port) == (("dbs", "myflex"), 6432)
    assert (third.server.named, third.server.host, third.server.admin_user) == (None, "h.example", "dba")
    one_role_on_two_servers = NAMED + binding() + binding(identity="app2-id", vm="app2-vm", extra='server = "flex2"\n')
    assert len(parse(one_role_on_two_servers, "f.toml").entries) == 2
    bound = parse(HEAD + binding(extra='server = "other"\n'), "f.toml").entries[0].server
    assert (bound.named, bound.host, bound.admin_user) == (("myResourceGroup", "other"), "", "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults\n", "f.toml: not valid TOML"),
        (HEAD, "no bindings"),
        ("colour = 1\n" + HEAD, "f.toml:1: the file: unknown key 'colour'"),
        (HEAD.replace("[defaults]", "[defaults]\nrg = 1"), "f.toml:2: [defaults]: unknown key 'rg'"),
        (HEAD + binding(extra="vms = 'x'\n"), "f.toml:10: [[binding]]: unknown key 'vms'"),
        (HEAD + binding() + binding(), "f.toml:11: duplicate binding (the same as line 6)"),
        (
            HEAD + binding() + binding(identity="app2-id", vm="app2-vm"),
            "f.toml:11: role app1 on myflex.postgres.database.azure.com:5432 is given to two identities:"
            " app1-id (line 6) and app2-id",
        ),
        (HEAD + binding(identity="bad name!"), "f.toml:6: identity"),
        (HEAD + binding(vm="bad/vm"), "f.toml:6: vm"),
        (HEAD + binding(role=""), "f.toml:6: role: a role name cannot be empty"),
        (HEAD + binding(role="pg_monitor"), "reserved"),
        (HEAD + binding(extra='vmss = "s"\n'), "f.toml:6: give vm or vmss"),
        (HEAD + binding(extra='grants = ["ALL ON SCHEMA x"]\n'), "f.toml:6: grants 'ALL ON SCHEMA x'"),
        (HEAD + binding(extra="grants = 'USAGE ON SCHEMA x'\n"), "grants must be a list of strings"),
        (HEAD + binding(extra='port = "5432"\n'), "port must be a number"),
        (HEAD + binding(extra='flavor = "hyperscale"\n'), "flavor 'hyperscale'"),
        (
            HEAD + binding(extra='server = "myflex"\nhost = "h.example"\n'),
            "f.toml:6: server and host: server reads the host and the admin from Resource Manager",
        ),
        (NAMED + binding(extra='server = "x-flex"\nadmin_user = "dba"\n'), "f.toml:5: server and admin_user:"),
        (NAMED + binding(extra='flavor = "single"\n'), "f.toml:5: server names a flexible server; Single Server"),
        (NAMED.replace('"myflex"', '"-flex"') + binding(), "f.toml:5: server '-flex': a server name has 3-63"),
        (NAMED + binding(extra='server_resource_group = "bad/rg"\n'), "f.toml:5: server_resource_group"),
        (HEAD + binding(extra='server_resource_group = "rg2"\n'), "f.toml:6: server_resource_group goes with server"),
        (
            NAMED + binding() + binding(identity="app2-id", vm="app2-vm", extra='server = "MyFlex"\n'),
            "f.toml:10: role app1 on myflex is given to two identities: app1-id (line 5) and app2-id",
        ),
        (HEAD.replace('admin_user = "aadadmin"\n', "") + binding(), "f.toml:5: admin_user is required"),
    ],
)
def test_bad_manifests_exit_2_with_the_line(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse(text, "f.toml")
    assert message in raised.value.message
    assert raised.value.exit_status == 2
