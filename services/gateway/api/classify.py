"""``POST /v1/classify``: a dry run of classification and routing for up to 1,000 texts.

The client's tenant policy (allowed countries, required certifications) applies to the team
each text would go to, exactly as for a submitted job; nothing is stored anywhere.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from services.gateway.api.deps import ClientDep, RouterDep, SessionDep
from services.gateway.api.routing import public_router
from services.gateway.api.schemas import PassThrough, RequestModel
from services.gateway.db.repository import TenantRepository
from services.gateway.domain.errors import InvalidApiKey
from services.gateway.domain.policy import DataPolicy
from shared.vocabulary import Domain, Tier

router = public_router(prefix="/v1/classify", tag="jobs")

# The contract's batch limit: a thousand texts classify in well under a second.
MAX_CLASSIFY_ITEMS = 1000


class ClassifyItem(RequestModel):
    title: Annotated[str, StringConstraints(max_length=200)] = ""
    description: Annotated[str, StringConstraints(min_length=1, max_length=20000)]
    service: Domain | None = Field(
        default=None, description="A domain the client already knows; taken as given."
    )


class ClassifyCreate(RequestModel):
    items: list[ClassifyItem] = Field(min_length=1, max_length=MAX_CLASSIFY_ITEMS)


class TeamRef(PassThrough):
    id: str
    name: str


class ClassifyResult(BaseModel):
    tier: Tier
    domain: Domain
    confidence: float
    reasons: list[str]
    team: TeamRef | None
    status: Literal["queued", "triage", "unroutable"] = Field(
        description="Where a job with this text would land now."
    )


class ClassifyRead(BaseModel):
    results: list[ClassifyResult]


@router.post("", response_model=ClassifyRead)
async def classify(
    body: ClassifyCreate, client: ClientDep, session: SessionDep, router_: RouterDep
) -> dict[str, Any]:
    """Classify up to 1,000 texts and show the team each would go to; nothing is stored."""
    tenant = await TenantRepository(session).get(client.tenant)
    if tenant is None:
        raise InvalidApiKey()  # the key outlived its tenant
    items = [item.model_dump(mode="json", exclude_none=True) for item in body.items]
    return await router_.classify(items, policy=DataPolicy.from_json(tenant.policy).to_json())
