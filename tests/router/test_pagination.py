from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from services.router.db.pagination import InvalidCursor, decode_cursor, encode_cursor


def _raw_cursor(values: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def test_a_cursor_round_trips():
    moment = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert decode_cursor(encode_cursor([moment, "id-1"]), (datetime, str)) == [moment, "id-1"]


@pytest.mark.parametrize(
    "values",
    [
        ["0001-01-01T00:00:00+14:00", "x"],  # valid ISO time that overflows when made UTC
        ["2026-11-27T12:00:00", "x"],  # naive
        ["yesterday", "x"],
        [1, "x"],
        ["2026-11-27T12:00:00+00:00"],
    ],
)
def test_bad_cursors_are_refused(values):
    with pytest.raises(InvalidCursor):
        decode_cursor(_raw_cursor(values), (datetime, str))


@pytest.mark.parametrize("value", [2**63, 10**23, -1, True, 1.5])
def test_a_sequence_cursor_outside_a_64_bit_column_is_refused(value):
    # Past the column's range the driver itself fails (OverflowError): a 500, not a 400.
    with pytest.raises(InvalidCursor):
        decode_cursor(_raw_cursor([value]), (int,))


def test_a_sequence_cursor_at_the_column_s_limits_is_taken():
    for value in (0, 2**63 - 1):
        assert decode_cursor(_raw_cursor([value]), (int,)) == [value]
