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
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidCursor
            decoded.append(value)
        else:
            if not isinstance(value, str):
                raise InvalidCursor
            decoded.append(value)
    return decoded
