"""Dependencies of the router's routes, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from services.router.domain.classifier import Classifier
from services.router.settings import RouterSettings
from services.router.workflow import JobWorkflow, TeamProfileCache, TeamWorkflow
from shared.db import SessionDep
from shared.service_auth import ServiceIdentity, service_caller_dependency

# Only the gateway calls the router's internal API (docs/architecture.md).
require_gateway = service_caller_dependency("gateway")


async def get_settings(request: Request) -> RouterSettings:
    settings: RouterSettings = request.app.state.settings
    return settings


async def get_identity(request: Request) -> ServiceIdentity:
    identity: ServiceIdentity = request.app.state.identity
    return identity


async def get_classifier(request: Request) -> Classifier:
    classifier: Classifier = request.app.state.classifier
    return classifier


async def get_now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


SettingsDep = Annotated[RouterSettings, Depends(get_settings)]
IdentityDep = Annotated[ServiceIdentity, Depends(get_identity)]
ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
NowDep = Annotated[datetime, Depends(get_now)]


async def get_job_workflow(request: Request, session: SessionDep) -> JobWorkflow:
    # The app's settings, classifier and team profile cache read here rather than through
    # their own dependencies: each dependency solved costs CPU on every job request.
    state = request.app.state
    settings: RouterSettings = state.settings
    classifier: Classifier = state.classifier
    cache: TeamProfileCache = state.team_profiles
    return JobWorkflow(session, settings=settings, classifier=classifier, team_cache=cache)


async def get_team_workflow(session: SessionDep) -> TeamWorkflow:
    return TeamWorkflow(session)


JobsDep = Annotated[JobWorkflow, Depends(get_job_workflow)]
TeamsDep = Annotated[TeamWorkflow, Depends(get_team_workflow)]
