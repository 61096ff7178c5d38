"""Dependencies of the vault's routes, as Annotated aliases.

The caller's service credential is checked before anything else is done (a transaction opened,
a body read into the service), so an unauthenticated request learns nothing, not even whether
the vault is sealed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from services.vault.db.repository import Db
from services.vault.service import VaultService

# The shared request session: FastAPI drives it (an error in the route rolls it back at once),
# with scope="function" so the transaction commits before the response is sent.
from shared.db import SessionDep, transaction_scope
from shared.service_auth import service_caller_dependency

# The vault's internal API has one caller: the gateway (docs/architecture.md).
_require_gateway = service_caller_dependency("gateway")
GatewayCaller = Annotated[str, Depends(_require_gateway)]


def _vault_service(request: Request, caller: str, db: Db) -> VaultService:
    state = request.app.state
    return VaultService(
        session=db,
        sessionmaker=state.sessionmaker,
        root_key=state.root_key,
        identity=state.identity,
        actor=caller,
        audit_lock_timeout_seconds=state.settings.audit_lock_timeout_seconds,
        audit_keys=state.audit_keys,
        anchors=state.anchors,
        member_key_authority=state.member_key_authority,
    )


async def get_vault_service(
    caller: GatewayCaller, request: Request, session: SessionDep
) -> VaultService:
    return _vault_service(request, caller, session)


async def record_vault_service(request: Request) -> AsyncIterator[VaultService]:
    """The vault on a Core connection, for the routes of sealed records (seal, open): the hot
    path, one seal per submitted job with confidential data.

    Their queries are all Core, and a connection skips the ORM session's CPU per transaction
    and per statement (see :mod:`services.vault.db.repository`). One dependency does what
    :func:`get_vault_service` and its three sub-dependencies do (FastAPI's solving costs CPU per
    dependency), in the same order: the caller's credential is checked before the transaction
    opens. The transaction commits when the route returns and rolls back on any error (FastAPI
    throws the route's exception in here), like ``shared.db.request_session``.
    """
    caller = await _require_gateway(request)
    engine: AsyncEngine = request.app.state.engine
    async with transaction_scope(engine) as connection:
        yield _vault_service(request, caller, connection)


VaultServiceDep = Annotated[VaultService, Depends(get_vault_service)]
# scope="function", as SessionDep: the commit happens before the response is sent, so a caller
# never sees a 2xx for a record that was not stored. Only for routes whose every query is Core.
RecordVaultServiceDep = Annotated[VaultService, Depends(record_vault_service, scope="function")]
