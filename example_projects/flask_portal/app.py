"""The Flask example portal: portal accounts with Flask-Login, each person's cameras from Watcher.

Run it with the Flask CLI from this folder::

    flask --app app prepare-demo     # create the tables and the demo portal user
    flask --app app run              # http://127.0.0.1:5000

The environment changes what differs between machines:

- ``WATCHER_URL``: the Watcher server (default ``http://127.0.0.1:8080``, where
  ``python -m watcher_auth.testing.emulator`` listens by default).
- ``PORTAL_DATABASE``: the SQLite file for portal users and Watcher tokens (default
  ``db.sqlite3`` beside this file).
- ``PORTAL_SECRET_KEY``: Flask's secret key. The Watcher tokens are encrypted with it, so a
  real deployment sets its own (or ``WATCHER_ENCRYPTION_KEYS``).
- ``WATCHER_SYSTEM_API_KEY``: Watcher's API v2 system key, read by flask_watcher_auth for
  ``current_watcher_system``. With it, staff see every camera on "All cameras (system key)";
  without it that page does not exist.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import click
from flask import Flask, abort, current_app, redirect, render_template, request, url_for
from flask.cli import with_appcontext
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import (
    Column,
    ColumnElement,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    create_engine,
    select,
)
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

from flask_watcher_auth import (
    WatcherAuth,
    current_watcher,
    current_watcher_system,
    current_watcher_v2,
    get_state,
    safe_next_url,
    watcher_required,
    watcher_v2_required,
)
from watcher_auth import WatcherAPIError, WatcherAuthError
from watcher_auth.v2 import WatcherV2Session

HERE = Path(__file__).resolve().parent
# An ?offset= from a link is below this; anything else shows the first page.
MAX_OFFSET = 1_000_000_000

watcher_auth = WatcherAuth()
login_manager = LoginManager()
csrf = CSRFProtect()

metadata = MetaData()
users = Table(
    "portal_users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(150), unique=True, nullable=False),
    Column("password_hash", String(255), nullable=False),
)
#: The portal users who are staff: they may see every camera through the system key.
staff = Table(
    "portal_staff",
    metadata,
    Column("user_id", Integer, ForeignKey("portal_users.id"), primary_key=True),
)


class PortalUser(UserMixin):
    """A portal account (not a Watcher account: that one is connected separately)."""

    def __init__(self, user_id: int, username: str, is_staff: bool = False) -> None:
        self.id = user_id
        self.username = username
        self.is_staff = is_staff


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The portal app; ``config`` overrides the defaults (tests, other deployments)."""
    app = Flask(__name__)
    database = os.environ.get("PORTAL_DATABASE") or str(HERE / "db.sqlite3")
    app.config.update(
        SECRET_KEY=os.environ.get("PORTAL_SECRET_KEY", "dev-only-example-portal-secret"),
        PORTAL_DATABASE_URL=f"sqlite:///{database}",
        # Small, so the demo's five cameras span two pages.
        PORTAL_CAMERAS_PER_PAGE=4,
        WATCHER_URL=os.environ.get("WATCHER_URL") or "http://127.0.0.1:8080",
        # Tokens go into the portal's database, encrypted with SECRET_KEY.
        WATCHER_STORE="sqlalchemy",
    )
    app.config.update(config or {})
    engine = create_engine(app.config["PORTAL_DATABASE_URL"])
    metadata.create_all(engine)
    app.extensions["portal_db"] = engine
    app.config.setdefault("WATCHER_STORE_OPTIONS", {"engine": engine})

    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "sign_in"
    login_manager.login_message = "Sign in to see your cameras."
    watcher_auth.init_app(app)  # the user key is Flask-Login's current_user.get_id()

    app.add_url_rule("/", "home", home)
    app.add_url_rule("/sign-in", "sign_in", sign_in, methods=["GET", "POST"])
    app.add_url_rule("/sign-out", "sign_out", sign_out, methods=["POST"])
    app.add_url_rule("/cameras", "cameras", cameras)
    app.add_url_rule("/cameras/v2", "cameras_v2", cameras_v2)
    app.add_url_rule("/cameras/all", "all_cameras", all_cameras)
    app.context_processor(watcher_panel)
    app.context_processor(staff_pages)
    app.cli.add_command(prepare_demo)
    return app


def db() -> Engine:
    """The portal's database engine."""
    engine: Engine = current_app.extensions["portal_db"]
    return engine


def find_user(condition: ColumnElement[bool]) -> Row[Any] | None:
    """The ``portal_users`` row that matches ``condition``, with ``is_staff``."""
    query = (
        select(users, staff.c.user_id.is_not(None).label("is_staff"))
        .outerjoin(staff, staff.c.user_id == users.c.id)
        .where(condition)
    )
    with db().connect() as conn:
        return conn.execute(query).first()


@login_manager.user_loader
def load_user(user_id: str) -> PortalUser | None:
    """Flask-Login's loader: the signed-in account, by id."""
    row = find_user(users.c.id == int(user_id))
    return PortalUser(row.id, row.username, row.is_staff) if row is not None else None


def home() -> Response:
    """The front page is the camera list."""
    return redirect(url_for("cameras"))


def sign_in() -> str | Response:
    """The portal's own sign-in form."""
    next_url = safe_next_url(request.values.get("next"))
    if current_user.is_authenticated:
        return redirect(next_url or url_for("cameras"))
    error = None
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        row = find_user(users.c.username == username)
        if row is not None and check_password_hash(
            row.password_hash, request.form.get("password", "")
        ):
            login_user(PortalUser(row.id, row.username, row.is_staff))
            return redirect(next_url or url_for("cameras"))
        error = "That username and password do not match a portal account."
    return render_template("sign_in.html", error=error, username=username, next_url=next_url)


def sign_out() -> Response:
    """Sign out of the portal (the Watcher account stays connected for next time)."""
    logout_user()
    return redirect(url_for("sign_in"))


@login_required
@watcher_required
def cameras() -> str | tuple[str, int]:
    """One page of the signed-in user's Watcher streams; ``?cursor=`` selects the page.

    ``@watcher_required`` sends people without a working Watcher account to the connect
    page and refreshes a stale access token first; ``current_watcher`` carries the token.
    """
    cursor = request.args.get("cursor", "")
    params: dict[str, Any] = {"limit": current_app.config["PORTAL_CAMERAS_PER_PAGE"]}
    if cursor:
        params["cursor"] = cursor
    try:
        page = current_watcher.json("streams", params=params)
    except WatcherAPIError as exc:
        if cursor and exc.status_code == 400:
            # A cursor from an old link that Watcher no longer accepts: offer the first page.
            return render_template("cameras.html", stale_cursor=True), 400
        raise
    return render_template(
        "cameras.html",
        cameras=[camera_row(stream) for stream in page["streams"]],
        total=page.get("estimated_count"),
        next_link=_page_link(page.get("next")),
        prev_link=_page_link(page.get("prev")),
    )


@login_required
@watcher_v2_required
def cameras_v2() -> str:
    """One page of the signed-in user's cameras through API v2; ``?offset=`` selects the page.

    ``@watcher_v2_required`` sends people without an API v2 account to the API v2 connect
    page (a user API key or a password); ``current_watcher_v2`` carries their session or key.
    """
    page = camera_page(current_watcher_v2, offset_of(request.args.get("offset")), "cameras_v2")
    return render_template("cameras_v2.html", heading="Cameras (API v2)", **page)


@login_required
def all_cameras() -> str:
    """Every camera in Watcher, one page at a time, through Watcher's API v2 system key.

    The system key has super-admin rights whoever is signed in, so only staff get here; the
    page exists only when the key is configured (``WATCHER_SYSTEM_API_KEY``).
    """
    if not current_user.is_staff:
        abort(403)
    if get_state().settings.system_api_key is None:
        abort(404)
    offset = offset_of(request.args.get("offset"))
    page = camera_page(current_watcher_system, offset, "all_cameras")
    return render_template("cameras_v2.html", heading="All cameras (system key)", **page)


def camera_page(watcher: WatcherV2Session, offset: int, endpoint: str) -> dict[str, Any]:
    """The API v2 cameras from ``offset`` on, one page of them, with links to the neighbours.

    API v2 pages by ``limit`` and ``offset`` and tells no total: asking for one camera more
    than a page shows tells whether there is a next page.
    """
    size = current_app.config["PORTAL_CAMERAS_PER_PAGE"]
    found = watcher.json("cameras", params={"limit": size + 1, "offset": offset})
    shown = found[:size]
    return {
        "cameras": [v2_camera_row(camera) for camera in shown],
        "first": offset + 1,
        "last": offset + len(shown),
        "next_link": url_for(endpoint, offset=offset + size) if len(found) > size else None,
        "prev_link": url_for(endpoint, offset=max(offset - size, 0)) if offset > 0 else None,
    }


def v2_camera_row(camera: dict[str, Any]) -> dict[str, Any]:
    """What the API v2 camera list shows of one camera."""
    return {
        "name": camera["name"],
        "title": camera.get("title") or camera["name"],
        "alive": bool((camera.get("stream_status") or {}).get("alive")),
    }


def offset_of(value: str | None) -> int:
    """The ``?offset=`` of a page link; 0 (the first page) for anything but a count."""
    try:
        offset = int(value or 0)
    except ValueError:
        return 0
    return offset if 0 <= offset < MAX_OFFSET else 0


def camera_row(stream: dict[str, Any]) -> dict[str, Any]:
    """What the camera list shows of one Watcher stream."""
    stats = stream.get("stats") or {}
    return {
        "name": stream["name"],
        "title": stream.get("title") or stream["name"],
        "alive": bool(stats.get("alive")),
        "playback_url": playback_url(stream),
    }


def playback_url(stream: dict[str, Any]) -> str | None:
    """The player page of a stream, authorized by its ``playback_token``.

    Watcher gives each stream a playback token meant for players and links; the portal's
    access and refresh tokens never go into a page or a URL.
    """
    stats = stream.get("stats") or {}
    token, endpoint = stats.get("playback_token"), stats.get("streaming_endpoint")
    if not token or not endpoint:
        return None
    if "://" not in endpoint:
        endpoint = f"https://{endpoint}"
    name = quote(stream["name"], safe="")
    return f"{endpoint.rstrip('/')}/{name}/embed.html?{urlencode({'token': token})}"


def watcher_panel() -> dict[str, Any]:
    """``watcher_panel`` for every page: connected as, token expiry, last refresh. No token.

    It reads the stored record only; showing it never calls Watcher.
    """
    if not current_user.is_authenticated:
        return {}
    state = get_state()
    key = state.user_key() or ""
    try:
        pair = state.manager.tokens(key)
        v2_pair = state.manager.v2_tokens(key)
    except WatcherAuthError:
        return {"watcher_panel": {"unavailable": True}}
    v2 = {"connected": False}
    if v2_pair is not None:
        v2 = {"connected": True, "username": v2_pair.username, "scheme": v2_pair.scheme}
    if pair is None:
        return {"watcher_panel": {"connected": False, "v2": v2}}
    return {
        "watcher_panel": {
            "connected": True,
            "username": pair.username,
            "server": state.manager.server,
            "expires_in": expires_in(pair.local_expires_at, time.time()),
            "refreshed_at": _clock_time(pair.refreshed_at),
            "v2": v2,
        }
    }


def staff_pages() -> dict[str, Any]:
    """``system_cameras``: whether to link the staff's "All cameras" page (system key set)."""
    if not current_user.is_authenticated or not current_user.is_staff:
        return {}
    return {"system_cameras": get_state().settings.system_api_key is not None}


def expires_in(moment: float | None, now: float) -> str:
    """``moment`` as "3 min 12 s" from ``now``, for people."""
    if moment is None:
        return "never"
    seconds = int(moment - now)
    if seconds <= 0:
        return "expired; renewed on the next Watcher call"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


@click.command("prepare-demo")
@click.option("--username", default="demo", show_default=True)
@click.option("--password", default="demo-portal-pw", show_default=True)
@with_appcontext
def prepare_demo(username: str, password: str) -> None:
    """Create the tables and create (or reset) the demo portal user, a staff member."""
    password_hash = generate_password_hash(password)
    with db().begin() as conn:
        found = conn.execute(select(users.c.id).where(users.c.username == username)).first()
        if found is None:
            user_id = conn.execute(
                users.insert().values(username=username, password_hash=password_hash)
            ).inserted_primary_key[0]
        else:
            user_id = found.id
            conn.execute(
                users.update().where(users.c.id == user_id).values(password_hash=password_hash)
            )
        # Staff see every camera on "All cameras (system key)".
        if conn.execute(select(staff).where(staff.c.user_id == user_id)).first() is None:
            conn.execute(staff.insert().values(user_id=user_id))
    action = "Created" if found is None else "Reset the password of"
    click.echo(f"{action} the portal user {username!r}.")


def _page_link(cursor: str | None) -> str | None:
    return url_for("cameras", cursor=cursor) if cursor else None


def _clock_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%H:%M:%S UTC")
