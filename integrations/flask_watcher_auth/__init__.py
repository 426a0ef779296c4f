"""Flask integration for watcher-auth: each portal user's own Watcher account.

::

    from flask_watcher_auth import WatcherAuth, current_watcher, watcher_required

    app.config["WATCHER_URL"] = "https://watcher.example.com"
    watcher_auth = WatcherAuth(app)          # or WatcherAuth() then watcher_auth.init_app(app)

    @app.get("/cameras")
    @watcher_required
    def cameras():
        streams = current_watcher.get("streams").json()["streams"]
        return render_template("cameras.html", streams=streams)

API v2 (``/vsaas/api/v2``): ``current_watcher_v2`` carries the user's API v2 session or user
key (guard views with ``@watcher_v2_required``); ``current_watcher_system`` carries Watcher's
system key (``WATCHER_SYSTEM_API_KEY``, super-admin rights: staff-only views)::

    @app.get("/my-cameras")
    @watcher_v2_required
    def my_cameras():
        return {"cameras": [c["name"] for c in current_watcher_v2.paginate("cameras")]}

Async views use ``current_watcher_async`` (and ``current_watcher_v2_async``,
``current_watcher_system_async``), an :class:`~watcher_auth.AsyncWatcherClient` for the same
user, from a per-process :class:`~watcher_auth.AsyncTokenManager` on the same store; it is
closed when the view returns (Flask runs each async view on an event loop of its own)::

    @app.get("/cameras.json")
    @watcher_required
    async def cameras_json():
        return [s["name"] async for s in current_watcher_async.paginate("streams")]

The user key comes from Flask-Login's ``current_user`` or from a
``@watcher_auth.user_key_loader`` function. The blueprint ``watcher_auth`` (under
``WATCHER_URL_PREFIX``) has the ``connect``, ``connect_v2`` (an API v2 user key or password),
``disconnect`` and ``status`` pages; its templates live under ``watcher_auth/`` and the app's
own templates of the same name win.
``flask watcher status | disconnect USER | check`` manage accounts from the shell.

Configuration (:data:`CONFIG_DEFAULTS`), checked by ``init_app``:

========================  ============================  ========================================
Key                       Default                       Meaning
========================  ============================  ========================================
WATCHER_URL               (required)                    Watcher's address
WATCHER_STORE             ``"memory"``                  ``"memory"``, ``"redis"``, ``"sqlalchemy"``,
                                                        a dotted path, or a TokenStore
WATCHER_STORE_OPTIONS     ``{}``                        keyword arguments for the store
WATCHER_REDIS_URL         ``redis://127.0.0.1:6379/0``  the ``"redis"`` store's server
WATCHER_SQLALCHEMY_URL    ``SQLALCHEMY_DATABASE_URI``   the ``"sqlalchemy"`` store's database
WATCHER_ENCRYPTION_KEYS   ``[]`` (``SECRET_KEY``)       keys encrypting stored tokens, newest
                                                        first (older ones still decrypt)
WATCHER_TIMEOUT           ``10.0``                      seconds per request to Watcher
WATCHER_REFRESH_MARGIN    ``None`` (10%, <= 60 s)       seconds before expiry to refresh
WATCHER_LOCK_TIMEOUT      ``30.0``                      seconds to wait for another refresh
WATCHER_DEADLINE          ``None`` (30 s or 2 x timeout) seconds a login or refresh may take
WATCHER_LOCAL_CACHE_SIZE  ``10000``                     fresh pairs cached per process
WATCHER_VERIFY_TLS        ``True``                      TLS verification, or a CA bundle path
WATCHER_SERVICE_USERNAME  ``None`` (or environment)     a service account for users who
WATCHER_SERVICE_PASSWORD  ``None`` (or environment)     connected no account of their own
WATCHER_CONNECT_VIEW      ``"watcher_auth.connect"``    where reconnecting users are sent
WATCHER_URL_PREFIX        ``"/watcher"``                the blueprint's URL prefix
WATCHER_CLOCK             ``None`` (``time.time``)      the clock, for tests
WATCHER_SYSTEM_API_KEY    ``None`` (or environment)     Watcher's API v2 system key, for
                                                        ``current_watcher_system``; set but
                                                        empty fails at start-up
WATCHER_MULTIPROCESS      ``None`` (``WEB_CONCURRENCY``) whether several processes serve the
                                                        app; ``True`` refuses a ``"memory"``
                                                        store. ``None``: true when the
                                                        environment's ``WEB_CONCURRENCY`` is
                                                        above 1
WATCHER_CHECK_STORE_ON    ``False``                     read the store once in ``init_app``, so
_START                                                  an unreachable store fails at start-up
========================  ============================  ========================================

Unknown ``WATCHER_*`` keys are logged at start-up with the closest known name; so is a
``"memory"`` store, which keeps tokens in one process.

Failures are answered by :mod:`watcher_auth.web`'s policy: pages redirect to the connect page
or render ``watcher_auth/unavailable.html`` / ``error.html``; JSON clients get
``{"error": code, "message": ...}`` with the status of the policy. ``forget_user(user_id)``
forgets a deleted portal user's records; ``forget_deleted_users(Model)`` does it on every ORM
delete.
"""

from flask_watcher_auth._extension import (
    SERVICE_ACCOUNT_KEY,
    WatcherAuth,
    WatcherState,
    current_watcher,
    current_watcher_async,
    current_watcher_system,
    current_watcher_system_async,
    current_watcher_v2,
    current_watcher_v2_async,
    get_state,
    watcher_required,
    watcher_v2_required,
)
from flask_watcher_auth._settings import CONFIG_DEFAULTS, WatcherSettings
from flask_watcher_auth._views import safe_next_url
from flask_watcher_auth.signals import (
    watcher_connected,
    watcher_disconnected,
    watcher_reauthentication_required,
    watcher_tokens_refreshed,
)

__all__ = [
    "CONFIG_DEFAULTS",
    "SERVICE_ACCOUNT_KEY",
    "WatcherAuth",
    "WatcherSettings",
    "WatcherState",
    "current_watcher",
    "current_watcher_async",
    "current_watcher_system",
    "current_watcher_system_async",
    "current_watcher_v2",
    "current_watcher_v2_async",
    "get_state",
    "safe_next_url",
    "watcher_connected",
    "watcher_disconnected",
    "watcher_reauthentication_required",
    "watcher_required",
    "watcher_tokens_refreshed",
    "watcher_v2_required",
]
