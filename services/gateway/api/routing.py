"""The route class of the public API: tidy OpenAPI text from each route's docstring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute


class DocumentedRoute(APIRoute):
    """A route whose one-line docstring is its summary and whose name is its operation id."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        doc = (endpoint.__doc__ or "").strip()
        if doc and not kwargs.get("summary"):
            kwargs["summary"] = doc.splitlines()[0]
            kwargs["description"] = kwargs.get("description") or ""
        kwargs["operation_id"] = kwargs.get("operation_id") or endpoint.__name__
        super().__init__(path, endpoint, **kwargs)


def public_router(*, prefix: str, tag: str) -> APIRouter:
    return APIRouter(prefix=prefix, tags=[tag], route_class=DocumentedRoute)
