"""Console pages without a browser: charts, job rows, and the floor on old and new statistics."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.console import views
from services.gateway.console.charts import Row, bar_chart
from shared.db import utcnow
from tests.conftest import running
from tests.gateway.conftest import OPERATOR_KEY, gateway_settings
from tests.gateway.test_console_sessions import sign_in

TEAM_ID = "6a1b5a52-8f0e-4a8e-9d57-1f0c1d7b9c11"
OLD_STATS = {
    "by_status": {"queued": 2, "triage": 1},
    "by_tier": {"KPO": 3},
    "by_domain": {"clinical": 2},
    "queues": [
        {
            "team_id": TEAM_ID,
            "team_name": "Clinical <b>",
            "queued": 2,
            "in_progress": 1,
            "capacity": 5,
        }
    ],
}
NEW_STATS = {
    **OLD_STATS,
    "generated_at": "2026-11-27T10:00:00Z",
    "window_seconds": 86400,
    "queued_by_tier": {"KPO": 2},
    "queued_by_domain": {"clinical": 2},
    "queue_ages": [
        {
            "team_id": TEAM_ID,
            "team_name": "Clinical <b>",
            "queued": 2,
            "oldest_queued_since": "2026-11-27T09:00:00Z",
            "oldest_queued_age_seconds": 3600.0,
        }
    ],
    "waits": {
        "window_seconds": 86400,
        "count": 3,
        "sampled": 3,
        "p50_seconds": 60.0,
        "p95_seconds": 600.0,
        "max_seconds": 900.0,
    },
    "lease_expiries": {"total": 0, "in_window": 0},
    "sla": {"completed_late": 1, "completed_on_time": 4, "open_overdue": 0},
    "a_field_from_the_future": 7,
}


def test_bar_chart_is_accessible_and_escapes_labels():
    svg = str(
        bar_chart(
            title="Depth <per> team",
            rows=[Row(label="<script>alert(1)</script>", values=[2, 1], mark=5)],
            series=["queued", "in progress"],
            mark_label="capacity",
        )
    )
    assert svg.startswith("<svg")
    assert 'role="img"' in svg
    assert "<title" in svg
    assert "<desc" in svg
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "queued 2, in progress 1, capacity 5" in svg
    assert "Nothing to show" in str(bar_chart(title="x", rows=[], series=["a"]))


def test_queue_rows_show_age_deadline_and_risk():
    now = utcnow()
    job = {
        "id": "j1",
        "title": "T",
        "status": "queued",
        "priority": "high",
        "created_at": (now - timedelta(minutes=90)).isoformat(),
        "due_at": (now + timedelta(hours=2)).isoformat(),
        "classification": {"tier": "KPO", "domain": "legal"},
        "lease": {"member_id": "m1", "expires_at": now.isoformat()},
    }
    row = views.queue_row(job, member_id="m1", now=now)
    assert (row.age, row.domain, row.lease) == ("1 h 30 min", "legal", "yours")
    assert row.at_risk
    assert not row.overdue
    assert row.due_in == "in 2 h"
    late = views.queue_row(
        {**job, "due_at": (now - timedelta(minutes=5)).isoformat()}, member_id="m2", now=now
    )
    assert late.overdue
    assert late.lease == "another member"
    assert views.queue_row({"id": "x"}, member_id=None, now=now).domain == "unclassified"


@pytest.mark.parametrize("stats", [OLD_STATS, NEW_STATS], ids=["old-stats", "new-stats"])
async def test_the_floor_reads_whatever_statistics_the_router_has(
    databases, keys_dir, tmp_path, stats
):
    now = utcnow()
    queued = [
        {
            "id": f"00000000-0000-0000-0000-00000000000{i}",
            "title": f"Job {i}",
            "status": "queued",
            "priority": "normal",
            "created_at": (now - timedelta(minutes=10 * i)).isoformat(),
            "due_at": (now + timedelta(hours=1)).isoformat() if i == 1 else None,
            "classification": {"tier": "KPO", "domain": "clinical"},
            "assignment": {"team_id": TEAM_ID, "team_name": "Clinical <b>"},
        }
        for i in (1, 2)
    ]

    def router(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/internal/v1/stats":
            return httpx.Response(200, json=stats)
        if path == f"/internal/v1/teams/{TEAM_ID}/jobs":
            return httpx.Response(
                200, json={"data": queued, "has_more": False, "next_cursor": None}
            )
        if path == "/internal/v1/triage":
            return httpx.Response(200, json={"data": [], "has_more": False, "next_cursor": None})
        return httpx.Response(404, json={"title": "Not found", "status": 404})

    def vault(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("not used", request=request)

    app = create_app(
        gateway_settings(databases, keys_dir, tmp_path),
        transports={"router": httpx.MockTransport(router), "vault": httpx.MockTransport(vault)},
    )
    async with running(app) as client:
        signed_in = await sign_in(client, OPERATOR_KEY)
        assert signed_in.status_code == 303
        page = await client.get("/console/floor")
    assert page.status_code == 200, page.text
    text = page.text
    assert text.count('<svg class="chart"') >= 4
    assert "Clinical &lt;b&gt;" in text
    assert "Clinical <b>" not in text
    assert "Job 1" in text  # due within the hour: listed at risk
    if stats is NEW_STATS:
        assert "95th percentile" in text
        assert "completed late" in text
        assert "a field from the future" in text
    else:
        assert "95th percentile" not in text
    assert json.dumps(stats)  # the fixture itself stays JSON


@pytest.mark.parametrize(("anchoring", "warned"), [(False, True), (True, False), (None, False)])
def test_the_audit_page_warns_when_the_vault_anchors_nothing(anchoring, warned):
    """Without anchors the newest records, cut off with the chain's head, would verify: the
    operator's audit page says so rather than showing a plain "verifies"."""
    from services.gateway.console.web import templates

    page = templates.get_template("audit.html").render(
        verification={"valid": True, "records": 3, "anchoring": anchoring},
        records=[],
        next_cursor=None,
        user=None,
    )
    assert "The hash chain verifies" in page
    assert ('id="audit-anchoring"' in page) is warned
