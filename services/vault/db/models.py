"""The vault's tables. Nothing here holds plaintext: keys are wrapped, payloads encrypted.

``tenant_keys``       one row per tenant key version, wrapped by the root key
``records``           sealed records: wrapped data key + ciphertext, one per (tenant, job, purpose,
                      lease): a job's data once, a result once per lease
``audit_records``     the audit chain (see :mod:`services.vault.domain.audit`)
``audit_chain_head``  one row: last seq and hash of the chain, with its own MAC
``audit_keys``        the audit chain's MAC key, wrapped by the root key (one version today)
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, new_base
from shared.result_receipts import LEASE_LENGTH

if TYPE_CHECKING:
    # mypy cannot use a variable as a base class; at run time Base is new_base()'s class.
    class Base(DeclarativeBase):
        pass
else:
    Base = new_base()

# 36: the canonical text form of a UUID.
ID_LENGTH = 36
# member:<id> / tenant:<id>, ids up to 128 characters (see domain.grants).
SUBJECT_LENGTH = 160


class TenantKey(Base):
    __tablename__ = "tenant_keys"

    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    # Which root key wrapped this version (its public fingerprint): rotation of the root key
    # will rewrap row by row and needs to know which rows are done.
    root_key_id: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Record(Base):
    __tablename__ = "records"
    __table_args__ = (
        # One job record per job; one result per lease (shared.result_receipts; '' before leases).
        UniqueConstraint("tenant_id", "job_id", "purpose", "lease"),
        ForeignKeyConstraint(
            ["tenant_id", "key_version"], ["tenant_keys.tenant_id", "tenant_keys.version"]
        ),
        CheckConstraint("purpose IN ('job', 'result')", name="purpose"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    job_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    purpose: Mapped[str] = mapped_column(String(16))
    lease: Mapped[str] = mapped_column(String(LEASE_LENGTH), default="", server_default="")
    key_version: Mapped[int] = mapped_column(Integer)
    wrapped_data_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    subject: Mapped[str] = mapped_column(String(SUBJECT_LENGTH))
    # The version the payload was sealed under, once a rewrap moved the data key to a newer
    # one (NULL: same as key_version). The payload's associated data names this version.
    payload_key_version: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRecord(Base):
    __tablename__ = "audit_records"
    __table_args__ = (Index("ix_audit_records_tenant_id_seq", "tenant_id", "seq"),)

    # Assigned by the appender under the chain lock, never by the database: the seq is part of
    # what the hash covers.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    tenant_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    job_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    ref: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    subject: Mapped[str | None] = mapped_column(String(SUBJECT_LENGTH))
    actor: Mapped[str] = mapped_column(String(32))
    grant_id: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))


class AuditKey(Base):
    """The audit chain's HMAC key, wrapped by the root key (re-wrapped by root-key rotation).

    ``origin`` says how it was made: ``random`` for a vault whose chain began with this table,
    ``derived`` for a chain begun by an earlier release (its key was derived from the root key
    of the time, and stays the same for ever, so old records keep verifying).
    """

    __tablename__ = "audit_keys"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    root_key_id: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TenantSealingKey(Base):
    """A tenant's X25519 key pair for client-side sealing; the private half wrapped by root."""

    __tablename__ = "tenant_sealing_keys"
    __table_args__ = (UniqueConstraint("key_id"),)

    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # shared.sealed_envelope.key_id_for(public_key): derived, so it can never name another key.
    key_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    root_key_id: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SealedRecord(Base):
    """An envelope sealed by the client (shared.sealed_envelope), stored exactly as received.

    The envelope's JSON holds only public ids and ciphertext: a dump of this table without the
    root key (and the tenant's wrapped private key) yields nothing.
    """

    __tablename__ = "sealed_records"
    __table_args__ = (
        UniqueConstraint("tenant_id", "job_id", "purpose", "lease"),
        # A client's job reference names one job: the same envelope cannot be reused for another.
        UniqueConstraint(
            "tenant_id", "job_ref", "purpose", "lease", name="uq_sealed_records_tenant_id_job_ref"
        ),
        CheckConstraint("purpose IN ('job', 'result')", name="purpose"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    job_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    job_ref: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(16))
    lease: Mapped[str] = mapped_column(String(LEASE_LENGTH), default="", server_default="")
    key_id: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(SUBJECT_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
