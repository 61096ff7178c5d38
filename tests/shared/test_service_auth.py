from __future__ import annotations

import time

import jwt
import pytest

from shared.service_auth import (
    CREDENTIAL_TYPE,
    ServiceAuthError,
    ServiceIdentity,
    bearer_token,
    ensure_service_keys,
)


@pytest.fixture
def identities(keys_dir):
    def load(name, peers=("gateway", "router", "vault")):
        return ServiceIdentity.load(name=name, keys_dir=keys_dir, peers=peers)

    return load


def test_a_credential_verifies_only_at_its_audience_and_for_allowed_callers(identities):
    gateway, router, vault = identities("gateway"), identities("router"), identities("vault")
    token = gateway.credential_for("router")
    claims = router.verify(token, typ=CREDENTIAL_TYPE, allowed_issuers=frozenset({"gateway"}))
    assert claims["iss"] == "gateway"
    with pytest.raises(ServiceAuthError):
        vault.verify(token, typ=CREDENTIAL_TYPE, allowed_issuers=frozenset({"gateway"}))
    with pytest.raises(ServiceAuthError):
        router.verify(token, typ=CREDENTIAL_TYPE, allowed_issuers=frozenset({"vault"}))


def test_a_token_of_another_kind_is_refused(identities):
    router, vault = identities("router"), identities("vault")
    grant = router.sign(audience="vault", typ="grant", ttl_seconds=60, claims={})
    with pytest.raises(ServiceAuthError):
        vault.verify(grant, typ=CREDENTIAL_TYPE, allowed_issuers=frozenset({"router"}))


def test_expired_forged_and_unsigned_tokens_are_refused(identities, tmp_path):
    router = identities("router")
    expired = identities("gateway").sign(
        audience="router", typ=CREDENTIAL_TYPE, ttl_seconds=-30, claims={}
    )
    ensure_service_keys(tmp_path, ("gateway",))
    impostor = ServiceIdentity.load(name="gateway", keys_dir=tmp_path, peers=())
    forged = impostor.credential_for("router")
    unsigned = jwt.encode(
        {
            "iss": "gateway",
            "aud": "router",
            "typ": CREDENTIAL_TYPE,
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        key="",
        algorithm="none",
    )
    for token in (expired, forged, unsigned, "tr_client_not_a_jwt"):
        with pytest.raises(ServiceAuthError):
            router.verify(token, typ=CREDENTIAL_TYPE, allowed_issuers=frozenset({"gateway"}))


def test_a_token_signed_to_live_for_years_is_refused(identities):
    """Service tokens live a minute (credentials) to ten (grants, receipts): one signed to live
    longer is refused, so a key stolen once cannot mint a token good for years."""
    gateway, router = identities("gateway"), identities("router")
    allowed = frozenset({"gateway"})
    hour = gateway.sign(audience="router", typ=CREDENTIAL_TYPE, ttl_seconds=3600, claims={})
    assert router.verify(hour, typ=CREDENTIAL_TYPE, allowed_issuers=allowed)["iss"] == "gateway"
    years = gateway.sign(
        audience="router", typ=CREDENTIAL_TYPE, ttl_seconds=10 * 365 * 86_400, claims={}
    )
    with pytest.raises(ServiceAuthError, match="too long"):
        router.verify(years, typ=CREDENTIAL_TYPE, allowed_issuers=allowed)


def test_private_keys_are_owner_only(keys_dir):
    for name in ("gateway", "router", "vault"):
        assert (keys_dir / f"{name}.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer "])
def test_missing_bearer_is_refused(header):
    with pytest.raises(ServiceAuthError):
        bearer_token(header)
