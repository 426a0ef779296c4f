"""Flussonic Watcher API v2 (``/vsaas/api/v2``): system key, user key, and sessions.

The two key schemes are plain ``requests`` auth objects::

    requests.get(f"{url}/vsaas/api/v2/cameras", auth=SystemApiKeyAuth(system_key))
    requests.get(f"{url}/vsaas/api/v2/cameras", auth=UserApiKeyAuth("alice", user_key))

Per-user sessions and user keys are kept by a :class:`~watcher_auth.TokenManager`, in the same
store as the v3 tokens but apart from them::

    manager.v2_login("portal-user-42", username="alice", password="secret")
    cams = manager.v2_session("portal-user-42").get("cameras").json()
"""

from watcher_auth.v2._auth import SystemApiKeyAuth, UserApiKeyAuth, WatcherV2Auth
from watcher_auth.v2._policy import (
    API_KEY_HEADER,
    SESSION_HEADER,
    SYSTEM_API_KEY_ENV,
    USER_HEADER,
    V2_ROOT,
    check_secret,
    system_api_key_setting,
)
from watcher_auth.v2._session import WatcherV2Session

__all__ = [
    "API_KEY_HEADER",
    "SESSION_HEADER",
    "SYSTEM_API_KEY_ENV",
    "USER_HEADER",
    "V2_ROOT",
    "SystemApiKeyAuth",
    "UserApiKeyAuth",
    "WatcherV2Auth",
    "WatcherV2Session",
    "check_secret",
    "system_api_key_setting",
]
