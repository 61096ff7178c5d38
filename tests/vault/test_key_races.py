"""Seals racing a retire or a shred of the key they read, on SQLite and PostgreSQL.

A seal reads the tenant's key with a plain read and writes its record later. Another replica
may retire or shred that key in between, or while the record is written and not yet committed.
Data must never end up under a key that can no longer open it: the seal starts again under the
tenant's key as it is now (or is refused for a shredded tenant), and a retire counts every
record that will ever be under what it retires.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.vault.db.models import Record, SealedRecord, TenantKey
from services.vault.db.repository import TENANT_KEY_ACTIVE
from services.vault.domain.envelope import RootKey, RootKeyRing
from services.vault.domain.errors import RewrapPending, TenantShredded, UnknownSealingKey
from services.vault.service import VaultService
from shared import sealed_envelope as se
from shared import sqlite_inline
from shared.db import create_sessionmaker, transaction_scope
from shared.service_auth import ServiceIdentity
from tests.vault.factories import new_uuid
from tests.vault.test_repository import (
    _after_read,
    _seal,
    _service,
    _shred,
    engines,
    root_key,
    vault_identity,
)

__all__ = ["engines", "root_key", "vault_identity"]  # fixtures, used by name


async def _operate(
    engine: AsyncEngine,
    key: RootKey,
    identity: ServiceIdentity,
    step: Callable[[VaultService], Awaitable[Any]],
) -> Any:
    """One operator action, in its own committed transaction (another replica's request)."""
    maker = create_sessionmaker(engine)
    async with maker() as session:
        result = await step(_service(session, maker, key, identity))
        await session.commit()
        return result


async def _rotate_and_rewrap(
    engine: AsyncEngine, key: RootKey, identity: ServiceIdentity, tenant_id: str
) -> None:
    await _operate(engine, key, identity, lambda vault: vault.rotate(tenant_id=tenant_id))
    while (
        await _operate(
            engine,
            key,
            identity,
            lambda vault: vault.rewrap(tenant_id=tenant_id, batch_size=100),
        )
    ).remaining:
        pass


async def _tenant_with_a_record(
    engine: AsyncEngine, key: RootKey, identity: ServiceIdentity
) -> str:
    """A new tenant with one record sealed under its key version 1."""
    tenant_id = new_uuid()
    await _seal(engine, key, identity, tenant_id=tenant_id, job_id=new_uuid(), data=1)
    return tenant_id


async def _retire(engine: AsyncEngine, key: RootKey, identity: ServiceIdentity, tenant: str) -> Any:
    return await _operate(engine, key, identity, lambda vault: vault.retire_older(tenant_id=tenant))


@pytest.fixture(autouse=True)
def sqlite_lock_waits(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when a writer finds SQLite locked: it retries inside this process
    (shared.sqlite_inline), where no other connection can see it wait."""
    waited = asyncio.Event()
    busy = sqlite_inline._is_retryable_busy

    def seen(error: sqlite3.OperationalError) -> bool:
        if retryable := busy(error):
            waited.set()
        return retryable

    monkeypatch.setattr(sqlite_inline, "_is_retryable_busy", seen)
    _LOCK_WAITS[:] = [waited]
    return waited


_LOCK_WAITS: list[asyncio.Event] = []


async def _until_one_waits(engine: AsyncEngine) -> None:
    """Until another transaction on this database waits for a lock: the race the test forces
    has formed. PostgreSQL shows it (``pg_stat_activity``); on SQLite the waiting writer's
    retry is seen in this process (:func:`sqlite_lock_waits`)."""
    if engine.dialect.name != "postgresql":
        [waited] = _LOCK_WAITS
        try:
            await asyncio.wait_for(waited.wait(), timeout=10)
        except TimeoutError:
            raise AssertionError("no writer came to wait for the lock within 10 s") from None
        waited.clear()
        return
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with engine.connect() as connection:
        for _ in range(500):
            if (await connection.execute(waiting)).scalar_one():
                return
            await connection.rollback()  # a fresh snapshot of the activity for the next look
            await asyncio.sleep(0.02)
    raise AssertionError("no transaction came to wait for a lock within 10 s")


async def _key_versions_of(engine: AsyncEngine, model: type[Any], tenant_id: str) -> list[Any]:
    column = model.key_version if model is Record else model.key_id
    async with create_sessionmaker(engine)() as session:
        return list(await session.scalars(select(column).where(model.tenant_id == tenant_id)))


async def _key_states(engine: AsyncEngine, tenant_id: str) -> dict[int, str]:
    async with create_sessionmaker(engine)() as session:
        keys = await session.scalars(select(TenantKey).where(TenantKey.tenant_id == tenant_id))
        return {key.version: key.state for key in keys}


async def test_a_seal_whose_key_is_retired_before_its_write_lands_under_the_newest(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    here, other = engines[0], engines[1]
    tenant_id = await _tenant_with_a_record(here, root_key, vault_identity)

    async def rotate_rewrap_retire() -> None:
        await _rotate_and_rewrap(other, root_key, vault_identity, tenant_id)
        await _retire(other, root_key, vault_identity, tenant_id)

    maker = create_sessionmaker(here)
    async with transaction_scope(here) as connection:
        service = _service(connection, maker, root_key, vault_identity)
        _after_read(service.records, "active_tenant_key", rotate_rewrap_retire)
        sealed = await service.seal(
            tenant_id=tenant_id, job_id=new_uuid(), purpose="job", data=2, subject="t"
        )
    assert sealed.key_version == 2
    assert await _key_states(here, tenant_id) == {1: "retired", 2: TENANT_KEY_ACTIVE}
    assert sorted(await _key_versions_of(here, Record, tenant_id)) == [2, 2]


async def test_a_seal_whose_key_is_shredded_before_its_write_is_refused(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    here, other = engines[0], engines[1]
    tenant_id = await _tenant_with_a_record(here, root_key, vault_identity)
    maker = create_sessionmaker(here)
    async with here.connect() as connection:
        service = _service(connection, maker, root_key, vault_identity)
        _after_read(
            service.records,
            "active_tenant_key",
            lambda: _shred(other, root_key, vault_identity, tenant_id),
        )
        with pytest.raises(TenantShredded):
            await service.seal(
                tenant_id=tenant_id, job_id=new_uuid(), purpose="job", data=2, subject="t"
            )
        await connection.commit()  # what a route would do had the seal gone through
    assert await _key_versions_of(here, Record, tenant_id) == [1]


async def test_a_retire_waits_for_a_seal_in_flight_under_the_older_version(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    """The seal read version 1 before a rotation and a rewrap, and has written its record
    under it, uncommitted, when the retire comes: the retire must count that record."""
    here, other = engines[0], engines[1]
    tenant_id = await _tenant_with_a_record(here, root_key, vault_identity)
    maker = create_sessionmaker(here)
    async with here.connect() as connection:
        service = _service(connection, maker, root_key, vault_identity)
        _after_read(
            service.records,
            "active_tenant_key",
            lambda: _rotate_and_rewrap(other, root_key, vault_identity, tenant_id),
        )
        sealed = await service.seal(
            tenant_id=tenant_id, job_id=new_uuid(), purpose="job", data=2, subject="t"
        )
        assert sealed.key_version == 1
        retiring = asyncio.create_task(_retire(other, root_key, vault_identity, tenant_id))
        await _until_one_waits(here)
        assert not retiring.done()  # waiting for the seal's transaction
        await connection.commit()
    with pytest.raises(RewrapPending):
        await retiring
    assert await _key_states(here, tenant_id) == {1: TENANT_KEY_ACTIVE, 2: TENANT_KEY_ACTIVE}
    assert sorted(await _key_versions_of(here, Record, tenant_id)) == [1, 2]


async def test_an_envelope_whose_sealing_key_is_retired_before_its_write_is_refused(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    here, other = engines[0], engines[1]
    tenant_id = new_uuid()
    first = await _operate(
        here, root_key, vault_identity, lambda vault: vault.sealing_keys(tenant_id=tenant_id)
    )
    envelope = se.seal_json(
        {"n": 1},
        public_key=se.load_public_key(se.b64url_encode(first[0].public_key)),
        tenant_id=tenant_id,
        job_ref="late",
        key_id=first[0].key_id,
    ).to_json()

    async def rotate_rewrap_retire() -> None:
        await _rotate_and_rewrap(other, root_key, vault_identity, tenant_id)
        await _retire(other, root_key, vault_identity, tenant_id)

    maker = create_sessionmaker(here)
    async with maker() as session:
        service = _service(session, maker, root_key, vault_identity)
        _after_read(service.records, "sealing_key", rotate_rewrap_retire)
        with pytest.raises(UnknownSealingKey):
            await service.store_sealed(
                tenant_id=tenant_id, job_id=new_uuid(), envelope_json=envelope, subject="t"
            )
        await session.commit()  # what a route would do had the store gone through
    assert await _key_versions_of(here, SealedRecord, tenant_id) == []


async def test_a_shred_waits_for_a_seal_that_has_written_and_not_yet_audited(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    """The seal holds its key row and next needs the audit chain's lock; the shred must not
    hold that lock while it waits for the key row (on PostgreSQL, a deadlock)."""
    here, other = engines[0], engines[1]
    tenant_id = await _tenant_with_a_record(here, root_key, vault_identity)
    shredding: list[asyncio.Task[None]] = []

    async def shred_meanwhile() -> None:
        shredding.append(asyncio.create_task(_shred(other, root_key, vault_identity, tenant_id)))
        await _until_one_waits(here)
        assert not shredding[0].done()  # waiting for the seal's transaction

    maker = create_sessionmaker(here)
    async with transaction_scope(here) as connection:
        service = _service(connection, maker, root_key, vault_identity)
        insert = service.records.insert_record_if_absent

        async def insert_then_shred(record: Any) -> bool:
            stored = await insert(record)
            await shred_meanwhile()
            return stored

        service.records.insert_record_if_absent = insert_then_shred  # type: ignore[method-assign]
        sealed = await service.seal(
            tenant_id=tenant_id, job_id=new_uuid(), purpose="job", data=2, subject="t"
        )
    assert sealed.key_version == 1
    await shredding[0]
    assert await _key_states(here, tenant_id) == {0: "shredded", 1: "shredded"}


async def test_a_first_seal_making_the_key_and_a_shred_do_not_deadlock(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    """The seal found no key, another replica's first seal then made version 1, and this seal
    holds the tenant's key lock (to make one) when a shred comes: the shred must wait for it
    without holding anything the seal needs next (the key row, the audit chain's lock)."""
    here, other, third = engines
    tenant_id = new_uuid()
    shredding: list[asyncio.Task[None]] = []

    async def shred_meanwhile() -> None:
        shredding.append(asyncio.create_task(_shred(third, root_key, vault_identity, tenant_id)))
        await _until_one_waits(here)
        assert not shredding[0].done()  # waiting for this seal's transaction

    maker = create_sessionmaker(here)
    async with transaction_scope(here) as connection:
        service = _service(connection, maker, root_key, vault_identity)
        _after_read(
            service.records,
            "active_tenant_key",
            lambda: _seal(
                other, root_key, vault_identity, tenant_id=tenant_id, job_id=new_uuid(), data=0
            ),
        )
        # The second check is the one under the tenant's key lock.
        checks = _after_read(service.records, "tenant_shredded", shred_meanwhile, nth=2)
        sealed = await service.seal(
            tenant_id=tenant_id, job_id=new_uuid(), purpose="job", data=1, subject="t"
        )
    assert checks.count == 2
    assert sealed.key_version == 1
    await shredding[0]
    assert await _key_states(here, tenant_id) == {0: "shredded", 1: "shredded"}


async def test_a_rotation_waiting_for_a_shred_is_refused_and_seals_meanwhile_go_through(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    """While a shred holds the tenant's key lock and has not erased yet, a rotation waits for
    it (and then finds the tenant shredded). On PostgreSQL a seal goes through meanwhile under
    the current key (seals do not take that lock); on SQLite it waits for the shred's write
    lock and is then refused like any seal after a shred."""
    postgres = engines[0].dialect.name == "postgresql"
    here, other, third = engines
    tenant_id = await _tenant_with_a_record(here, root_key, vault_identity)
    started: list[asyncio.Task[Any]] = []
    maker = create_sessionmaker(other)
    async with maker() as session:
        service = _service(session, maker, root_key, vault_identity)
        shred = service.records.shred

        async def others_then_shred(tenant_id: str, *, root_key_id: str, at: datetime) -> None:
            started.append(
                asyncio.create_task(
                    _operate(
                        third, root_key, vault_identity, lambda v: v.rotate(tenant_id=tenant_id)
                    )
                )
            )
            started.append(
                asyncio.create_task(
                    _seal(
                        here,
                        root_key,
                        vault_identity,
                        tenant_id=tenant_id,
                        job_id=new_uuid(),
                        data=2,
                    )
                )
            )
            if postgres:  # the seal is not held up by the shred's lock
                await asyncio.wait_for(asyncio.shield(started[1]), timeout=10)
            await _until_one_waits(here)
            assert not started[0].done()  # the rotation waits for the shred
            await shred(tenant_id, root_key_id=root_key_id, at=at)

        service.records.shred = others_then_shred  # type: ignore[method-assign]
        await service.shred(tenant_id=tenant_id)
        await session.commit()
    with pytest.raises(TenantShredded):
        await started[0]
    if postgres:
        assert (await started[1]).key_version == 1
    else:
        with pytest.raises(TenantShredded):
            await started[1]
    assert await _key_states(here, tenant_id) == {0: "shredded", 1: "shredded"}


async def test_a_seal_waiting_for_a_retire_in_flight_lands_under_the_newest(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    """The retire has changed the key rows and not committed when the seal writes: the seal
    waits for it, finds its version retired, and starts again under the newest."""
    here, other, third = engines
    tenant_id = await _tenant_with_a_record(here, root_key, vault_identity)
    retiring: list[asyncio.Task[Any]] = []
    keys_updated = asyncio.Event()

    async def retire_slowly() -> Any:
        maker3 = create_sessionmaker(third)
        async with maker3() as session:
            service3 = _service(session, maker3, root_key, vault_identity)
            count = service3.records.count_to_rewrap
            retire = service3.records.retire_older

            async def retire_and_tell(
                tenant_id: str, *, key_version: int, sealing_version: int
            ) -> int:
                retired = await retire(
                    tenant_id, key_version=key_version, sealing_version=sealing_version
                )
                keys_updated.set()
                return retired

            service3.records.retire_older = retire_and_tell  # type: ignore[method-assign]

            async def count_later(tenant_id: str, version: int, key_id: str | None) -> int:
                await asyncio.sleep(0.6)  # the key rows are updated, uncommitted
                return await count(tenant_id, version, key_id)

            service3.records.count_to_rewrap = count_later  # type: ignore[method-assign]
            result = await service3.retire_older(tenant_id=tenant_id)
            await session.commit()
            return result

    maker = create_sessionmaker(here)
    async with transaction_scope(here) as connection:
        service = _service(connection, maker, root_key, vault_identity)
        _after_read(
            service.records,
            "active_tenant_key",
            lambda: _rotate_and_rewrap(other, root_key, vault_identity, tenant_id),
        )
        insert = service.records.insert_record_if_absent
        answers: list[bool] = []

        async def insert_during_the_retire(record: Any) -> bool:
            if not retiring:
                retiring.append(asyncio.create_task(retire_slowly()))
                await keys_updated.wait()
            answers.append(await insert(record))
            return answers[-1]

        service.records.insert_record_if_absent = insert_during_the_retire  # type: ignore[method-assign]
        sealed = await service.seal(
            tenant_id=tenant_id, job_id=new_uuid(), purpose="job", data=2, subject="t"
        )
    assert answers == [False, True]
    assert sealed.key_version == 2
    assert (await retiring[0]).min_key_version == 2
    assert await _key_states(here, tenant_id) == {1: "retired", 2: TENANT_KEY_ACTIVE}
    assert sorted(await _key_versions_of(here, Record, tenant_id)) == [2, 2]


async def test_a_retire_that_waited_for_a_shred_is_refused(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    here, other = engines[0], engines[1]
    tenant_id = await _tenant_with_a_record(here, root_key, vault_identity)
    maker = create_sessionmaker(here)
    async with maker() as session:
        service = _service(session, maker, root_key, vault_identity)
        _after_read(
            service.records,
            "tenant_shredded",
            lambda: _shred(other, root_key, vault_identity, tenant_id),
        )
        with pytest.raises(TenantShredded):
            await service.retire_older(tenant_id=tenant_id)


@pytest.mark.postgres_only
async def test_a_root_key_rotation_and_a_shred_do_not_deadlock(
    engines: list[AsyncEngine], root_key: RootKey, vault_identity: ServiceIdentity
) -> None:
    """Root rotation locks key rows one at a time in version order; a shred updates all of a
    tenant's rows, which an UPDATE locks in the order they sit on disk. With version 1 moved
    behind version 2 on disk (as any update of it leaves it), the two must not deadlock."""
    here, other, third = engines
    tenant_id = await _tenant_with_a_record(here, root_key, vault_identity)
    await _operate(here, root_key, vault_identity, lambda vault: vault.rotate(tenant_id=tenant_id))
    async with transaction_scope(here) as connection:  # fill the page, then rewrite version 1
        await connection.execute(
            text(
                "INSERT INTO tenant_keys (tenant_id, version, wrapped_key, root_key_id, state,"
                " created_at) SELECT gen_random_uuid()::text, 1, decode(repeat('ab', 60), 'hex'),"
                " 'filler', 'shredded', now() FROM generate_series(1, 300)"
            )
        )
    async with transaction_scope(here) as connection:
        await connection.execute(
            text(
                "UPDATE tenant_keys SET created_at = created_at"
                " WHERE tenant_id = :t AND version = 1"
            ),
            {"t": tenant_id},
        )
    ring = RootKeyRing(current=RootKey(os.urandom(32)), previous=(root_key,))

    async def shred() -> None:
        maker3 = create_sessionmaker(third)
        async with maker3() as session3:
            # Read the rows in the order they sit on disk, whatever plan the statistics of
            # the moment would pick (an index scan happens to go in version order).
            await session3.execute(text("SET LOCAL enable_indexscan = off"))
            await session3.execute(text("SET LOCAL enable_indexonlyscan = off"))
            await _service(session3, maker3, ring, vault_identity).shred(tenant_id=tenant_id)
            await session3.commit()

    shredding: list[asyncio.Task[None]] = []
    maker = create_sessionmaker(other)
    async with maker() as session:
        service = _service(session, maker, ring, vault_identity)
        move = service.records.move_tenant_key_root

        async def move_then_shred(row: Any, *, root_key_id: str, wrapped: bytes) -> bool:
            moved = await move(row, root_key_id=root_key_id, wrapped=wrapped)
            if not shredding:
                shredding.append(asyncio.create_task(shred()))
                await _until_one_waits(here)
            return moved

        service.records.move_tenant_key_root = move_then_shred  # type: ignore[method-assign]
        await service.rotate_root_key_batch(batch_size=100)
        await session.commit()
    await shredding[0]
    assert await _key_states(here, tenant_id) == {0: "shredded", 1: "shredded", 2: "shredded"}
