"""Service credentials: short-lived, audience-bound tokens signed with each service's own key.

Design
------
Every service has its own Ed25519 key pair. A caller signs a JWT (EdDSA) naming itself as the
issuer (``iss``) and the one service it is calling as the audience (``aud``), valid for
``CREDENTIAL_TTL_SECONDS``. The callee holds only the *public* keys of the services allowed to
call it, checks signature, audience and expiry, and then checks that the issuer may call the
endpoint (least privilege: the router cannot call the vault's seal endpoint, say). A leaked token
is useless against another service and dies within a minute; a compromised service cannot mint
tokens in another service's name.

The same keys sign other short-lived statements between services (the router's lease grants
to the vault): each kind carries its own ``typ`` claim, so one kind can never pass as another.

API keys of clients, members and operators are not JWTs and never verify here.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# Module level, not inside service_caller_dependency: with postponed annotations FastAPI resolves
# the dependency's "Request" annotation in this module's globals; a local import left it
# unresolved, so `request` became a required query parameter (422 instead of 401).
from fastapi import Request

from shared.errors import Unauthorized

SERVICE_NAMES = ("gateway", "router", "vault")
CREDENTIAL_TYPE = "service"
# Long enough to cover clock skew between pods and one slow call; short enough that a token
# copied out of a log or a packet capture is worthless almost at once.
CREDENTIAL_TTL_SECONDS = 60
# The longest life a service token may claim: credentials live a minute, grants at most ten
# (the router's setting), result receipts ten. A token signed to live longer (by a stolen key,
# or a signer with a bad clock or setting) is refused rather than honoured for years.
MAX_TOKEN_LIFETIME_SECONDS = 3600
_CLOCK_SKEW_SECONDS = 5
_ALGORITHM = "EdDSA"


class ServiceAuthError(Unauthorized):
    problem = "service-credentials"


def _private_path(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{name}.key"


def _public_path(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{name}.pub"


def ensure_service_keys(keys_dir: Path, names: tuple[str, ...] = SERVICE_NAMES) -> None:
    """Create any missing key pair (local and test deployments; production mounts its keys)."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in names:
        private_path = _private_path(keys_dir, name)
        if private_path.exists():
            continue
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            _write_private(private_path, pem)
        except FileExistsError:
            continue  # another process created it first; keep theirs
        _public_path(keys_dir, name).write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass
class ServiceIdentity:
    """This service's signing key and the public keys of the peers it accepts tokens from."""

    name: str
    _private_key: Ed25519PrivateKey = field(repr=False)
    peer_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict, repr=False)
    _minted: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict, repr=False)
    _verified: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def load(cls, *, name: str, keys_dir: Path, peers: tuple[str, ...]) -> ServiceIdentity:
        private_path = _private_path(keys_dir, name)
        if not private_path.exists():
            raise RuntimeError(f"service key for {name} not found in {keys_dir}")
        private_key = serialization.load_pem_private_key(private_path.read_bytes(), None)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise RuntimeError(f"{private_path} is not an Ed25519 private key")
        peer_keys: dict[str, Ed25519PublicKey] = {}
        for peer in peers:
            public_path = _public_path(keys_dir, peer)
            if not public_path.exists():
                raise RuntimeError(f"public key of {peer} not found in {keys_dir}")
            public_key = serialization.load_pem_public_key(public_path.read_bytes())
            if not isinstance(public_key, Ed25519PublicKey):
                raise RuntimeError(f"{public_path} is not an Ed25519 public key")
            peer_keys[peer] = public_key
        return cls(name=name, _private_key=private_key, peer_keys=peer_keys)

    def sign(self, *, audience: str, typ: str, ttl_seconds: int, claims: dict[str, Any]) -> str:
        now = int(time.time())
        payload = {
            **claims,
            "iss": self.name,
            "aud": audience,
            "typ": typ,
            "iat": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self._private_key, algorithm=_ALGORITHM)

    def credential_for(self, audience: str) -> str:
        """A service credential for calling ``audience``, reused until half its life is spent."""
        key = (audience, CREDENTIAL_TYPE)
        cached = self._minted.get(key)
        now = time.time()
        if cached and cached[1] > now:
            return cached[0]
        token = self.sign(
            audience=audience, typ=CREDENTIAL_TYPE, ttl_seconds=CREDENTIAL_TTL_SECONDS, claims={}
        )
        self._minted[key] = (token, now + CREDENTIAL_TTL_SECONDS / 2)
        return token

    def verify(self, token: str, *, typ: str, allowed_issuers: frozenset[str]) -> dict[str, Any]:
        """Check a token addressed to this service; raise :class:`ServiceAuthError` if not valid."""
        cached = self._verified.get(token)
        if cached is not None and cached["exp"] > time.time():
            claims = cached
        else:
            claims = self._verify_uncached(token)
            self._remember(token, claims)
        if claims.get("typ") != typ:
            raise ServiceAuthError("Token of the wrong kind for this endpoint.")
        if claims.get("iss") not in allowed_issuers:
            raise ServiceAuthError("This service may not call this endpoint.")
        return claims

    def _verify_uncached(self, token: str) -> dict[str, Any]:
        # One unverified parse gives header and issuer (which key to verify with); grants are
        # new per call, so each open pays this, and two parses cost ~0.1 ms more than one.
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise ServiceAuthError("Service credentials are missing or malformed.") from exc
        if unverified["header"].get("alg") != _ALGORITHM:
            raise ServiceAuthError("Service credentials are missing or malformed.")
        issuer = unverified["payload"].get("iss")
        public_key = self.peer_keys.get(issuer) if isinstance(issuer, str) else None
        if public_key is None:
            raise ServiceAuthError("Service credentials from an unknown issuer.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public_key,
                algorithms=[_ALGORITHM],
                audience=self.name,
                leeway=_CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "typ"]},
            )
        except jwt.PyJWTError as exc:
            raise ServiceAuthError("Service credentials are invalid or expired.") from exc
        lifetime = claims["exp"] - claims["iat"]
        if not isinstance(lifetime, int | float) or lifetime > MAX_TOKEN_LIFETIME_SECONDS:
            raise ServiceAuthError("Service credentials claim too long a life.")
        return claims

    def _remember(self, token: str, claims: dict[str, Any]) -> None:
        # Verifying an Ed25519 signature costs ~100 µs; a caller reuses its token for 30 s.
        self._verified[token] = claims
        if len(self._verified) > 1024:
            self._verified.popitem(last=False)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise ServiceAuthError("Service credentials are required.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ServiceAuthError("Service credentials are required.")
    return token.strip()


def service_caller_dependency(*allowed: str) -> Any:
    """A FastAPI dependency admitting only the named services; returns the caller's name.

    The app must hold its :class:`ServiceIdentity` in ``app.state.identity``.
    """
    allowed_issuers = frozenset(allowed)

    async def require_service_caller(request: Request) -> str:
        token = bearer_token(request.headers.get("authorization"))
        identity: ServiceIdentity = request.app.state.identity
        claims = identity.verify(token, typ=CREDENTIAL_TYPE, allowed_issuers=allowed_issuers)
        return str(claims["iss"])

    return require_service_caller
