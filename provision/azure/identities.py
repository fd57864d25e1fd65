"""User-assigned managed identities: read, create or update only when needed, delete."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provision.azure.arm import ROLE_TO_CREATE_IDENTITY, ROLE_TO_READ, Arm, errors_explained, is_absent
from provision.errors import Conflict, InvalidInput, NotFound
from provision.plan import Action
from provision.validate import MAX_TAGS, IdentityId, same_resource_id

if TYPE_CHECKING:
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.msi import ManagedServiceIdentityClient

API_VERSION = "2024-11-30"  # azure-mgmt-msi's default, shown in --dry-run
# Tags are merged by Resource Manager itself: a PATCH of the identity (or a PUT) replaces the whole tag set,
# so two pipelines adding different tags from the same read would lose one. "Merge" adds new names and
# updates existing ones, atomically (learn.microsoft.com/rest/api/resources/tags/update-at-scope).
TAGS_PATH = "/providers/Microsoft.Resources/tags/default"
TAGS_API_VERSION = "2021-04-01"
CREATED_BY_TAG = "provision:created-by"  # set on identities `bind` and `apply` create: only those are deleted


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
    """The identity, or None when it does not exist. A 404 about anything else (a wrong subscription, a
    missing resource group) is an error: it says nothing about whether the identity exists."""
    from azure.core.exceptions import ResourceNotFoundError

    with errors_explained(_subject(resource_group, name), arm, resource_group):
        try:
            return Identity.from_sdk(msi.user_assigned_identities.get(resource_group, name))
        except ResourceNotFoundError as error:
            if not is_absent(error):
                raise
            return None


def get_identity(arm: Arm, resource_group: str, name: str) -> Identity:
    """The identity's ids from Resource Manager, or NotFound."""
    with arm:
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

    Tags not named on the command line are kept, also those another pipeline adds meanwhile: only the
    requested tags are sent, and Resource Manager merges them."""
    subject = _subject(resource_group, name)
    path = str(IdentityId(arm.subscription, resource_group, name))
    if current is None:
        body: dict[str, Any] = {"location": location, "tags": tags}
        request = {"method": "PUT", "url": arm.url(path, API_VERSION), "body": body}
        action = Action("create", f"identity {name}", "missing", request)
        if dry_run:
            return Identity(id=path, name=name, location=location, tags=tags), action
        with errors_explained(subject, arm, resource_group, ROLE_TO_CREATE_IDENTITY):
            model = msi.user_assigned_identities.create_or_update(resource_group, name, body)
        return Identity.from_sdk(model), action
    if current.location != location:
        raise Conflict(
            f"{subject} already exists in {current.location}, not {location}",
            hint="An identity cannot move: drop --location, or delete it first (provision identity delete).",
        )
    missing = tags_to_merge(current.tags, tags)
    if not missing:
        return current, Action("noop", f"identity {name}", "exists with the requested location and tags")
    merged = merge_tags(current.tags, missing)
    if len(merged) > MAX_TAGS:
        raise InvalidInput(
            f"--tag: {subject} has {len(current.tags)} tags; with these it would have {len(merged)},"
            f" and Azure allows at most {MAX_TAGS}"
        )
    body = {"operation": "Merge", "properties": {"tags": missing}}
    url = arm.url(path + TAGS_PATH, TAGS_API_VERSION)
    request = {"method": "PATCH", "url": url, "body": body}
    action = Action("update", f"identity {name}", "tags differ", request)
    if dry_run:
        return dataclasses.replace(current, tags=merged), action
    from azure.core.rest import HttpRequest

    with errors_explained(subject, arm, resource_group, ROLE_TO_CREATE_IDENTITY):
        # Any Resource Manager client carries a generic request; the identity client (multi-API) has none.
        response = arm.compute_client().send_request(HttpRequest("PATCH", url, json=body))
        response.raise_for_status()
    return dataclasses.replace(current, tags=dict(response.json()["properties"]["tags"])), action


def tags_to_merge(current: dict[str, str], wanted: dict[str, str]) -> dict[str, str]:
    """The wanted tags that `current` lacks or has with another value; names compare ignoring case, as in Azure."""
    by_name = {key.lower(): value for key, value in current.items()}
    return {key: value for key, value in wanted.items() if by_name.get(key.lower()) != value}


def merge_tags(current: dict[str, str], changes: dict[str, str]) -> dict[str, str]:
    """What a Merge leaves: `changes` update the tags of the same name (in any case) and add the others."""
    merged = dict(current)
    for key, value in changes.items():
        merged[next((k for k in merged if k.lower() == key.lower()), key)] = value
    return merged


def delete_identity(
    msi: ManagedServiceIdentityClient,
    arm: Arm,
    resource_group: str,
    name: str,
    dry_run: bool,
    warn: Callable[[str], None],
    machines: Callable[[], Listing] | None = None,
    current: Identity | None = None,
) -> tuple[Identity | None, Action]:
    """Delete the identity. Refused while a VM or scale set uses it for disk encryption (its disks would
    become unreadable); while it is merely attached somewhere it is deleted, as Azure allows, with a warning
    naming those machines: they keep a dangling reference and can no longer get its tokens, which may well
    be the point (revoking access at once), but `identity remove` cleans up first.

    `machines` gives the subscription's machines when the caller lists them once for many deletes
    (MachineListing); without it they are listed here. `current`: the identity as the caller has just read it."""
    subject = _subject(resource_group, name)
    current = current or read_identity(msi, arm, resource_group, name)
    if current is None:
        return None, Action("noop", f"identity {name}", "does not exist")
    users = users_of(current.id, machines() if machines is not None else list_machines(arm.compute_client(), arm))
    if users.encryption:
        raise Conflict(
            f"{subject} is the disk encryption identity (securityProfile.encryptionIdentity) of"
            f" {', '.join(users.encryption)}; not deleting it",
            hint="Change those machines' encryption identity first.",
        )
    if users.attached:
        warn(
            f"{subject} is still attached to {', '.join(users.attached)}; they keep a dangling reference to it"
            f" (detach it with: provision identity remove -g {resource_group} -n {name} --vm|--vmss NAME)"
        )
    request = {"method": "DELETE", "url": arm.url(str(IdentityId(arm.subscription, resource_group, name)), API_VERSION)}
    action = Action("delete", f"identity {name}", "exists", request)
    if not dry_run:
        with errors_explained(subject, arm, resource_group, ROLE_TO_CREATE_IDENTITY):
            msi.user_assigned_identities.delete(resource_group, name)
    return current, action


@dataclass(frozen=True)
class MachineUsers:
    """The machines of a subscription that have an identity attached, and those that encrypt disks with it."""

    attached: list[str]
    encryption: list[str]


# The subscription's VMs and scale sets: (kind, wire JSON) each.
Listing = list[tuple[str, dict[str, Any]]]


def list_machines(compute: ComputeManagementClient, arm: Arm) -> Listing:
    """One listing of the subscription's VMs and one of its scale sets, not a read per machine."""
    found: Listing = []
    with errors_explained(f"the VMs and scale sets of subscription {arm.subscription}", arm, needs_role=ROLE_TO_READ):
        for kind, listing in (("VM", compute.virtual_machines), ("scale set", compute.virtual_machine_scale_sets)):
            found.extend((kind, model.as_dict()) for model in listing.list_all())
    return found


class MachineListing:
    """The subscription's machines, listed when first asked for and then reused, by every thread: a destroy
    that deletes fifty identities lists them once (after its detaches), not fifty times."""

    def __init__(self, compute: ComputeManagementClient, arm: Arm) -> None:
        self._compute, self._arm = compute, arm
        self._lock = threading.Lock()
        self._listed: Listing | None = None

    def __call__(self) -> Listing:
        with self._lock:
            if self._listed is None:
                self._listed = list_machines(self._compute, self._arm)
            return self._listed


def users_of(identity_id: str, machines: Listing) -> MachineUsers:
    """Which of `machines` (kind, wire JSON) list the identity, and which use it for disk encryption."""
    attached, encryption = [], []
    for kind, body in machines:
        group = str(body.get("id", "")).split("/")[4:5] or ["?"]
        label = f"{kind} {body.get('name')} (resource group {group[0]})"
        listed = ((body.get("identity") or {}).get("userAssignedIdentities")) or {}
        if any(same_resource_id(key, identity_id) for key in listed):
            attached.append(label)
        security = (body.get("properties") or {}).get("securityProfile") or {}
        encrypting = (security.get("encryptionIdentity") or {}).get("userAssignedIdentityResourceId")
        if encrypting and same_resource_id(encrypting, identity_id):
            encryption.append(label)
    return MachineUsers(attached, encryption)
