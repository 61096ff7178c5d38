"""Operator routes for teams (kept by the router) and their members (kept here)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Query, Request, Response, status

from services.gateway.api.deps import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    OperatorDep,
    RouterDep,
    SessionDep,
)
from services.gateway.api.etags import etag, not_modified, parse_if_match
from services.gateway.api.list_filters import (
    CreatedAfterQuery,
    CreatedBeforeQuery,
    NameQuery,
    created_range,
)
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import (
    Certification,
    CountryCode,
    MemberCreate,
    MemberCreated,
    MemberList,
    TeamCreate,
    TeamList,
    TeamRead,
    TeamUpdate,
)
from services.gateway.db.models import Member
from services.gateway.db.repository import ApiKeyRepository, MemberRepository
from services.gateway.domain import api_keys
from services.gateway.domain.api_keys import Role
from services.gateway.domain.errors import MemberNotFound, TeamNotFound
from services.gateway.domain.views import uuid_or
from shared.vocabulary import Domain, Tier

router = public_router(prefix="/v1/admin/teams", tag="admin: teams")


def _team_id(value: str) -> str:
    return uuid_or(value, TeamNotFound)


def _member(member: Member) -> dict[str, Any]:
    return {
        "id": member.id,
        "team_id": member.team_id,
        "name": member.name,
        "has_public_key": member.public_key is not None,
        "created_at": member.created_at,
    }


def _with_etag(team: dict[str, Any], response: Response) -> dict[str, Any]:
    if isinstance(team.get("version"), int):
        response.headers["ETag"] = etag(team["version"])
    return team


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TeamRead)
async def create_team(
    body: TeamCreate, _operator: OperatorDep, router_: RouterDep, response: Response
) -> dict[str, Any]:
    """Register an offshore team with its country, skills, certifications and capacity."""
    team = await router_.create_team(body.model_dump(mode="json", exclude_unset=True))
    return _with_etag(team, response)


@router.get("", response_model=TeamList)
async def list_teams(
    _operator: OperatorDep,
    router_: RouterDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    active: Annotated[
        bool | None, Query(description="Only active (true) or inactive (false) teams.")
    ] = None,
    tier: Annotated[Tier | None, Query(description="Only teams of this tier.")] = None,
    country: Annotated[
        list[CountryCode] | None,
        Query(max_length=50, description="Only teams in this country (ISO 3166); repeatable."),
    ] = None,
    skill: Annotated[
        list[Domain] | None,
        Query(
            max_length=17,
            description="Only teams skilled in this domain; repeated, in every one of them.",
        ),
    ] = None,
    certification: Annotated[
        list[Certification] | None,
        Query(
            max_length=20,
            description="Only teams holding this certification; repeated, every one of them.",
        ),
    ] = None,
) -> dict[str, Any]:
    """List teams in registration order, narrowed by the filters given (all must hold)."""
    return await router_.list_teams(
        limit=limit,
        cursor=cursor,
        active=active,
        tier=tier.value if tier else None,
        filters={
            "country": sorted(set(country or ())),
            "skill": sorted({s.value for s in skill or ()}),
            "certification": sorted(set(certification or ())),
        },
    )


@router.get("/{team_id}", response_model=TeamRead)
async def get_team(
    team_id: str, _operator: OperatorDep, router_: RouterDep, request: Request, response: Response
) -> Any:
    """Read one team; the ETag header carries its version for a later PATCH (304 when
    `If-None-Match` names it)."""
    team = await router_.get_team(_team_id(team_id))
    if isinstance(team.get("version"), int):
        unchanged = not_modified(request, team["version"])
        if unchanged is not None:
            return unchanged
    return _with_etag(team, response)


@router.patch("/{team_id}", response_model=TeamRead)
async def update_team(
    team_id: str,
    body: TeamUpdate,
    _operator: OperatorDep,
    router_: RouterDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Change a team; send If-Match with its ETag so a concurrent change is not overwritten."""
    # Checked here and passed on in its plain form: the raw header is the caller's text.
    version = parse_if_match(if_match)
    team = await router_.update_team(
        _team_id(team_id),
        body.model_dump(mode="json", exclude_unset=True),
        if_match=None if version is None else etag(version),
    )
    return _with_etag(team, response)


@router.post(
    "/{team_id}/members", status_code=status.HTTP_201_CREATED, response_model=MemberCreated
)
async def create_member(
    team_id: str,
    body: MemberCreate,
    _operator: OperatorDep,
    router_: RouterDep,
    session: SessionDep,
    request: Request,
) -> dict[str, Any]:
    """Add a member to a team and issue the member's API key (shown only in this answer)."""
    team = await router_.get_team(_team_id(team_id))  # 404 unless the router knows the team
    member = await MemberRepository(session).create(team_id=str(team["id"]), name=body.name)
    new_key = api_keys.generate_key(Role.MEMBER, pepper=request.app.state.pepper)
    row = await ApiKeyRepository(session).add(
        new_key, role=Role.MEMBER, team_id=member.team_id, member_id=member.id
    )
    return {**_member(member), "api_key": new_key.plaintext, "api_key_id": row.id}


@router.delete("/{team_id}/members/{member_id}/keys", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_member_keys(
    team_id: str, member_id: str, _operator: OperatorDep, session: SessionDep
) -> None:
    """Revoke every API key of a member (someone who left): effective on their next request."""
    member = await MemberRepository(session).get(member_id, team_id=_team_id(team_id))
    if member is None:
        raise MemberNotFound()
    await ApiKeyRepository(session).revoke_member_keys(member.id, team_id=member.team_id)


@router.get("/{team_id}/members", response_model=MemberList)
async def list_members(
    team_id: str,
    _operator: OperatorDep,
    session: SessionDep,
    router_: RouterDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    name: NameQuery = None,
    created_after: CreatedAfterQuery = None,
    created_before: CreatedBeforeQuery = None,
) -> dict[str, Any]:
    """List a team's members, newest first, narrowed by the filters given (404 for a team
    the router does not know)."""
    page = await MemberRepository(session).list_for_team(
        _team_id(team_id),
        limit=limit,
        cursor=cursor,
        name=name,
        created=created_range(created_after, created_before),
    )
    if not page.items and cursor is None:
        # Members live here, teams at the router: an empty first page may be no team at all.
        await router_.get_team(_team_id(team_id))  # 404 unless the router knows the team
    return {
        "data": [_member(m) for m in page.items],
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }
