"""What an attacker who holds the audit key (or an earlier release) does to the audit table."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.vault.db.models import AuditChainHead, AuditRecord
from services.vault.db.repository import to_chained
from services.vault.domain import audit, envelope
from services.vault.domain.audit import GENESIS_HASH, AuditEntry
from tests.vault.test_sealing import _sql


async def stored_audit_key(url: str, root: envelope.RootKey) -> bytes:
    """The audit key as the vault stores it, unwrapped with the root key."""
    [(wrapped, version)] = await _sql(url, "SELECT wrapped_key, version FROM audit_keys")
    return envelope.unwrap_audit_key(root, version=version, wrapped=wrapped)


async def rewrite_chain(
    url: str,
    key: bytes,
    *,
    keep: int | None = None,
    edit: Callable[[AuditEntry], AuditEntry] | None = None,
) -> None:
    """Rewrite the whole chain consistently under ``key``: records past ``keep`` deleted,
    ``edit`` applied to every record, every hash and the head (with its MAC) recomputed."""
    engine = create_async_engine(url, poolclass=NullPool)
    table = AuditRecord.__table__
    try:
        async with engine.begin() as connection:
            rows = (await connection.execute(select(table).order_by(table.c.seq))).all()
            entries = [to_chained(row).entry for row in rows]
            if keep is not None:
                await connection.execute(delete(AuditRecord).where(AuditRecord.seq > keep))
                entries = entries[:keep]
            previous = GENESIS_HASH
            for entry in entries:
                changed = edit(entry) if edit is not None else entry
                chained = audit.chain(key, changed, previous)
                await connection.execute(
                    update(AuditRecord)
                    .where(AuditRecord.seq == entry.seq)
                    .values(
                        action=changed.action,
                        subject=changed.subject,
                        prev_hash=chained.prev_hash,
                        hash=chained.hash,
                    )
                )
                previous = chained.hash
            seq = len(entries)
            await connection.execute(
                update(AuditChainHead).values(
                    seq=seq, hash=previous, mac=audit.head_mac(key, seq, previous)
                )
            )
    finally:
        await engine.dispose()
