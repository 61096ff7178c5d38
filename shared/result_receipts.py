"""The vault's receipt for a confidential result: what the router checks before adopting one.

A member seals a result under a router-signed seal grant naming their lease (:func:`lease_of`).
The vault stores it once per lease and answers with a receipt, a token signed with the vault's
own key (``iss=vault``, ``aud=router``, ``typ=result-receipt``) naming the tenant, the job, the
lease and the record's ``ref``. It is made only for a stored record: the vault's transaction
commits before its answer leaves. The router completes a job with a confidential result only on
a receipt for the job's current lease, and takes the ref from it.

So the gateway, which carries both calls, can neither name a record that does not exist yet (to
fill it later under a kept grant) nor one sealed under a lease that has ended, and as records
are written once, what a reviewer approved or a client read cannot change.
"""

from __future__ import annotations

from datetime import UTC, datetime

RECEIPT_TYPE = "result-receipt"
RECEIPT_ISSUER = "vault"
RECEIPT_AUDIENCE = "router"
# The completion follows the seal at once; a retry seals again (a replay) for a fresh receipt.
RECEIPT_TTL_SECONDS = 600
LEASE_LENGTH = 40


def lease_of(claimed_at: datetime, event_seq: int) -> str:
    """A lease's name: when it began (UTC, to the microsecond) and the job's event sequence
    number since, that of the claim or send-back that began it. Every status change of a job
    adds one to that number and none happens while a lease lasts, so the number alone tells
    a job's leases apart, whatever its clock does; the time is for people reading audits."""
    return f"{claimed_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{event_seq}"
