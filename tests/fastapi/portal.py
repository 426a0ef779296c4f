"""A small FastAPI portal wired to Watcher through fastapi_watcher_auth, for the tests.

Portal users sign in with the header ``X-Portal-User: <id>`` (the app's own authentication
dependency, standing in for a session or a bearer token). Its endpoints:

- ``/cameras``: the names of the user's streams (``Depends(watcher_auth.watcher)``).
- ``/v2/cameras``: the user's API v2 cameras; ``/system/cameras`` with the system key.
- ``/raise-for-status``: a view that calls ``raise_for_status()`` on Watcher's answer.
- ``/health``: answers at once, without Watcher or the store.

``create_app()`` reads ``PORTAL_SETTINGS`` (JSON of ``WATCHER_*`` settings) from the
environment, for ``uvicorn --factory`` in a subprocess.
"""

# No `from __future__ import annotations`: FastAPI reads the local Annotated aliases at run time.

import json
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header

from fastapi_watcher_auth import WatcherAuth
from watcher_auth import AsyncWatcherClient, WatcherEvent

USER_HEADER = "X-Portal-User"


async def current_user_id(x_portal_user: Annotated[str | None, Header()] = None) -> str | None:
    """The portal's own authentication: the signed-in user's id, or ``None``."""
    return x_portal_user or None


def build_portal(settings: dict[str, Any], **options: Any) -> tuple[FastAPI, WatcherAuth]:
    app = FastAPI()
    watcher_auth = WatcherAuth(app, user_key=current_user_id, settings=settings, **options)
    Watcher = Annotated[AsyncWatcherClient, Depends(watcher_auth.watcher)]
    WatcherV2 = Annotated[AsyncWatcherClient, Depends(watcher_auth.watcher_v2)]
    System = Annotated[AsyncWatcherClient, Depends(watcher_auth.watcher_system)]
    app.state.events = events = []

    @watcher_auth.add_listener
    def remember(event: WatcherEvent) -> None:
        events.append(event)

    @app.get("/cameras")
    async def cameras(watcher: Watcher) -> list[str]:
        return [stream["name"] async for stream in watcher.paginate("streams")]

    @app.get("/v2/cameras")
    async def v2_cameras(watcher: WatcherV2) -> list[str]:
        return [camera["name"] async for camera in watcher.paginate("cameras")]

    @app.get("/system/cameras")
    async def system_cameras(watcher: System) -> int:
        return len(await watcher.json("cameras"))

    @app.get("/raise-for-status")
    async def raise_for_status(watcher: Watcher) -> Any:
        answer = await watcher.get("streams/no-such-stream")
        answer.raise_for_status()
        return answer.json()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app, watcher_auth


def create_app() -> FastAPI:
    """The portal for ``uvicorn --factory``, its settings from ``PORTAL_SETTINGS``."""
    app, _ = build_portal(json.loads(os.environ["PORTAL_SETTINGS"]))
    return app
