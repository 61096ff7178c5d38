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


class RecordCreateByGrant(_Strict):
    """Seal a job's confidential result under a router-signed seal grant."""

    grant: str = Field(min_length=1, max_length=MAX_GRANT_LENGTH)
    data: SealableData


class RecordOpen(_Strict):
    """Open the record a router-signed open grant names."""

    grant: str = Field(min_length=1, max_length=MAX_GRANT_LENGTH)


class RecordCreated(BaseModel):
    ref: str
    key_version: int


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
