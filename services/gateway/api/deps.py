"""Dependencies of the public API as ``Annotated`` aliases: session, caller, peer clients.

Authentication: every ``/v1`` route depends on one of ``OperatorDep``, ``ClientDep`` or
``MemberDep``. The key is found by its lookup prefix and verified by comparing HMAC digests in
constant time (:mod:`services.gateway.domain.api_keys`); the row is read on every request, so a
revocation takes effect on the very next one. Missing, malformed, unknown and revoked keys all
answer the same 401 with ``WWW-Authenticate: Bearer``; a valid key of the wrong role answers 403.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from starlette.types import Scope

from services.gateway.clients.router import RouterClient
from services.gateway.clients.vault import VaultClient
from services.gateway.db.repository import key_credentials
from services.gateway.domain import api_keys
from services.gateway.domain.api_keys import Role
from services.gateway.domain.errors import InvalidApiKey
from services.gateway.domain.principal import Principal
from shared.db import SessionDep as SessionDep
from shared.db import connection_scope

# auto_error=False: a missing header must give our 401 problem+json, not FastAPI's default.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    bearerFormat="tr_<role>_<id>_<secret>",
    description="An API key: `Authorization: Bearer <api key>`.",
)


async def get_router(request: Request) -> RouterClient:
    return RouterClient(request.app.state.router_http)


async def get_vault(request: Request) -> VaultClient:
    return VaultClient(request.app.state.vault_http)


RouterDep = Annotated[RouterClient, Depends(get_router)]
VaultDep = Annotated[VaultClient, Depends(get_vault)]


async def authenticate(
    session: AsyncSession | AsyncConnection, key: str, *, pepper: bytes
) -> Principal | None:
    """The principal of a live API key, or None (same work for unknown and known prefixes).

    Shared by the route dependency below and the edge middleware (rate limits, idempotency),
    so there is exactly one way a key is checked.
    """
    key = key.strip()
    prefix = api_keys.lookup_prefix(key)
    if prefix is None:
        return None
    row = await key_credentials(session, prefix)
    if row is None:
        # Spend the same HMAC as a hit, so response time does not reveal which prefixes exist.
        api_keys.matches(key, "0" * 64, pepper=pepper)
        return None
    if not api_keys.matches(key, row.digest, pepper=pepper) or row.revoked_at is not None:
        return None
    return Principal(
        key_id=row.id,
        role=Role(row.role),
        tenant_id=row.tenant_id,
        team_id=row.team_id,
        member_id=row.member_id,
    )


_PRINCIPAL_STATE = "taskroute_principal"


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return cast(bytes, value).decode("latin-1")
    return None


async def request_principal(scope: Scope) -> Principal | None:
    """The caller of this request's bearer key (None without a live one), looked up once.

    The edge (rate limits, idempotency, job events) and the route dependency all ask; the first
    asks the database and the rest share its answer, which is as fresh as a lookup of their own
    (the same request, moments later) at a third of the round trips.
    """
    state: dict[str, Any] = scope.setdefault("state", {})
    if _PRINCIPAL_STATE in state:
        return cast(Principal | None, state[_PRINCIPAL_STATE])
    principal = None
    kind, _, key = (_authorization(scope) or "").partition(" ")
    if kind.lower() == "bearer" and key.strip():
        app = scope["app"]
        engine: AsyncEngine = app.state.engine
        # A bare connection (one read, nothing to commit): no ORM session on every request.
        async with connection_scope(engine) as connection:
            principal = await authenticate(connection, key, pepper=app.state.pepper)
    state[_PRINCIPAL_STATE] = principal
    return principal


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The caller behind the request's API key; 401 for anything but a live key."""
    if credentials is None:
        raise InvalidApiKey()
    principal = await request_principal(request.scope)
    if principal is None:
        raise InvalidApiKey()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_operator(principal: PrincipalDep) -> Principal:
    return principal.require(Role.OPERATOR)


async def require_client(principal: PrincipalDep) -> Principal:
    return principal.require(Role.CLIENT)


async def require_member(principal: PrincipalDep) -> Principal:
    return principal.require(Role.MEMBER)


OperatorDep = Annotated[Principal, Depends(require_operator)]
ClientDep = Annotated[Principal, Depends(require_client)]
MemberDep = Annotated[Principal, Depends(require_member)]

# Page sizes: 20 by default as the router's lists; 100 at most so one call stays cheap.
LimitQuery = Annotated[int, Query(ge=1, le=100, description="Items per page (1-100).")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=512, description="The `next_cursor` of the previous page."),
]
DEFAULT_LIMIT = 20
