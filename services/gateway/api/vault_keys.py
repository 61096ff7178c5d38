"""The tenant's vault public keys, for clients that seal confidential data themselves.

A client seals with :mod:`shared.sealed_envelope` (docs/envelope.md) to one of these keys and
sends the envelope as ``confidential_sealed``; the gateway never holds a private key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.gateway.api.deps import ClientDep, VaultDep
from services.gateway.api.routing import public_router

router = public_router(prefix="/v1/vault", tag="vault")


class VaultPublicKey(BaseModel):
    key_id: str
    public_key: str = Field(description="X25519 public key: 32 raw bytes, base64url unpadded.")
    algorithm: str
    created_at: datetime


# The vault signs its answer (shared/sealing_statements.py): the gateway passes it on.
STATEMENT_DESCRIPTION = (
    "The vault's signed statement of {what} (a JWT: iss vault, aud tenant, typ sealing-keys, "
    "with tenant_id and keys). Verify it with the vault's public key before sealing, so that "
    "not even the gateway can substitute a key."
)


class VaultPublicKeyList(BaseModel):
    keys: list[VaultPublicKey] = Field(description="Newest first: seal new data to the first.")
    tenant_id: str = Field(description="The tenant id to bind envelopes to (`tenant_id`).")
    statement: str | None = Field(
        default=None, description=STATEMENT_DESCRIPTION.format(what="these keys")
    )


@router.get("/public-key", response_model=VaultPublicKeyList)
async def vault_public_keys(client: ClientDep, vault: VaultDep) -> dict[str, Any]:
    """The tenant's current vault public key(s), with key ids, for `confidential_sealed`."""
    answer = await vault.sealing_keys(tenant_id=client.tenant)
    if not isinstance(answer, dict):
        return {"keys": [], "tenant_id": client.tenant}
    return {
        "keys": answer.get("keys", []),
        "tenant_id": client.tenant,
        "statement": answer.get("statement"),
    }
