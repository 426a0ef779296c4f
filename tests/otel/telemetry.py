"""What an operator's OpenTelemetry collector would receive, read back in tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from watcher_auth.otel import Instrumentation, instrument

_global: Telemetry | None = None
_global_lock = threading.Lock()


@dataclass
class Telemetry:
    """An SDK meter provider and tracer provider that keep everything in memory."""

    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    tracer_provider: TracerProvider

    @classmethod
    def create(cls) -> Telemetry:
        reader = InMemoryMetricReader()
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(reader, exporter, MeterProvider(metric_readers=[reader]), tracer_provider)

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()

    def instrument(self, manager: Any, **options: Any) -> Instrumentation:
        return instrument(
            manager,
            meter_provider=self.meter_provider,
            tracer_provider=self.tracer_provider,
            **options,
        )

    def points(self, server: str | None = None) -> dict[str, list[Any]]:
        """Every data point (of one Watcher server's, if given), by metric name."""
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                if scope.scope.name != "watcher_auth":
                    continue  # the global provider also serves other instrumentation
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        if server is None or point.attributes["watcher.server"] == server:
                            found.setdefault(metric.name, []).append(point)
        return found

    def counts(self, server: str | None = None) -> dict[str, int]:
        """Each counter's total and each histogram's number of recordings."""
        return {
            name: sum(p.value if hasattr(p, "value") else p.count for p in points)
            for name, points in self.points(server).items()
        }

    def spans(self, server: str | None = None) -> list[ReadableSpan]:
        return [
            span
            for span in self.exporter.get_finished_spans()
            if server is None or (span.attributes or {}).get("watcher.server") == server
        ]


def global_telemetry() -> Telemetry:
    """The process's global providers, set once (OpenTelemetry refuses to replace them).

    Tests read them filtered by their emulator's URL, which no other test shares.
    """
    global _global
    with _global_lock:
        if _global is None:
            _global = Telemetry.create()
            metrics.set_meter_provider(_global.meter_provider)
            trace.set_tracer_provider(_global.tracer_provider)
        return _global
