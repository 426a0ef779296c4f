"""The emulator's server side: users, sessions, tokens, streams, stats and injected failures.

Client API v3 and API v2 share users and sessions: a v2 login opens a session like a v3 one,
so ``max_sessions`` and ``revoke()`` apply to both.

Plain data in, plain data out: ``emulator.py`` parses HTTP and writes what this returns.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import collections
import dataclasses
import hmac
import itertools
import json
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from watcher_auth.testing._emulator_v2 import (
    API_V2_BASE,
    V2Credentials,
    camera,
    page_of_cameras,
    parse_login_body,
)

__all__ = [
    "API_BASE",
    "API_V2_BASE",
    "DEAD_SESSION_ANSWERS",
    "FAILURE_MODES",
    "FAILURE_TARGETS",
    "CallRecord",
    "EmulatorState",
    "EmulatorStats",
    "Reply",
    "Settings",
    "json_reply",
    "signing_key",
]

API_BASE = "/watcher/client-api/v3"
FAILURE_TARGETS = frozenset({"login", "refresh", "call", "v2_login", "v2_call"})
V2_TARGETS = frozenset({"v2_login", "v2_call"})
# How API v2 answers whoami for a dead or missing session: a 403, or 200 with guest data.
DEAD_SESSION_ANSWERS = frozenset({"403", "guest"})
FAILURE_MODES = frozenset(
    {
        "401",
        "403",
        "500",
        "502_html",
        "503",
        "drop",
        "reset_mid_body",
        "hang",
        "drip",
        "non_json",
        "bad_jwt",
        "process_then_drop",
    }
)
CALL_LOG_SIZE = 200_000
MAX_PAGE_SIZE = 1000
STREAMING_ENDPOINT = "https://streamer.example.invalid"

_key_lock = threading.Lock()
_key: rsa.RSAPrivateKey | None = None


def signing_key() -> rsa.RSAPrivateKey:
    """Return the process-wide RSA key that signs access tokens, making it on first use."""
    global _key
    with _key_lock:
        if _key is None:
            # One key per process: a 2048-bit key takes long enough to make that
            # generating one per emulator would slow every test down.
            _key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _key


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the emulated server does; see :class:`~watcher_auth.testing.WatcherEmulator`."""

    host: str = "127.0.0.1"
    port: int = 0
    clock: Callable[[], float] = time.time
    access_lifetime: float = 300.0
    refresh_lifetime: float = 30 * 86400.0
    rotate_refresh_tokens: bool = False
    max_sessions: int | None = None
    server_clock_offset: float = 0.0
    latency: float = 0.0
    refresh_latency: float = 0.0
    include_iat: bool = True
    send_date_header: bool = True
    legacy_error_field: bool = False
    hang_seconds: float = 5.0
    system_api_key: str | None = None
    v2_dead_session_answer: str = "403"

    def now(self) -> float:
        """The server's clock: ``clock() + server_clock_offset``."""
        return self.clock() + self.server_clock_offset

    def to_json(self) -> dict[str, Any]:
        """Every setting but ``clock``, which is not data."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "clock"
        }


_FLOAT_SETTINGS = frozenset(
    {
        "access_lifetime",
        "refresh_lifetime",
        "server_clock_offset",
        "latency",
        "refresh_latency",
        "hang_seconds",
    }
)
_BOOL_SETTINGS = frozenset(
    {"rotate_refresh_tokens", "include_iat", "send_date_header", "legacy_error_field"}
)


def _checked_settings(changes: Mapping[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        if name in _FLOAT_SETTINGS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, not {value!r}")
            value = float(value)
        elif name in _BOOL_SETTINGS:
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        elif name == "max_sessions":
            _check_max_sessions(value)
        elif name == "port":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"port must be an int, not {value!r}")
        elif name == "host":
            if not isinstance(value, str):
                raise TypeError(f"host must be a str, not {value!r}")
        elif name == "system_api_key":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise TypeError("system_api_key must be a non-empty str or None")
        elif name == "clock":
            if not callable(value):
                raise TypeError("clock must be callable")
        elif name == "v2_dead_session_answer":
            if value not in DEAD_SESSION_ANSWERS:
                raise ValueError(
                    f"v2_dead_session_answer must be one of {sorted(DEAD_SESSION_ANSWERS)},"
                    f" not {value!r}"
                )
        else:
            raise ValueError(f"unknown emulator setting {name!r}")
        checked[name] = value
    return checked


def _check_max_sessions(value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_sessions must be a positive int or None, not {value!r}")


class CallRecord(NamedTuple):
    """One answered API call made with valid credentials.

    ``scheme`` is ``"bearer"`` or ``"basic"`` for client API v3, and ``"session"``,
    ``"user-key"`` or ``"system-key"`` for API v2; system-key calls have an empty ``username``.
    """

    username: str
    method: str
    path: str
    query: str
    scheme: str = "bearer"


@dataclasses.dataclass(frozen=True)
class EmulatorStats:
    """A snapshot of what the emulator has seen since it started or since ``reset_stats()``.

    Attributes:
        password_logins: Successful logins with a password.
        failed_logins: Password logins refused (wrong password, unknown user, no credentials).
        refreshes: Successful logins with a refresh token.
        rejected_refreshes: Refresh tokens refused (unknown, rotated away, expired, revoked).
        unauthorized: 401 answers to API calls (not to ``/login``), injected ones included.
        forbidden: 403 answers to API calls (not to ``/login``): permission denied, injected
            ones included.
        calls: API calls answered, except ``/login`` and injected failures.
        calls_by_user: Answered calls per authenticated user.
        evicted_sessions: Sessions pushed out by a user's ``max_sessions``.
        active_sessions: Live sessions per user (users with none are left out), v3 and v2
            together since they share ``max_sessions``; this is state, so ``reset_stats()``
            does not clear it.
        injected_failures: Failures from ``fail_next()`` used up so far.
        v2_logins: Successful API v2 ``POST /auth/login``.
        v2_failed_logins: API v2 logins refused (wrong password, unknown user).
        v2_calls: API v2 requests answered other than ``/auth/login`` (403s included,
            injected failures not).
        v2_calls_by_user: Answered API v2 calls per user, by session or user key.
        v2_system_calls: Answered API v2 calls made with the system key.
        v2_forbidden: 403 answers to API v2 calls: missing or bad keys, dead sessions,
            not allowed; injected ones included.
        v2_guest_answers: whoami answers with guest data for a dead or missing session
            (``v2_dead_session_answer="guest"``).
        active_v2_sessions: Live API v2 sessions per user (also counted in
            ``active_sessions``).
    """

    password_logins: int = 0
    failed_logins: int = 0
    refreshes: int = 0
    rejected_refreshes: int = 0
    unauthorized: int = 0
    forbidden: int = 0
    calls: int = 0
    calls_by_user: dict[str, int] = dataclasses.field(default_factory=dict)
    evicted_sessions: int = 0
    active_sessions: dict[str, int] = dataclasses.field(default_factory=dict)
    injected_failures: int = 0
    v2_logins: int = 0
    v2_failed_logins: int = 0
    v2_calls: int = 0
    v2_calls_by_user: dict[str, int] = dataclasses.field(default_factory=dict)
    v2_system_calls: int = 0
    v2_forbidden: int = 0
    v2_guest_answers: int = 0
    active_v2_sessions: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmulatorStats:
        """Rebuild a snapshot from :meth:`to_dict` output."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass
class _Counters:
    password_logins: int = 0
    failed_logins: int = 0
    refreshes: int = 0
    rejected_refreshes: int = 0
    unauthorized: int = 0
    forbidden: int = 0
    calls: int = 0
    calls_by_user: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    evicted_sessions: int = 0
    injected_failures: int = 0
    v2_logins: int = 0
    v2_failed_logins: int = 0
    v2_calls: int = 0
    v2_calls_by_user: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    v2_system_calls: int = 0
    v2_forbidden: int = 0
    v2_guest_answers: int = 0


class Reply(NamedTuple):
    """An HTTP answer: status, body, its content type, and any extra headers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON answer."""
    return Reply(status, json.dumps(payload).encode(), headers=headers)


class ApiError(Exception):
    """An API error answered with a JSON:API body."""

    def __init__(self, status: int, code: str, title: str) -> None:
        super().__init__(title)
        self.status = status
        self.code = code
        self.title = title


@dataclasses.dataclass
class _Session:
    id: str
    username: str
    refresh_token: str
    refresh_expires_at: float
    # Access tokens carry an issue serial; those below this one were revoked.
    min_access_serial: int = 0
    # "v3" sessions live by their refresh token; "v2" ones until logout or eviction.
    api: str = "v3"


@dataclasses.dataclass
class _User:
    id: int
    name: str
    password: str
    fullname: str
    email: str
    is_admin: bool
    max_sessions: int | None
    streams: dict[str, dict[str, Any]]
    api_key: str
    created_at: float
    phone: str = ""
    note: str = ""
    locale: str = "en"
    # Oldest first, so eviction pops from the front.
    sessions: dict[str, _Session] = dataclasses.field(default_factory=dict)

    @property
    def folder_id(self) -> int:
        return 1000 + self.id


class EmulatorState:
    """Everything the emulated Watcher knows; every method is thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self._lock = threading.Lock()
        self._settings = settings
        self._users: dict[str, _User] = {}
        self._sessions: dict[str, _Session] = {}
        self._refresh_tokens: dict[str, str] = {}
        self._counters = _Counters()
        self._access_serials = itertools.count(1)
        self._call_log: collections.deque[CallRecord] = collections.deque(maxlen=CALL_LOG_SIZE)
        # Every secret handed out or known, for tests that check none of them leaks.
        self._secrets: set[str] = set()
        self._failures: dict[str, collections.deque[str]] = {
            target: collections.deque() for target in FAILURE_TARGETS
        }

    # Control.

    @property
    def settings(self) -> Settings:
        return self._settings

    def configure(self, changes: Mapping[str, Any]) -> Settings:
        checked = _checked_settings(changes)
        with self._lock:
            self._settings = dataclasses.replace(self._settings, **checked)
            return self._settings

    def advance_clock(self, seconds: float) -> float:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, not {seconds!r}")
        with self._lock:
            offset = self._settings.server_clock_offset + seconds
            self._settings = dataclasses.replace(self._settings, server_clock_offset=offset)
            return self._settings.now()

    def add_user(
        self,
        username: str,
        password: str,
        *,
        fullname: str | None = None,
        email: str | None = None,
        is_admin: bool = False,
        max_sessions: int | None = None,
        streams: int | list[dict[str, Any]] | None = None,
        api_key: str | None = None,
    ) -> None:
        if not isinstance(username, str) or not username or ":" in username:
            raise ValueError(f"bad username {username!r}: non-empty, without ':'")
        if not isinstance(password, str):
            raise TypeError("password must be a str")
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise TypeError("api_key must be a non-empty str or None")
        _check_max_sessions(max_sessions)
        with self._lock:
            user = self._users.get(username)
            if user is None:
                user = _User(
                    id=len(self._users) + 1,
                    name=username,
                    password=password,
                    fullname="",
                    email="",
                    is_admin=False,
                    max_sessions=None,
                    streams={},
                    api_key=_new_api_key(),
                    created_at=self._settings.now(),
                )
                self._users[username] = user
                if streams is None:
                    streams = 3
            user.password = password
            user.fullname = fullname if fullname is not None else username.capitalize()
            user.email = email if email is not None else f"{username}@example.com"
            user.is_admin = bool(is_admin)
            user.max_sessions = max_sessions
            if api_key is not None:
                user.api_key = api_key
            self._secrets.update(secret for secret in (password, user.api_key) if secret)
            if streams is not None:
                user.streams = _seed_streams(user, streams)

    def api_key(self, username: str) -> str:
        with self._lock:
            return self._user(username).api_key

    def rotate_api_key(self, username: str) -> str:
        with self._lock:
            user = self._user(username)
            user.api_key = _new_api_key()
            self._secrets.add(user.api_key)
            return user.api_key

    def _user(self, username: str) -> _User:
        user = self._users.get(username)
        if user is None:
            raise KeyError(f"no user {username!r}")
        return user

    def _password_user(self, username: str, password: str) -> _User | None:
        """The user if the password is theirs; the lock is held."""
        user = self._users.get(username)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            return None
        return user

    def revoke(self, username: str) -> int:
        with self._lock:
            user = self._user(username)
            sessions = list(user.sessions.values())
            for session in sessions:
                self._end_session(session)
            return len(sessions)

    def revoke_access_tokens(self, username: str) -> int:
        with self._lock:
            user = self._user(username)
            serial = next(self._access_serials)
            for session in user.sessions.values():
                session.min_access_serial = serial
            return len(user.sessions)

    def fail_next(self, target: str, count: int = 1, mode: str = "500") -> None:
        if target not in FAILURE_TARGETS:
            raise ValueError(f"target must be one of {sorted(FAILURE_TARGETS)}, not {target!r}")
        if mode not in FAILURE_MODES:
            raise ValueError(f"mode must be one of {sorted(FAILURE_MODES)}, not {mode!r}")
        if mode == "bad_jwt" and target not in ("login", "refresh"):
            raise ValueError("mode 'bad_jwt' applies to 'login' and 'refresh' only")
        if mode == "401" and target in V2_TARGETS:
            raise ValueError("API v2 answers 403, not 401: use mode '403' for v2 targets")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an int >= 0, not {count!r}")
        with self._lock:
            self._failures[target].extend([mode] * count)

    def take_failure(self, target: str) -> str | None:
        with self._lock:
            queue = self._failures[target]
            if not queue:
                return None
            self._counters.injected_failures += 1
            return queue.popleft()

    def stats(self) -> EmulatorStats:
        now = self._settings.now()
        with self._lock:
            for user in self._users.values():
                self._drop_expired(user, now)
            c = self._counters
            return EmulatorStats(
                password_logins=c.password_logins,
                failed_logins=c.failed_logins,
                refreshes=c.refreshes,
                rejected_refreshes=c.rejected_refreshes,
                unauthorized=c.unauthorized,
                forbidden=c.forbidden,
                calls=c.calls,
                calls_by_user=dict(c.calls_by_user),
                evicted_sessions=c.evicted_sessions,
                active_sessions={
                    u.name: len(u.sessions) for u in self._users.values() if u.sessions
                },
                injected_failures=c.injected_failures,
                v2_logins=c.v2_logins,
                v2_failed_logins=c.v2_failed_logins,
                v2_calls=c.v2_calls,
                v2_calls_by_user=dict(c.v2_calls_by_user),
                v2_system_calls=c.v2_system_calls,
                v2_forbidden=c.v2_forbidden,
                v2_guest_answers=c.v2_guest_answers,
                active_v2_sessions={
                    name: count
                    for name, count in (
                        (u.name, sum(s.api == "v2" for s in u.sessions.values()))
                        for u in self._users.values()
                    )
                    if count
                },
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._counters = _Counters()
            self._call_log.clear()

    def secrets(self) -> frozenset[str]:
        """Every password, token, session id and API key the emulator knows or issued."""
        with self._lock:
            system_key = self._settings.system_api_key
            return frozenset(self._secrets | ({system_key} if system_key else set()))

    def call_log(self) -> list[CallRecord]:
        with self._lock:
            return list(self._call_log)

    def injected_403(self, target: str) -> Reply:
        """The 403 a ``fail_next(target, mode="403")`` answers; on calls it counts as one."""
        if target == "v2_login":
            return self.error_reply(403, "invalid_credentials", "Invalid login or password")
        if target in ("login", "refresh"):
            return self.error_reply(403, "forbidden", "Permission denied")
        with self._lock:
            if target == "call":
                self._counters.forbidden += 1
            else:
                self._counters.v2_forbidden += 1
        title = "Permission denied" if target == "call" else "Session is invalid"
        return self.error_reply(403, "forbidden", title)

    def injected_401(self, target: str) -> Reply:
        """The 401 a ``fail_next(target, mode="401")`` answers; on calls it counts as one."""
        if target == "login":
            return self.error_reply(401, "invalid_credentials", "Invalid login or password")
        if target == "refresh":
            return self.error_reply(401, "invalid_refresh_token", "Refresh token is invalid")
        with self._lock:
            self._counters.unauthorized += 1
        return self.error_reply(401, "token_expired", "Access token has expired")

    def error_reply(self, status: int, code: str, title: str) -> Reply:
        """A JSON:API error body, with the old top-level ``error`` when so configured."""
        body: dict[str, Any] = {
            "errors": [
                {
                    "id": None,
                    "status": str(status),
                    "code": code,
                    "title": title,
                    "source": {"pointer": None, "parameter": None},
                    "meta": {},
                }
            ]
        }
        if self._settings.legacy_error_field:
            body["error"] = title
        return json_reply(status, body)

    # The API.

    def login(self, authorization: str | None) -> Reply:
        """``POST /login``: a password (HTTP Basic) or a refresh token (Bearer)."""
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if scheme.lower() == "bearer":
            return self._refresh(credentials.strip())
        username, password = _parse_basic(credentials) if scheme.lower() == "basic" else ("", "")
        settings = self._settings
        now = settings.now()
        with self._lock:
            user = self._password_user(username, password)
            if user is None:
                self._counters.failed_logins += 1
                return self.error_reply(401, "invalid_credentials", "Invalid login or password")
            session = _Session(
                id=str(uuid.uuid4()),
                username=username,
                refresh_token=str(uuid.uuid4()),
                refresh_expires_at=now + settings.refresh_lifetime,
            )
            self._open_session(user, session, settings, now)
            self._refresh_tokens[session.refresh_token] = session.id
            self._counters.password_logins += 1
            refresh_token = session.refresh_token
            serial = next(self._access_serials)
        return self._token_reply(settings, now, username, session.id, refresh_token, serial)

    def _refresh(self, token: str) -> Reply:
        settings = self._settings
        now = settings.now()
        with self._lock:
            session = self._sessions.get(self._refresh_tokens.get(token, ""))
            if session is None or session.refresh_expires_at <= now:
                self._counters.rejected_refreshes += 1
                return self.error_reply(401, "invalid_refresh_token", "Refresh token is invalid")
            if settings.rotate_refresh_tokens:
                del self._refresh_tokens[token]
                session.refresh_token = str(uuid.uuid4())
                session.refresh_expires_at = now + settings.refresh_lifetime
                self._refresh_tokens[session.refresh_token] = session.id
            self._counters.refreshes += 1
            username, session_id, refresh_token = (
                session.username,
                session.id,
                session.refresh_token,
            )
            serial = next(self._access_serials)
        return self._token_reply(settings, now, username, session_id, refresh_token, serial)

    def _token_reply(
        self,
        settings: Settings,
        now: float,
        username: str,
        session_id: str,
        refresh_token: str,
        serial: int,
    ) -> Reply:
        claims: dict[str, Any] = {
            "sub": username,
            "session": session_id,
            "exp": int(now + settings.access_lifetime),
            # Distinct even for two tokens issued in the same second; the serial lets
            # revoke_access_tokens() kill the tokens issued so far.
            "jti": f"{serial}-{uuid.uuid4().hex}",
        }
        if settings.include_iat:
            claims["iat"] = int(now)
        access_token = jwt.encode(claims, signing_key(), algorithm="RS256")
        with self._lock:
            self._secrets.update((access_token, refresh_token, session_id))
        return json_reply(200, {"access_token": access_token, "refresh_token": refresh_token})

    def call(
        self, method: str, path: str, query: str, authorization: str | None, body: bytes
    ) -> Reply:
        """Any API request but ``/login``, authorized by an access token."""
        try:
            username, scheme = self._authenticate(authorization)
        except ApiError as exc:
            with self._lock:
                self._counters.calls += 1
                self._counters.unauthorized += 1
            return self.error_reply(exc.status, exc.code, exc.title)
        with self._lock:
            self._counters.calls += 1
            self._counters.calls_by_user[username] += 1
            self._call_log.append(CallRecord(username, method, path, query, scheme))
            try:
                status, payload = self._route(self._users[username], method, path, query, body)
            except ApiError as exc:
                if exc.status == 403:
                    self._counters.forbidden += 1
                return self.error_reply(exc.status, exc.code, exc.title)
            # Serialized under the lock: the payload shares dicts with the live state.
            return json_reply(status, payload) if status != 204 else Reply(204, b"", "")

    def _authenticate(self, authorization: str | None) -> tuple[str, str]:
        """The caller's username and scheme (``"bearer"`` or ``"basic"``)."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() == "basic":
            # The spec lets every operation take HTTP Basic as well as a Bearer token.
            with self._lock:
                user = self._password_user(*_parse_basic(token))
                if user is None:
                    raise ApiError(401, "invalid_credentials", "Invalid login or password")
                return user.name, "basic"
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "Authorization required")
        try:
            claims = jwt.decode(
                token.strip(),
                signing_key().public_key(),
                algorithms=["RS256"],
                # Time is checked below against the server clock, which may be a fake one.
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise ApiError(401, "invalid_token", "Access token is invalid") from None
        now = self._settings.now()
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)) or exp <= now:
            raise ApiError(401, "token_expired", "Access token has expired")
        with self._lock:
            session = self._sessions.get(str(claims.get("session")))
            if session is None or session.refresh_expires_at <= now:
                raise ApiError(401, "session_closed", "Session is closed")
            if _serial(claims.get("jti")) < session.min_access_serial:
                raise ApiError(401, "token_revoked", "Access token was revoked")
            return session.username, "bearer"

    def _route(
        self, user: _User, method: str, path: str, query: str, body: bytes
    ) -> tuple[int, object]:
        parts = [unquote(p) for p in path[len(API_BASE) :].strip("/").split("/")]
        match parts:
            case ["streams"]:
                _allow(method, "GET")
                return 200, _list_streams(user, query)
            case ["streams", name]:
                _allow(method, "GET", "PUT", "DELETE")
                stream = user.streams.get(name)
                if stream is None:
                    raise ApiError(404, "not_found", f"Stream {name!r} not found")
                if method == "DELETE":
                    del user.streams[name]
                    return 204, None
                if method == "PUT":
                    stream.update({k: v for k, v in _json_object(body).items() if k != "name"})
                return 200, stream
            case ["profile"]:
                _allow(method, "GET", "PUT")
                if method == "PUT":
                    _update_profile(user, _json_object(body))
                    self._secrets.add(user.password)
                return 200, self._profile(user)
            case ["users"]:
                _allow(method, "GET")
                if not user.is_admin:
                    raise ApiError(403, "forbidden", "Permission denied")
                return 200, {"users_list": [self._profile(u) for u in self._users.values()]}
            case ["organizations"]:
                _allow(method, "GET")
                return 200, {"organizations": [_organization(u) for u in self._visible(user)]}
            case ["organizations", org_id, "folders"]:
                _allow(method, "GET")
                for owner in self._visible(user):
                    if str(owner.id) == org_id:
                        return 200, {"folders": [_folder(owner)]}
                raise ApiError(404, "not_found", f"Organization {org_id!r} not found")
        raise ApiError(404, "not_found", "Not found")

    def _visible(self, user: _User) -> list[_User]:
        return list(self._users.values()) if user.is_admin else [user]

    def _profile(self, user: _User) -> dict[str, Any]:
        """A user as ``/profile`` and ``/users`` show them.

        The password is write-only, so it is never shown; Watcher's optional ``apikey`` field
        is left out too, so the user's API v2 key never travels in a profile answer.
        """
        max_sessions = user.max_sessions
        if max_sessions is None:
            max_sessions = self._settings.max_sessions
        profile: dict[str, Any] = {
            "name": user.name,
            "fullname": user.fullname,
            "email": user.email,
            "phone": user.phone,
            "note": user.note,
            "locale": user.locale,
            "is_admin": user.is_admin,
            "is_domain_admin": False,
            "is_readonly": False,
            # Unix milliseconds, like every timestamp of the API.
            "created_at": int(user.created_at * 1000),
        }
        # Watcher leaves an unset limit out rather than sending null.
        if max_sessions is not None:
            profile["max_sessions"] = max_sessions
        return profile

    # API v2.

    def v2_login(self, method: str, body: bytes) -> Reply:
        """``POST /vsaas/api/v2/auth/login`` with JSON ``{"login", "password"}``."""
        if method != "POST":
            return self.error_reply(405, "method_not_allowed", "Use POST")
        try:
            username, password = parse_login_body(body)
        except ValueError as exc:
            return self.error_reply(400, "bad_request", str(exc))
        settings = self._settings
        now = settings.now()
        with self._lock:
            user = self._password_user(username, password)
            if user is None:
                self._counters.v2_failed_logins += 1
                return self.error_reply(403, "invalid_credentials", "Invalid login or password")
            session = _Session(
                id=secrets.token_urlsafe(20),
                username=username,
                refresh_token="",
                refresh_expires_at=math.inf,
                api="v2",
            )
            self._open_session(user, session, settings, now)
            self._counters.v2_logins += 1
            self._secrets.add(session.id)
            payload = {"session": session.id, **self._v2_user(user)}
        return json_reply(200, payload)

    def v2_call(
        self,
        method: str,
        path: str,
        query: str,
        credentials: V2Credentials,
        headers: Mapping[str, str],
    ) -> Reply:
        """Any API v2 request but ``/auth/login``; ``headers`` have lower-case names."""
        with self._lock:
            self._counters.v2_calls += 1
            try:
                user, scheme = self._v2_authenticate(credentials)
            except ApiError as exc:
                if self._answers_as_guest(method, path, credentials):
                    self._counters.v2_guest_answers += 1
                    return json_reply(200, _V2_GUEST)
                self._counters.v2_forbidden += 1
                return self.error_reply(exc.status, exc.code, exc.title)
            if user is None:
                self._counters.v2_system_calls += 1
            else:
                self._counters.v2_calls_by_user[user.name] += 1
            self._call_log.append(
                CallRecord(user.name if user else "", method, path, query, scheme)
            )
            try:
                status, payload, extra = self._v2_route(user, method, path, query, headers)
            except ApiError as exc:
                if exc.status == 403:
                    self._counters.v2_forbidden += 1
                return self.error_reply(exc.status, exc.code, exc.title)
            return json_reply(status, payload, extra)

    def _answers_as_guest(self, method: str, path: str, credentials: V2Credentials) -> bool:
        """Whether whoami answers 200 with guest data instead of a 403 (a setting)."""
        return (
            self._settings.v2_dead_session_answer == "guest"
            and method == "GET"
            and path.rstrip("/") == API_V2_BASE + "/auth/whoami"
            # Only a dead or missing session: a bad API key is still refused.
            and credentials.api_key is None
        )

    def _v2_authenticate(self, credentials: V2Credentials) -> tuple[_User | None, str]:
        """The caller (``None`` for the system key) and the scheme; the lock is held."""
        if credentials.session is not None:
            session = self._sessions.get(credentials.session)
            if session is None or session.api != "v2":
                raise ApiError(403, "forbidden", "Session is invalid")
            return self._users[session.username], "session"
        key = credentials.api_key
        if key is None:
            raise ApiError(403, "forbidden", "Authorization required")
        if credentials.user is not None:
            user = self._users.get(credentials.user)
            if user is None or not hmac.compare_digest(user.api_key.encode(), key.encode()):
                raise ApiError(403, "forbidden", "Invalid API key")
            return user, "user-key"
        system_key = self._settings.system_api_key
        if system_key is None or not hmac.compare_digest(system_key.encode(), key.encode()):
            raise ApiError(403, "forbidden", "Invalid API key")
        return None, "system-key"

    def _v2_route(
        self, user: _User | None, method: str, path: str, query: str, headers: Mapping[str, str]
    ) -> tuple[int, object, tuple[tuple[str, str], ...]]:
        parts = [unquote(p) for p in path[len(API_V2_BASE) :].strip("/").split("/")]
        owners = list(self._users.values()) if user is None else [user]
        match parts:
            case ["auth", "whoami"]:
                _allow(method, "GET")
                if user is None:
                    return 200, {"login": None, "is_admin": True, "is_logged_in": True}, ()
                return 200, self._v2_user(user), ()
            case ["cameras"]:
                _allow(method, "GET")
                streams = [s for owner in owners for s in owner.streams.values()]
                try:
                    page = page_of_cameras(streams, query, headers)
                except ValueError as exc:
                    raise ApiError(400, "bad_request", str(exc)) from None
                paging = (("X-Page-Limit", str(page.limit)), ("X-Page-Offset", str(page.offset)))
                return 200, page.cameras, paging
            case ["cameras", name]:
                _allow(method, "GET")
                for owner in owners:
                    if name in owner.streams:
                        return 200, camera(owner.streams[name]), ()
                raise ApiError(404, "not_found", f"Camera {name!r} not found")
            case ["users"]:
                _allow(method, "GET")
                if user is not None and not user.is_admin:
                    raise ApiError(403, "forbidden", "Permission denied")
                return 200, [self._v2_user(u) for u in self._users.values()], ()
        raise ApiError(404, "not_found", "Not found")

    @staticmethod
    def _v2_user(user: _User) -> dict[str, Any]:
        return {
            "login": user.name,
            "is_admin": user.is_admin,
            "is_logged_in": True,
            "name": user.fullname,
            "email": user.email,
        }

    # Sessions; callers hold the lock.

    def _open_session(self, user: _User, session: _Session, settings: Settings, now: float) -> None:
        """Add ``session``, evicting the user's oldest ones beyond ``max_sessions``."""
        self._drop_expired(user, now)
        self._sessions[session.id] = session
        user.sessions[session.id] = session
        limit = user.max_sessions if user.max_sessions is not None else settings.max_sessions
        while limit is not None and len(user.sessions) > limit:
            self._end_session(next(iter(user.sessions.values())))
            self._counters.evicted_sessions += 1

    def _end_session(self, session: _Session) -> None:
        self._sessions.pop(session.id, None)
        self._refresh_tokens.pop(session.refresh_token, None)
        self._users[session.username].sessions.pop(session.id, None)

    def _drop_expired(self, user: _User, now: float) -> None:
        for session in [s for s in user.sessions.values() if s.refresh_expires_at <= now]:
            self._end_session(session)


def _new_api_key() -> str:
    return secrets.token_hex(16)


def _serial(jti: object) -> int:
    try:
        return int(str(jti).partition("-")[0])
    except ValueError:
        return 0


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed here")


def _parse_basic(credentials: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    username, _, password = decoded.partition(":")
    return username, password


def _seed_streams(user: _User, streams: int | list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if isinstance(streams, bool) or not isinstance(streams, (int, list)):
        raise TypeError("streams must be a count or a list of stream dicts")
    if isinstance(streams, int):
        return {
            s["name"]: s
            for s in (_stream(user, f"{user.name}-cam-{i}", f"Camera {i}") for i in range(streams))
        }
    seeded: dict[str, dict[str, Any]] = {}
    for given in streams:
        if not isinstance(given, dict) or not isinstance(given.get("name"), str):
            raise ValueError(f"each stream needs a str 'name': {given!r}")
        seeded[given["name"]] = {**_stream(user, given["name"], given["name"]), **given}
    return seeded


def _stream(user: _User, name: str, title: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "organization_id": user.id,
        "folder_id": user.folder_id,
        "stats": {
            "alive": True,
            "status": "running",
            "playback_token": secrets.token_urlsafe(16),
            "streaming_endpoint": STREAMING_ENDPOINT,
        },
    }


def _organization(user: _User) -> dict[str, Any]:
    return {"id": user.id, "title": f"{user.name} organization"}


def _folder(user: _User) -> dict[str, Any]:
    return {"id": user.folder_id, "organization_id": user.id, "title": "Cameras"}


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "bad_request", "Request body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "Request body must be a JSON object")
    return data


def _update_profile(user: _User, changes: dict[str, Any]) -> None:
    for name in ("fullname", "email", "phone", "note", "locale", "password"):
        if name in changes:
            if not isinstance(changes[name], str):
                raise ApiError(400, "bad_request", f"{name} must be a string")
            # "If blank stays unchanged", for the password.
            if name != "password" or changes[name]:
                setattr(user, name, changes[name])
    if "max_sessions" in changes:
        try:
            _check_max_sessions(changes["max_sessions"])
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        user.max_sessions = changes["max_sessions"]


def _list_streams(user: _User, query: str) -> dict[str, Any]:
    params = _query_params(query)
    position: dict[str, str] = {}
    if params.get("cursor"):
        position = _decode_cursor(params["cursor"])
    # A cursor remembers the query it came from; parameters sent again win.
    q = params.get("q", position.get("q", ""))
    raw_limit = params.get("limit", position.get("limit", "100"))
    try:
        limit = min(int(raw_limit), MAX_PAGE_SIZE)
    except (TypeError, ValueError):
        raise ApiError(400, "bad_request", "limit must be an integer") from None
    if limit < 1:
        raise ApiError(400, "bad_request", "limit must be at least 1")
    needle = str(q).lower()
    items = sorted(
        (
            s
            for s in user.streams.values()
            if needle in str(s.get("name", "")).lower() or needle in str(s.get("title", "")).lower()
        ),
        key=lambda s: str(s["name"]),
    )
    names = [str(s["name"]) for s in items]
    if _AFTER in position:
        start = bisect.bisect_right(names, position[_AFTER])
        end = start + limit
    elif _BEFORE in position:
        end = bisect.bisect_left(names, position[_BEFORE])
        start = max(0, end - limit)
    else:
        start, end = 0, limit
    page = items[start:end]
    next_cursor = prev_cursor = None
    if page and end < len(items):
        next_cursor = _encode_cursor({_AFTER: names[end - 1], "q": q, "limit": limit})
    if page and start > 0:
        prev_cursor = _encode_cursor({_BEFORE: names[start], "q": q, "limit": limit})
    return {
        "estimated_count": len(items),
        "next": next_cursor,
        "prev": prev_cursor,
        "timing": {},
        "streams": page,
    }


def _query_params(query: str) -> dict[str, str]:
    return dict(parse_qsl(query, keep_blank_values=True))


# What whoami shows for a dead or missing session when it answers 200: nobody logged in.
_V2_GUEST: dict[str, Any] = {"is_logged_in": False, "is_admin": False}

# Watcher's cursors are padded standard base64 of a query string, such as
# "JTI0cG9zaXRpb25fZ3Q9MQ==" for "%24position_gt=1"; the emulator orders by name.
_AFTER = "$name_gt"
_BEFORE = "$name_lt"


def _encode_cursor(position: dict[str, Any]) -> str:
    return base64.b64encode(urlencode(position).encode()).decode("ascii")


def _decode_cursor(cursor: str) -> dict[str, str]:
    # A client that put the cursor into the URL without encoding it turned "+" into " ".
    text = cursor.strip().replace(" ", "+")
    try:
        query = base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode()
    except (ValueError, binascii.Error):
        raise ApiError(400, "invalid_cursor", "cursor is invalid") from None
    fields = parse_qs(query, keep_blank_values=True)
    position = {name: values[-1] for name, values in fields.items()}
    if (_AFTER in position) == (_BEFORE in position):
        raise ApiError(400, "invalid_cursor", "cursor is invalid")
    return position
