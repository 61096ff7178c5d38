"""``taskroute demo``: a tenant, offshore teams and a dozen jobs, through the public API only.

Everything here goes through the gateway as a client system and an operator would, so the demo
doubles as a smoke test of a running platform.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

WEEKDAYS = [0, 1, 2, 3, 4]
# Israel's working week runs Sunday to Thursday.
SUNDAY_TO_THURSDAY = [6, 0, 1, 2, 3]

DEMO_TEAMS: list[dict[str, Any]] = [
    {
        "name": "Bengaluru Clinical Insights",
        "country": "IN",
        "timezone": "Asia/Kolkata",
        "working_hours": {"start": "09:00", "end": "18:00", "days": WEEKDAYS},
        "tier": "KPO",
        "skills": ["clinical", "pharmaceutical", "research"],
        "certifications": ["HIPAA", "ISO27001", "GDPR"],
        "languages": ["en", "hi"],
        "capacity": 6,
        "hourly_rate": 32.0,
        "quality": 0.93,
    },
    {
        "name": "Pune Legal and Banking Analytics",
        "country": "IN",
        "timezone": "Asia/Kolkata",
        "working_hours": {"start": "10:00", "end": "19:00", "days": WEEKDAYS},
        "tier": "KPO",
        "skills": ["legal", "banking", "research"],
        "certifications": ["ISO27001", "SOC2", "PCI-DSS"],
        "languages": ["en", "mr"],
        "capacity": 5,
        "hourly_rate": 35.0,
        "quality": 0.9,
    },
    {
        "name": "Manila Customer Care",
        "country": "PH",
        "timezone": "Asia/Manila",
        "working_hours": {"start": "00:00", "end": "23:59", "days": [0, 1, 2, 3, 4, 5, 6]},
        "tier": "BPO",
        "skills": ["customer_support", "technical_support"],
        "certifications": ["ISO27001", "PCI-DSS"],
        "languages": ["en", "tl", "es"],
        "capacity": 20,
        "hourly_rate": 11.0,
        "quality": 0.88,
    },
    {
        "name": "Cebu Data Operations",
        "country": "PH",
        "timezone": "Asia/Manila",
        "working_hours": {"start": "08:00", "end": "17:00", "days": WEEKDAYS},
        "tier": "BPO",
        "skills": ["data_entry", "data_processing", "bookkeeping"],
        "certifications": ["ISO27001", "HIPAA"],
        "languages": ["en", "tl"],
        "capacity": 15,
        "hourly_rate": 9.5,
        "quality": 0.86,
    },
    {
        "name": "Dublin Content and Marketing Studio",
        "country": "IE",
        "timezone": "Europe/Dublin",
        "working_hours": {"start": "09:00", "end": "17:30", "days": WEEKDAYS},
        "tier": "KPO",
        "skills": ["marketing", "sales", "writing", "content_development"],
        "certifications": ["GDPR", "ISO27001"],
        "languages": ["en", "ga"],
        "capacity": 4,
        "hourly_rate": 55.0,
        "quality": 0.91,
    },
    {
        "name": "Dublin Finance Back Office",
        "country": "IE",
        "timezone": "Europe/Dublin",
        "working_hours": {"start": "08:30", "end": "17:00", "days": WEEKDAYS},
        "tier": "BPO",
        "skills": ["bookkeeping", "data_processing"],
        "certifications": ["GDPR", "SOC2", "ISO27001"],
        "languages": ["en"],
        "capacity": 6,
        "hourly_rate": 24.0,
        "quality": 0.9,
    },
    {
        "name": "Prague Design and Animation",
        "country": "CZ",
        "timezone": "Europe/Prague",
        "working_hours": {"start": "09:00", "end": "18:00", "days": WEEKDAYS},
        "tier": "KPO",
        "skills": ["design", "animation", "content_development"],
        "certifications": ["GDPR", "ISO27001"],
        "languages": ["cs", "en", "de"],
        "capacity": 4,
        "hourly_rate": 40.0,
        "quality": 0.89,
    },
    {
        "name": "Brno Database Engineering",
        "country": "CZ",
        "timezone": "Europe/Prague",
        "working_hours": {"start": "08:00", "end": "16:30", "days": WEEKDAYS},
        "tier": "KPO",
        "skills": ["database_development", "research"],
        "certifications": ["GDPR", "ISO27001", "SOC2"],
        "languages": ["cs", "en"],
        "capacity": 3,
        "hourly_rate": 45.0,
        "quality": 0.92,
    },
    {
        "name": "Tel Aviv Research Desk",
        "country": "IL",
        "timezone": "Asia/Jerusalem",
        "working_hours": {"start": "09:00", "end": "18:00", "days": SUNDAY_TO_THURSDAY},
        "tier": "KPO",
        "skills": ["research", "pharmaceutical", "banking", "sales"],
        "certifications": ["ISO27001", "SOC2"],
        "languages": ["he", "en"],
        "capacity": 4,
        "hourly_rate": 60.0,
        "quality": 0.94,
    },
]

DEMO_JOBS: list[dict[str, Any]] = [
    {
        "title": "MedDRA coding of adverse events, phase III trial",
        "description": (
            "Code the adverse event narratives from 140 case report forms of our phase III "
            "oncology trial to MedDRA preferred terms, flag serious adverse events for the "
            "pharmacovigilance team and reconcile against the safety database."
        ),
        "priority": "high",
        "confidential": {"patient_initials": ["J.D.", "M.K."], "site": "St. Anne, Boston"},
        "data_policy": {"required_certifications": ["HIPAA"]},
    },
    {
        "title": "Credit memo for a mid-market borrower",
        "description": (
            "Analyse three years of audited financial statements, compute leverage and interest "
            "coverage, assess covenant headroom and draft a credit risk memo recommending terms "
            "for a 25M revolving credit facility."
        ),
        "confidential": {"borrower": "Northwind Holdings", "facility_limit": 25000000},
    },
    {
        "title": "Indemnity and liability review of a supply agreement",
        "description": (
            "Review the attached master supply agreement and NDA, identify indemnification, "
            "limitation of liability and termination clauses that deviate from our playbook, and "
            "propose redlines with a short legal memo."
        ),
        "confidential": {"counterparty": "Contoso GmbH", "contract_value_eur": 4200000},
    },
    {
        "title": "Spring campaign segmentation for EU markets",
        "description": (
            "Build customer segments from last year's campaign response data, size each segment, "
            "recommend positioning and channel mix for the spring marketing campaign in Germany "
            "and France, and outline A/B tests for the email creative."
        ),
        "confidential": {"crm_export": "s3://acme-private/crm/2026-q1.csv"},
        "data_policy": {"allowed_countries": ["IE", "CZ"]},
    },
    {
        "title": "Brand refresh: logo variants and style guide",
        "description": (
            "Design three logo variants, a colour palette and typography for our brand refresh, "
            "and deliver a style guide with mockups for web and packaging."
        ),
        "confidential": {"launch_codename": "Project Heron"},
    },
    {
        "title": "Explainer video storyboard and 2D animation",
        "description": (
            "Storyboard and animate a 45-second 2D explainer video with motion graphics and "
            "character animation, voice-over timing and subtitles."
        ),
        "confidential": {"unreleased_feature": "instant settlement"},
    },
    {
        "title": "PostgreSQL schema design and data migration",
        "description": (
            "Design a normalised PostgreSQL schema for our order management data, write the "
            "migration scripts from the legacy Access database, add indexes and stored "
            "procedures, and tune the slow queries."
        ),
        "confidential": {"legacy_dsn": "access://fileserver/orders.mdb"},
    },
    {
        "title": "Transcribe handwritten registration forms",
        "description": (
            "Key in 1,800 scanned handwritten customer registration forms into the spreadsheet "
            "template, one row per form, double-checking names and postal codes."
        ),
        "confidential": {"batch": "forms-2026-11", "contains": "names and addresses"},
    },
    {
        "title": "Reconcile March bank statements",
        "description": (
            "Reconcile the March bank statements against the general ledger, match accounts "
            "payable invoices to payments, post the journal entries and list the unreconciled "
            "items."
        ),
        "confidential": {"bank_account": "IE29AIBK93115212345678"},
    },
    {
        "title": "Weekend order and refund enquiries",
        "description": (
            "Answer customer emails and live chat about order status, returns and refund "
            "requests over the weekend, escalating complaints according to our support playbook."
        ),
        "priority": "high",
        "confidential": {"refund_limit_usd": 150},
    },
    {
        "title": "Tier-1 helpdesk: password resets and VPN issues",
        "description": (
            "Work the helpdesk ticket queue: password resets, account lockouts, VPN connection "
            "troubleshooting and printer installation, escalating to tier 2 within the SLA."
        ),
        "confidential": {"admin_console": "https://it.example.internal"},
    },
    {
        "title": "Quick help needed",
        "description": "Please take care of the usual things for us this week.",
        "confidential": {"contact": "ops@acme.example"},
    },
]


def _check(response: httpx.Response) -> Any:
    if response.is_error:
        detail = response.json().get("detail", response.text) if response.content else ""
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {detail}"
        )
    return response.json()


def _ensure_teams(operator: httpx.Client) -> dict[str, str]:
    existing = _check(operator.get("/v1/admin/teams", params={"limit": 100}))["data"]
    by_name = {team["name"]: team["id"] for team in existing}
    for team in DEMO_TEAMS:
        if team["name"] not in by_name:
            created = _check(operator.post("/v1/admin/teams", json=team))
            by_name[team["name"]] = created["id"]
    return by_name


def _why(job: dict[str, Any], routing: dict[str, Any] | None) -> str:
    classification = job.get("classification") or {}
    reasons = classification.get("reasons") or []
    why = reasons[0] if reasons else ""
    if routing and job.get("assignment"):
        eligible = len(routing.get("eligible", []))
        excluded = len(routing.get("excluded", []))
        why += f"; best of {eligible} eligible, {excluded} excluded"
    elif job["status"] == "triage":
        why += "; confidence below the triage threshold"
    elif job["status"] == "unroutable":
        why += "; no eligible team"
    return why


def run_demo(*, gateway_url: str, operator_key: str) -> int:
    console = Console()
    timeout = httpx.Timeout(15.0)
    with httpx.Client(
        base_url=gateway_url, headers={"Authorization": f"Bearer {operator_key}"}, timeout=timeout
    ) as operator:
        try:
            teams = _ensure_teams(operator)
        except httpx.TransportError:
            console.print(f"[red]No Taskroute gateway at {gateway_url}; run `taskroute up`.[/red]")
            return 1
        tenant = _check(
            operator.post(
                "/v1/admin/tenants",
                json={
                    "name": f"Acme Demo {time.strftime('%Y-%m-%d %H:%M:%S')}",
                    "policy": {
                        "allowed_countries": ["IN", "PH", "IE", "CZ", "IL"],
                        "required_certifications": ["ISO27001"],
                        "require_e2e": False,
                    },
                },
            )
        )
        member_keys = {}
        for name, team_id in teams.items():
            member = _check(
                operator.post(f"/v1/admin/teams/{team_id}/members", json={"name": f"{name} lead"})
            )
            member_keys[name] = member["api_key"]

    rows = []
    with (
        httpx.Client(
            base_url=gateway_url,
            headers={"Authorization": f"Bearer {tenant['api_key']}"},
            timeout=timeout,
        ) as client,
        Progress(console=console, transient=True) as progress,
    ):
        task = progress.add_task("Submitting jobs", total=len(DEMO_JOBS))
        for spec in DEMO_JOBS:
            job = _check(client.post("/v1/jobs", json=spec))
            routing = None
            if job.get("assignment"):
                routing = _check(client.get(f"/v1/jobs/{job['id']}/routing"))
            rows.append((job, routing))
            progress.advance(task)

    table = Table(title=f"Demo jobs for tenant {tenant['name']}", show_lines=False)
    for column in ("job", "tier", "domain", "conf.", "team or status", "why"):
        table.add_column(column, overflow="fold")
    for job, routing in rows:
        classification = job.get("classification") or {}
        assignment = job.get("assignment")
        table.add_row(
            job["title"],
            classification.get("tier", "-"),
            classification.get("domain", "-"),
            f"{classification.get('confidence', 0):.2f}",
            assignment["team_name"] if assignment else job["status"],
            _why(job, routing),
        )
    console.print(table)
    first_team = next(iter(member_keys))
    console.print(
        f"\nA member key for [bold]{first_team}[/bold] (shown once):\n  {member_keys[first_team]}\n"
        f"List that team's queue: curl -H 'Authorization: Bearer <member key>' "
        f"{gateway_url}/v1/team/jobs\n"
        f"Or sign in with it at {gateway_url}/console to work a job; the operator key shows "
        f"the floor there.",
        # Never break the key across lines: a copied key must work as pasted.
        soft_wrap=True,
    )
    return 0
