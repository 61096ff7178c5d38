"""Browser tests of the console: Debian's Chromium, driven by Playwright, against a real platform.

The platform is the e2e one (``taskroute up`` on free ports, see tests/e2e/conftest.py). The
browser is the system's ``/usr/bin/chromium`` (never a downloaded build): in CI (``CI`` set) a
missing browser fails the run, elsewhere it skips these tests with the install line to use.
Screenshots of the main pages go to ``var/artifacts/console/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.e2e.conftest import REPO_ROOT, Platform
from tests.e2e.conftest import platform as platform  # noqa: F401 - the fixture, re-exported

CHROMIUM = os.environ.get("TASKROUTE_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "var" / "artifacts" / "console"
# Pages answer in well under a second locally; 20 s covers a loaded CI machine.
TIMEOUT_MS = 20_000


@pytest.fixture(scope="session")
def backend() -> str:
    """SQLite only: the console adds no database logic of its own but the session table, whose
    queries run on both backends in tests/gateway/test_console_sessions.py. A second browser run
    against PostgreSQL would double the time and test nothing new."""
    return "sqlite"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if path is None:
        message = (
            f"Chromium not found at {CHROMIUM}; install it with "
            "`apt-get install -y chromium` (the console's browser tests need it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    args = ["--disable-dev-shm-usage"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run its sandbox as root (CI runs so)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=args
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class Console:
    """A browser context (its own cookies) on the platform's console."""

    def __init__(self, browser: Browser, platform: Platform, artifacts: Path) -> None:
        self.platform = platform
        self.artifacts = artifacts
        self.context: BrowserContext = browser.new_context(
            base_url=platform.gateway_url, viewport={"width": 1280, "height": 900}
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.console_messages: list[str] = []
        self.page.on("console", lambda message: self.console_messages.append(message.text))

    def sign_in(self, api_key: str) -> Page:
        self.page.goto("/console/sign-in")
        self.page.get_by_label("API key").fill(api_key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url("**/console/**")
        return self.page

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=str(self.artifacts / f"{name}.png"), full_page=True)

    def post_json(self, path: str) -> dict[str, object]:
        """A script call from the page, with the page's CSRF token (as console.js sends it)."""
        result: dict[str, object] = self.page.evaluate(
            """async (path) => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const r = await fetch(path, {method: "POST", headers: {
                    "Accept": "application/json", "Content-Type": "application/json",
                    "X-CSRF-Token": csrf}, body: "{}"});
                let body = null; try { body = await r.json(); } catch (e) {}
                return {status: r.status, body: body};
            }""",
            path,
        )
        return result

    def post_form(self, path: str) -> dict[str, object]:
        """A form POST from the page, with the page's CSRF token."""
        result: dict[str, object] = self.page.evaluate(
            """async (path) => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const r = await fetch(path, {method: "POST", headers: {
                    "Content-Type": "application/x-www-form-urlencoded"},
                    body: new URLSearchParams({csrf_token: csrf})});
                return {status: r.status};
            }""",
            path,
        )
        return result

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console_factory(
    browser: Browser, platform: Platform, artifacts: Path
) -> Iterator[Callable[[], Console]]:
    opened: list[Console] = []

    def open_console() -> Console:
        console = Console(browser, platform, artifacts)
        opened.append(console)
        return console

    yield open_console
    for console in opened:
        console.close()
