"""ETag / If-Match handling for versioned resources (a version number as a strong ETag)."""

from __future__ import annotations

from services.gateway.domain.errors import PreconditionFailed
from shared.etags import etag_of as etag
from shared.etags import if_match_version

__all__ = ["etag", "parse_if_match"]


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` header names; None when absent or ``*``."""
    try:
        return if_match_version(value)
    except ValueError:
        raise PreconditionFailed(
            'If-Match must be an ETag this API returned, such as "3".'
        ) from None
