"""Microsoft.Resources as the emulator answers it: the subscription and its tenant, its locations, resource
groups and the resource list; and the state every provider shares (one lock, the groups), with the
wording of Resource Manager's common errors."""

from __future__ import annotations

import threading
from typing import Any

from provision.emulator import seed
from provision.emulator.http import ArmError

# Some of the public cloud's regions: (name, displayName, geographyGroup, physicalLocation, pairedRegion).
LOCATIONS = (
    ("westeurope", "West Europe", "Europe", "Netherlands", "northeurope"),
    ("northeurope", "North Europe", "Europe", "Ireland", "westeurope"),
    ("eastus", "East US", "US", "Virginia", "westus"),
    ("westus", "West US", "US", "California", "eastus"),
    ("eastus2", "East US 2", "US", "Virginia", "centralus"),
    ("centralus", "Central US", "US", "Iowa", "eastus2"),
    ("uksouth", "UK South", "Europe", "London", "ukwest"),
    ("ukwest", "UK West", "Europe", "Cardiff", "uksouth"),
    ("germanywestcentral", "Germany West Central", "Europe", "Frankfurt", "germanynorth"),
    ("japaneast", "Japan East", "Asia Pacific", "Tokyo, Saitama", "japanwest"),
    ("australiaeast", "Australia East", "Asia Pacific", "New South Wales", "australiasoutheast"),
    ("southeastasia", "Southeast Asia", "Asia Pacific", "Singapore", "eastasia"),
)


RESOURCE_FILTER_FIELDS = ("resourceGroup", "resourceType", "name", "location")


class Resources:
    """The subscription; the providers' classes build on it (see World). Every public method takes the lock
    and settles finished operations first."""

    _lock: threading.RLock
    resource_groups: dict[str, str]  # lower-case name -> name as created

    def _settle(self) -> None:
        """Brings finished operations to their end state before a read (Compute has some)."""

    def _resource_bodies(self) -> list[dict[str, Any]]:
        """Every resource of the subscription, as its provider answers a GET."""
        raise NotImplementedError

    def check_scope(self, subscription: str, resource_group: str | None = None) -> None:
        if subscription.lower() != seed.SUBSCRIPTION_ID:
            # Azure's words for any path under an unknown subscription (Azure/azure-cli#33657).
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")
        if resource_group is not None and resource_group.lower() not in self.resource_groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found.")

    def subscription(self, subscription: str) -> dict[str, Any]:
        self.check_scope(subscription)
        return {
            "id": f"/subscriptions/{seed.SUBSCRIPTION_ID}",
            "subscriptionId": seed.SUBSCRIPTION_ID,
            "tenantId": seed.TENANT_ID,
            "displayName": "provision emulator",
            "state": "Enabled",
            # The rest of a Subscriptions - Get answer (learn.microsoft.com/rest/api/resources/subscriptions/get).
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off",
            },
        }

    def subscriptions(self) -> dict[str, Any]:
        """Subscriptions - List (learn.microsoft.com/rest/api/resources/subscriptions/list): what `az login` lists."""
        return {
            "value": [self.subscription(seed.SUBSCRIPTION_ID)],
            "count": {"type": "Total", "value": 1},
        }

    def tenants(self) -> dict[str, Any]:
        """Tenants - List (learn.microsoft.com/rest/api/resources/tenants/list)."""
        return {
            "value": [
                {
                    "id": f"/tenants/{seed.TENANT_ID}",
                    "tenantId": seed.TENANT_ID,
                    "tenantCategory": "Home",
                    "countryCode": "US",
                    "displayName": "provision emulator",
                    "domains": ["provision-emulator.onmicrosoft.com"],
                    "defaultDomain": "provision-emulator.onmicrosoft.com",
                    "tenantType": "AAD",
                }
            ],
            "count": {"type": "Total", "value": 1},
        }

    def list_resource_groups(self, subscription: str) -> dict[str, Any]:
        """Resource Groups - List (learn.microsoft.com/rest/api/resources/resource-groups/list)."""
        with self._lock:
            self.check_scope(subscription)
            return {"value": [self.resource_group(subscription, rg) for rg in sorted(self.resource_groups)]}

    def list_resources(
        self, subscription: str, resource_group: str | None = None, odata_filter: str | None = None
    ) -> dict[str, Any]:
        """Resources - List (learn.microsoft.com/rest/api/resources/resources/list): every emulated resource of the
        subscription or of one group, as id, name, type, location and tags, narrowed by a `$filter` of the
        `field eq 'value'` terms joined by `and` that `az resource list` sends."""
        wanted_fields = _resource_filter(odata_filter)
        with self._lock:
            self._settle()
            self.check_scope(subscription, resource_group)
            bodies = self._resource_bodies()
            wanted = None if resource_group is None else f"/resourcegroups/{resource_group.lower()}/"
            return {
                "value": [
                    {key: body[key] for key in ("id", "name", "type", "location", "tags")}
                    for body in sorted(bodies, key=lambda b: b["id"].lower())
                    if (wanted is None or wanted in body["id"].lower())
                    and all(_resource_field(body, key).lower() == value.lower() for key, value in wanted_fields.items())
                ]
            }

    def resource_group(self, subscription: str, resource_group: str) -> dict[str, Any]:
        with self._lock:
            self.check_scope(subscription, resource_group)
            name = self.resource_groups[resource_group.lower()]
            return {
                "id": f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{name}",
                "name": name,
                "type": "Microsoft.Resources/resourceGroups",
                "location": seed.LOCATION,
                "properties": {"provisioningState": "Succeeded"},
            }

    def locations(self, subscription: str) -> dict[str, Any]:
        """The subscription's regions, in the shape of Subscriptions - List Locations
        (learn.microsoft.com/rest/api/resources/subscriptions/list-locations)."""
        self.check_scope(subscription)
        return {
            "value": [
                {
                    "id": f"/subscriptions/{seed.SUBSCRIPTION_ID}/locations/{name}",
                    "name": name,
                    "type": "Region",
                    "displayName": display,
                    "regionalDisplayName": f"({geography}) {display}",
                    "metadata": {
                        "regionType": "Physical",
                        "regionCategory": "Recommended",
                        "geographyGroup": geography,
                        "physicalLocation": place,
                        "pairedRegion": [
                            {"name": paired, "id": f"/subscriptions/{seed.SUBSCRIPTION_ID}/locations/{paired}"}
                        ],
                    },
                }
                for name, display, geography, place, paired in LOCATIONS
            ]
        }


def _resource_filter(odata_filter: str | None) -> dict[str, str]:
    """`resourceGroup eq 'a' and resourceType eq 'b'` as {field: value}; other filters are refused, not ignored."""
    fields: dict[str, str] = {}
    for term in odata_filter.split(" and ") if odata_filter else []:
        key, _, value = term.strip().partition(" eq ")
        if key not in RESOURCE_FILTER_FIELDS or len(value) < 2 or value[0] != "'" or value[-1] != "'":
            raise ArmError(
                400,
                "InvalidFilterInQueryString",
                f"The emulator filters resources only by {', '.join(RESOURCE_FILTER_FIELDS)} (eq, joined by and),"
                f" not by '{odata_filter}'.",
            )
        fields[key] = value[1:-1]
    return fields


def _resource_field(body: dict[str, Any], key: str) -> str:
    if key == "resourceGroup":
        return str(body["id"].split("/")[4])
    return str(body["type" if key == "resourceType" else key])


def not_found(resource_type: str, name: str, resource_group: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}' under resource group '{resource_group}' was not found.",
    )


def invalid(parameter: str, value: Any) -> ArmError:
    return ArmError(400, "InvalidParameter", f"The value '{value}' of parameter '{parameter}' is not valid.")


def tags_of(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid("tags", value)
    return dict(value)
