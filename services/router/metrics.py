"""The router's Prometheus metrics: routing decisions as they happen, job counts at scrape time.

* ``taskroute_router_routing_decisions_total{outcome}`` counts decisions where the router makes
  them (``queued``, ``unroutable``, ``triage``, ``manual``); the triage rate is its ``triage``
  share. A decision whose transaction later rolls back was still counted: the counter measures
  the router's work, the job gauges below measure the stored state.
* ``taskroute_router_jobs{status}`` and ``taskroute_router_queue_depth{team_id,status}`` are read
  from the database when Prometheus scrapes (an indexed ``COUNT ... GROUP BY``, and the
  ``team_loads`` counters with each team's leases counted, through the repository, never a
  row load). Every replica reports the same database-wide numbers, so
  dashboards aggregate them with ``max``, not ``sum``.
* ``taskroute_router_event_outbox`` and ``..._oldest_seconds``: the event feed's backlog
  (services/router/api/events.py), read the same way: a gateway that stopped pulling shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from fastapi import FastAPI
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from services.router.db.repository import JobRepository

logger = logging.getLogger("taskroute.router.metrics")

# A scrape must answer well inside Prometheus' default 10 s scrape timeout, even when the
# database is slow; past this the job gauges are left out of that scrape.
SCRAPE_QUERY_TIMEOUT_SECONDS = 2.0

ROUTING_DECISIONS = Counter(
    "taskroute_router_routing_decisions_total",
    "Routing decisions taken by the router, by outcome (queued, unroutable, triage, manual).",
    ["outcome"],
)


def record_decision(outcome: str) -> None:
    """Count one routing decision (called where the router stores its decision record)."""
    ROUTING_DECISIONS.labels(outcome=outcome).inc()


@dataclass(frozen=True)
class JobSnapshot:
    """Job counts read at one scrape: by status, and (team, status) for active queues."""

    by_status: dict[str, int] = field(default_factory=dict)
    queue_depths: list[tuple[str, str, int]] = field(default_factory=list)
    # The event outbox: events waiting for the gateway, and the age of the oldest (seconds).
    outbox_events: int = 0
    outbox_oldest_seconds: float = 0.0


class JobStateCollector(Collector):
    """Exports the latest :class:`JobSnapshot` (swapped whole, so a scrape never sees half)."""

    def __init__(self) -> None:
        self.snapshot: JobSnapshot | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        jobs = GaugeMetricFamily(
            "taskroute_router_jobs", "Jobs stored in the router, by status.", labels=["status"]
        )
        for status, count in sorted(snapshot.by_status.items()):
            jobs.add_metric([status], count)
        yield jobs
        depth = GaugeMetricFamily(
            "taskroute_router_queue_depth",
            "Queued and in-progress jobs per team.",
            labels=["team_id", "status"],
        )
        for team_id, status, count in sorted(snapshot.queue_depths):
            depth.add_metric([team_id, status], count)
        yield depth
        # A gateway that stopped pulling the feed shows here: the backlog and its age grow.
        yield GaugeMetricFamily(
            "taskroute_router_event_outbox",
            "Job events waiting for the gateway's webhooks (the event feed's backlog).",
            value=snapshot.outbox_events,
        )
        yield GaugeMetricFamily(
            "taskroute_router_event_outbox_oldest_seconds",
            "Age of the oldest job event waiting for the gateway (0 when none waits).",
            value=snapshot.outbox_oldest_seconds,
        )


JOB_STATE = JobStateCollector()
REGISTRY.register(JOB_STATE)


async def read_snapshot(app: FastAPI) -> JobSnapshot:
    async with app.state.sessionmaker() as session:
        jobs = JobRepository(session)
        waiting, oldest = await jobs.event_outbox_backlog()
        return JobSnapshot(
            by_status=await jobs.count_by("status"),
            queue_depths=await jobs.queue_depths(),
            outbox_events=waiting,
            outbox_oldest_seconds=0.0
            if oldest is None
            else max((app.state.clock() - oldest).total_seconds(), 0.0),
        )


async def refresh_job_metrics(app: FastAPI) -> None:
    """The router's scrape hook: read job counts, or leave them out if the database is slow."""
    try:
        async with asyncio.timeout(SCRAPE_QUERY_TIMEOUT_SECONDS):
            JOB_STATE.snapshot = await read_snapshot(app)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        logger.warning("job metrics unavailable", extra={"error_type": type(exc).__name__})
        JOB_STATE.snapshot = None
