"""The emulator's HTTP side: the threaded server, its handler, and the two control classes.

Public names are re-exported by :mod:`watcher_auth.testing.emulator`; the CLI lives there too,
so ``python -m watcher_auth.testing.emulator`` does not import its own module twice.
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import http
import ipaddress
import json
import logging
import os
import secrets
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization

from watcher_auth.testing._emulator_state import (
    API_BASE,
    API_V2_BASE,
    CallRecord,
    EmulatorState,
    EmulatorStats,
    Reply,
    Settings,
    json_reply,
    signing_key,
)
from watcher_auth.testing._emulator_v2 import credentials_from_headers

__all__ = [
    "CONTROL_PREFIX",
    "CONTROL_TOKEN_ENV",
    "CONTROL_TOKEN_HEADER",
    "RemoteEmulator",
    "WatcherEmulator",
]

logger = logging.getLogger("watcher_auth.testing.emulator")

CONTROL_PREFIX = "/_emulator/"
#: The header that carries the control token on every ``/_emulator/`` request.
CONTROL_TOKEN_HEADER = "X-Emulator-Control-Token"
#: Where the command line and :class:`RemoteEmulator` look for a control token.
CONTROL_TOKEN_ENV = "WATCHER_EMULATOR_CONTROL_TOKEN"
MAX_BODY = 10 * 1024 * 1024
_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
# What a cut-off login answer starts with: headers promise more than this.
_PARTIAL_BODY = b'{"access_token": "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3'


class _Drop(Exception):
    """Close the connection without a (complete) answer."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive clients hold handler threads open; stop() closes their sockets instead.
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: EmulatorState, control_token: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.state = state
        self.control_token = control_token
        self.stop_event = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-request are normal here (timeouts, failure tests).
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "WatcherEmulator/1.0"
    # Headers and body go out in one write, but small answers must not wait for Nagle.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: request lines may carry secrets; :meth:`_dispatch` logs safely."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        now = self.server.state.settings.now() if timestamp is None else timestamp
        return email.utils.formatdate(now, usegmt=True)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        logger.debug("%s %s", self.command, url.path)
        try:
            body = self._read_body()
            if url.path.startswith(CONTROL_PREFIX):
                refusal = self._control_refusal(body)
                if refusal is not None:
                    reply = refusal
                else:
                    reply = _control(self.server.state, self.command, url.path, body)
            elif url.path == API_BASE or url.path.startswith(API_BASE + "/"):
                reply = self._api(url.path, url.query, body)
            elif url.path == API_V2_BASE or url.path.startswith(API_V2_BASE + "/"):
                reply = self._api_v2(url.path, url.query, body)
            else:
                reply = self.server.state.error_reply(404, "not_found", "Not found")
        except _Drop:
            self.close_connection = True
            return
        except Exception:
            logger.exception("emulator failed on %s %s", self.command, url.path)
            reply = self.server.state.error_reply(500, "internal_error", "Emulator error")
        self._send(reply)

    def _control_refusal(self, body: bytes) -> Reply | None:
        """Why a ``/_emulator/`` request is refused, or ``None`` when it may go ahead.

        The control endpoints hand out keys and rewrite the server, so they answer only a
        caller that holds this run's token. A web page in a browser on the same machine
        cannot set that header, cannot send JSON cross-origin without a preflight the
        emulator never grants, and cannot make its own host name (DNS rebinding) pass the
        ``Host`` check.
        """
        if not _host_matches(self.headers.get("Host", ""), self.server):
            return json_reply(403, {"error": "the Host header is not this emulator's address"})
        token = self.headers.get(CONTROL_TOKEN_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.server.control_token.encode()):
            return json_reply(403, {"error": f"a valid {CONTROL_TOKEN_HEADER} header is needed"})
        media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if (self.command != "GET" or body) and media_type != "application/json":
            return json_reply(415, {"error": "control requests carry application/json"})
        return None

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(self.server.state.error_reply(400, "bad_request", "Bad Content-Length"))
            raise _Drop
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
            except ValueError:
                raise _Drop from None
            if size == 0:
                while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise _Drop
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _api(self, path: str, query: str, body: bytes) -> Reply:
        state = self.server.state
        settings = state.settings
        self._wait(settings.latency)
        authorization = self.headers.get("Authorization")
        is_login = path.rstrip("/") == API_BASE + "/login"
        if not is_login:
            target = "call"
        elif (authorization or "").strip().lower().startswith("bearer"):
            target = "refresh"
            self._wait(settings.refresh_latency)
        else:
            target = "login"

        def answer() -> Reply:
            if not is_login:
                return state.call(self.command, path, query, authorization, body)
            if self.command == "POST":
                return state.login(authorization)
            return state.error_reply(405, "method_not_allowed", "Use POST")

        return self._unless_failing(target, answer)

    def _api_v2(self, path: str, query: str, body: bytes) -> Reply:
        state = self.server.state
        self._wait(state.settings.latency)
        if path.rstrip("/") == API_V2_BASE + "/auth/login":
            return self._unless_failing("v2_login", lambda: state.v2_login(self.command, body))
        # Header names are case-insensitive: the state sees them lower-cased.
        headers = {name.lower(): value for name, value in self.headers.items()}
        credentials = credentials_from_headers(headers)
        return self._unless_failing(
            "v2_call", lambda: state.v2_call(self.command, path, query, credentials, headers)
        )

    def _unless_failing(self, target: str, answer: Callable[[], Reply]) -> Reply:
        """``answer()``, unless a failure was queued for ``target`` with ``fail_next``."""
        mode = self.server.state.take_failure(target)
        if mode is not None and mode not in ("hang", "process_then_drop", "drip"):
            return self._failure(mode, target)
        if mode == "hang":
            self._wait(self.server.state.settings.hang_seconds)
        reply = answer()
        if mode == "process_then_drop":
            raise _Drop
        if mode == "drip":
            self._drip(reply)
            raise _Drop  # answered in full; the connection is closed after it
        return reply

    def _drip(self, reply: Reply) -> None:
        """Send ``reply`` in four pieces, the whole taking ``hang_seconds``: headers first,
        then the body with a pause before each piece."""
        body = reply.body
        self.close_connection = True
        self.wfile.write(self._head(reply.status, reply.content_type, len(body), reply.headers))
        self.wfile.flush()
        step = -(-len(body) // 3) or 1
        for start in range(0, len(body), step):
            self._wait(self.server.state.settings.hang_seconds / 3)
            self.wfile.write(body[start : start + step])
            self.wfile.flush()

    def _failure(self, mode: str, target: str) -> Reply:
        state = self.server.state
        if mode == "401":
            return state.injected_401(target)
        if mode == "403":
            return state.injected_403(target)
        if mode == "500":
            return state.error_reply(500, "internal_error", "Internal server error")
        if mode == "503":
            return state.error_reply(503, "service_unavailable", "Service unavailable")
        if mode == "502_html":
            return Reply(502, _BAD_GATEWAY_HTML, "text/html")
        if mode == "non_json":
            return Reply(200, b"not json", "text/plain")
        if mode == "bad_jwt":
            return json_reply(
                200, {"access_token": "not-a-jwt", "refresh_token": str(uuid.uuid4())}
            )
        if mode == "reset_mid_body":
            head = self._head(200, "application/json", len(_PARTIAL_BODY) + 200)
            self.wfile.write(head + _PARTIAL_BODY)
        raise _Drop

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.server.stop_event.wait(seconds):
            raise _Drop

    def _head(
        self,
        status: int,
        content_type: str,
        length: int,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {length}")
        lines.extend(f"{name}: {value}" for name, value in extra)
        if self.server.state.settings.send_date_header:
            lines.append(f"Date: {self.date_time_string()}")
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, reply: Reply) -> None:
        head = self._head(reply.status, reply.content_type, len(reply.body), reply.headers)
        self.wfile.write(head + reply.body)


def _host_matches(host_header: str, server: _Server) -> bool:
    """Whether ``Host`` names the address the server listens on (with its port)."""
    try:
        parts = urlsplit("//" + host_header.strip())
        name, port = parts.hostname, parts.port
    except ValueError:
        return False
    if name is None or (port or 80) != server.server_port:
        return False
    listening = str(server.server_name).lower()
    if name.lower() == listening:
        return True
    try:
        listening_ip = ipaddress.ip_address(listening)
    except ValueError:
        return False
    if name.lower() == "localhost":
        return listening_ip.is_loopback
    try:
        named_ip = ipaddress.ip_address(name)
    except ValueError:
        # A name other than localhost is what DNS rebinding sends.
        return False
    # Listening on every address: any of them, but never a name.
    return listening_ip.is_unspecified or named_ip == listening_ip


def _control(state: EmulatorState, method: str, path: str, body: bytes) -> Reply:
    """The ``/_emulator/`` endpoints: the remote side of :class:`RemoteEmulator`."""
    action = path[len(CONTROL_PREFIX) :].strip("/")
    try:
        data = json.loads(body) if body.strip() else {}
        if not isinstance(data, dict):
            raise TypeError("the body must be a JSON object")
        if method == "GET" and action == "stats":
            return json_reply(200, state.stats().to_dict())
        if method == "GET" and action == "call-log":
            return json_reply(200, {"calls": state.call_log()})
        if method == "GET" and action == "settings":
            return json_reply(200, state.settings.to_json())
        if method != "POST":
            return json_reply(404, {"error": f"no control endpoint {method} {path}"})
        if action == "reset-stats":
            state.reset_stats()
            return json_reply(200, {})
        if action == "revoke":
            return json_reply(200, {"revoked": state.revoke(data["username"])})
        if action == "revoke-access-tokens":
            return json_reply(200, {"revoked": state.revoke_access_tokens(data["username"])})
        if action == "fail":
            state.fail_next(data["target"], data.get("count", 1), data.get("mode", "500"))
            return json_reply(200, {})
        if action == "configure":
            if {"clock", "host", "port"} & data.keys():
                raise ValueError("clock, host and port cannot be set remotely")
            return json_reply(200, state.configure(data).to_json())
        if action == "users":
            state.add_user(**data)
            return json_reply(200, {})
        if action == "api-key":
            return json_reply(200, {"api_key": state.api_key(data["username"])})
        if action == "rotate-api-key":
            return json_reply(200, {"api_key": state.rotate_api_key(data["username"])})
        if action == "clock":
            return json_reply(200, {"server_time": state.advance_clock(data["advance"])})
    except KeyError as exc:
        return json_reply(404, {"error": f"not found: {exc}"})
    except (TypeError, ValueError) as exc:
        return json_reply(400, {"error": str(exc)})
    return json_reply(404, {"error": f"no control endpoint {method} {path}"})


class WatcherEmulator:
    """An emulated Watcher server (client API v3 and API v2) listening on loopback.

    Every keyword argument is also a run-time setting that :meth:`configure` changes.

    Args:
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one.
        clock: Wall clock in unix seconds; pass a :class:`FakeClock` to move time by hand.
        access_lifetime: Seconds an access token lives (its ``exp``).
        refresh_lifetime: Seconds a refresh token, and so its session, lives.
        rotate_refresh_tokens: Refresh hands out a new refresh token and kills the old one.
        max_sessions: Sessions a user may hold (for users without their own limit);
            a login beyond it evicts the user's oldest session. None means no limit.
        server_clock_offset: The server's clock runs this many seconds ahead of ``clock``;
            it sets ``iat``/``exp``, checks expiry and writes the ``Date`` header.
        latency: Seconds to wait before answering any API request.
        refresh_latency: Extra seconds to wait before answering a refresh.
        include_iat: Access tokens carry ``iat``.
        send_date_header: Answers carry a ``Date`` header.
        legacy_error_field: Error bodies also carry a top-level ``"error"`` like older servers.
        hang_seconds: How long the ``"hang"`` failure mode waits (and ``"drip"`` drips).
        system_api_key: The API v2 system key (``x-vsaas-api-key`` with super-admin rights);
            a random one when not given, readable as :attr:`system_api_key`.
        v2_dead_session_answer: How API v2 ``GET /auth/whoami`` answers a dead or missing
            session: ``"403"``, or ``"guest"`` (200 with ``{"is_logged_in": false, ...}``
            and no ``login``), which Watcher's documentation also allows.
        control_token: The token the ``/_emulator/`` control endpoints require (header
            ``X-Emulator-Control-Token``); a random one when not given, readable as
            :attr:`control_token`. It is not a setting: :meth:`configure` cannot change it.

    Example::

        emu = WatcherEmulator(clock=FakeClock(), rotate_refresh_tokens=True)
        emu.add_user("alice", "secret")
        with emu:
            requests.post(emu.v3_url + "/login", auth=("alice", "secret"))
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        access_lifetime: float = 300.0,
        refresh_lifetime: float = 30 * 86400.0,
        rotate_refresh_tokens: bool = False,
        max_sessions: int | None = None,
        server_clock_offset: float = 0.0,
        latency: float = 0.0,
        refresh_latency: float = 0.0,
        include_iat: bool = True,
        send_date_header: bool = True,
        legacy_error_field: bool = False,
        hang_seconds: float = 5.0,
        system_api_key: str | None = None,
        v2_dead_session_answer: str = "403",
        control_token: str | None = None,
    ) -> None:
        if control_token is not None and (
            not isinstance(control_token, str) or len(control_token.strip()) < 16
        ):
            raise ValueError("control_token must be a str of at least 16 characters")
        self._control_token = control_token or secrets.token_urlsafe(32)
        self._state = EmulatorState(Settings())
        self._state.configure(
            {
                "host": host,
                "port": port,
                "clock": clock,
                "access_lifetime": access_lifetime,
                "refresh_lifetime": refresh_lifetime,
                "rotate_refresh_tokens": rotate_refresh_tokens,
                "max_sessions": max_sessions,
                "server_clock_offset": server_clock_offset,
                "latency": latency,
                "refresh_latency": refresh_latency,
                "include_iat": include_iat,
                "send_date_header": send_date_header,
                "legacy_error_field": legacy_error_field,
                "hang_seconds": hang_seconds,
                "system_api_key": system_api_key or secrets.token_urlsafe(24),
                "v2_dead_session_answer": v2_dead_session_answer,
            }
        )
        self._lifecycle_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WatcherEmulator:
        """Start serving in a background thread; returns ``self``."""
        with self._lifecycle_lock:
            if self._server is not None:
                raise RuntimeError("the emulator is already running")
            signing_key()  # Made now, so the first login is not the slow one.
            settings = self._state.settings
            server = _Server((settings.host, settings.port), self._state, self._control_token)
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"watcher-emulator-{server.server_port}",
                daemon=True,
            )
            self._thread.start()
            self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection. Users and sessions are kept."""
        with self._lifecycle_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            server.stop_event.set()
            server.shutdown()
            server.close_connections()
            server.server_close()
            if thread is not None:
                thread.join()

    def __enter__(self) -> WatcherEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        server = self._server
        if server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return server.server_port

    @property
    def url(self) -> str:
        """The server's root, like ``http://127.0.0.1:8080``."""
        host = self._state.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def v3_url(self) -> str:
        """The client API v3 base URL."""
        return self.url + API_BASE

    @property
    def v2_url(self) -> str:
        """The API v2 base URL."""
        return self.url + API_V2_BASE

    @property
    def system_api_key(self) -> str | None:
        """The API v2 system key (``None`` after ``configure(system_api_key=None)``)."""
        return self._state.settings.system_api_key

    @property
    def control_token(self) -> str:
        """The token this emulator's ``/_emulator/`` control endpoints require."""
        return self._control_token

    def remote(self, *, timeout: float = 10.0) -> RemoteEmulator:
        """A :class:`RemoteEmulator` for this running emulator, holding its control token."""
        return RemoteEmulator(self.url, control_token=self._control_token, timeout=timeout)

    def user_api_key(self, username: str) -> str:
        """The user's API v2 key, for ``x-vsaas-api-key`` with ``x-vsaas-user``.

        Raises:
            KeyError: There is no such user.
        """
        return self._state.api_key(username)

    def rotate_api_key(self, username: str) -> str:
        """Give the user a new API v2 key (the old one stops working); returns it.

        Raises:
            KeyError: There is no such user.
        """
        return self._state.rotate_api_key(username)

    @property
    def public_key_pem(self) -> str:
        """The PEM public key that verifies access tokens (clients never need it)."""
        return (
            signing_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the counters; see :class:`EmulatorStats`."""
        return self._state.stats()

    def reset_stats(self) -> None:
        """Zero the counters and clear :attr:`call_log`."""
        self._state.reset_stats()

    @property
    def call_log(self) -> list[CallRecord]:
        """Authorized calls answered, oldest first (the last 200 000)."""
        return self._state.call_log()

    def issued_secrets(self) -> frozenset[str]:
        """Every secret the emulator knows or has handed out, for leak checks.

        Passwords and API v2 keys of its users, the system key, the control token, and
        every access token, refresh token and session id it issued (rotated and ended ones
        included).
        """
        return self._state.secrets() | {self._control_token}

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
        """Create a user, or update one that exists (keeping its sessions).

        Args:
            username: Login name, without ``:``.
            password: The password for HTTP Basic login.
            fullname: Profile full name.
            email: Profile email.
            is_admin: May list ``/users`` and see every organization.
            max_sessions: This user's own session limit.
            streams: A count of streams named ``f"{username}-cam-{i}"`` to seed (3 for a
                new user), or stream dicts (each with a ``name``). None keeps what exists.
                API v2 shows the same streams as cameras.
            api_key: The user's API v2 key; a new user gets a random one when not given
                (see :meth:`user_api_key`). None keeps what exists.
        """
        self._state.add_user(
            username,
            password,
            fullname=fullname,
            email=email,
            is_admin=is_admin,
            max_sessions=max_sessions,
            streams=streams,
            api_key=api_key,
        )

    def revoke(self, username: str) -> int:
        """End all the user's sessions (v3 and v2), as an admin would; returns how many ended.

        Raises:
            KeyError: There is no such user.
        """
        return self._state.revoke(username)

    def revoke_access_tokens(self, username: str) -> int:
        """Kill the user's access tokens issued so far, keeping sessions and refresh tokens.

        The next call with such a token gets 401 and a refresh works: what a client sees
        when a token dies early. Returns how many sessions were affected.

        Raises:
            KeyError: There is no such user.
        """
        return self._state.revoke_access_tokens(username)

    def fail_next(self, target: str, count: int = 1, mode: str = "500") -> None:
        """Make the next ``count`` requests of a kind fail.

        Args:
            target: ``"login"`` (password), ``"refresh"``, ``"call"`` (any other v3 request),
                ``"v2_login"`` (API v2 ``/auth/login``) or ``"v2_call"`` (any other v2 request).
            count: How many requests fail; failures queue up in order.
            mode: ``"401"`` (v3 only; counted in ``unauthorized`` for calls), ``"403"``
                (permission denied, with a JSON:API error body; counted in ``forbidden`` for
                v3 calls and in ``v2_forbidden`` for v2 calls), ``"500"``,
                ``"502_html"``, ``"503"``, ``"drop"``, ``"reset_mid_body"``,
                ``"hang"`` (wait ``hang_seconds``, then answer), ``"drip"`` (answer, the
                body in three pieces over ``hang_seconds``), ``"non_json"``,
                ``"bad_jwt"`` (login and refresh only) or ``"process_then_drop"`` (do the
                work, then close without answering).
        """
        self._state.fail_next(target, count, mode)

    def configure(self, **settings: Any) -> None:
        """Change settings (the constructor's keyword arguments) while running."""
        if self.running and {"host", "port"} & settings.keys():
            raise RuntimeError("host and port cannot change while the emulator runs")
        self._state.configure(settings)

    def advance_clock(self, seconds: float) -> float:
        """Move the server's clock (``server_clock_offset``) forward; returns server time."""
        return self._state.advance_clock(seconds)

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<WatcherEmulator {where}>"


class RemoteEmulator:
    """Drives an emulator in another process through its ``/_emulator/`` endpoints.

    It has the same control methods as :class:`WatcherEmulator`, so tests can take either.

    Args:
        url: The emulator's root URL, like ``http://127.0.0.1:8080``.
        control_token: The emulator's control token (printed by the command line at start,
            :attr:`WatcherEmulator.control_token` in-process); when not given, the
            ``WATCHER_EMULATOR_CONTROL_TOKEN`` environment variable.
        timeout: Seconds to wait for each control request.

    Raises:
        ValueError: No control token was given and the environment has none.
    """

    def __init__(
        self, url: str, control_token: str | None = None, *, timeout: float = 10.0
    ) -> None:
        token = control_token or os.environ.get(CONTROL_TOKEN_ENV, "").strip()
        if not token:
            raise ValueError(
                "RemoteEmulator needs the emulator's control token: pass control_token= (the "
                f"command line prints it at start) or set {CONTROL_TOKEN_ENV}"
            )
        self.url = url.rstrip("/")
        self.v3_url = self.url + API_BASE
        self.v2_url = self.url + API_V2_BASE
        self.timeout = timeout
        self._control_token = token

    def _request(self, method: str, action: str, payload: dict[str, Any] | None = None) -> Any:
        response = requests.request(
            method,
            self.url + CONTROL_PREFIX + action,
            # Every POST carries a JSON body: the emulator refuses control requests without one.
            json=payload if payload is not None or method == "GET" else {},
            headers={CONTROL_TOKEN_HEADER: self._control_token},
            timeout=self.timeout,
        )
        if response.status_code == 403:
            raise PermissionError(
                f"the emulator at {self.url} refused the control request: "
                f"{response.json().get('error', response.status_code)}"
            )
        if response.status_code == 404 and "error" in response.json():
            raise KeyError(response.json()["error"])
        if response.status_code == 400:
            raise ValueError(response.json()["error"])
        response.raise_for_status()
        return response.json()

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the remote counters."""
        return EmulatorStats.from_dict(self._request("GET", "stats"))

    def reset_stats(self) -> None:
        """Zero the remote counters and clear the call log."""
        self._request("POST", "reset-stats")

    @property
    def call_log(self) -> list[CallRecord]:
        """Authorized calls the remote emulator answered."""
        return [CallRecord(*record) for record in self._request("GET", "call-log")["calls"]]

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
        """See :meth:`WatcherEmulator.add_user`."""
        self._request(
            "POST",
            "users",
            {
                "username": username,
                "password": password,
                "fullname": fullname,
                "email": email,
                "is_admin": is_admin,
                "max_sessions": max_sessions,
                "streams": streams,
                "api_key": api_key,
            },
        )

    @property
    def system_api_key(self) -> str | None:
        """See :attr:`WatcherEmulator.system_api_key`."""
        key = self._request("GET", "settings")["system_api_key"]
        return key if isinstance(key, str) else None

    def user_api_key(self, username: str) -> str:
        """See :meth:`WatcherEmulator.user_api_key`."""
        return str(self._request("POST", "api-key", {"username": username})["api_key"])

    def rotate_api_key(self, username: str) -> str:
        """See :meth:`WatcherEmulator.rotate_api_key`."""
        return str(self._request("POST", "rotate-api-key", {"username": username})["api_key"])

    def revoke(self, username: str) -> int:
        """See :meth:`WatcherEmulator.revoke`."""
        return int(self._request("POST", "revoke", {"username": username})["revoked"])

    def revoke_access_tokens(self, username: str) -> int:
        """See :meth:`WatcherEmulator.revoke_access_tokens`."""
        payload = {"username": username}
        return int(self._request("POST", "revoke-access-tokens", payload)["revoked"])

    def fail_next(self, target: str, count: int = 1, mode: str = "500") -> None:
        """See :meth:`WatcherEmulator.fail_next`."""
        self._request("POST", "fail", {"target": target, "count": count, "mode": mode})

    def configure(self, **settings: Any) -> None:
        """See :meth:`WatcherEmulator.configure`; ``clock`` cannot be sent."""
        self._request("POST", "configure", settings)

    def advance_clock(self, seconds: float) -> float:
        """See :meth:`WatcherEmulator.advance_clock`."""
        return float(self._request("POST", "clock", {"advance": seconds})["server_time"])

    def __repr__(self) -> str:
        return f"<RemoteEmulator {self.url}>"
