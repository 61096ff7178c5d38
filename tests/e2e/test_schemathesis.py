"""Schemathesis fuzzes every documented gateway operation against a running platform.

Schemathesis runs as its CLI (its pytest plugin does not load under pytest 9), configured by
``schemathesis.toml`` beside this file: each operation is called with the key of the role it
serves (operator for ``/v1/admin``, member for ``/v1/team``, client for the rest), with data
generated from the OpenAPI document, and each answer must pass the checks: never a 5xx, a
documented status code and content type, and a body that matches the documented schema.
Examples per operation are few, so the run stays bounded.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.sdk import RetryPolicy, TaskrouteClient
from tests.e2e.conftest import Platform
from tests.sdk.platforms import started_platform

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
# About 50 operations: 4 examples each (plus the documented examples, the coverage phase's
# boundary cases and a few stateful scenarios) keeps the run near a minute on two cores.
EXAMPLES_PER_OPERATION = 4
# A hung run must fail the test, not the CI job's time budget.
TIMEOUT_SECONDS = 600
TEAM: dict[str, Any] = {
    "name": "Fuzz Bookkeeping Team",
    "country": "PH",
    "timezone": "Asia/Manila",
    "tier": "BPO",
    "skills": ["bookkeeping", "data_entry"],
    "capacity": 50,
    "hourly_rate": 10.0,
}


@pytest.fixture(scope="module")
def fuzz_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # Limits high enough that the fuzzer meets the routes, not the limiter (429 is documented
    # and tested elsewhere).
    settings_ = {
        "TASKROUTE_GATEWAY_RATE_LIMIT": "100000/minute",
        "TASKROUTE_GATEWAY_FAILED_AUTH_RATE_LIMIT": "100000/minute",
        # The fuzzer registers webhook endpoints at made-up URLs: nothing may be posted there
        # while it runs (the first round, at start, finds nothing due; the next is 5 min off).
        "TASKROUTE_GATEWAY_WEBHOOK_POLL_SECONDS": "300",
    }
    with started_platform(tmp_path_factory, settings_) as platform:
        yield platform


@pytest.fixture(scope="module")
def keys(fuzz_platform: Platform) -> dict[str, str]:
    """One key per role: the operator's, a new tenant's client key, a new team member's."""
    retry = RetryPolicy(max_retries=3, backoff=0.2)
    with TaskrouteClient(fuzz_platform.gateway_url, fuzz_platform.operator_key, retry=retry) as op:
        tenant = op.create_tenant(f"Fuzz {secrets.token_hex(3)}")
        team = op.create_team(TEAM)
        member = op.create_member(str(team["id"]), "Fuzzer")
    assert tenant.api_key is not None
    return {
        "operator": fuzz_platform.operator_key,
        "client": tenant.api_key,
        "member": str(member["api_key"]),
    }


def test_gateway_conforms_to_its_openapi_document(
    fuzz_platform: Platform, keys: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKROUTE_")},
        "FUZZ_OPERATOR_KEY": keys["operator"],
        "FUZZ_CLIENT_KEY": keys["client"],
        "FUZZ_MEMBER_KEY": keys["member"],
    }
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{fuzz_platform.gateway_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--generation-deterministic",
        "--workers",
        "1",
    ]
    run = subprocess.run(  # noqa: S603 - our own tool, with arguments we built
        command,
        env=env,
        cwd=tmp_path,  # where it keeps its cache, out of the work tree
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20000:]
    # Every documented operation was tested, none filtered out or skipped.
    selected = re.search(r"Selected:\s+(\d+)/(\d+)", report)
    tested = re.search(r"Tested:\s+(\d+)", report)
    assert selected is not None, report[-4000:]
    assert tested is not None, report[-4000:]
    assert selected.group(1) == selected.group(2) == tested.group(1), report[-4000:]


def test_every_operation_has_a_summary_its_errors_and_examples() -> None:
    """What the fuzzer relies on, checked in-process: nothing undocumented slips in later."""
    document = create_app(GatewaySettings()).openapi()
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), where
            responses = operation["responses"]
            assert {"401", "403", "429", "503"} <= set(responses), where
            for status, answer in responses.items():
                if status.startswith(("4", "5")):
                    assert "application/problem+json" in answer["content"], (where, status)
            body = operation.get("requestBody")
            if body is not None:
                assert "example" in body["content"]["application/json"], where
                assert "400" in responses, where
