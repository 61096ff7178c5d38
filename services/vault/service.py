"""The vault's operations: seal, open and audit, each one transaction on the request's session.

Routes call this; it joins the repository (all queries) and the pure domain (crypto, grants,
audit chain). Two rules shape it:

* **No audit, no data.** A seal or an open appends its audit record in the same transaction as
  the change or read it records, after everything else succeeded; if the append fails, the
  transaction rolls back and the caller gets 503 with no data.
* **Refusals are audited too.** A refused open or seal (bad grant, grant for another record,
  unknown ref, failed integrity check) is appended in a transaction *of its own*, committed
  before the refusal is raised, because the request's transaction is rolled back on any error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.db.models import AuditRecord, Record, TenantKey
from services.vault.db.repository import AuditRepository, VaultRepository
from services.vault.domain import audit, envelope
from services.vault.domain.errors import (
    AuditUnavailable,
    GrantRefused,
    RecordExists,
    RecordIntegrityError,
    RecordNotFound,
    RootKeyMismatch,
    VaultSealed,
)
from services.vault.domain.grants import (
    Grant,
    parse_grant,
    require_grant_covers,
    require_open_grant,
    require_seal_grant,
)
from services.vault.metrics import measure_audit_append
from shared.db import new_id, utcnow
from shared.service_auth import ServiceAuthError, ServiceIdentity

logger = logging.getLogger("taskroute.vault")

# Tenant keys start at version 1; rotation (a later issue) adds 2, 3, ...
FIRST_KEY_VERSION = 1
GRANT_TYPE = "grant"
# Only the router issues grants: it alone knows who holds a job's lease.
GRANT_ISSUERS = frozenset({"router"})


@dataclass(frozen=True)
class SealResult:
    ref: str
    key_version: int


@dataclass(frozen=True)
class AuditPage:
    records: Sequence[AuditRecord]
    has_more: bool
    next_cursor: str | None


@dataclass(frozen=True)
class _Fields:
    """What an audit record says besides its seq, time and chain hashes."""

    action: str
    outcome: str
    reason: str | None = None
    tenant_id: str | None = None
    job_id: str | None = None
    ref: str | None = None
    subject: str | None = None
    grant_id: str | None = None


class VaultService:
    def __init__(
        self,
        *,
        session: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        root_key: envelope.RootKey | None,
        identity: ServiceIdentity,
        actor: str,
        audit_lock_timeout_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session = session
        self.sessionmaker = sessionmaker
        self._root_key = root_key
        self.identity = identity
        self.actor = actor
        self.audit_lock_timeout_seconds = audit_lock_timeout_seconds
        self.clock = clock
        self.records = VaultRepository(session)

    def _root(self) -> envelope.RootKey:
        if self._root_key is None:
            raise VaultSealed
        return self._root_key

    # -- sealing -----------------------------------------------------------------------------

    async def seal(
        self,
        *,
        tenant_id: str,
        job_id: str,
        purpose: str,
        data: Any,
        subject: str,
        grant_id: str | None = None,
    ) -> SealResult:
        """Encrypt ``data`` for (tenant, job, purpose); 409 if that record already exists."""
        root = self._root()
        if await self.records.record_exists(tenant_id=tenant_id, job_id=job_id, purpose=purpose):
            raise RecordExists(purpose)
        tenant_key = await self._tenant_key_for_seal(root, tenant_id)
        record_id = new_id()
        context = envelope.RecordContext(
            tenant_id=tenant_id,
            job_id=job_id,
            purpose=purpose,
            record_id=record_id,
            key_version=tenant_key.version,
        )
        sealed = envelope.seal_record(tenant_key, context, data)
        stored = await self.records.insert_record_if_absent(
            Record(
                id=record_id,
                tenant_id=tenant_id,
                job_id=job_id,
                purpose=purpose,
                key_version=tenant_key.version,
                wrapped_data_key=sealed.wrapped_data_key,
                ciphertext=sealed.ciphertext,
                subject=subject,
                created_at=self.clock(),
            )
        )
        if not stored:  # a concurrent seal of the same record won the race
            raise RecordExists(purpose)
        await self._append(
            self.session,
            root,
            _Fields(
                action="seal",
                outcome="ok",
                tenant_id=tenant_id,
                job_id=job_id,
                ref=record_id,
                subject=subject,
                grant_id=grant_id,
            ),
        )
        logger.info(
            "record sealed",
            extra={"ref": record_id, "tenant_id": tenant_id, "job_id": job_id, "purpose": purpose},
        )
        return SealResult(ref=record_id, key_version=tenant_key.version)

    async def seal_by_grant(self, *, token: str, data: Any) -> SealResult:
        """Seal a job's result under a router-signed seal grant."""
        root = self._root()
        grant = await self._verified_grant(root, token, action="seal")
        try:
            require_seal_grant(grant)
        except GrantRefused as refusal:
            await self._audit_refusal(root, "seal", refusal.reason, grant)
            raise
        return await self.seal(
            tenant_id=grant.tenant_id,
            job_id=grant.job_id,
            purpose=grant.purpose,
            data=data,
            subject=grant.subject,
            grant_id=grant.grant_id,
        )

    async def _tenant_key_for_seal(
        self, root: envelope.RootKey, tenant_id: str
    ) -> envelope.TenantKey:
        row = await self.records.active_tenant_key(tenant_id)
        if row is None:
            fresh = envelope.TenantKey(
                tenant_id=tenant_id, version=FIRST_KEY_VERSION, material=envelope.new_key()
            )
            await self.records.insert_tenant_key_if_absent(
                tenant_id=tenant_id,
                version=FIRST_KEY_VERSION,
                wrapped_key=envelope.wrap_tenant_key(root, fresh),
                root_key_id=root.key_id,
                at=self.clock(),
            )
            # Read back rather than use ``fresh``: a concurrent first seal may have won.
            row = await self.records.tenant_key(tenant_id, FIRST_KEY_VERSION)
            if row is None:
                raise RecordIntegrityError
        return self._unwrap(root, row)

    def _unwrap(self, root: envelope.RootKey, row: TenantKey) -> envelope.TenantKey:
        if row.root_key_id != root.key_id:
            logger.error(
                "tenant key wrapped by another root key",
                extra={
                    "tenant_id": row.tenant_id,
                    "stored": row.root_key_id,
                    "loaded": root.key_id,
                },
            )
            raise RootKeyMismatch
        try:
            return envelope.unwrap_tenant_key(
                root, tenant_id=row.tenant_id, version=row.version, wrapped=row.wrapped_key
            )
        except envelope.DecryptionError:
            logger.error(
                "tenant key failed its integrity check", extra={"tenant_id": row.tenant_id}
            )
            raise RecordIntegrityError from None

    # -- opening -----------------------------------------------------------------------------

    async def open(self, *, token: str) -> Any:
        """Decrypt the record an open grant names, if the grant covers it exactly."""
        root = self._root()
        grant = await self._verified_grant(root, token, action="open")
        try:
            require_open_grant(grant)
            assert grant.ref is not None  # require_open_grant checked it
            record = await self.records.record(grant.ref)
            if record is None:
                raise RecordNotFound
            require_grant_covers(
                grant,
                tenant_id=record.tenant_id,
                job_id=record.job_id,
                purpose=record.purpose,
                ref=record.id,
            )
        except GrantRefused as refusal:
            await self._audit_refusal(root, "open", refusal.reason, grant)
            raise
        except RecordNotFound:
            await self._audit_refusal(root, "open", "not_found", grant)
            raise
        key_row = await self.records.tenant_key(record.tenant_id, record.key_version)
        if key_row is None:
            await self._audit_refusal(root, "open", "integrity_failure", grant)
            raise RecordIntegrityError
        context = envelope.RecordContext(
            tenant_id=record.tenant_id,
            job_id=record.job_id,
            purpose=record.purpose,
            record_id=record.id,
            key_version=record.key_version,
        )
        try:
            tenant_key = self._unwrap(root, key_row)
            data = envelope.open_record(
                tenant_key,
                context,
                envelope.SealedRecord(
                    wrapped_data_key=record.wrapped_data_key, ciphertext=record.ciphertext
                ),
            )
        except (envelope.DecryptionError, RecordIntegrityError):
            logger.error("record failed its integrity check", extra={"ref": record.id})
            await self._audit_refusal(root, "open", "integrity_failure", grant)
            raise RecordIntegrityError from None
        await self._append(self.session, root, _grant_fields("open", "ok", None, grant))
        logger.info("record opened", extra={"ref": record.id, "tenant_id": record.tenant_id})
        return data

    async def _verified_grant(self, root: envelope.RootKey, token: str, *, action: str) -> Grant:
        try:
            claims = self.identity.verify(token, typ=GRANT_TYPE, allowed_issuers=GRANT_ISSUERS)
            return parse_grant(claims)
        except ServiceAuthError:
            # Unverified claims are not trusted enough to be written into the audit log.
            await self._audit_refusal(root, action, "invalid_grant", None)
            raise GrantRefused(
                "The grant is invalid, expired, or not signed by the router.",
                reason="invalid_grant",
            ) from None
        except GrantRefused as refusal:
            await self._audit_refusal(root, action, refusal.reason, None)
            raise

    # -- audit -------------------------------------------------------------------------------

    async def _audit_refusal(
        self, root: envelope.RootKey, action: str, reason: str, grant: Grant | None
    ) -> None:
        async with self.sessionmaker() as session, session.begin():
            await self._append(session, root, _grant_fields(action, "refused", reason, grant))
        logger.warning("vault request refused", extra={"action": action, "reason": reason})

    async def _append(self, session: AsyncSession, root: envelope.RootKey, fields: _Fields) -> None:
        """Append one audit record, measured (see :mod:`services.vault.metrics`)."""
        with measure_audit_append(
            action=fields.action, outcome=fields.outcome, reason=fields.reason
        ):
            await self._append_record(session, root, fields)

    async def _append_record(
        self, session: AsyncSession, root: envelope.RootKey, fields: _Fields
    ) -> None:
        repo = AuditRepository(session)
        audit_key = root.audit_key()
        try:
            await repo.lock_chain(timeout_seconds=self.audit_lock_timeout_seconds)
            head = await repo.head()
            last_seq = await repo.last_seq()
        except DBAPIError as exc:
            raise AuditUnavailable("The audit log is busy; nothing was done. Retry.") from exc
        if head is None or head.seq != last_seq:
            logger.error("audit chain head does not match its records")
            raise AuditUnavailable(
                "The audit chain is inconsistent, so the vault refuses to act until an "
                "operator verifies it."
            )
        entry = audit.AuditEntry(
            seq=head.seq + 1,
            at=self.clock(),
            action=fields.action,
            outcome=fields.outcome,
            reason=fields.reason,
            tenant_id=fields.tenant_id,
            job_id=fields.job_id,
            ref=fields.ref,
            subject=fields.subject,
            actor=self.actor,
            grant_id=fields.grant_id,
        )
        chained = audit.chain(audit_key, entry, head.hash)
        try:
            await repo.append(chained, head_mac=audit.head_mac(audit_key, entry.seq, chained.hash))
        except DBAPIError as exc:
            raise AuditUnavailable(
                "The audit log could not record this; nothing was done."
            ) from exc

    async def verify_audit(self) -> audit.Verification:
        """Recompute the whole chain. The head is read first: later appends are not judged."""
        root = self._root()
        repo = AuditRepository(self.session)
        head = await repo.head()
        verifier = audit.ChainVerifier(root.audit_key())
        limit = head.seq if head is not None else None
        async for batch in repo.all_in_order():
            verifier.feed(r for r in batch if limit is None or r.entry.seq <= limit)
            if limit is not None and batch[-1].entry.seq >= limit:
                break
        result = verifier.finish(head)
        if not result.valid:
            logger.error(
                "audit chain verification failed",
                extra={"first_invalid": result.first_invalid, "problem": result.problem},
            )
        return result

    async def audit_page(
        self, *, tenant_id: str | None, limit: int, cursor: int | None
    ) -> AuditPage:
        rows = await AuditRepository(self.session).page(
            tenant_id=tenant_id, limit=limit, before_seq=cursor
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(
            records=rows,
            has_more=has_more,
            next_cursor=str(rows[-1].seq) if has_more and rows else None,
        )


def _grant_fields(action: str, outcome: str, reason: str | None, grant: Grant | None) -> _Fields:
    if grant is None:
        return _Fields(action=action, outcome=outcome, reason=reason)
    return _Fields(
        action=action,
        outcome=outcome,
        reason=reason,
        tenant_id=grant.tenant_id,
        job_id=grant.job_id,
        ref=grant.ref,
        subject=grant.subject,
        grant_id=grant.grant_id,
    )
