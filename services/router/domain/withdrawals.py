"""When a gateway submission's outbox token is too old to be let through.

The gateway's outbox token for a submission with sealed data is the time its outbox row was
written (ISO 8601). The router remembers the tokens the gateway withdrew only for a while (the
sweeper forgets them); a submit carrying a token older than that is refused as withdrawn,
since only a request stalled that long could carry one, and its sealed data may be gone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def token_time(token: str) -> datetime:
    """The time an outbox token names (UTC when it names no zone); ValueError if none."""
    written = datetime.fromisoformat(token)
    return written if written.tzinfo is not None else written.replace(tzinfo=UTC)


def is_expired(token: str, *, now: datetime, retention: timedelta) -> bool:
    """Whether a submission with this token is past the time its withdrawal is remembered."""
    return token_time(token) < now - retention


def forget_before(now: datetime, retention: timedelta) -> datetime:
    """Withdrawals recorded before this time may be forgotten. Twice the retention: a token
    is the gateway's time and the record the router's, so this tolerates their clocks being
    up to one retention apart."""
    return now - 2 * retention
