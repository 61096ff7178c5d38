"""The public vocabulary of jobs and the rules a submission must follow.

The router owns the job lifecycle; the gateway checks a submission before anything is sealed or
stored, so bad input is refused with a 422 that changes nothing anywhere.
"""

from __future__ import annotations

import ipaddress
import json
import re
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import idna


class JobStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    IN_REVIEW = "in_review"
    COMPLETED = "completed"
    TRIAGE = "triage"
    UNROUTABLE = "unroutable"
    CANCELLED = "cancelled"


class TeamQueueStatus(StrEnum):
    """The statuses a team's queue shows."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"


# 64 KiB of JSON: a contract, a patient summary or a spreadsheet extract fits; bulk files belong
# in the client's own storage, referenced from here.
MAX_CONFIDENTIAL_BYTES = 64 * 1024
# Same bound for a result: it travels the same path (sealed, or stored by the router).
MAX_RESULT_BYTES = 64 * 1024
# Metadata are labels for the client's own bookkeeping (Stripe allows 50 keys of 40/500
# characters); 20 short ones keep them from turning into a side channel for data.
MAX_METADATA_KEYS = 20
MAX_METADATA_KEY_CHARS = 40
MAX_METADATA_VALUE_CHARS = 500
# The router's bound on stored metadata, measured as it measures (compact, ASCII-escaped JSON):
# checked here so a job is refused before anything is sealed.
MAX_METADATA_BYTES = 8 * 1024
# Long enough for any real webhook URL with a token-free path (the router's bound).
MAX_CALLBACK_URL_CHARS = 2000
_LOOPBACK_NAMES = frozenset({"localhost"})


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON: what the vault seals and the limits count."""
    # allow_nan=False: NaN and Infinity are not JSON; refusing them here turns them into a 422
    # instead of a failure when the body is re-encoded for the vault or the router.
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise ValueError("must not contain NaN or Infinity") from exc
    return len(text.encode("utf-8"))


def check_json_object_size(value: dict[str, Any], *, limit: int) -> dict[str, Any]:
    if json_size(value) > limit:
        raise ValueError(f"must serialize to at most {limit} bytes of JSON")
    return value


def check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} keys")
    for key, item in value.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise ValueError(f"keys must be 1 to {MAX_METADATA_KEY_CHARS} characters")
        check_text(key)
        check_text(item)
        if len(item) > MAX_METADATA_VALUE_CHARS:
            # Name the key, never the value: a misplaced secret must not be echoed back.
            raise ValueError(
                f"the value of {key[:MAX_METADATA_KEY_CHARS]!r} is longer than "
                f"{MAX_METADATA_VALUE_CHARS} characters"
            )
    if len(json.dumps(value, separators=(",", ":"))) > MAX_METADATA_BYTES:
        raise ValueError(f"must serialize to at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


# Control characters: category Cc, which is exactly U+0000-U+001F and U+007F-U+009F (a test
# checks it against unicodedata). Not str.isprintable, which also refuses the no-break space,
# the zero-width (non-)joiners of Persian and emoji sequences, and direction marks, all of
# which real names hold. One regular expression search, not a lookup per character (that cost
# ~0.1 ms of every submit's 900-character description).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# The same, but for what separates the words and lines of free text: tab, LF, CR.
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_printable(value: str) -> str:
    """A name or search text without control characters: a NUL is refused by PostgreSQL and
    ends a pattern early in SQLite (where the text would then match everything)."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def check_text(value: str) -> str:
    """Free text (a title, a description, a reason, a comment) without control characters but
    tabs and line breaks: a NUL is refused by PostgreSQL, and an escape sequence would reach
    the terminals and pages that show the text."""
    if _CONTROL_IN_TEXT.search(value):
        raise ValueError("must not contain control characters (other than tabs and line breaks)")
    return value


def check_json_text(value: Any) -> Any:
    """:func:`check_text` on every string of a JSON value, keys included (a job's result)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


def check_callback_url(value: str) -> str:
    """An https URL, or plain http to a loopback host (local development); no credentials."""
    if len(value) > MAX_CALLBACK_URL_CHARS:
        raise ValueError(f"must be at most {MAX_CALLBACK_URL_CHARS} characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise ValueError("must be an absolute https URL") from None
    if not host or parts.scheme not in ("https", "http"):
        raise ValueError("must be an absolute https URL")
    if _CONTROL.search(value) or any(character.isspace() for character in value):
        raise ValueError("must not contain spaces or control characters")
    if not _is_host(host):
        raise ValueError("must name a host: a domain name or an IP address")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; sign webhooks instead")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError("must use https (plain http is accepted only for a loopback host)")
    return value


# One label of a domain name as IDNA encodes it: letters, digits, hyphens (not at either end)
# and the underscores resolvers take.
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def _is_host(host: str) -> bool:
    """Whether ``host`` (urlsplit's, lower case, brackets gone) is an IP address or a domain
    name a resolver would take: the same URL must mean the same host to every HTTP client."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    ascii_host = host.rstrip(".")
    if not ascii_host.isascii():
        try:
            # IDNA 2008 with UTS 46 mapping, as the HTTP client (httpx) encodes a host: Python's
            # own codec is IDNA 2003, under which some names ("faß.de") mean another host.
            ascii_host = idna.encode(ascii_host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return False
    labels = ascii_host.split(".")
    return len(ascii_host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
