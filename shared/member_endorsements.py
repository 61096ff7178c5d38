"""Member key endorsements: enrolment for end-to-end delivery that the gateway cannot forge.

The vault re-wraps a job's data key to the member key a router-signed grant names, and the
router names the key the gateway registered for the member holding the lease. Members and their
keys are the gateway's to say, so a compromised gateway could make up a member, claim a job for
it, register a key of its own and have the data delivered to that key: end-to-end delivery would
hold against everyone but the one party it is meant to exclude.

An endorsement closes that. It is a token signed with the **member key authority**'s Ed25519
key, which the operators keep away from the services (an offline machine, a secrets manager):
``typ=member-key-endorsement``, ``iss=member-key-authority``, ``aud=vault``, naming the team,
the member and the member's X25519 public key, valid for a year by default. An operator makes
one (``taskroute members endorse``) for the key a member shows them through a channel the
gateway does not carry (in person, a ticket, a call), and the member registers it with the key
(``PUT /v1/team/keys``). The router passes it on in the member's open grants; a vault given
the authority's public key (``TASKROUTE_VAULT_MEMBER_KEY_AUTHORITY_FILE``) delivers sealed data
only to a key endorsed for that member of the team the grant is for. The gateway can carry an
endorsement but cannot make one.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.service_auth import ensure_service_keys

ENDORSEMENT_TYPE = "member-key-endorsement"
ISSUER = "member-key-authority"
AUDIENCE = "vault"
# A year: long enough that members re-enrol rarely, short enough that a key lost without
# anyone noticing stops being delivered to.
DEFAULT_TTL_SECONDS = 365 * 86_400
# The operator's machine and the vault's clocks may disagree a little.
CLOCK_SKEW_SECONDS = 300
# A compact JWS of these claims is ~400 characters; anything far longer is not one.
MAX_ENDORSEMENT_CHARS = 4096
# Its shape, for the APIs that pass one on without checking it: header.payload.signature,
# each base64url.
ENDORSEMENT_PATTERN = r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$"
# The key pair's name in its folder, as service keys are named (shared.service_auth).
AUTHORITY_NAME = "member-authority"
PRIVATE_KEY_FILE = f"{AUTHORITY_NAME}.key"
PUBLIC_KEY_FILE = f"{AUTHORITY_NAME}.pub"
_ALGORITHM = "EdDSA"


class UnendorsedKey(ValueError):
    """The key is not endorsed by the member key authority for this member of this team."""


def endorse(
    authority: Ed25519PrivateKey,
    *,
    team_id: str,
    member_id: str,
    public_key: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
) -> str:
    """An endorsement of ``public_key`` (X25519, base64url) as ``member_id``'s of ``team_id``."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "typ": ENDORSEMENT_TYPE,
        "sub": member_id,
        "team_id": team_id,
        "public_key": public_key,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, authority, algorithm=_ALGORITHM)


def require_endorsed(
    endorsement: str | None,
    authority: Ed25519PublicKey,
    *,
    team_id: str | None,
    member_id: str,
    public_key: str,
) -> None:
    """Refuse (:class:`UnendorsedKey`) unless ``endorsement`` is the authority's, unexpired,
    for exactly this member, team and key."""
    if not endorsement:
        raise UnendorsedKey("the member's key carries no endorsement")
    if len(endorsement) > MAX_ENDORSEMENT_CHARS:
        raise UnendorsedKey("the endorsement is not one")
    try:
        claims: dict[str, Any] = jwt.decode(
            endorsement,
            authority,
            algorithms=[_ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError:
        raise UnendorsedKey(
            "the endorsement is not the member key authority's, or expired"
        ) from None
    named = (claims.get("typ"), claims.get("sub"), claims.get("team_id"), claims.get("public_key"))
    if named != (ENDORSEMENT_TYPE, member_id, team_id, public_key):
        raise UnendorsedKey("the endorsement is for another member, team or key")


def create_authority(directory: Path) -> Path:
    """Write a new authority key pair (the private key 0600) into ``directory``; the public
    key's path. Refuses to overwrite: a new authority voids every endorsement made."""
    if (directory / PRIVATE_KEY_FILE).exists():
        raise FileExistsError(directory / PRIVATE_KEY_FILE)
    ensure_service_keys(directory, names=(AUTHORITY_NAME,))
    return directory / PUBLIC_KEY_FILE


def load_authority_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key in PEM")
    return key


def load_authority_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key in PEM")
    return key
