"""The tamper-evident audit chain.

Every seal, open and refused attempt appends one record. Records form a chain::

    hash[n]      = HMAC-SHA256(audit_key, canonical(record[n]) || prev_hash[n])
    prev_hash[n] = hash[n-1]

with ``prev_hash[1]`` = 32 zero bytes (GENESIS). The audit key is a key of its own (32 random
bytes, stored wrapped by the root key in ``audit_keys``; a chain begun before that table keeps the
key it began with, once derived from the root key with HKDF), so rotating the root key re-wraps it
and old records keep verifying. Someone with only database access can read the log but cannot
alter, insert or reorder a record without :class:`ChainVerifier` noticing: they cannot compute
the new hashes. A separate head row holds the last seq and hash with its own HMAC, so deleting
the newest records (which leaves a chain that is valid on its own) is caught too, and an append
checks the head (its MAC, and that it names the last record) before it signs the next one, so
the next request cannot launder a head someone moved back with a MAC they made up. An earlier
genuine head put back over deleted records (all three fields copied when they were current)
passes that check, as it passes verification: only anchors catch such a rollback. Anchors
(:mod:`services.vault.anchors`: past heads kept outside the database) catch a chain rewritten
consistently by someone who holds the audit key, or an older copy of the whole table restored.

What is recorded: action, outcome, a reason code, tenant, job, record ref, subject, calling
service, grant id and time. Never a confidential value, a key or a grant token.

canonical(record) uses the same length-prefixed encoding as the envelope's associated data
(:func:`encode_context` with label ``audit-record``), absent values as the field ``"\\x00"``
which no real value can be (ids, codes and ISO times never contain NUL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.vault.domain.envelope import constant_time_equal, encode_context, hmac_sha256

GENESIS_HASH = "00" * 32
# What a record's ``action`` and ``outcome`` may say: the audit log's filters take only these
# (another word is 422, not an empty page), and the service writes no other.
ACTIONS = frozenset(
    {
        "seal",
        "open",
        "deliver",
        "discard",
        "keygen",
        "rotate",
        "rewrap",
        "retire",
        "shred",
        "rotate-root",
    }
)
OUTCOMES = frozenset({"ok", "refused"})
_ABSENT = "\x00"


@dataclass(frozen=True)
class AuditEntry:
    """One audit record's content (what the hash covers), before or after it is chained."""

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

    def canonical(self) -> bytes:
        fields = (
            str(self.seq),
            self.at.isoformat(timespec="microseconds"),
            self.action,
            self.outcome,
            self.reason,
            self.tenant_id,
            self.job_id,
            self.ref,
            self.subject,
            self.actor,
            self.grant_id,
        )
        return encode_context("audit-record", [_ABSENT if f is None else f for f in fields])


@dataclass(frozen=True)
class ChainedEntry:
    entry: AuditEntry
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str
    mac: str


@dataclass(frozen=True)
class Verification:
    valid: bool
    records: int
    first_invalid: int | None
    problem: str | None
    # Anchors (past heads kept outside the database) the chain was checked against.
    anchors: int = 0


def chain_hash(audit_key: bytes, entry: AuditEntry, prev_hash: str) -> str:
    return hmac_sha256(audit_key, entry.canonical() + bytes.fromhex(prev_hash)).hex()


def head_mac(audit_key: bytes, seq: int, last_hash: str) -> str:
    return hmac_sha256(audit_key, encode_context("audit-head", (str(seq), last_hash))).hex()


def chain(audit_key: bytes, entry: AuditEntry, prev_hash: str) -> ChainedEntry:
    return ChainedEntry(
        entry=entry, prev_hash=prev_hash, hash=chain_hash(audit_key, entry, prev_hash)
    )


class ChainVerifier:
    """Checks records fed in seq order (in batches, so the log need not fit in memory)."""

    def __init__(self, audit_key: bytes, anchors: Sequence[tuple[int, str, str]] = ()) -> None:
        """``anchors``: past heads ``(seq, hash, mac)`` kept outside the database; the chain
        must pass through each one (the record at ``seq`` has ``hash``) and reach the highest."""
        self._key = audit_key
        self.records = 0
        self.last_seq = 0
        self.last_hash = GENESIS_HASH
        self.first_invalid: int | None = None
        self.problem: str | None = None
        self.anchors = len(anchors)
        self._anchored: dict[int, set[str]] = {}
        self._bad_anchor: int | None = None
        for seq, hash_, mac in anchors:
            self._anchored.setdefault(seq, set()).add(hash_)
            if self._bad_anchor is None and not constant_time_equal(
                mac, head_mac(audit_key, seq, hash_)
            ):
                self._bad_anchor = seq
        self._highest_anchor = max(self._anchored, default=0)

    def _fail(self, seq: int, problem: str) -> None:
        if self.first_invalid is None:
            self.first_invalid, self.problem = seq, problem

    def feed(self, records: Iterable[ChainedEntry]) -> None:
        for record in records:
            self.records += 1
            seq = record.entry.seq
            if seq != self.last_seq + 1:
                self._fail(self.last_seq + 1, "missing_or_reordered_record")
            elif not constant_time_equal(record.prev_hash, self.last_hash):
                self._fail(seq, "broken_link")
            elif not constant_time_equal(
                record.hash, chain_hash(self._key, record.entry, record.prev_hash)
            ):
                self._fail(seq, "record_altered")
            elif seq in self._anchored and self._anchored[seq] != {record.hash}:
                # Consistent with its neighbours, yet not the record that was anchored: the
                # chain was rewritten from here on (or the anchors disagree among themselves).
                self._fail(seq, "anchor_mismatch")
            self.last_seq, self.last_hash = seq, record.hash

    def finish(self, head: ChainHead | None) -> Verification:
        if self.first_invalid is None and self._bad_anchor is not None:
            self._fail(self._bad_anchor, "anchor_altered")
        if self.first_invalid is None and self._highest_anchor > self.last_seq:
            # An anchor names a record the chain no longer has: truncated (or an older copy).
            self._fail(self.last_seq + 1, "truncated_below_anchor")
        if self.first_invalid is None:
            if head is None:
                if self.records:
                    self._fail(self.last_seq, "head_missing")
            elif head.seq != self.last_seq or not constant_time_equal(head.hash, self.last_hash):
                self._fail(min(head.seq, self.last_seq) + 1, "head_mismatch_records_missing")
            elif head.seq and not constant_time_equal(
                head.mac, head_mac(self._key, head.seq, head.hash)
            ):
                self._fail(head.seq, "head_altered")
        return Verification(
            valid=self.first_invalid is None,
            records=self.records,
            first_invalid=self.first_invalid,
            problem=self.problem,
            anchors=self.anchors,
        )
