"""``taskroute vault``: the vault's operator jobs, run with the vault's own settings.

Like ``taskroute migrate``, these connect to the vault database directly and need what a vault
replica needs (``TASKROUTE_VAULT_DATABASE_URL``, the root key and, during a rotation, the previous
root key(s)); run them where the vault runs (a one-off container or Job with the vault's
environment and secrets). See docs/operations.md, "Root key rotation".

* ``rotate-root-key``: re-wrap every stored key under the current root key, in batches (each one
  transaction, audited as ``rotate-root``), beside live traffic; safe to interrupt and run again.
* ``root-key-status``: which root keys wrap how many stored keys; whether the previous root keys
  can be removed.
* ``anchor-audit``: anchor the audit chain's head outside the database now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # imported where used: other `taskroute` commands load no server code
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from services.vault.anchors import Anchor
    from services.vault.domain.envelope import RootKeyRing
    from services.vault.service import RootRotationProgress, VaultService
    from services.vault.settings import VaultSettings

app = typer.Typer(
    help="The vault's operator jobs (run with the vault's settings and root keys).",
    no_args_is_help=True,
)

# A batch is one short transaction (and one audit append): small enough that seals waiting
# behind it on SQLite's single write lock stay well inside the audit lock timeout.
DEFAULT_BATCH_SIZE = 100
# Batches in a row that moved nothing while keys remain under another root key: a replica is
# still wrapping new keys under the old key (it has not been given the new one as current).
MAX_STALLED_BATCHES = 5


def _settings() -> VaultSettings:
    from services.vault.settings import VaultSettings

    return VaultSettings()


class RotationStalled(Exception):
    def __init__(self, remaining: int) -> None:
        super().__init__(remaining)
        self.remaining = remaining


def _ring(settings: VaultSettings) -> RootKeyRing:
    from services.vault.keys import load_root_key_ring, root_key_provider

    ring = load_root_key_ring(root_key_provider(settings))
    if ring is None:
        typer.echo("The vault has no root key (sealed): configure it first.", err=True)
        raise typer.Exit(2)
    return ring


def _service(
    settings: VaultSettings,
    session: AsyncSession,
    maker: async_sessionmaker[AsyncSession],
    ring: RootKeyRing,
) -> VaultService:
    from services.vault.app import anchor_store
    from services.vault.service import VaultService

    return VaultService(
        session=session,
        sessionmaker=maker,
        root_key=ring,
        identity=None,
        actor="operator",
        audit_lock_timeout_seconds=settings.audit_lock_timeout_seconds,
        anchors=anchor_store(settings),
    )


async def rotate_root_key(
    settings: VaultSettings,
    ring: RootKeyRing,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pause_seconds: float = 0.0,
    say: Callable[[str], None] = lambda _text: None,
) -> RootRotationProgress:
    """Run batches until no stored key is under another root key than ``ring.current``."""
    from sqlalchemy.exc import OperationalError

    from services.vault.app import create_vault_engine
    from services.vault.domain.errors import AuditUnavailable
    from services.vault.service import RootRotationProgress
    from shared.db import create_sessionmaker

    engine = create_vault_engine(settings)
    maker = create_sessionmaker(engine)
    stalled = 0
    total = 0
    try:
        while True:
            try:
                async with maker() as session, session.begin():
                    progress = await _service(settings, session, maker, ring).rotate_root_key_batch(
                        batch_size=batch_size
                    )
            except (AuditUnavailable, OperationalError) as busy:
                # The audit lock (or SQLite's write lock) was busy past the timeout: nothing of
                # this batch was stored; try again.
                say(f"batch not done ({type(busy).__name__}: busy); trying again")
                progress = RootRotationProgress(ring.current.key_id, 0, -1)
            total += progress.rewrapped
            if progress.remaining >= 0:
                say(
                    f"re-wrapped {progress.rewrapped} (total {total}); "
                    f"{progress.remaining} left under other root keys"
                )
            if progress.remaining == 0:
                return RootRotationProgress(ring.current.key_id, total, 0)
            stalled = stalled + 1 if progress.rewrapped == 0 else 0
            if stalled >= MAX_STALLED_BATCHES:
                raise RotationStalled(progress.remaining)
            if pause_seconds or progress.rewrapped == 0:
                await asyncio.sleep(max(pause_seconds, 0.2 if progress.rewrapped == 0 else 0))
    finally:
        await engine.dispose()


async def root_key_usage(settings: VaultSettings, ring: RootKeyRing) -> dict[str, int]:
    from services.vault.app import create_vault_engine
    from shared.db import create_sessionmaker

    engine = create_vault_engine(settings)
    try:
        maker = create_sessionmaker(engine)
        async with maker() as session:
            return await _service(settings, session, maker, ring).root_key_usage()
    finally:
        await engine.dispose()


async def anchor_audit(settings: VaultSettings, ring: RootKeyRing) -> Anchor | None:
    from services.vault.app import create_vault_engine
    from shared.db import create_sessionmaker

    engine = create_vault_engine(settings)
    try:
        maker = create_sessionmaker(engine)
        async with maker() as session:
            return await _service(settings, session, maker, ring).anchor_audit_head()
    finally:
        await engine.dispose()


@app.command("rotate-root-key")
def rotate_root_key_command(
    batch_size: Annotated[
        int, typer.Option(min=1, max=1000, help="stored keys re-wrapped per transaction")
    ] = DEFAULT_BATCH_SIZE,
    pause_seconds: Annotated[
        float, typer.Option(min=0, max=60, help="pause between batches (to go gently)")
    ] = 0.0,
) -> None:
    """Re-wrap every tenant key version, sealing key and the audit key under the current root
    key (payloads and data keys are not touched). Resumable: run it again after an interruption.
    """
    from services.vault.domain.errors import RootKeyMismatch

    settings = _settings()
    ring = _ring(settings)
    typer.echo(
        f"current root key {ring.current.key_id}; previous: {', '.join(ring.key_ids[1:]) or 'none'}"
    )
    try:
        progress = asyncio.run(
            rotate_root_key(
                settings,
                ring,
                batch_size=batch_size,
                pause_seconds=pause_seconds,
                say=typer.echo,
            )
        )
    except RootKeyMismatch:
        typer.echo(
            "A stored key is wrapped by a root key this job does not know: give it every "
            "previous root key (TASKROUTE_VAULT_PREVIOUS_ROOT_KEYS or ..._FILES) and run again. "
            "See `taskroute vault root-key-status`.",
            err=True,
        )
        raise typer.Exit(2) from None
    except RotationStalled as stalled:
        typer.echo(
            f"{stalled.remaining} stored keys are still under another root key and no batch "
            "moves them: is every vault replica running with the new root key as current? "
            "Run this again once they are.",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(
        f"done: {progress.rewrapped} keys re-wrapped; every stored key is under root key "
        f"{progress.root_key_id}. The previous root key(s) can now be removed from the vault's "
        "configuration (keep an offline copy until the backups made before today expire)."
    )


@app.command("root-key-status")
def root_key_status_command() -> None:
    """Which root keys wrap how many stored keys, and whether the previous ones can go."""
    settings = _settings()
    ring = _ring(settings)
    usage = asyncio.run(root_key_usage(settings, ring))
    for key_id in sorted(set(usage) | set(ring.key_ids)):
        role = (
            "current"
            if key_id == ring.current.key_id
            else "previous"
            if ring.get(key_id) is not None
            else "UNKNOWN to this configuration"
        )
        typer.echo(f"{key_id}  {usage.get(key_id, 0):>8} stored keys  ({role})")
    others = sum(count for key_id, count in usage.items() if key_id != ring.current.key_id)
    if others:
        typer.echo(f"{others} stored keys still need `taskroute vault rotate-root-key`.")
        raise typer.Exit(1)
    typer.echo("Every stored key is under the current root key.")


@app.command("anchor-audit")
def anchor_audit_command() -> None:
    """Anchor the audit chain's current head outside the database now."""
    from services.vault.domain.errors import AnchoringOff, AuditUnavailable

    settings = _settings()
    ring = _ring(settings)
    try:
        anchor = asyncio.run(anchor_audit(settings, ring))
    except AnchoringOff as error:
        typer.echo(error.detail, err=True)
        raise typer.Exit(2) from None
    except AuditUnavailable as error:
        typer.echo(error.detail, err=True)
        raise typer.Exit(1) from None
    if anchor is None:
        typer.echo("The audit chain is empty: nothing to anchor.")
        return
    typer.echo(f"anchored seq {anchor.seq} ({anchor.hash[:16]}...)")
