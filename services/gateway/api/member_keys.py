"""A member's X25519 public key for end-to-end delivery (`PUT /v1/team/keys`).

The key is stored here (``members.public_key``) and registered with the router, which names it
in the member's open grants; the vault re-wraps a job's data key only to the key a router-signed
grant names. So after registration a compromised gateway cannot redirect delivery to a key of its
own. What it could do alone is make up a member, or register a false key for one who has none
yet; a vault that knows the member key authority delivers only to keys the authority endorsed
(shared/member_endorsements.py), which the gateway carries but cannot make.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.gateway.api.deps import MemberDep, RouterDep, SessionDep, VaultDep
from services.gateway.api.routing import public_router
from services.gateway.api.vault_keys import STATEMENT_DESCRIPTION
from services.gateway.db.repository import MemberRepository
from services.gateway.domain.errors import InvalidApiKey
from services.gateway.domain.views import job_id_or_404
from shared import sealed_envelope
from shared.errors import ServiceUnavailable
from shared.member_endorsements import ENDORSEMENT_PATTERN, MAX_ENDORSEMENT_CHARS

router = public_router(prefix="/v1/team", tag="team")


class MemberKeyPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_key: Annotated[str, AfterValidator(sealed_envelope.check_public_key)]
    endorsement: str | None = Field(
        default=None,
        max_length=MAX_ENDORSEMENT_CHARS,
        pattern=ENDORSEMENT_PATTERN,
        description="The member key authority's endorsement of this key for you "
        "(`taskroute members endorse`, made by an operator who checked the key with you). A "
        "vault that knows the authority delivers sealed data only to endorsed keys. Send the "
        "same key again with a new endorsement to renew it.",
    )


class MemberKeyRead(BaseModel):
    key_id: str
    public_key: str
    algorithm: str


@router.put("/keys", response_model=MemberKeyRead)
async def put_member_key(
    body: MemberKeyPut, member: MemberDep, session: SessionDep, router_: RouterDep
) -> dict[str, Any]:
    """Register the member's X25519 public key: confidential data then reaches them sealed."""
    row = await MemberRepository(session).get(member.member, team_id=member.team)
    if row is None:
        raise InvalidApiKey()  # the key outlived its member
    row.public_key = body.public_key
    await session.flush()
    # Registered with the router in the same request: if that fails, the session rolls back
    # and the member keeps the previous key (or none) in both places.
    await router_.register_member_key(
        member.team, member.member, public_key=body.public_key, endorsement=body.endorsement
    )
    return {
        "key_id": sealed_envelope.key_id_for(sealed_envelope.load_public_key(body.public_key)),
        "public_key": body.public_key,
        "algorithm": sealed_envelope.ALGORITHM,
    }


class TenantKeyRead(BaseModel):
    tenant_id: str = Field(description="Bind the envelope to this tenant (`tenant_id`).")
    job_ref: str = Field(description="Bind the envelope to this reference: the job's id.")
    key_id: str
    public_key: str
    algorithm: str
    statement: str | None = Field(
        default=None, description=STATEMENT_DESCRIPTION.format(what="this key")
    )


@router.get("/jobs/{job_id}/tenant-key", response_model=TenantKeyRead)
async def tenant_key_for_result(
    job_id: str, member: MemberDep, router_: RouterDep, vault: VaultDep
) -> dict[str, Any]:
    """The job's tenant vault key, to seal a confidential result for it (lease holder only)."""
    job_id = job_id_or_404(job_id)
    # A seal grant is what the router gives only to the live lease holder: asking for one is
    # the lease check. The vault answers for the grant's tenant and signs its statement for
    # this job, so the member need not take the tenant from us (shared/sealing_statements.py).
    grant = await router_.member_grant(member.team, job_id, member_id=member.member, action="seal")
    if grant.tenant_id is None:
        raise ServiceUnavailable("The router service gave an unexpected answer.")
    answer = await vault.sealing_keys_for_grant(grant=grant.grant)
    keys = answer.get("keys", []) if isinstance(answer, dict) else []
    if not keys:
        raise ServiceUnavailable("The vault service gave an unexpected answer.")
    return {
        "tenant_id": grant.tenant_id,
        "job_ref": job_id,
        "key_id": keys[0]["key_id"],
        "public_key": keys[0]["public_key"],
        "algorithm": keys[0]["algorithm"],
        "statement": answer.get("statement"),
    }
