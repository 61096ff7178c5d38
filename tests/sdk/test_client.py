"""The Python client against a real platform: submit, seal, page, replay, work a job, webhooks."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.sdk import (
    AsyncTaskrouteClient,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    TaskrouteClient,
    ValidationError,
)
from services.sdk.errors import PROBLEM_TYPE_BASE
from services.sdk.webhooks import verify_signature
from shared.sealing_statements import UnverifiedSealingKey, load_vault_public_key
from tests.e2e.conftest import Platform
from tests.sdk.conftest import CLINICAL_DESCRIPTION, CLINICAL_TITLE, FAST_RETRY, Tenancy
from tests.sdk.receiver import receiving

pytestmark = pytest.mark.e2e


class Recorder:
    """Every request an httpx client sends and the answer's status (an event hook, not a fake)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int, httpx.Headers]] = []

    def __call__(self, response: httpx.Response) -> None:
        request = response.request
        self.sent.append((request.method, request.url.path, response.status_code, request.headers))


@contextmanager
def recorded(platform: Platform, api_key: str) -> Iterator[tuple[TaskrouteClient, Recorder]]:
    """A client whose HTTP traffic is recorded (the caller's own httpx client, closed after)."""
    recorder = Recorder()
    with (
        httpx.Client(
            base_url=platform.gateway_url, timeout=20, event_hooks={"response": [recorder]}
        ) as http,
        TaskrouteClient(platform.gateway_url, api_key, http_client=http, retry=FAST_RETRY) as c,
    ):
        yield c, recorder


def test_submit_plain_job_and_follow_it(platform: Platform, tenancy: Tenancy) -> None:
    with TaskrouteClient(platform.gateway_url, tenancy.client_key) as client:
        job = client.submit_job(
            CLINICAL_TITLE,
            CLINICAL_DESCRIPTION,
            confidential={"patient": "J. Doe"},
            priority="high",
            metadata={"batch": "7"},
        )
        assert job.status == "queued"
        assert job.has_confidential is True
        assert job.classification is not None
        assert (job.classification.tier, job.classification.domain) == ("KPO", "clinical")
        assert job.assignment is not None
        assert job.assignment.team_id == tenancy.team_id
        assert "confidential_ref" not in job.model_dump()

        assert client.get_job(job.id).id == job.id
        events = client.job_events(job.id)
        assert ("pending", "queued") in [(e.from_status, e.to_status) for e in events]
        routing = client.job_routing(job.id)
        assert routing  # the decision record; its shape is the router's
        results = client.classify([{"title": CLINICAL_TITLE, "description": CLINICAL_DESCRIPTION}])
        assert results[0].domain == "clinical"


def test_sealed_job_is_worked_and_opened_only_at_the_ends(
    platform: Platform, tenancy: Tenancy
) -> None:
    canary = f"CANARY-SDK-{secrets.token_hex(8)}"
    result_canary = f"RESULT-SDK-{secrets.token_hex(8)}"
    member_private = X25519PrivateKey.generate()
    with (
        recorded(platform, tenancy.client_key) as (client, recorder),
        TaskrouteClient(platform.gateway_url, tenancy.member_key) as member,
    ):
        keys = client.vault_public_keys()
        assert keys.tenant_id == tenancy.tenant_id
        job = client.submit_job(
            CLINICAL_TITLE, CLINICAL_DESCRIPTION, confidential={"patient": canary}, seal=True
        )
        assert job.has_confidential is True
        # Sealed here: the canary never crossed the wire in plaintext.
        submit = [r for r in recorder.sent if r[:2] == ("POST", "/v1/jobs")]
        assert len(submit) == 1

        registered = member.register_key(member_private)
        assert registered.key_id.startswith("x25519-")
        assert job.id in [j.id for j in member.iter_team_jobs()]
        claimed = member.claim(job.id)
        assert claimed.status == "in_progress"
        assert claimed.lease is not None
        assert member.heartbeat(job.id).lease is not None
        with pytest.raises(ValueError, match="private_key"):
            member.read_confidential(job.id)
        assert member.read_confidential(job.id, private_key=member_private) == {"patient": canary}

        done = member.complete(
            job.id, result={"coded_events": 37}, confidential_result={"note": result_canary}
        )
        assert done.status == "completed"
        assert client.get_job(job.id).status == "completed"
        result = client.get_result(job.id)
        assert result.result == {"coded_events": 37}
        assert result.confidential_result == {"note": result_canary}

    time.sleep(0.5)  # the services' last log lines
    logs = platform.logs()
    assert canary not in logs
    assert result_canary not in logs


def test_a_pinned_vault_key_seals_only_to_keys_the_vault_vouched_for(
    platform: Platform, tenancy: Tenancy
) -> None:
    """With the vault's public key pinned, the client checks the vault's signed statement
    before sealing (client and member alike); a key the vault did not sign for is refused
    before anything is sent, so a gateway cannot hand out a key of its own."""
    vault_pub = (platform.data_dir / "service-keys" / "vault.pub").read_bytes()
    someone_else = Ed25519PrivateKey.generate().public_key()
    not_the_vault = someone_else.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with (
        TaskrouteClient(
            platform.gateway_url, tenancy.client_key, vault_public_key=vault_pub
        ) as no_tenant,
        pytest.raises(ValueError, match="tenant_id"),  # pinned, the tenant is the client's
    ):
        no_tenant.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION, confidential={"x": 1}, seal=True)
    with (
        TaskrouteClient(
            platform.gateway_url,
            tenancy.client_key,
            vault_public_key=vault_pub,
            tenant_id=tenancy.tenant_id,
        ) as client,
        TaskrouteClient(
            platform.gateway_url, tenancy.member_key, vault_public_key=vault_pub
        ) as member,
        recorded(platform, tenancy.client_key) as (plain, recorder),
    ):
        assert client.vault_public_keys().statement
        job = client.submit_job(
            CLINICAL_TITLE, CLINICAL_DESCRIPTION, confidential={"x": 1}, seal=True
        )
        member.claim(job.id)
        member.complete(job.id, result={"ok": True}, confidential_result={"s": 2}, seal=True)
        assert client.get_result(job.id).confidential_result == {"s": 2}

        plain._vault_key = load_vault_public_key(not_the_vault)  # noqa: SLF001 - a wrong pin
        plain.tenant_id = tenancy.tenant_id
        with pytest.raises(UnverifiedSealingKey):
            plain.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION, confidential={"x": 1}, seal=True)
        assert [r[:2] for r in recorder.sent] == [("GET", "/v1/vault/public-key")]


def test_member_seals_the_result_for_the_tenant(platform: Platform, tenancy: Tenancy) -> None:
    secret = f"SEALED-RESULT-{secrets.token_hex(6)}"
    with (
        TaskrouteClient(platform.gateway_url, tenancy.client_key) as client,
        TaskrouteClient(platform.gateway_url, tenancy.member_key) as member,
    ):
        job = client.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION)
        member.claim(job.id)
        key = member.tenant_key(job.id)
        assert (key.tenant_id, key.job_ref) == (tenancy.tenant_id, job.id)
        member.complete(job.id, result={"ok": True}, confidential_result={"s": secret}, seal=True)
        assert client.get_result(job.id).confidential_result == {"s": secret}

        feedback = client.send_feedback(job.id, rating=5, comment="Quick and careful.")
        assert (feedback.job_id, feedback.rating) == (job.id, 5)
        with pytest.raises(ConflictError):
            client.send_feedback(job.id, rating=1)  # rated once only


def test_auto_pagination_walks_every_page(platform: Platform, tenancy: Tenancy) -> None:
    with recorded(platform, tenancy.client_key) as (client, recorder):
        submitted = [
            client.submit_job(f"{CLINICAL_TITLE} #{n}", CLINICAL_DESCRIPTION).id for n in range(7)
        ]
        recorder.sent.clear()
        walked = [job.id for job in client.iter_jobs(page_size=3)]
        assert walked == list(reversed(submitted))  # newest first, each once
        pages = [r for r in recorder.sent if r[:2] == ("GET", "/v1/jobs")]
        assert len(pages) == 3
        first = client.list_jobs(limit=3)
        assert first.has_more is True
        assert first.next_cursor is not None


def test_retried_submission_reuses_its_idempotency_key(
    platform: Platform, tenancy: Tenancy
) -> None:
    with recorded(platform, tenancy.client_key) as (client, recorder):
        job = client.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION)
        sent_key = recorder.sent[-1][3]["Idempotency-Key"]
        assert sent_key.startswith("tr-sdk-")
        # The same logical call again (as a retry after a lost answer): the same job back.
        again = client.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION, idempotency_key=sent_key)
        assert again.id == job.id
        # A new call gets a new key, so a new job.
        other = client.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION)
        assert other.id != job.id
        assert recorder.sent[-1][3]["Idempotency-Key"] != sent_key
        with pytest.raises(ValidationError) as refused:
            client.submit_job("Another title", CLINICAL_DESCRIPTION, idempotency_key=sent_key)
        assert refused.value.problem == "idempotency-key-reused"
        assert len(list(client.iter_jobs())) == 2


def test_errors_carry_the_problem_fields(platform: Platform, tenancy: Tenancy) -> None:
    with TaskrouteClient(platform.gateway_url, tenancy.client_key) as client:
        with pytest.raises(NotFoundError) as missing:
            client.get_job("00000000-0000-4000-8000-000000000000")
        error = missing.value
        assert error.status == 404
        assert error.type.startswith(PROBLEM_TYPE_BASE)
        assert error.title
        assert error.detail
        assert error.request_id
        assert error.request_id in str(error)
        with pytest.raises(ValidationError) as invalid:
            client.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION, priority="urgent")
        assert invalid.value.errors[0]["field"].endswith("priority")
    with TaskrouteClient(platform.gateway_url, tenancy.member_key) as member:
        with pytest.raises(PermissionDeniedError):
            member.list_jobs()
    with TaskrouteClient(platform.gateway_url, "tr_client_nope_nope") as stranger:
        with pytest.raises(AuthenticationError) as unauthenticated:
            stranger.list_jobs()
        assert unauthenticated.value.headers["WWW-Authenticate"].startswith("Bearer")


async def test_async_client_submits_pages_and_cancels(platform: Platform, tenancy: Tenancy) -> None:
    async with AsyncTaskrouteClient(
        platform.gateway_url, tenancy.client_key, retry=FAST_RETRY
    ) as client:
        sealed = await client.submit_job(
            CLINICAL_TITLE, CLINICAL_DESCRIPTION, confidential={"x": 1}, seal=True
        )
        plain = await client.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION)
        seen = [job.id async for job in client.iter_jobs(page_size=1)]
        assert seen == [plain.id, sealed.id]
        cancelled = await client.cancel_job(plain.id, reason="Ordered by mistake")
        assert cancelled.status == "cancelled"
        with pytest.raises(ConflictError):
            await client.cancel_job(plain.id)
        assert [j.id async for j in client.iter_jobs(status="cancelled")] == [plain.id]


# -- webhooks -----------------------------------------------------------------------------------


def test_completed_job_is_pushed_to_the_webhook(platform: Platform, tenancy: Tenancy) -> None:
    with (
        receiving() as (url, received),
        TaskrouteClient(platform.gateway_url, tenancy.client_key) as client,
        TaskrouteClient(platform.gateway_url, tenancy.member_key) as member,
    ):
        endpoint = client.create_webhook_endpoint(url, description="SDK test")
        assert endpoint.secret is not None
        assert endpoint.secret.startswith("whsec_")
        assert [e.id for e in client.iter_webhook_endpoints()] == [endpoint.id]
        job = client.submit_job(CLINICAL_TITLE, CLINICAL_DESCRIPTION)
        member.claim(job.id)
        member.complete(job.id, result={"done": True})

        deadline = time.monotonic() + 30
        completed: list[tuple[dict[str, str], bytes]] = []
        while time.monotonic() < deadline and not completed:
            completed = [
                (h, b)
                for h, b in received.deliveries
                if h.get("Taskroute-Event-Type") == "job.completed"
            ]
            time.sleep(0.2)
        assert completed, "no job.completed delivery arrived"
        headers, body = completed[0]
        event = json.loads(body)
        assert event["data"]["object"]["id"] == job.id
        assert verify_signature(endpoint.secret, headers["Taskroute-Signature"], body=body)
        assert not verify_signature(endpoint.secret, headers["Taskroute-Signature"], body=b"{}")
        deliveries = list(client.iter_webhook_deliveries(endpoint.id))
        assert "job.completed" in [d.event_type for d in deliveries]
        assert client.delete_webhook_endpoint(endpoint.id).id == endpoint.id
