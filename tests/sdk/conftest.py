"""Fixtures of the client's end-to-end tests: real platforms, and tenants, teams and members.

``platform`` is the e2e one (``taskroute up`` on free ports), shared by the whole package
since a platform takes long to start on two cores; ``limited_platform`` is the same with a tiny
per-key rate limit, so the real limiter answers 429 within a few requests.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from services.sdk import RetryPolicy, TaskrouteClient
from tests.e2e.conftest import Platform
from tests.sdk.platforms import started_platform

# Jobs of these tests all go to one 24/7 clinical team, large enough never to be full. Not in
# India: the README's tenant allows India and Ireland only, so its jobs go to its own team.
TEAM: dict[str, Any] = {
    "name": "SDK Clinical Team",
    "country": "PH",
    "timezone": "Asia/Kolkata",
    "working_hours": {"start": "00:00", "end": "23:59", "days": [0, 1, 2, 3, 4, 5, 6]},
    "tier": "KPO",
    "skills": ["clinical", "pharmaceutical"],
    "certifications": ["HIPAA", "ISO27001"],
    "languages": ["en"],
    "capacity": 1000,
    "hourly_rate": 30.0,
    "quality": 0.9,
}
CLINICAL_TITLE = "Code adverse events from a phase III trial"
CLINICAL_DESCRIPTION = (
    "Code the adverse event narratives from the case report forms of our phase III trial "
    "to MedDRA terms and flag serious adverse events for pharmacovigilance review."
)
# Tests must not sleep long: retries wait tenths of seconds, a few times at most.
FAST_RETRY = RetryPolicy(max_retries=6, backoff=0.2, max_backoff=2.0)


@dataclass
class Tenancy:
    """A tenant with a client key, and a member of the module's clinical team."""

    tenant_id: str
    client_key: str
    team_id: str
    member_key: str


@pytest.fixture(scope="package")
def platform(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with started_platform(tmp_path_factory, {"TASKROUTE_LOG_LEVEL": "INFO"}, backend) as p:
        yield p


@pytest.fixture(scope="module")
def limited_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # 4 a second: a burst of a dozen requests meets the limiter, a 1 s Retry-After clears it.
    settings = {
        "TASKROUTE_GATEWAY_RATE_LIMIT": "4/second",
        # A frozen router is a quick 503, not a 10 s wait per attempt.
        "TASKROUTE_UPSTREAM_TIMEOUT_SECONDS": "1",
    }
    with started_platform(tmp_path_factory, settings) as p:
        yield p


def operator_client(platform: Platform, **kwargs: Any) -> TaskrouteClient:
    return TaskrouteClient(platform.gateway_url, platform.operator_key, retry=FAST_RETRY, **kwargs)


_teams: dict[str, str] = {}


def new_tenancy(platform: Platform) -> Tenancy:
    """A new tenant and member; one team per platform, so every job has one place to go."""
    with operator_client(platform) as operator:
        tenant = operator.create_tenant(f"SDK tenant {secrets.token_hex(3)}")
        if platform.gateway_url not in _teams:
            _teams[platform.gateway_url] = str(operator.create_team(TEAM)["id"])
        team_id = _teams[platform.gateway_url]
        member = operator.create_member(team_id, "Asha")
    assert tenant.api_key is not None
    return Tenancy(
        tenant_id=tenant.id,
        client_key=tenant.api_key,
        team_id=team_id,
        member_key=str(member["api_key"]),
    )


@pytest.fixture
def tenancy(platform: Platform) -> Tenancy:
    return new_tenancy(platform)
