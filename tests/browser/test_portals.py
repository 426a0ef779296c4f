"""A person's way through each example portal, in Chromium.

Sign in, connect Watcher with a wrong then the right password, page through the cameras,
outlive the access token, and lose the Watcher session: the portal refreshes silently, and
when Watcher ends the session it asks to connect again and says why. Then API v2: connect
with a wrong then the right user API key and page through the cameras, and, as staff, page
through every camera with the system key. No password or key ever shows in a page or URL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

pytestmark = pytest.mark.browser

# The access tokens' lifetime: the test really waits it out once, so it is short.
ACCESS_LIFETIME = 3.0
PORTAL_USER = ("demo", "demo-portal-pw")
WATCHER_USER = ("alice", "alice-watcher-pw")
WATCHER_API_KEY = "alice-watcher-key"  # the API v2 user key run_demo.py prints for alice
FIRST_PAGE = ["Front door", "Lobby", "Parking lot", "Server room"]
EVERY_CAMERA = [
    FIRST_PAGE,
    ["Loading dock", "Garage", "Garden", "Back yard"],  # alice's last, then bob's, by name
]


@dataclass(frozen=True)
class PortalPaths:
    status: str
    token_table: str


PORTALS = {
    "django": PortalPaths(status="/watcher/", token_table="django_watcher_auth_watcheraccount"),
    "flask": PortalPaths(status="/watcher/status", token_table="watcher_auth_tokens"),
}


@pytest.mark.parametrize("kind", sorted(PORTALS))
def test_portal_journey(
    kind: str, page: Any, run_portal: Callable[..., Any], screenshots: Any
) -> None:
    from playwright.sync_api import expect

    paths = PORTALS[kind]
    portal = run_portal(kind, access_lifetime=ACCESS_LIFETIME)
    emulator = portal.emulator
    system_key = emulator.system_api_key
    assert system_key is not None
    secrets = [WATCHER_USER[1], WATCHER_API_KEY, system_key]
    screenshots.secrets.extend(secrets)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    # Signing in to the portal leads to the cameras, which need a Watcher account first.
    page.goto(portal.url + "/")
    expect(page.get_by_role("heading", name="Sign in to the portal")).to_be_visible()
    screenshots(page, "sign-in")
    page.locator("input[name=username]").fill(PORTAL_USER[0])
    page.locator("input[name=password]").fill(PORTAL_USER[1])
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Connect your Watcher account")).to_be_visible()
    expect(page.locator(".panel")).to_contain_text("Not connected")
    screenshots(page, "connect-page")

    # A wrong Watcher password: an error on the form, nothing stored.
    connect(page, WATCHER_USER[0], "not-the-password")
    expect(page.get_by_role("heading", name="Connect your Watcher account")).to_be_visible()
    expect(page.locator("main")).to_contain_text("did not accept")
    screenshots(page, "wrong-password")
    assert (emulator.stats.failed_logins, emulator.stats.password_logins) == (1, 0)
    assert status_json(page, portal.url + paths.status)["connected"] is False
    assert portal.stored_rows(paths.token_table) == 0

    # The right password: back to the cameras, first page of four.
    connect(page, *WATCHER_USER)
    expect(page.get_by_role("heading", name="My cameras")).to_be_visible()
    expect(page.locator(".camera-title")).to_have_text(FIRST_PAGE)
    expect(page.locator(".panel .watcher-user")).to_have_text(WATCHER_USER[0])
    watch = page.get_by_role("link", name="Watch", exact=True).first.get_attribute("href")
    assert watch.startswith("https://streamer.example.invalid/alice-cam-1/embed.html?token=")
    screenshots(page, "cameras")
    page.get_by_role("link", name="Next page").click()
    expect(page.locator(".camera-title")).to_have_text(["Loading dock"])
    expect(page.locator(".badge")).to_have_text(["Offline"])
    screenshots(page, "cameras-page-2")
    page.get_by_role("link", name="Previous page").click()
    expect(page.locator(".camera-title")).to_have_text(FIRST_PAGE)
    assert emulator.stats.password_logins == 1
    assert status_json(page, portal.url + paths.status)["connected"] is True

    # Past the access token's expiry a reload still shows the list: one refresh, no login.
    emulator.reset_stats()
    time.sleep(ACCESS_LIFETIME + 0.5)
    page.reload()
    expect(page.locator(".camera-title")).to_have_text(FIRST_PAGE)
    expect(page.locator(".panel .last-refresh")).not_to_have_text("not yet")
    screenshots(page, "after-expiry")
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (0, 1, 0)

    # Watcher ends alice's sessions: the next page asks to connect again, saying why.
    assert emulator.revoke(WATCHER_USER[0]) == 1
    page.reload()
    expect(page.get_by_role("heading", name="Connect your Watcher account")).to_be_visible()
    expect(page.locator("main")).to_contain_text("no longer accepts your saved sign-in")
    screenshots(page, "session-revoked")
    stats = emulator.stats
    assert (stats.password_logins, stats.rejected_refreshes) == (0, 1)
    assert status_json(page, portal.url + paths.status)["connected"] is False

    # Connecting again works, and the panel's button disconnects.
    connect(page, *WATCHER_USER)
    expect(page.locator(".camera-title")).to_have_text(FIRST_PAGE)
    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("main")).to_contain_text("No Watcher account is connected")
    expect(page.locator(".panel")).to_contain_text("Not connected")
    screenshots(page, "disconnected")
    assert emulator.stats.password_logins == 1
    assert status_json(page, portal.url + paths.status)["connected"] is False

    # API v2: the page asks for an API v2 account; a wrong key is refused, alice's key works.
    emulator.reset_stats()
    page.get_by_role("link", name="Cameras (API v2)").click()
    expect(page).to_have_url(re.compile(r"/watcher/connect/v2/?\?next="))
    connect_v2(page, WATCHER_USER[0], "not-the-key")
    expect(page.locator("main")).to_contain_text("did not accept this API key")
    screenshots(page, "wrong-api-key")
    connect_v2(page, WATCHER_USER[0], WATCHER_API_KEY)
    expect(page.get_by_role("heading", name="Cameras (API v2)")).to_be_visible()
    expect(page.locator(".camera-title")).to_have_text(FIRST_PAGE)
    expect(page.locator(".panel .watcher-v2-user")).to_have_text(WATCHER_USER[0])
    expect(page.locator(".panel .watcher-v2-scheme")).to_have_text("an API key")
    screenshots(page, "cameras-v2")
    page.get_by_role("link", name="Next page").click()
    expect(page.locator(".camera-title")).to_have_text(["Loading dock"])
    expect(page.locator(".badge")).to_have_text(["Offline"])
    screenshots(page, "cameras-v2-page-2")
    v2 = status_json(page, portal.url + paths.status)["v2"]
    assert (v2["connected"], v2["username"], v2["scheme"]) == (True, "alice", "user-key")
    stats = emulator.stats
    assert (stats.v2_logins, stats.password_logins, stats.v2_system_calls) == (0, 0, 0)
    assert stats.v2_forbidden == 1  # the wrong key

    # The demo user is staff: every Watcher user's cameras, through the system key.
    page.get_by_role("link", name="All cameras (system key)").click()
    expect(page.get_by_role("heading", name="All cameras (system key)")).to_be_visible()
    expect(page.locator(".camera-title")).to_have_text(EVERY_CAMERA[0])
    page.get_by_role("link", name="Next page").click()
    expect(page.locator(".camera-title")).to_have_text(EVERY_CAMERA[1])
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    screenshots(page, "all-cameras-page-2")
    assert emulator.stats.v2_system_calls == 2

    for url in requested:
        assert "token=" not in url or "/embed.html" in url, url
        assert not any(secret in url for secret in secrets), url
    # The launcher's banner prints the demo's API keys; no other line of its log shows one.
    for line in portal.log.read_text().splitlines():
        assert system_key not in line
        assert WATCHER_API_KEY not in line or line.startswith("  API v2 user keys: ")
    assert len(screenshots.taken) == 12


def connect(page: Any, username: str, password: str) -> None:
    """Fill in and send the connect form."""
    page.locator("main input[name=username]").fill(username)
    page.locator("main input[name=password]").fill(password)
    page.get_by_role("button", name="Connect", exact=True).click()


def connect_v2(page: Any, username: str, api_key: str) -> None:
    """Fill in and send the API v2 connect form with a user API key."""
    page.locator("main input[name=username]").fill(username)
    page.locator("main input[name=mode][value=api_key]").check()
    page.locator("main input[name=api_key]").fill(api_key)
    page.get_by_role("button", name="Connect", exact=True).click()


def status_json(page: Any, url: str) -> dict[str, Any]:
    """The status page as JSON, fetched with the browser's cookies."""
    response = page.request.get(url, headers={"Accept": "application/json"})
    assert response.ok, response.status
    data: dict[str, Any] = response.json()
    return data
