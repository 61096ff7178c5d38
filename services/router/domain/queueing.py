"""A team's queue order (priority with aging) and the escalation clock of an unclaimed job.

Queue order with aging
----------------------
Every job gets a *virtual enqueue time* when it is submitted::

    queue_order_at = created_at - head_start(priority)

and a team's queue is served by ``queue_order_at`` ascending (then ``id``). A high-priority job
is placed as if it had arrived ``head_start_high`` earlier, a normal one ``head_start_normal``
earlier, a low one not at all. Priority therefore wins among jobs of similar age, and age wins
in the end: a low job that has waited longer than the high head start is served before a high
job submitted now, so low priority cannot starve however many high jobs keep arriving.

The time is fixed at submission, so it is one indexed column ``(team_id, status,
queue_order_at, id)`` and needs no rewrite as jobs age. ``created_at`` (not the time the job
reached its current team) is the age that counts: a job that waited in triage or was passed on
by another team has kept its client waiting that long. Changing the head-start settings orders
jobs submitted afterwards; the ones already waiting keep their place.

Escalation clock
----------------
A ``queued`` job carries ``escalate_at``: when it entered its team's queue (routed, reassigned,
released, or returned by an expired lease) plus the escalation window of its priority. A job
still ``queued`` at that time was not claimed in time, and the sweeper passes it to the next
eligible team. The clock is separate from the lease (which runs while a member works) and from
``due_at`` (the client's deadline): claiming stops it; coming back to the queue restarts it.

Nothing here reads the clock or the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.router.domain.taxonomy import Priority


@dataclass(frozen=True)
class PriorityDurations:
    """One duration per priority (a head start, or an escalation window), in seconds."""

    high: float
    normal: float
    low: float

    def of(self, priority: Priority) -> timedelta:
        seconds = {Priority.HIGH: self.high, Priority.NORMAL: self.normal, Priority.LOW: self.low}
        return timedelta(seconds=seconds[priority])


def queue_order_at(
    *, created_at: datetime, priority: Priority, head_starts: PriorityDurations
) -> datetime:
    """The virtual enqueue time a team's queue is ordered by (earliest served first)."""
    return created_at - head_starts.of(priority)


def escalate_at(*, queued_at: datetime, priority: Priority, windows: PriorityDurations) -> datetime:
    """When a job that became ``queued`` at ``queued_at`` passes on if nobody has claimed it."""
    return queued_at + windows.of(priority)


def describe_duration(value: timedelta) -> str:
    """``2 h``, ``30 min``, ``1 h 30 min``, ``45 s``: for event reasons a person reads."""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes:
        parts.append(f"{minutes} min")
    if seconds or not parts:
        parts.append(f"{seconds} s")
    return " ".join(parts)
