"""The vault's signed statement of a tenant's sealing keys (shared/sealing_statements.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared.sealing_statements import (
    CLOCK_SKEW_SECONDS,
    STATEMENT_AUDIENCE,
    STATEMENT_TTL_SECONDS,
    STATEMENT_TYPE,
    UnverifiedSealingKey,
    load_vault_public_key,
    require_vouched,
    statement_claims,
    verified_sealing_keys,
)
from shared.service_auth import ServiceIdentity

TENANT = "11111111-1111-4111-8111-111111111111"
KEYS = [{"key_id": "x25519-one", "public_key": "AAAA", "algorithm": "x", "version": 1}]


@pytest.fixture(scope="module")
def vault(keys_dir: Path) -> ServiceIdentity:
    return ServiceIdentity.load(name="vault", keys_dir=keys_dir, peers=())


def _vault_key(keys_dir: Path) -> Any:
    return load_vault_public_key((keys_dir / "vault.pub").read_bytes())


def _statement(vault: ServiceIdentity, **changes: Any) -> str:
    claims = {**statement_claims(TENANT, KEYS), **changes.pop("claims", {})}
    return vault.sign(
        audience=changes.get("audience", STATEMENT_AUDIENCE),
        typ=changes.get("typ", STATEMENT_TYPE),
        ttl_seconds=changes.get("ttl", STATEMENT_TTL_SECONDS),
        claims=claims,
    )


def test_the_vault_s_statement_names_the_tenant_s_keys(vault, keys_dir):
    statement = _statement(vault)
    assert verified_sealing_keys(statement, _vault_key(keys_dir), tenant_id=TENANT) == {
        "x25519-one": "AAAA"
    }
    require_vouched(
        statement, _vault_key(keys_dir), tenant_id=TENANT, key_id="x25519-one", public_key="AAAA"
    )


def test_a_client_clock_behind_the_vault_s_still_takes_its_statement(vault, keys_dir):
    now = int(time.time())
    ahead = jwt.encode(  # issued by a vault whose clock is two minutes ahead of this one
        {
            **statement_claims(TENANT, KEYS),
            "iss": "vault",
            "aud": STATEMENT_AUDIENCE,
            "typ": STATEMENT_TYPE,
            "iat": now + 120,
            "exp": now + 120 + STATEMENT_TTL_SECONDS,
        },
        vault._private_key,  # noqa: SLF001 - the vault's own key, with another clock
        algorithm="EdDSA",
    )
    assert verified_sealing_keys(ahead, _vault_key(keys_dir), tenant_id=TENANT)


def test_a_key_the_statement_does_not_name_is_refused(vault, keys_dir):
    statement = _statement(vault)
    for key_id, public_key in (("x25519-one", "BBBB"), ("x25519-gateway", "AAAA")):
        with pytest.raises(UnverifiedSealingKey):
            require_vouched(
                statement,
                _vault_key(keys_dir),
                tenant_id=TENANT,
                key_id=key_id,
                public_key=public_key,
            )


def test_statements_not_the_vault_s_for_this_tenant_are_refused(vault, keys_dir):
    impostor = Ed25519PrivateKey.generate()
    now = int(time.time())
    forged = jwt.encode(
        {
            **statement_claims(TENANT, KEYS),
            "iss": "vault",
            "aud": STATEMENT_AUDIENCE,
            "typ": STATEMENT_TYPE,
            "iat": now,
            "exp": now + 60,
        },
        impostor,
        algorithm="EdDSA",
    )
    refused = [
        None,
        "",
        "not-a-token",
        forged,  # signed by a key that is not the vault's
        _statement(vault, claims={"tenant_id": "22222222-2222-4222-8222-222222222222"}),
        _statement(vault, typ="result-receipt"),
        _statement(vault, audience="router"),
        _statement(vault, ttl=-CLOCK_SKEW_SECONDS - 10),  # expired, beyond any clock skew
        _statement(vault, claims={"keys": "x25519-one"}),
    ]
    for statement in refused:
        with pytest.raises(UnverifiedSealingKey):
            require_vouched(
                statement,
                _vault_key(keys_dir),
                tenant_id=TENANT,
                key_id="x25519-one",
                public_key="AAAA",
            )


def test_only_an_ed25519_key_pins_the_vault():
    x25519 = X25519PrivateKey.generate().public_key()
    with pytest.raises(ValueError, match="Ed25519"):
        load_vault_public_key(x25519.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))


JOB = "33333333-3333-4333-8333-333333333333"


def test_a_statement_for_a_job_names_that_job_only(vault, keys_dir):
    """A member's result is sealed on a statement for its job: a tenant-wide statement (which
    anyone can fetch for their own tenant) or one for another job is refused."""
    for_job = _statement(vault, claims={"job_id": JOB})
    vouched = verified_sealing_keys(for_job, _vault_key(keys_dir), tenant_id=TENANT, job_id=JOB)
    assert vouched == {"x25519-one": "AAAA"}
    other_job = "44444444-4444-4444-8444-444444444444"
    for statement in (_statement(vault), _statement(vault, claims={"job_id": other_job})):
        with pytest.raises(UnverifiedSealingKey, match="this job"):
            verified_sealing_keys(statement, _vault_key(keys_dir), tenant_id=TENANT, job_id=JOB)
