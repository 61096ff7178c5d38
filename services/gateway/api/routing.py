"""The route class of the public API: tidy OpenAPI text from each route's docstring, and no
body where a route takes none."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from shared.errors import UnprocessableContent

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class DocumentedRoute(APIRoute):
    """A route whose one-line docstring is its summary and whose name is its operation id."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        doc = (endpoint.__doc__ or "").strip()
        if doc and not kwargs.get("summary"):
            kwargs["summary"] = doc.splitlines()[0]
            kwargs["description"] = kwargs.get("description") or ""
        kwargs["operation_id"] = kwargs.get("operation_id") or endpoint.__name__
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """A write that declares no body refuses one (422), or a malformed body would be
        ignored and the request still change state (a claim, a key rotation). Nothing, an empty
        body or ``{}`` is taken: what clients send for "no options"."""
        handler = super().get_route_handler()
        if self.body_field is not None or not (self.methods or set()) & _WRITES:
            return handler

        async def without_body(request: Request) -> Response:
            body = await request.body()
            if body.strip() and not _empty_object(body):
                raise UnprocessableContent("This request takes no body: send none, or {}.")
            return await handler(request)

        return without_body


def public_router(*, prefix: str, tag: str) -> APIRouter:
    return APIRouter(prefix=prefix, tags=[tag], route_class=DocumentedRoute)


def _empty_object(body: bytes) -> bool:
    try:
        return bool(json.loads(body) == {})
    except ValueError:
        return False
