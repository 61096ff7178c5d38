"""Grants: the router's signed permission to open one record or seal one result.

The gateway forwards a grant but cannot forge one: it is a JWT signed with the router's Ed25519
key (``iss=router``, ``aud=vault``, ``typ=grant``, about a minute of life), verified by the app's
:class:`shared.service_auth.ServiceIdentity`. This module checks what a verified grant *says*:
that its claims are well formed, that it is for the action being attempted, and, for an open,
that the stored record is exactly the one the grant names (tenant, job, purpose and ref all
equal). Anything else is a :class:`GrantRefused`, which the service audits before refusing.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.vault.domain.envelope import PURPOSES
from services.vault.domain.errors import GrantRefused
from shared.member_endorsements import MAX_ENDORSEMENT_CHARS, UnendorsedKey, require_endorsed

ACTIONS = ("open", "seal")
# member:<id> or tenant:<id>; ids are opaque but short and plain so they are safe to store.
_SUBJECT = re.compile(r"^(member|tenant):[A-Za-z0-9._-]{1,128}$")
# shared.result_receipts.lease_of: when the holder's lease began, and its event sequence number.
_LEASE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z#[0-9]{1,12}")
# base64url (unpadded, canonical) of a raw 32-byte X25519 public key: 43 characters.
_PUBLIC_KEY = re.compile(r"^[A-Za-z0-9_\-]{42}[AEIMQUYcgkosw048]$")


@dataclass(frozen=True)
class Grant:
    action: str
    tenant_id: str
    job_id: str
    purpose: str
    ref: str | None
    subject: str
    require_e2e: bool
    grant_id: str | None  # the JWT id, kept in the audit record to tie it to the router's log
    # The member's registered X25519 key (base64url), put in by the router: sealed delivery
    # re-wraps only to this key, never to one the gateway names.
    recipient_public_key: str | None = None
    # A seal grant's lease (shared.result_receipts): the result is stored once per lease, and
    # its receipt names the lease. None from a router older than leases: once per job.
    lease: str | None = None
    # With the recipient key: the team the router issued the grant for, and the member key
    # authority's endorsement of the key, if the member registered one.
    recipient_team_id: str | None = None
    recipient_endorsement: str | None = None

    @property
    def subject_is_member(self) -> bool:
        return self.subject.startswith("member:")


def _uuid(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise GrantRefused(f"The grant's {name} is missing.", reason="malformed_grant")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise GrantRefused(f"The grant's {name} is not a UUID.", reason="malformed_grant") from None


def parse_grant(claims: dict[str, Any]) -> Grant:
    """Turn verified claims into a :class:`Grant`, refusing any malformed field."""
    action = claims.get("action")
    if action not in ACTIONS:
        raise GrantRefused("The grant names no known action.", reason="malformed_grant")
    purpose = claims.get("purpose")
    if purpose not in PURPOSES:
        raise GrantRefused("The grant names no known purpose.", reason="malformed_grant")
    subject = claims.get("subject")
    if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
        raise GrantRefused("The grant's subject is malformed.", reason="malformed_grant")
    require_e2e = claims.get("require_e2e", False)
    if not isinstance(require_e2e, bool):
        raise GrantRefused("The grant's require_e2e is not a boolean.", reason="malformed_grant")
    tenant_id = _uuid(claims.get("tenant_id"), "tenant_id")
    raw_ref = claims.get("ref")
    ref = None if raw_ref is None else _uuid(raw_ref, "ref")
    jti = claims.get("jti")
    recipient = claims.get("recipient_public_key")
    if recipient is not None and (
        not isinstance(recipient, str) or not _PUBLIC_KEY.fullmatch(recipient)
    ):
        raise GrantRefused("The grant's recipient key is malformed.", reason="malformed_grant")
    lease = claims.get("lease")
    if lease is not None and (not isinstance(lease, str) or not _LEASE.fullmatch(lease)):
        raise GrantRefused("The grant's lease is malformed.", reason="malformed_grant")
    raw_team = claims.get("recipient_team_id")
    recipient_team = None if raw_team is None else _uuid(raw_team, "recipient_team_id")
    endorsement = claims.get("recipient_endorsement")
    if endorsement is not None and (
        not isinstance(endorsement, str) or len(endorsement) > MAX_ENDORSEMENT_CHARS
    ):
        raise GrantRefused("The grant's key endorsement is malformed.", reason="malformed_grant")
    return Grant(
        action=str(action),
        tenant_id=tenant_id,
        job_id=_uuid(claims.get("job_id"), "job_id"),
        purpose=str(purpose),
        ref=ref,
        subject=subject,
        require_e2e=require_e2e,
        grant_id=jti if isinstance(jti, str) and len(jti) <= 64 else None,
        recipient_public_key=recipient,
        lease=lease,
        recipient_team_id=recipient_team,
        recipient_endorsement=endorsement,
    )


def require_open_grant(grant: Grant) -> None:
    """A grant usable to read a record's plaintext."""
    if grant.action != "open":
        raise GrantRefused("This grant does not allow opening a record.", reason="wrong_action")
    if grant.ref is None:
        raise GrantRefused("An open grant must name the record (ref).", reason="malformed_grant")
    if grant.subject_is_member and grant.recipient_public_key is not None:
        # The member registered a key: their data leaves the vault only sealed to it. Handing
        # plaintext to the gateway here would let a compromised gateway read what the member's
        # key protects (the sealed path is records/deliver).
        raise GrantRefused(
            "This member registered a public key: confidential data is delivered sealed to it, "
            "never as plaintext.",
            reason="e2e_required",
        )
    if grant.require_e2e and grant.subject_is_member:
        # Policy says confidential data reaches a member only encrypted to the member's own key;
        # handing plaintext to the gateway for a member would break that promise.
        raise GrantRefused(
            "This job requires end-to-end encryption: its confidential data can only be "
            "delivered sealed to the member's registered public key, not as plaintext.",
            reason="e2e_required",
        )


def require_seal_grant(grant: Grant) -> None:
    """A grant usable to seal a job's result."""
    if grant.action != "seal":
        raise GrantRefused("This grant does not allow sealing a record.", reason="wrong_action")
    if grant.purpose != "result":
        raise GrantRefused("A seal grant may only seal a result.", reason="wrong_purpose")
    if grant.ref is not None:
        raise GrantRefused("A seal grant must not name a record.", reason="malformed_grant")


def require_grant_covers(
    grant: Grant, *, tenant_id: str, job_id: str, purpose: str, ref: str
) -> None:
    """The stored record must be exactly the one the grant names."""
    if (grant.tenant_id, grant.job_id, grant.purpose, grant.ref) != (
        tenant_id,
        job_id,
        purpose,
        ref,
    ):
        raise GrantRefused("The grant does not cover this record.", reason="grant_mismatch")


def require_delivery_grant(
    grant: Grant, *, member_key_authority: Ed25519PublicKey | None = None
) -> str:
    """A grant usable to deliver a record sealed to a member's key; returns that key. With a
    member key authority, only a key it endorsed for that member of the grant's team."""
    if grant.action != "open":
        raise GrantRefused("This grant does not allow opening a record.", reason="wrong_action")
    if grant.ref is None:
        raise GrantRefused("An open grant must name the record (ref).", reason="malformed_grant")
    if not grant.subject_is_member or grant.recipient_public_key is None:
        raise GrantRefused(
            "Sealed delivery needs a member grant naming the member's registered key.",
            reason="no_recipient_key",
        )
    if member_key_authority is not None:
        try:
            require_endorsed(
                grant.recipient_endorsement,
                member_key_authority,
                team_id=grant.recipient_team_id,
                member_id=grant.subject.removeprefix("member:"),
                public_key=grant.recipient_public_key,
            )
        except UnendorsedKey as refusal:
            raise GrantRefused(
                f"The member's key is not endorsed by the member key authority ({refusal}); an "
                "operator endorses it with `taskroute members endorse` and the member registers "
                "it again with the endorsement.",
                reason="key_not_endorsed",
            ) from None
    return grant.recipient_public_key
