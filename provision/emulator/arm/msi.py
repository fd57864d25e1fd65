"""Microsoft.ManagedIdentity as the emulator answers it: user-assigned identities (their tags through the Tags
API, their federated identity credentials), and what a token says about an identity."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from provision.emulator import seed
from provision.emulator.arm.resources import Resources, invalid, not_found, tags_of
from provision.emulator.http import ArmError

# The seed's user-assigned identity keeps fixed ids so that logs and test output stay comparable.
EXISTING_CLIENT_ID = "3f0c2d5e-8a41-4b7c-9e26-51d8a7b4c0f3"
EXISTING_PRINCIPAL_ID = "b7e2a9c4-1d53-4f08-a6e7-2c9f4b8d1e50"

IDENTITY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")

# Federated identity credentials: the name pattern of the REST spec (ManagedIdentity/FederatedIdentityCredential.tsp)
# and the limits of learn.microsoft.com/entra/workload-id/workload-identity-federation-considerations (at most 20 on a
# user-assigned identity; issuer a URL, subject and the one audience at most 600 characters each; issuer and
# subject unique together). No recorded Azure wording was found for these refusals: the messages are the emulator's.
CREDENTIAL_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{2,119}")
MAX_CREDENTIALS = 20
MAX_CLAIM_LENGTH = 600
CREDENTIALS_SEGMENT = "federatedidentitycredentials"


@dataclass
class ManagedIdentity:
    """What an access token says about an identity (see Authority.mint_token). Never changed once made."""

    name: str
    client_id: str
    principal_id: str
    resource_id: str

    def token_subject(self) -> dict[str, str]:
        return {"client_id": self.client_id, "principal_id": self.principal_id, "resource_id": self.resource_id}


def system_assigned_body(scope: str, location: str, identity: ManagedIdentity) -> dict[str, Any]:
    """A resource's system-assigned identity as Microsoft.ManagedIdentity serves it at
    {scope}/providers/Microsoft.ManagedIdentity/identities/default (System Assigned Identities - Get By Scope;
    the properties of the spec's SystemAssignedIdentityGet example)."""
    resource_id = f"{scope}/providers/Microsoft.ManagedIdentity/identities/default"
    principal, client = identity.principal_id, identity.client_id
    return {
        "id": resource_id,
        "name": "default",
        "type": "Microsoft.ManagedIdentity/identities",
        "location": location,
        "properties": {
            "tenantId": seed.TENANT_ID,
            "principalId": principal,
            "clientId": client,
            "clientSecretUrl": f"https://control-{location}.identity.azure.net{scope}/credentials"
            f"?tid={seed.TENANT_ID}&oid={principal}&aid={client}",
        },
    }


@dataclass
class FederatedCredential:
    name: str
    issuer: str
    subject: str
    audiences: list[str]

    def to_arm(self, identity_id: str) -> dict[str, Any]:
        """In the shape of the spec's FederatedIdentityCredentialGet example (2024-11-30)."""
        return {
            "id": f"{identity_id}/federatedIdentityCredentials/{self.name}",
            "name": self.name,
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
            "properties": {"issuer": self.issuer, "subject": self.subject, "audiences": list(self.audiences)},
        }


@dataclass
class UserAssignedIdentity:
    resource_group: str
    name: str
    location: str
    tags: dict[str, str]
    client_id: str
    principal_id: str
    credentials: dict[str, FederatedCredential] = field(default_factory=dict)  # by lower-case name: go with it

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource_group.lower(), self.name.lower())

    @property
    def id(self) -> str:
        # Azure answers with lower-case `resourcegroups` whatever the request said.
        return (
            f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourcegroups/{self.resource_group}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{self.name}"
        )

    def managed_identity(self) -> ManagedIdentity:
        return ManagedIdentity(self.name, self.client_id, self.principal_id, self.id)

    def to_arm(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "location": self.location,
            "tags": dict(self.tags),
            "properties": {
                "isolationScope": "None",
                "tenantId": seed.TENANT_ID,
                "principalId": self.principal_id,
                "clientId": self.client_id,
            },
        }


class Identities(Resources):
    """The subscription's user-assigned identities."""

    identities: dict[tuple[str, str], UserAssignedIdentity]  # by lower-case (group, name)

    def get_identity(self, subscription: str, resource_group: str, name: str) -> dict[str, Any]:
        with self._lock:
            return self._identity(subscription, resource_group, name).to_arm()

    def list_identities(self, subscription: str, resource_group: str | None = None) -> dict[str, Any]:
        """A group's identities, or the subscription's (User Assigned Identities - List By Subscription)."""
        with self._lock:
            self.check_scope(subscription, resource_group)
            found = [
                i
                for (rg, _), i in sorted(self.identities.items())
                if resource_group is None or rg == resource_group.lower()
            ]
            return {"value": [i.to_arm() for i in found]}

    def put_identity(
        self, subscription: str, resource_group: str, name: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Create or update; returns the resource and whether it was created."""
        with self._lock:
            self.check_scope(subscription, resource_group)
            _check_identity_name(name)
            location = body.get("location")
            if not isinstance(location, str) or not location:
                raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
            location = _normal_location(location)
            tags = tags_of(body.get("tags"))
            found = self.identities.get((resource_group.lower(), name.lower()))
            if found is not None:
                if found.location != location:
                    raise ArmError(
                        400,
                        "InvalidResourceLocation",
                        f"The resource '{found.name}' already exists in location '{found.location}' in resource"
                        f" group '{found.resource_group}'. A resource with the same name cannot be created in"
                        f" location '{location}'. Please select a new resource name.",
                    )
                found.tags = tags
                return found.to_arm(), False
            created = UserAssignedIdentity(
                self.resource_groups[resource_group.lower()],
                name,
                location,
                tags,
                str(uuid.uuid4()),
                str(uuid.uuid4()),
            )
            self.identities[created.key] = created
            return created.to_arm(), True

    def patch_identity(self, subscription: str, resource_group: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            found = self._identity(subscription, resource_group, name)
            if "tags" in body:
                found.tags = tags_of(body["tags"])
            return found.to_arm()

    def identity_tags(
        self, subscription: str, resource_group: str, name: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The Tags API on an identity: None reads; a body {operation: Merge|Replace|Delete, properties: {tags}}
        changes them in one step (learn.microsoft.com/rest/api/resources/tags/update-at-scope). Names match
        ignoring case, as Azure's tag names do; an updated tag keeps the name it had."""
        with self._lock:
            found = self._identity(subscription, resource_group, name)
            if body is not None:
                operation = body.get("operation")
                changes = tags_of((body.get("properties") or {}).get("tags"))
                if operation == "Replace":
                    found.tags = changes
                elif operation == "Merge":
                    for key, value in changes.items():
                        found.tags[next((k for k in found.tags if k.lower() == key.lower()), key)] = value
                elif operation == "Delete":
                    found.tags = {
                        k: v
                        for k, v in found.tags.items()
                        if not any(k.lower() == d.lower() and v2 in ("", v) for d, v2 in changes.items())
                    }
                else:
                    raise invalid("operation", operation)
            return {
                "id": f"{found.id}/providers/Microsoft.Resources/tags/default",
                "name": "default",
                "type": "Microsoft.Resources/tags",
                "properties": {"tags": dict(found.tags)},
            }

    def delete_identity(self, subscription: str, resource_group: str, name: str) -> bool:
        """Delete; returns whether it existed. Machines keep listing it, as in Azure."""
        with self._lock:
            self.check_scope(subscription, resource_group)
            return self.identities.pop((resource_group.lower(), name.lower()), None) is not None

    def list_credentials(self, subscription: str, resource_group: str, name: str) -> dict[str, Any]:
        """Federated Identity Credentials - List: one page (nextLink only appears when Azure has more to send)."""
        with self._lock:
            found = self._identity(subscription, resource_group, name)
            return {"value": [c.to_arm(found.id) for _, c in sorted(found.credentials.items())]}

    def get_credential(self, subscription: str, resource_group: str, name: str, credential: str) -> dict[str, Any]:
        with self._lock:
            found = self._identity(subscription, resource_group, name)
            return self._credential(found, credential).to_arm(found.id)

    def put_credential(
        self, subscription: str, resource_group: str, name: str, credential: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Create or replace; returns the credential and whether it was created. Nothing changes when refused."""
        with self._lock:
            found = self._identity(subscription, resource_group, name)
            if not CREDENTIAL_NAME.fullmatch(credential):
                raise ArmError(
                    400,
                    "InvalidResourceName",
                    f"Resource name '{credential}' is invalid. The name can be 3-120 characters long: letters, digits,"
                    " hyphens and underscores, starting with a letter or digit.",
                )
            properties = body.get("properties")
            if not isinstance(properties, dict):
                raise ArmError(400, "BadRequest", "The properties of a federated identity credential are required.")
            existing = found.credentials.get(credential.lower())
            made = FederatedCredential(
                existing.name if existing else credential,  # a replaced credential keeps its name's casing
                _claim(properties, "issuer"),
                _claim(properties, "subject"),
                _audiences(properties.get("audiences")),
            )
            if not made.issuer.startswith("https://"):
                raise ArmError(400, "BadRequest", f"The issuer '{made.issuer}' must be an https URL.")
            others = {k: c for k, c in found.credentials.items() if k != credential.lower()}
            if any((c.issuer, c.subject) == (made.issuer, made.subject) for c in others.values()):
                raise ArmError(
                    400,
                    "BadRequest",
                    f"A federated identity credential with issuer '{made.issuer}' and subject '{made.subject}'"
                    f" already exists on '{found.name}'.",
                )
            created = existing is None
            if created and len(found.credentials) >= MAX_CREDENTIALS:
                raise ArmError(
                    400,
                    "BadRequest",
                    f"'{found.name}' already has {MAX_CREDENTIALS} federated identity credentials, the most a"
                    " user-assigned identity can have.",
                )
            found.credentials[credential.lower()] = made
            return made.to_arm(found.id), created

    def delete_credential(self, subscription: str, resource_group: str, name: str, credential: str) -> bool:
        """Delete; returns whether it existed."""
        with self._lock:
            found = self._identity(subscription, resource_group, name)
            return found.credentials.pop(credential.lower(), None) is not None

    def _identity(self, subscription: str, resource_group: str, name: str) -> UserAssignedIdentity:
        self.check_scope(subscription, resource_group)
        found = self.identities.get((resource_group.lower(), name.lower()))
        if found is None:
            raise not_found("Microsoft.ManagedIdentity/userAssignedIdentities", name, resource_group)
        return found

    def _credential(self, identity: UserAssignedIdentity, name: str) -> FederatedCredential:
        found = identity.credentials.get(name.lower())
        if found is None:
            raise not_found(
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
                f"{identity.name}/{name}",
                identity.resource_group,
            )
        return found

    def _identity_by_id(self, resource_id: str) -> UserAssignedIdentity:
        for identity in self.identities.values():
            if identity.id.lower() == resource_id.lower():
                return identity
        raise ArmError(
            400,
            "FailedIdentityOperation",
            f"Identity operation for resource failed with error 'Failed to perform resource identity operation."
            f" Status: 'NotFound'. Response: 'The user-assigned identity '{resource_id}' was not found.''.",
        )


def _check_identity_name(name: str) -> None:
    if not (3 <= len(name) <= 128 and name[0].isalnum() and set(name) <= IDENTITY_NAME_CHARS):
        raise ArmError(
            400,
            "InvalidResourceName",
            f"Resource name '{name}' is invalid. The name can be 3-128 characters long: letters, digits,"
            " hyphens and underscores, starting with a letter or digit.",
        )


def _normal_location(location: str) -> str:
    return location.replace(" ", "").lower()


def _claim(properties: dict[str, Any], key: str) -> str:
    value = properties.get(key)
    if not isinstance(value, str) or not value or value != value.strip() or len(value) > MAX_CLAIM_LENGTH:
        raise ArmError(
            400,
            "BadRequest",
            f"The {key} of a federated identity credential is required: 1-{MAX_CLAIM_LENGTH} characters, without"
            " leading or trailing whitespace.",
        )
    return value


def _audiences(value: Any) -> list[str]:
    if not (
        isinstance(value, list)
        and len(value) == 1
        and isinstance(value[0], str)
        and 0 < len(value[0]) <= MAX_CLAIM_LENGTH
    ):
        raise ArmError(
            400,
            "BadRequest",
            f"The audiences of a federated identity credential are one value of 1-{MAX_CLAIM_LENGTH} characters"
            " (api://AzureADTokenExchange for Microsoft Entra ID).",
        )
    return list(value)
