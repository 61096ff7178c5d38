"""The pure rules of services/gateway/domain/idempotency.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.gateway.domain import idempotency as rules
from services.gateway.domain.api_keys import Role
from services.gateway.domain.errors import (
    IdempotencyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyMismatch,
)
from services.gateway.domain.principal import Principal

PEPPER = b"p" * 32
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LOCK = timedelta(seconds=60)


def existing(**overrides) -> rules.Existing:
    fields: dict[str, Any] = {
        "method": "POST",
        "path": "/v1/jobs",
        "fingerprint": "f",
        "state": rules.State.IN_FLIGHT,
        "locked_at": NOW - timedelta(seconds=1),
        "expires_at": NOW + timedelta(hours=1),
    }
    fields.update(overrides)
    return rules.Existing(**fields)


def judge(record: rules.Existing, fingerprint: str = "f", path: str = "/v1/jobs") -> rules.Verdict:
    return rules.judge(
        record,
        method="POST",
        path=path,
        request_fingerprint=fingerprint,
        now=NOW,
        lock_timeout=LOCK,
    )


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there"])
def test_bad_keys_are_refused(key):
    with pytest.raises(IdempotencyKeyInvalid):
        rules.check_key(key)


def test_good_keys_pass():
    assert rules.check_key("order-4711/retry 2") == "order-4711/retry 2"


def test_scopes():
    client = Principal(key_id="k1", role=Role.CLIENT, tenant_id="t1")
    other_key_same_tenant = Principal(key_id="k2", role=Role.CLIENT, tenant_id="t1")
    member = Principal(key_id="k3", role=Role.MEMBER, team_id="team", member_id="m1")
    operator = Principal(key_id="k4", role=Role.OPERATOR)
    assert rules.scope_of(client) == rules.scope_of(other_key_same_tenant) == "tenant:t1"
    assert rules.scope_of(member) == "member:m1"
    assert rules.scope_of(operator) == "operator:k4"


def test_fingerprint_ignores_json_layout_but_not_content():
    def fp(body: bytes, path: str = "/v1/jobs?") -> str:
        return rules.fingerprint(method="POST", path=path, body=body, pepper=PEPPER)

    assert fp(b'{"a": 1, "b": [1, 2]}') == fp(b'{"b":[1,2],"a":1}')
    assert fp(b'{"a": 1}') != fp(b'{"a": 2}')
    assert fp(b'{"a": 1}') != fp(b'{"a": 1}', path="/v1/jobs/x/cancel?")
    assert fp(b"not json") == fp(b"not json")
    assert fp(b"") != fp(b"{}")


def test_verdicts():
    assert judge(existing(state=rules.State.COMPLETED)) is rules.Verdict.REPLAY
    assert judge(existing(locked_at=None)) is rules.Verdict.TAKE_OVER
    assert judge(existing(locked_at=NOW - LOCK)) is rules.Verdict.TAKE_OVER
    assert judge(existing(expires_at=NOW, fingerprint="other")) is rules.Verdict.EXPIRED
    with pytest.raises(IdempotencyInFlight):
        judge(existing())
    with pytest.raises(IdempotencyMismatch):
        judge(existing(state=rules.State.COMPLETED), fingerprint="other")
    with pytest.raises(IdempotencyMismatch):
        judge(existing(), path="/v1/admin/tenants")


def test_stored_answers_open_only_with_their_key():
    answer = rules.StoredAnswer(
        status=201, headers=[("content-type", "application/json")], body=b'{"api_key":"s3cret"}'
    )
    sealed = answer.seal(scope="tenant:t1", key="k", pepper=PEPPER)
    assert b"s3cret" not in sealed
    opened = rules.StoredAnswer.open(sealed, status=201, scope="tenant:t1", key="k", pepper=PEPPER)
    assert opened == answer
    with pytest.raises(IdempotencyMismatch):
        rules.StoredAnswer.open(sealed, status=201, scope="tenant:t1", key="K", pepper=PEPPER)
    with pytest.raises(IdempotencyMismatch):
        rules.StoredAnswer.open(sealed, status=201, scope="tenant:t2", key="k", pepper=PEPPER)
