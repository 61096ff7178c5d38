"""A real platform for end-to-end tests: ``taskroute up`` as a subprocess on free ports.

Three service processes, real HTTP between them, SQLite files or PostgreSQL databases made for
the run. Every line the services log goes to one file that tests can search.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import POSTGRES_ADMIN_URL, SERVICES, provisioned_databases

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 240
CLASSIFIER_CACHE = Path(tempfile.gettempdir()) / f"taskroute-test-classifier-{os.getuid()}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    gateway_url: str
    urls: dict[str, str]
    operator_key: str
    data_dir: Path
    log_path: Path
    database_urls: dict[str, str]
    process: subprocess.Popen[bytes]

    def operator(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway_url,
            headers={"Authorization": f"Bearer {self.operator_key}"},
            timeout=20,
        )

    def client(self, api_key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=20,
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pid(self, service: str) -> int:
        return int((self.data_dir / "run" / f"{service}.pid").read_text())


def clinical_team(name: str, *, capacity: int = 100_000) -> dict[str, Any]:
    """A KPO clinical team in India at work around the clock: where the benchmarks' and the
    fault tests' clinical jobs go."""
    return {
        "name": name,
        "country": "IN",
        "timezone": "Asia/Kolkata",
        "working_hours": {"start": "00:00", "end": "23:59", "days": list(range(7))},
        "tier": "KPO",
        "skills": ["clinical"],
        "certifications": ["HIPAA"],
        "languages": ["en"],
        "capacity": capacity,
        "hourly_rate": 30,
        "quality": 0.9,
    }


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"taskroute up exited early:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"platform not ready in time:\n{log_path.read_text()[-4000:]}")


@contextmanager
def launch_platform(
    backend: str,
    data_dir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    admin_url: str = POSTGRES_ADMIN_URL,
) -> Iterator[Platform]:
    """``taskroute up`` on free ports in ``data_dir``, stopped (SIGTERM) on leaving."""
    log_path = data_dir / "platform.log"
    ports = {service: free_port() for service in SERVICES}
    operator_key = "tr_operator_e2e_" + secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKROUTE_")}
    env.update(
        {
            "TASKROUTE_DATA_DIR": str(data_dir),
            "TASKROUTE_BOOTSTRAP_OPERATOR_KEY": operator_key,
            "TASKROUTE_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(REPO_ROOT),
            # Every platform of the run shares one trained classifier instead of fitting its own.
            "TASKROUTE_ROUTER_CLASSIFIER_CACHE_DIR": str(CLASSIFIER_CACHE),
            **(extra_env or {}),
        }
    )
    for service, port in ports.items():
        env[f"TASKROUTE_{service.upper()}_PORT"] = str(port)
    with provisioned_databases(
        backend, data_dir, migrated=False, admin_url=admin_url
    ) as database_urls:
        if backend != "sqlite":
            for service, url in database_urls.items():
                env[f"TASKROUTE_{service.upper()}_DATABASE_URL"] = url
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "up"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        urls = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
        try:
            wait_ready(urls["gateway"], process, log_path)
            yield Platform(
                gateway_url=urls["gateway"],
                urls=urls,
                operator_key=operator_key,
                data_dir=data_dir,
                log_path=log_path,
                database_urls=database_urls,
                process=process,
            )
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="module")
def platform(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with launch_platform(backend, tmp_path_factory.mktemp("platform")) as running_platform:
        yield running_platform
