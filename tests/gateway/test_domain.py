"""The gateway's pure rules: API keys, data policies, submission checks, views, settings."""

from __future__ import annotations

import math
import os
import re
import stat
from collections import Counter

import pytest
from pydantic import ValidationError

from services.gateway.api.schemas import JobCreate
from services.gateway.domain import api_keys
from services.gateway.domain.api_keys import Role
from services.gateway.domain.errors import JobNotFound, PolicyWidening, WrongRole
from services.gateway.domain.jobs import check_callback_url, check_json_text, check_text
from services.gateway.domain.policy import DataPolicy, PolicyNarrowing, effective_policy
from services.gateway.domain.principal import Principal
from services.gateway.domain.views import client_view, job_id_or_404, member_view
from services.gateway.settings import PEPPER_FILE, GatewaySettings

PEPPER = b"p" * 32
KEY_FORMAT = re.compile(r"^tr_(client|member|operator)_[a-z2-7]{16}_[a-z2-7]{52}$")


# API keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_generated_key_has_the_documented_format(role):
    key = api_keys.generate_key(role, pepper=PEPPER)
    assert KEY_FORMAT.match(key.plaintext)
    assert key.plaintext.startswith(f"tr_{role.value}_")
    assert key.plaintext.startswith(key.lookup_prefix + "_")
    assert api_keys.lookup_prefix(key.plaintext) == key.lookup_prefix


def test_generated_key_secret_carries_at_least_256_bits():
    key = api_keys.generate_key(Role.CLIENT, pepper=PEPPER)
    secret = key.plaintext.rsplit("_", 1)[1]
    assert len(secret) * math.log2(32) >= 256  # base32: 5 bits a character
    # Randomness, not a counter: many keys never repeat a secret or a lookup id, and every
    # base32 character turns up across them.
    keys = [api_keys.generate_key(Role.CLIENT, pepper=PEPPER).plaintext for _ in range(300)]
    assert len({k.rsplit("_", 1)[1] for k in keys}) == 300
    assert len({k.split("_")[2] for k in keys}) == 300
    counts = Counter("".join(k.rsplit("_", 1)[1] for k in keys))
    assert set(counts) == set("abcdefghijklmnopqrstuvwxyz234567")


def test_digest_is_an_hmac_never_the_key():
    key = api_keys.generate_key(Role.OPERATOR, pepper=PEPPER)
    assert key.digest != key.plaintext
    assert key.plaintext not in key.digest
    assert re.fullmatch(r"[0-9a-f]{64}", key.digest)
    # Keyed: the same key under another pepper has another digest.
    assert api_keys.digest_key(key.plaintext, pepper=b"q" * 32) != key.digest
    assert "***" in repr(key)
    assert key.plaintext not in repr(key)


def test_matches_compares_the_whole_key():
    key = api_keys.generate_key(Role.MEMBER, pepper=PEPPER)
    assert api_keys.matches(key.plaintext, key.digest, pepper=PEPPER)
    tampered = key.plaintext[:-1] + ("a" if key.plaintext[-1] != "a" else "b")
    assert not api_keys.matches(tampered, key.digest, pepper=PEPPER)
    assert not api_keys.matches(key.plaintext, key.digest, pepper=b"q" * 32)


def test_lookup_prefix_of_other_strings():
    assert api_keys.lookup_prefix("") is None
    assert api_keys.lookup_prefix("short") is None
    assert api_keys.lookup_prefix("x" * 1000) is None
    bootstrap = "tr_operator_local_" + "Z" * 40
    assert api_keys.lookup_prefix(bootstrap) == bootstrap[: api_keys.BOOTSTRAP_PREFIX_CHARS]
    stored = api_keys.bootstrap_key(bootstrap, pepper=PEPPER)
    assert stored.lookup_prefix == bootstrap[:16]
    assert api_keys.matches(bootstrap, stored.digest, pepper=PEPPER)


# Principals --------------------------------------------------------------------------------


def test_wrong_role_is_forbidden_not_unauthorized():
    member = Principal(key_id="k", role=Role.MEMBER, team_id="t", member_id="m")
    with pytest.raises(WrongRole) as caught:
        member.require(Role.OPERATOR)
    assert caught.value.status == 403
    assert member.require(Role.MEMBER) is member
    assert member.actor == "member:m"
    assert Principal(key_id="k", role=Role.CLIENT, tenant_id="t1").actor == "client:t1"


# Policies ----------------------------------------------------------------------------------


def test_job_policy_narrows_the_tenant_policy():
    tenant = DataPolicy.from_parts(
        allowed_countries=["IN", "PH", "IE"], required_certifications=["ISO27001"]
    )
    job = PolicyNarrowing(
        allowed_countries=("IE", "PH", "US"), required_certifications=("HIPAA",), require_e2e=True
    )
    effective = effective_policy(tenant, job)
    assert effective.allowed_countries == ("IE", "PH")  # US is dropped: never a widening
    assert effective.required_certifications == ("HIPAA", "ISO27001")
    assert effective.require_e2e is True


def test_job_cannot_drop_tenant_requirements():
    tenant = DataPolicy.from_parts(
        allowed_countries=["IN"], required_certifications=["SOC2"], require_e2e=True
    )
    effective = effective_policy(tenant, PolicyNarrowing())
    assert effective == tenant
    assert effective_policy(tenant, None) == tenant


def test_open_tenant_policy_takes_the_job_countries():
    effective = effective_policy(DataPolicy(), PolicyNarrowing(allowed_countries=("cz", "IE")))
    assert effective.allowed_countries == ("CZ", "IE")


def test_disjoint_countries_are_refused():
    tenant = DataPolicy.from_parts(allowed_countries=["IN"])
    with pytest.raises(PolicyWidening) as caught:
        effective_policy(tenant, PolicyNarrowing(allowed_countries=("US",)))
    assert caught.value.status == 422
    assert "allowed_countries" in caught.value.detail


def test_policy_json_round_trip():
    policy = DataPolicy.from_parts(
        allowed_countries=["PH", "IN", "IN"], required_certifications=["GDPR"]
    )
    assert policy.to_json() == {
        "allowed_countries": ["IN", "PH"],
        "required_certifications": ["GDPR"],
        "require_e2e": False,
    }
    assert DataPolicy.from_json(policy.to_json()) == policy
    assert DataPolicy.from_json(None) == DataPolicy()


# Submission checks -------------------------------------------------------------------------


def _job(**fields: object) -> dict[str, object]:
    return {"title": "Reconcile ledgers", "description": "Monthly bookkeeping", **fields}


def test_valid_submission_with_every_field():
    job = JobCreate.model_validate(
        _job(
            confidential={"iban": "IE29AIBK93115212345678"},
            service="bookkeeping",
            priority="high",
            due_at="2030-01-01T00:00:00+00:00",
            data_policy={"allowed_countries": ["IE"], "require_e2e": False},
            metadata={"order": "42"},
            callback_url="https://client.example/hooks/taskroute",
        )
    )
    assert job.service is not None
    assert job.service.value == "bookkeeping"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"description": ""}, "description"),
        ({"service": "astrology"}, "service"),
        ({"priority": "urgent"}, "priority"),
        ({"due_at": "2030-01-01T00:00:00"}, "due_at"),
        ({"confidential": ["not", "an", "object"]}, "confidential"),
        ({"confidential": {"blob": "x" * (64 * 1024)}}, "confidential"),
        ({"metadata": {f"k{i}": "v" for i in range(21)}}, "metadata"),
        ({"metadata": {"k": "v" * 501}}, "metadata"),
        ({"callback_url": "http://client.example/hook"}, "callback_url"),
        ({"callback_url": "ftp://client.example/hook"}, "callback_url"),
        ({"callback_url": "https://user:pw@client.example/hook"}, "callback_url"),
        # Internal addresses, as for webhook endpoints: the gateway would post from inside.
        ({"callback_url": "https://169.254.169.254/latest/meta-data"}, "callback_url"),
        ({"callback_url": "https://10.1.2.3/hook"}, "callback_url"),
        ({"callback_url": "https://[fd00::1]/hook"}, "callback_url"),
        # No host an HTTP client could agree on.
        ({"callback_url": "https://exa mple.com/hook"}, "callback_url"),
        ({"callback_url": "https://client.example/\u0000"}, "callback_url"),
        ({"callback_url": "https://client..example/hook"}, "callback_url"),
        ({"callback_url": "https://-client.example/hook"}, "callback_url"),
        ({"data_policy": {"allowed_countries": ["india"]}}, "data_policy"),
        ({"data_policy": {"allowed_countries": []}}, "data_policy"),
        ({"confidential": {"a": 1}, "confidential_sealed": {"v": 1}}, "confidential_sealed"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_submissions_name_the_field(fields, field):
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate(_job(**fields))
    locations = [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]
    assert any(loc.startswith(field) for loc in locations), locations


def test_plain_and_sealed_confidential_together_are_explained():
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate(_job(confidential={"a": 1}, confidential_sealed={"v": 1}))
    assert "not both" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x",
        "http://localhost:8080/x",
        "http://127.0.0.1/x",
        "http://[::1]/",
        "https://bücher.example/hook",
        "https://hooks.example.com./x",
        "https://a_b.example.com/x",
        "https://fa\u00df.example/x",  # IDNA 2008, as the HTTP client encodes it
        "https://\u0dc1\u0dca\u200d\u0dbb\u0dd3.example/x",  # a joiner inside a Sinhala name
    ],
)
def test_callback_urls_accepted(url):
    assert check_callback_url(url) == url


# Views -------------------------------------------------------------------------------------


def test_views_hide_internal_fields():
    job = {"id": "j", "tenant_id": "t", "confidential_ref": "r", "status": "queued"}
    assert client_view(job) == {"id": "j", "tenant_id": "t", "status": "queued"}
    assert member_view(job) == {"id": "j", "status": "queued"}


def test_malformed_job_id_is_an_unknown_job():
    with pytest.raises(JobNotFound):
        job_id_or_404("not-a-uuid")
    assert job_id_or_404("3F2504E0-4F89-11D3-9A0C-0305E82C3301") == (
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    )


# Settings ----------------------------------------------------------------------------------


def test_local_pepper_file_is_created_once_with_mode_0600(tmp_path):
    settings = GatewaySettings(data_dir=tmp_path)
    first = settings.resolved_api_key_pepper()
    assert len(first) == 32
    mode = stat.S_IMODE(os.stat(tmp_path / PEPPER_FILE).st_mode)
    assert mode == 0o600
    assert GatewaySettings(data_dir=tmp_path).resolved_api_key_pepper() == first


def test_production_requires_a_pepper(tmp_path):
    with pytest.raises(ValidationError, match="API_KEY_PEPPER"):
        GatewaySettings(
            environment="production", data_dir=tmp_path, database_url="postgresql+asyncpg://x/y"
        )
    settings = GatewaySettings(
        environment="production",
        data_dir=tmp_path,
        database_url="postgresql+asyncpg://x/y",
        api_key_pepper="s" * 40,
    )
    assert settings.resolved_api_key_pepper() == b"s" * 40
    assert not (tmp_path / PEPPER_FILE).exists()


def test_short_secrets_are_refused(tmp_path):
    with pytest.raises(ValidationError):
        GatewaySettings(data_dir=tmp_path, api_key_pepper="short")
    with pytest.raises(ValidationError):
        GatewaySettings(data_dir=tmp_path, bootstrap_operator_key="too-short")


def test_bootstrap_key_read_from_its_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKROUTE_BOOTSTRAP_OPERATOR_KEY", "b" * 40)
    monkeypatch.setenv("TASKROUTE_GATEWAY_MAX_BODY_BYTES", "2048")
    settings = GatewaySettings(data_dir=tmp_path)
    assert settings.bootstrap_operator_key is not None
    assert settings.bootstrap_operator_key.get_secret_value() == "b" * 40
    assert "b" * 40 not in repr(settings)
    assert settings.max_body_bytes == 2048
    assert settings.port == 8000


def test_metadata_total_size_is_bounded():
    # 20 values of 500 non-ASCII characters pass the per-key rules but not the total.
    with pytest.raises(ValidationError, match="bytes of JSON"):
        JobCreate.model_validate(_job(metadata={f"k{i}": "é" * 500 for i in range(20)}))


def test_unknown_country_codes_are_refused():
    with pytest.raises(ValidationError, match="alpha-2"):
        JobCreate.model_validate(_job(data_policy={"allowed_countries": ["ZZ"]}))


# Free text ---------------------------------------------------------------------------------


def test_free_text_keeps_tabs_line_breaks_and_joiners_but_no_other_control_character():
    kept = "Line one\r\n\tline two: caf\u00e9 \u200c\u200d\U0001f469\u200d\U0001f4bb \u202e"
    assert check_text(kept) == kept
    for bad in ("nul\x00", "escape\x1b[31m", "bell\x07", "delete\x7f", "c1\x85"):
        with pytest.raises(ValueError, match="control characters"):
            check_text(bad)
    nested = {"ok": ["fine", {"deep": "also\tfine"}], "n": 1, "none": None}
    assert check_json_text(nested) == nested
    for bad_json in ({"k": ["x", {"deep": "\x00"}]}, {"key\x1b": "v"}, ["\x00"]):
        with pytest.raises(ValueError, match="control characters"):
            check_json_text(bad_json)


def test_the_control_character_patterns_are_unicode_category_cc():
    import sys
    import unicodedata

    from services.gateway.domain import jobs

    cc = {chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cc"}
    assert {c for c in map(chr, range(0x2000)) if jobs._CONTROL.match(c)} == cc
    assert {c for c in map(chr, range(0x2000)) if jobs._CONTROL_IN_TEXT.match(c)} == cc - set(
        "\t\n\r"
    )
