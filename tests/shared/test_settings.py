from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import PlatformSettings, ServiceSettings


def test_defaults_run_locally_on_sqlite_under_the_data_folder(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path, service_name="router")
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path / 'router.db'}"
    assert settings.keys_dir() == tmp_path / "service-keys"


def test_production_refuses_to_run_without_a_database(monkeypatch):
    monkeypatch.setenv("TASKROUTE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        ServiceSettings(service_name="vault")


def test_common_settings_come_from_taskroute_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("TASKROUTE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TASKROUTE_LOG_LEVEL", "debug")
    settings = PlatformSettings()
    assert settings.data_dir == tmp_path
    assert settings.log_level == "DEBUG"
    monkeypatch.setenv("TASKROUTE_LOG_LEVEL", "chatty")
    with pytest.raises(ValidationError):
        PlatformSettings()
