"""Anchoring the audit chain's head outside the vault database.

The chain and its MAC'd head row catch any edit, deletion or reordering made by someone who does
not hold the audit key. Someone who does (or who restores an older, consistent copy of the whole
table) can rewrite the chain consistently. Anchors catch that: from time to time the vault writes
the current head ``(seq, hash, mac)`` to an append-only store *outside* the database, and
verification checks that the chain still passes through every anchor: the record at an anchored
seq must have the anchored hash, and the chain must reach the highest anchored seq. A rewritten
or truncated chain no longer matches a past anchor and is reported invalid.

Anchors are written periodically (``TASKROUTE_VAULT_AUDIT_ANCHOR_INTERVAL_SECONDS``, only when
the head moved) and on demand (``POST /internal/v1/audit/anchors``, ``taskroute vault
anchor-audit``); never per operation, so the seal path pays nothing for them.

Provider interface (:class:`AuditAnchorStore`): ``append`` adds one anchor and must be durable
when it returns; ``read_all`` returns every anchor ever appended (order does not matter) and
raises :class:`AnchorStoreDamaged` when stored content cannot be parsed. The store must be
append-only for the vault's own credentials: an object store bucket with a retention lock (S3
Object Lock in compliance mode, GCS retention policy, Azure immutable blobs), one object per
anchor named by seq, is the production shape. :class:`FileAnchorStore` (a local append-only
file of JSON lines, mode 0600; ``chattr +a`` makes it append-only for root too) is the default
on one machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

logger = logging.getLogger("taskroute.vault.anchors")

_HEX64 = frozenset("0123456789abcdef")


class AnchorStoreDamaged(Exception):
    """An anchor in the store cannot be parsed (never its content in the message)."""


@dataclass(frozen=True)
class Anchor:
    """The chain head at one moment: ``hash`` is record ``seq``'s hash, ``mac`` the head MAC."""

    seq: int
    hash: str
    mac: str
    at: datetime

    def to_line(self) -> str:
        return json.dumps(
            {"seq": self.seq, "hash": self.hash, "mac": self.mac, "at": self.at.isoformat()},
            separators=(",", ":"),
        )

    @classmethod
    def from_line(cls, line: str) -> Anchor:
        try:
            data = json.loads(line)
            seq, hash_, mac = data["seq"], data["hash"], data["mac"]
            at = datetime.fromisoformat(data["at"])
        except (ValueError, KeyError, TypeError):
            raise AnchorStoreDamaged("an anchor is not readable") from None
        if (
            not isinstance(seq, int)
            or isinstance(seq, bool)
            or seq < 1
            or not isinstance(hash_, str)
            or not isinstance(mac, str)
            or len(hash_) != 64
            or len(mac) != 64
            or not set(hash_) <= _HEX64
            or not set(mac) <= _HEX64
        ):
            raise AnchorStoreDamaged("an anchor is not readable")
        return cls(seq=seq, hash=hash_, mac=mac, at=at)


class AuditAnchorStore(Protocol):
    """Where anchors go: append-only, outside the vault database (see the module docstring)."""

    @property
    def source(self) -> str:
        """A name for logs and answers (a path or bucket; never a credential)."""
        ...

    async def append(self, anchor: Anchor) -> None: ...

    async def read_all(self) -> list[Anchor]: ...


class FileAnchorStore:
    """Anchors as JSON lines appended to a local file (``O_APPEND``, fsync'd, mode 0600).

    Each anchor is one ``write`` of a short line to a file opened with ``O_APPEND``, so several
    vault processes on one machine may append to the same file without interleaving.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"FileAnchorStore(path={self.path})"

    @property
    def source(self) -> str:
        return f"file:{self.path}"

    async def append(self, anchor: Anchor) -> None:
        await asyncio.to_thread(self._append, (anchor.to_line() + "\n").encode())

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def read_all(self) -> list[Anchor]:
        return await asyncio.to_thread(self._read_all)

    def _read_all(self) -> list[Anchor]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8", errors="strict") as handle:
            try:
                return [Anchor.from_line(line) for line in handle if line.strip()]
            except UnicodeDecodeError:
                raise AnchorStoreDamaged("an anchor is not readable") from None
