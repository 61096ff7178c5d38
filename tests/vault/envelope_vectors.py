"""Builds docs/envelope-test-vectors.json (not a test module: pytest does not collect it).

Run ``.venv/bin/python -m tests.vault.envelope_vectors > docs/envelope-test-vectors.json``.

Every input is fixed (keys from fixed seeds, fixed data key, nonce and HPKE ephemeral key), so
the output is byte-for-byte reproducible; ``test_sealed_envelope`` rebuilds it and compares.
``cryptography``'s HPKE draws its ephemeral key itself, so the HPKE layer is computed with the
independent ``pyhpke`` implementation, which accepts a fixed ephemeral key (``eks``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, KEMKeyPair

from shared import sealed_envelope as se

PYHPKE_SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)


def fixed_bytes(label: str, size: int) -> bytes:
    """Deterministic test bytes: SHA-256 of a label, repeated as needed. Never a real key."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def private_key(label: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(fixed_bytes(label, 32))


def raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def pyhpke_wrap(
    data_key: bytes, recipient: X25519PrivateKey, ephemeral: X25519PrivateKey, info: bytes
) -> bytes:
    """enc || HPKE ciphertext of the data key, with a fixed ephemeral key (pyhpke)."""
    eks = KEMKeyPair(
        KEMKey.from_pyca_cryptography_key(ephemeral),
        KEMKey.from_pyca_cryptography_key(ephemeral.public_key()),
    )
    pkr = KEMKey.from_pyca_cryptography_key(recipient.public_key())
    enc, sender = PYHPKE_SUITE.create_sender_context(pkr, info=info, eks=eks)
    return bytes(enc) + bytes(sender.seal(data_key, b""))


def build_envelope(
    *,
    name: str,
    plaintext: bytes,
    tenant_id: str,
    job_ref: str,
    sealer: X25519PrivateKey,
    recipient: X25519PrivateKey,
) -> dict[str, Any]:
    data_key = fixed_bytes(f"{name}/data-key", 32)
    nonce = fixed_bytes(f"{name}/nonce", 12)
    ephemeral = private_key(f"{name}/ephemeral")
    key_id = se.key_id_for(sealer.public_key())
    recipient_key_id = se.key_id_for(recipient.public_key())
    aad = se.payload_aad(tenant_id=tenant_id, job_ref=job_ref, key_id=key_id)
    info = se.hpke_info(
        tenant_id=tenant_id, job_ref=job_ref, key_id=key_id, recipient_key_id=recipient_key_id
    )
    sealed = AESGCM(data_key).encrypt(nonce, plaintext, aad)
    envelope = se.Envelope(
        tenant_id=tenant_id,
        job_ref=job_ref,
        key_id=key_id,
        recipient_key_id=recipient_key_id,
        wrapped_key=pyhpke_wrap(data_key, recipient, ephemeral, info),
        nonce=nonce,
        ciphertext=sealed[: -se.TAG_BYTES],
        tag=sealed[-se.TAG_BYTES :],
    )
    return {
        "name": name,
        "recipient_private_key": se.b64url_encode(raw_private(recipient)),
        "recipient_public_key": se.b64url_encode(se.public_raw(recipient.public_key())),
        "sealer_public_key": se.b64url_encode(se.public_raw(sealer.public_key())),
        "ephemeral_private_key": se.b64url_encode(raw_private(ephemeral)),
        "data_key": data_key.hex(),
        "nonce": nonce.hex(),
        "plaintext": plaintext.hex(),
        "hpke_info": info.hex(),
        "payload_aad": aad.hex(),
        "aes_gcm_ciphertext_and_tag": sealed.hex(),
        "envelope": envelope.to_json(),
    }


def tampered(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """Envelopes that must be refused, with the error class and field expected."""

    def flip(text: str) -> str:
        first = "B" if text[0] == "A" else "A"
        return first + text[1:]

    cases: list[dict[str, Any]] = []

    def case(name: str, error: str, field: str | None, **changes: Any) -> None:
        body = {**envelope, **changes}
        cases.append({"name": name, "error": error, "field": field, "envelope": body})

    case("version 2", "UnsupportedVersion", "v", v=2)
    case(
        "wrapped_key flipped",
        "DecryptionFailed",
        "wrapped_key",
        wrapped_key=flip(envelope["wrapped_key"]),
    )
    case(
        "wrapped_key truncated",
        "MalformedEnvelope",
        "wrapped_key",
        wrapped_key=envelope["wrapped_key"][:-2],
    )
    case("nonce flipped", "DecryptionFailed", "ciphertext", nonce=flip(envelope["nonce"]))
    case(
        "ciphertext flipped",
        "DecryptionFailed",
        "ciphertext",
        ciphertext=flip(envelope["ciphertext"]),
    )
    case("tag flipped", "DecryptionFailed", "ciphertext", tag=flip(envelope["tag"]))
    case("tag truncated", "MalformedEnvelope", "tag", tag=envelope["tag"][:-3])
    case("job_ref moved", "DecryptionFailed", "wrapped_key", job_ref="another-job")
    case("tenant moved", "DecryptionFailed", "wrapped_key", tenant_id="another-tenant")
    case(
        "key_id changed", "DecryptionFailed", "wrapped_key", key_id="x25519-AAAAAAAAAAAAAAAAAAAAAA"
    )
    case("padding", "MalformedEnvelope", "nonce", nonce=envelope["nonce"] + "=")
    cases.append(
        {
            "name": "extra field",
            "error": "MalformedEnvelope",
            "field": "extra",
            "envelope": {**envelope, "extra": "x"},
        }
    )
    return cases


def build() -> dict[str, Any]:
    tenant_key = private_key("tenant-key")
    member_key = private_key("member-key")
    common = {"tenant_id": "3f1c2a9e-7b1d-4c55-9a0e-2b6f1d8c4e71", "job_ref": "acme-2026-0042"}
    to_tenant = build_envelope(
        name="sealed-to-tenant",
        plaintext=b'{"mrn":4711,"patient":"J. Doe"}',
        sealer=tenant_key,
        recipient=tenant_key,
        **common,
    )
    # The same envelope as delivered to a member: same payload bytes, data key re-wrapped.
    to_member = build_envelope(
        name="sealed-to-tenant",
        plaintext=b'{"mrn":4711,"patient":"J. Doe"}',
        sealer=tenant_key,
        recipient=member_key,
        **common,
    )
    to_member["name"] = "rewrapped-to-member"
    empty = build_envelope(
        name="empty-payload", plaintext=b"", sealer=tenant_key, recipient=tenant_key, **common
    )
    return {
        "description": "Taskroute sealed envelope v1 test vectors; see docs/envelope.md.",
        "version": se.VERSION,
        "suite": {
            "kem": "DHKEM(X25519, HKDF-SHA256) 0x0020",
            "kdf": "HKDF-SHA256 0x0001",
            "aead": "AES-256-GCM 0x0002",
            "mode": "base 0x00",
        },
        "key_ids": [
            {
                "public_key": to_tenant["recipient_public_key"],
                "key_id": se.key_id_for(tenant_key.public_key()),
            },
            {
                "public_key": to_member["recipient_public_key"],
                "key_id": se.key_id_for(member_key.public_key()),
            },
        ],
        "context_encodings": [
            {
                "label": se.INFO_LABEL,
                "fields": ["t", "j", "k", "r"],
                "bytes": se.encode_context(se.INFO_LABEL, ("t", "j", "k", "r")).hex(),
            },
            {
                "label": se.AAD_LABEL,
                "fields": ["tenant", "job/é", "key"],
                "bytes": se.encode_context(se.AAD_LABEL, ("tenant", "job/é", "key")).hex(),
            },
        ],
        "envelopes": [to_tenant, to_member, empty],
        "invalid": tampered(to_tenant["envelope"]),
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
