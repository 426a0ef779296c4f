"""No secret leaks: every flow, all loggers at DEBUG, every page, repr and error message.

One long test drives the core (API v3 and v2), the Django app and the Flask extension through
their successes and failures, collecting everything a person or a log could see: the DEBUG
log of every logger, response bodies, headers and redirect targets, management command and
CLI output, reprs, exception messages and tracebacks, Django's technical 500 page and
Werkzeug's debugger page, and the URLs Watcher was called with. Then none of the secrets the
emulator knows or issued (passwords, access and refresh tokens, session ids, API keys) may
appear in any of it.
"""

from __future__ import annotations

import io
import logging
import re
import traceback
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client
from django.urls import path
from werkzeug.debug import DebuggedApplication

from django_watcher_auth.conf import get_manager
from flask_watcher_auth import get_state
from watcher_auth import (
    InvalidCredentials,
    ReauthenticationRequired,
    TokenManager,
    WatcherAPIError,
    WatcherAuthError,
)
from watcher_auth.stores.sqlalchemy import SQLAlchemyStore
from watcher_auth.testing import FakeClock, WatcherEmulator

LIFETIME = 300.0
# Distinctive passwords, so a match is a leak and never an ordinary word.
PASSWORDS = {"alice": "pw-alice-7Qx2Vd", "bob": "pw-bob-Lm4Rt8", "carol": "pw-carol-Zk9Wb3"}
WRONG = "pw-wrong-Hy6Nc1"
WRONG_API_KEY = "wrong-api-key-Jd5Pq0"
LOGGERS = [
    "",
    "watcher_auth",
    "django_watcher_auth",
    "flask_watcher_auth",
    "django",
    "django.request",
    "django.db.backends",
    "werkzeug",
    "flask.app",
    "urllib3",
    "sqlalchemy.engine",
]


class Haystack:
    """Everything collected, each piece labelled with where it came from."""

    def __init__(self) -> None:
        self.pieces: list[tuple[str, str]] = []

    def add(self, where: str, *items: object) -> None:
        for item in items:
            self.pieces.append((where, item if isinstance(item, str) else repr(item)))

    def response(self, where: str, response: Any) -> Any:
        """A Django, Flask or requests response: status, headers, body."""
        if hasattr(response, "get_data"):  # Flask / Werkzeug
            body = response.get_data(as_text=True)
            headers = dict(response.headers)
        elif hasattr(response, "items"):  # Django
            body = response.content.decode(errors="replace")
            headers = dict(response.items())
        else:  # requests
            body = response.text
            headers = dict(response.headers)
        self.add(where, str(response.status_code), body, headers)
        return response

    def error(self, where: str, call: Callable[[], object], expected: type[BaseException]) -> None:
        """Run ``call``, which must raise ``expected``; keep its message, repr and traceback."""
        with pytest.raises(expected) as info:
            call()
        exc = info.value
        self.add(where, str(exc), repr(exc), "".join(traceback.format_exception(exc)))


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Every logger at DEBUG, into one buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    saved = {
        name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in LOGGERS
    }
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
        logging.getLogger(name).propagate = True
    root = logging.getLogger()
    root.addHandler(handler)
    yield buffer
    root.removeHandler(handler)
    for name, (level, propagate) in saved.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).propagate = propagate


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True, seed_users=False
    )
    for name, password in PASSWORDS.items():
        emulator.add_user(name, password, streams=2)
    return emulator


# --- the core, API v3 ----------------------------------------------------------------------


def core_v3_flows(
    hay: Haystack, emulator: WatcherEmulator, clock: FakeClock, store: SQLAlchemyStore
) -> None:
    manager = TokenManager(emulator.url, store=store, clock=clock, timeout=0.5)
    events: list[object] = []
    manager.add_listener(events.append)
    hay.error(
        "v3 wrong password",
        lambda: manager.login("k1", username="alice", password=WRONG),
        InvalidCredentials,
    )
    pair = manager.login("k1", username="alice", password=PASSWORDS["alice"])
    session = manager.session("k1")
    hay.response("v3 profile", session.get("profile"))
    hay.add("v3 paginate", list(session.paginate("streams", limit=1)))
    hay.add("v3 json", session.json("profile"))
    hay.error("v3 404", lambda: session.json("streams/no-such-stream"), WatcherAPIError)
    clock.advance(LIFETIME)
    hay.response("v3 after refresh", session.get("profile"))
    emulator.revoke_access_tokens("alice")
    hay.response("v3 401 retried", session.get("profile"))
    for mode in ("500", "502_html", "503", "non_json", "bad_jwt", "drop", "reset_mid_body"):
        clock.advance(LIFETIME)
        emulator.fail_next("refresh", mode=mode)
        hay.error(f"v3 refresh {mode}", lambda: session.get("profile"), WatcherAuthError)
    for mode in ("500", "502_html", "drop", "reset_mid_body"):
        emulator.fail_next("call", mode=mode)
        try:
            hay.response(f"v3 call {mode}", session.get("profile"))
        except WatcherAuthError as exc:
            hay.add(f"v3 call {mode}", str(exc), repr(exc), traceback.format_exception(exc))
    for mode in ("500", "non_json", "bad_jwt", "drop"):
        emulator.fail_next("login", mode=mode)
        hay.error(
            f"v3 login {mode}",
            lambda: manager.login("k1b", username="bob", password=PASSWORDS["bob"]),
            WatcherAuthError,
        )
    # The lost refresh answer under rotation.
    clock.advance(LIFETIME)
    emulator.fail_next("refresh", mode="process_then_drop")
    hay.error("v3 lost answer", lambda: session.get("profile"), WatcherAuthError)
    hay.error("v3 dead refresh token", lambda: session.get("profile"), ReauthenticationRequired)
    manager.login("k1", username="alice", password=PASSWORDS["alice"])
    emulator.revoke("alice")
    clock.advance(LIFETIME)
    hay.error("v3 revoked", lambda: session.get("profile"), ReauthenticationRequired)
    hay.error("v3 not connected", lambda: manager.access_token("nobody"), WatcherAuthError)

    service = TokenManager(
        emulator.url, clock=clock, credentials=lambda key: ("carol", PASSWORDS["carol"])
    )
    hay.response("v3 provider", service.session("svc").get("profile"))
    manager.login("k1", username="alice", password=PASSWORDS["alice"])
    hay.add("v3 reprs", manager, session, manager.auth("k1"), store, pair, manager.tokens("k1"))
    hay.add("v3 more reprs", service, service.tokens("svc"), events, [str(e) for e in events])
    manager.logout("k1")


# --- the core, API v2 ----------------------------------------------------------------------


def core_v2_flows(hay: Haystack, emulator: WatcherEmulator, clock: FakeClock) -> None:
    manager = TokenManager(emulator.url, clock=clock, timeout=0.5)
    hay.error(
        "v2 wrong password",
        lambda: manager.v2_login("k2", username="bob", password=WRONG),
        InvalidCredentials,
    )
    record = manager.v2_login("k2", username="bob", password=PASSWORDS["bob"])
    hay.add("v2 whoami", manager.v2_whoami("k2"))
    session = manager.v2_session("k2")
    hay.response("v2 cameras", session.get("cameras"))
    hay.add("v2 paginate", list(session.paginate("cameras", limit=1)))
    hay.error(
        "v2 wrong key",
        lambda: manager.v2_connect_user_key("k3", username="carol", api_key=WRONG_API_KEY),
        InvalidCredentials,
    )
    key_record = manager.v2_connect_user_key(
        "k3", username="carol", api_key=emulator.user_api_key("carol")
    )
    user_key_session = manager.v2_session("k3")
    hay.response("v2 user key", user_key_session.get("cameras"))
    system = manager.v2_system_session(emulator.system_api_key or "")
    hay.response("v2 system key", system.get("cameras"))
    hay.response(
        "v2 system key off-origin",
        system.get(emulator.url.replace("127.0.0.1", "localhost") + "/x"),
    )
    hay.add("v2 reprs", manager, session, system, user_key_session, record, key_record)
    hay.add("v2 auth reprs", manager.v2_auth("k2"), manager.v2_auth("k3"), manager.v2_tokens("k3"))
    emulator.fail_next("v2_call", mode="502_html")
    hay.response("v2 502", session.get("cameras"))
    emulator.revoke("bob")  # the v2 session dies
    hay.error("v2 dead session", lambda: session.get("cameras"), ReauthenticationRequired)
    emulator.rotate_api_key("carol")  # the stored user key stops working
    hay.error("v2 replaced key", lambda: user_key_session.get("cameras"), ReauthenticationRequired)


# --- Django --------------------------------------------------------------------------------


def boom(request: HttpRequest) -> HttpResponse:
    request.watcher.json("profile")  # type: ignore[attr-defined]
    raise RuntimeError("a bug in a portal view that used Watcher")


def v2_cameras(request: HttpRequest) -> HttpResponse:
    cameras = request.watcher_v2.json("cameras")  # type: ignore[attr-defined]
    return JsonResponse({"cameras": [camera["name"] for camera in cameras]})


def watcher_error(request: HttpRequest) -> HttpResponse:
    request.watcher.json("streams/no-such-stream")  # type: ignore[attr-defined]
    return HttpResponse("unreachable")


def django_flows(
    hay: Haystack,
    emulator: WatcherEmulator,
    clock: FakeClock,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.contrib.auth import get_user_model

    from django_watcher_auth.models import WatcherAccount
    from tests.django.testapp.urls import urlpatterns

    urlconf = ModuleType("security_portal_urls")
    urlconf.urlpatterns = [  # type: ignore[attr-defined]
        *urlpatterns,
        path("boom/", boom),
        path("watcher-error/", watcher_error),
        path("v2-cameras/", v2_cameras),
    ]
    settings.ROOT_URLCONF = urlconf
    settings.WATCHER_AUTH = {
        "URL": emulator.url,
        "CLOCK": clock,
        "STORE": "db",
        "TIMEOUT": 0.5,
        "SYSTEM_API_KEY": emulator.system_api_key,
    }
    users = get_user_model().objects
    portal_user = users.create_user("portal-dora", password="portal-pw")
    client = Client(raise_request_exception=False)
    client.force_login(portal_user)

    def page(where: str, url: str, method: str = "get", **kwargs: Any) -> Any:
        return hay.response(f"django {where}", getattr(client, method)(url, **kwargs))

    page("connect form", "/watcher/connect/?next=/cameras/")
    page(
        "wrong password", "/watcher/connect/", "post", data={"username": "alice", "password": WRONG}
    )
    page(
        "connect",
        "/watcher/connect/",
        "post",
        data={"username": "alice", "password": PASSWORDS["alice"], "next": "/cameras/"},
    )
    page("cameras", "/cameras/")
    page("profile", "/profile/")
    page("status", "/watcher/")
    page("status json", "/watcher/", headers={"Accept": "application/json"})
    clock.advance(LIFETIME)
    page("cameras after refresh", "/cameras/")
    emulator.fail_next("refresh", mode="503")
    clock.advance(LIFETIME)
    page("refresh unavailable", "/cameras/")
    page("v2 connect form", "/watcher/connect/v2/")
    page(
        "v2 wrong key",
        "/watcher/connect/v2/",
        "post",
        data={"username": "carol", "mode": "api_key", "api_key": WRONG_API_KEY},
    )
    page(
        "v2 key",
        "/watcher/connect/v2/",
        "post",
        data={"username": "carol", "mode": "api_key", "api_key": emulator.user_api_key("carol")},
    )
    page(
        "v2 wrong password",
        "/watcher/connect/v2/",
        "post",
        data={"username": "bob", "mode": "password", "password": WRONG},
    )
    page(
        "v2 password",
        "/watcher/connect/v2/",
        "post",
        data={"username": "bob", "mode": "password", "password": PASSWORDS["bob"]},
    )
    page("status after v2", "/watcher/")

    admin = users.create_superuser("portal-admin", password="portal-pw")
    admin_client = Client(raise_request_exception=False)
    admin_client.force_login(admin)
    hay.response(
        "django admin list", admin_client.get("/admin/django_watcher_auth/watcheraccount/")
    )
    for account in WatcherAccount.objects.all():
        hay.response(
            "django admin change",
            admin_client.get(f"/admin/django_watcher_auth/watcheraccount/{account.pk}/change/"),
        )
        hay.add("django account repr", account, str(account))

    out = io.StringIO()
    call_command("watcher_status", stdout=out, stderr=out)

    def check(password: str) -> None:
        monkeypatch.setenv("SECURITY_CHECK_PASSWORD", password)
        options = ["--username", "alice", "--password-env", "SECURITY_CHECK_PASSWORD"]
        call_command("watcher_check", *options, stdout=out, stderr=out)

    check(PASSWORDS["alice"])
    hay.error("django watcher_check wrong password", lambda: check(WRONG), CommandError)
    hay.add("django commands", out.getvalue())

    settings.DEBUG = True
    page("technical 500", "/boom/")
    page("technical 500 from the library", "/watcher-error/")
    clock.advance(LIFETIME)
    emulator.fail_next("refresh", mode="non_json")
    page("technical 500 from a refresh", "/profile/")
    # A portal user without an account of their own is served by the service account,
    # whose login fails in the middle of the view.
    settings.WATCHER_AUTH = {
        **settings.WATCHER_AUTH,
        "SERVICE_ACCOUNT": {"USERNAME": "carol", "PASSWORD": PASSWORDS["carol"]},
    }
    served = Client(raise_request_exception=False)
    served.force_login(users.create_user("portal-eve", password="portal-pw"))
    emulator.fail_next("login", mode="non_json")
    hay.response("django technical 500 from a service login", served.get("/profile/"))
    hay.response("django service account", served.get("/profile/"))
    emulator.fail_next("v2_login", mode="non_json")
    hay.response("django technical 500 from a v2 service login", served.get("/v2-cameras/"))
    hay.response("django v2 service account", served.get("/v2-cameras/"))
    settings.DEBUG = False

    manager = get_manager()
    hay.add("django reprs", manager, manager.store, manager.tokens(str(portal_user.pk)))
    out = io.StringIO()
    call_command("watcher_disconnect", "portal-dora", stdout=out, stderr=out)
    hay.add("django disconnect command", out.getvalue())
    page("disconnect", "/watcher/disconnect/", "post")


# --- Flask ---------------------------------------------------------------------------------


def flask_flows(
    hay: Haystack,
    emulator: WatcherEmulator,
    clock: FakeClock,
    make_portal: Callable[..., Any],
    database: str,
) -> None:
    app = make_portal(
        WATCHER_URL=emulator.url,
        WATCHER_CLOCK=clock,
        WATCHER_TIMEOUT=0.5,
        WATCHER_STORE="sqlalchemy",
        WATCHER_SQLALCHEMY_URL=database,
    )
    client = app.test_client()
    client.post("/sign-in/1")

    def post(where: str, url: str, page_url: str | None = None, **form: str) -> None:
        page = client.get(page_url or url).get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, page
        hay.response(f"flask {where}", client.post(url, data={"csrf_token": token[1], **form}))

    def get(where: str, url: str, **headers: str) -> None:
        hay.response(f"flask {where}", client.get(url, headers=headers))

    get("connect form", "/watcher/connect?next=/cameras")
    post("wrong password", "/watcher/connect", username="alice", password=WRONG)
    post("connect", "/watcher/connect", username="alice", password=PASSWORDS["alice"])
    get("cameras", "/cameras")
    get("status", "/watcher/status")
    get("status json", "/watcher/status", Accept="application/json")
    clock.advance(LIFETIME)
    get("cameras after refresh", "/cameras")
    emulator.fail_next("refresh", mode="503")
    clock.advance(LIFETIME)
    get("refresh unavailable", "/cameras")
    get("v2 connect form", "/watcher/connect/v2")
    carol_key = emulator.user_api_key("carol")
    post(
        "v2 wrong key",
        "/watcher/connect/v2",
        username="carol",
        mode="api_key",
        api_key=WRONG_API_KEY,
    )
    post("v2 key", "/watcher/connect/v2", username="carol", mode="api_key", api_key=carol_key)
    post(
        "v2 wrong password", "/watcher/connect/v2", username="bob", mode="password", password=WRONG
    )
    post(
        "v2 password",
        "/watcher/connect/v2",
        username="bob",
        mode="password",
        password=PASSWORDS["bob"],
    )

    runner = app.test_cli_runner()
    for args, typed in [
        (["watcher", "status"], None),
        (["watcher", "check", "--username", "alice"], PASSWORDS["alice"] + "\n"),
        (["watcher", "check", "--username", "alice"], WRONG + "\n"),
    ]:
        result = runner.invoke(args=args, input=typed)
        hay.add(f"flask cli {' '.join(args)}", result.output, repr(result.exception))

    state = get_state(app)
    hay.add("flask reprs", state, state.settings, state.manager, state.store)
    app.debug = True
    app.wsgi_app = DebuggedApplication(app.wsgi_app, evalex=False)  # type: ignore[method-assign]
    get("debugger page", "/boom")
    app.debug = False
    result = runner.invoke(args=["watcher", "disconnect", "1"])
    hay.add("flask cli disconnect", result.output, repr(result.exception))
    post("reconnect", "/watcher/connect", username="alice", password=PASSWORDS["alice"])
    post("disconnect", "/watcher/disconnect", page_url="/watcher/connect")
    state.store.close()


@pytest.mark.django_db
def test_no_secret_appears_anywhere_in_any_flow(
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    settings: Any,
    tmp_path: Any,
    make_flask_portal: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    debug_log: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hay = Haystack()
    store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'core.sqlite3'}", encryption_keys=["k"])
    core_v3_flows(hay, emulator, fake_clock, store)
    core_v2_flows(hay, emulator, fake_clock)
    django_flows(hay, emulator, fake_clock, settings, monkeypatch)
    flask_flows(hay, emulator, fake_clock, make_flask_portal, f"sqlite:///{tmp_path / 'f.db'}")
    store.close()

    captured = capsys.readouterr()
    hay.add("stderr and stdout", captured.out, captured.err)
    hay.add("debug log", debug_log.getvalue())
    hay.add("urls watcher was called with", [f"{c.path}?{c.query}" for c in emulator.call_log])

    secrets = emulator.issued_secrets() | {WRONG, WRONG_API_KEY}
    # A JWT's signature alone is secret too.
    secrets |= {s.rsplit(".", 1)[1] for s in secrets if s.count(".") == 2 and len(s) > 100}
    leaks = [
        (where, secret[:12] + "...")
        for secret in secrets
        for where, text in hay.pieces
        if secret in text
    ]
    assert leaks == []
    assert len(secrets) > 40 and len(hay.pieces) > 150
    assert "DEBUG" in debug_log.getvalue()
