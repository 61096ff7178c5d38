"""How the command finds each service's settings, app factory and migrations.

Imports are lazy so that ``taskroute demo`` (a pure HTTP client) loads no server code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.settings import ServiceSettings

# Start order: the vault and router first, so the gateway's readiness check finds them.
SERVICE_ORDER = ("vault", "router", "gateway")


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    settings_class: str

    def settings(self) -> ServiceSettings:
        module = importlib.import_module(f"services.{self.name}.settings")
        settings: ServiceSettings = getattr(module, self.settings_class)()
        return settings

    def create_app(self) -> Callable[..., Any]:
        module = importlib.import_module(f"services.{self.name}.app")
        factory: Callable[..., Any] = module.create_app
        return factory

    def upgrade(self, database_url: str) -> None:
        module = importlib.import_module(f"services.{self.name}.db.migrate")
        module.upgrade(database_url)


SERVICES: dict[str, ServiceEntry] = {
    "gateway": ServiceEntry("gateway", "GatewaySettings"),
    "router": ServiceEntry("router", "RouterSettings"),
    "vault": ServiceEntry("vault", "VaultSettings"),
}
