"""The reference of a job's confidential result, derived from the lease it was sealed under.

A member seals a result under a router-signed seal grant that names their lease. The vault
stores the result under the reference derived here, once per lease; the router, which knows
the job's current lease, accepts a completion only with a reference derived from that lease.
So a result sealed under an earlier lease (a kept grant, a completion lost after its seal)
never becomes the job's result, while a new lease (a send-back, or the next holder after an
expiry) may seal a new one. The vault and the router each compute the reference; neither takes
it from the gateway, which carries both calls.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

# Fixed for ever: the references of results already stored are derived with it.
_NAMESPACE = uuid.UUID("58b74adc-8f2e-4bdb-ab39-40fc90ffb0f1")
LEASE_LENGTH = 40


class SealedBy(StrEnum):
    """Who encrypted the result; part of the reference, since the vault keeps the two kinds in
    different tables and each must have its own id."""

    VAULT = "vault"  # plaintext sent to the vault, sealed there
    MEMBER = "member"  # an envelope the member sealed for the tenant, stored as received


def lease_of(claimed_at: datetime) -> str:
    """A lease's name: the moment it was granted, in UTC to the microsecond. The router sets
    it on every claim and send-back, and never twice to the same instant for one job."""
    return claimed_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def result_ref(*, tenant_id: str, job_id: str, lease: str, sealed_by: SealedBy) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{tenant_id}/{job_id}/result/{lease}/{sealed_by.value}"))


def result_refs(*, tenant_id: str, job_id: str, lease: str) -> frozenset[str]:
    """The references a result sealed under ``lease`` may have."""
    return frozenset(
        result_ref(tenant_id=tenant_id, job_id=job_id, lease=lease, sealed_by=kind)
        for kind in SealedBy
    )
