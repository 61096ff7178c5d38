"""The README's client walk-through runs as written against a real platform.

Only what a reader would change is changed: the gateway URL, where the operator key is, and the
port of the webhook receiver (a real one, on a free port).
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.sdk import TaskrouteClient
from tests.e2e.conftest import REPO_ROOT, Platform, free_port, launch_platform
from tests.sdk.receiver import receiving

pytestmark = pytest.mark.e2e


def _walkthrough() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Python client and CLI", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README lost its Python walk-through"
    return match.group(1)


@pytest.fixture(scope="module")
def fresh_platform(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own: the README's tenant takes any team in India or Ireland, so
    another module's team there could take its job."""
    with launch_platform(backend, tmp_path_factory.mktemp("platform")) as platform:
        yield platform


def test_readme_walkthrough_runs(fresh_platform: Platform, tmp_path: Path) -> None:
    platform = fresh_platform
    key_file = tmp_path / "operator.key"
    key_file.write_text(platform.operator_key + "\n")
    port = free_port()
    code = (
        _walkthrough()
        .replace('"http://127.0.0.1:8000"', repr(platform.gateway_url))
        .replace('"var/operator.key"', repr(str(key_file)))
        .replace("127.0.0.1:9000", f"127.0.0.1:{port}")
    )
    with receiving(port) as (_, received):
        printed = io.StringIO()
        namespace: dict[str, object] = {}
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
        lines = printed.getvalue().splitlines()
        assert lines[:3] == ["{'patient': 'J. Doe'}", "completed", "{'coded_events': 37}"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "job.completed" not in received.types():
            time.sleep(0.2)
        assert "job.completed" in received.types()
    for name in ("operator", "client", "member"):
        client = namespace[name]
        assert isinstance(client, TaskrouteClient)
        client.close()
