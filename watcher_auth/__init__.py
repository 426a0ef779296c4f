"""Per-user authorization for the Flussonic Watcher API.

A :class:`TokenManager` logs each of a portal's users in to Watcher once, keeps their
tokens in a :class:`TokenStore`, refreshes them before they expire (and after a 401), and
hands out ``requests`` sessions that carry them::

    manager = TokenManager("https://watcher.example.com", store=MemoryStore())
    manager.login("portal-user-42", username="alice", password="secret")
    streams = manager.session("portal-user-42").get("streams").json()
"""

from watcher_auth._events import EventType, Listener, WatcherEvent
from watcher_auth._exceptions import (
    ConfigurationError,
    InvalidCredentials,
    NotConnected,
    ReauthenticationRequired,
    StoreError,
    StoreLockTimeout,
    TokenDecryptionError,
    WatcherAPIError,
    WatcherAuthError,
    WatcherConnectionError,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth._manager import CredentialsProvider, TokenManager, normalize_server_url
from watcher_auth._session import WatcherBearerAuth, WatcherSession
from watcher_auth._tokens import Secret, StoreKey, TokenPair
from watcher_auth.stores import MemoryStore, TokenStore, resolve_store

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "CredentialsProvider",
    "EventType",
    "InvalidCredentials",
    "Listener",
    "MemoryStore",
    "NotConnected",
    "ReauthenticationRequired",
    "Secret",
    "StoreError",
    "StoreKey",
    "StoreLockTimeout",
    "TokenDecryptionError",
    "TokenManager",
    "TokenPair",
    "TokenStore",
    "WatcherAPIError",
    "WatcherAuthError",
    "WatcherBearerAuth",
    "WatcherConnectionError",
    "WatcherEvent",
    "WatcherPermissionDenied",
    "WatcherProtocolError",
    "WatcherSession",
    "WatcherUnavailable",
    "__version__",
    "normalize_server_url",
    "resolve_store",
]
