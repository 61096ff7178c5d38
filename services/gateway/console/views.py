"""Turning router jobs and statistics into what a page shows (pure functions, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.db import utcnow

PRIORITY_ORDER = {"high": 0, "normal": 1, "low": 2}
# A job due within this long, and not done, is "at risk": about one working session.
SLA_RISK_WINDOW = timedelta(hours=4)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def duration(delta: timedelta) -> str:
    """A short human duration: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@dataclass(frozen=True)
class JobRow:
    id: str
    title: str
    description: str
    status: str
    priority: str
    domain: str
    tier: str
    created_at: str
    age: str
    age_seconds: float
    due_at: str | None
    due_in: str | None
    overdue: bool
    at_risk: bool
    lease: str  # "", "yours" or "another member"
    lease_expires_at: str | None
    team_name: str | None
    has_confidential: bool


def queue_row(job: dict[str, Any], *, member_id: str | None, now: datetime | None = None) -> JobRow:
    now = now or utcnow()
    created = parse_time(job.get("created_at")) or now
    due = parse_time(job.get("due_at"))
    classification = job.get("classification") or {}
    lease = job.get("lease") or {}
    holder = ""
    if lease:
        holder = (
            "yours"
            if member_id is not None and lease.get("member_id") == member_id
            else ("another member")
        )
    overdue = due is not None and due <= now
    return JobRow(
        id=str(job.get("id")),
        title=str(job.get("title") or ""),
        description=str(job.get("description") or ""),
        status=str(job.get("status") or ""),
        priority=str(job.get("priority") or "normal"),
        domain=str(classification.get("domain") or job.get("service") or "unclassified"),
        tier=str(classification.get("tier") or ""),
        created_at=created.isoformat(timespec="seconds"),
        age=duration(now - created),
        age_seconds=(now - created).total_seconds(),
        due_at=due.isoformat(timespec="minutes") if due else None,
        due_in=(("overdue by " if overdue else "in ") + duration(due - now)) if due else None,
        overdue=overdue,
        at_risk=due is not None and not overdue and due - now <= SLA_RISK_WINDOW,
        lease=holder,
        lease_expires_at=_clock(parse_time(lease.get("expires_at"))) if lease else None,
        team_name=(job.get("assignment") or {}).get("team_name"),
        has_confidential=bool(job.get("has_confidential")),
    )


def _clock(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else None


def number(value: Any) -> int:
    """A count from the statistics, 0 for anything that is not one (fields may be missing)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return 0


def counts(value: Any) -> dict[str, int]:
    """A ``{name: count}`` mapping from the statistics, whatever shape arrived."""
    if isinstance(value, dict):
        return {str(k): number(v) for k, v in value.items()}
    return {}
