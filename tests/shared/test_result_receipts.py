"""A lease's name, which binds a sealed result to the lease it was sealed under."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shared.result_receipts import lease_of


def test_a_lease_is_named_by_its_instant_whatever_the_zone():
    instant = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    in_kolkata = instant.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert lease_of(instant) == lease_of(in_kolkata) == "2026-11-29T09:00:00.000000Z"
    assert lease_of(instant + timedelta(microseconds=1)) == "2026-11-29T09:00:00.000001Z"
