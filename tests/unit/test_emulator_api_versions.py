"""The emulated Resource Manager's api-version check on its own: per resource type, in Azure's words."""

from __future__ import annotations

import pytest

from provision.emulator import seed
from provision.emulator.arm import api_versions
from provision.emulator.arm.resources import LOCATIONS
from provision.emulator.http import ArmError

SUB = f"/subscriptions/{seed.SUBSCRIPTION_ID}"
GROUP = f"{SUB}/resourceGroups/{seed.RESOURCE_GROUP}"
VM = f"{GROUP}/providers/Microsoft.Compute/virtualMachines/{seed.VM_NAME}"
IDENTITY = f"{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{seed.EXISTING_IDENTITY_NAME}"


def refusal(path: str, api_version: str) -> ArmError:
    with pytest.raises(ArmError) as raised:
        api_versions.check(path, api_version, seed.LOCATION)
    assert raised.value.status == 400
    return raised.value


@pytest.mark.parametrize(
    ("path", "type_name", "supported"),
    [
        (VM, "virtualMachines", api_versions.COMPUTE),
        (f"{VM}/instanceView", "virtualMachines", api_versions.COMPUTE),
        (
            f"{GROUP}/providers/Microsoft.Compute/virtualMachineScaleSets/s",
            "virtualMachineScaleSets",
            api_versions.COMPUTE,
        ),
        (f"{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/1", "locations", api_versions.COMPUTE),
        (IDENTITY, "userAssignedIdentities", api_versions.MANAGED_IDENTITY),
        (
            f"{IDENTITY}/federatedIdentityCredentials/f",
            "userAssignedIdentities/federatedIdentityCredentials",
            api_versions.FEDERATED_CREDENTIALS,
        ),
        (f"{VM}/providers/Microsoft.ManagedIdentity/identities/default", "identities", api_versions.MANAGED_IDENTITY),
        (f"{GROUP}/providers/Microsoft.Network/networkInterfaces/n", "networkInterfaces", api_versions.NETWORK),
        (
            f"{GROUP}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{seed.FLEXIBLE_SERVER}",
            "flexibleServers",
            api_versions.POSTGRESQL_FLEXIBLE,
        ),
    ],
)
def test_a_provider_refuses_a_version_it_does_not_offer_for_the_type(path, type_name, supported) -> None:
    error = refusal(path, "1999-01-01")
    assert error.code == "NoRegisteredProviderFound"
    assert error.message.startswith(
        f"No registered resource provider found for location '{seed.LOCATION}' and API version '1999-01-01' for type"
        f" '{type_name}'. The supported api-versions are '{', '.join(supported)}'. The supported locations are '"
    )


def test_a_version_of_another_type_of_the_same_provider_is_refused() -> None:
    """Federated credentials came later than identities: 2018-11-30 serves one and not the other."""
    api_versions.check(IDENTITY, "2018-11-30", seed.LOCATION)
    assert refusal(f"{IDENTITY}/federatedIdentityCredentials/f", "2018-11-30").code == "NoRegisteredProviderFound"
    # A compute version is no identity version.
    assert refusal(IDENTITY, "2026-04-01").code == "NoRegisteredProviderFound"


@pytest.mark.parametrize(
    "path",
    ["/subscriptions", "/tenants", SUB, f"{SUB}/resourceGroups", GROUP, f"{SUB}/resources", f"{SUB}/locations"]
    + [f"{IDENTITY}/providers/Microsoft.Resources/tags/default"],
)
def test_resource_managers_own_api_refuses_with_invalid_api_version_parameter(path: str) -> None:
    error = refusal(path, "2024-11-30")
    assert error.code == "InvalidApiVersionParameter"
    supported = ",".join(api_versions.RESOURCE_MANAGER)
    assert error.message == f"The api-version '2024-11-30' is invalid. The supported versions are '{supported}'."


NIC = f"{GROUP}/providers/Microsoft.Network/networkInterfaces/n"
FLEXIBLE = f"{GROUP}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{seed.FLEXIBLE_SERVER}"


def test_the_refusal_names_every_location_as_azure_words_it() -> None:
    """Azure/azure-cli#28496: one sentence per list, items joined by a comma and a space, each list quoted."""
    message = refusal(NIC, "2023-10-01").message
    assert message == (
        f"No registered resource provider found for location '{seed.LOCATION}' and API version '2023-10-01' for type"
        f" 'networkInterfaces'. The supported api-versions are '{', '.join(api_versions.NETWORK)}'. The supported"
        f" locations are '{', '.join(name for name, *_ in LOCATIONS)}'."
    )


# Versions a type never had (network interfaces: neither the specs nor Azure's recorded answer; compute's VM
# swagger has no 2016-08-30; identities had no federated credentials in 2021-09-30-preview).
@pytest.mark.parametrize(
    ("path", "api_version"),
    [
        (NIC, "2016-04-30-preview"),
        (NIC, "2019-03-01"),
        (NIC, "2023-08-01"),
        (VM, "2016-08-30"),
        (f"{IDENTITY}/federatedIdentityCredentials/f", "2021-09-30-preview"),
        (FLEXIBLE, "2022-05-01-preview"),
    ],
)
def test_a_version_the_specs_never_published_for_the_type_is_refused(path: str, api_version: str) -> None:
    assert refusal(path, api_version).code == "NoRegisteredProviderFound"


# The newest versions each spec folder publishes for the type.
@pytest.mark.parametrize(
    ("path", "api_version"),
    [
        (NIC, "2025-03-01"),
        (NIC, "2025-09-01"),
        (VM, "2025-11-01"),
        (IDENTITY, "2026-05-31"),
        (f"{IDENTITY}/federatedIdentityCredentials/f", "2026-04-30"),
        (FLEXIBLE, "2026-01-01-preview"),
    ],
)
def test_the_newest_published_versions_are_accepted(path: str, api_version: str) -> None:
    api_versions.check(path, api_version, seed.LOCATION)


def test_provider_lists_run_oldest_first_without_repeats() -> None:
    for listed in (api_versions.COMPUTE, api_versions.MANAGED_IDENTITY, api_versions.NETWORK):
        assert list(listed) == sorted(set(listed))
    assert list(api_versions.POSTGRESQL_FLEXIBLE) == sorted(set(api_versions.POSTGRESQL_FLEXIBLE))


def test_resource_managers_refusal_is_the_one_azure_returned() -> None:
    """Word for word, order included, what Azure answered in ansible-collections/azure#2117 (2025-11)."""
    assert refusal(f"{SUB}/resourcegroups/{seed.RESOURCE_GROUP}", "2023-05-01").message == (
        "The api-version '2023-05-01' is invalid. The supported versions are '2025-04-01,2025-03-01,"
        "2024-10-01-preview,2024-11-01,2024-08-01,2024-07-01,2024-06-01-preview,2024-03-01,2023-07-01,"
        "2023-07-01-preview,2023-03-01-preview,2022-12-01,2022-11-01-preview,2022-09-01,2022-06-01,2022-05-01,"
        "2022-03-01-preview,2022-01-01,2021-04-01,2021-01-01,2020-10-01,2020-09-01,2020-08-01,2020-07-01,"
        "2020-06-01,2020-05-01,2020-01-01,2019-11-01,2019-10-01,2019-09-01,2019-08-01,2019-07-01,2019-06-01,"
        "2019-05-10,2019-05-01,2019-03-01,2018-11-01,2018-09-01,2018-08-01,2018-07-01,2018-06-01,2018-05-01,"
        "2018-02-01,2018-01-01,2017-12-01,2017-08-01,2017-06-01,2017-05-10,2017-05-01,2017-03-01,2016-09-01,"
        "2016-07-01,2016-06-01,2016-02-01,2015-11-01,2015-01-01,2014-04-01-preview,2014-04-01,2014-01-01,"
        "2013-03-01,2014-02-26,2014-04'."
    )


def test_the_location_named_is_the_one_given() -> None:
    assert "for location 'eastus' and" in str(pytest.raises(ArmError, api_versions.check, VM, "x", "eastus").value)


def test_a_provider_the_emulator_does_not_have_is_left_to_the_router() -> None:
    api_versions.check(f"{GROUP}/providers/Microsoft.Web/sites/x", "1999-01-01", seed.LOCATION)


# What the pinned Azure CLI 2.91 sends (its API profile and its own commands, measured against the emulator).
AZ_CLI_VERSIONS = [
    (VM, "2024-11-01"),
    (VM, "2024-07-01"),
    (VM, "2022-11-01"),
    (f"{GROUP}/providers/Microsoft.Compute/virtualMachineScaleSets/s", "2023-09-01"),
    (f"{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/1", "2024-11-01"),
    (IDENTITY, "2024-11-30"),
    (IDENTITY, "2025-05-31-preview"),
    (f"{IDENTITY}/federatedIdentityCredentials/f", "2025-01-31-preview"),
    (f"{GROUP}/providers/Microsoft.Network/networkInterfaces/n", "2022-01-01"),
    (f"{GROUP}/providers/Microsoft.Network/networkInterfaces/n", "2023-11-01"),
    (f"{GROUP}/providers/Microsoft.DBforPostgreSQL/flexibleServers/f", "2026-04-01-preview"),
    (SUB, "2022-12-01"),
    (f"{SUB}/locations", "2022-12-01"),
    (f"{SUB}/resources", "2024-11-01"),
    (GROUP, "2021-04-01"),
    ("/tenants", "2024-11-01"),
    (f"{IDENTITY}/providers/Microsoft.Resources/tags/default", "2021-04-01"),
]


@pytest.mark.parametrize(("path", "api_version"), AZ_CLI_VERSIONS)
def test_every_version_the_azure_cli_sends_is_accepted(path: str, api_version: str) -> None:
    api_versions.check(path, api_version, seed.LOCATION)


def sdk_requests() -> list[str]:
    """The URLs (path and api-version) the pinned SDKs' request builders make for the calls scripts use."""
    from azure.mgmt.compute.operations import _operations as compute
    from azure.mgmt.msi import ManagedServiceIdentityClient
    from azure.mgmt.msi.v2024_11_30.operations import _federated_identity_credentials_operations as credentials
    from azure.mgmt.msi.v2024_11_30.operations import _system_assigned_identities_operations as system_assigned
    from azure.mgmt.msi.v2024_11_30.operations import _user_assigned_identities_operations as identities
    from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient

    sub, rg, vm, vmss = seed.SUBSCRIPTION_ID, seed.RESOURCE_GROUP, seed.VM_NAME, seed.VMSS_NAME
    assert ManagedServiceIdentityClient.DEFAULT_API_VERSION == "2024-11-30"  # the module imported above
    requests = [
        compute.build_virtual_machines_get_request(rg, vm, sub),
        compute.build_virtual_machines_update_request(rg, vm, sub),
        compute.build_virtual_machines_create_or_update_request(rg, vm, sub),
        compute.build_virtual_machines_instance_view_request(rg, vm, sub),
        compute.build_virtual_machines_list_request(rg, sub),
        compute.build_virtual_machines_list_all_request(sub),
        compute.build_virtual_machines_list_by_location_request(seed.LOCATION, sub),
        compute.build_virtual_machine_scale_sets_get_request(rg, vmss, sub),
        compute.build_virtual_machine_scale_sets_update_request(rg, vmss, sub),
        compute.build_virtual_machine_scale_sets_create_or_update_request(rg, vmss, sub),
        compute.build_virtual_machine_scale_sets_list_all_request(sub),
        identities.build_get_request(rg, "i", sub),
        identities.build_list_by_subscription_request(sub),
        credentials.build_list_request(rg, "i", sub),
        credentials.build_create_or_update_request(rg, "i", "f", sub),
        system_assigned.build_get_by_scope_request(VM.lstrip("/")),
    ]
    flexible = PostgreSQLManagementClient(object(), sub)._config.api_version  # type: ignore[arg-type]
    server = f"{GROUP}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{seed.FLEXIBLE_SERVER}"
    return [r.url for r in requests] + [f"{server}?api-version={flexible}"]


def test_every_default_of_the_pinned_sdks_is_accepted() -> None:
    urls = sdk_requests()
    for url in urls:
        path, _, query = url.partition("?api-version=")
        api_versions.check(path, query.partition("&")[0], seed.LOCATION)
    assert {url.partition("?api-version=")[2] for url in urls} >= {"2026-04-01", "2024-11-30", "2026-10-01"}


def test_network_interfaces_take_every_version_azure_answered_with() -> None:
    """Azure's own list (Azure/azure-cli#28496) holds versions the specs skip: each is served."""
    for api_version in ("2014-12-01-preview", "2016-07-01", "2020-01-01", "2021-12-01", "2023-09-01"):
        api_versions.check(NIC, api_version, seed.LOCATION)
