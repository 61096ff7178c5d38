"""``taskroute demo`` against a fresh platform: jobs land on sensible teams, with reasons."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import REPO_ROOT, Platform


def test_demo_routes_jobs_to_sensible_teams(fresh_platform: Platform) -> None:
    # A fresh platform: another module's teams would compete with the demo's for its jobs.
    platform = fresh_platform
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKROUTE_")}
    env["TASKROUTE_BOOTSTRAP_OPERATOR_KEY"] = platform.operator_key
    env["COLUMNS"] = "250"
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "demo", "--url", platform.gateway_url],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()

    def row(title_start: str) -> str:
        return next(line for line in lines if title_start in line)

    assert "Bengaluru Clinical Insights" in row("MedDRA coding")
    assert "Pune Legal and Banking" in row("Indemnity and liability")
    assert "Cebu Data Operations" in row("Transcribe handwritten")
    assert "Manila Customer Care" in row("Tier-1 helpdesk")
    # The EU-only marketing job may only go to Ireland or the Czech Republic.
    assert "Dublin Content and Marketing" in row("Spring campaign")
    assert "triage" in row("Quick help needed")
