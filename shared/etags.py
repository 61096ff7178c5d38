"""Versions as strong ETags (``"3"``), and the version an ``If-Match`` header names."""

from __future__ import annotations

import re

# ASCII digits only (str.isdigit also takes "²" and other digits int() or HTTP cannot carry),
# and few enough for a 64-bit version column.
_VERSION = re.compile(r"[0-9]{1,18}")


def etag_of(version: int) -> str:
    return f'"{version}"'


def if_match_version(value: str | None) -> int | None:
    """The version an ``If-Match`` header names: None when absent or ``*``; ValueError when it
    is no ETag this API issues (which cannot match, so callers answer 412)."""
    if value is None or value.strip() == "*":
        return None
    tag = value.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    if not _VERSION.fullmatch(tag):
        raise ValueError("not a version ETag")
    return int(tag)


def none_match(if_none_match: str | None, version: int) -> bool:
    """Whether ``If-None-Match`` names the current version (``*`` or one of its ETags, weak
    comparison: RFC 9110, 13.1.2): a conditional GET then answers 304 without a body."""
    if if_none_match is None:
        return False
    current = etag_of(version)
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == current:
            return True
    return False
