"""The vault's signed statement of a tenant's sealing keys, so a client need not trust the gateway.

A client (or a member sealing a result) asks the gateway for the tenant's vault public key and
seals to it. Were the key taken on the gateway's word, a compromised gateway could hand out a
key of its own, open every envelope sealed to it, and pass each on resealed to the real key:
client-side sealing would protect nothing from the one party it is meant to exclude.

So the vault signs what it answers: a token signed with the vault's own Ed25519 key
(``iss=vault``, ``aud=tenant``, ``typ=sealing-keys``, a day) naming the tenant and its keys
(``key_id``, ``public_key``). The gateway passes it on as ``statement``. A client that holds the
vault's public key (``vault.pub``, which the operator hands out like a server certificate)
checks the statement and seals only to a key it names (:func:`verified_sealing_keys`).

A member sealing a result does not know the job's tenant, so a tenant-wide statement would let
a compromised gateway name another tenant (one whose data it can have opened, through jobs of
its own making) and collect the result there. The vault therefore also signs a statement for
one job (``job_id``), and only on a seal grant the router signed for that job's lease holder:
the tenant in it is the router's, not the gateway's. The member checks the job id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

STATEMENT_TYPE = "sealing-keys"
STATEMENT_ISSUER = "vault"
STATEMENT_AUDIENCE = "tenant"
# Long enough to cache; a rotation adds a key, and an older statement still names real keys of
# the tenant (a retired one makes the vault refuse the envelope, never a leak).
STATEMENT_TTL_SECONDS = 86_400
# A client's clock may run behind the vault's: a statement issued "in the future" by a few
# seconds or minutes is still the vault's (the services allow their peers 5 s; clients are
# laptops and phones).
CLOCK_SKEW_SECONDS = 300
_ALGORITHM = "EdDSA"


class UnverifiedSealingKey(ValueError):
    """The key offered is not one the vault vouched for: seal nothing to it."""


def statement_claims(
    tenant_id: str, keys: Sequence[Mapping[str, Any]], *, job_id: str | None = None
) -> dict[str, Any]:
    """What the vault signs: the tenant, each key's id and public key, and, for a member's
    result, the job the router's seal grant named."""
    claims: dict[str, Any] = {
        "tenant_id": tenant_id,
        "keys": [{"key_id": key["key_id"], "public_key": key["public_key"]} for key in keys],
    }
    if job_id is not None:
        claims["job_id"] = job_id
    return claims


def load_vault_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """The vault's Ed25519 public key from its PEM (the ``vault.pub`` file's contents)."""
    key = load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the vault's public key must be an Ed25519 key in PEM")
    return key


def verified_sealing_keys(
    statement: str | None,
    vault_key: Ed25519PublicKey,
    *,
    tenant_id: str,
    job_id: str | None = None,
) -> dict[str, str]:
    """The keys (``key_id`` → ``public_key``) the vault's statement names for ``tenant_id``
    (and, with ``job_id``, for that job); :class:`UnverifiedSealingKey` unless it is a valid,
    unexpired statement of the vault's."""
    if not statement:
        raise UnverifiedSealingKey("the answer carries no statement signed by the vault")
    try:
        claims: dict[str, Any] = jwt.decode(
            statement,
            vault_key,
            algorithms=[_ALGORITHM],
            audience=STATEMENT_AUDIENCE,
            issuer=STATEMENT_ISSUER,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "typ"]},
        )
    except jwt.PyJWTError as exc:
        raise UnverifiedSealingKey("the vault's statement does not verify") from exc
    if claims.get("typ") != STATEMENT_TYPE or claims.get("tenant_id") != tenant_id:
        raise UnverifiedSealingKey("the statement is not the vault's key list for this tenant")
    if job_id is not None and claims.get("job_id") != job_id:
        raise UnverifiedSealingKey("the statement is not the vault's key list for this job")
    keys = claims.get("keys")
    if not isinstance(keys, list):
        raise UnverifiedSealingKey("the statement names no keys")
    return {
        str(key["key_id"]): str(key["public_key"])
        for key in keys
        if isinstance(key, dict) and "key_id" in key and "public_key" in key
    }


def require_vouched(
    statement: str | None,
    vault_key: Ed25519PublicKey,
    *,
    tenant_id: str,
    key_id: str,
    public_key: str,
    job_id: str | None = None,
) -> None:
    """Refuse (:class:`UnverifiedSealingKey`) a key the vault's statement does not name (for
    ``job_id`` too, when given)."""
    vouched = verified_sealing_keys(statement, vault_key, tenant_id=tenant_id, job_id=job_id)
    if vouched.get(key_id) != public_key:
        raise UnverifiedSealingKey("the vault did not vouch for this key")
