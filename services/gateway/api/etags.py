"""ETag / If-Match handling for versioned resources (a version number as a strong ETag)."""

from __future__ import annotations

from fastapi import Request, Response

from services.gateway.domain.errors import PreconditionFailed
from shared.etags import etag_of as etag
from shared.etags import if_match_version, none_match

__all__ = ["etag", "not_modified", "parse_if_match"]


def not_modified(request: Request, version: int) -> Response | None:
    """304 with the ETag when the request's ``If-None-Match`` names ``version``; else None."""
    if none_match(request.headers.get("if-none-match"), version):
        return Response(status_code=304, headers={"ETag": etag(version)})
    return None


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` header names; None when absent or ``*``."""
    try:
        return if_match_version(value)
    except ValueError:
        raise PreconditionFailed(
            'If-Match must be an ETag this API returned, such as "3".'
        ) from None
