"""FastAPI (and Starlette) integration for watcher-auth: each portal user's own Watcher account.

::

    from fastapi import Depends, FastAPI
    from fastapi_watcher_auth import WatcherAuth
    from watcher_auth import AsyncWatcherClient

    app = FastAPI()
    watcher_auth = WatcherAuth(
        app,
        user_key=current_user_id,  # the app's own dependency: the portal user's id, or None
        settings={"WATCHER_URL": "https://watcher.example.com", "WATCHER_STORE": "redis",
                  "WATCHER_ENCRYPTION_KEYS": [key]},
    )

    @app.get("/cameras")
    async def cameras(watcher: AsyncWatcherClient = Depends(watcher_auth.watcher)):
        return [stream["name"] async for stream in watcher.paginate("streams")]

``watcher_auth.watcher`` yields the user's API v3 client (tokens refreshed first when due);
``watcher_auth.watcher_v2`` their API v2 client; ``watcher_auth.watcher_system`` an API v2
client with Watcher's system key (``WATCHER_SYSTEM_API_KEY``; staff-only views). The app's
lifespan makes one :class:`~watcher_auth.AsyncTokenManager` and store per worker process and
closes them at shutdown (``app.state.watcher_auth``, a :class:`WatcherState`).

The router (under ``WATCHER_URL_PREFIX``, ``/watcher``) has ``POST connect``
(``{"username", "password"}``), ``POST connect/v2``, ``POST disconnect`` and ``GET status``.

Failures are answered by :mod:`watcher_auth.web`'s policy, as JSON: 503 with
``Retry-After`` while Watcher or the store is down, 401 with ``error``
``watcher_not_connected`` / ``watcher_reauthentication_required`` /
``watcher_reconnect_required`` and ``connect_url``, 403 ``watcher_permission_denied``...
``watcher_auth.add_listener(fn)`` calls ``fn(event)`` for each
:class:`~watcher_auth.WatcherEvent` (connected, refreshed, reauthentication required...).

Settings (:data:`DEFAULTS`), validated when the plugin is set up: ``WATCHER_URL`` (required),
``WATCHER_STORE`` (``"memory"``, ``"redis"``, ``"sqlalchemy"``, a dotted path or a store),
``WATCHER_STORE_OPTIONS``, ``WATCHER_REDIS_URL``, ``WATCHER_SQLALCHEMY_URL`` (an async driver:
``postgresql+psycopg://``, ``sqlite+aiosqlite://``), ``WATCHER_ENCRYPTION_KEYS`` (required by
the encrypting stores), ``WATCHER_TIMEOUT``, ``WATCHER_REFRESH_MARGIN``,
``WATCHER_LOCK_TIMEOUT``, ``WATCHER_LOCAL_CACHE_SIZE``, ``WATCHER_VERIFY_TLS``,
``WATCHER_URL_PREFIX`` (``None``: no router), ``WATCHER_CLOCK``, ``WATCHER_SYSTEM_API_KEY``,
``WATCHER_MULTIPROCESS`` (``None``: true when ``WEB_CONCURRENCY`` is above 1; a ``"memory"``
store is then refused).
"""

from fastapi_watcher_auth._plugin import STATE_NAME, WatcherAuth, WatcherState, get_state
from fastapi_watcher_auth._router import forget
from fastapi_watcher_auth._settings import DEFAULTS, WatcherSettings

__all__ = [
    "DEFAULTS",
    "STATE_NAME",
    "WatcherAuth",
    "WatcherSettings",
    "WatcherState",
    "forget",
    "get_state",
]
