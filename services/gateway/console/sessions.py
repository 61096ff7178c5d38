"""Console sessions and CSRF tokens: the rules, without FastAPI or a database.

Design
------
* **Sign-in** takes an API key (member or operator) once. The key is checked exactly as the API
  checks it (:func:`services.gateway.api.deps.authenticate`) and then forgotten: the browser gets
  a fresh random *session token* (256 bits) in a cookie, the database keeps only its SHA-256
  digest and the id of the API key row. A stolen database therefore opens no session, and
  revoking the API key ends its console sessions on their next request.
* **The cookie** is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
  sends it), ``Path=/console`` and ``Secure`` whenever the console is reached over https.
* **Expiry**: a session ends after ``console_session_idle_seconds`` without use, and in any case
  ``console_session_max_seconds`` after sign-in. Sign-out deletes the row, so the cookie is dead
  even if a copy of it survives.
* **CSRF**: every POST carries a synchroniser token bound to the session: HMAC-SHA256 keyed by the
  session token. It is unguessable without the cookie, needs no storage, dies with the session,
  and is compared in constant time. Requests with a foreign ``Origin`` are refused as well.
* **Sign-in CSRF** (another site signing the browser in under the attacker's key): there is no
  session yet, so the sign-in form carries a random token that must equal the one in a
  ``SameSite=Strict`` cookie set with the form (double submit; ``__Host-`` in production, so
  no sibling subdomain can plant one). Another site's page gets neither the cookie sent nor
  the value to copy; a browser that leaves ``Origin`` out is covered too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

COOKIE_NAME = "taskroute_console"
COOKIE_PATH = "/console"
# 32 bytes = 256 bits from the OS CSPRNG: far past guessing, as long as an API key's secret.
TOKEN_BYTES = 32
# token_urlsafe(32) is 43 characters; anything much longer in a cookie is not ours.
MAX_TOKEN_CHARS = 64
_CSRF_LABEL = b"taskroute-console-csrf-v1"
# A session's last use is written at most this often, so a busy page is not a write per request.
TOUCH_INTERVAL = timedelta(seconds=60)


SIGN_IN_COOKIE = "taskroute_console_sign_in"
SIGN_IN_PATH = "/console/sign-in"


def sign_in_cookie(*, production: bool) -> tuple[str, str]:
    """The sign-in token cookie's name and path. In production the cookie is Secure and takes
    the ``__Host-`` prefix, which the browser accepts only from this very host over https with
    ``Path=/``: a sibling subdomain or a plain-http answer cannot plant a token of its own."""
    if production:
        return f"__Host-{SIGN_IN_COOKIE}", "/"
    return SIGN_IN_COOKIE, SIGN_IN_PATH


def sign_in_token_valid(cookie: str | None, submitted: str | None) -> bool:
    """Whether the sign-in form's token is the one its cookie carries (constant time)."""
    if not cookie or not submitted or not plausible_token(cookie):
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())


def new_token() -> str:
    """A fresh session token for the cookie (never stored)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def plausible_token(token: str | None) -> bool:
    """Cheap shape check before any database work."""
    return bool(token) and len(token or "") <= MAX_TOKEN_CHARS and (token or "").isascii()


def token_digest(token: str) -> str:
    """What the database keeps of a session token: its hex SHA-256 (the token has 256 bits of
    entropy, so a plain hash is enough; no pepper or slow hash is needed)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def csrf_token(token: str) -> str:
    """The session's synchroniser token, rendered into every form."""
    return hmac.new(token.encode("ascii"), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_valid(token: str, submitted: str | None) -> bool:
    """True when ``submitted`` is this session's CSRF token (constant-time comparison)."""
    if not submitted or not submitted.isascii():
        return False
    return hmac.compare_digest(csrf_token(token).encode("ascii"), submitted.encode("ascii"))


def expires_at(
    *, now: datetime, created_at: datetime, idle_seconds: float, max_seconds: float
) -> datetime:
    """The earlier of idle expiry (from ``now``) and the absolute end of the session."""
    return min(now + timedelta(seconds=idle_seconds), created_at + timedelta(seconds=max_seconds))


def same_origin(origin: str | None, *, scheme: str, host: str | None) -> bool:
    """False when a browser says the request comes from another origin (absent: allowed, the
    CSRF token still decides)."""
    if origin is None:
        return True
    return host is not None and origin == f"{scheme}://{host}"
