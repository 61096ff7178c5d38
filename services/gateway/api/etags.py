"""ETag / If-Match handling for versioned resources (a version number as a strong ETag)."""

from __future__ import annotations

from services.gateway.domain.errors import PreconditionFailed


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` header names; None when absent or ``*``."""
    if value is None or value.strip() == "*":
        return None
    tag = value.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    if not tag.isdigit():
        raise PreconditionFailed('If-Match must be an ETag this API returned, such as "3".')
    return int(tag)
