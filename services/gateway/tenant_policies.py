"""Tenant policies pushed to the router, so a change holds the jobs already there.

Each job carries the policy its tenant had when it was submitted. When an operator changes a
tenant's policy, the router must hold the tenant's active jobs to the new one (tighten them,
move those at a team that no longer meets it: services/router/api/tenants.py). The gateway
pushes the policy with the tenant's version right after committing the change, and
``tenants.policy_pushed_version`` records what the router confirmed. A push that fails (the
router away, or answering an error) is retried by the background worker every
``submission_poll_seconds`` until the router takes it, so a change is never lost. While the router
is away nothing can be claimed or read through it either.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.clients.router import RouterClient
from services.gateway.db.models import Tenant
from services.gateway.db.repository import TenantRepository
from shared.errors import TaskrouteError
from shared.http import UpstreamError

logger = logging.getLogger("taskroute.gateway.tenant_policies")

BATCH = 100


class TenantPolicyPusher:
    def __init__(self, *, maker: async_sessionmaker[AsyncSession], router: RouterClient) -> None:
        self.maker = maker
        self.router = router
        # Where the next pass goes on from: each pass takes the next BATCH due tenants and the
        # round starts over after the last, so tenants the router refuses (a bug, logged)
        # cannot keep the ones behind them waiting however many there are.
        self._after: tuple[datetime, str] | None = None

    async def push(self, tenant: Tenant) -> bool:
        """Push one tenant's committed policy; whether the router took it (if not, the
        background worker tries again)."""
        try:
            await self._push(tenant)
        except TaskrouteError as exc:
            self._not_pushed(tenant.id, exc)
            return False
        return True

    async def push_due(self) -> int:
        """Push every policy the router has not confirmed; how many it took. The router away
        ends the pass; a tenant it refuses (a bug: the gateway checked the policy) does not
        hold up the others."""
        async with self.maker() as session:
            due = await TenantRepository(session).policies_to_push(limit=BATCH, after=self._after)
        pushed = 0
        for tenant in due:
            try:
                await self._push(tenant)
            except UpstreamError as exc:
                self._not_pushed(tenant.id, exc)
                continue
            except TaskrouteError as exc:
                self._not_pushed(tenant.id, exc)
                # The router is away: the next pass starts again where this one did.
                return pushed
            pushed += 1
        self._after = (due[-1].updated_at, due[-1].id) if len(due) == BATCH else None
        return pushed

    async def _push(self, tenant: Tenant) -> None:
        tenant_id, version = tenant.id, tenant.version
        change = await self.router.put_tenant_policy(
            tenant_id, version=version, policy=tenant.policy
        )
        async with self.maker() as session, session.begin():
            await TenantRepository(session).mark_policy_pushed(tenant_id, version=version)
        if isinstance(change, dict) and (change.get("tightened") or change.get("moved")):
            logger.info(
                "tenant policy pushed",
                extra={
                    "tenant_id": tenant_id,
                    "version": version,
                    "tightened": change.get("tightened"),
                    "moved": change.get("moved"),
                },
            )

    @staticmethod
    def _not_pushed(tenant_id: str, error: Exception) -> None:
        logger.warning(
            "tenant policy not pushed; retried in the background",
            extra={"tenant_id": tenant_id, "error_type": type(error).__name__},
        )
