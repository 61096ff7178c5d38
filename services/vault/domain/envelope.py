"""Envelope encryption of confidential records, composed from AES-256-GCM only.

Key hierarchy
-------------
::

    root key (32 bytes, from a RootKeyProvider; never stored in the database)
      └── wraps  tenant key v1, v2, ...  (32 random bytes each; tenant_keys.wrapped_key)
            └── wraps  data key          (32 random bytes per record; records.wrapped_data_key)
                  └── encrypts  payload  (the record's JSON; records.ciphertext)

A tenant key is created on the tenant's first seal. Tenant-key rotation adds a version and
rewraps data keys; crypto-shredding destroys a tenant's wrapped keys, which makes every record of
the tenant unreadable without touching the records. Data keys never leave the vault unwrapped.
Root-key rotation re-wraps only the tenant keys (and sealing keys and the audit key) under the new
root key (:class:`RootKeyRing`, ``services.vault.service.VaultService.rotate_root_key_batch``);
every wrapped key names the root key that wrapped it in its row and in its associated data.

Associated data
---------------
Every AES-GCM call binds a *context* as associated data, so a ciphertext or a wrapped key copied
to another row opens nowhere else. The context has ONE canonical byte encoding::

    b"TRV-AAD1"                      8-byte tag: format and version of this encoding
    u8  len(label)  label            what is being encrypted: "tenant-key", "data-key", "payload"
    u8  n                            number of fields (fixed per label)
    n × ( u32be len(value)  value )  UTF-8 fields in a fixed order per label

and the fields are, per label:

* ``tenant-key``: tenant_id, tenant key version, root key id
* ``audit-key``: audit key version, root key id (the audit chain's MAC key, see
  :mod:`services.vault.domain.audit`)
* ``data-key`` and ``payload``: tenant_id, job_id, purpose, record id, tenant key version

The key id/version is inside the context because AES-GCM is not key-committing: without it a
ciphertext could in principle be made to open "validly" under another key.

Stored format
-------------
Every ciphertext and wrapped key is ``version (1 byte) || nonce (12 bytes) || AES-GCM output``.
Version ``0x01`` is AES-256-GCM with a 96-bit random nonce. Random nonces are safe here: each
data key encrypts exactly one payload, and a tenant key wraps far fewer than the 2^32 messages
after which random 96-bit nonces start to risk a collision.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# 32 bytes: AES-256 everywhere, the size of every key in the hierarchy.
KEY_BYTES = 32
# 96 bits: the nonce size AES-GCM is designed for (other sizes are hashed, and weaker).
NONCE_BYTES = 12
# First byte of every stored ciphertext / wrapped key: AES-256-GCM, random 96-bit nonce.
FORMAT_V1 = b"\x01"
# Tag opening every associated-data encoding; a new encoding gets a new tag.
AAD_TAG = b"TRV-AAD1"
# A field of more than 64 KiB is a bug (ids and labels are tens of bytes): refuse, do not encode.
_MAX_FIELD_BYTES = 65_536
# HKDF "info" labels: one derived key per use, so no key serves two purposes.
_ROOT_KEY_ID_INFO = b"taskroute-vault/root-key-id/v1"
_AUDIT_KEY_INFO = b"taskroute-vault/audit-hmac/v1"

PURPOSES = ("job", "result")


class DecryptionError(Exception):
    """A ciphertext or wrapped key did not authenticate under the given key and context."""


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)


@dataclass(frozen=True)
class RootKey:
    """The vault's root key. Its repr never shows the material."""

    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ValueError(f"a root key is exactly {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return f"RootKey(id={self.key_id}, material=***)"

    __str__ = __repr__

    # Cached: it is public, fixed for the key's life, and asked for several times per seal or
    # open (ring lookup, wrapping context), each time an HKDF otherwise.
    @cached_property
    def key_id(self) -> str:
        """A public fingerprint (16 hex digits) naming this root key in rows and AAD."""
        return _derive(self.material, _ROOT_KEY_ID_INFO)[:8].hex()

    def audit_key(self) -> bytes:
        """The audit MAC key of releases before the stored audit key (``audit_keys``).

        Kept for one purpose: a chain begun by such a release goes on with this key, stored
        wrapped (``audit_keys``, see VaultService in :mod:`services.vault.service`), so root-key
        rotation does not change it.
        """
        return _derive(self.material, _AUDIT_KEY_INFO)


@dataclass(frozen=True)
class RootKeyRing:
    """The root key that wraps (``current``), and the others that may still unwrap.

    During a root-key rotation the vault knows the new key and the previous one(s): new key
    versions are wrapped under ``current``; a stored key names its root key by id
    (``root_key_id``), and :meth:`get` finds the one that opens it. After the rotation every
    stored key is under ``current`` and the previous keys can be removed.
    """

    current: RootKey
    previous: tuple[RootKey, ...] = ()

    def __post_init__(self) -> None:
        # The current key listed again, or a key listed twice, is the same key: keep one.
        seen = {self.current.key_id}
        unique: list[RootKey] = []
        for key in self.previous:
            if key.key_id not in seen:
                seen.add(key.key_id)
                unique.append(key)
        object.__setattr__(self, "previous", tuple(unique))

    def __repr__(self) -> str:
        return f"RootKeyRing(current={self.current.key_id}, previous={list(self.key_ids[1:])})"

    __str__ = __repr__

    @property
    def key_ids(self) -> tuple[str, ...]:
        return (self.current.key_id, *(key.key_id for key in self.previous))

    def get(self, key_id: str) -> RootKey | None:
        """The known root key with this id (current or previous), or None."""
        if key_id == self.current.key_id:
            return self.current
        return next((key for key in self.previous if key.key_id == key_id), None)


@dataclass(frozen=True)
class TenantKey:
    """One unwrapped version of a tenant's key, held only for the length of a request."""

    tenant_id: str
    version: int
    material: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"TenantKey(tenant_id={self.tenant_id}, version={self.version}, material=***)"

    __str__ = __repr__


@dataclass(frozen=True)
class RecordContext:
    """What a record is: bound into the associated data of its data key and its payload."""

    tenant_id: str
    job_id: str
    purpose: str
    record_id: str
    key_version: int

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}")

    def fields(self) -> tuple[str, ...]:
        return (self.tenant_id, self.job_id, self.purpose, self.record_id, str(self.key_version))


@dataclass(frozen=True)
class SealedRecord:
    """The two stored blobs of a record; both are opaque without the tenant key."""

    wrapped_data_key: bytes
    ciphertext: bytes


def encode_context(label: str, fields: Sequence[str]) -> bytes:
    """The canonical associated-data encoding documented in this module's docstring."""
    label_bytes = label.encode()
    if not 0 < len(label_bytes) < 256 or len(fields) > 255:
        raise ValueError("label or field count out of range")
    parts = [AAD_TAG, struct.pack(">B", len(label_bytes)), label_bytes]
    parts.append(struct.pack(">B", len(fields)))
    for value in fields:
        encoded = value.encode()
        if len(encoded) > _MAX_FIELD_BYTES:
            raise ValueError("context field too long")
        parts.append(struct.pack(">I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a fresh random nonce, in the versioned stored format."""
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_V1 + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Reverse :func:`encrypt`; any mismatch of key, context or bytes is a DecryptionError."""
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT_V1:
        raise DecryptionError("unknown ciphertext format")
    nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag as exc:
        raise DecryptionError("ciphertext did not authenticate") from exc


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def tenant_key_context(tenant_id: str, version: int, root_key_id: str) -> bytes:
    return encode_context("tenant-key", (tenant_id, str(version), root_key_id))


def wrap_tenant_key(root: RootKey, key: TenantKey) -> bytes:
    aad = tenant_key_context(key.tenant_id, key.version, root.key_id)
    return encrypt(root.material, key.material, aad)


def unwrap_tenant_key(root: RootKey, *, tenant_id: str, version: int, wrapped: bytes) -> TenantKey:
    aad = tenant_key_context(tenant_id, version, root.key_id)
    return TenantKey(
        tenant_id=tenant_id, version=version, material=decrypt(root.material, wrapped, aad)
    )


def audit_key_context(version: int, root_key_id: str) -> bytes:
    return encode_context("audit-key", (str(version), root_key_id))


def wrap_audit_key(root: RootKey, *, version: int, material: bytes) -> bytes:
    """The audit chain's MAC key, wrapped under the root key like a tenant key."""
    return encrypt(root.material, material, audit_key_context(version, root.key_id))


def unwrap_audit_key(root: RootKey, *, version: int, wrapped: bytes) -> bytes:
    return decrypt(root.material, wrapped, audit_key_context(version, root.key_id))


def canonical_json(data: Any) -> bytes:
    """The payload's bytes: compact, key order kept, no NaN (it is not JSON)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def seal_record(tenant_key: TenantKey, context: RecordContext, data: Any) -> SealedRecord:
    """Encrypt ``data`` under a fresh data key, and wrap that key under the tenant key."""
    if tenant_key.tenant_id != context.tenant_id or tenant_key.version != context.key_version:
        raise ValueError("tenant key does not match the record context")
    data_key = new_key()
    fields = context.fields()
    ciphertext = encrypt(data_key, canonical_json(data), encode_context("payload", fields))
    wrapped = encrypt(tenant_key.material, data_key, encode_context("data-key", fields))
    return SealedRecord(wrapped_data_key=wrapped, ciphertext=ciphertext)


def open_record(
    tenant_key: TenantKey,
    context: RecordContext,
    sealed: SealedRecord,
    *,
    payload_key_version: int | None = None,
) -> Any:
    """Unwrap the data key and decrypt the payload; DecryptionError if anything was moved.

    ``payload_key_version`` is the key version the payload was first sealed under, when a
    rewrap has since moved the data key to a newer version (see :func:`rewrap_data_key`).
    """
    if tenant_key.tenant_id != context.tenant_id or tenant_key.version != context.key_version:
        raise DecryptionError("tenant key does not match the record context")
    fields = context.fields()
    data_key = decrypt(
        tenant_key.material, sealed.wrapped_data_key, encode_context("data-key", fields)
    )
    payload_context = context
    if payload_key_version is not None:
        payload_context = replace(context, key_version=payload_key_version)
    plaintext = decrypt(
        data_key, sealed.ciphertext, encode_context("payload", payload_context.fields())
    )
    return json.loads(plaintext)


def rewrap_data_key(
    old_key: TenantKey, new_key: TenantKey, context: RecordContext, wrapped: bytes
) -> bytes:
    """Move a record's data key from one tenant key version to another.

    Only the 32-byte data key is decrypted and re-encrypted; the payload is never touched, so
    its associated data keeps naming the version it was sealed under (stored by the caller as
    the record's ``payload_key_version``).
    """
    if old_key.tenant_id != context.tenant_id or old_key.version != context.key_version:
        raise DecryptionError("tenant key does not match the record context")
    if new_key.tenant_id != context.tenant_id:
        raise ValueError("the new key belongs to another tenant")
    data_key = decrypt(old_key.material, wrapped, encode_context("data-key", context.fields()))
    moved = replace(context, key_version=new_key.version)
    return encrypt(new_key.material, data_key, encode_context("data-key", moved.fields()))


def constant_time_equal(left: bytes | str, right: bytes | str) -> bool:
    """Compare two secrets (or MACs) without leaking where they differ."""
    left_bytes = left.encode() if isinstance(left, str) else left
    right_bytes = right.encode() if isinstance(right, str) else right
    return hmac.compare_digest(left_bytes, right_bytes)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()
