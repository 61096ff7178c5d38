"""The route class of the public API: tidy OpenAPI text from each route's docstring, and no
body where a route takes none."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
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
        if self.body_field is None and (self.methods or set()) & _WRITES:
            # Built again around an endpoint whose last parameter refuses a body: solved after
            # the route's own dependencies (authentication first: a caller who may not call the
            # route learns nothing from its body), before the route runs.
            super().__init__(path, _refusing_a_body(endpoint), **kwargs)


def _refusing_a_body(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(endpoint, eval_str=True)
    check = inspect.Parameter(
        "_no_body", inspect.Parameter.KEYWORD_ONLY, default=Depends(_no_body), annotation=None
    )

    @functools.wraps(endpoint)
    async def endpoint_without_body(*args: Any, _no_body: None = None, **kwargs: Any) -> Any:
        return await endpoint(*args, **kwargs)

    endpoint_without_body.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), check]
    )
    return endpoint_without_body


async def _no_body(request: Request) -> None:
    """A write that declares no body refuses one (422), or a malformed body would be ignored
    and the request still change state (a claim, a key rotation). Nothing, an empty body or
    ``{}`` is taken: what clients send for "no options"."""
    body = await request.body()
    if body.strip() and not _empty_object(body):
        raise UnprocessableContent("This request takes no body: send none, or {}.")


def public_router(*, prefix: str, tag: str) -> APIRouter:
    return APIRouter(prefix=prefix, tags=[tag], route_class=DocumentedRoute)


def _empty_object(body: bytes) -> bool:
    try:
        return bool(json.loads(body) == {})
    except ValueError:
        return False
