"""Request and response bodies of the vault's internal API (docs/architecture.md, "Vault")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from services.vault.domain.envelope import canonical_json

# A grant is a compact JWT of a few hundred bytes; 8 KiB leaves room without inviting abuse.
MAX_GRANT_LENGTH = 8192


def _strict_json(value: JsonValue) -> JsonValue:
    # Python's parser lets NaN and Infinity through; they are not JSON and cannot be sealed.
    try:
        canonical_json(value)
    except ValueError:
        raise ValueError("must be JSON: NaN and Infinity are not allowed") from None
    return value


SealableData = Annotated[JsonValue, AfterValidator(_strict_json)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordCreate(_Strict):
    """Seal a job's confidential data (only purpose "job": results are sealed under a grant)."""

    tenant_id: uuid.UUID
    job_id: uuid.UUID
    purpose: Literal["job"]
    data: SealableData


class RecordDiscard(_Strict):
    """Discard a never-routed job's data (the gateway's rollback of a failed submission)."""

    tenant_id: uuid.UUID
    job_id: uuid.UUID


class RecordsDiscarded(BaseModel):
    discarded: int


class RecordCreateByGrant(_Strict):
    """Seal a job's confidential result under a router-signed seal grant."""

    grant: str = Field(min_length=1, max_length=MAX_GRANT_LENGTH)
    data: SealableData


class GrantPresented(_Strict):
    """A router-signed grant: for the sealing keys of its job's tenant (a seal grant)."""

    grant: str = Field(min_length=1, max_length=MAX_GRANT_LENGTH)


class RecordOpen(GrantPresented):
    """Open the record a router-signed open grant names."""


class RecordCreated(BaseModel):
    ref: str
    key_version: int


class ResultCreated(RecordCreated):
    # The vault's signed receipt for the router (shared.result_receipts), for a grant that
    # names the holder's lease; null for one from a router older than leases.
    receipt: str | None = None


class RecordData(BaseModel):
    data: JsonValue


class AuditRecordRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    action: str
    outcome: str
    reason: str | None
    tenant_id: str | None
    job_id: str | None
    ref: str | None
    subject: str | None
    actor: str
    grant_id: str | None
    prev_hash: str
    hash: str


class AuditRecordList(BaseModel):
    data: list[AuditRecordRead]
    has_more: bool
    next_cursor: str | None


class AuditVerificationRead(BaseModel):
    valid: bool
    records: int
    first_invalid: int | None
    problem: str | None = Field(
        default=None, description="A short code naming what failed first, when not valid."
    )
    anchors: int = Field(
        default=0,
        description="Anchors (past chain heads kept outside the database) the chain was "
        "checked against; a chain that no longer passes through one is not valid.",
    )
    anchoring: bool = Field(
        description="Whether this vault anchors its chain's head outside the database. "
        "False: the newest records cut off together with the head row (by someone who can "
        "write the database) would still verify; set TASKROUTE_VAULT_AUDIT_ANCHOR_FILE."
    )


class AuditAnchorRead(BaseModel):
    anchored: bool
    seq: int
    hash: str | None
    at: datetime | None


class SealedRecordCreate(_Strict):
    """Store a job's client-sealed envelope (shared/sealed_envelope.py, docs/envelope.md)."""

    tenant_id: uuid.UUID
    job_id: uuid.UUID
    # Parsed strictly by the service (shared.sealed_envelope.parse), which names the bad field.
    envelope: dict[str, JsonValue]


class SealingKeyRead(BaseModel):
    key_id: str
    public_key: str = Field(description="The X25519 public key: 32 raw bytes, base64url.")
    algorithm: str
    version: int
    created_at: datetime


class SealingKeyList(BaseModel):
    keys: list[SealingKeyRead]
    statement: str | None = Field(
        default=None,
        description="The keys, signed by the vault (shared/sealing_statements.py): clients "
        "that hold the vault's public key seal only to a key it names.",
    )


class SealedDelivery(BaseModel):
    """A job's data sealed to the member's registered key (shared/sealed_envelope.py)."""

    envelope: dict[str, JsonValue]


# Rows per rewrap batch: large enough to move quickly, small enough that one transaction (and
# the audit lock it ends with) stays short under live traffic.
DEFAULT_REWRAP_BATCH = 100
MAX_REWRAP_BATCH = 1000


class RewrapCreate(_Strict):
    batch_size: int = Field(default=DEFAULT_REWRAP_BATCH, ge=1, le=MAX_REWRAP_BATCH)


class RotationRead(BaseModel):
    tenant_id: str
    key_version: int
    sealing_key_id: str
    sealing_version: int


class RewrapRead(BaseModel):
    tenant_id: str
    rewrapped: int = Field(description="Data keys moved to the newest version by this call.")
    remaining: int = Field(description="Records still on an older version: call again if > 0.")
    done: bool
    key_version: int | None


class ShredRead(BaseModel):
    tenant_id: str
    shredded: bool


class SealedResultCreate(_Strict):
    """Store a result a member sealed for the tenant, under a router-signed seal grant."""

    grant: str = Field(min_length=1, max_length=MAX_GRANT_LENGTH)
    envelope: dict[str, JsonValue]


class RetireRead(BaseModel):
    tenant_id: str
    min_key_version: int = Field(description="Older vault-sealing versions no longer decrypt.")
    min_sealing_version: int = Field(description="Older client-sealing keys are refused.")
    retired: int = Field(description="Key versions retired by this call.")
