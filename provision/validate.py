"""Input validation, run before anything touches Azure or the database.

Each validator returns the value it accepts (normalised where that is safe) or raises InvalidInput
with a one-line message that names the option and the bad value.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass

from provision.errors import InvalidInput

_IDENTITY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,127}")
# Resource group: 1-90 of '_', '-', '.', '(', ')' and letters or digits as .NET's Char.IsLetterOrDigit defines
# them (Unicode letters included), not ending in '.' (learn.microsoft.com/azure/azure-resource-manager/management/
# resource-name-rules#microsoftresources; the REST spec's pattern is ^[-\w\._\(\)]+$, maxLength 90).
_RESOURCE_GROUP_PUNCTUATION = frozenset("_-.()")
_LETTER_OR_DIGIT = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})
# VM and scale set: 1-64 of letters, digits, '-', '_', '.'; no leading '_' or '-', no trailing '.' or '-'.
_MACHINE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?")
_TAG_KEY_FORBIDDEN = set("<>%&\\?/")
# Azure's tag limits (learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations):
# 50 tags per resource; names of 512 characters, values of 256, names case-insensitive.
MAX_TAGS = 50
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_IDENTITY_ID = re.compile(
    r"/subscriptions/(?P<subscription>[^/]+)/resourcegroups/(?P<group>[^/]+)"
    r"/providers/microsoft\.managedidentity/userassignedidentities/(?P<name>[^/]+)",
    re.IGNORECASE,
)
# The password is a bearer token: it travels encrypted or not at all.
SSLMODES = ("verify-full", "verify-ca", "require")
_UNENCRYPTED_SSLMODES = ("disable", "allow", "prefer")


def _show(value: str) -> str:
    return repr(value) if len(value) <= 80 else repr(value[:77] + "...")


def identity_name(value: str, option: str = "--name") -> str:
    if not _IDENTITY_NAME.fullmatch(value):
        raise InvalidInput(
            f"{option} {_show(value)}: an identity name has 3-128 characters, letters, digits, '-' and '_',"
            " and starts with a letter or digit"
        )
    return value


def resource_group(value: str, option: str = "--resource-group") -> str:
    allowed = all(c in _RESOURCE_GROUP_PUNCTUATION or unicodedata.category(c) in _LETTER_OR_DIGIT for c in value)
    if not (1 <= len(value) <= 90 and allowed and not value.endswith(".")):
        raise InvalidInput(
            f"{option} {_show(value)}: a resource group name has 1-90 characters, letters, digits, '_', '-',"
            " '.', '(' and ')', and does not end in '.'"
        )
    return value


def machine_name(value: str, option: str = "--vm") -> str:
    if not _MACHINE_NAME.fullmatch(value):
        raise InvalidInput(
            f"{option} {_show(value)}: a VM or scale set name has 1-64 characters, letters, digits, '-', '_'"
            " and '.', starts with a letter or digit and does not end in '.' or '-'"
        )
    return value


def guid(value: str, option: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        parsed = None
    if parsed is None or len(value) != 36:
        raise InvalidInput(f"{option} {_show(value)}: expected a GUID like 00000000-0000-0000-0000-000000000000")
    return str(parsed)


def optional_guid(value: str | None, option: str) -> str | None:
    return None if value is None else guid(value, option)


def location(value: str, option: str = "--location") -> str:
    if not re.fullmatch(r"[A-Za-z0-9 ]{1,64}", value):
        raise InvalidInput(f"{option} {_show(value)}: expected an Azure region such as westeurope")
    return value.replace(" ", "").lower()


def tag(value: str, option: str = "--tag") -> tuple[str, str]:
    key, sep, tag_value = value.partition("=")
    if not sep or not key or len(key) > 512 or len(tag_value) > 256 or _TAG_KEY_FORBIDDEN & set(key):
        raise InvalidInput(
            f"{option} {_show(value)}: expected KEY=VALUE (key 1-512 characters without <>%&\\?/, value up to 256)"
        )
    return key, tag_value


def tags(values: tuple[str, ...] | list[str], option: str = "--tag") -> dict[str, str]:
    """KEY=VALUE pairs as a map: at most MAX_TAGS, and no two keys that Azure would take for one."""
    parsed = [tag(value, option) for value in values]
    if len(parsed) > MAX_TAGS:
        raise InvalidInput(f"{option}: {len(parsed)} tags given; Azure allows at most {MAX_TAGS} on a resource")
    seen: dict[str, str] = {}
    for key, _ in parsed:
        if key.lower() in seen:
            raise InvalidInput(
                f"{option} {_show(key)}: the tag is also given as {_show(seen[key.lower()])};"
                " Azure tag names are case-insensitive"
            )
        seen[key.lower()] = key
    return dict(parsed)


def https_url(value: str, option: str) -> str:
    """An https:// URL with a host and nothing after its path: Resource Manager endpoints and token audiences.
    (azure-core sends bearer tokens over TLS only, and the tool appends paths and queries to it.)"""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        valid = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number, a bracketed host that is not an address
        valid = False
    plain = valid and not any(c.isspace() or not c.isprintable() for c in value)
    if not (plain and parts.scheme.lower() == "https" and parts.hostname and not parts.query and not parts.fragment):
        raise InvalidInput(f"{option} {_show(value)}: expected an https:// URL with a host, and no query or fragment")
    if not _HOSTNAME.fullmatch(parts.hostname) and not _is_ip(parts.hostname):
        raise InvalidInput(f"{option} {_show(value)}: {parts.hostname!r} is not a host name or an IP address")
    return value


@dataclass(frozen=True)
class IdentityId:
    """The parts of a user-assigned identity's resource id."""

    subscription: str
    resource_group: str
    name: str

    def __str__(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{self.name}"
        )


def identity_id(value: str, option: str = "--identity-id") -> IdentityId:
    match = _IDENTITY_ID.fullmatch(value.rstrip("/"))
    if not match:
        raise InvalidInput(
            f"{option} {_show(value)}: expected /subscriptions/<id>/resourceGroups/<group>"
            "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>"
        )
    return IdentityId(
        guid(match["subscription"], f"{option} subscription"),
        resource_group(match["group"], f"{option} resource group"),
        identity_name(match["name"], f"{option} name"),
    )


def same_resource_id(a: str, b: str) -> bool:
    """Resource Manager ids compare case-insensitively (Azure answers 'resourcegroups' in lower case)."""
    return a.rstrip("/").lower() == b.rstrip("/").lower()


# Characters a role name must not hold: control, format (zero-width, bidirectional overrides), line and
# paragraph separators, surrogates and private use. They are invisible or render as something else, so
# the name a reader sees would not be the name a login needs.
_HIDDEN_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co"}


def role_name(value: str, option: str = "--name") -> str:
    if not value:
        raise InvalidInput(f"{option}: a role name cannot be empty")
    if "\x00" in value:
        raise InvalidInput(f"{option} {_show(value)}: a role name cannot contain NUL")
    if value != value.strip():
        raise InvalidInput(f"{option} {_show(value)}: a role name cannot start or end with whitespace")
    for character in value:
        category = unicodedata.category(character)
        # Spaces other than U+0020 (no-break, ideographic, ...) pass for an ordinary space.
        if category in _HIDDEN_CATEGORIES or (category == "Zs" and character != " "):
            described = unicodedata.name(character, "unnamed")
            raise InvalidInput(
                f"{option} {_show(value)}: a role name cannot contain U+{ord(character):04X} ({described}),"
                " a character that does not show as itself"
            )
    if len(value.encode()) > 63:
        raise InvalidInput(f"{option} {_show(value)}: a role name has at most 63 bytes (PostgreSQL would truncate it)")
    return value


def single_server_user(value: str, option: str) -> str:
    """Single Server logs every user in as name@servername: without the server part it refuses the login."""
    name, at, server = value.rpartition("@")
    if not (at and name and server):
        raise InvalidInput(f"{option} {_show(value)}: Single Server user names have the form name@servername")
    return value


def host(value: str, option: str = "--host") -> str:
    if not value or not (_HOSTNAME.fullmatch(value) or _is_ip(value) or value.startswith("/")):
        raise InvalidInput(f"{option} {_show(value)}: expected a host name, an IP address or a socket directory")
    return value


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def port(value: int | str, option: str = "--port") -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= 65535:
        raise InvalidInput(f"{option} {_show(str(value))}: expected a port number from 1 to 65535")
    return number


def sslmode(value: str, option: str = "--sslmode") -> str:
    if value in _UNENCRYPTED_SSLMODES:
        raise InvalidInput(
            f"{option} {value}: refused, it lets the password (an access token) travel without TLS;"
            " use verify-full (the default) or require"
        )
    if value not in SSLMODES:
        raise InvalidInput(f"{option} {_show(value)}: expected one of {', '.join(SSLMODES)}")
    return value
