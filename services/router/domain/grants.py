"""Grants: the router's signed permission for the vault to open or seal one record.

Design
------
The vault opens a job's sealed confidential data (or seals a result) only when it is shown a
grant: a short-lived JWT signed with the **router's** Ed25519 key (``iss=router``,
``aud=vault``, ``typ=grant``). The router is the only service that knows who holds a job's
lease, so it is the only one that may say "member M may open record R of job J now". The
gateway merely forwards grants; it holds no router key and cannot forge or widen one.

Rules enforced before a grant is built (by the caller, against the stored job):

* ``open`` / purpose ``job``: the job is ``in_progress``, the member holds its lease and the lease
  has not expired, and the job has a ``confidential_ref`` (which becomes ``ref``);
* ``seal`` / purpose ``result``: the same live-lease rule; ``ref`` is null (the vault makes
  one), and ``lease`` names the holder's lease: the vault stores the result once per lease
  and answers with a receipt naming it (shared.result_receipts, :class:`ResultReceipt`),
  which a completion must bring;
* ``open`` / purpose ``result`` for the tenant: the job is completed and has a
  ``confidential_result_ref``. ``require_e2e`` is false there: end-to-end delivery concerns
  members' keys, and the tenant reads its own result.

This module only shapes the claims; signing happens where the key lives (``app.state.identity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class GrantAction(StrEnum):
    OPEN = "open"
    SEAL = "seal"


class GrantPurpose(StrEnum):
    JOB = "job"
    RESULT = "result"


GRANT_AUDIENCE = "vault"
GRANT_TYPE = "grant"


@dataclass(frozen=True)
class GrantClaims:
    action: GrantAction
    tenant_id: str
    job_id: str
    purpose: GrantPurpose
    ref: str | None
    subject: str
    require_e2e: bool
    lease: str | None = None

    def to_claims(self) -> dict[str, Any]:
        lease = {} if self.lease is None else {"lease": self.lease}
        return {
            **lease,
            "action": self.action.value,
            "tenant_id": self.tenant_id,
            "job_id": self.job_id,
            "purpose": self.purpose.value,
            "ref": self.ref,
            "subject": self.subject,
            "require_e2e": self.require_e2e,
        }


def member_grant(
    *,
    action: GrantAction,
    tenant_id: str,
    job_id: str,
    member_id: str,
    confidential_ref: str | None,
    require_e2e: bool,
    lease: str,
) -> GrantClaims:
    """A lease holder's grant: open the job's data, or seal a result under ``lease`` (no ref
    yet: the vault makes one, and answers with a receipt naming it and the lease)."""
    if action is GrantAction.OPEN:
        return GrantClaims(
            action=action,
            tenant_id=tenant_id,
            job_id=job_id,
            purpose=GrantPurpose.JOB,
            ref=confidential_ref,
            subject=f"member:{member_id}",
            require_e2e=require_e2e,
        )
    return GrantClaims(
        action=action,
        tenant_id=tenant_id,
        job_id=job_id,
        purpose=GrantPurpose.RESULT,
        ref=None,
        subject=f"member:{member_id}",
        require_e2e=require_e2e,
        lease=lease,
    )


@dataclass(frozen=True)
class ResultReceipt:
    """What a verified vault receipt says: the result ``ref`` is stored for this tenant's job,
    sealed under ``lease`` (shared.result_receipts)."""

    tenant_id: str
    job_id: str
    lease: str
    ref: str

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> ResultReceipt | None:
        """The receipt, or None if a claim is missing or not a string."""
        values = [claims.get(name) for name in ("tenant_id", "job_id", "lease", "ref")]
        if not all(isinstance(value, str) and value for value in values):
            return None
        tenant_id, job_id, lease, ref = (str(value) for value in values)
        return cls(tenant_id=tenant_id, job_id=job_id, lease=lease, ref=ref)


def tenant_result_grant(*, tenant_id: str, job_id: str, result_ref: str) -> GrantClaims:
    """The job's tenant may open its confidential result."""
    return GrantClaims(
        action=GrantAction.OPEN,
        tenant_id=tenant_id,
        job_id=job_id,
        purpose=GrantPurpose.RESULT,
        ref=result_ref,
        subject=f"tenant:{tenant_id}",
        require_e2e=False,
    )
