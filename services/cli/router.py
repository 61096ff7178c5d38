"""``taskroute router``: the router's operator jobs, run with the router's own settings.

Like ``taskroute migrate``, these connect to the router's database directly
(``TASKROUTE_ROUTER_DATABASE_URL``, or the local data folder's SQLite file): run them where the
router runs (a one-off container or Job with the router's environment).

* ``forget-member-key``: re-enrol a member who lost the private half of their registered
  X25519 key. The router never replaces a registered key on the gateway's word (a compromised
  gateway could otherwise swap in a key of its own and have the vault re-wrap data to it), so
  the reset is done here, out of the gateway's reach. The member then registers a new key with
  ``PUT /v1/team/keys``; until then nothing is delivered to them sealed, and under
  ``require_e2e`` nothing at all.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

app = typer.Typer(
    help="The router's operator jobs (run with the router's settings).", no_args_is_help=True
)
logger = logging.getLogger("taskroute.router.operator")


async def forget_member_key(database_url: str, *, member_id: str) -> str | None:
    """Delete the member's registered key and refuse it for the member from now on; the
    public key that was registered, or None."""
    from sqlalchemy import delete

    from services.router.db.models import ForgottenMemberKey, MemberKey
    from services.router.member_keys import lock_member_keys
    from shared.db import create_engine, create_sessionmaker, utcnow

    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await lock_member_keys(session, member_id)
            removed = await session.execute(
                delete(MemberKey)
                .where(MemberKey.member_id == member_id)
                .returning(MemberKey.public_key)
            )
            public_key = removed.scalar_one_or_none()
            if public_key is not None and (
                await session.get(ForgottenMemberKey, (member_id, public_key)) is None
            ):
                session.add(
                    ForgottenMemberKey(
                        member_id=member_id, public_key=public_key, forgotten_at=utcnow()
                    )
                )
            return public_key
    finally:
        await engine.dispose()


@app.command("forget-member-key")
def forget_member_key_command(
    member_id: Annotated[str, typer.Argument(help="the member's id")],
) -> None:
    """Forget a member's registered public key, so that they can register a new one."""
    from services.router.settings import RouterSettings
    from shared.sealed_envelope import b64url_decode, key_id_for

    settings = RouterSettings()
    public_key = asyncio.run(
        forget_member_key(settings.resolved_database_url(), member_id=member_id)
    )
    if public_key is None:
        typer.echo(f"member {member_id} has no registered key", err=True)
        raise typer.Exit(1)
    key_id = key_id_for(b64url_decode(public_key, field="public_key"))
    logger.warning("member key forgotten", extra={"member_id": member_id, "key_id": key_id})
    typer.echo(
        f"forgot key {key_id} of member {member_id} (it is refused for them from now on, "
        "endorsed or not); they can register a new one (PUT /v1/team/keys)"
    )
