"""The vault's operations: seal, open and audit, each in one transaction (the request's).

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

import hmac
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.anchors import Anchor, AnchorStoreDamaged, AuditAnchorStore
from services.vault.db.models import (
    AuditKey,
    AuditRecord,
    Record,
    SealedRecord,
    TenantSealingKey,
)
from services.vault.db.repository import (
    TENANT_KEY_ACTIVE,
    TENANT_KEY_RETIRED,
    AuditRepository,
    AuditWriter,
    Db,
    NewRecord,
    StoredTenantKey,
    VaultRepository,
)
from services.vault.domain import audit, envelope, sealing
from services.vault.domain.errors import (
    AnchoringOff,
    AuditUnavailable,
    EnvelopeRefused,
    GrantRefused,
    KeyRetired,
    RecordExists,
    RecordIntegrityError,
    RecordNotFound,
    RewrapPending,
    RootKeyMismatch,
    TenantKeysChanging,
    TenantShredded,
    UnknownSealingKey,
    VaultSealed,
)
from services.vault.domain.grants import (
    Grant,
    parse_grant,
    require_delivery_grant,
    require_grant_covers,
    require_open_grant,
    require_seal_grant,
)
from services.vault.metrics import measure_audit_append
from shared import sealed_envelope
from shared.db import new_id, utcnow
from shared.result_receipts import (
    RECEIPT_AUDIENCE,
    RECEIPT_TTL_SECONDS,
    RECEIPT_TYPE,
)
from shared.sealing_statements import (
    STATEMENT_AUDIENCE,
    STATEMENT_TTL_SECONDS,
    STATEMENT_TYPE,
    statement_claims,
)
from shared.service_auth import ServiceAuthError, ServiceIdentity

logger = logging.getLogger("taskroute.vault")

# Tenant keys start at version 1; rotation (a later issue) adds 2, 3, ...
FIRST_KEY_VERSION = 1
GRANT_TYPE = "grant"
# How far back the gateway may discard a never-routed job's data: its sweeper acts within
# minutes, and nothing older than this can be a submission still being rolled back.
DISCARD_WINDOW = timedelta(hours=1)
# How long a second seal of a record with the same data answers as a retry (the record's
# reference) rather than 409. The comparison answers whether a guess equals the stored
# plaintext, so older records are never compared. It must still cover every retry: a client's
# keyed resubmission, which the gateway takes for 24 hours (its Idempotency-Key retention) and
# which reseals the same job id when the first attempt's process died after routing, and a
# member's retry within a lease.
REPLAY_WINDOW = timedelta(hours=25)
# A seal whose key is retired or shredded between its read and its write starts again; two
# such changes in a row need two operator actions racing one request, so three tries suffice.
SEAL_ATTEMPTS = 3
# Only the router issues grants: it alone knows who holds a job's lease.
GRANT_ISSUERS = frozenset({"router"})
# The audit chain has one MAC key (its wrapping changes with the root key; the key does not).
AUDIT_KEY_VERSION = 1
AUDIT_KEY_RANDOM = "random"
AUDIT_KEY_DERIVED = "derived"
# The audit action of one root-key rotation batch (its ref names the new root key's id).
ROTATE_ROOT_ACTION = "rotate-root"  # in audit.ACTIONS


class AuditKeyCache:
    """One process's unwrapped audit key (on ``app.state``), so appends need no extra query.

    Held like the root key itself, for the life of the process: never logged or returned.
    """

    def __init__(self) -> None:
        self.key: bytes | None = None

    def __repr__(self) -> str:
        return f"AuditKeyCache(loaded={self.key is not None})"

    def keep(self, key: bytes) -> bytes:
        self.key = key
        return key


def _inconsistent_chain() -> AuditUnavailable:
    return AuditUnavailable(
        "The audit chain is inconsistent, so the vault refuses to act until an operator "
        "verifies it."
    )


@dataclass(frozen=True)
class SealResult:
    ref: str
    key_version: int
    # For a result sealed under a grant naming a lease: the router's proof that it is stored
    # (shared.result_receipts).
    receipt: str | None = None


@dataclass(frozen=True)
class RotationResult:
    key_version: int
    sealing_key_id: str
    sealing_version: int


@dataclass(frozen=True)
class RewrapProgress:
    rewrapped: int
    remaining: int
    key_version: int | None


@dataclass(frozen=True)
class RetireResult:
    min_key_version: int
    min_sealing_version: int
    retired: int


@dataclass(frozen=True)
class RootRotationProgress:
    root_key_id: str
    rewrapped: int
    remaining: int


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

    def __post_init__(self) -> None:
        if self.action not in audit.ACTIONS or self.outcome not in audit.OUTCOMES:
            raise ValueError(f"unknown audit action or outcome: {self.action}/{self.outcome}")


def _same_data(stored: Any, given: Any) -> bool:
    """Whether a second seal carries the data already sealed: equal as JSON (object keys in any
    order), types included (Python's ``==`` takes ``true`` for ``1`` and ``1.0`` for ``1``),
    compared in constant time."""

    def encoded(data: Any) -> bytes:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    return hmac.compare_digest(encoded(stored), encoded(given))


class VaultService:
    def __init__(
        self,
        *,
        session: Db,
        sessionmaker: async_sessionmaker[AsyncSession],
        root_key: envelope.RootKeyRing | envelope.RootKey | None,
        identity: ServiceIdentity | None,
        actor: str,
        audit_lock_timeout_seconds: float,
        clock: Callable[[], datetime] = utcnow,
        audit_keys: AuditKeyCache | None = None,
        anchors: AuditAnchorStore | None = None,
        member_key_authority: Ed25519PublicKey | None = None,
    ) -> None:
        """``session`` is the request's transaction: an ORM session, or a Core connection for
        the routes of sealed records (seal, seal by grant, open), whose queries are all Core
        (see :mod:`services.vault.db.repository`). ``identity`` may be None for operator jobs
        that check no grant (root rotation); ``audit_keys`` is the process's cache of the audit
        key (one per app), ``anchors`` where the chain's head is anchored (None: anchoring off),
        ``member_key_authority`` whose endorsement a member key needs for sealed delivery (None:
        any key the router names).
        """
        self.session = session
        self.sessionmaker = sessionmaker
        if isinstance(root_key, envelope.RootKey):
            root_key = envelope.RootKeyRing(current=root_key)
        self._root_key = root_key
        self.identity = identity
        self.actor = actor
        self.audit_lock_timeout_seconds = audit_lock_timeout_seconds
        self.clock = clock
        self.audit_keys = audit_keys if audit_keys is not None else AuditKeyCache()
        self.anchors = anchors
        self.member_key_authority = member_key_authority
        self.records = VaultRepository(session)

    def _root(self) -> envelope.RootKeyRing:
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
        lease: str = "",
    ) -> SealResult:
        """Encrypt ``data`` for (tenant, job, purpose), once; for a result sealed under a
        grant naming the holder's ``lease``, once per lease.

        The same data again answers the first record's reference (a caller retrying after a
        lost answer, or a crash, must not be refused nor leave a second copy); other data for
        that record is 409.
        """
        root = self._root()
        fields = _Fields(
            action="seal",
            outcome="ok",
            tenant_id=tenant_id,
            job_id=job_id,
            subject=subject,
            grant_id=grant_id,
        )
        for _ in range(SEAL_ATTEMPTS):
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
                NewRecord(
                    id=record_id,
                    tenant_id=tenant_id,
                    job_id=job_id,
                    purpose=purpose,
                    key_version=tenant_key.version,
                    wrapped_data_key=sealed.wrapped_data_key,
                    ciphertext=sealed.ciphertext,
                    subject=subject,
                    created_at=self.clock(),
                    lease=lease,
                )
            )
            if stored:
                break
            existing = await self.records.record_for(
                tenant_id=tenant_id, job_id=job_id, purpose=purpose, lease=lease
            )
            if existing is not None:  # sealed before (a retry) or by a concurrent call
                return await self._seal_again(
                    root, replace(fields, ref=existing.id), existing, data=data
                )
            # Neither stored nor there: the key version read above was retired or shredded
            # since. Nothing is written; start again from the tenant's key as it is now (a
            # shredded tenant is refused there, in a transaction of its own after this one).
            await self.session.rollback()
        else:
            raise TenantKeysChanging
        await self._append(self.session, root, replace(fields, ref=record_id))
        logger.info(
            "record sealed",
            extra={"ref": record_id, "tenant_id": tenant_id, "job_id": job_id, "purpose": purpose},
        )
        return SealResult(ref=record_id, key_version=tenant_key.version)

    async def _seal_again(
        self, root: envelope.RootKeyRing, fields: _Fields, existing: Record, *, data: Any
    ) -> SealResult:
        """A second seal of one record: the first one's reference if it is a retry (a record
        younger than ``REPLAY_WINDOW`` holding the same data), else 409, audited: a caller
        guessing at stored data is answered 409 for any record older than that, and leaves a
        trace for every wrong guess."""
        recent = self.clock() - existing.created_at <= REPLAY_WINDOW
        if recent and _same_data(await self._plaintext(root, existing), data):
            await self._append(self.session, root, replace(fields, reason="replayed"))
            return SealResult(ref=existing.id, key_version=existing.key_version)
        # Nothing of this request is written (a failed insert may hold SQLite's write lock):
        # the refusal's audit record, a transaction of its own, must not wait behind it.
        await self.session.rollback()
        await self._audit(root, replace(fields, outcome="refused", reason="exists"))
        raise RecordExists(existing.purpose)

    async def discard_unrouted(self, *, tenant_id: str, job_id: str) -> int:
        """Delete the job data that a submission which never reached the router left behind.

        Called by the gateway's sweeper when a submission died between sealing and routing
        (the client never got a 2xx). Only records younger than ``DISCARD_WINDOW`` go, so a
        compromised gateway cannot erase the confidential data of older, routed jobs; every
        deletion is audited.
        """
        root = self._root()
        refs = await self.records.discard_job_data(
            tenant_id=tenant_id,
            job_id=job_id,
            purpose="job",
            created_after=self.clock() - DISCARD_WINDOW,
        )
        for ref in refs:
            fields = _Fields(
                action="discard",
                outcome="ok",
                reason="never_routed",
                tenant_id=tenant_id,
                job_id=job_id,
                ref=ref,
                subject="gateway",
            )
            await self._append(self.session, root, fields)
        if refs:
            logger.info(
                "unrouted job data discarded", extra={"tenant_id": tenant_id, "count": len(refs)}
            )
        return len(refs)

    async def seal_by_grant(self, *, token: str, data: Any) -> SealResult:
        """Seal a job's result under a router-signed seal grant, with its receipt."""
        grant = await self._seal_grant(token)
        sealed = await self.seal(
            tenant_id=grant.tenant_id,
            job_id=grant.job_id,
            purpose=grant.purpose,
            data=data,
            subject=grant.subject,
            grant_id=grant.grant_id,
            lease=grant.lease or "",  # none from a router older than leases
        )
        return self._with_receipt(grant, sealed)

    def _with_receipt(self, grant: Grant, sealed: SealResult) -> SealResult:
        """The result with the receipt the router completes the job on
        (shared.result_receipts). Signed here, in the request's transaction; the answer that
        carries it leaves only once that transaction has committed (api.deps). A grant from a
        router older than leases gets none: that router takes the bare ref."""
        if grant.lease is None or self.identity is None:
            return sealed
        receipt = self.identity.sign(
            audience=RECEIPT_AUDIENCE,
            typ=RECEIPT_TYPE,
            ttl_seconds=RECEIPT_TTL_SECONDS,
            claims={
                "tenant_id": grant.tenant_id,
                "job_id": grant.job_id,
                "lease": grant.lease,
                "ref": sealed.ref,
            },
        )
        return replace(sealed, receipt=receipt)

    async def _seal_grant(self, token: str) -> Grant:
        """A verified grant that allows sealing a result; a refusal is audited, then raised."""
        root = self._root()
        grant = await self._verified_grant(root, token, action="seal")
        try:
            require_seal_grant(grant)
        except GrantRefused as refusal:
            await self._audit_refusal(root, "seal", refusal.reason, grant)
            raise
        return grant

    async def _tenant_key_for_seal(
        self, root: envelope.RootKeyRing, tenant_id: str
    ) -> envelope.TenantKey:
        row = await self.records.active_tenant_key(tenant_id)
        if row is None:
            # Shredding leaves no active key, so only a tenant without one can be shredded.
            await self._refuse_if_shredded(root, tenant_id, action="seal")
            await self._hold_tenant_keys(root, tenant_id, action="seal")
            fresh = envelope.TenantKey(
                tenant_id=tenant_id, version=FIRST_KEY_VERSION, material=envelope.new_key()
            )
            await self.records.insert_tenant_key_if_absent(
                tenant_id=tenant_id,
                version=FIRST_KEY_VERSION,
                wrapped_key=envelope.wrap_tenant_key(root.current, fresh),
                root_key_id=root.current.key_id,
                at=self.clock(),
            )
            # Read back rather than use ``fresh``: a concurrent first seal may have won.
            row = await self.records.tenant_key(tenant_id, FIRST_KEY_VERSION)
            if row is None:
                raise RecordIntegrityError
        return self._unwrap(root, row)

    def _unwrap(self, root: envelope.RootKeyRing, row: StoredTenantKey) -> envelope.TenantKey:
        key = root.get(row.root_key_id)
        if key is None:
            logger.error(
                "tenant key wrapped by an unknown root key",
                extra={
                    "tenant_id": row.tenant_id,
                    "stored": row.root_key_id,
                    "loaded": list(root.key_ids),
                },
            )
            raise RootKeyMismatch
        try:
            return envelope.unwrap_tenant_key(
                key, tenant_id=row.tenant_id, version=row.version, wrapped=row.wrapped_key
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
            # The record, its key row and the shredded check in one read (the hot path).
            opened = await self.records.record_to_open(grant.ref)
            if opened is None:
                sealed = await self.records.sealed_record(grant.ref)
                if sealed is None:
                    raise RecordNotFound
                await self._refuse_if_shredded(root, sealed.tenant_id, action="open", grant=grant)
                return await self._open_sealed(root, grant, sealed)
            record, key_row = opened.record, opened.key
            if opened.tenant_shredded:
                await self._refuse_shredded(root, record.tenant_id, action="open", grant=grant)
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
        if key_row is None:
            await self._audit_refusal(root, "open", "integrity_failure", grant)
            raise RecordIntegrityError
        if key_row.state == TENANT_KEY_RETIRED:
            await self._audit_refusal(root, "open", "key_retired", grant)
            raise KeyRetired
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
                payload_key_version=record.payload_key_version,
            )
        except (envelope.DecryptionError, RecordIntegrityError):
            logger.error("record failed its integrity check", extra={"ref": record.id})
            await self._audit_refusal(root, "open", "integrity_failure", grant)
            raise RecordIntegrityError from None
        await self._append(self.session, root, _grant_fields("open", "ok", None, grant))
        logger.info("record opened", extra={"ref": record.id, "tenant_id": record.tenant_id})
        return data

    # -- client-side sealing ------------------------------------------------------------------

    def sealing_keys_statement(
        self, tenant_id: str, keys: list[dict[str, Any]], *, job_id: str | None = None
    ) -> str | None:
        """The vault's signed statement of the tenant's keys (shared.sealing_statements), so
        clients need not take the gateway's word for them; None for a vault with no identity.
        With ``job_id``, for that job only: give it only from a router-signed grant."""
        if self.identity is None:
            return None
        return self.identity.sign(
            audience=STATEMENT_AUDIENCE,
            typ=STATEMENT_TYPE,
            ttl_seconds=STATEMENT_TTL_SECONDS,
            claims=statement_claims(tenant_id, keys, job_id=job_id),
        )

    async def sealing_keys_for_grant(
        self, *, token: str
    ) -> tuple[Grant, Sequence[TenantSealingKey]]:
        """The seal grant (verified; a refusal is audited) and its tenant's sealing keys: what a
        member seals a result to, with the tenant taken from the router, not the gateway."""
        grant = await self._seal_grant(token)
        return grant, await self.sealing_keys(tenant_id=grant.tenant_id)

    async def sealing_keys(self, *, tenant_id: str) -> Sequence[TenantSealingKey]:
        """The tenant's active sealing keys, newest first; version 1 is made on first use."""
        root = self._root()
        await self._refuse_if_shredded(root, tenant_id, action="keygen")
        rows = await self.records.sealing_keys(tenant_id)
        if rows:
            return rows
        await self._hold_tenant_keys(root, tenant_id, action="keygen")
        fresh = sealing.generate(root.current, tenant_id=tenant_id, version=FIRST_KEY_VERSION)
        await self.records.insert_sealing_key_if_absent(
            TenantSealingKey(
                tenant_id=tenant_id,
                version=FIRST_KEY_VERSION,
                key_id=fresh.key_id,
                public_key=fresh.public_key,
                wrapped_private_key=fresh.wrapped_private_key,
                root_key_id=root.current.key_id,
                state=TENANT_KEY_ACTIVE,
                created_at=self.clock(),
            )
        )
        await self._append(
            self.session,
            root,
            _Fields(action="keygen", outcome="ok", tenant_id=tenant_id, subject="vault"),
        )
        # Read back: a concurrent first request may have stored its own version 1 first.
        return await self.records.sealing_keys(tenant_id)

    def _sealing_private_key(
        self, root: envelope.RootKeyRing, row: TenantSealingKey
    ) -> X25519PrivateKey:
        key = root.get(row.root_key_id)
        if key is None:
            logger.error(
                "sealing key wrapped by an unknown root key",
                extra={"tenant_id": row.tenant_id, "stored": row.root_key_id},
            )
            raise RootKeyMismatch
        try:
            return sealing.unwrap(
                key,
                tenant_id=row.tenant_id,
                version=row.version,
                key_id=row.key_id,
                wrapped=row.wrapped_private_key,
            )
        except envelope.DecryptionError:
            logger.error(
                "sealing key failed its integrity check", extra={"tenant_id": row.tenant_id}
            )
            raise RecordIntegrityError from None

    async def store_sealed(
        self,
        *,
        tenant_id: str,
        job_id: str,
        envelope_json: Any,
        subject: str,
        purpose: str = "job",
        job_ref: str | None = None,
        grant_id: str | None = None,
        lease: str = "",
    ) -> SealResult:
        """Check a client-sealed envelope opens for this tenant, then store it as received.

        The vault opens it only to authenticate it and check that it holds JSON (so a broken
        envelope is refused now, not when a member needs it); the plaintext is dropped at once.
        ``job_ref``, when given, is the reference the envelope must be bound to (a result is
        bound to the job's id). A result under a grant naming a ``lease`` is stored once per
        lease.
        """
        root = self._root()
        await self._refuse_if_shredded(root, tenant_id, action="seal")
        fields = _Fields(
            action="seal",
            outcome="refused",
            tenant_id=tenant_id,
            job_id=job_id,
            subject=subject,
            grant_id=grant_id,
        )
        try:
            parsed = sealed_envelope.parse(envelope_json)
            sealed_envelope.check_context(parsed, tenant_id=tenant_id, job_ref=job_ref)
            key_row = await self.records.sealing_key(tenant_id, parsed.key_id)
            if key_row is None or key_row.state != TENANT_KEY_ACTIVE:
                await self._audit(root, replace(fields, reason="unknown_key"))
                raise UnknownSealingKey
            private = self._sealing_private_key(root, key_row)
            try:
                json.loads(sealed_envelope.open_envelope(parsed, private))
            except ValueError as error:
                if isinstance(error, sealed_envelope.EnvelopeError):
                    raise
                raise sealed_envelope.MalformedEnvelope(
                    "the payload is not UTF-8 JSON", field="ciphertext"
                ) from None
        except sealed_envelope.EnvelopeError as error:
            await self._audit(root, replace(fields, reason=error.code[:32]))
            raise EnvelopeRefused(str(error), reason=error.code, field=error.field) from None
        # Checked by a read before any write: a refusal's audit record is appended in a
        # transaction of its own, which must not wait behind this one's write lock (SQLite).
        stored_form = json.dumps(parsed.to_json(), separators=(",", ":"))
        existing = await self.records.existing_sealed(
            tenant_id=tenant_id,
            job_id=job_id,
            job_ref=parsed.job_ref,
            purpose=purpose,
            lease=lease,
        )
        if existing is not None:
            return await self._store_sealed_again(
                root, fields, existing, stored_form=stored_form, key_version=key_row.version
            )
        record_id = new_id()
        stored = await self.records.insert_sealed_if_absent(
            SealedRecord(
                id=record_id,
                tenant_id=tenant_id,
                job_id=job_id,
                job_ref=parsed.job_ref,
                purpose=purpose,
                lease=lease,
                key_id=parsed.key_id,
                envelope=stored_form,
                subject=subject,
                created_at=self.clock(),
            )
        )
        if not stored:
            existing = await self.records.existing_sealed(
                tenant_id=tenant_id,
                job_id=job_id,
                job_ref=parsed.job_ref,
                purpose=purpose,
                lease=lease,
            )
            if existing is not None:  # a concurrent store for the job won the race
                return await self._store_sealed_again(
                    root, fields, existing, stored_form=stored_form, key_version=key_row.version
                )
            # The sealing key was retired or shredded since it was read: refused as it would be
            # now. Nothing is written; the refusal's audit record needs this transaction gone.
            await self.session.rollback()
            await self._refuse_if_shredded(root, tenant_id, action="seal")
            await self._audit(root, replace(fields, reason="unknown_key"))
            raise UnknownSealingKey
        await self._append(
            self.session,
            root,
            replace(fields, outcome="ok", ref=record_id),
        )
        logger.info(
            "sealed envelope stored",
            extra={"ref": record_id, "tenant_id": tenant_id, "job_id": job_id},
        )
        return SealResult(ref=record_id, key_version=key_row.version)

    async def _store_sealed_again(
        self,
        root: envelope.RootKeyRing,
        fields: _Fields,
        existing: SealedRecord,
        *,
        stored_form: str,
        key_version: int,
    ) -> SealResult:
        """A second store for a job (or its job_ref): the first one's reference for the same
        envelope for the same job (a retry after a lost answer), else 409, audited."""
        if existing.job_id == fields.job_id and existing.envelope == stored_form:
            replayed = replace(fields, outcome="ok", ref=existing.id, reason="replayed")
            await self._append(self.session, root, replayed)
            return SealResult(ref=existing.id, key_version=key_version)
        # Nothing of this request is written (a failed insert may hold SQLite's write lock):
        # the refusal's audit record, a transaction of its own, must not wait behind it.
        await self.session.rollback()
        await self._audit(root, replace(fields, reason="exists"))
        raise RecordExists("job (or job_ref)")

    async def store_sealed_by_grant(self, *, token: str, envelope_json: Any) -> SealResult:
        """Store a result the member sealed for the tenant, under a router-signed seal grant,
        with its receipt."""
        grant = await self._seal_grant(token)
        stored = await self.store_sealed(
            tenant_id=grant.tenant_id,
            job_id=grant.job_id,
            envelope_json=envelope_json,
            subject=grant.subject,
            purpose=grant.purpose,
            job_ref=grant.job_id,
            grant_id=grant.grant_id,
            lease=grant.lease or "",  # none from a router older than leases
        )
        return self._with_receipt(grant, stored)

    async def _open_sealed(
        self, root: envelope.RootKeyRing, grant: Grant, record: SealedRecord
    ) -> Any:
        """Plaintext delivery of a client-sealed record (refused under require_e2e earlier)."""
        require_grant_covers(
            grant,
            tenant_id=record.tenant_id,
            job_id=record.job_id,
            purpose=record.purpose,
            ref=record.id,
        )
        try:
            try:
                data = json.loads(await self._sealed_plaintext(root, record))
            except ValueError:  # checked when stored: this is damage, not input
                raise RecordIntegrityError from None
        except RecordIntegrityError:
            await self._audit_refusal(root, "open", "integrity_failure", grant)
            raise
        except KeyRetired:
            await self._audit_refusal(root, "open", "key_retired", grant)
            raise
        await self._append(self.session, root, _grant_fields("open", "ok", None, grant))
        logger.info("sealed record opened", extra={"ref": record.id, "tenant_id": record.tenant_id})
        return data

    async def _sealed_private_key(
        self, root: envelope.RootKeyRing, record: SealedRecord
    ) -> X25519PrivateKey:
        key_row = await self.records.sealing_key(record.tenant_id, record.key_id)
        if key_row is None:
            raise RecordIntegrityError
        if key_row.state == TENANT_KEY_RETIRED:
            raise KeyRetired
        return self._sealing_private_key(root, key_row)

    async def _sealed_plaintext(self, root: envelope.RootKeyRing, record: SealedRecord) -> bytes:
        private = await self._sealed_private_key(root, record)
        try:
            return sealed_envelope.open_envelope(
                sealed_envelope.parse(record.envelope),
                private,
                tenant_id=record.tenant_id,
                job_ref=record.job_ref,
            )
        except sealed_envelope.EnvelopeError:
            logger.error("sealed record failed its integrity check", extra={"ref": record.id})
            raise RecordIntegrityError from None

    async def deliver(self, *, token: str) -> dict[str, Any]:
        """A job's data sealed to the member key the router put in the grant.

        A client-sealed envelope keeps its payload: only the data key is re-wrapped. A record
        the vault sealed itself is opened in the vault and sealed to the member's key at once.
        Either way the gateway carries only ciphertext.
        """
        root = self._root()
        grant = await self._verified_grant(root, token, action="deliver")
        try:
            recipient_text = require_delivery_grant(
                grant, member_key_authority=self.member_key_authority
            )
            assert grant.ref is not None  # require_delivery_grant checked it
            recipient = sealed_envelope.load_public_key(recipient_text)
            sealed = await self.records.sealed_record(grant.ref)
            record = None if sealed is not None else await self.records.record(grant.ref)
            found = sealed or record
            if found is None:
                raise RecordNotFound
            await self._refuse_if_shredded(root, found.tenant_id, action="deliver", grant=grant)
            require_grant_covers(
                grant,
                tenant_id=found.tenant_id,
                job_id=found.job_id,
                purpose=found.purpose,
                ref=found.id,
            )
        except GrantRefused as refusal:
            await self._audit_refusal(root, "deliver", refusal.reason, grant)
            raise
        except sealed_envelope.EnvelopeError:
            await self._audit_refusal(root, "deliver", "malformed_grant", grant)
            raise GrantRefused(
                "The grant's recipient key is not an X25519 key.", reason="malformed_grant"
            ) from None
        except RecordNotFound:
            await self._audit_refusal(root, "deliver", "not_found", grant)
            raise
        try:
            if sealed is not None:
                private = await self._sealed_private_key(root, sealed)
                try:
                    delivered = sealed_envelope.rewrap(
                        sealed_envelope.parse(sealed.envelope), private, recipient
                    )
                except sealed_envelope.EnvelopeError:
                    raise RecordIntegrityError from None
            else:
                assert record is not None
                delivered = sealed_envelope.seal_json(
                    await self._plaintext(root, record),
                    public_key=recipient,
                    tenant_id=record.tenant_id,
                    job_ref=record.job_id,
                )
        except RecordIntegrityError:
            await self._audit_refusal(root, "deliver", "integrity_failure", grant)
            raise
        except KeyRetired:
            await self._audit_refusal(root, "deliver", "key_retired", grant)
            raise
        await self._append(self.session, root, _grant_fields("deliver", "ok", None, grant))
        logger.info("record delivered sealed", extra={"ref": grant.ref})
        return delivered.to_json()

    async def _plaintext(self, root: envelope.RootKeyRing, record: Record) -> Any:
        key_row = await self.records.tenant_key(record.tenant_id, record.key_version)
        if key_row is None:
            raise RecordIntegrityError
        if key_row.state == TENANT_KEY_RETIRED:
            raise KeyRetired
        context = envelope.RecordContext(
            tenant_id=record.tenant_id,
            job_id=record.job_id,
            purpose=record.purpose,
            record_id=record.id,
            key_version=record.key_version,
        )
        try:
            return envelope.open_record(
                self._unwrap(root, key_row),
                context,
                envelope.SealedRecord(
                    wrapped_data_key=record.wrapped_data_key, ciphertext=record.ciphertext
                ),
                payload_key_version=record.payload_key_version,
            )
        except envelope.DecryptionError:
            raise RecordIntegrityError from None

    # -- rotation, rewrap, shredding -----------------------------------------------------------

    async def _refuse_if_shredded(
        self, root: envelope.RootKeyRing, tenant_id: str, *, action: str, grant: Grant | None = None
    ) -> None:
        if await self.records.tenant_shredded(tenant_id):
            await self._refuse_shredded(root, tenant_id, action=action, grant=grant)

    async def _hold_tenant_keys(
        self, root: envelope.RootKeyRing, tenant_id: str, *, action: str
    ) -> None:
        """Before the tenant's keys change (a new key: its first, or a rotation; a retire):
        serialise with shredding on the tenant's key lock, held to the end of this transaction,
        then refuse a tenant shredded meanwhile. The check before it is a plain read, and a
        shred committing between that read and a key's insert would leave a live key beside
        the tombstone (shredding erases only the keys it can see), or a retire would report
        success for a shredded tenant. Rare: once per tenant, and per rotation or retire."""
        await self._lock_tenant_keys(tenant_id)
        if await self.records.tenant_shredded(tenant_id):
            # Nothing written yet but the lock: give it up, so the refusal's audit record (a
            # transaction of its own) does not wait for this one.
            await self.session.rollback()
            await self._refuse_shredded(root, tenant_id, action=action, grant=None)

    async def _lock_tenant_keys(self, tenant_id: str) -> None:
        """Take the lock that orders changes to one tenant's keys (to the end of this
        transaction). Not the audit chain's: a seal holds its key row while it waits for the
        chain's lock, so a change that waited for a key row while holding the chain's lock
        would deadlock with it. On SQLite the chain's lock is the database's write lock, which
        orders everything anyway."""
        if not await self.records.lock_tenant_keys(tenant_id):
            await self._lock_audit_chain()

    async def _lock_audit_chain(self) -> None:
        """Take the audit chain's append lock in this transaction (re-entrant: the append at
        its end takes it again)."""
        timeout = self.audit_lock_timeout_seconds
        try:
            await AuditRepository(self.session).write(
                lambda writer: writer.lock_and_read_head(timeout_seconds=timeout)
            )
        except DBAPIError as exc:
            raise AuditUnavailable("The audit log is busy; nothing was done. Retry.") from exc

    async def _refuse_shredded(
        self, root: envelope.RootKeyRing, tenant_id: str, *, action: str, grant: Grant | None
    ) -> NoReturn:
        """Audit the refusal (in a transaction of its own), then raise TenantShredded."""
        if grant is not None:
            await self._audit_refusal(root, action, "shredded", grant)
        else:
            fields = _Fields(action=action, outcome="refused", reason="shredded")
            await self._audit(root, replace(fields, tenant_id=tenant_id))
        raise TenantShredded

    async def rotate(self, *, tenant_id: str) -> RotationResult:
        """Add a new version of the tenant's keys; new seals use it, old versions still open."""
        root = self._root()
        await self._refuse_if_shredded(root, tenant_id, action="rotate")
        await self._hold_tenant_keys(root, tenant_id, action="rotate")
        key_version, sealing_version = await self.records.newest_versions(tenant_id)
        fresh = envelope.TenantKey(
            tenant_id=tenant_id, version=key_version + 1, material=envelope.new_key()
        )
        await self.records.insert_tenant_key_if_absent(
            tenant_id=tenant_id,
            version=fresh.version,
            wrapped_key=envelope.wrap_tenant_key(root.current, fresh),
            root_key_id=root.current.key_id,
            at=self.clock(),
        )
        pair = sealing.generate(root.current, tenant_id=tenant_id, version=sealing_version + 1)
        await self.records.insert_sealing_key_if_absent(
            TenantSealingKey(
                tenant_id=tenant_id,
                version=sealing_version + 1,
                key_id=pair.key_id,
                public_key=pair.public_key,
                wrapped_private_key=pair.wrapped_private_key,
                root_key_id=root.current.key_id,
                state=TENANT_KEY_ACTIVE,
                created_at=self.clock(),
            )
        )
        # Read back: a concurrent rotation may have stored these versions first.
        newest = (await self.records.sealing_keys(tenant_id))[0]
        await self._append(
            self.session,
            root,
            _Fields(
                action="rotate",
                outcome="ok",
                tenant_id=tenant_id,
                reason=f"v{fresh.version}",
                subject="operator",
            ),
        )
        logger.info("tenant keys rotated", extra={"tenant_id": tenant_id, "version": fresh.version})
        return RotationResult(
            key_version=fresh.version, sealing_key_id=newest.key_id, sealing_version=newest.version
        )

    async def rewrap(self, *, tenant_id: str, batch_size: int) -> RewrapProgress:
        """Move up to ``batch_size`` data keys to the newest key versions; call until done.

        Only data keys are decrypted and re-encrypted, never a payload. Each batch is one
        transaction with compare-and-set updates, so an interrupted or concurrent rewrap is
        simply resumed by the next call.
        """
        root = self._root()
        await self._refuse_if_shredded(root, tenant_id, action="rewrap")
        newest = await self.records.active_tenant_key(tenant_id)
        sealing_rows = await self.records.sealing_keys(tenant_id)
        newest_sealing = sealing_rows[0] if sealing_rows else None
        moved = 0
        if newest is not None:
            new_key = self._unwrap(root, newest)
            old_keys: dict[int, envelope.TenantKey] = {}
            for record in await self.records.records_before_version(
                tenant_id, newest.version, limit=batch_size
            ):
                if record.key_version not in old_keys:
                    row = await self.records.tenant_key(tenant_id, record.key_version)
                    if row is None:
                        raise RecordIntegrityError
                    old_keys[record.key_version] = self._unwrap(root, row)
                context = envelope.RecordContext(
                    tenant_id=record.tenant_id,
                    job_id=record.job_id,
                    purpose=record.purpose,
                    record_id=record.id,
                    key_version=record.key_version,
                )
                try:
                    wrapped = envelope.rewrap_data_key(
                        old_keys[record.key_version], new_key, context, record.wrapped_data_key
                    )
                except envelope.DecryptionError:
                    logger.error("record failed its integrity check", extra={"ref": record.id})
                    raise RecordIntegrityError from None
                moved += await self.records.move_record_key(
                    record,
                    from_version=record.key_version,
                    to_version=newest.version,
                    wrapped=wrapped,
                )
        if newest_sealing is not None and moved < batch_size:
            recipient = X25519PublicKey.from_public_bytes(newest_sealing.public_key)
            for sealed in await self.records.sealed_not_on_key(
                tenant_id, newest_sealing.key_id, limit=batch_size - moved
            ):
                private = await self._sealed_private_key(root, sealed)
                try:
                    rewrapped = sealed_envelope.rewrap(
                        sealed_envelope.parse(sealed.envelope),
                        private,
                        recipient,
                        check_payload=False,
                    )
                except sealed_envelope.EnvelopeError:
                    logger.error(
                        "sealed record failed its integrity check", extra={"ref": sealed.id}
                    )
                    raise RecordIntegrityError from None
                moved += await self.records.move_sealed_key(
                    sealed,
                    from_key_id=sealed.key_id,
                    to_key_id=newest_sealing.key_id,
                    envelope=json.dumps(rewrapped.to_json(), separators=(",", ":")),
                )
        remaining = await self.records.count_to_rewrap(
            tenant_id,
            newest.version if newest is not None else 0,
            newest_sealing.key_id if newest_sealing is not None else None,
        )
        await self._append(
            self.session,
            root,
            _Fields(
                action="rewrap",
                outcome="ok",
                tenant_id=tenant_id,
                reason=f"{moved} moved, {remaining} left"[:32],
                subject="operator",
            ),
        )
        return RewrapProgress(
            rewrapped=moved,
            remaining=remaining,
            key_version=newest.version if newest is not None else None,
        )

    async def retire_older(self, *, tenant_id: str) -> RetireResult:
        """Retire every key version but the newest: the minimum decryption version goes up.

        Refused (409) while any record still uses an older version, so retiring never makes
        stored data unreadable; envelopes sealed to a retired key are refused from then on.
        """
        root = self._root()
        await self._refuse_if_shredded(root, tenant_id, action="retire")
        await self._hold_tenant_keys(root, tenant_id, action="retire")
        newest = await self.records.active_tenant_key(tenant_id)
        sealing_rows = await self.records.sealing_keys(tenant_id)
        key_version = newest.version if newest is not None else 0
        sealing_version = sealing_rows[0].version if sealing_rows else 0
        # Retire first, count after: the update waits for every seal in flight under an older
        # version (each holds its key row, see the repository's ``_key_in_use``) and turns
        # away the later ones, so the count sees every record those versions will ever have.
        # The request's transaction rolls the update back if any is left.
        retired = await self.records.retire_older(
            tenant_id, key_version=key_version, sealing_version=sealing_version
        )
        remaining = await self.records.count_to_rewrap(
            tenant_id, key_version, sealing_rows[0].key_id if sealing_rows else None
        )
        if remaining:
            raise RewrapPending(remaining)
        await self._append(
            self.session,
            root,
            _Fields(
                action="retire",
                outcome="ok",
                tenant_id=tenant_id,
                reason=f"below v{key_version}/v{sealing_version}"[:32],
                subject="operator",
            ),
        )
        return RetireResult(
            min_key_version=key_version, min_sealing_version=sealing_version, retired=retired
        )

    async def shred(self, *, tenant_id: str) -> None:
        """Destroy every key of the tenant: its records can never be opened again (410)."""
        root = self._root()
        # After any key creation or rotation under way (it holds this lock): its new key is
        # then erased too. Erasing waits for the seals in flight under the keys and turns away
        # later ones (the repository's ``_key_in_use``); the chain's lock, which those seals
        # wait for next, is taken only by the audit record at the end.
        await self._lock_tenant_keys(tenant_id)
        await self.records.shred(tenant_id, root_key_id=root.current.key_id, at=self.clock())
        await self._append(
            self.session,
            root,
            _Fields(action="shred", outcome="ok", tenant_id=tenant_id, subject="operator"),
        )
        logger.warning("tenant keys shredded", extra={"tenant_id": tenant_id})

    # -- root-key rotation ----------------------------------------------------------------------

    async def rotate_root_key_batch(self, *, batch_size: int) -> RootRotationProgress:
        """Re-wrap up to ``batch_size`` stored keys under the current root key; call until done.

        Only wrapped keys move: tenant key versions (active and retired), tenant sealing keys and
        the audit key. No data key or payload is touched. Each batch is one transaction with
        compare-and-set updates (see the repository), audited as ``rotate-root``; concurrent
        seals and opens go on, since every row names the root key that opens it and the vault
        knows both keys during the rotation (a seal whose key row is in the batch waits for
        the batch's commit: it holds that row while it writes).
        """
        root = self._root()
        current = root.current
        moved = 0
        for key_row in await self.records.tenant_keys_not_under(current.key_id, limit=batch_size):
            tenant_key = self._unwrap(root, key_row)
            moved += await self.records.move_tenant_key_root(
                key_row,
                root_key_id=current.key_id,
                wrapped=envelope.wrap_tenant_key(current, tenant_key),
            )
        if moved < batch_size:
            for sealing_row in await self.records.sealing_keys_not_under(
                current.key_id, limit=batch_size - moved
            ):
                old = root.get(sealing_row.root_key_id)
                if old is None:
                    logger.error(
                        "sealing key wrapped by an unknown root key",
                        extra={
                            "tenant_id": sealing_row.tenant_id,
                            "stored": sealing_row.root_key_id,
                        },
                    )
                    raise RootKeyMismatch
                try:
                    wrapped = sealing.rewrap(
                        old,
                        current,
                        tenant_id=sealing_row.tenant_id,
                        version=sealing_row.version,
                        key_id=sealing_row.key_id,
                        wrapped=sealing_row.wrapped_private_key,
                    )
                except envelope.DecryptionError:
                    logger.error(
                        "sealing key failed its integrity check",
                        extra={"tenant_id": sealing_row.tenant_id},
                    )
                    raise RecordIntegrityError from None
                moved += await self.records.move_sealing_key_root(
                    sealing_row, root_key_id=current.key_id, wrapped=wrapped
                )
        if moved < batch_size:
            for audit_row in await self.records.audit_keys_not_under(current.key_id):
                material = self._unwrap_audit_key(root, audit_row)
                moved += await self.records.move_audit_key_root(
                    audit_row,
                    root_key_id=current.key_id,
                    wrapped=envelope.wrap_audit_key(
                        current, version=audit_row.version, material=material
                    ),
                )
        usage = await self.records.root_key_usage()
        remaining = sum(count for key_id, count in usage.items() if key_id != current.key_id)
        await self._append(
            self.session,
            root,
            _Fields(
                action=ROTATE_ROOT_ACTION,
                outcome="ok",
                reason=f"{moved} moved, {remaining} left"[:32],
                ref=current.key_id,
                subject="operator",
            ),
        )
        logger.info(
            "root key rotation batch",
            extra={"root_key_id": current.key_id, "moved": moved, "remaining": remaining},
        )
        return RootRotationProgress(
            root_key_id=current.key_id, rewrapped=moved, remaining=remaining
        )

    async def root_key_usage(self) -> dict[str, int]:
        """Live wrapped keys per root key id (the operator's view of a rotation)."""
        return await self.records.root_key_usage()

    # -- audit anchors -------------------------------------------------------------------------

    async def anchor_audit_head(self, *, after_seq: int = 0) -> Anchor | None:
        """Write the chain's current head to the anchor store; None if it is not past
        ``after_seq`` (nothing new to anchor). The head's MAC is checked first: a head that
        does not verify is not anchored (503), it is an operator's case."""
        root = self._root()
        if self.anchors is None:
            raise AnchoringOff
        repo = AuditRepository(self.session)
        head = await repo.head()
        if head is None or head.seq <= after_seq:
            return None
        key = await self._audit_key_for_reading(repo, root, head)
        if not envelope.constant_time_equal(head.mac, audit.head_mac(key, head.seq, head.hash)):
            logger.error("audit chain head does not verify; not anchored")
            raise AuditUnavailable(
                "The audit chain's head does not verify, so it was not anchored; verify the "
                "chain (GET /v1/admin/audit/verify)."
            )
        anchor = Anchor(seq=head.seq, hash=head.hash, mac=head.mac, at=self.clock())
        try:
            await self.anchors.append(anchor)
        except OSError as exc:
            logger.error(
                "audit anchor could not be written",
                extra={"source": self.anchors.source, "error_type": type(exc).__name__},
            )
            raise AuditUnavailable("The audit anchor could not be written; try again.") from exc
        logger.info("audit head anchored", extra={"seq": head.seq, "source": self.anchors.source})
        return anchor

    async def _audit(self, root: envelope.RootKeyRing, fields: _Fields) -> None:
        """Append a refusal in a transaction of its own (the request's is rolled back)."""
        async with self.sessionmaker() as session, session.begin():
            await self._append(session, root, fields)
        logger.warning(
            "vault request refused", extra={"action": fields.action, "reason": fields.reason}
        )

    async def _verified_grant(
        self, root: envelope.RootKeyRing, token: str, *, action: str
    ) -> Grant:
        if self.identity is None:
            raise RuntimeError("this vault service checks no grants (no service identity)")
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
        self, root: envelope.RootKeyRing, action: str, reason: str, grant: Grant | None
    ) -> None:
        async with self.sessionmaker() as session, session.begin():
            await self._append(session, root, _grant_fields(action, "refused", reason, grant))
        logger.warning("vault request refused", extra={"action": action, "reason": reason})

    async def _append(self, session: Db, root: envelope.RootKeyRing, fields: _Fields) -> None:
        """Append one audit record, measured (see :mod:`services.vault.metrics`)."""
        with measure_audit_append(
            action=fields.action, outcome=fields.outcome, reason=fields.reason
        ):
            await self._append_record(session, root, fields)

    async def _append_record(
        self, session: Db, root: envelope.RootKeyRing, fields: _Fields
    ) -> None:
        # Synchronous, on the transaction's connection: see AuditRepository.write.
        await AuditRepository(session).write(
            lambda writer: self._append_locked(writer, root, fields)
        )

    def _append_locked(
        self, writer: AuditWriter, root: envelope.RootKeyRing, fields: _Fields
    ) -> None:
        try:
            claimed = writer.lock_and_read_head(timeout_seconds=self.audit_lock_timeout_seconds)
        except DBAPIError as exc:
            raise AuditUnavailable("The audit log is busy; nothing was done. Retry.") from exc
        if claimed is None or claimed.head.seq != claimed.last_seq:
            logger.error("audit chain head does not match its records")
            raise _inconsistent_chain()
        head = claimed.head
        try:
            audit_key = self._audit_key_for_append(writer, root, head)
        except DBAPIError as exc:
            raise AuditUnavailable(
                "The audit log could not record this; nothing was done."
            ) from exc
        # The new head's MAC is made over the old head: were it taken on trust, the next append
        # would launder a head someone with database access moved back over deleted records.
        if head.seq and not (
            claimed.last_hash is not None
            and envelope.constant_time_equal(claimed.last_hash, head.hash)
            and envelope.constant_time_equal(
                head.mac, audit.head_mac(audit_key, head.seq, head.hash)
            )
        ):
            logger.error("audit chain head fails its check")
            raise _inconsistent_chain()
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
            writer.append(chained, head_mac=audit.head_mac(audit_key, entry.seq, chained.hash))
        except DBAPIError as exc:
            raise AuditUnavailable(
                "The audit log could not record this; nothing was done."
            ) from exc

    # -- audit key ---------------------------------------------------------------------------
    # The chain's MAC key is its own key, stored wrapped by the root key (``audit_keys``), so a
    # root-key rotation re-wraps it like a tenant key and every old record keeps verifying. It
    # is made on the first append, under the chain lock: 32 random bytes for a new chain; for a
    # chain an earlier release began (MAC'd with a key derived from the root key) the key that
    # chain was begun with, recognised by the head's MAC. Each process keeps the unwrapped key
    # (as it keeps the root key) once it has read it back from the database, so an append costs
    # no extra statement; a key this transaction only just inserted is not kept until a later
    # read finds it committed (the transaction may still roll back).

    def _audit_key_for_append(
        self, writer: AuditWriter, root: envelope.RootKeyRing, head: audit.ChainHead
    ) -> bytes:
        cached = self.audit_keys.key
        if cached is not None:
            return cached
        row = writer.audit_key(AUDIT_KEY_VERSION)
        if row is not None:
            return self.audit_keys.keep(self._unwrap_audit_key(root, row))
        if head.seq == 0:
            material, origin = envelope.new_key(), AUDIT_KEY_RANDOM
        else:
            legacy = self._legacy_audit_key(root, head)
            if legacy is None:
                logger.error("no audit key, and no known root key's derived key fits the head")
                raise AuditUnavailable(
                    "The audit chain's key is missing, so the vault refuses to act until an "
                    "operator verifies the chain."
                )
            material, origin = legacy, AUDIT_KEY_DERIVED
        writer.insert_audit_key_if_absent(
            AuditKey(
                version=AUDIT_KEY_VERSION,
                wrapped_key=envelope.wrap_audit_key(
                    root.current, version=AUDIT_KEY_VERSION, material=material
                ),
                root_key_id=root.current.key_id,
                origin=origin,
                created_at=self.clock(),
            )
        )
        row = writer.audit_key(AUDIT_KEY_VERSION)
        if row is None:
            raise AuditUnavailable("The audit log could not record this; nothing was done.")
        # Not kept yet: this transaction may roll back (see above).
        return self._unwrap_audit_key(root, row)

    async def _audit_key_for_reading(
        self, repo: AuditRepository, root: envelope.RootKeyRing, head: audit.ChainHead | None
    ) -> bytes:
        cached = self.audit_keys.key
        if cached is not None:
            return cached
        row = await repo.audit_key(AUDIT_KEY_VERSION)
        if row is not None:
            return self.audit_keys.keep(self._unwrap_audit_key(root, row))
        # No key stored yet: an empty chain, or one an earlier release began.
        legacy = self._legacy_audit_key(root, head) if head is not None and head.seq else None
        return legacy if legacy is not None else root.current.audit_key()

    @staticmethod
    def _legacy_audit_key(root: envelope.RootKeyRing, head: audit.ChainHead) -> bytes | None:
        """The derived key (of a known root key) the chain's head MAC was made with, if any."""
        for key in (root.current, *root.previous):
            candidate = key.audit_key()
            if envelope.constant_time_equal(
                head.mac, audit.head_mac(candidate, head.seq, head.hash)
            ):
                return candidate
        return None

    def _unwrap_audit_key(self, root: envelope.RootKeyRing, row: AuditKey) -> bytes:
        key = root.get(row.root_key_id)
        if key is None:
            logger.error(
                "audit key wrapped by an unknown root key", extra={"stored": row.root_key_id}
            )
            raise RootKeyMismatch
        try:
            return envelope.unwrap_audit_key(key, version=row.version, wrapped=row.wrapped_key)
        except envelope.DecryptionError:
            logger.error("audit key failed its integrity check")
            raise AuditUnavailable(
                "The audit key failed its integrity check; the vault refuses to act until an "
                "operator restores it."
            ) from None

    async def verify_audit(self) -> audit.Verification:
        """Recompute the whole chain and check it against the anchors kept outside the database.

        Anchors are read first, then the head: later appends are not judged, and every anchor
        read was written before the head was read, so the chain must reach it.
        """
        root = self._root()
        repo = AuditRepository(self.session)
        anchors: list[Anchor] = []
        if self.anchors is not None:
            try:
                anchors = await self.anchors.read_all()
            except AnchorStoreDamaged:
                logger.error(
                    "audit anchors are not readable", extra={"source": self.anchors.source}
                )
                return audit.Verification(
                    valid=False, records=0, first_invalid=None, problem="anchor_unreadable"
                )
            except OSError as exc:
                raise AuditUnavailable(
                    "The audit anchors cannot be read now; verify again later."
                ) from exc
        head = await repo.head()
        verifier = audit.ChainVerifier(
            await self._audit_key_for_reading(repo, root, head),
            [(a.seq, a.hash, a.mac) for a in anchors],
        )
        limit = head.seq if head is not None else None
        async for batch in repo.all_in_order():
            verifier.feed(r for r in batch if limit is None or r.entry.seq <= limit)
            if limit is not None and batch[-1].entry.seq >= limit:
                break
        result = verifier.finish(head)
        if result.valid and head is not None and await self._head_behind_records(repo):
            # Appends would refuse from here on (the head does not match the records).
            result = audit.Verification(
                valid=False,
                records=result.records,
                first_invalid=head.seq + 1,
                problem="head_behind_records",
                anchors=result.anchors,
            )
        if result.valid and result.records == 0 and await repo.vault_holds_data():
            # Keys and records are only ever written together with their audit record, so an
            # empty chain beside stored data means the log was wiped.
            result = audit.Verification(
                valid=False,
                records=0,
                first_invalid=1,
                problem="audit_log_missing",
                anchors=result.anchors,
            )
        if not result.valid:
            logger.error(
                "audit chain verification failed",
                extra={"first_invalid": result.first_invalid, "problem": result.problem},
            )
        return result

    @staticmethod
    async def _head_behind_records(repo: AuditRepository) -> bool:
        """Whether records lie past the chain head that no append moved it to: the head was set
        back (restored from an older copy, edited). The records past the head read before
        are not judged (appends go on during a verification), but an append commits its record
        and the head together, so the head read after the newest record reaches it."""
        newest = await repo.newest_seq()
        if newest is None:
            return False
        current = await repo.head()
        return current is None or current.seq < newest

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
