"""The result reference both the vault and the router derive from a lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shared.result_refs import SealedBy, lease_of, result_ref, result_refs

TENANT = "11111111-1111-4111-8111-111111111111"
JOB = "22222222-2222-4222-8222-222222222222"
LEASE = "2026-11-29T09:00:00.000000Z"


def test_a_lease_is_named_by_its_instant_whatever_the_zone():
    instant = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    in_kolkata = instant.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert lease_of(instant) == lease_of(in_kolkata) == LEASE
    assert lease_of(instant + timedelta(microseconds=1)) == "2026-11-29T09:00:00.000001Z"


def test_the_reference_is_fixed_for_a_lease_and_differs_between_leases_and_sealers():
    # Pinned: a result already stored is found again only if the derivation never changes.
    vault = result_ref(tenant_id=TENANT, job_id=JOB, lease=LEASE, sealed_by=SealedBy.VAULT)
    assert vault == "98b8d25a-bb07-5700-8aa9-9d2e83753e5c"
    member = result_ref(tenant_id=TENANT, job_id=JOB, lease=LEASE, sealed_by=SealedBy.MEMBER)
    later = result_ref(
        tenant_id=TENANT,
        job_id=JOB,
        lease=LEASE.replace("09:00", "09:05"),
        sealed_by=SealedBy.VAULT,
    )
    other_job = result_ref(tenant_id=TENANT, job_id=TENANT, lease=LEASE, sealed_by=SealedBy.VAULT)
    assert len({vault, member, later, other_job}) == 4
    assert result_refs(tenant_id=TENANT, job_id=JOB, lease=LEASE) == {vault, member}
