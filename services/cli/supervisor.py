"""``taskroute up``: three service processes, supervised.

Each service runs as its own process (``taskroute serve <name>``), as it would in a container,
so that the boundaries the tests cross are real. The supervisor starts them in dependency order,
waits until each answers ``/healthz``, restarts one that dies with exponential backoff (like
systemd's ``Restart=on-failure``), and on SIGINT or SIGTERM stops them in reverse order, waiting
for each to finish its requests before killing it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

# Backoff between restarts of a crashing service: 1 s doubling to 30 s, so a service that
# cannot start does not spin the CPU, and one that crashed once is back within a second.
RESTART_BACKOFF_START = 1.0
RESTART_BACKOFF_MAX = 30.0
# A service that stayed up this long is considered healthy again: its backoff resets.
HEALTHY_AFTER_SECONDS = 60.0
# uvicorn finishes in-flight requests on SIGTERM; past this we stop waiting and kill.
STOP_GRACE_SECONDS = 10.0
STARTUP_TIMEOUT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if the supervisor itself is killed (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ManagedService:
    name: str
    url: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = RESTART_BACKOFF_START
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    def __init__(
        self,
        services: list[ManagedService],
        *,
        env: dict[str, str],
        say: Callable[[str], None],
        run_dir: Path,
    ) -> None:
        self.services = services
        self.env = env
        self.say = say
        # <run_dir>/<service>.pid names each live process, for operators and fault tests.
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self._stopping = False

    def _spawn(self, service: ManagedService) -> None:
        command = [sys.executable, "-m", "services.cli.main", "serve", service.name, "--no-migrate"]
        service.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )
        service.started_at = time.monotonic()
        service.restart_at = None
        (self.run_dir / f"{service.name}.pid").write_text(f"{service.process.pid}\n")

    def install_signal_handlers(self) -> None:
        """Catch SIGINT/SIGTERM from the start, so a signal during start-up stops cleanly too."""
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    def start(self) -> bool:
        """Start every service in order; False if a stop was requested meanwhile."""
        for service in self.services:
            if self._stopping:
                return False
            self._spawn(service)
            self._wait_healthy(service)
        return not self._stopping

    def _wait_healthy(self, service: ManagedService) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self._stopping:
            if service.process is not None and service.process.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with code {service.process.returncode} during start-up"
                )
            try:
                if httpx.get(f"{service.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        if not self._stopping:
            raise RuntimeError(f"{service.name} did not answer {service.url}/healthz in time")

    def request_stop(self, signum: int, _frame: object) -> None:
        self._stopping = True
        self.say(f"received {signal.Signals(signum).name}, stopping")

    def run_forever(self) -> int:
        while not self._stopping:
            now = time.monotonic()
            for service in self.services:
                self._watch(service, now)
            time.sleep(0.2)
        return self.stop()

    def _watch(self, service: ManagedService, now: float) -> None:
        process = service.process
        if process is None:
            if service.restart_at is not None and now >= service.restart_at:
                service.restarts += 1
                self.say(f"restarting {service.name} (restart #{service.restarts})")
                self._spawn(service)
            return
        code = process.poll()
        if code is None:
            if now - service.started_at > HEALTHY_AFTER_SECONDS:
                service.backoff = RESTART_BACKOFF_START
            return
        self.say(f"{service.name} exited with code {code}; restarting in {service.backoff:.0f} s")
        service.process = None
        service.restart_at = now + service.backoff
        service.backoff = min(service.backoff * 2, RESTART_BACKOFF_MAX)

    def stop(self) -> int:
        """Stop in reverse start order; return 0 if every service stopped cleanly."""
        clean = True
        for service in reversed(self.services):
            process = service.process
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.say(f"{service.name} did not stop in time; killing it")
                process.kill()
                process.wait()
                clean = False
            (self.run_dir / f"{service.name}.pid").unlink(missing_ok=True)
        self.say("all services stopped")
        return 0 if clean else 1


def child_environment(base: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(overrides)
    # Children must find this checkout's packages even when run from elsewhere.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
