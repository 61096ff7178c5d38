"""The ``taskroute`` command."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from services.cli.jobs import app as jobs_app
from services.cli.keys import app as keys_app
from services.cli.members import app as members_app
from services.cli.registry import SERVICE_ORDER, SERVICES
from services.cli.router import app as router_app
from services.cli.supervisor import ManagedService, Supervisor, child_environment
from services.cli.vault import app as vault_app
from services.router.classifier.commands import app as classifier_app
from shared.app import freeze_heap_after_startup
from shared.logging import configure_logging
from shared.service_auth import ensure_service_keys
from shared.settings import PlatformSettings, ServiceSettings

app = typer.Typer(
    help="Taskroute: secure routing of outsourced KPO and BPO work.",
    no_args_is_help=True,
    add_completion=False,
)

app.add_typer(classifier_app, name="classifier")
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys_app, name="keys")
app.add_typer(members_app, name="members")
app.add_typer(router_app, name="router")
app.add_typer(vault_app, name="vault")

OPERATOR_KEY_FILE = "operator.key"


def _write_secret_file(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def _local_operator_key(data_dir: Path) -> str:
    """The operator key of a local platform, made once and kept in the data folder (0600)."""
    path = data_dir / OPERATOR_KEY_FILE
    if not path.exists():
        _write_secret_file(path, f"tr_operator_local_{secrets.token_urlsafe(32)}")
    return path.read_text().strip()


def _service_url(settings: ServiceSettings) -> str:
    return f"http://{settings.host}:{settings.port}"


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="gateway, router or vault")],
    migrate: Annotated[bool, typer.Option(help="apply migrations before serving")] = True,
) -> None:
    """Run one service in the foreground (what each container runs)."""
    entry = SERVICES.get(service)
    if entry is None:
        raise typer.BadParameter(f"unknown service {service!r}; use gateway, router or vault")
    settings = entry.settings()
    configure_logging(service, settings.log_level)
    if not settings.is_production():
        ensure_service_keys(settings.keys_dir())
    if migrate:
        entry.upgrade(settings.resolved_database_url())
    application = entry.create_app()(settings)
    freeze_heap_after_startup(application)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=8,
    )


@app.command("migrate")
def migrate_command(
    service: Annotated[str | None, typer.Argument(help="one service, or all")] = None,
) -> None:
    """Apply database migrations (all services, or one)."""
    names = [service] if service else list(SERVICE_ORDER)
    for name in names:
        entry = SERVICES.get(name)
        if entry is None:
            raise typer.BadParameter(f"unknown service {name!r}")
        entry.upgrade(entry.settings().resolved_database_url())
        typer.echo(f"{name}: migrations applied")


@app.command()
def up(
    data_dir: Annotated[
        Path | None, typer.Option(help="data folder (default: $TASKROUTE_DATA_DIR or ./var)")
    ] = None,
) -> None:
    """Apply migrations and run gateway, router and vault as three supervised processes."""
    if data_dir is not None:
        os.environ["TASKROUTE_DATA_DIR"] = str(data_dir)
    base = PlatformSettings()
    folder = base.data_dir.resolve()
    # The folder holds keys and databases: only its owner may enter it.
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    os.environ["TASKROUTE_DATA_DIR"] = str(folder)

    all_settings = {name: SERVICES[name].settings() for name in SERVICE_ORDER}
    overrides = {"TASKROUTE_DATA_DIR": str(folder)}
    for name, settings in all_settings.items():
        # Peers find each other at the ports actually configured.
        overrides[f"TASKROUTE_{name.upper()}_URL"] = _service_url(settings)
    key_note = "from TASKROUTE_BOOTSTRAP_OPERATOR_KEY"
    if not os.environ.get("TASKROUTE_BOOTSTRAP_OPERATOR_KEY"):
        overrides["TASKROUTE_BOOTSTRAP_OPERATOR_KEY"] = _local_operator_key(folder)
        key_note = f"in {folder / OPERATOR_KEY_FILE}"

    if not base.is_production():
        ensure_service_keys(base.keys_dir().resolve())
    for name in SERVICE_ORDER:
        SERVICES[name].upgrade(all_settings[name].resolved_database_url())
        typer.echo(f"{name}: migrations applied")

    services = [ManagedService(name, _service_url(all_settings[name])) for name in SERVICE_ORDER]
    supervisor = Supervisor(
        services,
        env=child_environment(dict(os.environ), overrides),
        say=lambda text: typer.echo(f"taskroute: {text}", err=True),
        run_dir=folder / "run",
    )
    supervisor.install_signal_handlers()
    try:
        started = supervisor.start()
    except RuntimeError as exc:
        typer.echo(f"taskroute: {exc}", err=True)
        supervisor.stop()
        raise typer.Exit(1) from None
    if not started:
        raise typer.Exit(supervisor.stop())
    gateway_url = _service_url(all_settings["gateway"])
    typer.echo(
        f"\nTaskroute is running.\n"
        f"  gateway   {gateway_url}\n"
        f"  API docs  {gateway_url}/docs\n"
        f"  console   {gateway_url}/console (sign in with an operator or member key)\n"
        f"  router    {_service_url(all_settings['router'])} (internal)\n"
        f"  vault     {_service_url(all_settings['vault'])} (internal)\n"
        f"  data      {folder}\n"
        f"  operator key {key_note}\n"
        f"Try `taskroute demo` in another terminal. Ctrl-C stops everything.\n"
    )
    raise typer.Exit(supervisor.run_forever())


@app.command()
def demo(
    url: Annotated[str, typer.Option(help="gateway URL")] = "http://127.0.0.1:8000",
    data_dir: Annotated[
        Path | None, typer.Option(help="data folder of `taskroute up`, to find the operator key")
    ] = None,
) -> None:
    """Register a demo tenant and teams, submit a dozen jobs, and show where they went."""
    from services.cli.demo import run_demo

    operator_key = os.environ.get("TASKROUTE_BOOTSTRAP_OPERATOR_KEY")
    if not operator_key:
        folder = data_dir or PlatformSettings().data_dir
        key_path = folder / OPERATOR_KEY_FILE
        if not key_path.exists():
            typer.echo(
                f"No operator key: set TASKROUTE_BOOTSTRAP_OPERATOR_KEY or run `taskroute up` "
                f"first (it keeps one in {key_path}).",
                err=True,
            )
            raise typer.Exit(2)
        operator_key = key_path.read_text().strip()
    raise typer.Exit(run_demo(gateway_url=url, operator_key=operator_key))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
