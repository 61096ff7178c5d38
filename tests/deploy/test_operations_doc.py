"""docs/operations.md lists every setting each service reads, with its current default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.gateway.settings import GatewaySettings
from services.router.settings import RouterSettings
from services.vault.settings import VaultSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
# Internal class constants that happen to be fields: never meant to be configured.
NOT_SETTINGS = {"service_name"}


def variables(settings_class: type[BaseSettings]) -> dict[str, object]:
    """Environment variable name -> default, as pydantic-settings reads them."""
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    found: dict[str, object] = {}
    for name, field in settings_class.model_fields.items():
        if name in NOT_SETTINGS:
            continue
        alias = field.validation_alias
        env = alias.choices[0] if isinstance(alias, AliasChoices) else (prefix + name).upper()
        found[str(env)] = field.default
    return found


@pytest.mark.parametrize("settings_class", [GatewaySettings, RouterSettings, VaultSettings])
def test_every_variable_is_documented_with_its_default(settings_class):
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `([A-Z_]+)` \| `([^`]*)`", DOC.read_text(), re.MULTILINE)
    }
    for env, default in variables(settings_class).items():
        assert env in rows, f"{env} is not in docs/operations.md"
        shown = default.value if hasattr(default, "value") else default
        assert rows[env] == str(shown), f"{env}: documented {rows[env]!r}, default {shown!r}"
