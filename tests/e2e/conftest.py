"""A real platform for end-to-end tests: ``taskroute up`` as a subprocess on free ports.

Three service processes, real HTTP between them, SQLite files or PostgreSQL databases made for
the run. Every line the services log goes to one file that tests can search.

A platform takes tens of seconds to start on two cores, so the run starts as few as it can
(``PlatformPool``, one per pytest-xdist worker): modules whose tests make their own tenants and
teams share one platform per backend (``platform``); a test that needs a platform as it starts
(the demo's) gets a fresh one (``fresh_platform``), which a test that may stop it (the
supervisor's) takes afterwards. Modules with settings of their own start their own platform.
tests/conftest.py keeps the modules of one pool together on one worker (``PLATFORM_GROUPS``).
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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
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


def wait_ready(urls: Iterable[str], process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until every service answers its own /readyz (the gateway's is 200 with its peers still
    starting: it would take jobs as pending)."""
    waiting = list(urls)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"taskroute up exited early:\n{log_path.read_text()[-4000:]}")
        try:
            while waiting and httpx.get(f"{waiting[0]}/readyz", timeout=1).status_code == 200:
                waiting.pop(0)
            if not waiting:
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
    admin_urls: Mapping[str, str] | None = None,
    repo_root: Path = REPO_ROOT,
) -> Iterator[Platform]:
    """``taskroute up`` on free ports in ``data_dir``, stopped (SIGTERM) on leaving; the code
    is ``repo_root``'s (another checkout, for benchmarks comparing two versions)."""
    log_path = data_dir / "platform.log"
    ports = {service: free_port() for service in SERVICES}
    operator_key = "tr_operator_e2e_" + secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKROUTE_")}
    env.update(
        {
            "TASKROUTE_DATA_DIR": str(data_dir),
            "TASKROUTE_BOOTSTRAP_OPERATOR_KEY": operator_key,
            "TASKROUTE_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(repo_root),
            # Every platform of the run shares one trained classifier instead of fitting its own.
            "TASKROUTE_ROUTER_CLASSIFIER_CACHE_DIR": str(CLASSIFIER_CACHE),
            **(extra_env or {}),
        }
    )
    for service, port in ports.items():
        env[f"TASKROUTE_{service.upper()}_PORT"] = str(port)
    with provisioned_databases(
        backend, data_dir, migrated=False, admin_url=admin_url, admin_urls=admin_urls
    ) as database_urls:
        if backend != "sqlite":
            for service, url in database_urls.items():
                env[f"TASKROUTE_{service.upper()}_DATABASE_URL"] = url
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "up"],
                cwd=repo_root,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        urls = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
        try:
            wait_ready(urls.values(), process, log_path)
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


class PlatformPool:
    """The platforms of one test session (one pytest-xdist worker), stopped when it ends.

    - ``shared(backend)``: one platform per backend with the default settings, for every module
      whose tests make their own tenants, teams and members and look only at those (a test must
      never count what other modules made, nor need the platform to itself).
    - ``fresh(backend)``: a platform no test has used yet; ``retire`` it when done with it.
    - ``spare(backend)``: a platform no other test will use again, which the caller may stop
      (a retired one if there is one, else a new one).

    A platform whose ``taskroute up`` exited (a test stopped it) is never handed out again.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._stack = ExitStack()
        self._platforms: list[Platform] = []
        self._shared: dict[str, Platform] = {}
        self._spares: dict[str, list[Platform]] = {}

    def __enter__(self) -> PlatformPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Stop them all at once, then wait for each: every platform takes seconds to stop.
        for platform in self._platforms:
            if platform.process.poll() is None:
                platform.process.send_signal(signal.SIGTERM)
        self._stack.close()

    def _launch(self, backend: str) -> Platform:
        data_dir = self._tmp_path_factory.mktemp("platform")
        platform = self._stack.enter_context(launch_platform(backend, data_dir))
        self._platforms.append(platform)
        return platform

    def shared(self, backend: str) -> Platform:
        current = self._shared.get(backend)
        if current is None or current.process.poll() is not None:
            current = self._shared[backend] = self._launch(backend)
        return current

    def fresh(self, backend: str) -> Platform:
        return self._launch(backend)

    def retire(self, backend: str, platform: Platform) -> None:
        self._spares.setdefault(backend, []).append(platform)

    def spare(self, backend: str) -> Platform:
        spares = self._spares.get(backend, [])
        while spares:
            platform = spares.pop()
            if platform.process.poll() is None:
                return platform
        return self._launch(backend)


@pytest.fixture(scope="module")
def platform(backend: str, platform_pool: PlatformPool) -> Platform:
    """The platform this backend's modules share (see ``PlatformPool.shared``)."""
    return platform_pool.shared(backend)


@pytest.fixture(scope="module")
def fresh_platform(backend: str, platform_pool: PlatformPool) -> Iterator[Platform]:
    """A platform no test used before this module (see ``PlatformPool.fresh``)."""
    platform = platform_pool.fresh(backend)
    yield platform
    platform_pool.retire(backend, platform)


@pytest.fixture(scope="module")
def spare_platform(backend: str, platform_pool: PlatformPool) -> Platform:
    """A platform this module may stop (see ``PlatformPool.spare``)."""
    return platform_pool.spare(backend)
