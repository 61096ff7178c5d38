"""Plain factory functions for the router's tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from shared.result_receipts import RECEIPT_AUDIENCE, RECEIPT_TYPE, lease_of
from shared.service_auth import ServiceIdentity

TENANT = "11111111-1111-4111-8111-111111111111"
OTHER_TENANT = "22222222-2222-4222-8222-222222222222"
# Around the clock, every day: time-zone fit never decides a test unless it means to.
ALWAYS = {"start": "00:00", "end": "23:59", "days": [0, 1, 2, 3, 4, 5, 6]}


def new_uuid() -> str:
    return str(uuid.uuid4())


def outbox_token(at: datetime | None = None, *, seconds_later: float = 0) -> str:
    """An outbox token as the gateway makes it: its row's time (now unless ``at``)."""
    return ((at or datetime.now(UTC)) + timedelta(seconds=seconds_later)).isoformat()


def result_receipt(
    keys_dir: Path,
    job: dict[str, Any],
    *,
    lease: str | None = None,
    signer: str = "vault",
    ttl_seconds: int = 600,
    typ: str = RECEIPT_TYPE,
) -> tuple[str, str]:
    """``(ref, receipt)`` as the vault answers a result sealed under the job's lease (``job``
    as the claim or the send-back answered it), unless ``lease`` names another."""
    ref = new_uuid()
    identity = ServiceIdentity.load(name=signer, keys_dir=keys_dir, peers=())
    claims = {
        "tenant_id": job["tenant_id"],
        "job_id": job["id"],
        "lease": lease
        or lease_of(datetime.fromisoformat(job["lease"]["claimed_at"]), job["event_seq"]),
        "ref": ref,
    }
    receipt = identity.sign(
        audience=RECEIPT_AUDIENCE, typ=typ, ttl_seconds=ttl_seconds, claims=claims
    )
    return ref, receipt


def team_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"Team {uuid.uuid4().hex[:8]}",
        "country": "IN",
        "timezone": "Asia/Kolkata",
        "working_hours": ALWAYS,
        "tier": "KPO",
        "skills": ["clinical"],
        "certifications": ["HIPAA"],
        "languages": ["en"],
        "capacity": 10,
        "hourly_rate": 30.0,
        "quality": 0.8,
        "active": True,
    }
    body.update(overrides)
    return body


def job_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": new_uuid(),
        "tenant_id": TENANT,
        "title": "Code adverse events for a trial",
        "description": "Review case report forms and code each adverse event with MedDRA terms "
        "for the patient narratives of the trial protocol.",
        "priority": "normal",
        "policy": {"allowed_countries": None, "required_certifications": [], "require_e2e": False},
        "metadata": {"batch": "7"},
        "confidential_ref": "rec_" + uuid.uuid4().hex,
    }
    body.update(overrides)
    return body


async def create_team(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/internal/v1/teams", json=team_body(**overrides))
    assert response.status_code == 201, response.text
    team: dict[str, Any] = response.json()
    return team


async def submit_job(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/internal/v1/jobs", json=job_body(**overrides))
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def claim(client: httpx.AsyncClient, job: dict[str, Any], member_id: str) -> httpx.Response:
    team_id = job["assignment"]["team_id"]
    return await client.post(
        f"/internal/v1/teams/{team_id}/jobs/{job['id']}/claim", json={"member_id": member_id}
    )


def job_submission(**overrides: Any) -> Any:
    """A clinical JobSubmission as JobWorkflow.submit takes it (workflow tests)."""
    from services.router.domain.routing import DataPolicy
    from services.router.domain.taxonomy import Priority
    from services.router.workflow import JobSubmission

    values: dict[str, Any] = {
        "id": new_uuid(),
        "tenant_id": TENANT,
        "title": "Adverse events",
        "description": "Code the adverse event narratives of the clinical trial to MedDRA.",
        "service": None,
        "priority": Priority.NORMAL,
        "due_at": None,
        "policy": DataPolicy(),
        "metadata": {},
        "confidential_ref": None,
        "callback_url": None,
    }
    values.update(overrides)
    return JobSubmission(**values)


def team_fields(**overrides: Any) -> Any:
    """A team's fields as TeamWorkflow.create takes them (the API body's defaults)."""
    from services.router.domain.taxonomy import Tier
    from services.router.workflow import TeamFields

    body = team_body(**overrides)
    return TeamFields(**{**body, "tier": Tier(body["tier"])})


async def make_team(session: Any, **overrides: Any) -> Any:
    """A team row, straight into the database (repository tests)."""
    from services.router.db.models import Team
    from shared.db import utcnow

    now = utcnow()
    values: dict[str, Any] = {
        "id": new_uuid(),
        "version": 1,
        "created_at": now,
        "updated_at": now,
        **team_body(),
    }
    values.update(overrides)
    team = Team(**values)
    session.add(team)
    await session.flush()
    return team


async def make_job(session: Any, **overrides: Any) -> Any:
    """A job row, straight into the database (repository tests)."""
    from services.router.db.models import Job
    from shared.db import utcnow

    now = utcnow()
    values: dict[str, Any] = {
        "id": new_uuid(),
        "tenant_id": TENANT,
        "status": "queued",
        "title": "t",
        "description": "d",
        "priority": "normal",
        "priority_rank": 1,
        "job_metadata": {},
        "policy": {},
        "rejected_team_ids": [],
        "event_seq": 1,
        "created_at": now,
        "updated_at": now,
    }
    values.update(overrides)
    job = Job(**values)
    session.add(job)
    await session.flush()
    return job
