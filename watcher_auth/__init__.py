"""Per-user authorization for the Flussonic Watcher API.

A :class:`TokenManager` logs each of a portal's users in to Watcher once, keeps their
tokens in a :class:`TokenStore`, refreshes them before they expire (and after a 401), and
hands out ``requests`` sessions that carry them::

    manager = TokenManager("https://watcher.example.com", store=MemoryStore())
    manager.login("portal-user-42", username="alice", password="secret")
    streams = manager.session("portal-user-42").get("streams").json()

:class:`AsyncTokenManager` is its asyncio twin on ``httpx`` (extra ``async``).
"""

from typing import TYPE_CHECKING, Any

from watcher_auth._events import EventType, Listener, WatcherEvent
from watcher_auth._exceptions import (
    ConfigurationError,
    InvalidCredentials,
    NotConnected,
    ReauthenticationRequired,
    ResponseTooLarge,
    StoreError,
    StoreLockTimeout,
    TokenDecryptionError,
    WatcherAPIError,
    WatcherAuthError,
    WatcherConnectionError,
    WatcherPaginationError,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth._locks import KeyedLocks
from watcher_auth._manager import CredentialsProvider, TokenManager
from watcher_auth._policy import parse_json_object
from watcher_auth._session import SessionLoan, WatcherBearerAuth, WatcherSession
from watcher_auth._tokens import Secret, StoreKey, TokenPair
from watcher_auth._urls import normalize_server_url, origin_of
from watcher_auth.stores import AsyncTokenStore, MemoryStore, TokenStore, resolve_store

if TYPE_CHECKING:
    from watcher_auth._async_manager import AsyncTokenManager
    from watcher_auth._httpx import AsyncWatcherClient, FlowHttpxAuth, WatcherClient

# Names that need the optional httpx package, imported on first use.
_HTTPX_NAMES = {
    "AsyncTokenManager": "watcher_auth._async_manager",
    "AsyncWatcherClient": "watcher_auth._httpx",
    "FlowHttpxAuth": "watcher_auth._httpx",
    "WatcherClient": "watcher_auth._httpx",
}


def __getattr__(name: str) -> Any:
    module = _HTTPX_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'watcher_auth' has no attribute {name!r}")
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(
            f"watcher_auth.{name} needs httpx: pip install 'watcher-auth[async]'"
        ) from exc


__version__ = "0.1.0"

__all__ = [
    "AsyncTokenManager",
    "AsyncTokenStore",
    "AsyncWatcherClient",
    "ConfigurationError",
    "CredentialsProvider",
    "EventType",
    "FlowHttpxAuth",
    "InvalidCredentials",
    "KeyedLocks",
    "Listener",
    "MemoryStore",
    "NotConnected",
    "ReauthenticationRequired",
    "ResponseTooLarge",
    "Secret",
    "SessionLoan",
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
    "WatcherClient",
    "WatcherConnectionError",
    "WatcherEvent",
    "WatcherPaginationError",
    "WatcherPermissionDenied",
    "WatcherProtocolError",
    "WatcherSession",
    "WatcherUnavailable",
    "__version__",
    "normalize_server_url",
    "origin_of",
    "parse_json_object",
    "resolve_store",
]
