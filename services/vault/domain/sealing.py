"""Tenant sealing keys: the X25519 key pairs clients seal envelopes to (client-side sealing).

Each tenant has versioned X25519 key pairs, random (not derived from a master), so one tenant's
keys can be destroyed alone. The public half is served to the tenant's clients; the private half
is stored only wrapped by the root key: AES-256-GCM (:func:`envelope.encrypt`) with the tenant,
version, key id and root key id bound as associated data, so a wrapped private key moved to
another tenant or version does not unwrap. An unwrapped private key is held in a local variable
for one request (Python cannot wipe memory; it is never cached, logged or returned).

The envelope format itself is :mod:`shared.sealed_envelope`; this module only keeps its keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.vault.domain import envelope
from shared import sealed_envelope

# The only algorithm a tenant sealing key serves (shared.sealed_envelope, version 1).
ALGORITHM = sealed_envelope.ALGORITHM


@dataclass(frozen=True)
class NewSealingKey:
    """A freshly generated key pair, its private half already wrapped for storage."""

    key_id: str
    public_key: bytes
    wrapped_private_key: bytes = field(repr=False)


def _context(tenant_id: str, version: int, key_id: str, root_key_id: str) -> bytes:
    return envelope.encode_context("sealing-key", (tenant_id, str(version), key_id, root_key_id))


def generate(root: envelope.RootKey, *, tenant_id: str, version: int) -> NewSealingKey:
    private = X25519PrivateKey.generate()
    public = sealed_envelope.public_raw(private.public_key())
    key_id = sealed_envelope.key_id_for(public)
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    wrapped = envelope.encrypt(
        root.material, raw, _context(tenant_id, version, key_id, root.key_id)
    )
    return NewSealingKey(key_id=key_id, public_key=public, wrapped_private_key=wrapped)


def unwrap(
    root: envelope.RootKey, *, tenant_id: str, version: int, key_id: str, wrapped: bytes
) -> X25519PrivateKey:
    """The private key, or :class:`envelope.DecryptionError` if anything was moved or altered."""
    raw = envelope.decrypt(
        root.material, wrapped, _context(tenant_id, version, key_id, root.key_id)
    )
    private = X25519PrivateKey.from_private_bytes(raw)
    if sealed_envelope.key_id_for(private.public_key()) != key_id:
        raise envelope.DecryptionError("the private key does not match its key id")
    return private


def rewrap(
    old_root: envelope.RootKey,
    new_root: envelope.RootKey,
    *,
    tenant_id: str,
    version: int,
    key_id: str,
    wrapped: bytes,
) -> bytes:
    """The private key re-wrapped under another root key (root-key rotation).

    The raw private key exists only inside this call; :class:`envelope.DecryptionError` if the
    stored form does not open under ``old_root`` or does not match its key id.
    """
    private = unwrap(old_root, tenant_id=tenant_id, version=version, key_id=key_id, wrapped=wrapped)
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return envelope.encrypt(
        new_root.material, raw, _context(tenant_id, version, key_id, new_root.key_id)
    )
