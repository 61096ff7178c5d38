"""Dependencies of the vault's routes, as Annotated aliases.

The caller's service credential is checked before anything else is done (a session opened, a
body read into the service), so an unauthenticated request learns nothing, not even whether the
vault is sealed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.vault.service import VaultService

# The shared request session: FastAPI drives it (an error in the route rolls it back at once),
# with scope="function" so the transaction commits before the response is sent.
from shared.db import SessionDep
from shared.service_auth import service_caller_dependency

# The vault's internal API has one caller: the gateway (docs/architecture.md).
GatewayCaller = Annotated[str, Depends(service_caller_dependency("gateway"))]


async def get_vault_service(
    caller: GatewayCaller, request: Request, session: SessionDep
) -> VaultService:
    state = request.app.state
    return VaultService(
        session=session,
        sessionmaker=state.sessionmaker,
        root_key=state.root_key,
        identity=state.identity,
        actor=caller,
        audit_lock_timeout_seconds=state.settings.audit_lock_timeout_seconds,
        audit_keys=state.audit_keys,
        anchors=state.anchors,
    )


VaultServiceDep = Annotated[VaultService, Depends(get_vault_service)]
