"""Summaries behind the operators' statistics: wait-time percentiles over a sample of claims.

Percentiles are computed here, in Python, over a bounded sample of the most recent claims
(``WAIT_SAMPLE``): ``percentile_cont`` exists on PostgreSQL but not on SQLite, and datetime
subtraction differs between the two, so the database returns (queued at, claimed at) pairs and
this module does the arithmetic. The count of claims in the window is exact (a SQL count) even
when the sample is smaller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

# Most recent claims the percentiles are computed over: enough for a stable p95 (500 values
# above it), small enough to fetch in a few milliseconds on every call.
WAIT_SAMPLE = 10_000


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values; ``None`` if empty.

    Nearest rank always answers an observed value, so "p95 = 120 s" means some claim really
    waited 120 s, and it needs no interpolation rule the two backends would disagree on.
    """
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class WaitSummary:
    count: int
    sampled: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None


def summarise_waits(pairs: Sequence[tuple[datetime, datetime]], *, count: int) -> WaitSummary:
    """Percentiles of ``claimed - queued`` over ``pairs``; ``count`` is the window's exact total."""
    waits = sorted(max(0.0, (claimed - queued).total_seconds()) for queued, claimed in pairs)
    return WaitSummary(
        count=count,
        sampled=len(waits),
        p50_seconds=percentile(waits, 50),
        p95_seconds=percentile(waits, 95),
        max_seconds=waits[-1] if waits else None,
    )
