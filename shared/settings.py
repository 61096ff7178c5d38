"""Base settings shared by the three services.

Every variable is prefixed ``TASKROUTE_``. Settings common to all services (the data folder, the
service URLs, the service-credential key folder) are read under fixed names; each service's own
class adds fields under its own prefix (``TASKROUTE_GATEWAY_``, ``TASKROUTE_ROUTER_``,
``TASKROUTE_VAULT_``), e.g. ``TASKROUTE_ROUTER_DATABASE_URL``.
"""

from __future__ import annotations

import os
import typing
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEFAULT_DATA_DIR = Path("var")


class Environment(StrEnum):
    LOCAL = "local"
    TEST = "test"
    PRODUCTION = "production"


def _common(name: str) -> AliasChoices:
    return AliasChoices(f"TASKROUTE_{name}")


class SecretFilesSource(PydanticBaseSettingsSource):
    """``<VARIABLE>_FILE`` for every secret setting (a ``SecretStr`` field): the value is read
    from that file (a mounted secret), trailing newline dropped, unless ``<VARIABLE>`` itself is
    set (the environment wins). Fields that have their own ``..._file`` setting (the pepper, the
    vault root key) keep their own rules. E.g. ``TASKROUTE_GATEWAY_REDIS_URL_FILE``."""

    def get_field_value(self, _field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        prefix = str(self.config.get("env_prefix", ""))
        fields = self.settings_cls.model_fields
        values: dict[str, Any] = {}
        for name, field in fields.items():
            if f"{name}_file" in fields or SecretStr not in typing.get_args(field.annotation):
                continue
            alias = field.validation_alias
            env = str(alias.choices[0]) if isinstance(alias, AliasChoices) else prefix + name
            path = os.environ.get(f"{env.upper()}_FILE")
            if path:
                values[name] = read_secret_file(Path(path))
        return values


def read_secret_file(path: Path) -> str:
    """A secret file's text without the trailing newline an editor or ``echo`` leaves."""
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError:
        # The path is configuration, not a secret: naming it helps the operator fix the mount.
        raise ValueError(f"secret file {path} cannot be read") from None


class PlatformSettings(BaseSettings):
    """Settings of the whole platform, read by every service and by the ``taskroute`` command."""

    # hide_input_in_errors: a refused value (a pepper too short, a key with a stray tab, a URL
    # with its password) must not reach a start-up traceback; every service's settings inherit it.
    model_config = SettingsConfigDict(
        env_prefix="TASKROUTE_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    environment: Environment = Field(
        default=Environment.LOCAL, validation_alias=_common("ENVIRONMENT")
    )
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, validation_alias=_common("DATA_DIR"))
    log_level: str = Field(default="INFO", validation_alias=_common("LOG_LEVEL"))
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
    # OpenTelemetry tracing (shared/tracing.py): off unless set; read when an app is built.
    tracing_enabled: bool = Field(default=False, validation_alias=_common("TRACING_ENABLED"))
    # OTLP/HTTP traces endpoint (e.g. http://otel-collector:4318/v1/traces); unset with tracing
    # on: spans are propagated between services but exported nowhere.
    tracing_otlp_endpoint: str | None = Field(
        default=None, validation_alias=_common("TRACING_OTLP_ENDPOINT")
    )
    # Share of new traces kept (a caller's sampling decision is followed as it is).
    tracing_sample_ratio: float = Field(
        default=1.0, ge=0, le=1, validation_alias=_common("TRACING_SAMPLE_RATIO")
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log level must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources, with ``*_FILE`` secrets (:class:`SecretFilesSource`) right after
        the environment."""
        return (
            init_settings,
            env_settings,
            SecretFilesSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

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
