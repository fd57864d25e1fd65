"""The api-versions Resource Manager accepts, per resource type, and its 400 for any other.

Each provider offers a list of versions for each of its resource types; a request with another version is
refused before the provider sees it. The provider lists are the versions Azure/azure-rest-api-specs publishes
for the type, read from specification/<service>/resource-manager/readme.md tags (a tag's input-files name the
files, hence the types, of each version) and the version folders:
- Compute: Microsoft.Compute/ComputeRP/{stable,preview} (compute.json, later virtualMachine.json and
  virtualMachineScaleSet.json, later ComputeRP.json) and Microsoft.Compute/Compute/stable (ComputeRP.json,
  2024-11-01 on; Compute/main.tsp); Compute/preview/2026-11-01-preview holds WorkloadManager only.
- Managed identities: Microsoft.ManagedIdentity/ManagedIdentity/{stable,preview} (ManagedIdentity.json);
  federated credentials first appear in preview/2022-01-31-preview.
- Network interfaces: what Azure itself answered in 2024 (NoRegisteredProviderFound for eastus, recorded in
  Azure/azure-cli#28496; the specs skip some versions Azure serves, e.g. 2016-07-01, 2020-01-01, 2021-12-01),
  then the newer versions of Microsoft.Network/Network/readme.md whose tags hold networkInterface.json (or the
  virtualNetwork.json of the TypeSpec versions from 2025-05-01).
- PostgreSQL: Microsoft.DBforPostgreSQL/PostgreSQL/readme.md, the package-flexibleserver tags whose files hold
  the servers (FlexibleServers.json, postgresql.json, openapi.json); private previews are left out.
Every version the pinned clients send is in them: azure-mgmt-compute 39 (2026-04-01) and 34.1 in the Azure
CLI (2024-11-01), the CLI's own commands (2022-11-01 ... 2025-11-01 for compute, 2022-01-01 and 2023-11-01 for
network interfaces, 2025-05-31-preview and 2025-01-31-preview for identities), azure-mgmt-msi 7.1
(2024-11-30), azure-mgmt-resource 24 in the CLI (2024-11-01 resources, 2022-12-01 subscriptions). The two
newest PostgreSQL versions, 2026-10-01 (azure-mgmt-postgresqlflexibleservers 3.0) and 2026-04-01-preview (its
3.0.0b2 in the CLI), are newer than the specs copy read, so they stand on those clients.
"""

from __future__ import annotations

from provision.emulator.arm.resources import LOCATIONS
from provision.emulator.http import ArmError

COMPUTE = (
    "2015-06-15",
    "2016-03-30",
    "2016-04-30-preview",
    "2017-03-30",
    "2017-12-01",
    "2018-04-01",
    "2018-06-01",
    "2018-10-01",
    "2019-03-01",
    "2019-07-01",
    "2019-12-01",
    "2020-06-01",
    "2020-12-01",
    "2021-03-01",
    "2021-04-01",
    "2021-07-01",
    "2021-11-01",
    "2022-03-01",
    "2022-08-01",
    "2022-11-01",
    "2023-03-01",
    "2023-07-01",
    "2023-09-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
    "2025-04-01",
    "2025-11-01",
    "2026-04-01",
)
MANAGED_IDENTITY = (
    "2015-08-31-preview",
    "2018-11-30",
    "2021-09-30-preview",
    "2022-01-31-preview",
    "2023-01-31",
    "2023-07-31-preview",
    "2024-11-30",
    "2025-01-31-preview",
    "2025-05-31-preview",
    "2026-04-30",
    "2026-05-31",
)
FEDERATED_CREDENTIALS = MANAGED_IDENTITY[MANAGED_IDENTITY.index("2022-01-31-preview") :]
NETWORK = (
    "2014-12-01-preview",
    "2015-05-01-preview",
    "2015-06-15",
    "2016-03-30",
    "2016-06-01",
    "2016-07-01",
    "2016-08-01",
    "2016-09-01",
    "2016-10-01",
    "2016-11-01",
    "2016-12-01",
    "2017-03-01",
    "2017-04-01",
    "2017-06-01",
    "2017-08-01",
    "2017-09-01",
    "2017-10-01",
    "2017-11-01",
    "2018-01-01",
    "2018-02-01",
    "2018-03-01",
    "2018-04-01",
    "2018-05-01",
    "2018-06-01",
    "2018-07-01",
    "2018-08-01",
    "2018-10-01",
    "2018-11-01",
    "2018-12-01",
    "2019-02-01",
    "2019-04-01",
    "2019-06-01",
    "2019-07-01",
    "2019-08-01",
    "2019-09-01",
    "2019-11-01",
    "2019-12-01",
    "2020-01-01",
    "2020-03-01",
    "2020-04-01",
    "2020-05-01",
    "2020-06-01",
    "2020-07-01",
    "2020-08-01",
    "2020-11-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-04-01",
    "2021-05-01",
    "2021-06-01",
    "2021-08-01",
    "2021-12-01",
    "2022-01-01",
    "2022-05-01",
    "2022-07-01",
    "2022-09-01",
    "2022-11-01",
    "2023-02-01",
    "2023-04-01",
    "2023-05-01",
    "2023-06-01",
    "2023-09-01",
    "2023-11-01",
    "2024-01-01",
    "2024-03-01",
    "2024-05-01",
    "2024-07-01",
    "2024-10-01",
    "2025-01-01",
    "2025-03-01",
    "2025-05-01",
    "2025-07-01",
    "2025-09-01",
)
POSTGRESQL_FLEXIBLE = (
    "2020-02-14-preview",
    "2021-06-01",
    "2021-06-01-preview",
    "2022-01-20-preview",
    "2022-03-08-preview",
    "2022-12-01",
    "2023-03-01-preview",
    "2023-06-01-preview",
    "2023-12-01-preview",
    "2024-03-01-preview",
    "2024-08-01",
    "2024-11-01-preview",
    "2025-01-01-preview",
    "2025-06-01-preview",
    "2025-08-01",
    "2026-01-01-preview",
    "2026-04-01-preview",
    "2026-10-01",
)
# Resource Manager's own API (subscriptions, tenants, locations, resource groups, the resource list and tags)
# answers for several spec folders at once (specification/resources/resource-manager/Microsoft.Resources/*), and
# its list holds versions no folder has (2014-04, 2014-02-26): so the list, order included, is the one Azure
# returned in ansible-collections/azure#2117 (2025-11); #1739 (2024) is the same list before 2024-07-01,
# 2024-10-01-preview, 2024-11-01, 2025-03-01 and 2025-04-01 came.
RESOURCE_MANAGER = (
    "2025-04-01",
    "2025-03-01",
    "2024-10-01-preview",
    "2024-11-01",
    "2024-08-01",
    "2024-07-01",
    "2024-06-01-preview",
    "2024-03-01",
    "2023-07-01",
    "2023-07-01-preview",
    "2023-03-01-preview",
    "2022-12-01",
    "2022-11-01-preview",
    "2022-09-01",
    "2022-06-01",
    "2022-05-01",
    "2022-03-01-preview",
    "2022-01-01",
    "2021-04-01",
    "2021-01-01",
    "2020-10-01",
    "2020-09-01",
    "2020-08-01",
    "2020-07-01",
    "2020-06-01",
    "2020-05-01",
    "2020-01-01",
    "2019-11-01",
    "2019-10-01",
    "2019-09-01",
    "2019-08-01",
    "2019-07-01",
    "2019-06-01",
    "2019-05-10",
    "2019-05-01",
    "2019-03-01",
    "2018-11-01",
    "2018-09-01",
    "2018-08-01",
    "2018-07-01",
    "2018-06-01",
    "2018-05-01",
    "2018-02-01",
    "2018-01-01",
    "2017-12-01",
    "2017-08-01",
    "2017-06-01",
    "2017-05-10",
    "2017-05-01",
    "2017-03-01",
    "2016-09-01",
    "2016-07-01",
    "2016-06-01",
    "2016-02-01",
    "2015-11-01",
    "2015-01-01",
    "2014-04-01-preview",
    "2014-04-01",
    "2014-01-01",
    "2013-03-01",
    "2014-02-26",
    "2014-04",
)

# By provider namespace and resource type (lower case); a type not listed takes its parent's versions
# (a VM's instanceView, a server's administrators).
PROVIDERS: dict[str, dict[str, tuple[str, ...]]] = {
    "microsoft.compute": {"virtualmachines": COMPUTE, "virtualmachinescalesets": COMPUTE, "locations": COMPUTE},
    "microsoft.managedidentity": {
        "userassignedidentities": MANAGED_IDENTITY,
        "userassignedidentities/federatedidentitycredentials": FEDERATED_CREDENTIALS,
        "identities": MANAGED_IDENTITY,
    },
    "microsoft.network": {"networkinterfaces": NETWORK},
    "microsoft.dbforpostgresql": {"flexibleservers": POSTGRESQL_FLEXIBLE, "locations": POSTGRESQL_FLEXIBLE},
}


def check(path: str, api_version: str, location: str) -> None:
    """Refuses an api-version the path's resource type does not offer, with Azure's 400: for a provider's type
    NoRegisteredProviderFound naming location, version, type and the supported lists (as recorded in
    Azure/azure-cli#28496 and #28368), for Resource Manager's own API InvalidApiVersionParameter (as recorded
    in ansible-collections/azure#1739 and #2117). A provider the emulator does not have is
    left to the router's 404."""
    segments = [s for s in path.split("/") if s]
    lower = [s.lower() for s in segments]
    if "providers" not in lower:
        _check_resource_manager(api_version)
        return
    at = len(lower) - 1 - lower[::-1].index("providers")
    namespace = lower[at + 1] if at + 1 < len(lower) else ""
    if namespace == "microsoft.resources":
        _check_resource_manager(api_version)
        return
    types = PROVIDERS.get(namespace)
    type_names = segments[at + 2 :: 2]
    if types is None or not type_names:
        return
    for depth in range(len(type_names), 0, -1):
        supported = types.get("/".join(type_names[:depth]).lower())
        if supported is not None:
            break
    else:
        return
    if api_version not in supported:
        raise ArmError(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for location '{location}' and API version '{api_version}'"
            f" for type '{'/'.join(type_names[:depth])}'. The supported api-versions are '{', '.join(supported)}'."
            f" The supported locations are '{', '.join(name for name, *_ in LOCATIONS)}'.",
        )


def _check_resource_manager(api_version: str) -> None:
    if api_version not in RESOURCE_MANAGER:
        raise ArmError(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{api_version}' is invalid. The supported versions are '{','.join(RESOURCE_MANAGER)}'.",
        )
