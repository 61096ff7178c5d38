"""Fixtures of the client's end-to-end tests: real platforms, and tenants, teams and members.

``platform`` is the e2e one (``taskroute up`` on free ports), shared with other modules since a
platform takes long to start on two cores (see tests/e2e/conftest.py); ``limited_platform`` is
the same with a tiny per-key rate limit, so the real limiter answers 429 within a few requests.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from services.sdk import RetryPolicy, TaskrouteClient
from tests.e2e.conftest import Platform
from tests.e2e.conftest import platform as platform  # noqa: F401 - the fixture, re-exported
from tests.sdk.platforms import started_platform

# Jobs of these tests all go to one 24/7 clinical team, large enough never to be full: their
# tenants require a certification only that team has (made per platform, as other modules'
# teams share the platform).
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


# Per platform: the SDK team's id and the certification that only it has.
_teams: dict[str, tuple[str, str]] = {}


def new_tenancy(platform: Platform) -> Tenancy:
    """A new tenant and member; one team per platform, so every job has one place to go."""
    with operator_client(platform) as operator:
        if platform.gateway_url not in _teams:
            certification = f"SDK-{secrets.token_hex(4).upper()}"
            team = {**TEAM, "certifications": [*TEAM["certifications"], certification]}
            _teams[platform.gateway_url] = (str(operator.create_team(team)["id"]), certification)
        team_id, certification = _teams[platform.gateway_url]
        tenant = operator.create_tenant(
            f"SDK tenant {secrets.token_hex(3)}",
            policy={"required_certifications": [certification]},
        )
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
