"""Console sign-in with an API key, sign-out, and the landing page of each role."""

from __future__ import annotations

from fastapi import Request, Response

from services.gateway.api.deps import SessionDep, authenticate
from services.gateway.clients.rate_limiter import RateLimiter, parse_limit
from services.gateway.console import sessions
from services.gateway.console.web import (
    UserDep,
    check_origin,
    console_router,
    read_form,
    render,
    see_other,
)
from services.gateway.db.repository import ConsoleSessionRepository
from services.gateway.domain.api_keys import Role
from shared.db import utcnow

router = console_router()

# An API key is at most a few hundred characters; anything longer is not worth an HMAC.
MAX_KEY_CHARS = 600


@router.get("")
async def console_home(user: UserDep) -> Response:
    """Each role's start page."""
    return see_other("/console/floor" if user.is_operator else "/console/queue")


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    """The sign-in form, with its token (see :mod:`services.gateway.console.sessions`)."""
    return _sign_in_form(request)


def _sign_in_form(
    request: Request, *, error: str | None = None, status_code: int = 200
) -> Response:
    """The form and the cookie its token must match. The browser's token is kept while it has
    one, so two tabs (or a tab sent here when its session ended) do not void each other's
    forms; without one (a new browser session) a new token is made."""
    production = bool(request.app.state.settings.is_production())
    name, path = sessions.sign_in_cookie(production=production)
    token = request.cookies.get(name)
    if token is None or not sessions.plausible_token(token):
        token = sessions.new_token()
    page = render(
        request,
        "sign_in.html",
        {"user": None, "sign_in_token": token, "error": error},
        status_code=status_code,
    )
    # No Max-Age: it lasts the browser session, like the session cookie.
    page.set_cookie(
        name, token, path=path, secure=_secure_cookies(request), httponly=True, samesite="strict"
    )
    return page


def _secure_cookies(request: Request) -> bool:
    # Production is served over TLS, perhaps terminated by a proxy whose forwarded headers
    # uvicorn does not trust (--forwarded-allow-ips): the request itself may look like http.
    return bool(request.app.state.settings.is_production()) or request.url.scheme == "https"


@router.post("/sign-in")
async def sign_in(request: Request, session: SessionDep) -> Response:
    """Exchange an API key for a console session cookie."""
    check_origin(request)
    form = await read_form(request)
    production = bool(request.app.state.settings.is_production())
    cookie_name, cookie_path = sessions.sign_in_cookie(production=production)
    if not sessions.sign_in_token_valid(
        request.cookies.get(cookie_name), form.get("sign_in_token")
    ):
        # Not this browser's form: another site's, or one older than the browser session.
        # Nothing is checked; the form is shown again, with a token that works.
        return _sign_in_form(
            request,
            error="This sign-in form has expired. Enter your API key again.",
            status_code=403,
        )
    # A failed sign-in spends the address's budget of failed authentications, the same limiter
    # and limit as the API's, and past it is answered 429. As on the API, the key is checked
    # first and a valid one never meets the budget: otherwise anyone could lock every user
    # behind one proxy address out of the console with 30 bad guesses a minute.
    key = form.get("api_key", "").strip()
    principal = None
    if key and len(key) <= MAX_KEY_CHARS:
        principal = await authenticate(session, key, pepper=request.app.state.pepper)
    if principal is None:
        limiter: RateLimiter = request.app.state.rate_limiter
        address = request.client.host if request.client else "unknown"
        budget = parse_limit(request.app.state.settings.failed_auth_rate_limit)
        decision = await limiter.hit(budget, "auth-failed", address)
        if not decision.allowed:
            refused = _sign_in_form(
                request,
                error="Too many sign-in attempts. Wait a minute and try again.",
                status_code=429,
            )
            refused.headers["Retry-After"] = str(max(1, decision.reset_after))
            return refused
        return _sign_in_form(request, error="That API key is not valid.", status_code=401)
    if principal.role is Role.CLIENT:
        return _sign_in_form(
            request,
            error="Client keys have no console: client systems use the REST API.",
            status_code=403,
        )
    settings = request.app.state.settings
    now = utcnow()
    token = sessions.new_token()
    repository = ConsoleSessionRepository(session)
    await repository.purge_expired(now=now)
    await repository.create(
        token_digest=sessions.token_digest(token),
        api_key_id=principal.key_id,
        now=now,
        expires_at=sessions.expires_at(
            now=now,
            created_at=now,
            idle_seconds=settings.console_session_idle_seconds,
            max_seconds=settings.console_session_max_seconds,
        ),
    )
    response = see_other("/console")
    response.delete_cookie(
        cookie_name, path=cookie_path, secure=_secure_cookies(request), httponly=True
    )
    # A browser-session cookie (no Max-Age): closing the browser on a shared machine signs out;
    # the server ends the session on its own schedule either way.
    response.set_cookie(
        sessions.COOKIE_NAME,
        token,
        path=sessions.COOKIE_PATH,
        secure=_secure_cookies(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: SessionDep) -> Response:
    """End the session: the row is deleted, so any copy of the cookie is dead too."""
    check_origin(request)
    form = await read_form(request)
    token = request.cookies.get(sessions.COOKIE_NAME)
    if (
        token
        and sessions.plausible_token(token)
        and sessions.csrf_valid(token, form.get("csrf_token"))
    ):
        await ConsoleSessionRepository(session).delete(sessions.token_digest(token))
    response = see_other("/console/sign-in")
    response.delete_cookie(sessions.COOKIE_NAME, path=sessions.COOKIE_PATH)
    return response
