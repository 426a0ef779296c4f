"""Bad input at the connect forms of both frameworks: clean refusals, and no open redirect.

A redirect is judged the way a browser reads its ``Location``: leading and trailing control
characters and spaces trimmed, tabs and newlines dropped, backslashes read as slashes, then
resolved against the page. It must land on the portal itself.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MEGABYTE = 1024 * 1024

OFF_SITE = [
    "//evil.example",
    "//evil.example/path",
    "https://evil.example",
    "http://evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\t/evil.example",
    " //evil.example",
    "\x00//evil.example",
    "https:evil.example",
    "http:evil.example",
    "http:///evil.example",
    "///evil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "//evil.example@localhost/",
    "https://localhost@evil.example/",
    "//evil%2Eexample",
    "/" + "a" * MEGABYTE,
]


def lands_on_site(location: str, page_url: str) -> bool:
    """Whether a browser following ``location`` from ``page_url`` stays on the portal."""
    cleaned = location.strip("".join(chr(c) for c in range(0x21)))
    cleaned = re.sub(r"[\t\n\r]", "", cleaned).replace("\\", "/")
    target = urlsplit(urljoin(page_url, cleaned))
    page = urlsplit(page_url)
    return (target.scheme, target.netloc) == (page.scheme, page.netloc)


def assert_on_site_or_refused(page, site) -> None:
    """A redirect that stays on the portal, or the form shown again; never a 500."""
    if page.status == 302:
        assert lands_on_site(page.location, site.connect_url), page.location
    else:
        assert page.status in (200, 400, 413) and page.location is None, page.status


def start_tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every start tag of an HTML page with its attributes, as a browser would parse them."""
    tags: list[tuple[str, dict[str, str | None]]] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append((tag, dict(attrs)))

    Parser().feed(page)
    return tags


def logins_tried(emulator) -> int:
    stats = emulator.stats
    return stats.password_logins + stats.failed_logins


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("", "secret"),
        ("alice", ""),
        (" \t ", "secret"),
        ("a" * MEGABYTE, "secret"),
        ("alice", "p" * MEGABYTE),
        ("ali\x00ce", "secret"),
        ("alice", "sec\x00ret"),
        ("alice\r\nX-Injected: 1", "secret"),
        ("alice", "secret\x1b[2J"),
        ("ali\u202ece", "secret"),
        ("ali:ce", "secret"),
    ],
    ids=[
        "empty-username",
        "empty-password",
        "blank-username",
        "1MB-username",
        "1MB-password",
        "nul-username",
        "nul-password",
        "crlf-username",
        "escape-password",
        "bidi-username",
        "colon-username",
    ],
)
def test_bad_credentials_are_refused_without_asking_watcher(
    site, forms_emulator, username: str, password: str
) -> None:
    page = site.connect(username, password)
    # A clean refusal: the form again (Django answers it with 200, Flask with 400), or 413
    # for a body over the framework's limit. Never a redirect, never a 500.
    assert page.status in (200, 400, 413)
    assert page.location is None
    assert logins_tried(forms_emulator) == 0
    assert not site.connected()
    if len(password) > 8:
        assert password not in page.text


@pytest.mark.parametrize("next_url", OFF_SITE)
def test_a_next_pointing_off_site_is_ignored_after_connecting(site, next_url: str) -> None:
    page = site.connect(next=next_url)
    assert_on_site_or_refused(page, site)


@pytest.mark.parametrize("next_url", OFF_SITE[:12])
def test_a_next_pointing_off_site_is_ignored_after_disconnecting(site, next_url: str) -> None:
    site.connect()
    assert_on_site_or_refused(site.disconnect(next=next_url), site)


@pytest.mark.parametrize(
    ("username", "mode", "secret"),
    [
        ("", "api_key", "KEY"),
        ("carol", "api_key", ""),
        ("carol", "api_key", "k" * MEGABYTE),
        ("c" * MEGABYTE, "api_key", "KEY"),
        ("carol", "api_key", "key\r\nX-Injected: 1"),
        ("carol\x00", "api_key", "KEY"),
        ("carol", "api_key", "kéy"),
        ("carol", "password", ""),
        ("carol", "password", "p" * MEGABYTE),
        ("carol", "password", "pass\x00word"),
        ("carol", "no-such-mode", "KEY"),
    ],
    ids=[
        "empty-username",
        "empty-key",
        "1MB-key",
        "1MB-username",
        "crlf-key",
        "nul-username",
        "non-ascii-key",
        "empty-password",
        "1MB-password",
        "nul-password",
        "unknown-mode",
    ],
)
def test_bad_api_v2_credentials_are_refused_without_asking_watcher(
    site, forms_emulator, username: str, mode: str, secret: str
) -> None:
    page = site.connect_v2(username, mode, secret)
    assert page.status in (200, 400, 413)
    assert page.location is None
    stats = forms_emulator.stats
    assert (stats.v2_logins, stats.v2_failed_logins, stats.v2_calls) == (0, 0, 0)
    assert not site.manager().v2_is_connected(site.user_key)
    if len(secret) > 8:
        assert secret not in page.text


@pytest.mark.parametrize("next_url", OFF_SITE[:12])
def test_a_next_pointing_off_site_is_ignored_after_connecting_api_v2(
    site, forms_emulator, next_url: str
) -> None:
    key = forms_emulator.user_api_key("alice")
    assert_on_site_or_refused(site.connect_v2("alice", "api_key", key, next=next_url), site)


def test_a_next_on_the_site_is_followed(site) -> None:
    page = site.connect(next="/cameras?page=2")
    assert page.location.endswith("/cameras?page=2")


url_pieces = st.sampled_from(
    [
        "/",
        "//",
        "\\",
        "/\\",
        "evil.example",
        "localhost",
        "testserver",
        "http:",
        "https:",
        "javascript:",
        "data:",
        "@",
        ":",
        ".",
        "..",
        "?",
        "#",
        "%2F",
        "%5C",
        "%09",
        "\t",
        "\n",
        "\r",
        " ",
        "\x00",
        "\x0b",
        "\u3002",
        "\uff0f",
        "\u2044",
        "\u200b",
        "\u202e",
        "\ufeff",
        "<script>",
        '"',
        "'",
        "&amp;",
    ]
)
next_values = st.one_of(
    st.lists(st.one_of(url_pieces, st.text(max_size=4)), max_size=8).map("".join),
    st.text(max_size=30),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(next_url=next_values)
def test_no_next_value_redirects_off_site_or_breaks_the_page(site, next_url: str) -> None:
    assert_on_site_or_refused(site.connect(next=next_url), site)

    form = site.connect_page(next_url)
    assert form.status == 200
    tags = start_tags(form.text)
    [hidden] = [attrs for tag, attrs in tags if tag == "input" and attrs.get("name") == "next"]
    # Put back into the page only as an attribute value: no attribute or element of its own.
    assert set(hidden) <= {"type", "name", "value", "id"}, hidden
    assert "script" not in {tag for tag, _attrs in tags}
    kept = hidden.get("value") or ""
    assert kept == "" or lands_on_site(kept, site.connect_url), (next_url, kept)


PASSWORDS = {
    "cyrillic": "пароль",
    "cjk": "密码パスワード비밀번호",
    "emoji": "🔑secret🐈",
    "emoji-sequence": "👩\u200d💻-пароль",
    "latin-1-accents": "pässwörd",
    "mixed-scripts": "Ωmega-пароль-密码-ñ",
}


@pytest.mark.parametrize("password", list(PASSWORDS.values()), ids=list(PASSWORDS))
def test_any_password_connects_through_the_api_v2_form(site, forms_emulator, password: str) -> None:
    forms_emulator.add_user("ivan", password)
    page = site.connect_v2("ivan", "password", password)
    assert (page.status, page.location is not None) == (302, True), page.text[:500]
    assert site.manager().v2_tokens(site.user_key).username == "ivan"
    assert password not in page.text


@pytest.mark.parametrize("password", list(PASSWORDS.values()), ids=list(PASSWORDS))
def test_any_password_connects_through_the_form(site, forms_emulator, password: str) -> None:
    forms_emulator.add_user("ivan", password)
    page = site.connect("ivan", password)
    assert (page.status, page.location is not None) == (302, True), page.text[:500]
    assert site.connected()
    assert site.manager().tokens(site.user_key).username == "ivan"
    assert forms_emulator.stats.password_logins == 1
    assert password not in page.text


@pytest.mark.parametrize("password", list(PASSWORDS.values()), ids=list(PASSWORDS))
def test_a_wrong_password_of_any_script_is_refused_cleanly(
    site, forms_emulator, password: str
) -> None:
    forms_emulator.add_user("ivan", password + "-right")
    page = site.connect("ivan", password)
    assert page.status in (200, 400), page.text[:500]
    assert page.location is None
    assert "did not accept" in page.text
    assert password not in page.text
    assert not site.connected()
    assert forms_emulator.stats.failed_logins == 1
