"""Members' registered public keys, and the recipient they put into open grants (issue 3).

Kept apart from the classifier and lifecycle code: registration is a plain upsert, and an open
grant for a member with a registered key carries ``recipient_public_key``. The vault re-wraps a
job's data key only to the key a router-signed grant names, so once a member registered, a
compromised gateway cannot redirect delivery to a key of its own. The grant also carries the
key's endorsement by the member key authority and the team it is for: a vault that holds the
authority's key delivers only to endorsed keys, so a member the gateway makes up gets nothing
(shared/member_endorsements.py).
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.api.deps import NowDep, require_gateway
from services.router.db.models import ForgottenMemberKey, MemberKey
from services.router.domain.errors import MemberKeyConflict
from shared import sealed_envelope
from shared.db import SessionDep
from shared.member_endorsements import ENDORSEMENT_PATTERN, MAX_ENDORSEMENT_CHARS

# base64url (unpadded) of a 32-byte X25519 key is exactly 43 characters, the last one limited
# to the values that leave the two spare bits zero.
_PUBLIC_KEY = re.compile(r"^[A-Za-z0-9_\-]{42}[AEIMQUYcgkosw048]$")

router = APIRouter(
    prefix="/internal/v1/teams/{team_id}/members",
    tags=["member keys"],
    dependencies=[Depends(require_gateway)],
)


class MemberKeyPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The gateway checks too; a key nothing can be wrapped to would stop every delivery to the
    # member, so the router does not take it on the gateway's word.
    public_key: Annotated[
        str,
        Field(pattern=_PUBLIC_KEY.pattern),
        AfterValidator(sealed_envelope.check_public_key),
    ]
    # The member key authority's endorsement of this key, checked by the vault (it holds the
    # authority's public key); here only its shape: a compact JWS.
    endorsement: str | None = Field(
        default=None, max_length=MAX_ENDORSEMENT_CHARS, pattern=ENDORSEMENT_PATTERN
    )


class MemberKeyRead(BaseModel):
    member_id: str
    team_id: str
    public_key: str
    endorsed: bool
    updated_at: datetime


async def recipient_claims(
    session: AsyncSession, *, team_id: str, member_id: str, action: str
) -> dict[str, Any]:
    """Extra claims of a member's grant, for an open grant only: the registered key, the team
    the grant is for, and the key's endorsement if it has one."""
    if action != "open":
        return {}
    key = await session.get(MemberKey, member_id)
    if key is None:
        return {}
    claims = {"recipient_public_key": key.public_key, "recipient_team_id": team_id}
    if key.endorsement is not None:
        claims["recipient_endorsement"] = key.endorsement
    return claims


# The slice of PostgreSQL's advisory lock space for member keys ("TRMK" in ASCII).
_MEMBER_KEY_LOCK_SPACE = 0x54524D4B


async def lock_member_keys(session: AsyncSession, member_id: str) -> None:
    """Serialise a registration and an operator's forget of one member's key on PostgreSQL
    (READ COMMITTED would let a forget miss a registration in flight, or a registration
    restore a key forgotten meanwhile); SQLite's writers take turns already."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:space, hashtext(:member_id))"),
            {"space": _MEMBER_KEY_LOCK_SPACE, "member_id": member_id},
        )


async def _refuse_if_forgotten(session: AsyncSession, member_id: str, public_key: str) -> None:
    forgotten = await session.get(
        ForgottenMemberKey, (member_id, public_key), populate_existing=True
    )
    if forgotten is not None:
        # Forgotten by an operator (lost, or stolen): its endorsement may still be valid, so
        # only this refusal keeps a compromised gateway from putting it back.
        raise MemberKeyConflict("An operator forgot this key for this member; register a new key.")


@router.put("/{member_id}/key")
async def put_member_key(
    team_id: str, member_id: str, body: MemberKeyPut, session: SessionDep, now: NowDep
) -> MemberKeyRead:
    """Register a member's X25519 public key for end-to-end delivery (once; same key is a no-op)."""
    await lock_member_keys(session, member_id)
    await _refuse_if_forgotten(session, member_id, body.public_key)
    # Insert unless registered, then judge the stored row: two registrations at once (a
    # retried PUT beside a slow first one) both answer as the second would, not one of them
    # with the unique index's error.
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    await session.execute(
        insert(MemberKey)
        .values(
            member_id=member_id,
            team_id=team_id,
            public_key=body.public_key,
            endorsement=body.endorsement,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    # Again, now that this transaction writes: on SQLite a forget that committed since the
    # first look is seen here (writers take turns), so it cannot be undone by this insert.
    await _refuse_if_forgotten(session, member_id, body.public_key)
    row = await session.get(MemberKey, member_id, populate_existing=True)
    if row is None:
        raise RuntimeError("a member key vanished while it was registered")  # lock held
    if row.team_id != team_id or not hmac.compare_digest(row.public_key, body.public_key):
        # A registered key is never replaced through the gateway: otherwise a compromised
        # gateway could swap in a key of its own and have the vault re-wrap data to it.
        raise MemberKeyConflict(
            "This member already registered a different public key; an operator must first "
            "forget it (`taskroute router forget-member-key`)."
        )
    if body.endorsement is not None and body.endorsement != row.endorsement:
        # The same key, endorsed now or endorsed again (a renewal): an endorsement is a public
        # signature the vault checks, so taking a new one on the gateway's word gives the
        # gateway nothing it could not already do (withhold delivery).
        row.endorsement = body.endorsement
        row.updated_at = now
    return MemberKeyRead(
        member_id=row.member_id,
        team_id=row.team_id,
        public_key=row.public_key,
        endorsed=row.endorsement is not None,
        updated_at=row.updated_at,
    )
