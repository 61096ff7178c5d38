"""``taskroute members``: the member key authority, run by operators away from the services.

End-to-end delivery re-wraps a job's data key to a member's registered X25519 key. Members and
their keys reach the router through the gateway, so a vault that took every registered key
would deliver to a member a compromised gateway made up. The member key authority is an
Ed25519 key pair the operators keep off the platform (an offline machine, a secrets manager):
an operator checks a member's key with the member through a channel the gateway does not carry
(in person, a call, a ticket), endorses it here, and the member registers the endorsement with
the key (``PUT /v1/team/keys``). The vault, given the authority's public key
(``TASKROUTE_VAULT_MEMBER_KEY_AUTHORITY_FILE``), delivers sealed data only to endorsed keys
(shared/member_endorsements.py).

* ``authority-init DIR``: make the key pair (``member-authority.key``, mode 0600, and
  ``member-authority.pub`` for the vault).
* ``endorse``: print an endorsement of one member's key.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer

from shared import member_endorsements, sealed_envelope

app = typer.Typer(
    help="The member key authority: endorse members' keys for end-to-end delivery.",
    no_args_is_help=True,
)


def _uuid(value: str, name: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise typer.BadParameter(f"{name} must be the id the API shows (a UUID)") from None


@app.command("authority-init")
def authority_init(
    directory: Annotated[Path, typer.Argument(help="where to write the key pair")],
) -> None:
    """Make the member key authority's key pair (refuses to replace one)."""
    try:
        public_path = member_endorsements.create_authority(directory)
    except FileExistsError:
        typer.echo(
            f"{directory / member_endorsements.PRIVATE_KEY_FILE} exists: a new authority would "
            "void every endorsement made with it.",
            err=True,
        )
        raise typer.Exit(1) from None
    private_path = directory / member_endorsements.PRIVATE_KEY_FILE
    typer.echo(f"private key: {private_path} (keep it off the platform)")
    typer.echo(
        f"public key:  {public_path} (the vault's TASKROUTE_VAULT_MEMBER_KEY_AUTHORITY_FILE)"
    )


@app.command("endorse")
def endorse(
    authority_key: Annotated[
        Path, typer.Option("--authority-key", help="the authority's private key file")
    ],
    team_id: Annotated[str, typer.Option("--team-id", help="the member's team id")],
    member_id: Annotated[str, typer.Option("--member-id", help="the member's id")],
    public_key: Annotated[
        str,
        typer.Option(
            "--public-key", help="the member's X25519 public key (base64url), as they showed it"
        ),
    ],
    days: Annotated[int, typer.Option(min=1, max=3650, help="how long it holds")] = 365,
) -> None:
    """Print an endorsement of a member's public key, for the member to register with it."""
    try:
        sealed_envelope.check_public_key(public_key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--public-key") from None
    authority = member_endorsements.load_authority_private_key(authority_key)
    typer.echo(
        member_endorsements.endorse(
            authority,
            team_id=_uuid(team_id, "--team-id"),
            member_id=_uuid(member_id, "--member-id"),
            public_key=public_key,
            ttl_seconds=days * 86_400,
        )
    )
