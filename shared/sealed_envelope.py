"""Sealed envelopes: client-side end-to-end encryption of confidential job data (version 1).

The byte-exact specification is ``docs/envelope.md``; test vectors are in
``docs/envelope-test-vectors.json``. This module is the reference implementation, used by the
vault, the CLI, the tests and the client SDK. It composes ``cryptography``'s primitives only.

Design:

* **Two layers.** A fresh 256-bit *data key* encrypts the payload with AES-256-GCM (random
  96-bit nonce). The data key itself is wrapped by HPKE (RFC 9180, base mode, suite
  DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM) to the recipient's X25519 public key.
  Delivery to another recipient (a team member) re-wraps only the data key: the payload, its
  nonce and its tag travel untouched and are never decrypted on the way.
* **Bound context, one encoding.** The tenant id, the client's job reference and the key id are
  bound into the HPKE ``info`` and into the payload's associated data by :func:`encode_context`
  (a tag, then length-prefixed UTF-8 fields), so an envelope moved to another tenant, job or key
  does not open. The HPKE ``info`` additionally binds the *recipient* key id, so a wrapped data
  key cannot be presented as wrapped to another key. AES-GCM is not key-committing; binding the
  key id into the associated data is what stops a ciphertext from "validly" opening under another
  key's context.
* **Strict parsing.** :func:`parse` refuses anything but exactly the documented fields with the
  documented types, sizes and canonical unpadded base64url; each failure is a specific
  :class:`EnvelopeError` subclass naming the field. Opening never returns partial plaintext: AES-GCM
  authenticates before it releases a byte.
* **Key hygiene.** Private keys are passed in by the caller and never stored here; the data key
  lives in a local variable for the length of one call. No function logs anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The only envelope version so far; a new layout or suite gets a new number, never a flag.
VERSION = 1
# The HPKE suite of the contract ("Sealed envelopes"); fixed by the version, not negotiable.
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
ALGORITHM = "HPKE-Base-X25519-SHA256-AES256GCM"
# AES-256: the data key's size.
DATA_KEY_BYTES = 32
# X25519 public keys and encapsulated keys (enc) are 32 raw bytes.
X25519_BYTES = 32
# 96 bits: the nonce size AES-GCM is designed for.
NONCE_BYTES = 12
# AES-GCM's full 128-bit tag; shorter tags weaken forgery resistance.
TAG_BYTES = 16
# wrapped_key = enc (32) || HPKE ciphertext of the 32-byte data key (32 + 16 tag).
WRAPPED_KEY_BYTES = X25519_BYTES + DATA_KEY_BYTES + TAG_BYTES
# Larger than any payload the API accepts (64 KiB confidential objects; the benchmark seals
# 1 MiB), small enough that a hostile envelope cannot make a parser allocate without bound.
MAX_CIPHERTEXT_BYTES = 4 * 1024 * 1024
# Identifiers (tenant ids, job references, key ids) are short, printable and unambiguous.
_IDENTIFIER = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Opens every context encoding; a new encoding gets a new tag.
CONTEXT_TAG = b"TRENV1"
INFO_LABEL = "hpke-info"
AAD_LABEL = "payload-aad"
FIELDS = (
    "v",
    "tenant_id",
    "job_ref",
    "key_id",
    "recipient_key_id",
    "wrapped_key",
    "nonce",
    "ciphertext",
    "tag",
)


class EnvelopeError(ValueError):
    """Base of every envelope failure. ``field`` names the part at fault (or None)."""

    code = "invalid-envelope"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MalformedEnvelope(EnvelopeError):
    """A field is missing, extra, of the wrong type, badly encoded or of the wrong length."""

    code = "malformed-envelope"


class UnsupportedVersion(EnvelopeError):
    code = "unsupported-envelope-version"


class ContextMismatch(EnvelopeError):
    """The envelope names another tenant, job reference or key than the opener expects."""

    code = "envelope-context-mismatch"


class DecryptionFailed(EnvelopeError):
    """The wrapped key or the payload did not authenticate: tampered, moved or wrong key."""

    code = "envelope-decryption-failed"


# -- encodings --------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """base64url (RFC 4648 section 5) without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, field: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`: no padding, no other alphabet, canonical."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_\-]*", text):
        raise MalformedEnvelope(f"{field} is not unpadded base64url", field=field)
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedEnvelope(f"{field} is not unpadded base64url", field=field) from None
    if b64url_encode(data) != text:  # non-zero trailing bits: two texts for one value
        raise MalformedEnvelope(f"{field} is not canonical base64url", field=field)
    return data


def encode_context(label: str, fields: tuple[str, ...]) -> bytes:
    """The one canonical context encoding (docs/envelope.md, "Context encoding").

    ``"TRENV1" || u8(len(label)) || label || u8(n) || n × (u16be(len(field)) || field)``,
    every string UTF-8. Length prefixes make the encoding injective: no two field lists
    produce the same bytes.
    """
    label_bytes = label.encode()
    parts = [CONTEXT_TAG, struct.pack(">B", len(label_bytes)), label_bytes]
    parts.append(struct.pack(">B", len(fields)))
    for value in fields:
        encoded = value.encode()
        parts.append(struct.pack(">H", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def hpke_info(*, tenant_id: str, job_ref: str, key_id: str, recipient_key_id: str) -> bytes:
    return encode_context(INFO_LABEL, (tenant_id, job_ref, key_id, recipient_key_id))


def payload_aad(*, tenant_id: str, job_ref: str, key_id: str) -> bytes:
    return encode_context(AAD_LABEL, (tenant_id, job_ref, key_id))


def key_id_for(public_key: X25519PublicKey | bytes) -> str:
    """A public key's id: ``x25519-`` and the first 16 bytes of its SHA-256, base64url.

    Derived from the key, so an id can never silently name a different key.
    """
    raw = public_key if isinstance(public_key, bytes) else public_raw(public_key)
    return "x25519-" + b64url_encode(hashlib.sha256(raw).digest()[:16])


def public_raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# Any private key will do to try a public key: see load_public_key.
_PROBE_KEY = X25519PrivateKey.generate()


def load_public_key(text: str) -> X25519PublicKey:
    """A base64url raw 32-byte X25519 public key, as the API exchanges them.

    Refused, like a malformed one, if it is a low-order point (all zeros, say): any exchange
    with it gives the all-zero secret, which ``cryptography`` refuses, so nothing could ever be
    wrapped to it. One throwaway exchange finds out, so a caller learns it here, as a malformed
    key, rather than as a crash in the middle of sealing.
    """
    raw = b64url_decode(text, field="public_key")
    if len(raw) != X25519_BYTES:
        raise MalformedEnvelope("public_key must be 32 bytes", field="public_key")
    public_key = X25519PublicKey.from_public_bytes(raw)
    try:
        _PROBE_KEY.exchange(public_key)
    except ValueError:
        raise MalformedEnvelope(
            "public_key is not a usable X25519 key (a low-order point)", field="public_key"
        ) from None
    return public_key


def check_public_key(value: str) -> str:
    """``value`` if it is a usable X25519 public key (:func:`load_public_key`), for pydantic
    validators: ValueError, whose message echoes nothing of the value, otherwise."""
    try:
        load_public_key(value)
    except EnvelopeError:
        raise ValueError(
            "must be a usable raw 32-byte X25519 public key in unpadded base64url"
        ) from None
    return value


def _check_identifier(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise MalformedEnvelope(
            f"{field} must be 1-128 characters of letters, digits and . _ : -", field=field
        )
    return value


# -- the envelope -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A parsed version-1 envelope. Everything in it is public; only the keys open it."""

    tenant_id: str
    job_ref: str
    key_id: str
    recipient_key_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes
    tag: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "tenant_id": self.tenant_id,
            "job_ref": self.job_ref,
            "key_id": self.key_id,
            "recipient_key_id": self.recipient_key_id,
            "wrapped_key": b64url_encode(self.wrapped_key),
            "nonce": b64url_encode(self.nonce),
            "ciphertext": b64url_encode(self.ciphertext),
            "tag": b64url_encode(self.tag),
        }

    def info(self) -> bytes:
        return hpke_info(
            tenant_id=self.tenant_id,
            job_ref=self.job_ref,
            key_id=self.key_id,
            recipient_key_id=self.recipient_key_id,
        )

    def aad(self) -> bytes:
        return payload_aad(tenant_id=self.tenant_id, job_ref=self.job_ref, key_id=self.key_id)


def parse(value: Any) -> Envelope:
    """Parse an envelope (a JSON object, or its text) strictly; :class:`EnvelopeError` if not."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            raise MalformedEnvelope("the envelope is not JSON") from None
    if not isinstance(value, Mapping):
        raise MalformedEnvelope("the envelope must be a JSON object")
    version = value.get("v")
    if type(version) is not int or version != VERSION:
        raise UnsupportedVersion(f"envelope version must be {VERSION}", field="v")
    missing = [name for name in FIELDS if name not in value]
    if missing:
        raise MalformedEnvelope(f"missing field {missing[0]}", field=missing[0])
    extra = sorted(str(name) for name in value if name not in FIELDS)
    if extra:
        raise MalformedEnvelope(f"unknown field {extra[0][:40]}", field=extra[0][:40])
    envelope = Envelope(
        tenant_id=_check_identifier(value["tenant_id"], "tenant_id"),
        job_ref=_check_identifier(value["job_ref"], "job_ref"),
        key_id=_check_identifier(value["key_id"], "key_id"),
        recipient_key_id=_check_identifier(value["recipient_key_id"], "recipient_key_id"),
        wrapped_key=b64url_decode(value["wrapped_key"], field="wrapped_key"),
        nonce=b64url_decode(value["nonce"], field="nonce"),
        ciphertext=b64url_decode(value["ciphertext"], field="ciphertext"),
        tag=b64url_decode(value["tag"], field="tag"),
    )
    for name, size in (
        ("wrapped_key", WRAPPED_KEY_BYTES),
        ("nonce", NONCE_BYTES),
        ("tag", TAG_BYTES),
    ):
        if len(getattr(envelope, name)) != size:
            raise MalformedEnvelope(f"{name} must be {size} bytes", field=name)
    if len(envelope.ciphertext) > MAX_CIPHERTEXT_BYTES:
        raise MalformedEnvelope("ciphertext is too large", field="ciphertext")
    return envelope


# -- sealing and opening ------------------------------------------------------------------------


def _wrap(data_key: bytes, public_key: X25519PublicKey, info: bytes) -> bytes:
    # cryptography's single-shot HPKE returns enc || ciphertext, exactly our wrapped_key layout.
    return SUITE.encrypt(data_key, public_key, info=info)


def _unwrap(envelope: Envelope, private_key: X25519PrivateKey) -> bytes:
    try:
        data_key = SUITE.decrypt(envelope.wrapped_key, private_key, info=envelope.info())
    except (InvalidTag, ValueError):
        raise DecryptionFailed(
            "the wrapped key did not open with this key and context", field="wrapped_key"
        ) from None
    if len(data_key) != DATA_KEY_BYTES:
        raise DecryptionFailed("the wrapped key is not a data key", field="wrapped_key")
    return data_key


def seal(
    plaintext: bytes,
    *,
    public_key: X25519PublicKey,
    tenant_id: str,
    job_ref: str,
    key_id: str | None = None,
) -> Envelope:
    """Seal ``plaintext`` to ``public_key`` for (tenant, job reference, key id)."""
    key_id = key_id if key_id is not None else key_id_for(public_key)
    for name, value in (("tenant_id", tenant_id), ("job_ref", job_ref), ("key_id", key_id)):
        _check_identifier(value, name)
    data_key = AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)
    nonce = os.urandom(NONCE_BYTES)
    aad = payload_aad(tenant_id=tenant_id, job_ref=job_ref, key_id=key_id)
    sealed = AESGCM(data_key).encrypt(nonce, plaintext, aad)
    info = hpke_info(tenant_id=tenant_id, job_ref=job_ref, key_id=key_id, recipient_key_id=key_id)
    return Envelope(
        tenant_id=tenant_id,
        job_ref=job_ref,
        key_id=key_id,
        recipient_key_id=key_id,
        wrapped_key=_wrap(data_key, public_key, info),
        nonce=nonce,
        ciphertext=sealed[:-TAG_BYTES],
        tag=sealed[-TAG_BYTES:],
    )


def check_context(
    envelope: Envelope,
    *,
    tenant_id: str | None = None,
    job_ref: str | None = None,
    recipient_key_id: str | None = None,
) -> None:
    """Refuse an envelope that names another tenant, job reference or recipient key."""
    for name, expected in (
        ("tenant_id", tenant_id),
        ("job_ref", job_ref),
        ("recipient_key_id", recipient_key_id),
    ):
        if expected is not None and getattr(envelope, name) != expected:
            raise ContextMismatch(f"the envelope's {name} is not the expected one", field=name)


def _open(envelope: Envelope, private_key: X25519PrivateKey) -> tuple[bytes, bytes]:
    """The data key and the plaintext; the recipient key id must name ``private_key``."""
    check_context(envelope, recipient_key_id=key_id_for(private_key.public_key()))
    data_key = _unwrap(envelope, private_key)
    try:
        plaintext = AESGCM(data_key).decrypt(
            envelope.nonce, envelope.ciphertext + envelope.tag, envelope.aad()
        )
    except InvalidTag:
        raise DecryptionFailed("the payload did not authenticate", field="ciphertext") from None
    return data_key, plaintext


def open_envelope(
    envelope: Envelope,
    private_key: X25519PrivateKey,
    *,
    tenant_id: str | None = None,
    job_ref: str | None = None,
) -> bytes:
    """Open an envelope with the recipient's private key, checking the expected context."""
    check_context(envelope, tenant_id=tenant_id, job_ref=job_ref)
    return _open(envelope, private_key)[1]


def rewrap(
    envelope: Envelope,
    private_key: X25519PrivateKey,
    recipient: X25519PublicKey,
    *,
    check_payload: bool = True,
) -> Envelope:
    """Re-wrap the data key to ``recipient``; the payload, nonce and tag are left untouched.

    With ``check_payload`` (delivery) the payload is authenticated first, so a tampered
    envelope is never forwarded; its plaintext is dropped at once and never returned. Without
    it (bulk rewrap after a key rotation) only the wrapped data key is opened.
    """
    if check_payload:
        data_key, _ = _open(envelope, private_key)
    else:
        check_context(envelope, recipient_key_id=key_id_for(private_key.public_key()))
        data_key = _unwrap(envelope, private_key)
    moved = replace(envelope, recipient_key_id=key_id_for(recipient))
    return replace(moved, wrapped_key=_wrap(data_key, recipient, moved.info()))


def verify(envelope: Envelope, private_key: X25519PrivateKey) -> None:
    """Check that an envelope opens, without returning its plaintext."""
    _open(envelope, private_key)


def seal_json(data: Any, **kwargs: Any) -> Envelope:
    """Seal a JSON value (compact, UTF-8) with :func:`seal`."""
    return seal(canonical_json(data), **kwargs)


def open_json(envelope: Envelope, private_key: X25519PrivateKey, **kwargs: Any) -> Any:
    return json.loads(open_envelope(envelope, private_key, **kwargs))


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
