"""Azure clouds: where Resource Manager lives and which resource a database token is for."""

from __future__ import annotations

from dataclasses import dataclass

from provision.errors import InvalidInput


@dataclass(frozen=True)
class Cloud:
    name: str
    resource_manager: str
    database_resource: str

    @property
    def arm_scope(self) -> str:
        return self.resource_manager.rstrip("/") + "/.default"

    @property
    def database_scope(self) -> str:
        return self.database_resource + "/.default"


CLOUDS = {
    cloud.name.lower(): cloud
    for cloud in (
        Cloud("AzureCloud", "https://management.azure.com/", "https://ossrdbms-aad.database.windows.net"),
        Cloud(
            "AzureChinaCloud",
            "https://management.chinacloudapi.cn/",
            "https://ossrdbms-aad.database.chinacloudapi.cn",
        ),
        Cloud(
            "AzureUSGovernment",
            "https://management.usgovcloudapi.net/",
            "https://ossrdbms-aad.database.usgovcloudapi.net",
        ),
    )
}

CLOUD_NAMES = tuple(cloud.name for cloud in CLOUDS.values())


def get_cloud(name: str) -> Cloud:
    try:
        return CLOUDS[name.lower()]
    except KeyError:
        raise InvalidInput(f"unknown cloud {name!r}: choose one of {', '.join(CLOUD_NAMES)}") from None
