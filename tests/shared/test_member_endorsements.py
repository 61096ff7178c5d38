"""Member key endorsements (shared/member_endorsements.py): only the authority's signature, for
exactly one member, team and key, unexpired, is taken; and the CLI that makes them."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from typer.testing import CliRunner

from services.cli.main import app as cli
from shared import member_endorsements as me
from shared import sealed_envelope as se

TEAM = str(uuid.uuid4())
MEMBER = str(uuid.uuid4())


def _public_key() -> str:
    return se.b64url_encode(se.public_raw(X25519PrivateKey.generate().public_key()))


KEY = _public_key()


def _check(token: str | None, authority: Ed25519PrivateKey, **overrides: str) -> None:
    named = {"team_id": TEAM, "member_id": MEMBER, "public_key": KEY, **overrides}
    me.require_endorsed(token, authority.public_key(), **named)


def test_an_endorsement_holds_for_its_member_team_and_key_only() -> None:
    authority = Ed25519PrivateKey.generate()
    token = me.endorse(authority, team_id=TEAM, member_id=MEMBER, public_key=KEY)
    _check(token, authority)
    for field, other in (
        ("member_id", str(uuid.uuid4())),
        ("team_id", str(uuid.uuid4())),
        ("public_key", _public_key()),
    ):
        with pytest.raises(me.UnendorsedKey, match="another member, team or key"):
            _check(token, authority, **{field: other})


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "a.b.c",
        "x" * (me.MAX_ENDORSEMENT_CHARS + 1),
    ],
)
def test_no_endorsement_or_garbage_is_refused(token: str | None) -> None:
    with pytest.raises(me.UnendorsedKey):
        _check(token, Ed25519PrivateKey.generate())


def test_another_authority_an_expired_one_or_a_tampered_one_is_refused() -> None:
    authority = Ed25519PrivateKey.generate()
    impostor = me.endorse(
        Ed25519PrivateKey.generate(), team_id=TEAM, member_id=MEMBER, public_key=KEY
    )
    with pytest.raises(me.UnendorsedKey, match="not the member key authority's"):
        _check(impostor, authority)
    expired = me.endorse(
        authority, team_id=TEAM, member_id=MEMBER, public_key=KEY, ttl_seconds=60,
        now=time.time() - 3600,
    )  # fmt: skip
    with pytest.raises(me.UnendorsedKey, match="or expired"):
        _check(expired, authority)
    header, payload, signature = me.endorse(
        authority, team_id=TEAM, member_id=MEMBER, public_key=KEY
    ).split(".")
    other_payload = me.endorse(
        authority, team_id=TEAM, member_id=str(uuid.uuid4()), public_key=KEY
    ).split(".")[1]
    with pytest.raises(me.UnendorsedKey):
        _check(f"{header}.{other_payload}.{signature}", authority)


def test_only_eddsa_endorsements_of_this_kind_are_taken() -> None:
    authority = Ed25519PrivateKey.generate()
    claims = {
        "iss": me.ISSUER, "aud": me.AUDIENCE, "typ": me.ENDORSEMENT_TYPE, "sub": MEMBER,
        "team_id": TEAM, "public_key": KEY, "iat": int(time.time()),
        "exp": int(time.time()) + 60,
    }  # fmt: skip
    unsigned = jwt.encode(claims, key="", algorithm="none")
    with pytest.raises(me.UnendorsedKey):
        _check(unsigned, authority)
    another_kind = jwt.encode({**claims, "typ": "service"}, authority, algorithm="EdDSA")
    with pytest.raises(me.UnendorsedKey, match="another member, team or key"):
        _check(another_kind, authority)
    other_audience = jwt.encode({**claims, "aud": "gateway"}, authority, algorithm="EdDSA")
    with pytest.raises(me.UnendorsedKey):
        _check(other_audience, authority)


def test_the_cli_makes_the_authority_and_endorses_a_key(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(cli, ["members", "authority-init", str(tmp_path / "authority")])
    assert made.exit_code == 0, made.output
    private_path = tmp_path / "authority" / me.PRIVATE_KEY_FILE
    assert private_path.stat().st_mode & 0o777 == 0o600
    again = runner.invoke(cli, ["members", "authority-init", str(tmp_path / "authority")])
    assert again.exit_code == 1  # never replaced: that would void every endorsement
    endorsed = runner.invoke(
        cli,
        [
            "members", "endorse", "--authority-key", str(private_path), "--team-id", TEAM,
            "--member-id", MEMBER, "--public-key", KEY, "--days", "30",
        ],
    )  # fmt: skip
    assert endorsed.exit_code == 0, endorsed.output
    public = me.load_authority_public_key(tmp_path / "authority" / me.PUBLIC_KEY_FILE)
    me.require_endorsed(
        endorsed.output.strip(), public, team_id=TEAM, member_id=MEMBER, public_key=KEY
    )
    refused = runner.invoke(
        cli,
        [
            "members", "endorse", "--authority-key", str(private_path), "--team-id", TEAM,
            "--member-id", MEMBER, "--public-key", "not-a-key",
        ],
    )  # fmt: skip
    assert refused.exit_code != 0
