"""The vault's pure logic: envelope crypto, associated data, the audit chain, grants, keys."""

from __future__ import annotations

import base64
import dataclasses
import os
import stat
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.vault.domain import audit, envelope
from services.vault.domain.errors import GrantRefused
from services.vault.domain.grants import (
    Grant,
    parse_grant,
    require_grant_covers,
    require_open_grant,
    require_seal_grant,
)
from services.vault.keys import EnvRootKeyProvider, FileRootKeyProvider, root_key_provider
from services.vault.settings import VaultSettings
from tests.vault.factories import new_uuid

# --- envelope -------------------------------------------------------------------------------


def _tenant_key(tenant_id: str | None = None, version: int = 1) -> envelope.TenantKey:
    return envelope.TenantKey(
        tenant_id=tenant_id or new_uuid(), version=version, material=envelope.new_key()
    )


def _context(key: envelope.TenantKey, **overrides: object) -> envelope.RecordContext:
    fields: dict[str, object] = {
        "tenant_id": key.tenant_id,
        "job_id": new_uuid(),
        "purpose": "job",
        "record_id": new_uuid(),
        "key_version": key.version,
    }
    fields.update(overrides)
    return envelope.RecordContext(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        {"ssn": "123-45-6789", "nested": {"list": [1, 2.5, None, True]}},
        ["a", "b"],
        "plain string with ünïcødé and 日本語",
        None,
        0,
        {},
    ],
)
def test_seal_and_open_round_trip(data):
    key = _tenant_key()
    context = _context(key)
    sealed = envelope.seal_record(key, context, data)
    assert envelope.open_record(key, context, sealed) == data


def test_stored_format_is_versioned_with_random_nonces():
    key = _tenant_key()
    context = _context(key)
    first = envelope.seal_record(key, context, {"x": 1})
    second = envelope.seal_record(key, context, {"x": 1})
    for blob in (first.ciphertext, first.wrapped_data_key):
        assert blob[:1] == envelope.FORMAT_V1
    # version + 96-bit nonce + 32-byte data key + 128-bit tag
    assert len(first.wrapped_data_key) == 1 + 12 + 32 + 16
    assert first.ciphertext[1:13] != second.ciphertext[1:13]
    assert first.ciphertext != second.ciphertext


@pytest.mark.parametrize(
    "moved",
    [
        {"tenant_id": "other-tenant"},
        {"job_id": "other-job"},
        {"purpose": "result"},
        {"record_id": "other-record"},
    ],
)
def test_a_record_moved_to_another_context_does_not_open(moved):
    key = _tenant_key()
    context = _context(key)
    sealed = envelope.seal_record(key, context, {"secret": "s"})
    elsewhere = dataclasses.replace(context, **moved)
    # Same tenant key material, so only the associated data stops it.
    same_material = envelope.TenantKey(
        tenant_id=elsewhere.tenant_id, version=key.version, material=key.material
    )
    with pytest.raises(envelope.DecryptionError):
        envelope.open_record(same_material, elsewhere, sealed)


def test_a_record_under_another_key_version_does_not_open():
    key = _tenant_key()
    context = _context(key)
    sealed = envelope.seal_record(key, context, {"secret": "s"})
    v2 = envelope.TenantKey(tenant_id=key.tenant_id, version=2, material=key.material)
    with pytest.raises(envelope.DecryptionError):
        envelope.open_record(v2, dataclasses.replace(context, key_version=2), sealed)


def test_another_tenants_key_does_not_open():
    key = _tenant_key()
    context = _context(key)
    sealed = envelope.seal_record(key, context, {"secret": "s"})
    other = envelope.TenantKey(tenant_id=key.tenant_id, version=1, material=envelope.new_key())
    with pytest.raises(envelope.DecryptionError):
        envelope.open_record(other, context, sealed)


def test_swapping_blobs_between_two_records_does_not_open():
    key = _tenant_key()
    first_context, second_context = _context(key), _context(key)
    first = envelope.seal_record(key, first_context, {"n": 1})
    second = envelope.seal_record(key, second_context, {"n": 2})
    mixed = envelope.SealedRecord(
        wrapped_data_key=first.wrapped_data_key, ciphertext=second.ciphertext
    )
    for context in (first_context, second_context):
        with pytest.raises(envelope.DecryptionError):
            envelope.open_record(key, context, mixed)


@pytest.mark.parametrize("field", ["ciphertext", "wrapped_data_key"])
@pytest.mark.parametrize("position", [0, 1, 12, 13, -1])
def test_any_tampered_byte_is_detected(field, position):
    key = _tenant_key()
    context = _context(key)
    sealed = envelope.seal_record(key, context, {"secret": "s"})
    blob = bytearray(getattr(sealed, field))
    blob[position] ^= 0x01
    tampered = dataclasses.replace(sealed, **{field: bytes(blob)})
    with pytest.raises(envelope.DecryptionError):
        envelope.open_record(key, context, tampered)


def test_truncated_blob_is_refused():
    key = _tenant_key()
    context = _context(key)
    sealed = envelope.seal_record(key, context, {"secret": "s"})
    with pytest.raises(envelope.DecryptionError):
        envelope.open_record(key, context, dataclasses.replace(sealed, ciphertext=b"\x01abc"))


def test_tenant_key_wrap_is_bound_to_tenant_version_and_root():
    root = envelope.RootKey(os.urandom(32))
    key = _tenant_key()
    wrapped = envelope.wrap_tenant_key(root, key)
    opened = envelope.unwrap_tenant_key(
        root, tenant_id=key.tenant_id, version=key.version, wrapped=wrapped
    )
    assert opened.material == key.material
    with pytest.raises(envelope.DecryptionError):
        envelope.unwrap_tenant_key(root, tenant_id=new_uuid(), version=1, wrapped=wrapped)
    with pytest.raises(envelope.DecryptionError):
        envelope.unwrap_tenant_key(root, tenant_id=key.tenant_id, version=2, wrapped=wrapped)
    with pytest.raises(envelope.DecryptionError):
        envelope.unwrap_tenant_key(
            envelope.RootKey(os.urandom(32)),
            tenant_id=key.tenant_id,
            version=1,
            wrapped=wrapped,
        )


def test_context_encoding_is_the_documented_bytes():
    encoded = envelope.encode_context("payload", ("ab", "c"))
    assert encoded == (
        b"TRV-AAD1" + b"\x07payload" + b"\x02" + b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x01c"
    )
    # Length prefixes keep field boundaries: no two field lists share an encoding.
    assert encoded != envelope.encode_context("payload", ("a", "bc"))
    assert envelope.encode_context("data-key", ("x",)) != envelope.encode_context("payload", ("x",))


def test_unknown_purpose_is_refused():
    with pytest.raises(ValueError, match="purpose"):
        envelope.RecordContext(
            tenant_id="t", job_id="j", purpose="other", record_id="r", key_version=1
        )


def test_key_objects_never_print_their_material():
    material = os.urandom(32)
    root = envelope.RootKey(material)
    tenant = envelope.TenantKey(tenant_id="t", version=1, material=material)
    for text in (
        repr(root),
        str(root),
        repr(tenant),
        str(tenant),
        repr(EnvRootKeyProvider(material)),
    ):
        assert "***" in text
        assert material.hex() not in text
        assert str(material) not in text
    assert root.key_id in repr(root)


def test_root_key_must_be_32_bytes():
    with pytest.raises(ValueError, match="32 bytes"):
        envelope.RootKey(b"short")


def test_audit_key_differs_from_root_key_and_is_stable():
    material = os.urandom(32)
    root = envelope.RootKey(material)
    assert root.audit_key() != material
    assert root.audit_key() == envelope.RootKey(material).audit_key()
    assert len(root.key_id) == 16


# --- audit chain ----------------------------------------------------------------------------

_T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _entries(count: int) -> list[audit.AuditEntry]:
    return [
        audit.AuditEntry(
            seq=n,
            at=_T0 + timedelta(seconds=n),
            action="open" if n % 2 else "seal",
            outcome="ok",
            reason=None,
            tenant_id=new_uuid(),
            job_id=new_uuid(),
            ref=new_uuid(),
            subject="member:m1",
            actor="gateway",
            grant_id=None,
        )
        for n in range(1, count + 1)
    ]


def _build(key: bytes, count: int) -> tuple[list[audit.ChainedEntry], audit.ChainHead]:
    chained: list[audit.ChainedEntry] = []
    prev = audit.GENESIS_HASH
    for entry in _entries(count):
        record = audit.chain(key, entry, prev)
        chained.append(record)
        prev = record.hash
    head = audit.ChainHead(seq=count, hash=prev, mac=audit.head_mac(key, count, prev))
    return chained, head


def _verify(key: bytes, records, head) -> audit.Verification:
    verifier = audit.ChainVerifier(key)
    verifier.feed(records)
    return verifier.finish(head)


def test_intact_chain_verifies():
    key = os.urandom(32)
    records, head = _build(key, 5)
    result = _verify(key, records, head)
    assert result == audit.Verification(valid=True, records=5, first_invalid=None, problem=None)


def test_empty_chain_verifies():
    assert _verify(os.urandom(32), [], None).valid


def test_altered_record_is_found():
    key = os.urandom(32)
    records, head = _build(key, 5)
    altered = dataclasses.replace(records[2].entry, subject="member:someone-else")
    records[2] = dataclasses.replace(records[2], entry=altered)
    result = _verify(key, records, head)
    assert (result.valid, result.first_invalid, result.problem) == (False, 3, "record_altered")


def test_rehashed_record_still_breaks_the_next_link():
    key = os.urandom(32)
    records, head = _build(key, 5)
    forged = dataclasses.replace(records[1].entry, outcome="refused")
    # An attacker with the key could recompute this hash; without it the link to 3 breaks anyway.
    records[1] = audit.chain(key, forged, records[1].prev_hash)
    result = _verify(key, records, head)
    assert (result.valid, result.first_invalid, result.problem) == (False, 3, "broken_link")


def test_deleted_record_is_found():
    key = os.urandom(32)
    records, head = _build(key, 5)
    del records[1]
    result = _verify(key, records, head)
    assert (result.valid, result.first_invalid) == (False, 2)


def test_truncated_tail_is_found_through_the_head():
    key = os.urandom(32)
    records, head = _build(key, 5)
    result = _verify(key, records[:3], head)
    assert (result.valid, result.first_invalid) == (False, 4)


def test_head_rolled_back_without_its_key_is_found():
    key = os.urandom(32)
    records, _ = _build(key, 5)
    fake_head = audit.ChainHead(seq=3, hash=records[2].hash, mac="00" * 32)
    result = _verify(key, records[:3], fake_head)
    assert (result.valid, result.problem) == (False, "head_altered")


def test_chain_under_another_key_is_invalid():
    records, head = _build(os.urandom(32), 3)
    assert not _verify(os.urandom(32), records, head).valid


def test_absent_and_empty_fields_hash_differently():
    entry = _entries(1)[0]
    assert entry.canonical() != dataclasses.replace(entry, reason="").canonical()


# --- grants ---------------------------------------------------------------------------------


def _claims(**overrides: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "action": "open",
        "tenant_id": new_uuid(),
        "job_id": new_uuid(),
        "purpose": "job",
        "ref": new_uuid(),
        "subject": "member:abc",
        "require_e2e": False,
        "jti": "j1",
    }
    claims.update(overrides)
    return claims


def test_valid_grant_parses():
    claims = _claims()
    grant = parse_grant(claims)
    assert (grant.action, grant.tenant_id, grant.ref, grant.grant_id) == (
        "open",
        claims["tenant_id"],
        claims["ref"],
        "j1",
    )
    require_open_grant(grant)


@pytest.mark.parametrize(
    "overrides",
    [
        {"action": "delete"},
        {"purpose": "secrets"},
        {"tenant_id": "not-a-uuid"},
        {"tenant_id": None},
        {"job_id": 42},
        {"ref": "../../etc"},
        {"subject": "operator"},
        {"subject": "member:" + "x" * 500},
        {"require_e2e": "yes"},
    ],
)
def test_malformed_grants_are_refused(overrides):
    with pytest.raises(GrantRefused) as caught:
        parse_grant(_claims(**overrides))
    assert caught.value.status == 403


def test_open_grant_rules():
    with pytest.raises(GrantRefused, match="does not allow opening"):
        require_open_grant(parse_grant(_claims(action="seal")))
    with pytest.raises(GrantRefused, match="must name the record"):
        require_open_grant(parse_grant(_claims(ref=None)))
    with pytest.raises(GrantRefused, match="end-to-end"):
        require_open_grant(parse_grant(_claims(require_e2e=True)))
    tenant = new_uuid()
    # A tenant reading its own result is not a member: require_e2e does not apply.
    require_open_grant(parse_grant(_claims(require_e2e=True, subject=f"tenant:{tenant}")))


def test_seal_grant_rules():
    require_seal_grant(parse_grant(_claims(action="seal", purpose="result", ref=None)))
    with pytest.raises(GrantRefused, match="only seal a result"):
        require_seal_grant(parse_grant(_claims(action="seal", purpose="job", ref=None)))
    with pytest.raises(GrantRefused, match="does not allow sealing"):
        require_seal_grant(parse_grant(_claims(purpose="result", ref=None)))
    with pytest.raises(GrantRefused, match="must not name"):
        require_seal_grant(parse_grant(_claims(action="seal", purpose="result")))


@pytest.mark.parametrize("field", ["tenant_id", "job_id", "purpose", "ref"])
def test_grant_must_cover_the_exact_record(field):
    grant = parse_grant(_claims())
    record = {
        "tenant_id": grant.tenant_id,
        "job_id": grant.job_id,
        "purpose": grant.purpose,
        "ref": grant.ref,
    }
    require_grant_covers(grant, **record)  # type: ignore[arg-type]
    record[field] = "result" if field == "purpose" else new_uuid()
    with pytest.raises(GrantRefused) as caught:
        require_grant_covers(grant, **record)  # type: ignore[arg-type]
    assert caught.value.reason == "grant_mismatch"


# --- root key providers and settings --------------------------------------------------------


def test_file_provider_generates_a_private_32_byte_key_once(tmp_path: Path):
    path = tmp_path / "sub" / "vault-root.key"
    first = FileRootKeyProvider(path, generate=True).load()
    assert first is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == first.material
    second = FileRootKeyProvider(path, generate=True).load()
    assert second is not None
    assert second.material == first.material
    assert [p.name for p in path.parent.iterdir()] == ["vault-root.key"]


def test_file_provider_racing_processes_agree_on_one_key(tmp_path: Path):
    path = tmp_path / "vault-root.key"
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        key = FileRootKeyProvider(path, generate=True).load()
        assert key is not None
        results.append(key.material)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert len(set(results)) == 1


def test_file_provider_without_generation_is_sealed(tmp_path: Path):
    path = tmp_path / "vault-root.key"
    assert FileRootKeyProvider(path, generate=False).load() is None
    assert not path.exists()


def test_file_provider_refuses_a_wrong_sized_key(tmp_path: Path):
    path = tmp_path / "vault-root.key"
    path.write_bytes(b"x" * 31)
    with pytest.raises(RuntimeError, match="32 bytes"):
        FileRootKeyProvider(path, generate=True).load()


def test_env_root_key_is_selected_and_validated(tmp_path: Path):
    material = os.urandom(32)
    settings = VaultSettings(data_dir=tmp_path, root_key=base64.b64encode(material).decode())
    provider = root_key_provider(settings)
    assert isinstance(provider, EnvRootKeyProvider)
    key = provider.load()
    assert key.material == material
    assert base64.b64encode(material).decode() not in repr(settings)


@pytest.mark.parametrize("bad", ["not base64!!", base64.b64encode(b"x" * 16).decode()])
def test_bad_env_root_key_is_refused_without_echoing_it(bad: str):
    with pytest.raises(ValidationError) as caught:
        VaultSettings(root_key=bad)
    assert bad not in str(caught.value)


def test_env_variable_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    material = os.urandom(32)
    monkeypatch.setenv("TASKROUTE_VAULT_ROOT_KEY", base64.b64encode(material).decode())
    monkeypatch.setenv("TASKROUTE_VAULT_GENERATE_ROOT_KEY", "false")
    monkeypatch.setenv("TASKROUTE_DATA_DIR", str(tmp_path))
    settings = VaultSettings()
    assert settings.root_key_bytes() == material
    assert settings.generate_root_key is False
    assert settings.resolved_root_key_file() == tmp_path / "vault-root.key"
    assert settings.port == 8002


def test_production_never_generates_a_root_key():
    url = "postgresql+asyncpg://h/db"
    assert VaultSettings(environment="production", database_url=url).generate_root_key is False
    with pytest.raises(ValidationError, match="refused in production"):
        VaultSettings(environment="production", database_url=url, generate_root_key=True)


def test_a_member_with_a_registered_key_never_gets_plaintext():
    grant = Grant(
        action="open",
        tenant_id=str(uuid.uuid4()),
        job_id=str(uuid.uuid4()),
        purpose="job",
        ref=str(uuid.uuid4()),
        subject=f"member:{uuid.uuid4()}",
        require_e2e=False,
        grant_id=None,
        recipient_public_key="A" * 43,
    )
    with pytest.raises(GrantRefused):
        require_open_grant(grant)
    # Without a registered key (and without require_e2e) the plaintext path stays open.
    require_open_grant(dataclasses.replace(grant, recipient_public_key=None))


def test_an_audit_record_says_only_words_of_the_vocabulary():
    """The audit log's filters take only audit.ACTIONS and audit.OUTCOMES: a record saying
    anything else could never be found, so the service refuses to write one."""
    from services.vault.service import _Fields

    assert _Fields(action="rotate-root", outcome="ok").action in audit.ACTIONS
    for action, outcome in (("teleport", "ok"), ("seal", "denied")):
        with pytest.raises(ValueError, match="unknown audit"):
            _Fields(action=action, outcome=outcome)
