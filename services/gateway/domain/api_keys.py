"""API keys: how they are made, stored and checked.

Design
------
A generated key reads ``tr_<role>_<lookup id>_<secret>``, e.g.
``tr_client_k3v7q2m4x5ab6cde_<52 characters>``:

* ``role`` (``client``, ``member`` or ``operator``) tells a person reading a config file what the
  key is for; the server never trusts it and reads the role from the stored row.
* ``lookup id``: 16 base32 characters (80 random bits). With the role it forms the key's
  *lookup prefix*, stored in clear in a unique column so a presented key is found with one
  indexed query, without comparing secrets across rows.
* ``secret``: 32 bytes (256 bits) from :mod:`secrets`, base32 without padding, so the whole key
  is one "word" (double-click selects it) with no ``_`` inside a part.

The database holds only ``HMAC-SHA256(pepper, full key)``. The pepper lives outside the
database (environment or a 0600 file), so a leaked database or backup cannot be used to check
guesses offline; with 256-bit secrets no guessing is feasible anyway, which is why a fast MAC,
not a slow password hash, is right here. Verification recomputes the MAC and compares it with
:func:`hmac.compare_digest` (constant time). The key itself is returned once, in the creation
response, and is unrecoverable afterwards.

A *bootstrap* operator key (``TASKROUTE_BOOTSTRAP_OPERATOR_KEY``) is chosen by the deployer and
may have any shape of at least 32 characters; its lookup prefix is its first
``BOOTSTRAP_PREFIX_CHARS`` characters. :func:`lookup_prefix` applies the same rule to every
presented key, so both kinds are found the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    CLIENT = "client"
    MEMBER = "member"
    OPERATOR = "operator"


KEY_PREFIX = "tr"
# 10 bytes = 80 bits: collisions between lookup ids stay negligible past billions of keys.
LOOKUP_ID_BYTES = 10
# 32 bytes = 256 bits of secret, the strength of the HMAC that stores it.
SECRET_BYTES = 32
# The stored prefix of a bootstrap key: enough to tell keys apart, while a 32-character key
# still keeps at least 16 characters unseen by anyone reading the table.
BOOTSTRAP_PREFIX_CHARS = 16

_LOOKUP_ID_CHARS = len(base64.b32encode(b"\0" * LOOKUP_ID_BYTES).rstrip(b"="))
_SECRET_CHARS = len(base64.b32encode(b"\0" * SECRET_BYTES).rstrip(b"="))
_GENERATED_KEY = re.compile(
    rf"^(?P<prefix>{KEY_PREFIX}_(?:client|member|operator)_[a-z2-7]{{{_LOOKUP_ID_CHARS}}})"
    rf"_[a-z2-7]{{{_SECRET_CHARS}}}$"
)
# Longest string worth looking up: anything longer is not a key of ours (and not hashed).
MAX_KEY_CHARS = 512


@dataclass(frozen=True, repr=False)
class NewApiKey:
    """A freshly made key: ``plaintext`` goes to the caller once, the rest to the database."""

    plaintext: str
    lookup_prefix: str
    digest: str

    def __repr__(self) -> str:
        return f"NewApiKey(lookup_prefix={self.lookup_prefix!r}, plaintext='***')"


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def digest_key(key: str, *, pepper: bytes) -> str:
    """The stored form of a key: hex HMAC-SHA256 under the pepper."""
    return hmac.new(pepper, key.encode("utf-8"), hashlib.sha256).hexdigest()


def lookup_prefix(key: str) -> str | None:
    """The prefix under which a presented key is stored, or None if it cannot be one of ours."""
    if not key or len(key) > MAX_KEY_CHARS:
        return None
    match = _GENERATED_KEY.match(key)
    if match:
        return match.group("prefix")
    if len(key) < BOOTSTRAP_PREFIX_CHARS * 2:
        return None
    return key[:BOOTSTRAP_PREFIX_CHARS]


def generate_key(role: Role, *, pepper: bytes) -> NewApiKey:
    """A new random key of ``role`` with its lookup prefix and digest."""
    prefix = f"{KEY_PREFIX}_{role.value}_{_b32(secrets.token_bytes(LOOKUP_ID_BYTES))}"
    plaintext = f"{prefix}_{_b32(secrets.token_bytes(SECRET_BYTES))}"
    return NewApiKey(
        plaintext=plaintext, lookup_prefix=prefix, digest=digest_key(plaintext, pepper=pepper)
    )


def bootstrap_key(key: str, *, pepper: bytes) -> NewApiKey:
    """The stored form of a deployer-chosen operator key."""
    prefix = lookup_prefix(key)
    if prefix is None:
        raise ValueError("the bootstrap operator key is too short or too long")
    return NewApiKey(plaintext=key, lookup_prefix=prefix, digest=digest_key(key, pepper=pepper))


def matches(key: str, stored_digest: str, *, pepper: bytes) -> bool:
    """Whether ``key`` is the key stored as ``stored_digest`` (constant-time comparison)."""
    return hmac.compare_digest(digest_key(key, pepper=pepper), stored_digest)
