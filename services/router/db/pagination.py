"""Opaque cursors for keyset pagination.

A cursor is URL-safe base64 of a small JSON array holding the sort key of the last row served
(e.g. ``[created_at, id]``). It carries no secret and is not signed: a forged cursor can only
move the reader within rows the query's own scoping (tenant, team) already allows.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from shared.errors import BadRequest
from shared.list_filters import filters_fingerprint


class InvalidCursor(BadRequest):
    problem = "invalid-cursor"

    def __init__(self) -> None:
        super().__init__("The cursor is not valid for this list; start again without it.")


def encode_cursor(values: list[Any]) -> str:
    plain = [value.isoformat() if isinstance(value, datetime) else value for value in values]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: tuple[type, ...]) -> list[Any]:
    """Decode a cursor whose values have the given types (datetime, int or str), or raise 400."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor from exc
    if not isinstance(values, list) or len(values) != len(kinds):
        raise InvalidCursor
    decoded: list[Any] = []
    for value, kind in zip(values, kinds, strict=True):
        if kind is datetime:
            if not isinstance(value, str):
                raise InvalidCursor
            try:
                moment = datetime.fromisoformat(value)
                # A time that cannot be expressed in UTC (year 1 at +14:00) is no cursor of ours.
                moment.astimezone(UTC)
            except (ValueError, OverflowError) as exc:
                raise InvalidCursor from exc
            if moment.tzinfo is None:
                raise InvalidCursor
            decoded.append(moment)
        elif kind is int:
            # Sequence numbers: what a 64-bit column can hold, never negative.
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                raise InvalidCursor
            decoded.append(value)
        else:
            if not isinstance(value, str):
                raise InvalidCursor
            decoded.append(value)
    return decoded


# Filtered lists ---------------------------------------------------------------------------
#
# A list's cursor is bound to the list and the filters it was issued under: it carries a
# short fingerprint of them as a last element (``[created_at, id, {"f": "<16 hex>"}]``).
# Continuing another list, or with other filters, would silently skip or repeat rows, so it
# is refused (400 ``invalid-cursor`` saying so) instead. The callers put the list's name (and
# the job or team it is of) among the filters they pass.


class CursorFiltersChanged(InvalidCursor):
    def __init__(self) -> None:
        BadRequest.__init__(
            self,
            "The cursor was issued for another list or other filters; repeat the first "
            "request's filters or start again without a cursor.",
        )


def encode_filtered_cursor(values: list[Any], filters: dict[str, Any]) -> str:
    """A cursor for ``values`` (the last row's sort key) bound to ``filters``."""
    fingerprint = filters_fingerprint(filters)
    return encode_cursor(values if fingerprint is None else [*values, {"f": fingerprint}])


def decode_filtered_cursor(
    cursor: str, kinds: tuple[type, ...], filters: dict[str, Any]
) -> list[Any]:
    """Decode a cursor of :func:`encode_filtered_cursor`; 400 if issued under other filters."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor from exc
    if not isinstance(values, list):
        raise InvalidCursor
    issued_under: str | None = None
    if len(values) == len(kinds) + 1:
        marker = values[-1]
        if not isinstance(marker, dict) or not isinstance(marker.get("f"), str):
            raise InvalidCursor
        issued_under = marker["f"]
        values = values[:-1]
    if issued_under != filters_fingerprint(filters):
        raise CursorFiltersChanged
    return decode_cursor(encode_cursor(values), kinds)
