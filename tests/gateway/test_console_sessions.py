"""The console's sign-in, session cookie, CSRF and sign-out, over HTTP in-process (no browser)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, select, update

from services.gateway.console import sessions
from services.gateway.db.models import ApiKey, Base, ConsoleSession
from services.gateway.db.repository import ApiKeyRepository, ConsoleSessionRepository
from services.gateway.domain import api_keys
from services.gateway.domain.api_keys import Role
from shared.db import utcnow
from tests.gateway.conftest import OPERATOR_KEY
from tests.gateway.factories import make_member

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in_token_of(page: str) -> str:
    found = re.search(r'name="sign_in_token" value="([^"]+)"', page)
    assert found, "no sign-in token in the form"
    return found.group(1)


def session_cookie(answer: httpx.Response) -> str:
    """The session's Set-Cookie line (the sign-in form's own cookie is cleared beside it)."""
    (cookie,) = [
        line
        for line in answer.headers.get_list("set-cookie")
        if line.startswith(f"{sessions.COOKIE_NAME}=")
    ]
    return cookie


def has_session_cookie(answer: httpx.Response) -> bool:
    prefix = f"{sessions.COOKIE_NAME}="
    return any(line.startswith(prefix) for line in answer.headers.get_list("set-cookie"))


def sign_in_cookie_of(answer: httpx.Response) -> tuple[str, str]:
    """The sign-in token cookie an answer sets: its name (``__Host-`` in production) and line."""
    for line in answer.headers.get_list("set-cookie"):
        name = line.split("=", 1)[0]
        if name.endswith(sessions.SIGN_IN_COOKIE):
            return name, line
    raise AssertionError("no sign-in cookie set")


async def sign_in(
    client: httpx.AsyncClient, key: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """As a browser signs in: the form first, for its token and the cookie that must match."""
    page = await client.get("/console/sign-in")
    token = sign_in_token_of(page.text)
    name, _ = sign_in_cookie_of(page)
    # The cookie by hand: production marks it Secure, which an http test client holds back.
    return await client.post(
        "/console/sign-in",
        data={"api_key": key, "sign_in_token": token},
        headers={**(headers or {}), "Cookie": f"{name}={token}"},
    )


async def signed_in_operator(client: httpx.AsyncClient) -> str:
    answer = await sign_in(client, OPERATOR_KEY)
    assert answer.status_code == 303
    page = await client.get("/console/tenants")
    assert page.status_code == 200
    return csrf_of(page.text)


async def member_key(platform, maker) -> str:
    async with maker() as session:
        member = await make_member(session, team_id=str(uuid.uuid4()), name="Asha")
        key = api_keys.generate_key(Role.MEMBER, pepper=platform.app.state.pepper)
        await ApiKeyRepository(session).add(
            key, role=Role.MEMBER, team_id=member.team_id, member_id=member.id
        )
        await session.commit()
    return key.plaintext


# --- pure rules ---------------------------------------------------------------------------------


def test_csrf_token_is_bound_to_the_session_and_compared_exactly():
    token, other = sessions.new_token(), sessions.new_token()
    assert sessions.csrf_valid(token, sessions.csrf_token(token))
    assert not sessions.csrf_valid(other, sessions.csrf_token(token))
    assert not sessions.csrf_valid(token, None)
    assert not sessions.csrf_valid(token, "")
    assert not sessions.csrf_valid(token, sessions.csrf_token(token)[:-1])
    assert not sessions.csrf_valid(token, "é" * 64)


def test_expiry_is_the_earlier_of_idle_and_absolute_limits():
    now = utcnow()
    created = now - timedelta(hours=11, minutes=30)
    assert sessions.expires_at(
        now=now, created_at=now, idle_seconds=3600, max_seconds=43200
    ) == now + timedelta(hours=1)
    assert sessions.expires_at(
        now=now, created_at=created, idle_seconds=3600, max_seconds=43200
    ) == created + timedelta(hours=12)


def test_the_database_keeps_a_digest_not_the_token():
    token = sessions.new_token()
    assert len(token) >= 43
    assert sessions.token_digest(token) != token
    assert len(sessions.token_digest(token)) == 64


# --- over HTTP ----------------------------------------------------------------------------------


async def test_pages_need_a_session(gateway_alone):
    client = gateway_alone.client
    for path in ("/console", "/console/queue", "/console/floor", "/console/audit"):
        answer = await client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/console/sign-in"
    answer = await client.post("/console/jobs/x/claim", data={"csrf_token": "x"})
    assert answer.status_code == 401
    page = await client.get("/console/sign-in")
    assert page.status_code == 200
    assert 'type="password"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_sign_in_sets_a_strict_http_only_cookie_and_stores_only_a_digest(
    gateway_alone, maker
):
    answer = await sign_in(gateway_alone.client, OPERATOR_KEY)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console"
    cookie = session_cookie(answer)
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test
    assert OPERATOR_KEY not in cookie
    token = gateway_alone.client.cookies[sessions.COOKIE_NAME]
    async with maker() as session:
        rows = (await session.scalars(select(ConsoleSession))).all()
    assert [row.token_digest for row in rows] == [sessions.token_digest(token)]
    home = await gateway_alone.client.get("/console")
    assert home.headers["location"] == "/console/floor"


async def test_cookie_is_secure_over_https(gateway_alone):
    transport = httpx.ASGITransport(app=gateway_alone.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://console.test") as client:
        answer = await sign_in(client, OPERATOR_KEY)
    assert answer.status_code == 303
    assert "Secure" in session_cookie(answer)


async def test_cookie_is_secure_in_production_even_over_plain_http(production_gateway):
    """Behind a proxy that terminates TLS, the request's own scheme is http unless the proxy's
    forwarded headers are trusted: production marks the cookie Secure regardless."""
    answer = await sign_in(production_gateway.client, OPERATOR_KEY)
    assert answer.status_code == 303
    assert "Secure" in session_cookie(answer)


async def test_a_sign_in_without_the_forms_own_token_is_refused(gateway_alone, maker):
    """Another site can post the form (login CSRF: the victim's browser signed in under the
    attacker's key), but it has neither the SameSite=Strict cookie nor its value. The form is
    shown again with a token that works, so a real user whose form outlived the browser
    session only types the key again."""
    client = gateway_alone.client
    page = await client.get("/console/sign-in")
    name, line = sign_in_cookie_of(page)
    assert name == sessions.SIGN_IN_COOKIE
    assert "SameSite=strict" in line or "SameSite=Strict" in line
    assert "HttpOnly" in line
    assert "Max-Age" not in line  # the browser session
    token = sign_in_token_of(page.text)
    attempts = [
        ({"api_key": OPERATOR_KEY}, None),  # no token, no cookie
        ({"api_key": OPERATOR_KEY, "sign_in_token": token}, None),  # the cookie not sent
        ({"api_key": OPERATOR_KEY, "sign_in_token": sessions.new_token()}, token),  # mismatch
        ({"api_key": OPERATOR_KEY}, token),  # the cookie but no token
    ]
    for data, cookie in attempts:
        client.cookies.clear()
        headers = {"Cookie": f"{name}={cookie}"} if cookie else {}
        refused = await client.post("/console/sign-in", data=data, headers=headers)
        assert refused.status_code == 403, (data.keys(), cookie)
        assert "has expired" in refused.text
        assert not has_session_cookie(refused)
    async with maker() as session:
        assert (await session.scalars(select(ConsoleSession))).all() == []
    # The form shown again works.
    again = sign_in_token_of(refused.text)
    _, again_line = sign_in_cookie_of(refused)
    assert again_line.startswith(f"{name}={again};")
    signed_in = await client.post(
        "/console/sign-in",
        data={"api_key": OPERATOR_KEY, "sign_in_token": again},
        headers={"Cookie": f"{name}={again}"},
    )
    assert signed_in.status_code == 303, signed_in.text


async def test_two_sign_in_forms_of_one_browser_share_their_token(gateway_alone):
    """A second tab, or a tab sent to sign in when its session ended, must not void the form
    open in the first."""
    client = gateway_alone.client
    first = sign_in_token_of((await client.get("/console/sign-in")).text)
    second = sign_in_token_of((await client.get("/console/sign-in")).text)
    assert first == second
    answer = await client.post(
        "/console/sign-in", data={"api_key": OPERATOR_KEY, "sign_in_token": first}
    )
    assert answer.status_code == 303, answer.text


async def test_production_sign_in_cookie_is_host_bound_and_https_origin_accepted(
    production_gateway,
):
    """In production the token cookie takes the __Host- prefix (no sibling subdomain can plant
    one), and the browser's https Origin is accepted though TLS ended at a proxy."""
    client = production_gateway.client
    page = await client.get("/console/sign-in")
    name, line = sign_in_cookie_of(page)
    assert name == f"__Host-{sessions.SIGN_IN_COOKIE}"
    assert "Secure" in line
    assert "Path=/;" in line or line.endswith("Path=/")
    answer = await sign_in(client, OPERATOR_KEY, headers={"Origin": "https://testserver"})
    assert answer.status_code == 303, answer.text
    foreign = await sign_in(client, OPERATOR_KEY, headers={"Origin": "https://evil.test"})
    assert foreign.status_code == 403


async def test_bad_keys_and_client_keys_get_no_session(gateway_alone):
    client = gateway_alone.client
    for key in ("", "nonsense", "tr_operator_" + "x" * 40, "x" * 5000):
        answer = await sign_in(client, key)
        assert answer.status_code == 401, key[:20]
        assert not has_session_cookie(answer)
    tenant = await client.post(
        "/v1/admin/tenants", json={"name": "Acme"}, headers=gateway_alone.operator
    )
    answer = await sign_in(client, tenant.json()["api_key"])
    assert answer.status_code == 403
    assert "use the REST API" in answer.text
    assert not has_session_cookie(answer)


async def test_sign_in_is_rate_limited_per_address(gateway_alone):
    # Signing in with a valid key spends nothing: colleagues behind one proxy address (or one
    # person signing in all day) never lock each other out.
    for _ in range(40):
        assert (await sign_in(gateway_alone.client, OPERATOR_KEY)).status_code == 303
    statuses = [(await sign_in(gateway_alone.client, "wrong")).status_code for _ in range(31)]
    assert statuses[:30] == [401] * 30
    assert statuses[30] == 429
    assert (await sign_in(gateway_alone.client, "wrong again")).status_code == 429
    # The right key still signs in, as it still authenticates on the API: 30 bad guesses a
    # minute from one address (a whole office behind a proxy) lock nobody out. A key is far
    # too long to guess, so the budget is there to bound the load of guessing, not to hide
    # whether a key is valid.
    assert (await sign_in(gateway_alone.client, OPERATOR_KEY)).status_code == 303


async def test_posts_need_this_sessions_csrf_token(gateway_alone):
    client = gateway_alone.client
    csrf = await signed_in_operator(client)
    unknown = str(uuid.uuid4())
    path = f"/console/tenants/{unknown}/rotate"
    missing = await client.post(path, data={})
    assert missing.status_code == 403
    assert "CSRF" in missing.text
    wrong = await client.post(path, data={"csrf_token": "0" * 64})
    assert wrong.status_code == 403
    foreign = await client.post(
        path, data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    # The right token passes the check and reaches the API's own rule (an unknown tenant).
    right = await client.post(path, data={"csrf_token": csrf})
    assert right.status_code == 404
    assert "Not found" in right.text or "not found" in right.text.lower()
    # The token of another session is refused too.
    transport = httpx.ASGITransport(app=gateway_alone.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        other_csrf = await signed_in_operator(other)
    assert other_csrf != csrf
    assert (await client.post(path, data={"csrf_token": other_csrf})).status_code == 403


async def test_script_calls_need_the_csrf_header(gateway_alone, maker):
    client = gateway_alone.client
    await sign_in(client, await member_key(gateway_alone, maker))
    page = await client.get("/console/keys")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    body = {"public_key": "A" * 43}
    refused = await client.post("/console/keys", json=body)
    assert refused.status_code == 403
    refused = await client.post("/console/keys", json=body, headers={"X-CSRF-Token": "1" * 64})
    assert refused.status_code == 403
    passed = await client.post(
        "/console/keys",
        json={"public_key": "not a key"},
        headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
    )
    assert passed.status_code == 422  # past the CSRF check, refused by the API's validation


async def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(gateway_alone, maker):
    client = gateway_alone.client
    csrf = await signed_in_operator(client)
    token = client.cookies[sessions.COOKIE_NAME]
    answer = await client.post("/console/sign-out", data={"csrf_token": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in"
    async with maker() as session:
        assert (await session.scalars(select(ConsoleSession))).all() == []
    # A copy of the old cookie opens nothing.
    transport = httpx.ASGITransport(app=gateway_alone.app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        cookies={sessions.COOKIE_NAME: token},
    ) as copy:
        stale = await copy.get("/console/tenants")
    assert stale.status_code == 303
    assert stale.headers["location"] == "/console/sign-in"


async def test_expired_sessions_and_revoked_keys_end_the_session(gateway_alone, maker):
    client = gateway_alone.client
    await signed_in_operator(client)
    async with maker() as session:
        await session.execute(
            update(ConsoleSession).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    assert (await client.get("/console/tenants")).status_code == 303

    key = await member_key(gateway_alone, maker)
    await sign_in(client, key)
    assert (await client.get("/console/keys")).status_code == 200
    async with maker() as session:
        await session.execute(
            update(ApiKey).where(ApiKey.role == "member").values(revoked_at=utcnow())
        )
        await session.commit()
    assert (await client.get("/console/keys")).status_code == 303


async def test_a_session_ended_after_its_read_is_not_touched_back_to_life(gateway_alone, maker):
    """A request that read its session just before another request signed it out (or it
    expired) finds nothing to touch: a sign-in redirect, not a 500, and no session again."""
    await signed_in_operator(gateway_alone.client)
    async with maker() as session:
        digest = (await session.scalars(select(ConsoleSession.token_digest))).one()
        assert await ConsoleSessionRepository(session).touch(
            digest, now=utcnow(), expires_at=utcnow() + timedelta(hours=1)
        )
        await session.execute(delete(ConsoleSession))  # signed out meanwhile
        await session.commit()
    async with maker() as session:
        touched = await ConsoleSessionRepository(session).touch(
            digest, now=utcnow(), expires_at=utcnow() + timedelta(hours=1)
        )
        await session.commit()
        assert not touched
        assert (await session.scalars(select(ConsoleSession))).all() == []


@pytest.mark.parametrize(
    ("path", "role"), [("/console/floor", "member"), ("/console/queue", "operator")]
)
async def test_each_role_sees_only_its_own_pages(gateway_alone, maker, path, role):
    key = OPERATOR_KEY if role == "operator" else await member_key(gateway_alone, maker)
    await sign_in(gateway_alone.client, key)
    answer = await gateway_alone.client.get(path)
    assert answer.status_code == 403


async def test_static_files_come_from_the_package(gateway_alone):
    for name in ("console.css", "console.js"):
        answer = await gateway_alone.client.get(f"/console/static/{name}")
        assert answer.status_code == 200
    page = await gateway_alone.client.get("/console/sign-in")
    assert "http://" not in page.text
    assert "https://" not in page.text


async def test_the_console_sessions_migration_builds_the_models_table(session):
    """Migration 0004 and the ConsoleSession model agree (the gateway's other tables are older
    and checked by their own tests)."""

    def diff(sync_connection):
        context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    connection = await session.connection()
    changes = await connection.run_sync(diff)
    mine = [change for change in changes if "console_sessions" in repr(change)]
    assert mine == []
