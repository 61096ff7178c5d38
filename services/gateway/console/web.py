"""What every console page shares: templates, the signed-in user, forms, CSRF and errors.

Console routes use :class:`ConsoleRoute`, which turns the platform's errors into HTML pages
(the API's problem+json is for programs) and puts the same security headers on every answer:
``Cache-Control: no-store`` (pages show job data), a strict Content-Security-Policy (scripts and
styles only from ``/console/static``, no inline script), no framing, no referrer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from services.gateway.api.deps import SessionDep
from services.gateway.console import sessions
from services.gateway.db.repository import ConsoleSessionRepository, MemberRepository
from services.gateway.domain.api_keys import Role
from services.gateway.domain.principal import Principal
from shared.db import utcnow
from shared.errors import TaskrouteError

logger = logging.getLogger("taskroute.gateway.console")

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")


def _when(value: Any) -> str:
    """An ISO time from the API as a person reads it (UTC, to the second)."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["when"] = _when
# Form bodies are small: an API key, a reason, a result. 256 KiB leaves room for a pasted
# result and keeps a hostile body from being parsed into memory.
MAX_FORM_BYTES = 256 * 1024
MAX_FORM_FIELDS = 50

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not "no-referrer": with it, browsers send "Origin: null" on same-origin form posts, and
    # the origin check below needs the real one. Console URLs carry no secrets either way.
    "Referrer-Policy": "same-origin",
}


class SignInRequired(Exception):
    """No live console session."""


class ConsoleForbidden(Exception):
    """A signed-in user asked for a page of the other role."""


class CsrfRejected(Exception):
    """A POST without this session's CSRF token, or from another origin."""


class BadForm(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class ConsoleUser:
    principal: Principal
    name: str
    # The raw session token lives only for this request (to derive the CSRF token).
    token: str

    @property
    def csrf(self) -> str:
        return sessions.csrf_token(self.token)

    @property
    def is_operator(self) -> bool:
        return self.principal.role is Role.OPERATOR

    def __repr__(self) -> str:
        return f"ConsoleUser(role={self.principal.role.value!r}, token='***')"


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    user = context.get("user")
    return templates.TemplateResponse(
        request,
        template,
        {"csrf": user.csrf if isinstance(user, ConsoleUser) else None, **context},
        status_code=status_code,
    )


def error_page(request: Request, *, status: int, title: str, detail: str) -> Response:
    if wants_json(request):
        return JSONResponse({"title": title, "detail": detail}, status_code=status)
    return render(
        request,
        "error.html",
        {"title": title, "detail": detail, "status": status},
        status_code=status,
    )


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


class ConsoleRoute(APIRoute):
    """A console route: errors as HTML pages, security headers on every answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                if request.method == "GET" and not wants_json(request):
                    response = see_other("/console/sign-in")
                else:
                    response = error_page(
                        request,
                        status=401,
                        title="Signed out",
                        detail="Your console session has ended. Sign in again.",
                    )
                response.delete_cookie(sessions.COOKIE_NAME, path=sessions.COOKIE_PATH)
            except ConsoleForbidden:
                response = error_page(
                    request,
                    status=403,
                    title="Not for your role",
                    detail="This page is for another role. Use the links in the header.",
                )
            except CsrfRejected:
                response = error_page(
                    request,
                    status=403,
                    title="Form refused",
                    detail="The form was not sent from this console session (CSRF check). "
                    "Reload the page and try again.",
                )
            except BadForm as exc:
                response = error_page(
                    request, status=422, title="Check the form", detail=exc.detail
                )
            except ValidationError as exc:
                # Never echo the input: a result form may hold confidential values.
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in error['loc']) or 'form'}: {error['msg']}"
                    for error in exc.errors(include_input=False, include_url=False)
                )
                response = error_page(request, status=422, title="Check the form", detail=problems)
            except TaskrouteError as exc:
                response = error_page(
                    request, status=exc.status, title=exc.title, detail=exc.detail
                )
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return console_handler


def console_router() -> APIRouter:
    return APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


# --- the signed-in user ------------------------------------------------------------------------


async def current_user(request: Request, session: SessionDep) -> ConsoleUser:
    """The user of this request's console session; SignInRequired without a live one."""
    token = request.cookies.get(sessions.COOKIE_NAME)
    if token is None or not sessions.plausible_token(token):
        raise SignInRequired()
    now = utcnow()
    repository = ConsoleSessionRepository(session)
    found = await repository.live(sessions.token_digest(token), now=now)
    if found is None:
        raise SignInRequired()
    row, key = found
    role = Role(key.role)
    if role is Role.CLIENT:
        raise SignInRequired()  # never created; refused should one appear
    if now - _aware(row.last_seen_at) >= sessions.TOUCH_INTERVAL:
        settings = request.app.state.settings
        touched = await repository.touch(
            row.token_digest,
            now=now,
            expires_at=sessions.expires_at(
                now=now,
                created_at=_aware(row.created_at),
                idle_seconds=settings.console_session_idle_seconds,
                max_seconds=settings.console_session_max_seconds,
            ),
        )
        if not touched:
            raise SignInRequired()  # signed out by another request since it was read
    principal = Principal(
        key_id=key.id,
        role=role,
        tenant_id=key.tenant_id,
        team_id=key.team_id,
        member_id=key.member_id,
    )
    name = "Operator"
    if role is Role.MEMBER and key.member_id and key.team_id:
        member = await MemberRepository(session).get(key.member_id, team_id=key.team_id)
        name = member.name if member is not None else "Member"
    return ConsoleUser(principal=principal, name=name, token=token)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


UserDep = Annotated[ConsoleUser, Depends(current_user)]


def require_member(user: UserDep) -> ConsoleUser:
    if user.principal.role is not Role.MEMBER:
        raise ConsoleForbidden()
    return user


def require_operator(user: UserDep) -> ConsoleUser:
    if user.principal.role is not Role.OPERATOR:
        raise ConsoleForbidden()
    return user


MemberUser = Annotated[ConsoleUser, Depends(require_member)]
OperatorUser = Annotated[ConsoleUser, Depends(require_operator)]


# --- forms and CSRF ---------------------------------------------------------------------------


def check_origin(request: Request) -> None:
    origin, host = request.headers.get("origin"), request.headers.get("host")
    schemes = {request.url.scheme}
    if request.app.state.settings.is_production():
        # Served over TLS, perhaps ended at a proxy whose forwarded headers uvicorn does not
        # trust: the browser says https while the request here looks like http.
        schemes.add("https")
    if not any(sessions.same_origin(origin, scheme=scheme, host=host) for scheme in schemes):
        raise CsrfRejected()


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (the last value of a name wins)."""
    body = await request.body()
    if not body:
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadForm("Send the form as application/x-www-form-urlencoded.")
    if len(body) > MAX_FORM_BYTES:
        raise BadForm("The form is too large.")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadForm("The form could not be read.") from None
    return dict(pairs)


async def checked_form(request: Request, user: UserDep) -> dict[str, str]:
    """The POSTed form, after the origin and CSRF checks of this session."""
    check_origin(request)
    form = await read_form(request)
    if not sessions.csrf_valid(user.token, form.get("csrf_token")):
        raise CsrfRejected()
    return form


def checked_header(request: Request, user: UserDep) -> None:
    """For the page's script calls: the CSRF token in ``X-CSRF-Token``."""
    check_origin(request)
    if not sessions.csrf_valid(user.token, request.headers.get("x-csrf-token")):
        raise CsrfRejected()


FormDep = Annotated[dict[str, str], Depends(checked_form)]
CsrfHeaderDep = Annotated[None, Depends(checked_header)]
