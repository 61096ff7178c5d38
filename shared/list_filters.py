"""What every service's filtered lists share: times in UTC, and cursors bound to their filters."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from fastapi.exceptions import RequestValidationError


def as_utc(moment: datetime | None, *, name: str = "created_after") -> datetime | None:
    """A filter's time in UTC; one given without an offset is taken to be UTC. A time that
    UTC cannot express (year 1 at +14:00) is 422 naming the field."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise RequestValidationError(
            [{"loc": ("query", name), "msg": "is out of range", "type": "value_error"}]
        ) from None


def one_of(words: Collection[str]) -> Callable[[str], str]:
    """A validator for a filter whose values are a fixed vocabulary (event types, audit
    actions): any other word is 422 naming the choices, not a silently empty page."""
    allowed = frozenset(words)
    choices = ", ".join(sorted(allowed))

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of: {choices}")
        return value

    return check


def filters_fingerprint(filters: dict[str, Any] | None) -> str | None:
    """A short digest of the filters that are set, bound into a list's cursors so that a
    cursor cannot continue a list under other filters (None when no filter is set)."""
    plain: dict[str, Any] = {}
    for name, value in (filters or {}).items():
        if value is None or value == () or value == []:
            continue
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        elif isinstance(value, list | tuple | set | frozenset):
            value = sorted(str(item) for item in value)
        plain[name] = value
    if not plain:
        return None
    raw = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]
