"""The vault's settings (prefix ``TASKROUTE_VAULT_``), including where its root key comes from.

Root key sources, first match wins (see :mod:`services.vault.keys`):

1. ``TASKROUTE_VAULT_ROOT_KEY``: base64 of 32 bytes (e.g. from a secrets manager).
2. ``TASKROUTE_VAULT_ROOT_KEY_FILE`` (default ``<data_dir>/vault-root.key``): 32 raw bytes,
   generated with mode 0600 on first start when ``TASKROUTE_VAULT_GENERATE_ROOT_KEY`` is true.

During a root-key rotation the vault also knows the previous key(s), which only unwrap:
``TASKROUTE_VAULT_PREVIOUS_ROOT_KEYS`` (base64, comma-separated) and/or
``TASKROUTE_VAULT_PREVIOUS_ROOT_KEY_FILES`` (paths, comma-separated). See docs/operations.md.

Generation is on by default for one-machine use and refused in production, where a key that
appears on its own would silently make every existing record unreadable. With no key the vault
starts sealed.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

ROOT_KEY_BYTES = 32  # AES-256


class VaultSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TASKROUTE_VAULT_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        # hide_input_in_errors comes from the shared base: a near-miss root key must not be
        # printed in the start-up error that refuses it.
    )

    service_name: str = "vault"
    port: int = 8002

    root_key: SecretStr | None = None
    root_key_file: Path | None = None
    generate_root_key: bool = True
    # Root keys that only unwrap, during a root-key rotation (the previous key; or the next one,
    # before it becomes current): base64 keys separated by commas, and/or files of 32 raw bytes
    # separated by commas. Both lists apply whichever source gives the current key.
    previous_root_keys: SecretStr | None = None
    previous_root_key_files: str | None = None
    # Longest wait for the audit chain's lock before an operation is refused with 503: the audit
    # must fail closed without hanging every request behind one stuck transaction. On SQLite the
    # chain's lock is the database's write lock, so this is also the vault's busy timeout.
    audit_lock_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Where the audit chain's head is anchored outside the database (an append-only file of
    # JSON lines). Unset: <data_dir>/vault-audit-anchors.jsonl, except in production, where it
    # must be given (nothing is written to the data folder there) or anchoring is off.
    audit_anchor_file: Path | None = None
    # How often the head is anchored (only when it moved); 0: only on demand.
    audit_anchor_interval_seconds: float = Field(default=60.0, ge=0, le=86400)
    # The member key authority's Ed25519 public key (PEM; shared/member_endorsements.py). Set:
    # sealed delivery goes only to member keys it endorsed, so a member the gateway makes up
    # gets nothing. Unset: the vault takes the router's word for the key (the gateway's, at
    # registration).
    member_key_authority_file: Path | None = None

    @field_validator("root_key")
    @classmethod
    def _root_key_is_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            # The value itself is never echoed: it is the root key, or close to it.
            raise ValueError("TASKROUTE_VAULT_ROOT_KEY must be base64") from None
        if len(raw) != ROOT_KEY_BYTES:
            raise ValueError(f"TASKROUTE_VAULT_ROOT_KEY must decode to {ROOT_KEY_BYTES} bytes")
        return value

    @field_validator("previous_root_keys")
    @classmethod
    def _previous_root_keys_are_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        for part in value.get_secret_value().split(","):
            try:
                raw = base64.b64decode(part.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    "TASKROUTE_VAULT_PREVIOUS_ROOT_KEYS must be base64 keys separated by commas"
                ) from None
            if len(raw) != ROOT_KEY_BYTES:
                raise ValueError(
                    f"each of TASKROUTE_VAULT_PREVIOUS_ROOT_KEYS must decode to {ROOT_KEY_BYTES} "
                    "bytes"
                )
        return value

    @model_validator(mode="after")
    def _no_generated_key_in_production(self) -> VaultSettings:
        if self.is_production() and self.generate_root_key:
            if "generate_root_key" in self.model_fields_set:
                raise ValueError(
                    "TASKROUTE_VAULT_GENERATE_ROOT_KEY=true is refused in production: provide "
                    "the root key (TASKROUTE_VAULT_ROOT_KEY or a root key file)"
                )
            # Default on for local use only: production never makes up its own root key.
            self.generate_root_key = False
        return self

    def resolved_root_key_file(self) -> Path:
        return self.root_key_file or self.data_dir / "vault-root.key"

    def root_key_bytes(self) -> bytes | None:
        """The decoded environment root key, if one is set (unwrap only where it is used)."""
        if self.root_key is None:
            return None
        return base64.b64decode(self.root_key.get_secret_value(), validate=True)

    def previous_root_key_bytes(self) -> list[bytes]:
        """The decoded previous root keys from the environment (unwrap only where used)."""
        if self.previous_root_keys is None:
            return []
        return [
            base64.b64decode(part.strip(), validate=True)
            for part in self.previous_root_keys.get_secret_value().split(",")
        ]

    def previous_root_key_paths(self) -> list[Path]:
        if not self.previous_root_key_files:
            return []
        return [Path(part.strip()) for part in self.previous_root_key_files.split(",") if part]

    def resolved_audit_anchor_file(self) -> Path | None:
        """The anchor file; None (anchoring off) in production unless one is configured."""
        if self.audit_anchor_file is not None:
            return self.audit_anchor_file
        if self.is_production():
            return None
        return self.data_dir / "vault-audit-anchors.jsonl"
