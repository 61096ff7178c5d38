"""The gateway's settings (``TASKROUTE_GATEWAY_*``).

The API key pepper is the HMAC key under which API keys are stored (see
:mod:`services.gateway.domain.api_keys`). In production it must come from the environment (a
secret store); locally a random one is generated once into ``<data_dir>/gateway-pepper.key``
(mode 0600), so a developer needs no configuration. Losing the pepper invalidates every API key,
which is the point: a stolen database alone verifies nothing.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.gateway.clients.rate_limiter import parse_limit
from shared.middleware import DEFAULT_MAX_BODY_BYTES
from shared.settings import ServiceSettings

PEPPER_FILE = "gateway-pepper.key"
# 32 bytes = 256 bits: the HMAC-SHA256 block of security; more adds nothing, less weakens it.
PEPPER_BYTES = 32
# A pepper typed into a secret store is text; 32 characters keeps it near 128+ bits even when a
# person picked a hex or base64 string.
MIN_PEPPER_CHARS = 32
# The bootstrap key is chosen by a deployer: at least as long as a 192-bit base64 string.
MIN_BOOTSTRAP_KEY_CHARS = 32


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TASKROUTE_GATEWAY_", env_file=".env", extra="ignore", populate_by_name=True
    )

    service_name: str = "gateway"
    port: int = 8000

    # HMAC key for API key digests; required in production, generated into a file locally.
    api_key_pepper: SecretStr | None = None
    # The pepper read from a file instead (a mounted secret), used when api_key_pepper is unset.
    api_key_pepper_file: Path | None = None
    # An operator key to register at start-up, so scripts can begin without reading a log.
    bootstrap_operator_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TASKROUTE_BOOTSTRAP_OPERATOR_KEY", "bootstrap_operator_key"),
    )
    # The bootstrap operator key read from a file (a mounted secret), when the variable is unset.
    bootstrap_operator_key_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TASKROUTE_BOOTSTRAP_OPERATOR_KEY_FILE", "bootstrap_operator_key_file"
        ),
    )
    # Largest request body accepted (413 beyond): confidential data is capped at 64 KiB, so the
    # default 1 MiB leaves room for descriptions without inviting memory exhaustion.
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0, le=16 * 1024 * 1024)

    # --- the edge: rate limits and idempotency (services/gateway/api/edge.py) ---
    # Redis shared by the gateway replicas for rate limits (redis://[:password@]host:port/db);
    # unset: limits are kept in each process's memory. May carry a password, hence secret.
    redis_url: SecretStr | None = None
    # Every Redis call's deadline: a rate limit check must not hold a request up noticeably;
    # past it the process falls back to its in-memory limiter (see clients/rate_limiter.py).
    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=5)
    # Prefix of the limiter's Redis keys, so several deployments can share one Redis.
    redis_key_prefix: str = Field(default="taskroute-gateway", min_length=1, max_length=100)
    # Requests per API key, moving window: 10/s sustained covers a busy integration's polling;
    # a client that needs more gets its own limit later rather than starving others now.
    rate_limit: str = "600/minute"
    # Failed authentications per source address: enough for a person fixing a typo, far too
    # few to guess anything.
    failed_auth_rate_limit: str = "30/minute"
    # An in-flight idempotency claim older than this is taken to be from a crashed replica and
    # may be taken over: longer than a keyed request can run. A submission makes two upstream
    # calls of at most upstream_timeout_seconds each (checked at start-up); a completion with
    # a confidential result whose retry is refused, up to five (the default allows for it).
    idempotency_lock_seconds: float = Field(default=60.0, gt=0, le=3600)
    # --- webhooks (domain/webhooks.py, clients/webhooks.py) ---
    # The first retry's wait, doubled per attempt: 10 s reaches a day of retries in 16 attempts.
    webhook_backoff_base_seconds: float = Field(default=10.0, gt=0, le=3600)
    # How often each replica looks for due deliveries: events leave within about a second.
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=300)
    # An egress proxy for webhook deliveries (http://proxy:3128); unset: direct, each attempt
    # connecting to the address the gateway checked. Proxies in the environment (HTTPS_PROXY)
    # are not used for webhooks.
    webhook_proxy_url: str | None = Field(default=None, max_length=2000)
    # --- the submission outbox (services/gateway/submissions.py) ---
    # How often each replica forwards pending jobs to the router and rolls back dead
    # submissions: a pending job is routed within about this long after the router returns.
    submission_poll_seconds: float = Field(default=1.0, gt=0, le=300)
    # A submission still unfinished this long after it began died mid-way (its request is
    # bounded by two upstream timeouts): the sweeper rolls it back. Must exceed (checked at
    # start-up), and should be well above, 2 x upstream_timeout_seconds.
    submission_grace_seconds: float = Field(default=60.0, gt=0, le=3600)
    # --- the console (services/gateway/console) ---
    # A console session unused this long ends: an hour covers a long read of one job (an open
    # job page's heartbeat keeps it in use) without leaving an unattended browser signed in.
    console_session_idle_seconds: float = Field(default=3600.0, gt=0, le=86400)
    # No console session outlives this, used or not: one working day, then sign in again.
    console_session_max_seconds: float = Field(default=43200.0, gt=0, le=7 * 86400)

    @field_validator("rate_limit", "failed_auth_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_limit(value)
        return value

    @field_validator("api_key_pepper")
    @classmethod
    def _long_enough_pepper(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_PEPPER_CHARS:
            raise ValueError(f"the API key pepper must be at least {MIN_PEPPER_CHARS} characters")
        return value

    @field_validator("bootstrap_operator_key")
    @classmethod
    def _usable_bootstrap_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value()
        if not key:
            return None  # an empty variable means "not set"
        if len(key) < MIN_BOOTSTRAP_KEY_CHARS:
            raise ValueError(
                f"TASKROUTE_BOOTSTRAP_OPERATOR_KEY must be at least "
                f"{MIN_BOOTSTRAP_KEY_CHARS} characters"
            )
        if len(key) > 512 or not key.isascii() or not key.isprintable() or " " in key:
            raise ValueError(
                "TASKROUTE_BOOTSTRAP_OPERATOR_KEY must be printable ASCII without spaces, "
                "at most 512 characters"
            )
        return value

    @model_validator(mode="after")
    def _secrets_from_files(self) -> GatewaySettings:
        """Read the ``*_FILE`` secrets (mounted secret files) unless the values were given."""
        if self.api_key_pepper is None and self.api_key_pepper_file is not None:
            self.api_key_pepper = self._long_enough_pepper(
                SecretStr(_read_secret_file(self.api_key_pepper_file))
            )
        if self.bootstrap_operator_key is None and self.bootstrap_operator_key_file is not None:
            self.bootstrap_operator_key = self._usable_bootstrap_key(
                SecretStr(_read_secret_file(self.bootstrap_operator_key_file))
            )
        return self

    @model_validator(mode="after")
    def _clocks_outlast_a_submission(self) -> GatewaySettings:
        """A submission makes two upstream calls (the vault's seal, the router's submit), each
        bounded by the upstream timeout. A claim or a grace shorter than that would take over a
        live request's Idempotency-Key, or roll back a submission about to be acknowledged and
        discard its sealed data."""
        longest = 2 * self.upstream_timeout_seconds
        for name in ("idempotency_lock_seconds", "submission_grace_seconds"):
            if getattr(self, name) <= longest:
                raise ValueError(
                    f"gateway: {name} must be longer than two upstream calls "
                    f"(2 x upstream_timeout_seconds = {longest:g})"
                )
        return self

    @model_validator(mode="after")
    def _production_needs_a_pepper(self) -> GatewaySettings:
        if self.is_production() and self.api_key_pepper is None:
            raise ValueError(
                "gateway: production requires TASKROUTE_GATEWAY_API_KEY_PEPPER "
                "(a generated pepper file is for one machine)"
            )
        return self

    def resolved_api_key_pepper(self) -> bytes:
        """The pepper as HMAC key bytes, generating the local pepper file on first use."""
        if self.api_key_pepper is not None:
            return self.api_key_pepper.get_secret_value().encode("utf-8")
        return _local_pepper(self.data_dir / PEPPER_FILE)


def _read_secret_file(path: Path) -> str:
    """A secret file's text without the trailing newline an editor or ``echo`` leaves."""
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError:
        # The path is configuration, not a secret: naming it helps the operator fix the mount.
        raise ValueError(f"secret file {path} cannot be read") from None


def _local_pepper(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of two processes starting at once, exactly one creates the file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(PEPPER_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    pepper = path.read_bytes()
    if len(pepper) != PEPPER_BYTES:
        raise RuntimeError(f"{path} does not hold a {PEPPER_BYTES}-byte pepper")
    return pepper
