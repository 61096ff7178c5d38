"""Base settings shared by the three services.

Every variable is prefixed ``TASKROUTE_``. Settings common to all services (the data folder, the
service URLs, the service-credential key folder) are read under fixed names; each service's own
class adds fields under its own prefix (``TASKROUTE_GATEWAY_``, ``TASKROUTE_ROUTER_``,
``TASKROUTE_VAULT_``), e.g. ``TASKROUTE_ROUTER_DATABASE_URL``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("var")


class Environment(StrEnum):
    LOCAL = "local"
    TEST = "test"
    PRODUCTION = "production"


def _common(name: str) -> AliasChoices:
    return AliasChoices(f"TASKROUTE_{name}")


class PlatformSettings(BaseSettings):
    """Settings of the whole platform, read by every service and by the ``taskroute`` command."""

    model_config = SettingsConfigDict(
        env_prefix="TASKROUTE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    environment: Environment = Field(
        default=Environment.LOCAL, validation_alias=_common("ENVIRONMENT")
    )
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, validation_alias=_common("DATA_DIR"))
    log_level: str = Field(default="INFO", validation_alias=_common("LOG_LEVEL"))
    gateway_url: str = Field(
        default="http://127.0.0.1:8000", validation_alias=_common("GATEWAY_URL")
    )
    router_url: str = Field(default="http://127.0.0.1:8001", validation_alias=_common("ROUTER_URL"))
    vault_url: str = Field(default="http://127.0.0.1:8002", validation_alias=_common("VAULT_URL"))
    # Folder holding each service's Ed25519 private key (<name>.key) and every service's public
    # key (<name>.pub). Defaults to <data_dir>/service-keys.
    service_keys_dir: Path | None = Field(
        default=None, validation_alias=_common("SERVICE_KEYS_DIR")
    )
    # Seconds an outbound call to another service may take before it fails with 503.
    upstream_timeout_seconds: float = Field(
        default=10.0, gt=0, validation_alias=_common("UPSTREAM_TIMEOUT_SECONDS")
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log level must be DEBUG, INFO, WARNING or ERROR")
        return upper

    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    def keys_dir(self) -> Path:
        return self.service_keys_dir or self.data_dir / "service-keys"


class ServiceSettings(PlatformSettings):
    """Fields every service reads; subclasses set ``env_prefix`` for their own fields."""

    # Subclasses override: the service's own name, port and database URL.
    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 0
    database_url: str | None = None

    @model_validator(mode="after")
    def _production_needs_a_real_database(self) -> ServiceSettings:
        if self.is_production() and not self.database_url:
            raise ValueError(
                f"{self.service_name}: production requires TASKROUTE_"
                f"{self.service_name.upper()}_DATABASE_URL (SQLite files are for one machine)"
            )
        return self

    def resolved_database_url(self) -> str:
        """The configured URL, or a SQLite file named after the service in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{self.service_name}.db').resolve()}"
