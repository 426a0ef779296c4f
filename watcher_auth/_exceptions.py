"""The exceptions this library raises. Every one derives from :class:`WatcherAuthError`.

Messages never carry a token, password, API key or session id.
"""

from __future__ import annotations

import requests

__all__ = [
    "ConfigurationError",
    "InvalidCredentials",
    "NotConnected",
    "ReauthenticationRequired",
    "ResponseTooLarge",
    "StoreError",
    "StoreLockTimeout",
    "TokenDecryptionError",
    "WatcherAPIError",
    "WatcherAuthError",
    "WatcherConnectionError",
    "WatcherPaginationError",
    "WatcherPermissionDenied",
    "WatcherProtocolError",
    "WatcherUnavailable",
]


class WatcherAuthError(Exception):
    """Base class of every error raised by watcher-auth."""


class ConfigurationError(WatcherAuthError):
    """The library was configured wrongly (bad URL, unknown store, missing key...)."""


class WatcherProtocolError(WatcherAuthError):
    """Watcher answered with something that does not follow its API (not JSON, no JWT...).

    The stored tokens are left as they were.
    """


class ResponseTooLarge(WatcherProtocolError):
    """Watcher's answer was larger than the configured limit (``max_response_bytes``),
    counted after decompression; reading stopped there."""


class WatcherPaginationError(WatcherProtocolError):
    """A paginated list did not advance (a repeated cursor or offset) or passed ``max_pages``."""


class WatcherUnavailable(WatcherAuthError):
    """Watcher could not be reached or answered with a server error; try again later.

    Nothing stored was changed.
    """


class WatcherConnectionError(WatcherUnavailable, requests.RequestException):
    """An API call through a Watcher session failed in transit (connection, timeout, cut body).

    Also a ``requests.RequestException``, so code written for ``requests`` still catches it.
    """


class InvalidCredentials(WatcherAuthError):
    """Watcher rejected the username and password (or API key)."""


class WatcherPermissionDenied(WatcherAuthError):
    """Watcher answered 403: the credentials are valid but not allowed to do this."""


class NotConnected(WatcherAuthError):
    """No Watcher credentials are stored for this user key.

    Attributes:
        key: the user key that has no stored credentials.
    """

    def __init__(self, key: str, message: str | None = None) -> None:
        self.key = key
        super().__init__(message or f"no Watcher account is connected for user key {key!r}")


class ReauthenticationRequired(NotConnected):
    """The stored credentials stopped working; the person has to connect again.

    The dead credentials have already been deleted. A web layer turns this into a redirect
    to its connect page.

    Attributes:
        reason: why, for the person: ``"refresh_rejected"`` (Watcher refused the refresh
            token), ``"refresh_answer_lost"`` (a refresh whose answer never arrived spent the
            rotating refresh token), or ``"session_dead"`` (an API v2 session or key stopped
            working).
    """

    def __init__(
        self, key: str, message: str | None = None, *, reason: str = "refresh_rejected"
    ) -> None:
        self.reason = reason
        super().__init__(
            key,
            message
            or f"Watcher rejected the stored credentials for user key {key!r}; connect again",
        )


class StoreError(WatcherAuthError):
    """The token store failed (database or cache unreachable...). Nothing was deleted."""


class StoreLockTimeout(StoreError):
    """The refresh lock for a key could not be acquired in time."""


class TokenDecryptionError(StoreError):
    """A stored record could not be decrypted with any configured key.

    Usually the encryption key setting changed without keeping the old key in the list.
    """


class WatcherAPIError(WatcherAuthError):
    """A Watcher API call answered with an error status (raised by the JSON helpers).

    Attributes:
        status_code: the HTTP status Watcher answered with.
    """

    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        super().__init__(message)
