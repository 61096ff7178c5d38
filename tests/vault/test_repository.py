"""The vault's database layer on SQLite and PostgreSQL: schema, races and the audit chain lock.

Several engines on one database stand in for several vault processes: each has its own pool,
so nothing in-process can serialize them; only the database can.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from sqlalchemy import delete, func, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.vault.db.migrate import SCRIPT_LOCATION, VERSION_TABLE
from services.vault.db.models import (
    AuditChainHead,
    AuditRecord,
    Base,
    Record,
    SealedRecord,
    TenantKey,
    TenantSealingKey,
)
from services.vault.db.repository import (
    AUDIT_LOCK_KEY,
    HEAD_ID,
    TENANT_KEY_ACTIVE,
    TENANT_KEY_SHREDDED,
    AuditRepository,
    Db,
    NewRecord,
    VaultRepository,
)
from services.vault.domain.envelope import RootKey, RootKeyRing
from services.vault.domain.errors import AuditUnavailable, RecordExists, TenantShredded
from services.vault.service import SealResult, VaultService
from shared import sealed_envelope as se
from shared.db import (
    alembic_config,
    create_engine,
    create_sessionmaker,
    transaction_scope,
    utcnow,
)
from shared.service_auth import ServiceIdentity
from tests.vault.factories import make_grant, new_uuid


@pytest.fixture
async def engines(databases: dict[str, str]) -> AsyncIterator[list[AsyncEngine]]:
    created = [create_engine(databases["vault"]) for _ in range(3)]
    try:
        yield created
    finally:
        for engine in created:
            await engine.dispose()


@pytest.fixture(scope="module")
def root_key() -> RootKey:
    return RootKey(os.urandom(32))


@pytest.fixture(scope="session")
def vault_identity(keys_dir: Path) -> ServiceIdentity:
    return ServiceIdentity.load(name="vault", keys_dir=keys_dir, peers=("gateway", "router"))


def _service(
    session: Db,
    maker: async_sessionmaker[AsyncSession],
    root_key: RootKey | RootKeyRing,
    identity: ServiceIdentity,
    timeout: float = 20.0,
) -> VaultService:
    return VaultService(
        session=session,
        sessionmaker=maker,
        root_key=root_key,
        identity=identity,
        actor="gateway",
        audit_lock_timeout_seconds=timeout,
    )


async def _seal(
    engine: AsyncEngine, root_key: RootKey, identity: ServiceIdentity, **fields: Any
) -> SealResult:
    """One seal in its own committed transaction on a Core connection, as the route does it."""
    maker = create_sessionmaker(engine)
    async with transaction_scope(engine) as connection:
        return await _service(connection, maker, root_key, identity).seal(
            purpose="job", subject=f"tenant:{fields['tenant_id']}", **fields
        )


async def _open(
    engine: AsyncEngine, root_key: RootKey, identity: ServiceIdentity, token: str
) -> Any:
    maker = create_sessionmaker(engine)
    async with engine.begin() as connection:
        return await _service(connection, maker, root_key, identity).open(token=token)


async def _verify(engine: AsyncEngine, root_key: RootKey, identity: ServiceIdentity) -> Any:
    maker = create_sessionmaker(engine)
    async with maker() as session:
        return await _service(session, maker, root_key, identity).verify_audit()


async def _count(engine: AsyncEngine, model: type[Any]) -> int:
    async with create_sessionmaker(engine)() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_migrations_create_exactly_the_models(databases):
    engine = create_engine(databases["vault"])

    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_the_lease_migration_keeps_the_records_and_goes_back_down(
    databases, root_key, vault_identity
):
    """0004 (one result per lease): records survive the way down and up (lease ''), and the
    downgrade refuses, changing nothing, while a job has results under two leases."""
    url = databases["vault"]
    config = alembic_config(
        script_location=SCRIPT_LOCATION, database_url=url, version_table=VERSION_TABLE
    )
    engine = create_engine(url)

    async def schema() -> tuple[list[str], list[str]]:
        await engine.dispose()  # the schema changed under the pool
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: (
                    [c["name"] for c in inspect(sync).get_columns("records")],
                    sorted(inspect(sync).get_table_names()),
                )
            )

    async def seal_result(tenant_id: str, job_id: str, lease: str) -> SealResult:
        maker = create_sessionmaker(engine)
        async with transaction_scope(engine) as connection:
            return await _service(connection, maker, root_key, vault_identity).seal(
                tenant_id=tenant_id,
                job_id=job_id,
                purpose="result",
                data={"lease": lease},
                subject="member:m",
                lease=lease,
            )

    try:
        tenant_id, job_id = new_uuid(), new_uuid()
        job: dict[str, Any] = {"tenant_id": tenant_id, "job_id": job_id, "data": {"n": 1}}
        sealed = await _seal(engine, root_key, vault_identity, **job)
        await asyncio.to_thread(command.downgrade, config, "0003")
        assert "lease" not in (await schema())[0]
        await asyncio.to_thread(command.upgrade, config, "head")
        columns, tables = await schema()
        assert "lease" in columns
        async with engine.connect() as connection:
            kept = (await connection.execute(select(Record.id, Record.lease))).all()
        assert [tuple(row) for row in kept] == [(sealed.ref, "")]
        with pytest.raises(RecordExists):  # still one job record per job
            await _seal(engine, root_key, vault_identity, **{**job, "data": {"n": 2}})

        first = await seal_result(tenant_id, job_id, "2026-11-29T09:00:00.000000Z#2")
        await seal_result(tenant_id, job_id, "2026-11-29T09:05:00.000000Z#2")
        with pytest.raises(RuntimeError, match="results under several leases"):
            await asyncio.to_thread(command.downgrade, config, "0003")
        assert await schema() == (columns, tables)  # nothing changed, nothing left behind
        async with engine.begin() as connection:
            await connection.execute(delete(Record).where(Record.id == first.ref))
        await asyncio.to_thread(command.downgrade, config, "0003")
        await asyncio.to_thread(command.upgrade, config, "head")
        await engine.dispose()
        assert (await _seal(engine, root_key, vault_identity, **job)).ref == sealed.ref
    finally:
        await engine.dispose()


async def test_concurrent_seals_from_several_processes_keep_one_chain(
    engines, root_key, vault_identity
):
    tenant_id = new_uuid()  # one tenant: its key is also created under the race
    per_engine = 8
    tasks = [
        _seal(
            engine, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data={"n": n}
        )
        for engine in engines
        for n in range(per_engine)
    ]
    results = await asyncio.gather(*tasks)
    total = len(engines) * per_engine
    assert len({r.ref for r in results}) == total
    assert {r.key_version for r in results} == {1}

    engine = engines[0]
    assert await _count(engine, TenantKey) == 1
    assert await _count(engine, Record) == total
    async with create_sessionmaker(engine)() as session:
        seqs = (await session.execute(select(AuditRecord.seq).order_by(AuditRecord.seq))).scalars()
        assert list(seqs) == list(range(1, total + 1))
    verification = await _verify(engine, root_key, vault_identity)
    assert (verification.valid, verification.records) == (True, total)


async def test_concurrent_opens_refusals_and_seals_keep_one_chain(
    engines, root_key, vault_identity, keys_dir
):
    router = ServiceIdentity.load(name="router", keys_dir=keys_dir, peers=())
    tenant_id, job_id = new_uuid(), new_uuid()
    sealed = await _seal(
        engines[0], root_key, vault_identity, tenant_id=tenant_id, job_id=job_id, data=7
    )
    good = make_grant(router, tenant_id=tenant_id, job_id=job_id, ref=sealed.ref)
    bad = make_grant(router, tenant_id=tenant_id, job_id=new_uuid(), ref=sealed.ref)

    async def attempt(engine: AsyncEngine, token: str) -> Any:
        try:
            return await _open(engine, root_key, vault_identity, token)
        except Exception as exc:  # noqa: BLE001 - the refusal itself is the result here
            return type(exc).__name__

    tasks: list[Any] = []
    for engine in engines:
        tasks += [attempt(engine, good), attempt(engine, bad)]
        tasks.append(
            _seal(engine, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=1)
        )
    outcomes = await asyncio.gather(*tasks)
    assert outcomes.count(7) == 3
    assert outcomes.count("GrantRefused") == 3
    verification = await _verify(engines[1], root_key, vault_identity)
    assert (verification.valid, verification.records) == (True, 1 + 9)


async def test_duplicate_seal_race_stores_one_record(engines, root_key, vault_identity):
    tenant_id, job_id = new_uuid(), new_uuid()
    outcomes = await asyncio.gather(
        *[
            _seal(engine, root_key, vault_identity, tenant_id=tenant_id, job_id=job_id, data=n)
            for n, engine in enumerate(engines * 2)
        ],
        return_exceptions=True,
    )
    assert sum(isinstance(o, SealResult) for o in outcomes) == 1
    assert sum(isinstance(o, RecordExists) for o in outcomes) == len(outcomes) - 1
    assert await _count(engines[0], Record) == 1
    # The seal, and each refusal (other data for the record: a guess, as far as the vault knows).
    assert await _count(engines[0], AuditRecord) == len(outcomes)


async def test_record_insert_and_tenant_key_are_idempotent(engines, root_key, vault_identity):
    tenant_id = new_uuid()
    first = await _seal(
        engines[0], root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=1
    )
    maker = create_sessionmaker(engines[0])
    async with maker() as session, session.begin():
        repo = VaultRepository(session)
        existing = await repo.record(first.ref)
        assert existing is not None
        clone = NewRecord(
            id=new_uuid(),
            tenant_id=existing.tenant_id,
            job_id=existing.job_id,
            purpose="job",
            key_version=1,
            wrapped_data_key=b"x",
            ciphertext=b"y",
            subject="tenant:x",
            created_at=utcnow(),
        )
        assert await repo.insert_record_if_absent(clone) is False
        await repo.insert_tenant_key_if_absent(
            tenant_id=tenant_id, version=1, wrapped_key=b"other", root_key_id="x", at=utcnow()
        )
        key = await repo.active_tenant_key(tenant_id)
        assert key is not None
        assert key.wrapped_key != b"other"
        found = await repo.record_for(tenant_id=tenant_id, job_id=existing.job_id, purpose="job")
        assert found is not None
        assert found.id == existing.id
        assert (
            await repo.record_for(tenant_id=tenant_id, job_id=existing.job_id, purpose="result")
            is None
        )


async def test_hot_path_reads_run_on_a_core_connection(engines, root_key, vault_identity):
    # The seal and open routes run on an AsyncConnection: their reads return detached rows,
    # and the one-statement read for opening sees the key row and a shredding.
    tenant_id, job_id = new_uuid(), new_uuid()
    sealed = await _seal(
        engines[0], root_key, vault_identity, tenant_id=tenant_id, job_id=job_id, data=1
    )
    async with engines[0].begin() as connection:
        repo = VaultRepository(connection)
        opened = await repo.record_to_open(sealed.ref)
        assert opened is not None
        assert (opened.record.id, opened.record.tenant_id, opened.record.job_id) == (
            sealed.ref,
            tenant_id,
            job_id,
        )
        assert opened.key is not None
        assert (opened.key.version, opened.key.state) == (1, TENANT_KEY_ACTIVE)
        assert opened.tenant_shredded is False
        assert await repo.record_to_open(new_uuid()) is None
        record = await repo.record(sealed.ref)
        assert record is not None
        assert record.ciphertext == opened.record.ciphertext
        key = await repo.tenant_key(tenant_id, 1)
        assert key is not None
        assert key.wrapped_key == opened.key.wrapped_key
        assert await repo.tenant_shredded(tenant_id) is False
        assert await repo.sealed_record(sealed.ref) is None
        with pytest.raises(TypeError):  # entity-loading queries need an ORM session
            await repo.sealing_keys(tenant_id)
    async with create_sessionmaker(engines[0])() as session, session.begin():
        await VaultRepository(session).shred(tenant_id, root_key_id=root_key.key_id, at=utcnow())
    async with engines[0].begin() as connection:
        opened = await VaultRepository(connection).record_to_open(sealed.ref)
        assert opened is not None
        assert opened.tenant_shredded is True
        assert opened.key is not None
        assert opened.key.state == TENANT_KEY_SHREDDED


async def test_audit_page_is_newest_first_and_tenant_scoped(engines, root_key, vault_identity):
    mine, other = new_uuid(), new_uuid()
    for tenant in (mine, other, mine, other, mine):
        await _seal(
            engines[0], root_key, vault_identity, tenant_id=tenant, job_id=new_uuid(), data=1
        )
    async with create_sessionmaker(engines[0])() as session:
        repo = AuditRepository(session)
        page = await repo.page(tenant_id=mine, limit=2, before_seq=None)
        assert [r.seq for r in page] == [5, 3, 1]  # limit + 1 rows: the caller sees more remain
        assert [r.seq for r in await repo.page(tenant_id=mine, limit=2, before_seq=3)] == [1]
        assert [r.seq for r in await repo.page(tenant_id=None, limit=10, before_seq=None)] == [
            5,
            4,
            3,
            2,
            1,
        ]


@pytest.mark.postgres_only  # lock_timeout is PostgreSQL's; SQLite writers queue on busy_timeout
async def test_a_stuck_audit_lock_fails_closed_with_503(engines, root_key, vault_identity):
    holder = await engines[0].connect()
    try:
        transaction = await holder.begin()
        await holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
        maker = create_sessionmaker(engines[1])
        with pytest.raises(AuditUnavailable):
            async with maker() as session, session.begin():
                await _service(session, maker, root_key, vault_identity, timeout=0.2).seal(
                    tenant_id=new_uuid(),
                    job_id=new_uuid(),
                    purpose="job",
                    data=1,
                    subject="tenant:x",
                )
        await transaction.rollback()
    finally:
        await holder.close()
    assert await _count(engines[1], Record) == 0
    assert await _count(engines[1], AuditRecord) == 0


# --- shredding against a new key in another replica ---------------------------------------


async def _shred(engine: AsyncEngine, key: RootKey, identity: ServiceIdentity, tenant: str) -> None:
    maker = create_sessionmaker(engine)
    async with maker() as session:
        await _service(session, maker, key, identity).shred(tenant_id=tenant)
        await session.commit()


async def _live_keys(engine: AsyncEngine, tenant_id: str) -> list[tuple[str, int]]:
    """The tenant's keys that still hold material."""
    async with create_sessionmaker(engine)() as session:
        keys = await session.scalars(select(TenantKey).where(TenantKey.tenant_id == tenant_id))
        pairs = await session.scalars(
            select(TenantSealingKey).where(TenantSealingKey.tenant_id == tenant_id)
        )
        return [("tenant", key.version) for key in keys if key.wrapped_key] + [
            ("sealing", pair.version) for pair in pairs if pair.wrapped_private_key
        ]


@dataclass
class _Calls:
    count: int = 0


def _after_read(
    repository: VaultRepository,
    method: str,
    change: Callable[[], Awaitable[Any]],
    *,
    nth: int = 1,
) -> _Calls:
    """Run ``change`` (another replica) right after ``repository.<method>`` answers for the
    ``nth`` time; the calls, counted."""
    read = getattr(repository, method)
    calls = _Calls()

    async def then_change(*args: Any, **kwargs: Any) -> Any:
        calls.count += 1
        answer = await read(*args, **kwargs)
        if calls.count == nth:
            await change()
        return answer

    setattr(repository, method, then_change)
    return calls


@pytest.mark.parametrize("change", ["rotate", "first seal", "first sealing keys"])
async def test_a_shred_racing_a_new_key_leaves_no_live_key(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity, change: str
) -> None:
    here, other = engines[0], engines[1]
    tenant_id = new_uuid()
    if change == "rotate":
        await _seal(here, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=1)
    maker = create_sessionmaker(here)
    async with maker() as session:
        service = _service(session, maker, root_key, vault_identity)
        # Another replica's shred commits right after the first check found the tenant not
        # shredded (a plain read), before a key is written.
        _after_read(
            service.records,
            "tenant_shredded",
            lambda: _shred(other, root_key, vault_identity, tenant_id),
        )
        attempt: Callable[[], Awaitable[Any]] = {
            "rotate": lambda: service.rotate(tenant_id=tenant_id),
            "first seal": lambda: service.seal(
                tenant_id=tenant_id, job_id=new_uuid(), purpose="job", data=1, subject="t"
            ),
            "first sealing keys": lambda: service.sealing_keys(tenant_id=tenant_id),
        }[change]
        with pytest.raises(TenantShredded):
            await attempt()
        await session.commit()  # what a route would do had the change gone through
    assert await _live_keys(here, tenant_id) == []
    with pytest.raises(TenantShredded):
        await _seal(here, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=2)


async def test_a_rotation_committed_while_a_shred_waits_is_shredded_too(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    here, other = engines[0], engines[1]
    tenant_id = new_uuid()
    await _seal(here, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=1)
    maker = create_sessionmaker(here)
    async with maker() as session:
        await _service(session, maker, root_key, vault_identity).rotate(tenant_id=tenant_id)
        shredding = asyncio.create_task(_shred(other, root_key, vault_identity, tenant_id))
        await asyncio.sleep(0.3)
        assert not shredding.done()  # waiting for the rotation's transaction
        await session.commit()
    await shredding
    assert await _live_keys(here, tenant_id) == []


async def test_a_head_set_back_behind_its_records_fails_verification(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    """Appends refuse when the head does not match the records: verification must say so too,
    not judge the chain only up to the head and call it valid."""
    engine = engines[0]
    tenant_id = new_uuid()
    for data in (1, 2):
        await _seal(
            engine, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=data
        )
    maker = create_sessionmaker(engine)
    async with maker() as session:
        older = await session.get(AuditChainHead, HEAD_ID)
        assert older is not None
        saved_seq = older.seq
        saved = {"seq": older.seq, "hash": older.hash, "mac": older.mac}
    await _seal(engine, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=3)
    assert (await _verify(engine, root_key, vault_identity)).valid
    async with maker() as session:
        await session.execute(update(AuditChainHead).values(**saved))  # the head alone restored
        await session.commit()
    verdict = await _verify(engine, root_key, vault_identity)
    assert not verdict.valid
    assert verdict.problem == "head_behind_records"
    assert verdict.first_invalid == saved_seq + 1
    with pytest.raises(AuditUnavailable):
        await _seal(
            engine, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=4
        )


@pytest.mark.parametrize("forged", ["head_mac", "record_hash"])
async def test_a_head_moved_back_over_deleted_records_is_refused_not_re_signed(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity, forged: str
) -> None:
    """Someone with write access to the database, not the audit key, deletes the newest
    records and moves the head back: with a MAC they had to make up, or with an older, real
    head over a record they rewrote. Verification says so, and the next append refuses
    instead of signing a new head over it (which would leave a chain that verifies)."""
    engine = engines[0]
    tenant_id = new_uuid()
    maker = create_sessionmaker(engine)
    for data in range(4):
        await _seal(
            engine, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=data
        )
        if data == 1:
            async with maker() as session:
                real = await session.get(AuditChainHead, HEAD_ID)
                assert real is not None
                older = {"seq": real.seq, "hash": real.hash, "mac": real.mac}
    async with maker() as session:
        await session.execute(delete(AuditRecord).where(AuditRecord.seq > older["seq"]))
        if forged == "head_mac":
            await session.execute(update(AuditChainHead).values({**older, "mac": "00" * 32}))
        else:
            await session.execute(
                update(AuditRecord).where(AuditRecord.seq == older["seq"]).values(hash="ab" * 32)
            )
            await session.execute(update(AuditChainHead).values(**older))
        await session.commit()
    assert not (await _verify(engine, root_key, vault_identity)).valid
    with pytest.raises(AuditUnavailable):
        await _seal(
            engine, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=9
        )
    verdict = await _verify(engine, root_key, vault_identity)
    assert not verdict.valid
    assert verdict.records == older["seq"]  # nothing was appended


# --- two stores of a client-sealed envelope for one job, in two replicas ----------------------


async def _store_sealed(
    engine: AsyncEngine, key: RootKey, identity: ServiceIdentity, **fields: Any
) -> SealResult:
    maker = create_sessionmaker(engine)
    async with maker() as session:
        stored = await _service(session, maker, key, identity).store_sealed(
            subject="tenant", **fields
        )
        await session.commit()
        return stored


@pytest.mark.parametrize("same_envelope", [True, False])
async def test_a_store_that_loses_the_race_for_its_job_answers_as_after_it(
    engines: list[AsyncEngine],
    root_key: RootKey,
    vault_identity: ServiceIdentity,
    same_envelope: bool,
) -> None:
    """Another replica stores an envelope for the job between this store's check and its
    insert: the same envelope is a replay (the first reference), another is 409, audited,
    exactly as when the check had seen it."""
    here, other = engines[0], engines[1]
    tenant_id, job_id = new_uuid(), new_uuid()
    maker = create_sessionmaker(here)
    async with maker() as session:
        keys = await _service(session, maker, root_key, vault_identity).sealing_keys(
            tenant_id=tenant_id
        )
        await session.commit()

    def sealed(data: Any) -> Any:
        return se.seal_json(
            data,
            public_key=X25519PublicKey.from_public_bytes(keys[0].public_key),
            tenant_id=tenant_id,
            job_ref="ref-1",
            key_id=keys[0].key_id,
        ).to_json()

    first = sealed({"n": 1})
    mine = first if same_envelope else sealed({"n": 2})
    async with maker() as session:
        service = _service(session, maker, root_key, vault_identity)
        checks = _after_read(
            service.records,
            "existing_sealed",
            lambda: _store_sealed(
                other,
                root_key,
                vault_identity,
                tenant_id=tenant_id,
                job_id=job_id,
                envelope_json=first,
            ),
        )
        attempt = service.store_sealed(
            tenant_id=tenant_id, job_id=job_id, envelope_json=mine, subject="tenant"
        )
        if same_envelope:
            replayed = await attempt
            await session.commit()
        else:
            with pytest.raises(RecordExists):
                await attempt
    assert checks.count == 2
    async with create_sessionmaker(here)() as session:
        stored = list(await session.scalars(select(SealedRecord)))
        refusals = list(
            await session.scalars(
                select(AuditRecord.reason).where(AuditRecord.outcome == "refused")
            )
        )
        replays = list(
            await session.scalars(select(AuditRecord.ref).where(AuditRecord.reason == "replayed"))
        )
    assert len(stored) == 1
    if same_envelope:
        assert replayed.ref == stored[0].id
        assert refusals == []
        assert replays == [stored[0].id]
    else:
        assert refusals == ["exists"]
        assert replays == []
