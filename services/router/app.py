"""The router's app factory and lifespan (engine, sessions, service identity, sweeper)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

import httpx
from fastapi import FastAPI

from services.router.api import (
    events,
    health,
    jobs,
    operators,
    reviews,
    team_jobs,
    teams,
    tenants,
)
from services.router.classifier.store import load_or_train
from services.router.classifier.trained import TrainedClassifier
from services.router.domain.classifier import Classifier, LexiconClassifier
from services.router.member_keys import router as member_keys_router
from services.router.metrics import refresh_job_metrics
from services.router.settings import RouterSettings
from services.router.sweeper import run_sweeper
from services.router.workflow import TeamProfileCache
from shared.app import create_service_app
from shared.db import create_engine, create_sessionmaker, utcnow
from shared.service_auth import ServiceIdentity

logger = logging.getLogger("taskroute.router")

# Longest wait, at shutdown, for a sweep pass to finish its transaction.
SWEEPER_STOP_SECONDS = 10.0
# Whose signatures the router checks: the gateway's credentials (the only caller of its API,
# docs/architecture.md) and the vault's receipts for sealed results (shared.result_receipts).
PEERS = ("gateway", "vault")


def build_classifier(settings: RouterSettings) -> Classifier:
    """The classifier in use: the trained model (default), or the rule-based lexicon."""
    if settings.classifier == "lexicon":
        return LexiconClassifier()
    return TrainedClassifier(load_or_train(settings.classifier_dir()))


def create_app(
    settings: RouterSettings | None = None,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,  # noqa: ARG001 - no peers
) -> FastAPI:
    """Build the router. It calls no other service, so ``transports`` is accepted and unused."""
    settings = settings or RouterSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.resolved_database_url())
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.identity = ServiceIdentity.load(
            name="router", keys_dir=settings.keys_dir(), peers=PEERS
        )
        app.state.classifier = build_classifier(settings)
        # Shared by the requests' workflows: team profiles reused while their versions hold.
        app.state.team_profiles = TeamProfileCache()
        app.state.clock = utcnow
        stop = asyncio.Event()
        sweeper = asyncio.create_task(
            run_sweeper(
                app.state.sessionmaker,
                settings=settings,
                classifier=app.state.classifier,
                clock=lambda: app.state.clock(),
                stop=stop,
            ),
            name="router-sweeper",
        )
        try:
            yield
        finally:
            stop.set()
            try:
                # A pass is one short transaction; past this, give up on it rather than hang.
                await asyncio.wait_for(sweeper, timeout=SWEEPER_STOP_SECONDS)
            except TimeoutError:
                logger.warning("sweeper did not stop in time; cancelled")
            await engine.dispose()

    app = create_service_app(
        title="Taskroute router",
        description="Classifies jobs, keeps teams, routes jobs and runs their lifecycle.",
        lifespan=lifespan,
        public_docs=not settings.is_production(),
        service="router",
        metrics_refresh=refresh_job_metrics,
    )
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(team_jobs.router)
    app.include_router(reviews.router)
    app.include_router(teams.router)
    app.include_router(operators.router)
    app.include_router(tenants.router)
    app.include_router(events.router)
    app.include_router(member_keys_router)
    return app
