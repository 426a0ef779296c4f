"""Browser tests: Playwright drives Debian's Chromium through the example portals.

Each portal runs as ``make demo`` runs it (``example_projects/run_demo.py``, with the
emulator, SQLite and the portal's development server), with short-lived access tokens, and
the test steers the emulator through its control endpoints (:class:`RemoteEmulator`).

Chromium comes from Debian (``/usr/bin/chromium``); ``make test`` installs it with apt-get
when it is missing and runs as root (``scripts/ensure_chromium.sh``). Without it these
tests skip with the reason, except when ``CI`` is set: then they fail. A Chromium that is
installed but does not start fails them always.

Screenshots of every step go to ``test-artifacts/browser/<portal>/<nn>-<step>.png``.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from watcher_auth.testing import RemoteEmulator
from watcher_auth.testing.emulator import CONTROL_TOKEN_ENV
from watcher_auth.testing.services import service_missing

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
RUN_DEMO = REPO / "example_projects" / "run_demo.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT = 90.0

# What the pages and URLs must never contain: a JWT (the access token) or a UUID (the
# emulator's refresh tokens look like Watcher's documented ones).
SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    re.IGNORECASE,
)


@dataclass
class RunningPortal:
    """An example portal started by ``run_demo.py``, and the emulator behind it."""

    kind: str
    url: str
    emulator: RemoteEmulator
    database: Path
    log: Path

    def stored_rows(self, table: str) -> int:
        """Rows in a table of the portal's SQLite database (0 when the table does not exist)."""
        with sqlite3.connect(self.database) as db:
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            if exists is None:
                return 0
            return int(db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])


@dataclass
class Screenshots:
    """Saves numbered screenshots of a page, checking each page for leaked secrets first.

    ``secrets`` are exact values (passwords, API keys) no page or URL may show, on top of
    anything shaped like a token.
    """

    folder: Path
    taken: list[Path] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def __call__(self, page: Any, step: str) -> Path:
        assert_no_secrets(page.url, page.content(), self.secrets)
        path = self.folder / f"{len(self.taken) + 1:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


def assert_no_secrets(url: str, html: str, secrets: Sequence[str] = ()) -> None:
    """Fail when a URL or page shows one of ``secrets``, or something shaped like a token."""
    for where, text in (("URL", url), ("page", html)):
        match = SECRET_SHAPES.search(text)
        assert match is None, f"the {where} at {url} shows a token-like value {match.group()!r}"
        shown = [number for number, secret in enumerate(secrets) if secret in text]
        assert shown == [], f"the {where} at {url} shows secrets number {shown}"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium under Playwright, shared by the session's tests."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        service_missing(
            "Chromium",
            f"{CHROMIUM} is missing; `make test` installs it (apt-get install chromium "
            "chromium-driver) when run as root",
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("Chromium", "the playwright package is not installed (the test extra)")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
    except Exception as exc:
        # Chromium is installed, so a launch failure is a broken set-up, never a skip.
        playwright.stop()
        pytest.fail(f"Chromium at {CHROMIUM} did not start under Playwright: {exc}")
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and a page in it."""
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Screenshots:
    """Screenshots for this test, in ``test-artifacts/browser/<parameter>/``."""
    name = getattr(request.node, "callspec", None)
    folder = ARTIFACTS / (name.id if name is not None else request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return Screenshots(folder)


@pytest.fixture
def run_portal(tmp_path: Path) -> Iterator[Callable[..., RunningPortal]]:
    """``run_portal(kind, access_lifetime=...)``: start ``run_demo.py`` and wait for it."""
    started: list[subprocess.Popen[bytes]] = []

    def start(kind: str, *, access_lifetime: float) -> RunningPortal:
        data_dir = tmp_path / kind
        log = ARTIFACTS / kind / "server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        control_token = secrets.token_urlsafe(32)
        env = {k: v for k, v in os.environ.items() if k != "WATCHER_URL"}
        env[CONTROL_TOKEN_ENV] = control_token
        command = [
            sys.executable,
            str(RUN_DEMO),
            kind,
            "--port=0",
            "--emulator-port=0",
            f"--access-lifetime={access_lifetime}",
            f"--data-dir={data_dir}",
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        started.append(process)
        portal_url, emulator_url = _wait_for_banner(process, log)
        return RunningPortal(
            kind=kind,
            url=portal_url.rstrip("/"),
            emulator=RemoteEmulator(emulator_url, control_token=control_token),
            database=data_dir / "db.sqlite3",
            log=log,
        )

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_banner(process: subprocess.Popen[bytes], log: Path) -> tuple[str, str]:
    """The portal's and the emulator's URLs, once ``run_demo.py`` prints them."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        portal = re.search(r"is running at (http://\S+)", text)
        emulator = re.search(r"Watcher emulator: (http://\S+)", text)
        if portal and emulator:
            return portal.group(1), emulator.group(1)
        if process.poll() is not None:
            pytest.fail(f"run_demo.py exited with {process.returncode}:\n{text}")
        time.sleep(0.1)
    pytest.fail(f"run_demo.py did not print its banner in {START_TIMEOUT}s:\n{log.read_text()}")
