"""The FastAPI example service: a JSON API whose signed-in users see their own Watcher cameras.

Run it from this folder::

    python service.py prepare                            # make the secret key file once
    uvicorn --factory service:create_app --port 8000     # http://127.0.0.1:8000

The portal's own sign-in is a session cookie set by ``/sign-in`` (one demo user); the
Watcher account is connected by ``POST /watcher/connect`` with a JSON body (the home page has
a form that does it). The environment changes what differs between machines:

- ``WATCHER_URL``: the Watcher server (default ``http://127.0.0.1:8080``, where
  ``python -m watcher_auth.testing.emulator`` listens by default).
- ``PORTAL_DATABASE``: the SQLite file of the Watcher tokens (default ``db.sqlite3`` here);
  the secret key file sits beside it.
- ``WATCHER_SYSTEM_API_KEY``: Watcher's API v2 system key; with it ``/staff/cameras`` lists
  every camera.
"""

# No `from __future__ import annotations`: FastAPI reads the local Annotated aliases at run time.

import hmac
import html
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.middleware.sessions import SessionMiddleware

from fastapi_watcher_auth import WatcherAuth
from watcher_auth import AsyncWatcherClient

HERE = Path(__file__).resolve().parent
DATABASE = Path(os.environ.get("PORTAL_DATABASE", HERE / "db.sqlite3"))
SECRET_FILE = DATABASE.with_name("fastapi-secret.key")
#: The one portal user of the demo: (name, password).
PORTAL_USER = ("demo", "demo-portal-pw")


def prepare() -> None:
    """Make the secret key file (session cookies, and the tokens' encryption) if missing."""
    DATABASE.parent.mkdir(parents=True, exist_ok=True)
    if not SECRET_FILE.exists():
        SECRET_FILE.write_text(secrets.token_urlsafe(48))
        SECRET_FILE.chmod(0o600)
    DATABASE.touch()


async def current_user_id(request: Request) -> str | None:
    """The portal's own authentication: the signed-in user's id from the session cookie."""
    user = request.session.get("user")
    return user if isinstance(user, str) else None


def create_app() -> FastAPI:
    """The service (for ``uvicorn --factory``), after ``python service.py prepare``."""
    if not SECRET_FILE.exists():
        sys.exit(f"{SECRET_FILE} is missing: run `python service.py prepare` first")
    secret = SECRET_FILE.read_text().strip()
    app = FastAPI(title="Watcher cameras")
    app.add_middleware(SessionMiddleware, secret_key=secret, same_site="strict")
    watcher_auth = WatcherAuth(
        app,
        user_key=current_user_id,
        settings={
            "WATCHER_URL": os.environ.get("WATCHER_URL", "http://127.0.0.1:8080"),
            "WATCHER_STORE": "sqlalchemy",
            "WATCHER_SQLALCHEMY_URL": f"sqlite+aiosqlite:///{DATABASE}",
            "WATCHER_ENCRYPTION_KEYS": [secret],
        },
    )
    Watcher = Annotated[AsyncWatcherClient, Depends(watcher_auth.watcher)]
    WatcherV2 = Annotated[AsyncWatcherClient, Depends(watcher_auth.watcher_v2)]
    WatcherSystem = Annotated[AsyncWatcherClient, Depends(watcher_auth.watcher_system)]
    User = Annotated[str | None, Depends(current_user_id)]

    @app.get("/cameras")
    async def cameras(watcher: Watcher) -> list[dict[str, Any]]:
        """The signed-in user's cameras (API v3)."""
        return [
            {"name": s["name"], "title": s.get("title"), "alive": s["stats"].get("alive")}
            async for s in watcher.paginate("streams")
        ]

    @app.get("/v2/cameras")
    async def v2_cameras(watcher: WatcherV2) -> list[str]:
        """The user's cameras through their API v2 account (``/watcher/connect/v2``)."""
        return [camera["name"] async for camera in watcher.paginate("cameras")]

    @app.get("/staff/cameras")
    async def staff_cameras(user: User, watcher: WatcherSystem) -> list[str]:
        """Every camera, with Watcher's system key (the demo's one user counts as staff)."""
        if user is None:
            raise HTTPException(401, "Sign in first.")
        return [camera["name"] async for camera in watcher.paginate("cameras")]

    @app.get("/sign-in", response_class=HTMLResponse)
    async def sign_in_page() -> str:
        return _page(
            "Sign in",
            '<form method="post" action="/sign-in">'
            '<label>Portal user <input name="username" autocomplete="username"></label> '
            '<label>Password <input name="password" type="password"></label> '
            "<button>Sign in</button></form>",
        )

    @app.post("/sign-in")
    async def sign_in(request: Request) -> RedirectResponse:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        name = form.get("username", [""])[0]
        password = form.get("password", [""])[0]
        if name == PORTAL_USER[0] and hmac.compare_digest(password, PORTAL_USER[1]):
            request.session["user"] = name
            return RedirectResponse("/", status_code=303)
        return RedirectResponse("/sign-in", status_code=303)

    @app.post("/sign-out")
    async def sign_out(request: Request) -> RedirectResponse:
        request.session.clear()
        return RedirectResponse("/sign-in", status_code=303)

    @app.get("/", response_class=HTMLResponse, response_model=None)
    async def home(user: User) -> Any:
        if user is None:
            return RedirectResponse("/sign-in", status_code=303)
        return _page(
            f"Signed in as {html.escape(user)}",
            "<p>Your data: <a href='/cameras'>/cameras</a>, "
            "<a href='/watcher/status'>/watcher/status</a>, "
            "<a href='/v2/cameras'>/v2/cameras</a>, <a href='/docs'>API docs</a></p>"
            "<form id='connect'><label>Watcher user <input name='username'></label> "
            "<label>Password <input name='password' type='password'></label> "
            "<button>Connect Watcher</button></form><pre id='answer'></pre>"
            "<form method='post' action='/sign-out'><button>Sign out</button></form>"
            "<script>document.getElementById('connect').onsubmit = async (event) => {"
            "event.preventDefault(); const form = new FormData(event.target);"
            "const answer = await fetch('/watcher/connect', {method: 'POST',"
            "headers: {'Content-Type': 'application/json'},"
            "body: JSON.stringify(Object.fromEntries(form))});"
            "document.getElementById('answer').textContent = await answer.text(); };"
            "</script>",
        )

    return app


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{body}</body></html>"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["prepare"]:
        prepare()
    else:
        sys.exit("usage: python service.py prepare")
