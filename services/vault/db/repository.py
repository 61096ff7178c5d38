"""Every query of the vault, on the request's transaction (its dependency commits).

Concurrency, on both backends, without in-process locks:

* Tenant keys are created lazily with ``INSERT ... ON CONFLICT DO NOTHING`` followed by a read,
  so two first seals for one tenant agree on one key.
* A record is inserted with ``ON CONFLICT DO NOTHING`` and the rowcount decides between 201 and
  409, so two seals of the same (tenant, job, purpose, lease) cannot both succeed.
* Audit appends are serialized across processes. On PostgreSQL the transaction takes
  ``pg_advisory_xact_lock(AUDIT_LOCK_KEY)`` (under a ``lock_timeout``) before reading the chain
  head. On SQLite the head is read by a write (a no-op ``UPDATE ... RETURNING`` of the head
  row), which takes the database's single write lock; the lock is held until commit, so no
  other writer can append in between. (pysqlite opens the transaction at the first write, so
  reads before it do not pin an older snapshot.)

The statements of the seal path (the hot path: one per submitted job with confidential data)
are Core statements on the tables, built once at import: an ORM-enabled statement costs about
twice as much CPU to run as the same statement on the table, and building and cache-keying a
statement per call costs about as much as running it (tests/benchmarks/bench_roundtrip.py).

The repositories run on either an ORM ``AsyncSession`` or a Core ``AsyncConnection`` in a
transaction (``engine.begin()``). The routes of sealed records (seal, seal a result, open) use a
connection: an ORM session adds CPU to every statement and to its begin and commit (transaction
snapshot, ORM execute state) that those Core statements never use. Every query those routes
reach is therefore a prebuilt Core statement that runs on either and returns detached row
objects built from the row; the other queries load ORM entities and need a session
(:attr:`VaultRepository.session` refuses a connection, so a route on the wrong one fails loudly).
An audit append runs its statements synchronously in one call (:meth:`AuditRepository.write`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    BigInteger,
    Row,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.vault.db.models import (
    AuditChainHead,
    AuditKey,
    AuditRecord,
    Record,
    SealedRecord,
    TenantKey,
    TenantSealingKey,
)
from services.vault.domain.audit import GENESIS_HASH, AuditEntry, ChainedEntry, ChainHead
from shared.statements import execute, execute_sync

# An arbitrary, fixed 64-bit number naming the vault's audit chain lock in PostgreSQL's shared
# advisory-lock space ("TRVAUDIT" in ASCII), unlikely to collide with any other application.
AUDIT_LOCK_KEY = 0x5452564155444954
# The audit chain has a single head row.
HEAD_ID = 1
# Rows read per round trip when verifying the whole chain: bounded memory, few round trips.
VERIFY_BATCH = 1000
TENANT_KEY_ACTIVE = "active"
# A destroyed key: its wrapped material is erased; data under it answers 410 for ever.
TENANT_KEY_SHREDDED = "shredded"
# An older version an operator retired after a rewrap: kept, but never used to decrypt.
TENANT_KEY_RETIRED = "retired"
# The tombstone version written on shredding, so a tenant without keys is shredded too and a
# later seal cannot silently start a fresh key ring (real versions start at 1).
TOMBSTONE_VERSION = 0

T = TypeVar("T")
# A transaction to run statements on: an ORM session, or a Core connection (module docstring).
Db = AsyncSession | AsyncConnection

_TENANT_KEYS: Table = TenantKey.__table__  # type: ignore[assignment]
_RECORDS: Table = Record.__table__  # type: ignore[assignment]
_SEALED_RECORDS: Table = SealedRecord.__table__  # type: ignore[assignment]
_SEALING_KEYS: Table = TenantSealingKey.__table__  # type: ignore[assignment]
_AUDIT_RECORDS: Table = AuditRecord.__table__  # type: ignore[assignment]
_AUDIT_HEAD: Table = AuditChainHead.__table__  # type: ignore[assignment]
_AUDIT_KEYS: Table = AuditKey.__table__  # type: ignore[assignment]

_ACTIVE_TENANT_KEY = (
    select(_TENANT_KEYS)
    .where(
        _TENANT_KEYS.c.tenant_id == bindparam("tenant_id"),
        _TENANT_KEYS.c.state == TENANT_KEY_ACTIVE,
    )
    .order_by(_TENANT_KEYS.c.version.desc())
    .limit(1)
)
_TENANT_KEY = select(_TENANT_KEYS).where(
    _TENANT_KEYS.c.tenant_id == bindparam("tenant_id"),
    _TENANT_KEYS.c.version == bindparam("version"),
)
# One tenant's key ring changes one change at a time on PostgreSQL (a key's creation, rotation,
# retirement, shredding): a transaction-scoped advisory lock on the tenant id, in this slice of
# the lock space ("TRKY" in ASCII). Seals never take it. SQLite's single write lock does the same.
_TENANT_KEYS_LOCK_SPACE = 0x54524B59
_LOCK_TENANT_KEYS = select(
    func.pg_advisory_xact_lock(
        literal(_TENANT_KEYS_LOCK_SPACE), func.hashtext(bindparam("tenant_id", type_=String))
    )
)
_TENANT_SHREDDED = (
    select(_TENANT_KEYS.c.version)
    .where(
        _TENANT_KEYS.c.tenant_id == bindparam("tenant_id"),
        _TENANT_KEYS.c.state == TENANT_KEY_SHREDDED,
    )
    .limit(1)
)
_INSERT_TENANT_KEY_IF_ABSENT = {
    "postgresql": postgresql.insert(_TENANT_KEYS).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_TENANT_KEYS).on_conflict_do_nothing(),
}
_RECORD = select(_RECORDS).where(_RECORDS.c.id == bindparam("id"))
# What opening a record needs, in one statement instead of three: the record, the key version
# it is sealed under (NULL columns if that row is missing) and whether its tenant is shredded.
_RECORD_KEY = _TENANT_KEYS.alias("record_key")
_SHREDDED_KEY = _TENANT_KEYS.alias("shredded_key")
_RECORD_TO_OPEN = (
    select(
        _RECORDS,
        _RECORD_KEY.c.version.label("key_row_version"),
        _RECORD_KEY.c.wrapped_key.label("key_wrapped_key"),
        _RECORD_KEY.c.root_key_id.label("key_root_key_id"),
        _RECORD_KEY.c.state.label("key_state"),
        _RECORD_KEY.c.created_at.label("key_created_at"),
        exists()
        .where(
            _SHREDDED_KEY.c.tenant_id == _RECORDS.c.tenant_id,
            _SHREDDED_KEY.c.state == TENANT_KEY_SHREDDED,
        )
        .label("tenant_shredded"),
    )
    .select_from(
        _RECORDS.outerjoin(
            _RECORD_KEY,
            and_(
                _RECORD_KEY.c.tenant_id == _RECORDS.c.tenant_id,
                _RECORD_KEY.c.version == _RECORDS.c.key_version,
            ),
        )
    )
    .where(_RECORDS.c.id == bindparam("id"))
)
_RECORD_COLUMNS = tuple(column.name for column in _RECORDS.columns)
_RECORD_FOR = select(_RECORDS).where(
    _RECORDS.c.tenant_id == bindparam("tenant_id"),
    _RECORDS.c.job_id == bindparam("job_id"),
    _RECORDS.c.purpose == bindparam("purpose"),
    _RECORDS.c.lease == bindparam("lease"),
)


def _key_in_use(keys: Table, *conditions: Any) -> Any:
    """``EXISTS`` an active key row matching ``conditions``, share-locked on PostgreSQL.

    The guard of every write that puts data under a key: the key was read earlier, as a plain
    read, and may have been retired or shredded since. Retiring and shredding update the key's
    row before they count or erase anything, so on PostgreSQL this lock waits for them to
    commit and then re-checks the state on the updated row, and they in turn wait for a write
    that holds it; on SQLite the database's single write lock orders the two. (SQLite renders no
    ``FOR SHARE``.)
    """
    return exists(
        select(keys.c.tenant_id)
        .where(keys.c.state == TENANT_KEY_ACTIVE, *conditions)
        .with_for_update(read=True)
    )


def _insert_if_key_in_use(
    insert_into: Callable[[Table], postgresql.Insert | sqlite.Insert],
    table: Table,
    keys: Table,
    *conditions: Any,
) -> postgresql.Insert | sqlite.Insert:
    """``INSERT ... SELECT <values> WHERE <the key is in use> ON CONFLICT DO NOTHING``: no row
    is written, and the rowcount is 0, for a conflict or for a key gone since it was read."""
    values = select(*(bindparam(column.name, type_=column.type) for column in table.columns))
    return (
        insert_into(table)
        .from_select(
            [column.name for column in table.columns], values.where(_key_in_use(keys, *conditions))
        )
        .on_conflict_do_nothing()
    )


_DIALECT_INSERTS: tuple[tuple[str, Callable[[Table], postgresql.Insert | sqlite.Insert]], ...] = (
    ("postgresql", postgresql.insert),
    ("sqlite", sqlite.insert),
)
_RECORD_KEY_IN_USE = (
    _TENANT_KEYS.c.tenant_id == bindparam("tenant_id"),
    _TENANT_KEYS.c.version == bindparam("key_version"),
)
_INSERT_RECORD_IF_ABSENT = {
    name: _insert_if_key_in_use(insert_into, _RECORDS, _TENANT_KEYS, *_RECORD_KEY_IN_USE)
    for name, insert_into in _DIALECT_INSERTS
}
_SEALED_KEY_IN_USE = (
    _SEALING_KEYS.c.tenant_id == bindparam("tenant_id"),
    _SEALING_KEYS.c.key_id == bindparam("key_id"),
)
_INSERT_SEALED_IF_ABSENT = {
    name: _insert_if_key_in_use(insert_into, _SEALED_RECORDS, _SEALING_KEYS, *_SEALED_KEY_IN_USE)
    for name, insert_into in _DIALECT_INSERTS
}
_SEALED_RECORD = select(_SEALED_RECORDS).where(_SEALED_RECORDS.c.id == bindparam("id"))
_SEALING_KEY = select(_SEALING_KEYS).where(
    _SEALING_KEYS.c.tenant_id == bindparam("tenant_id"),
    _SEALING_KEYS.c.key_id == bindparam("key_id"),
)
_AUDIT_KEY = select(_AUDIT_KEYS).where(_AUDIT_KEYS.c.version == bindparam("version"))
_INSERT_AUDIT_KEY_IF_ABSENT = {
    "postgresql": postgresql.insert(_AUDIT_KEYS).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_AUDIT_KEYS).on_conflict_do_nothing(),
}
_INSERT_HEAD_IF_ABSENT = {
    "postgresql": postgresql.insert(_AUDIT_HEAD).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_AUDIT_HEAD).on_conflict_do_nothing(),
}
# The lock under this transaction's lock_timeout, in one round trip instead of a SET LOCAL and
# then the lock: the lock is taken on the CTE's row, so the setting is made before the wait.
# WITH timeout AS MATERIALIZED (SELECT set_config('lock_timeout', :milliseconds, true))
# SELECT pg_advisory_xact_lock(<key>) FROM timeout
_ADVISORY_LOCK_WITHIN_TIMEOUT = select(
    func.pg_advisory_xact_lock(literal(AUDIT_LOCK_KEY, BigInteger))
).select_from(
    select(
        func.set_config(
            literal("lock_timeout", String), bindparam("milliseconds", type_=String), true()
        ).label("setting")
    )
    .cte("timeout")
    .prefix_with("MATERIALIZED")
)
# The no-op update is the write that takes SQLite's lock (see the module docstring).
_CLAIM_HEAD = (
    update(_AUDIT_HEAD)
    .where(_AUDIT_HEAD.c.id == HEAD_ID)
    .values(seq=_AUDIT_HEAD.c.seq)
    .returning(
        _AUDIT_HEAD.c.seq,
        _AUDIT_HEAD.c.hash,
        _AUDIT_HEAD.c.mac,
        select(func.max(_AUDIT_RECORDS.c.seq)).scalar_subquery(),
        select(_AUDIT_RECORDS.c.hash)
        .order_by(_AUDIT_RECORDS.c.seq.desc())
        .limit(1)
        .scalar_subquery(),
    )
)
_INSERT_AUDIT_RECORD = insert(_AUDIT_RECORDS)
_MOVE_HEAD = (
    update(_AUDIT_HEAD)
    .where(_AUDIT_HEAD.c.id == HEAD_ID)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"), mac=bindparam("new_mac"))
)
# On PostgreSQL the record and the head move in one statement (a data-modifying CTE): the
# chain's lock is held from the lock statement to the commit, so every round trip inside it
# is time no other append can use. SQLite has no such CTEs, and its statements cost no trip.
_APPEND_AND_MOVE_HEAD = _MOVE_HEAD.add_cte(
    insert(_AUDIT_RECORDS)
    .values({column.name: bindparam(column.name) for column in _AUDIT_RECORDS.columns})
    .cte("appended")
)


class StoredTenantKey(Protocol):
    """A tenant key version as read: a ``TenantKey`` entity or the row of the hot path's
    query, which costs no entity to build (an entity's instrumented set-up was ~5 % of a
    seal's CPU)."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def wrapped_key(self) -> bytes: ...

    @property
    def root_key_id(self) -> str: ...

    @property
    def state(self) -> str: ...


@dataclass(frozen=True, slots=True)
class NewRecord:
    """The values of a record to insert (plain data: no entity is needed to write a row)."""

    id: str
    tenant_id: str
    job_id: str
    purpose: str
    key_version: int
    wrapped_data_key: bytes
    ciphertext: bytes
    subject: str
    created_at: datetime
    lease: str = ""  # a result's lease (shared.result_receipts); '' for job data


@dataclass(frozen=True)
class RecordToOpen:
    """A record, the tenant key version it is sealed under (None if that row is missing), and
    whether its tenant is shredded: detached objects, read in one statement."""

    record: Record
    key: TenantKey | None
    tenant_shredded: bool


def _dialect_name(db: Db) -> str:
    if isinstance(db, AsyncConnection):
        return db.dialect.name
    return db.get_bind().dialect.name


def _orm_session(db: Db) -> AsyncSession:
    """The ORM session the entity-loading queries need; a Core connection is refused."""
    if not isinstance(db, AsyncSession):
        raise TypeError("this query loads ORM entities: it needs an AsyncSession")
    return db


class _Repository:
    """Queries over a session or a plain connection (see :data:`Db`)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self._dialect_cached: str | None = None

    @property
    def session(self) -> AsyncSession:
        return _orm_session(self.db)

    def _dialect(self) -> str:
        if self._dialect_cached is None:
            self._dialect_cached = _dialect_name(self.db)
        return self._dialect_cached


class VaultRepository(_Repository):
    def _insert(
        self, table: type[TenantKey] | type[Record] | type[TenantSealingKey] | type[SealedRecord]
    ) -> postgresql.Insert | sqlite.Insert:
        if self._dialect() == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- tenant keys -----------------------------------------------------------------------

    async def active_tenant_key(self, tenant_id: str) -> StoredTenantKey | None:
        """The newest active key version (its row: the caller only reads it)."""
        result = await execute(self.db, _ACTIVE_TENANT_KEY, {"tenant_id": tenant_id})
        row: StoredTenantKey | None = result.first()
        return row

    async def tenant_key(self, tenant_id: str, version: int) -> StoredTenantKey | None:
        """One key version (its row, like :meth:`active_tenant_key`)."""
        result = await execute(self.db, _TENANT_KEY, {"tenant_id": tenant_id, "version": version})
        row: StoredTenantKey | None = result.first()
        return row

    async def insert_tenant_key_if_absent(
        self, *, tenant_id: str, version: int, wrapped_key: bytes, root_key_id: str, at: datetime
    ) -> None:
        await execute(
            self.db,
            _INSERT_TENANT_KEY_IF_ABSENT[self._dialect()],
            {
                "tenant_id": tenant_id,
                "version": version,
                "wrapped_key": wrapped_key,
                "root_key_id": root_key_id,
                "state": TENANT_KEY_ACTIVE,
                "created_at": at,
            },
        )

    # -- records ----------------------------------------------------------------------------

    async def insert_record_if_absent(self, record: NewRecord) -> bool:
        """Store a sealed record; False if one exists for its (tenant, job, purpose, lease), or
        if its key version is no longer active (see :func:`_key_in_use`)."""
        result = await execute(
            self.db,
            _INSERT_RECORD_IF_ABSENT[self._dialect()],
            {
                "id": record.id,
                "tenant_id": record.tenant_id,
                "job_id": record.job_id,
                "purpose": record.purpose,
                "lease": record.lease,
                "key_version": record.key_version,
                "wrapped_data_key": record.wrapped_data_key,
                "ciphertext": record.ciphertext,
                "subject": record.subject,
                "payload_key_version": None,
                "created_at": record.created_at,
            },
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def record(self, ref: str) -> Record | None:
        """A sealed record (detached: read, never changed through the ORM)."""
        row = (await execute(self.db, _RECORD, {"id": ref})).mappings().first()
        return None if row is None else Record(**row)

    async def record_to_open(self, ref: str) -> RecordToOpen | None:
        """A record with its key version and its tenant's shredded flag (one statement), or
        None if there is no such (vault-sealed) record."""
        row = (await execute(self.db, _RECORD_TO_OPEN, {"id": ref})).mappings().first()
        if row is None:
            return None
        record = Record(**{name: row[name] for name in _RECORD_COLUMNS})
        key = None
        if row["key_row_version"] is not None:
            key = TenantKey(
                tenant_id=record.tenant_id,
                version=row["key_row_version"],
                wrapped_key=row["key_wrapped_key"],
                root_key_id=row["key_root_key_id"],
                state=row["key_state"],
                created_at=row["key_created_at"],
            )
        return RecordToOpen(record=record, key=key, tenant_shredded=bool(row["tenant_shredded"]))

    async def record_for(
        self, *, tenant_id: str, job_id: str, purpose: str, lease: str = ""
    ) -> Record | None:
        parameters = {"tenant_id": tenant_id, "job_id": job_id, "purpose": purpose, "lease": lease}
        result = await execute(self.db, _RECORD_FOR, parameters)
        row = result.mappings().one_or_none()
        return None if row is None else Record(**row)

    # -- client-side sealing: tenant key pairs and sealed envelopes ----------------------------

    async def sealing_keys(self, tenant_id: str) -> Sequence[TenantSealingKey]:
        """The tenant's active sealing keys, newest version first."""
        result = await self.session.execute(
            select(TenantSealingKey)
            .where(
                TenantSealingKey.tenant_id == tenant_id,
                TenantSealingKey.state == TENANT_KEY_ACTIVE,
            )
            .order_by(TenantSealingKey.version.desc())
        )
        return result.scalars().all()

    async def sealing_key(self, tenant_id: str, key_id: str) -> TenantSealingKey | None:
        """One sealing key (detached: read, never changed through the ORM)."""
        result = await execute(self.db, _SEALING_KEY, {"tenant_id": tenant_id, "key_id": key_id})
        row = result.mappings().one_or_none()
        return None if row is None else TenantSealingKey(**row)

    async def insert_sealing_key_if_absent(self, key: TenantSealingKey) -> None:
        """Store a key version unless one exists (a concurrent first request may have won)."""
        statement = (
            self._insert(TenantSealingKey)
            .values(
                tenant_id=key.tenant_id,
                version=key.version,
                key_id=key.key_id,
                public_key=key.public_key,
                wrapped_private_key=key.wrapped_private_key,
                root_key_id=key.root_key_id,
                state=key.state,
                created_at=key.created_at,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "version"])
        )
        await self.session.execute(statement)

    async def insert_sealed_if_absent(self, record: SealedRecord) -> bool:
        """Store an envelope; False if the job (or the client's job reference) already has one,
        or if its sealing key is no longer active (see :func:`_key_in_use`)."""
        result = await execute(
            self.db,
            _INSERT_SEALED_IF_ABSENT[self._dialect()],
            {
                "id": record.id,
                "tenant_id": record.tenant_id,
                "job_id": record.job_id,
                "job_ref": record.job_ref,
                "purpose": record.purpose,
                "lease": record.lease,
                "key_id": record.key_id,
                "envelope": record.envelope,
                "subject": record.subject,
                "created_at": record.created_at,
            },
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def existing_sealed(
        self, *, tenant_id: str, job_id: str, job_ref: str, purpose: str, lease: str = ""
    ) -> SealedRecord | None:
        """The envelope the job, or the client's job reference, already has (if any) under
        ``lease``."""
        result = await self.session.execute(
            select(SealedRecord)
            .where(
                SealedRecord.tenant_id == tenant_id,
                SealedRecord.purpose == purpose,
                SealedRecord.lease == lease,
                (SealedRecord.job_id == job_id) | (SealedRecord.job_ref == job_ref),
            )
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def discard_job_data(
        self, *, tenant_id: str, job_id: str, purpose: str, created_after: datetime
    ) -> list[str]:
        """Delete a job's recent records of ``purpose`` (either kind); their ids."""
        refs: list[str] = []
        for model in (Record, SealedRecord):
            result = await self.session.execute(
                delete(model)
                .where(
                    model.tenant_id == tenant_id,
                    model.job_id == job_id,
                    model.purpose == purpose,
                    model.created_at >= created_after,
                )
                .returning(model.id)
                .execution_options(synchronize_session=False)
            )
            refs.extend(str(ref) for ref in result.scalars())
        return refs

    # -- rotation, rewrap, shredding -------------------------------------------------------

    async def lock_tenant_keys(self, tenant_id: str) -> bool:
        """Take the tenant's key-ring lock to the end of the transaction (PostgreSQL); False
        on SQLite, where the caller takes the database's write lock instead."""
        if self._dialect() != "postgresql":
            return False
        await execute(self.db, _LOCK_TENANT_KEYS, {"tenant_id": tenant_id})
        return True

    async def tenant_shredded(self, tenant_id: str) -> bool:
        result = await execute(self.db, _TENANT_SHREDDED, {"tenant_id": tenant_id})
        return result.first() is not None

    async def newest_versions(self, tenant_id: str) -> tuple[int, int]:
        """The highest tenant key version and sealing key version (0 when none)."""
        keys = await self.session.execute(
            select(func.max(TenantKey.version)).where(TenantKey.tenant_id == tenant_id)
        )
        sealing = await self.session.execute(
            select(func.max(TenantSealingKey.version)).where(
                TenantSealingKey.tenant_id == tenant_id
            )
        )
        return int(keys.scalar_one() or 0), int(sealing.scalar_one() or 0)

    async def records_before_version(
        self, tenant_id: str, version: int, *, limit: int
    ) -> Sequence[Record]:
        result = await self.session.execute(
            select(Record)
            .where(Record.tenant_id == tenant_id, Record.key_version < version)
            .order_by(Record.id)
            .limit(limit)
        )
        return result.scalars().all()

    async def sealed_not_on_key(
        self, tenant_id: str, key_id: str, *, limit: int
    ) -> Sequence[SealedRecord]:
        result = await self.session.execute(
            select(SealedRecord)
            .where(SealedRecord.tenant_id == tenant_id, SealedRecord.key_id != key_id)
            .order_by(SealedRecord.id)
            .limit(limit)
        )
        return result.scalars().all()

    async def count_to_rewrap(self, tenant_id: str, version: int, key_id: str | None) -> int:
        records = await self.session.execute(
            select(func.count())
            .select_from(Record)
            .where(Record.tenant_id == tenant_id, Record.key_version < version)
        )
        count = int(records.scalar_one())
        if key_id is not None:
            sealed = await self.session.execute(
                select(func.count())
                .select_from(SealedRecord)
                .where(SealedRecord.tenant_id == tenant_id, SealedRecord.key_id != key_id)
            )
            count += int(sealed.scalar_one())
        return count

    async def move_record_key(
        self, record: Record, *, from_version: int, to_version: int, wrapped: bytes
    ) -> bool:
        """Compare-and-set: False if another rewrap moved the record first."""
        result = await self.session.execute(
            update(Record)
            .where(Record.id == record.id, Record.key_version == from_version)
            .values(
                key_version=to_version,
                wrapped_data_key=wrapped,
                payload_key_version=record.payload_key_version or from_version,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def move_sealed_key(
        self, record: SealedRecord, *, from_key_id: str, to_key_id: str, envelope: str
    ) -> bool:
        result = await self.session.execute(
            update(SealedRecord)
            .where(SealedRecord.id == record.id, SealedRecord.key_id == from_key_id)
            .values(key_id=to_key_id, envelope=envelope)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def _lock_key_rows(
        self, tenant_id: str, *, below: int | None = None, sealing_below: int | None = None
    ) -> None:
        """Lock the tenant's key rows (those below the given versions) in version order
        (PostgreSQL) before an update of several of them. An UPDATE locks rows in the order it
        finds them on disk, and root-key rotation locks them one by one in version order:
        without this the two could each hold a row the other needs (a deadlock, one of them
        aborted)."""
        if self._dialect() != "postgresql":
            return
        for keys, bound in ((_TENANT_KEYS, below), (_SEALING_KEYS, sealing_below)):
            rows = select(keys.c.version).where(keys.c.tenant_id == tenant_id)
            if bound is not None:
                rows = rows.where(keys.c.version < bound)
            await self.session.execute(
                rows.order_by(keys.c.version).with_for_update(key_share=True)
            )

    async def retire_older(self, tenant_id: str, *, key_version: int, sealing_version: int) -> int:
        """Retire every active version below the given ones; returns how many were retired."""
        await self._lock_key_rows(tenant_id, below=key_version, sealing_below=sealing_version)
        keys = await self.session.execute(
            update(TenantKey)
            .where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.version < key_version,
                TenantKey.state == TENANT_KEY_ACTIVE,
            )
            .values(state=TENANT_KEY_RETIRED)
            .execution_options(synchronize_session=False)
        )
        sealing = await self.session.execute(
            update(TenantSealingKey)
            .where(
                TenantSealingKey.tenant_id == tenant_id,
                TenantSealingKey.version < sealing_version,
                TenantSealingKey.state == TENANT_KEY_ACTIVE,
            )
            .values(state=TENANT_KEY_RETIRED)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(keys, "rowcount", 0) or 0) + int(getattr(sealing, "rowcount", 0) or 0)

    async def shred(self, tenant_id: str, *, root_key_id: str, at: datetime) -> None:
        """Erase every key of the tenant (wrapped material overwritten) and leave a tombstone."""
        await self._lock_key_rows(tenant_id)
        await self.session.execute(
            update(TenantKey)
            .where(TenantKey.tenant_id == tenant_id)
            .values(wrapped_key=b"", state=TENANT_KEY_SHREDDED)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(
            update(TenantSealingKey)
            .where(TenantSealingKey.tenant_id == tenant_id)
            .values(wrapped_private_key=b"", state=TENANT_KEY_SHREDDED)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(
            self._insert(TenantKey)
            .values(
                tenant_id=tenant_id,
                version=TOMBSTONE_VERSION,
                wrapped_key=b"",
                root_key_id=root_key_id,
                state=TENANT_KEY_SHREDDED,
                created_at=at,
            )
            .on_conflict_do_nothing()
        )

    async def sealed_record(self, ref: str) -> SealedRecord | None:
        """A client-sealed record (detached: read, never changed through the ORM)."""
        row = (await execute(self.db, _SEALED_RECORD, {"id": ref})).mappings().first()
        return None if row is None else SealedRecord(**row)

    # -- root-key rotation ------------------------------------------------------------------
    # Every wrapped key names its root key; rotation moves the rows not under the current one
    # with compare-and-set updates (root key id and state unchanged since read), so it can run
    # beside live traffic, be interrupted, and be resumed or repeated by another process. A row
    # shredded or retired meanwhile is left alone by the update (its state changed), so shredded
    # material is never written back; a retired one is picked up by the next batch.

    async def tenant_keys_not_under(self, root_key_id: str, *, limit: int) -> Sequence[TenantKey]:
        result = await self.session.execute(
            select(TenantKey)
            .where(TenantKey.root_key_id != root_key_id, TenantKey.state != TENANT_KEY_SHREDDED)
            .order_by(TenantKey.tenant_id, TenantKey.version)
            .limit(limit)
        )
        return result.scalars().all()

    async def sealing_keys_not_under(
        self, root_key_id: str, *, limit: int
    ) -> Sequence[TenantSealingKey]:
        result = await self.session.execute(
            select(TenantSealingKey)
            .where(
                TenantSealingKey.root_key_id != root_key_id,
                TenantSealingKey.state != TENANT_KEY_SHREDDED,
            )
            .order_by(TenantSealingKey.tenant_id, TenantSealingKey.version)
            .limit(limit)
        )
        return result.scalars().all()

    async def audit_keys_not_under(self, root_key_id: str) -> Sequence[AuditKey]:
        result = await self.session.execute(
            select(AuditKey).where(AuditKey.root_key_id != root_key_id).order_by(AuditKey.version)
        )
        return result.scalars().all()

    async def move_tenant_key_root(
        self, row: TenantKey, *, root_key_id: str, wrapped: bytes
    ) -> bool:
        result = await self.session.execute(
            update(TenantKey)
            .where(
                TenantKey.tenant_id == row.tenant_id,
                TenantKey.version == row.version,
                TenantKey.root_key_id == row.root_key_id,
                TenantKey.state == row.state,
            )
            .values(wrapped_key=wrapped, root_key_id=root_key_id)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def move_sealing_key_root(
        self, row: TenantSealingKey, *, root_key_id: str, wrapped: bytes
    ) -> bool:
        result = await self.session.execute(
            update(TenantSealingKey)
            .where(
                TenantSealingKey.tenant_id == row.tenant_id,
                TenantSealingKey.version == row.version,
                TenantSealingKey.root_key_id == row.root_key_id,
                TenantSealingKey.state == row.state,
            )
            .values(wrapped_private_key=wrapped, root_key_id=root_key_id)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def move_audit_key_root(self, row: AuditKey, *, root_key_id: str, wrapped: bytes) -> bool:
        result = await self.session.execute(
            update(AuditKey)
            .where(AuditKey.version == row.version, AuditKey.root_key_id == row.root_key_id)
            .values(wrapped_key=wrapped, root_key_id=root_key_id)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def root_key_usage(self) -> dict[str, int]:
        """How many live wrapped keys (tenant, sealing, audit) each root key id wraps."""
        usage: dict[str, int] = {}
        queries = (
            select(TenantKey.root_key_id, func.count())
            .where(TenantKey.state != TENANT_KEY_SHREDDED)
            .group_by(TenantKey.root_key_id),
            select(TenantSealingKey.root_key_id, func.count())
            .where(TenantSealingKey.state != TENANT_KEY_SHREDDED)
            .group_by(TenantSealingKey.root_key_id),
            select(AuditKey.root_key_id, func.count()).group_by(AuditKey.root_key_id),
        )
        for query in queries:
            for root_key_id, count in (await self.session.execute(query)).all():
                usage[str(root_key_id)] = usage.get(str(root_key_id), 0) + int(count)
        return usage


class AuditRepository(_Repository):
    async def write(self, work: Callable[[AuditWriter], T]) -> T:
        """Run ``work`` (an append: lock, read the head, write) on this transaction's
        connection, synchronously, in one hop to SQLAlchemy's worker greenlet instead of one
        per statement (each hop costs CPU, and an append runs three to five statements)."""
        dialect = self._dialect()
        if isinstance(self.db, AsyncConnection):
            return await self.db.run_sync(lambda connection: work(AuditWriter(connection, dialect)))
        return await self.db.run_sync(
            lambda session: work(AuditWriter(session.connection(), dialect))
        )

    async def audit_key(self, version: int) -> AuditKey | None:
        """The stored audit key version, read afresh (detached: never changed via the ORM)."""
        row = (await execute(self.db, _AUDIT_KEY, {"version": version})).mappings().first()
        return None if row is None else AuditKey(**row)

    async def vault_holds_data(self) -> bool:
        """Whether any key or sealed record exists: each was audited when it was made."""
        for model in (TenantKey, Record, SealedRecord, TenantSealingKey):
            if await self.session.scalar(select(model).limit(1)) is not None:
                return True
        return False

    async def newest_seq(self) -> int | None:
        """The highest sequence number in the records (None for an empty log)."""
        newest: int | None = await self.session.scalar(select(func.max(AuditRecord.seq)))
        return newest

    async def head(self) -> ChainHead | None:
        row = await self.session.get(AuditChainHead, HEAD_ID, populate_existing=True)
        if row is None:
            return None
        return ChainHead(seq=row.seq, hash=row.hash, mac=row.mac)

    async def page(
        self, *, tenant_id: str | None, limit: int, before_seq: int | None
    ) -> Sequence[AuditRecord]:
        """Newest first; ``limit + 1`` rows are asked for so the caller knows if more remain."""
        query = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(limit + 1)
        if tenant_id is not None:
            query = query.where(AuditRecord.tenant_id == tenant_id)
        if before_seq is not None:
            query = query.where(AuditRecord.seq < before_seq)
        return (await self.session.execute(query)).scalars().all()

    async def all_in_order(self) -> AsyncIterator[list[ChainedEntry]]:
        """The whole chain, oldest first, in batches (keyset pagination on seq).

        Core rows, not ORM objects: verifying a long chain must not fill the identity map.
        """
        table = AuditRecord.__table__
        after = 0
        while True:
            result = await self.session.execute(
                select(table).where(table.c.seq > after).order_by(table.c.seq).limit(VERIFY_BATCH)
            )
            rows = result.all()
            if not rows:
                return
            yield [to_chained(row) for row in rows]
            after = rows[-1].seq


@dataclass(frozen=True)
class ClaimedHead:
    """What an append reads under the chain's lock."""

    head: ChainHead
    # The last record's seq (0 for none) and hash (None for none): both must agree with the
    # head before it moves.
    last_seq: int
    last_hash: str | None


class AuditWriter:
    """The statements of one audit append, on a synchronous connection inside
    :meth:`AuditRepository.write` (the chain's lock is the transaction's, see the module
    docstring)."""

    def __init__(self, connection: Connection, dialect: str) -> None:
        self.connection = connection
        self.dialect = dialect

    def lock_and_read_head(self, *, timeout_seconds: float) -> ClaimedHead | None:
        """Take the append lock (see the module docstring); the head, and the last record's seq
        and hash (None only if the head row vanishes again as soon as it is made).

        One statement in the common case: a no-op ``UPDATE`` of the head row that returns it,
        ``max(seq)`` of the records and the last record's hash. The update is the write that
        takes SQLite's lock, and on PostgreSQL a row lock under the advisory one. The head row
        is created on first use.
        """
        if self.dialect == "postgresql":
            # lock_timeout bounds the wait: a stuck appender makes others fail fast (503).
            milliseconds = max(1, int(timeout_seconds * 1000))
            execute_sync(
                self.connection, _ADVISORY_LOCK_WITHIN_TIMEOUT, {"milliseconds": str(milliseconds)}
            )
        claimed = self._claim_head()
        if claimed is None:
            execute_sync(
                self.connection,
                _INSERT_HEAD_IF_ABSENT[self.dialect],
                {"id": HEAD_ID, "seq": 0, "hash": GENESIS_HASH, "mac": ""},
            )
            claimed = self._claim_head()
        return claimed

    def _claim_head(self) -> ClaimedHead | None:
        row = (execute_sync(self.connection, _CLAIM_HEAD)).first()
        if row is None:
            return None
        return ClaimedHead(
            head=ChainHead(seq=row[0], hash=row[1], mac=row[2]),
            last_seq=int(row[3] or 0),
            last_hash=row[4],
        )

    def audit_key(self, version: int) -> AuditKey | None:
        """The stored audit key version, read afresh (detached: never changed via the ORM)."""
        row = (execute_sync(self.connection, _AUDIT_KEY, {"version": version})).mappings().first()
        return None if row is None else AuditKey(**row)

    def insert_audit_key_if_absent(self, key: AuditKey) -> None:
        execute_sync(
            self.connection,
            _INSERT_AUDIT_KEY_IF_ABSENT[self.dialect],
            {
                "version": key.version,
                "wrapped_key": key.wrapped_key,
                "root_key_id": key.root_key_id,
                "origin": key.origin,
                "created_at": key.created_at,
            },
        )

    def append(self, chained: ChainedEntry, *, head_mac: str) -> None:
        entry = chained.entry
        record = {
            "seq": entry.seq,
            "at": entry.at,
            "action": entry.action,
            "outcome": entry.outcome,
            "reason": entry.reason,
            "tenant_id": entry.tenant_id,
            "job_id": entry.job_id,
            "ref": entry.ref,
            "subject": entry.subject,
            "actor": entry.actor,
            "grant_id": entry.grant_id,
            "prev_hash": chained.prev_hash,
            "hash": chained.hash,
        }
        head = {"new_seq": entry.seq, "new_hash": chained.hash, "new_mac": head_mac}
        if self.dialect == "postgresql":
            execute_sync(self.connection, _APPEND_AND_MOVE_HEAD, {**record, **head})
        else:
            execute_sync(self.connection, _INSERT_AUDIT_RECORD, record)
            execute_sync(self.connection, _MOVE_HEAD, head)


def to_chained(row: AuditRecord | Row[Any]) -> ChainedEntry:
    return ChainedEntry(
        entry=AuditEntry(
            seq=row.seq,
            at=row.at,
            action=row.action,
            outcome=row.outcome,
            reason=row.reason,
            tenant_id=row.tenant_id,
            job_id=row.job_id,
            ref=row.ref,
            subject=row.subject,
            actor=row.actor,
            grant_id=row.grant_id,
        ),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
