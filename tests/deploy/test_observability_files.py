"""The alert rules and the Grafana dashboard query only metrics the services really export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import services.gateway.metrics
import services.router.metrics
import services.vault.metrics
import shared.metrics

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
METRIC = re.compile(r"\btaskroute_[a-z_]+")
MODULES = (
    shared.metrics,
    services.gateway.metrics,
    services.router.metrics,
    services.vault.metrics,
)


def exported_names() -> set[str]:
    """Every sample name the process registry can produce (scrape-time gauges included)."""
    assert all(module.__name__ for module in MODULES)  # imported for their registrations
    names = {
        "taskroute_router_jobs",
        "taskroute_router_queue_depth",
        "taskroute_router_event_outbox",
        "taskroute_router_event_outbox_oldest_seconds",
    }
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in ("", "_total", "_count", "_sum", "_bucket"))
    return names


def test_alert_rules_are_well_formed_and_use_exported_metrics():
    rules: dict[str, Any] = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in alerts}
    assert {"TaskrouteVaultSealed", "TaskrouteAuditFailures", "TaskrouteHigh5xxRate"} <= names
    assert {"TaskrouteUnroutableGrowing", "TaskrouteTriageRateHigh"} <= names
    assert {"TaskrouteWebhookFailuresHigh", "TaskrouteWebhookDeliveriesGivenUp"} <= names
    assert {"TaskroutePendingJobsStuck", "TaskrouteEventFeedStalled"} <= names
    used = {name for rule in alerts for name in METRIC.findall(rule["expr"])}
    assert used
    assert used <= exported_names()
    for rule in alerts:
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]


def test_the_dashboard_uses_exported_metrics():
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    used = {name for expr in expressions for name in METRIC.findall(expr)}
    assert len(dashboard["panels"]) >= 8
    assert used <= exported_names()
    # Webhook deliveries have their panels; the tracing note says how to find a trace.
    assert {
        "taskroute_gateway_webhook_attempts_total",
        "taskroute_gateway_webhook_attempt_duration_seconds_bucket",
        "taskroute_gateway_webhook_outbox_backlog",
    } <= used
    notes = [p["options"]["content"] for p in dashboard["panels"] if p["type"] == "text"]
    assert any("taskroute.request_id" in note for note in notes)
