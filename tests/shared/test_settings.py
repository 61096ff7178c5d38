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


def test_a_secret_setting_can_come_from_a_file(monkeypatch, tmp_path):
    from services.gateway.settings import GatewaySettings

    secret = tmp_path / "redis-url"
    secret.write_text("redis://:s3cret@redis:6379/0\n")
    monkeypatch.setenv("TASKROUTE_GATEWAY_REDIS_URL_FILE", str(secret))
    settings = GatewaySettings()
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:s3cret@redis:6379/0"
    assert "s3cret" not in repr(settings)

    # The variable itself wins over the file; a missing file is an error naming the path.
    monkeypatch.setenv("TASKROUTE_GATEWAY_REDIS_URL", "redis://direct:6379/0")
    direct = GatewaySettings().redis_url
    assert direct is not None
    assert direct.get_secret_value() == "redis://direct:6379/0"
    monkeypatch.delenv("TASKROUTE_GATEWAY_REDIS_URL")
    monkeypatch.setenv("TASKROUTE_GATEWAY_REDIS_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot be read"):
        GatewaySettings()


def test_tracing_settings_default_off_and_are_validated(monkeypatch):
    settings = PlatformSettings()
    assert settings.tracing_enabled is False
    assert settings.tracing_otlp_endpoint is None
    assert settings.tracing_sample_ratio == 1.0
    monkeypatch.setenv("TASKROUTE_TRACING_SAMPLE_RATIO", "1.5")
    with pytest.raises(ValidationError):
        PlatformSettings()


SETTINGS_CANARY = "CANARY7f3e"


@pytest.mark.parametrize(
    ("settings_class", "variables"),
    [
        ("gateway", {"TASKROUTE_GATEWAY_API_KEY_PEPPER": f"{SETTINGS_CANARY}short"}),
        (
            "gateway",
            {"TASKROUTE_BOOTSTRAP_OPERATOR_KEY": f"tr_operator_{SETTINGS_CANARY}_abcdefghijkl\t"},
        ),
        (
            "gateway",  # production without a pepper: the model validator's error
            {
                "TASKROUTE_ENVIRONMENT": "production",
                "TASKROUTE_GATEWAY_DATABASE_URL": f"postgresql://app:{SETTINGS_CANARY}@db/gw",
            },
        ),
        ("router", {"TASKROUTE_UPSTREAM_TIMEOUT_SECONDS": SETTINGS_CANARY}),
        ("vault", {"TASKROUTE_UPSTREAM_TIMEOUT_SECONDS": SETTINGS_CANARY}),
    ],
)
def test_a_refused_setting_is_not_echoed_in_the_error(monkeypatch, settings_class, variables):
    """A start-up error goes to the container's log: it names the setting and why, never the
    value, which may be a secret or carry one."""
    from services.gateway.settings import GatewaySettings
    from services.router.settings import RouterSettings
    from services.vault.settings import VaultSettings

    classes = {"gateway": GatewaySettings, "router": RouterSettings, "vault": VaultSettings}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        classes[settings_class]()
    assert SETTINGS_CANARY not in str(refused.value)  # what a start-up traceback prints


@pytest.mark.parametrize(
    "variable",
    ["TASKROUTE_GATEWAY_IDEMPOTENCY_LOCK_SECONDS", "TASKROUTE_GATEWAY_SUBMISSION_GRACE_SECONDS"],
)
def test_the_gateways_clocks_must_outlast_a_submissions_two_upstream_calls(monkeypatch, variable):
    """Shorter, a live request's key would be taken over or its sealed data discarded."""
    from services.gateway.settings import GatewaySettings

    monkeypatch.setenv("TASKROUTE_UPSTREAM_TIMEOUT_SECONDS", "10")
    monkeypatch.setenv(variable, "20")
    with pytest.raises(ValidationError, match="longer than two upstream calls"):
        GatewaySettings()
    monkeypatch.setenv(variable, "20.5")
    assert GatewaySettings().upstream_timeout_seconds == 10
