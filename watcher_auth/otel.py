"""OpenTelemetry metrics and spans for a token manager (extra ``otel``).

:func:`instrument` listens to a :class:`~watcher_auth.TokenManager` or
:class:`~watcher_auth.AsyncTokenManager` and turns its events into metrics and spans::

    from watcher_auth.otel import instrument

    instrumentation = instrument(manager)  # the global meter and tracer providers
    ...
    instrumentation.uninstrument()

Metrics, each with the attributes ``watcher.server``, ``watcher.api`` and
``watcher.user_key_hash``:

- ``watcher_auth.logins`` (``{login}``): password logins that stored a record;
- ``watcher_auth.refreshes`` (``{refresh}``): refreshes that stored a new pair;
- ``watcher_auth.refresh_rejections`` (``{refresh}``): refresh tokens Watcher refused;
- ``watcher_auth.reauthentications`` (``{record}``): records deleted because the person has
  to connect again;
- ``watcher_auth.disconnects`` (``{record}``): records deleted on request;
- ``watcher_auth.unauthorized_retries`` (``{call}``): calls Watcher answered 401 (v3) or 403
  (v2), retried once;
- ``watcher_auth.store_errors`` (``{error}``): token store failures, with ``error.type``;
- ``watcher_auth.login.duration``, ``watcher_auth.refresh.duration`` and
  ``watcher_auth.lock.wait_time`` (histograms, ``s``).

Spans: ``watcher_auth.login`` and ``watcher_auth.refresh``, made after the fact from the
event's duration (a rejected refresh gets status ``ERROR``), children of whatever span is
current when the manager reports (a web request's, typically).

No attribute carries a token, a password, a username or, unless asked, the user key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol
from weakref import WeakKeyDictionary

from watcher_auth import __version__
from watcher_auth._events import EventType, Listener, WatcherEvent
from watcher_auth._exceptions import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = [
    "SCOPE",
    "Instrumentation",
    "UserKeyAttribute",
    "instrument",
    "parse_setting",
    "user_key_hash",
]

#: The instrumentation scope name of every meter and tracer this module makes.
SCOPE = "watcher_auth"

#: How the user key appears in attributes: ``"hash"`` (``watcher.user_key_hash``),
#: ``"raw"`` (``watcher.user_key``) or ``"omit"`` (not at all).
UserKeyAttribute = Literal["hash", "raw", "omit"]

# Logins and refreshes take from milliseconds (a near Watcher) to the deadline (30 s).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_COUNTERS: dict[EventType, tuple[str, str, str]] = {
    EventType.CONNECTED: (
        "watcher_auth.logins",
        "{login}",
        "Password logins that stored a record.",
    ),
    EventType.REFRESHED: (
        "watcher_auth.refreshes",
        "{refresh}",
        "Refreshes that stored a new token pair.",
    ),
    EventType.REFRESH_REJECTED: (
        "watcher_auth.refresh_rejections",
        "{refresh}",
        "Refresh tokens (or API v2 sessions) Watcher refused.",
    ),
    EventType.REAUTHENTICATION_REQUIRED: (
        "watcher_auth.reauthentications",
        "{record}",
        "Records deleted because the person has to connect again.",
    ),
    EventType.DISCONNECTED: (
        "watcher_auth.disconnects",
        "{record}",
        "Records deleted on request.",
    ),
    EventType.UNAUTHORIZED_RETRY: (
        "watcher_auth.unauthorized_retries",
        "{call}",
        "API calls Watcher answered 401 (v3) or 403 (v2), retried once.",
    ),
    EventType.STORE_ERROR: (
        "watcher_auth.store_errors",
        "{error}",
        "Token store failures, by error.type.",
    ),
}

_HISTOGRAMS: dict[EventType, tuple[str, str]] = {
    EventType.CONNECTED: (
        "watcher_auth.login.duration",
        "Duration of password logins that report it.",
    ),
    EventType.REFRESHED: ("watcher_auth.refresh.duration", "Duration of refresh requests."),
    EventType.LOCK_WAITED: ("watcher_auth.lock.wait_time", "Time spent waiting for a key's lock."),
}

_SPANS: dict[EventType, str] = {
    EventType.CONNECTED: "watcher_auth.login",
    EventType.REFRESHED: "watcher_auth.refresh",
    EventType.REFRESH_REJECTED: "watcher_auth.refresh",
}


class _Manager(Protocol):
    def add_listener(self, listener: Listener) -> None: ...

    def remove_listener(self, listener: Listener) -> None: ...


def user_key_hash(key: str, salt: str | bytes | None = None) -> str:
    """The first 16 hex digits of the SHA-256 of ``key`` (an HMAC with ``salt``, if given).

    This is what ``watcher.user_key_hash`` carries, so an operator can find one user's
    metrics and spans by computing it. Short keys (a primary key) can be found from their
    plain hash by trying them all; a ``salt`` kept secret prevents that.
    """
    data = key.encode("utf-8")
    if salt is None:
        return hashlib.sha256(data).hexdigest()[:16]
    secret = salt.encode("utf-8") if isinstance(salt, str) else salt
    return hmac.new(secret, data, hashlib.sha256).hexdigest()[:16]


@dataclass
class _Instruments:
    counters: dict[EventType, Counter]
    histograms: dict[EventType, Histogram]


# One set per meter provider: creating an instrument twice under one name makes the SDK
# warn, and a manager is rebuilt whenever Django's settings change.
_instruments: WeakKeyDictionary[MeterProvider, _Instruments] = WeakKeyDictionary()
_instruments_lock = threading.Lock()


def _instruments_of(provider: MeterProvider) -> _Instruments:
    with _instruments_lock:
        found = _instruments.get(provider)
        if found is None:
            found = _instruments[provider] = _create_instruments(provider)
        return found


def _create_instruments(provider: MeterProvider) -> _Instruments:
    meter = provider.get_meter(SCOPE, __version__)
    return _Instruments(
        counters={
            event_type: meter.create_counter(name, unit=unit, description=description)
            for event_type, (name, unit, description) in _COUNTERS.items()
        },
        histograms={
            event_type: meter.create_histogram(
                name,
                unit="s",
                description=description,
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )
            for event_type, (name, description) in _HISTOGRAMS.items()
        },
    )


class Instrumentation:
    """A manager's OpenTelemetry listener, as returned by :func:`instrument`."""

    def __init__(
        self,
        manager: _Manager,
        meter_provider: MeterProvider,
        tracer: Tracer,
        *,
        user_key: UserKeyAttribute,
        salt: str | bytes | None,
    ) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._manager: _Manager | None = manager
        self._instruments = _instruments_of(meter_provider)
        self._tracer = tracer
        self._user_key = user_key
        self._salt = salt
        self._kind = SpanKind.INTERNAL
        self._rejected = Status(StatusCode.ERROR, "Watcher refused the refresh token")
        manager.add_listener(self._on_event)

    def uninstrument(self) -> None:
        """Stop recording this manager's events (again: nothing happens)."""
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.remove_listener(self._on_event)

    def attributes(self, event: WatcherEvent) -> dict[str, str]:
        """The attributes of ``event``'s metrics and spans."""
        attributes = {"watcher.server": event.server, "watcher.api": event.api}
        if self._user_key == "hash":
            attributes["watcher.user_key_hash"] = user_key_hash(event.key, self._salt)
        elif self._user_key == "raw":
            attributes["watcher.user_key"] = event.key
        return attributes

    def _on_event(self, event: WatcherEvent) -> None:
        attributes = self.attributes(event)
        counter = self._instruments.counters.get(event.type)
        if counter is not None:
            counted = attributes
            if event.type is EventType.STORE_ERROR:
                counted = {**attributes, "error.type": event.error or "StoreError"}
            counter.add(1, counted)
        histogram = self._instruments.histograms.get(event.type)
        duration = _seconds(event.duration)
        if histogram is not None and duration is not None:
            histogram.record(duration, attributes)
        span_name = _SPANS.get(event.type)
        if span_name is not None:
            self._span(span_name, event, attributes, duration or 0.0)

    def _span(
        self, name: str, event: WatcherEvent, attributes: dict[str, str], duration: float
    ) -> None:
        # The event comes when the step is over: the span is drawn back to its start.
        end = time.time_ns()
        span = self._tracer.start_span(
            name,
            kind=self._kind,
            attributes=attributes,
            start_time=end - int(duration * 1e9),
        )
        if event.type is EventType.REFRESH_REJECTED:
            span.set_attribute("error.type", "refresh_rejected")
            span.set_status(self._rejected)
        span.end(end_time=end)

    def __repr__(self) -> str:
        state = "active" if self._manager is not None else "uninstrumented"
        return f"<Instrumentation {state}, user key {self._user_key}>"


def _seconds(duration: float | None) -> float | None:
    # A test's fake clock may stand still or go back while a step runs.
    return None if duration is None else max(0.0, duration)


def instrument(
    manager: _Manager,
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    user_key: UserKeyAttribute = "hash",
    user_key_salt: str | bytes | None = None,
) -> Instrumentation:
    """Record ``manager``'s events as OpenTelemetry metrics and spans.

    Args:
        manager: a :class:`~watcher_auth.TokenManager` or
            :class:`~watcher_auth.AsyncTokenManager`.
        meter_provider: where metrics go; default: the global one.
        tracer_provider: where spans go; default: the global one.
        user_key: ``"hash"`` (default) adds ``watcher.user_key_hash``
            (:func:`user_key_hash`), ``"raw"`` adds the key itself as ``watcher.user_key``,
            ``"omit"`` adds neither (one time series per server and API, whatever the
            number of users).
        user_key_salt: a secret that makes the hash an HMAC (see :func:`user_key_hash`).

    Raises:
        ConfigurationError: OpenTelemetry is not installed, or ``user_key`` is unknown.
    """
    if user_key not in ("hash", "raw", "omit"):
        raise ConfigurationError(f"user_key must be 'hash', 'raw' or 'omit', not {user_key!r}")
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        raise ConfigurationError(
            "OpenTelemetry is not installed: pip install 'watcher-auth[otel]'"
        ) from None
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
    return Instrumentation(manager, provider, tracer, user_key=user_key, salt=user_key_salt)


def parse_setting(value: object, *, setting: str) -> UserKeyAttribute | None:
    """Read a framework's OpenTelemetry setting: ``None`` for off, else the user key mode.

    ``False`` or ``None`` is off; ``True`` is ``"hash"``; ``"hash"``, ``"raw"`` and ``"omit"``
    are the modes of :func:`instrument`.

    Raises:
        ConfigurationError: any other value; the message names ``setting``.
    """
    if value is None or value is False:
        return None
    if value is True:
        return "hash"
    if value == "hash" or value == "raw" or value == "omit":
        return value
    raise ConfigurationError(f"{setting} must be True, False, 'hash', 'raw' or 'omit'")
