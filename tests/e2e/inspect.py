"""Read everything a service stored, as text, to prove what is (not) in it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


async def _dump(url: str) -> str:
    engine = create_async_engine(url, poolclass=NullPool)
    parts: list[str] = []
    try:
        async with engine.connect() as connection:
            metadata = MetaData()
            await connection.run_sync(metadata.reflect)
            for table in metadata.sorted_tables:
                rows = (await connection.execute(select(table))).all()
                parts.append(f"## {table.name}: {len(rows)} rows")
                parts.extend(repr(tuple(row)) for row in rows)
    finally:
        await engine.dispose()
    return "\n".join(parts)


def dump_database(url: str) -> str:
    """Every row of every table, as text; for SQLite also the raw bytes of its files."""
    text = asyncio.run(_dump(url))
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        for candidate in (path, path.with_name(path.name + "-wal")):
            if candidate.exists():
                text += "\n" + candidate.read_bytes().decode("latin-1")
    return text
