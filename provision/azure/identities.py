"""User-assigned managed identities: read, create or update only when needed, delete."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provision.azure.arm import ROLE_TO_CREATE_IDENTITY, Arm, errors_explained
from provision.errors import Conflict, NotFound
from provision.plan import Action
from provision.validate import IdentityId

if TYPE_CHECKING:
    from azure.mgmt.msi import ManagedServiceIdentityClient

API_VERSION = "2024-11-30"  # azure-mgmt-msi's default, shown in --dry-run


@dataclass(frozen=True)
class Identity:
    id: str
    name: str
    location: str
    tags: dict[str, str] = field(default_factory=dict)
    client_id: str | None = None  # None until Azure has created it (a dry run)
    principal_id: str | None = None
    tenant_id: str | None = None

    @classmethod
    def from_sdk(cls, model: Any) -> Identity:
        return cls(
            id=model.id,
            name=model.name,
            location=model.location,
            tags=dict(model.tags or {}),
            client_id=model.client_id,
            principal_id=model.principal_id,
            tenant_id=model.tenant_id,
        )

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "location": self.location,
            "clientId": self.client_id,
            "principalId": self.principal_id,
            "tenantId": self.tenant_id,
            "tags": self.tags,
        }


def _subject(resource_group: str, name: str) -> str:
    return f"identity {name} in resource group {resource_group}"


def read_identity(msi: ManagedServiceIdentityClient, arm: Arm, resource_group: str, name: str) -> Identity | None:
    from azure.core.exceptions import ResourceNotFoundError

    with errors_explained(_subject(resource_group, name), arm, resource_group):
        try:
            return Identity.from_sdk(msi.user_assigned_identities.get(resource_group, name))
        except ResourceNotFoundError as error:
            if getattr(error.error, "code", None) == "ResourceGroupNotFound":
                raise
            return None


def get_identity(arm: Arm, resource_group: str, name: str) -> Identity:
    """The identity's ids from Resource Manager, or NotFound."""
    identity = read_identity(arm.identity_client(), arm, resource_group, name)
    if identity is None:
        raise NotFound(f"{_subject(resource_group, name)} was not found in subscription {arm.subscription}")
    return identity


def ensure_identity(
    msi: ManagedServiceIdentityClient,
    arm: Arm,
    resource_group: str,
    name: str,
    location: str,
    tags: dict[str, str],
    dry_run: bool,
    current: Identity | None,
) -> tuple[Identity, Action]:
    """Create the identity, or add the requested tags to it; nothing when `current` (as just read) is as asked.

    Tags not named on the command line are kept: a pipeline that adds one tag must not wipe the others."""
    subject = _subject(resource_group, name)
    if current is not None:
        if current.location != location:
            raise Conflict(
                f"{subject} already exists in {current.location}, not {location}",
                hint="An identity cannot move: drop --location, or delete it first (provision identity delete).",
            )
        wanted = {**current.tags, **tags}
        if wanted == current.tags:
            return current, Action("noop", f"identity {name}", "exists with the requested location and tags")
        verb, reason, body = "update", "tags differ", {"location": location, "tags": wanted}
    else:
        verb, reason, body = "create", "missing", {"location": location, "tags": tags}
    path = str(IdentityId(arm.subscription, resource_group, name))
    action = Action(
        verb, f"identity {name}", reason, {"method": "PUT", "url": arm.url(path, API_VERSION), "body": body}
    )
    if dry_run:
        planned = current or Identity(id=path, name=name, location=location, tags=tags)
        return planned, action
    with errors_explained(subject, arm, resource_group, ROLE_TO_CREATE_IDENTITY):
        model = msi.user_assigned_identities.create_or_update(resource_group, name, body)
    return Identity.from_sdk(model), action


def delete_identity(
    msi: ManagedServiceIdentityClient, arm: Arm, resource_group: str, name: str, dry_run: bool
) -> tuple[Identity | None, Action]:
    subject = _subject(resource_group, name)
    current = read_identity(msi, arm, resource_group, name)
    if current is None:
        return None, Action("noop", f"identity {name}", "does not exist")
    request = {"method": "DELETE", "url": arm.url(str(IdentityId(arm.subscription, resource_group, name)), API_VERSION)}
    action = Action("delete", f"identity {name}", "exists", request)
    if not dry_run:
        with errors_explained(subject, arm, resource_group, ROLE_TO_CREATE_IDENTITY):
            msi.user_assigned_identities.delete(resource_group, name)
    return current, action
