"""Per-request cost of tracing and metrics: API only (no SDK), and with the SDK installed.

An in-process provider answers instantly, so the numbers are tokenhub's own CPU per request.
The baseline replaces the telemetry with empty stubs.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tokenhub import Hub
from tokenhub.providers import Capabilities

MESSAGES = [{"role": "user", "content": "Hello there, how are you?"}]
N = 3000


class Instant:
    def capabilities(self, model: str) -> Capabilities:
        return Capabilities()

    async def send(self, call: Any) -> Any:
        return call.response(text="hi", finish_reason="stop", usage=None)

    def stream(self, call: Any) -> Any:
        raise NotImplementedError

    def classify(self, status: int, headers: Any, body: bytes) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class _NullSpan:
    def is_recording(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


class NullTelemetry:
    """No telemetry at all: the floor the other rows are compared with."""

    def __getattr__(self, name: str) -> Any:
        return _NullCounter()

    def route(self, *a: Any, **k: Any) -> Any:
        return _NullSpan()

    def attempt(self, *a: Any, **k: Any) -> Any:
        return _NullSpan()


class _NullCounter:
    def add(self, *a: Any, **k: Any) -> None:
        pass


def make(kind: str) -> Hub:
    config = {"models": {"m": {"provider": "x"}}}
    if kind == "sdk":
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        hub = Hub.from_config(
            config,
            providers={"x": Instant()},
            tracer_provider=tp,
            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        )
    else:
        hub = Hub.from_config(config, providers={"x": Instant()})
    if kind == "none":
        hub._engine.telemetry = NullTelemetry()  # type: ignore[assignment]
    return hub


async def per_request_us(hub: Hub) -> float:
    for _ in range(200):
        await hub.chat(MESSAGES)
    samples = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(N):
            await hub.chat(MESSAGES)
        samples.append((time.process_time() - start) / N * 1e6)
    return statistics.median(samples)


async def main() -> None:
    rows = {kind: await per_request_us(make(kind)) for kind in ("none", "api", "sdk")}
    base = rows["none"]
    print("CPU per routed request (in-process provider), median of 5 x 3000")
    for kind, label in (
        ("none", "no telemetry (stubbed)"),
        ("api", "OpenTelemetry API only"),
        ("sdk", "SDK, in-memory exporters"),
    ):
        print(f"{label:<28}{rows[kind]:>8.1f} µs  (+{rows[kind] - base:.1f} µs)")


if __name__ == "__main__":
    anyio.run(main)
