"""A lease's name, which binds a sealed result to the lease it was sealed under."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shared.result_receipts import lease_of


def test_a_lease_is_named_by_its_start_and_sequence_number_whatever_the_zone():
    instant = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    in_kolkata = instant.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert lease_of(instant, 3) == lease_of(in_kolkata, 3) == "2026-11-29T09:00:00.000000Z#3"
    assert lease_of(instant + timedelta(microseconds=1), 3) == "2026-11-29T09:00:00.000001Z#3"
    assert lease_of(instant, 5) != lease_of(instant, 3)  # a still clock: told apart by the seq
