"""Errors the Taskroute client raises.

Hierarchy (catch the narrowest you can handle)::

    TaskrouteSDKError               anything this package raises
    ├── TaskrouteConnectionError    no answer: the gateway was unreachable (after retries)
    └── TaskrouteAPIError           the gateway answered 4xx/5xx; carries the problem+json fields
        ├── AuthenticationError     401: missing, unknown or revoked API key
        ├── PermissionDeniedError   403: a valid key of the wrong role
        ├── NotFoundError           404: unknown id, or another tenant's (they look the same)
        ├── ConflictError           409: wrong state, or an Idempotency-Key still in flight
        ├── GoneError               410: the data was crypto-shredded
        ├── ValidationError         422: bad input; ``errors`` names each offending field
        ├── RateLimitError          429: too many requests; ``retry_after`` in seconds
        └── ServiceUnavailableError 503: the router or the vault is down

Error messages never carry the request body, so confidential values cannot leak into logs
through an exception.
"""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_TYPE_BASE = "https://taskroute.dev/problems/"


class TaskrouteSDKError(Exception):
    """Base of every error this package raises."""


class TaskrouteConnectionError(TaskrouteSDKError):
    """The gateway could not be reached (connection refused, reset or timed out)."""


class TaskrouteAPIError(TaskrouteSDKError):
    """The gateway answered with an error (RFC 9457 problem+json)."""

    def __init__(
        self,
        *,
        status: int,
        type: str,
        title: str,
        detail: str,
        request_id: str | None,
        body: dict[str, Any],
        headers: httpx.Headers,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" + (f" [{request_id}]" if request_id else ""))
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.request_id = request_id
        self.body = body
        self.headers = headers

    @property
    def problem(self) -> str:
        """The short problem code (``rate-limited``, ``idempotency-in-flight``, ...)."""
        return self.type.removeprefix(PROBLEM_TYPE_BASE)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """For 422: each offending field (``field``, ``message``)."""
        found = self.body.get("errors")
        return found if isinstance(found, list) else []

    @property
    def retry_after(self) -> float | None:
        """``Retry-After`` in seconds, when the gateway sent one."""
        return parse_retry_after(self.headers.get("Retry-After"))

    @classmethod
    def from_response(cls, response: httpx.Response) -> TaskrouteAPIError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Not problem+json (a proxy in between, say): keep what a person needs to act.
            body = {}
        status = response.status_code
        return _BY_STATUS.get(status, TaskrouteAPIError)(
            status=status,
            type=str(body.get("type") or "about:blank"),
            title=str(body.get("title") or response.reason_phrase or "Error"),
            detail=str(body.get("detail") or ""),
            request_id=body.get("request_id") or response.headers.get("X-Request-ID"),
            body=body,
            headers=response.headers,
        )


class AuthenticationError(TaskrouteAPIError):
    pass


class PermissionDeniedError(TaskrouteAPIError):
    pass


class NotFoundError(TaskrouteAPIError):
    pass


class ConflictError(TaskrouteAPIError):
    pass


class GoneError(TaskrouteAPIError):
    pass


class ValidationError(TaskrouteAPIError):
    pass


class RateLimitError(TaskrouteAPIError):
    pass


class ServiceUnavailableError(TaskrouteAPIError):
    pass


_BY_STATUS: dict[int, type[TaskrouteAPIError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: ValidationError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (the gateway sends delta-seconds)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)
