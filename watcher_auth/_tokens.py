"""The records the manager keeps per user key."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Secret", "StoreKey", "TokenPair"]


class StoreKey(NamedTuple):
    """Where a record lives in a store: one Watcher server, one API, one user key.

    Immutable and hashable (a named tuple, so dictionaries keyed by it hash it without a
    Python call).

    Its text form, ``str(key)``, is ``api|server|user`` with ``%`` and ``|`` inside each part
    written ``%25`` and ``%7C``, so no server or user key can make two keys share a text
    (stores name records with it, and records are encrypted bound to it). A part without
    those two characters appears as is.

    Attributes:
        server: the normalized Watcher base URL, so one store can serve several servers.
        user: the portal's user key (``str(user.pk)`` in Django, for example).
        api: ``"v3"`` for JWT pairs, ``"v2"`` for API v2 sessions and user keys.
    """

    server: str
    user: str
    api: str = "v3"

    def __str__(self) -> str:
        return "|".join(_escape(part) for part in (self.api, self.server, self.user))

    @classmethod
    def parse(cls, text: str) -> StoreKey:
        """Inverse of ``str(key)``: ``StoreKey.parse(str(key)) == key`` for every key.

        Raises:
            ValueError: ``text`` is not the text of any key (so ``str(StoreKey.parse(text))
                == text`` whenever it returns).
        """
        parts = text.split("|")
        if len(parts) != 3 or not all(_ESCAPED.fullmatch(part) for part in parts):
            raise ValueError("not the text of a store key: expected api|server|user")
        api, server, user = (_unescape(part) for part in parts)
        return cls(server=server, user=user, api=api)


# Only the separator and the escape character itself are escaped; anything else after a
# "%" would give one key two texts, so parse refuses it.
_UNESCAPES = {"%25": "%", "%7C": "|"}
_ESCAPED = re.compile(r"(?:[^%|]|%25|%7C)*", re.DOTALL)
_ESCAPE_SEQUENCE = re.compile(r"%25|%7C")


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace("|", "%7C")


def _unescape(part: str) -> str:
    return _ESCAPE_SEQUENCE.sub(lambda m: _UNESCAPES[m.group()], part)


@dataclass(frozen=True, slots=True, repr=False)
class TokenPair:
    """Credentials for one user key, as stored. Never shows its secrets in ``repr``.

    Times are unix seconds. ``expires_at`` and ``issued_at`` are on the server's clock (the
    JWT claims); ``clock_offset`` is the server's clock minus ours, measured when the pair was
    obtained, so :attr:`local_expires_at` is the expiry on our clock.

    Attributes:
        access_token: the JWT for API v3 (or the session id / user API key for API v2).
        refresh_token: the long-lived refresh token, or ``None`` where there is none.
        expires_at: the access token's ``exp`` claim, or ``None`` if it does not expire.
        issued_at: the ``iat`` claim, or our estimate of it on the server's clock.
        clock_offset: server clock minus local clock, in seconds.
        username: the Watcher username, when known.
        connected_at: local time of the password login that started this chain.
        refreshed_at: local time of the last refresh, or ``None``.
        scheme: ``"jwt"`` (v3), ``"session"`` or ``"user-key"`` (v2).
    """

    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None
    issued_at: float | None = None
    clock_offset: float = 0.0
    username: str | None = None
    connected_at: float | None = None
    refreshed_at: float | None = None
    scheme: str = "jwt"

    @property
    def local_expires_at(self) -> float | None:
        """The access token's expiry on the local clock."""
        if self.expires_at is None:
            return None
        return self.expires_at - self.clock_offset

    @property
    def lifetime(self) -> float | None:
        """Seconds between issue and expiry of the access token, when both are known."""
        if self.expires_at is None or self.issued_at is None:
            return None
        return max(0.0, self.expires_at - self.issued_at)

    def replace(self, **changes: Any) -> TokenPair:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (secrets included: encrypt before storing)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenPair:
        """Inverse of :meth:`to_dict`; unknown fields are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> str:
        """:meth:`to_dict` as compact JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> TokenPair:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        return (
            f"TokenPair(scheme={self.scheme!r}, username={self.username!r}, "
            f"expires_at={self.expires_at!r}, access_token='***', "
            f"refresh_token={_mask(self.refresh_token)})"
        )

    __str__ = __repr__


class Secret(str):
    """A password or key whose ``repr`` hides it.

    Error pages that list a frame's local variables (Django's with ``DEBUG`` on) print their
    reprs; a password the library holds while it logs in is kept as one of these.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def _mask(secret: str | None) -> str:
    return "None" if secret is None else "'***'"
