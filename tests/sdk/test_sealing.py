"""Sealing a member's result in the SDK (services/sdk/_core.py), against statements signed with
the vault's real key: the job's tenant comes from the vault's statement for the job, never from
the gateway's word alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.sdk import _core
from services.sdk.models import TenantKey
from shared import sealed_envelope
from shared.sealing_statements import (
    STATEMENT_AUDIENCE,
    STATEMENT_TTL_SECONDS,
    STATEMENT_TYPE,
    UnverifiedSealingKey,
    load_vault_public_key,
    statement_claims,
)
from shared.service_auth import ServiceIdentity

TENANT = "11111111-1111-4111-8111-111111111111"
OTHER_TENANT = "22222222-2222-4222-8222-222222222222"
JOB = "33333333-3333-4333-8333-333333333333"
OTHER_JOB = "44444444-4444-4444-8444-444444444444"


@pytest.fixture(scope="module")
def vault(keys_dir: Path) -> ServiceIdentity:
    return ServiceIdentity.load(name="vault", keys_dir=keys_dir, peers=())


def _tenant_key(vault: ServiceIdentity, *, tenant: str, job_ref: str, **claims: Any) -> TenantKey:
    public = sealed_envelope.public_raw(X25519PrivateKey.generate().public_key())
    text = sealed_envelope.b64url_encode(public)
    key_id = sealed_envelope.key_id_for(sealed_envelope.load_public_key(text))
    keys = [{"key_id": key_id, "public_key": text}]
    statement = vault.sign(
        audience=STATEMENT_AUDIENCE,
        typ=STATEMENT_TYPE,
        ttl_seconds=STATEMENT_TTL_SECONDS,
        claims={**statement_claims(tenant, keys), **claims},
    )
    return TenantKey(
        tenant_id=tenant,
        job_ref=job_ref,
        key_id=key_id,
        public_key=text,
        algorithm=sealed_envelope.ALGORITHM,
        statement=statement,
    )


def test_a_result_is_sealed_on_the_vault_s_statement_for_its_job(vault, keys_dir):
    pinned = load_vault_public_key((keys_dir / "vault.pub").read_bytes())
    key = _tenant_key(vault, tenant=TENANT, job_ref=JOB, job_id=JOB)
    envelope = _core.seal_result({"s": 1}, key, job_id=JOB.upper(), vault_key=pinned)
    parsed = sealed_envelope.parse(envelope)
    assert (parsed.tenant_id, parsed.job_ref) == (TENANT, JOB)


def test_a_gateway_cannot_send_a_member_s_result_to_another_tenant(vault, keys_dir):
    """What a compromised gateway could offer instead: another tenant's genuine tenant-wide
    statement (any client fetches its own), a statement for another job, or the right
    statement under another job reference."""
    pinned = load_vault_public_key((keys_dir / "vault.pub").read_bytes())
    offers = [
        _tenant_key(vault, tenant=OTHER_TENANT, job_ref=JOB),
        _tenant_key(vault, tenant=OTHER_TENANT, job_ref=JOB, job_id=OTHER_JOB),
        _tenant_key(vault, tenant=TENANT, job_ref=OTHER_JOB, job_id=JOB),
    ]
    for key in offers:
        with pytest.raises(UnverifiedSealingKey):
            _core.seal_result({"s": 1}, key, job_id=JOB, vault_key=pinned)
    # Without a pin the member trusts the gateway (as documented), but never for another job.
    with pytest.raises(UnverifiedSealingKey):
        _core.seal_result({"s": 1}, offers[2], job_id=JOB, vault_key=None)
