"""Checking a webhook delivery's signature on the receiving side.

``Taskroute-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``, with one
``v1`` per secret while a rotated secret's overlap lasts (either secret verifies). Verify over
the raw body bytes as received (re-serialised JSON differs), and refuse old timestamps so a
captured delivery cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

# Stripe's default tolerance: wide enough for clock skew and queueing, narrow against replay.
DEFAULT_TOLERANCE_SECONDS = 300


def verify_signature(
    secret: str,
    header: str,
    *,
    body: bytes,
    tolerance: float | None = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` within ``tolerance`` seconds."""
    pairs = [part.strip().split("=", 1) for part in header.split(",") if "=" in part]
    timestamps = [value for name, value in pairs if name == "t"]
    # Several ``v1`` entries: while a secret rotation overlaps, each secret signs once.
    candidates = [value for name, value in pairs if name == "v1"]
    try:
        (timestamp_text,) = timestamps
        timestamp = int(timestamp_text)
    except ValueError:
        return False
    if tolerance is not None and abs((now or time.time()) - timestamp) > tolerance:
        return False
    signed = str(timestamp).encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    matched = False
    for candidate in candidates:  # compare with each, no early exit
        matched |= hmac.compare_digest(expected, candidate)
    return matched
