"""Teams: create, list, read, and update with optimistic concurrency (ETag / If-Match)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status
from pydantic import StringConstraints

from services.router.api.deps import JobsDep, NowDep, SettingsDep, TeamsDep, require_gateway
from services.router.api.schemas import TeamCreate, TeamList, TeamRead, TeamUpdate, team_read
from services.router.db.models import Team
from services.router.db.repository import TeamFilters
from services.router.domain.errors import PreconditionFailed
from services.router.domain.taxonomy import Domain, Tier
from services.router.workflow import TeamFields
from shared.etags import etag_of, if_match_version

# A team's fields that a job's data policy filters on (routing.policy_refusals).
_DATA_POLICY_FIELDS = frozenset({"country", "certifications"})

router = APIRouter(
    prefix="/internal/v1/teams", tags=["teams"], dependencies=[Depends(require_gateway)]
)


def etag(team: Team) -> str:
    return etag_of(team.version)


def expected_version(if_match: str | None) -> int | None:
    """The version an If-Match header asks for; ``None`` for no header or ``*``."""
    try:
        return if_match_version(if_match)
    except ValueError:
        # An ETag we never issued cannot match the current one.
        raise PreconditionFailed("If-Match does not name a version of this team.") from None


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_team(
    body: TeamCreate, teams: TeamsDep, settings: SettingsDep, now: NowDep, response: Response
) -> TeamRead:
    """Register a team (409 if the name is taken)."""
    fields = TeamFields(
        name=body.name,
        country=body.country,
        timezone=body.timezone,
        working_hours=body.working_hours.model_dump(),
        tier=body.tier,
        skills=sorted({skill.value for skill in body.skills}),
        certifications=body.certifications,
        languages=body.languages,
        capacity=body.capacity,
        hourly_rate=body.hourly_rate,
        quality=settings.quality_prior_mean if body.quality is None else body.quality,
        active=body.active,
    )
    team = await teams.create(fields, now=now)
    response.headers["ETag"] = etag(team)
    return team_read(team)


@router.get("")
async def list_teams(
    teams: TeamsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    active: bool | None = None,
    tier: Tier | None = None,
    country: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")]] | None,
        Query(max_length=50),
    ] = None,
    skill: Annotated[list[Domain] | None, Query(max_length=17)] = None,
    certification: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None,
        Query(max_length=20),
    ] = None,
) -> TeamList:
    """Teams in the order they were registered, narrowed by the filters (all must hold; a
    repeated ``country`` matches any, repeated ``skill``/``certification`` require all)."""
    filters = TeamFilters(
        active=active,
        tiers=(tier.value,) if tier else (),
        countries=tuple(sorted({c.upper() for c in country or ()})),
        skills=tuple(sorted({s.value for s in skill or ()})),
        certifications=tuple(sorted(set(certification or ()))),
    )
    page = await teams.teams.list(
        limit=limit, cursor=cursor, active=None, tier=None, filters=filters
    )
    return TeamList(
        data=[team_read(team) for team in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/{team_id}")
async def get_team(team_id: str, teams: TeamsDep, response: Response) -> TeamRead:
    """One team, with its version as the ETag."""
    team = await teams.get(team_id)
    response.headers["ETag"] = etag(team)
    return team_read(team)


@router.patch("/{team_id}")
async def update_team(
    team_id: str,
    body: TeamUpdate,
    teams: TeamsDep,
    jobs: JobsDep,
    now: NowDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> TeamRead:
    """Change some of a team's fields; with If-Match, only if the version still matches (412).
    A change of country or certifications moves on the jobs the team holds whose data policy
    it no longer meets (event ``rerouted``; a lease on one is ended). Pausing it (``active``
    false) moves on its queued jobs and the reviews it holds; leases held run to their end."""
    changes = body.model_dump(exclude_unset=True)
    if "skills" in changes:
        changes["skills"] = sorted({skill.value for skill in body.skills or []})
    if "tier" in changes and body.tier is not None:
        changes["tier"] = body.tier
    if "certifications" in changes:
        changes["certifications"] = sorted(set(changes["certifications"]))
    if "languages" in changes:
        changes["languages"] = sorted(set(changes["languages"]))
    team = await teams.update(
        team_id, changes, expected_version=expected_version(if_match), now=now
    )
    if changes.keys() & _DATA_POLICY_FIELDS or changes.get("active") is False:
        # In the same transaction: the change and the moves it calls for land together.
        await jobs.reroute_ineligible(team, now=now)
    response.headers["ETag"] = etag(team)
    return team_read(team)
