"""The sealed envelope helper (shared/sealed_envelope.py): vectors, interop, tampering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

from shared import sealed_envelope as se
from tests.vault import envelope_vectors

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "envelope-test-vectors.json"
CANARY = b'{"canary":"CANARY-7f3e9b2c-never-in-plaintext"}'
TENANT = "3f1c2a9e-7b1d-4c55-9a0e-2b6f1d8c4e71"
PYHPKE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)


def _vectors() -> dict[str, Any]:
    vectors: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
    return vectors


def _private(text: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(se.b64url_decode(text, field="key"))


def _sealed(plaintext: bytes = CANARY) -> tuple[X25519PrivateKey, se.Envelope]:
    key = X25519PrivateKey.generate()
    envelope = se.seal(plaintext, public_key=key.public_key(), tenant_id=TENANT, job_ref="job-1")
    return key, envelope


# -- test vectors ---------------------------------------------------------------------------


def test_vector_file_is_exactly_what_the_generator_builds():
    assert VECTORS_PATH.read_text() == envelope_vectors.render()


def test_vectors_open_to_their_plaintext():
    vectors = _vectors()
    assert len(vectors["envelopes"]) == 3
    for vector in vectors["envelopes"]:
        envelope = se.parse(vector["envelope"])
        key = _private(vector["recipient_private_key"])
        assert se.open_envelope(envelope, key) == bytes.fromhex(vector["plaintext"])
        assert envelope.info().hex() == vector["hpke_info"]
        assert envelope.aad().hex() == vector["payload_aad"]


def test_vector_aes_gcm_layer_is_byte_exact():
    for vector in _vectors()["envelopes"]:
        aead = AESGCM(bytes.fromhex(vector["data_key"]))
        sealed = aead.encrypt(
            bytes.fromhex(vector["nonce"]),
            bytes.fromhex(vector["plaintext"]),
            bytes.fromhex(vector["payload_aad"]),
        )
        assert sealed.hex() == vector["aes_gcm_ciphertext_and_tag"]
        envelope = se.parse(vector["envelope"])
        assert (envelope.ciphertext + envelope.tag).hex() == vector["aes_gcm_ciphertext_and_tag"]


def test_vector_context_encodings_and_key_ids():
    vectors = _vectors()
    for encoding in vectors["context_encodings"]:
        expected = se.encode_context(encoding["label"], tuple(encoding["fields"]))
        assert expected.hex() == encoding["bytes"]
    for entry in vectors["key_ids"]:
        raw = se.b64url_decode(entry["public_key"], field="public_key")
        assert se.key_id_for(raw) == entry["key_id"]


def test_vector_invalid_envelopes_are_refused_with_the_named_error():
    vectors = _vectors()
    key = _private(vectors["envelopes"][0]["recipient_private_key"])
    assert len(vectors["invalid"]) >= 10
    for case in vectors["invalid"]:
        with pytest.raises(se.EnvelopeError) as caught:
            se.open_envelope(se.parse(case["envelope"]), key)
        assert type(caught.value).__name__ == case["error"], case["name"]
        assert caught.value.field == case["field"], case["name"]


def test_known_answer_aes_256_gcm_from_the_gcm_specification():
    """NIST GCM spec (McGrew & Viega), test case 16: AES-256, 96-bit IV, with AAD."""
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308" * 2)
    iv = bytes.fromhex("cafebabefacedbaddecaf888")
    plaintext = bytes.fromhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    )
    aad = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    expected = (
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        "76fc6ece0f4e1768cddf8853bb2d551b"
    )
    assert AESGCM(key).encrypt(iv, plaintext, aad).hex() == expected


# -- interoperability with an independent HPKE implementation --------------------------------


def test_pyhpke_reproduces_the_vector_wrapped_keys_from_the_fixed_ephemeral_key():
    for vector in _vectors()["envelopes"]:
        wrapped = envelope_vectors.pyhpke_wrap(
            bytes.fromhex(vector["data_key"]),
            _private(vector["recipient_private_key"]),
            _private(vector["ephemeral_private_key"]),
            bytes.fromhex(vector["hpke_info"]),
        )
        assert se.b64url_encode(wrapped) == vector["envelope"]["wrapped_key"]


def test_pyhpke_opens_what_the_helper_seals():
    key, envelope = _sealed()
    skr = KEMKey.from_pyca_cryptography_key(key)
    enc, wrapped = envelope.wrapped_key[:32], envelope.wrapped_key[32:]
    recipient = PYHPKE.create_recipient_context(enc, skr, info=envelope.info())
    data_key = bytes(recipient.open(wrapped, b""))
    assert (
        AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext + envelope.tag, envelope.aad())
        == CANARY
    )


def test_helper_opens_what_pyhpke_seals():
    key = X25519PrivateKey.generate()
    key_id = se.key_id_for(key.public_key())
    context = {"tenant_id": TENANT, "job_ref": "job-9", "key_id": key_id}
    info = se.hpke_info(**context, recipient_key_id=key_id)
    data_key = bytes(range(32))
    enc, sender = PYHPKE.create_sender_context(
        KEMKey.from_pyca_cryptography_key(key.public_key()), info=info
    )
    sealed = AESGCM(data_key).encrypt(b"\x00" * 12, CANARY, se.payload_aad(**context))
    envelope = se.Envelope(
        **context,
        recipient_key_id=key_id,
        wrapped_key=bytes(enc) + bytes(sender.seal(data_key, b"")),
        nonce=b"\x00" * 12,
        ciphertext=sealed[:-16],
        tag=sealed[-16:],
    )
    assert se.open_envelope(se.parse(json.dumps(envelope.to_json())), key) == CANARY


# -- behaviour --------------------------------------------------------------------------------


def test_round_trip_and_json_text():
    key, envelope = _sealed()
    text = json.dumps(envelope.to_json())
    assert CANARY not in text.encode()
    assert se.open_envelope(se.parse(text), key, tenant_id=TENANT, job_ref="job-1") == CANARY


def test_rewrap_moves_only_the_data_key():
    tenant_key, envelope = _sealed()
    member_key = X25519PrivateKey.generate()
    delivered = se.rewrap(envelope, tenant_key, member_key.public_key())
    assert (delivered.nonce, delivered.ciphertext, delivered.tag) == (
        envelope.nonce,
        envelope.ciphertext,
        envelope.tag,
    )
    assert delivered.recipient_key_id == se.key_id_for(member_key.public_key())
    assert delivered.wrapped_key != envelope.wrapped_key
    assert se.open_envelope(delivered, member_key) == CANARY
    # The tenant key no longer opens the delivered envelope, and the member's does not open the
    # original: each wrapped key names its recipient.
    with pytest.raises(se.ContextMismatch):
        se.open_envelope(delivered, tenant_key)
    with pytest.raises(se.ContextMismatch):
        se.open_envelope(envelope, member_key)


def test_rewrap_refuses_a_tampered_payload():
    tenant_key, envelope = _sealed()
    bad = se.Envelope(**{**envelope.__dict__, "tag": bytes(16)})
    with pytest.raises(se.DecryptionFailed):
        se.rewrap(bad, tenant_key, X25519PrivateKey.generate().public_key())


def test_recipient_key_id_forged_to_another_key_does_not_open():
    tenant_key, envelope = _sealed()
    other = X25519PrivateKey.generate()
    forged = se.Envelope(
        **{**envelope.__dict__, "recipient_key_id": se.key_id_for(other.public_key())}
    )
    with pytest.raises(se.DecryptionFailed):
        se.open_envelope(forged, other)


@pytest.mark.parametrize(
    ("expected", "field"),
    [({"tenant_id": "other-tenant"}, "tenant_id"), ({"job_ref": "job-2"}, "job_ref")],
)
def test_unexpected_context_is_refused(expected, field):
    key, envelope = _sealed()
    with pytest.raises(se.ContextMismatch) as caught:
        se.open_envelope(envelope, key, **expected)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "[]",
        {"v": True},
        {"v": "1"},
        {"v": 1},
    ],
)
def test_parser_refuses_non_envelopes(value):
    with pytest.raises(se.EnvelopeError):
        se.parse(value)


def test_a_flipped_bit_anywhere_in_any_field_is_refused():
    """Every bit of every binary field, and every character of every text field."""
    key, envelope = _sealed(b"short")
    for name in ("wrapped_key", "nonce", "ciphertext", "tag"):
        raw = getattr(envelope, name)
        for index in range(len(raw)):
            for bit in range(8):
                changed = bytearray(raw)
                changed[index] ^= 1 << bit
                bad = se.Envelope(**{**envelope.__dict__, name: bytes(changed)})
                with pytest.raises(se.EnvelopeError):
                    se.open_envelope(se.parse(bad.to_json()), key)


_JSON_TEXT = st.text(alphabet=st.characters(codec="ascii"), min_size=0, max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_any_mutation_of_the_json_is_refused_or_opens_to_the_same_plaintext(data):
    key, envelope = _SEALED
    text = json.dumps(envelope.to_json())
    position = data.draw(st.integers(min_value=0, max_value=len(text)))
    kind = data.draw(st.sampled_from(["replace", "delete", "insert", "truncate"]))
    insert = data.draw(_JSON_TEXT)
    if kind == "replace":
        mutated = text[:position] + insert + text[position + 1 :]
    elif kind == "delete":
        mutated = text[:position] + text[position + 1 :]
    elif kind == "insert":
        mutated = text[:position] + insert + text[position:]
    else:
        mutated = text[:position]
    try:
        opened = se.open_envelope(se.parse(mutated), key, tenant_id=TENANT, job_ref="job-1")
    except se.EnvelopeError:
        return
    # Only a change that leaves the envelope's meaning intact (JSON whitespace, key order) may
    # open, and then only to the original plaintext.
    assert se.parse(mutated) == envelope
    assert opened == CANARY


@settings(max_examples=150, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=12), children, max_size=10)
        ),
        max_leaves=20,
    )
)
def test_property_parser_raises_only_envelope_errors(value):
    try:
        se.parse(value)
    except se.EnvelopeError:
        pass


_SEALED = _sealed()
