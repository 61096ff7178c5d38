"""``taskroute keys``: an operator's view of tenants and their client API keys.

Needs an operator key: ``--api-key`` or ``TASKROUTE_API_KEY``, else (as ``taskroute demo``)
``TASKROUTE_BOOTSTRAP_OPERATOR_KEY`` or the ``operator.key`` that ``taskroute up`` keeps in its
data folder. A new key is printed once, when it is made; the gateway keeps only its digest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from services.cli.jobs import (
    DEFAULT_URL,
    JsonOption,
    UrlOption,
    connected,
    console,
    fail,
    print_json,
)
from services.sdk.models import ApiKey, Tenant
from shared.settings import PlatformSettings

app = typer.Typer(help="Tenants and their client API keys (operator key).", no_args_is_help=True)

OperatorKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="TASKROUTE_API_KEY",
        help="operator API key (default: the local platform's operator key)",
    ),
]
DataDirOption = Annotated[
    Path | None, typer.Option(help="data folder of `taskroute up`, to find the operator key")
]
TenantArgument = Annotated[str, typer.Argument(help="the tenant's id")]


def operator_key(api_key: str | None, data_dir: Path | None) -> str:
    """The key given, else the local platform's operator key (as ``taskroute demo`` finds it)."""
    from services.cli.main import OPERATOR_KEY_FILE  # main imports this module

    if api_key:
        return api_key
    bootstrap = os.environ.get("TASKROUTE_BOOTSTRAP_OPERATOR_KEY")
    if bootstrap:
        return bootstrap
    path = (data_dir or PlatformSettings().data_dir) / OPERATOR_KEY_FILE
    if not path.exists():
        raise fail(f"no operator key: pass --api-key, or run `taskroute up` first ({path})")
    return path.read_text().strip()


def _keys_table(keys: list[ApiKey], title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for name in ("id", "prefix", "role", "created (UTC)", "revoked (UTC)"):
        table.add_column(name, no_wrap=name in ("id", "prefix"))
    for key in keys:
        table.add_row(
            key.id,
            key.lookup_prefix,
            key.role,
            key.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else "-",
        )
    return table


def _tenants_table(tenants: list[Tenant]) -> Table:
    table = Table(title=f"{len(tenants)} tenant(s)", box=box.SIMPLE_HEAD)
    for name in ("id", "name", "created (UTC)"):
        table.add_column(name, no_wrap=name == "id")
    for tenant in tenants:
        table.add_row(tenant.id, tenant.name, tenant.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    return table


def _show_secret_once(api_key: str | None) -> None:
    # Printed to stdout once: the gateway keeps only a digest, so this is the only copy.
    typer.echo(f"\nAPI key (shown only now; store it safely):\n{api_key}")


@app.command("tenants")
def list_tenants(
    api_key: OperatorKeyOption = None,
    url: UrlOption = DEFAULT_URL,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List tenants, newest first."""
    with connected(url, operator_key(api_key, data_dir)) as client:
        tenants = list(client.iter_tenants())
    if as_json:
        print_json(tenants)
    else:
        console().print(_tenants_table(tenants))


@app.command("create-tenant")
def create_tenant(
    name: Annotated[str, typer.Argument(help="the client company's name")],
    api_key: OperatorKeyOption = None,
    url: UrlOption = DEFAULT_URL,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a tenant and print its first client API key (once)."""
    with connected(url, operator_key(api_key, data_dir)) as client:
        tenant = client.create_tenant(name)
    if as_json:
        print_json(tenant)
        return
    console().print(_tenants_table([tenant]))
    _show_secret_once(tenant.api_key)


@app.command("list")
def list_keys(
    tenant_id: TenantArgument,
    api_key: OperatorKeyOption = None,
    url: UrlOption = DEFAULT_URL,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a tenant's API keys (prefixes and dates; never the keys themselves)."""
    with connected(url, operator_key(api_key, data_dir)) as client:
        keys = client.list_api_keys(tenant_id)
    if as_json:
        print_json(keys)
    else:
        console().print(_keys_table(keys, f"API keys of tenant {tenant_id}"))


@app.command("create")
def create_key(
    tenant_id: TenantArgument,
    api_key: OperatorKeyOption = None,
    url: UrlOption = DEFAULT_URL,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue another client API key for a tenant (rotation) and print it once."""
    with connected(url, operator_key(api_key, data_dir)) as client:
        key = client.create_api_key(tenant_id)
    if as_json:
        print_json(key)
        return
    console().print(_keys_table([key], "New API key"))
    _show_secret_once(key.api_key)


@app.command("revoke")
def revoke_key(
    tenant_id: TenantArgument,
    key_id: Annotated[str, typer.Argument(help="the key's id (from `taskroute keys list`)")],
    api_key: OperatorKeyOption = None,
    url: UrlOption = DEFAULT_URL,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a tenant's API key: refused from the next request on."""
    with connected(url, operator_key(api_key, data_dir)) as client:
        key = client.revoke_api_key(tenant_id, key_id)
    if as_json:
        print_json(key)
    else:
        console().print(_keys_table([key], "Revoked"))
