"""Traces, metrics and logs, checked with the OpenTelemetry SDK's in-memory exporters."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import CANARY
from tokenhub import Hub
from tokenhub import _semconv as sc
from tokenhub.errors import AuthenticationError
from tokenhub.testing import FakeClock, FakeProvider, Reply

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "A private prompt about Zanzibar"}]


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }


@pytest.fixture
def otel() -> Otel:
    return Otel()


def config(fake: FakeProvider, **failover: Any) -> dict[str, Any]:
    return {
        "providers": {"o": {"kind": "openai", "base_url": fake.openai_base_url, "api_key": CANARY}},
        "models": {
            "m1": {"provider": "o", "pricing": {"input": 1, "output": 1}},
            "m2": {"provider": "o", "pricing": {"input": 2, "output": 2}},
        },
        "routing": {"mode": "cheap"},
        "failover": failover,
    }


def failovers(otel: Otel) -> dict[tuple[str, str], int]:
    points = otel.metrics()[sc.FAILOVERS].data.data_points
    return {(p.attributes[sc.MODEL], p.attributes[sc.ERROR_TYPE]): p.value for p in points}


def hub(fake: FakeProvider, otel: Otel, clock: FakeClock | None = None, **failover: Any) -> Hub:
    return Hub.from_config(
        config(fake, **failover),
        clock=clock or FakeClock(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )


class TestSpans:
    async def test_route_and_attempt_spans_across_a_failover(
        self, fake: FakeProvider, otel: Otel
    ) -> None:
        """One INTERNAL route span parents one CLIENT span per attempt, with GenAI attributes."""
        fake.script("m1", Reply(status=503))
        fake.script("m2", Reply(text="hi", usage=(11, 3)))
        async with hub(fake, otel) as h:
            r = await h.chat(HELLO, temperature=0.5, max_tokens=50)
        spans = {s.name: s for s in otel.spans.get_finished_spans()}
        assert {"tokenhub.route", "chat m1", "chat m2"} == set(spans)
        route, failed, ok = spans["tokenhub.route"], spans["chat m1"], spans["chat m2"]
        assert (SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.CLIENT) == (
            route.kind,
            failed.kind,
            ok.kind,
        )
        assert failed.parent is not None
        assert ok.parent is not None
        assert route.context.span_id == failed.parent.span_id == ok.parent.span_id
        assert {
            sc.ATTEMPT_COUNT: 2,
            sc.FALLBACK_USED: True,
            sc.ROUTE_CHOSEN: "m2",
            sc.ROUTE_MODE: "cheap",
            sc.REQUEST_ID: r.request_id,
        }.items() <= dict(route.attributes or {}).items()
        attrs = dict(ok.attributes or {})
        assert {
            sc.OPERATION_NAME: "chat",
            sc.PROVIDER_NAME: "openai",
            sc.REQUEST_MODEL: "m2",
            sc.RESPONSE_MODEL: "m2",
            sc.RESPONSE_ID: r.response_id,
            sc.RESPONSE_FINISH_REASONS: ("stop",),
            sc.USAGE_INPUT_TOKENS: 11,
            sc.USAGE_OUTPUT_TOKENS: 3,
            sc.SERVER_ADDRESS: "127.0.0.1",
            sc.SERVER_PORT: fake.port,
            sc.REQUEST_TEMPERATURE: 0.5,
            sc.REQUEST_MAX_TOKENS: 50,
            sc.ATTEMPT_INDEX: 2,
        }.items() <= attrs.items()
        assert StatusCode.UNSET == ok.status.status_code
        assert (StatusCode.ERROR, "overloaded") == (
            failed.status.status_code,
            dict(failed.attributes or {})[sc.ERROR_TYPE],
        )
        assert [] == [e for s in spans.values() for e in s.events if e.name == "exception"]

    async def test_traceparent_reaches_the_provider(self, fake: FakeProvider, otel: Otel) -> None:
        """Each attempt's W3C traceparent is sent upstream and names that attempt's span."""
        async with hub(fake, otel) as h:
            await h.chat(HELLO)
        attempt = next(s for s in otel.spans.get_finished_spans() if s.kind == SpanKind.CLIENT)
        version, trace_id, span_id, _ = fake.requests[0].headers["traceparent"].split("-")
        assert ("00", f"{attempt.context.trace_id:032x}", f"{attempt.context.span_id:016x}") == (
            version,
            trace_id,
            span_id,
        )

    async def test_only_trace_context_is_sent_not_baggage(
        self, fake: FakeProvider, otel: Otel
    ) -> None:
        """traceparent and tracestate go upstream; the caller's W3C baggage never does."""
        parent = trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id=0x1234,
                span_id=0x5678,
                is_remote=True,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                trace_state=trace.TraceState([("vendor", "v1")]),
            )
        )
        ctx = baggage.set_baggage("user.email", "someone@example.com")
        token = context.attach(trace.set_span_in_context(parent, ctx))
        try:
            async with hub(fake, otel) as h:
                await h.chat(HELLO)
        finally:
            context.detach(token)
        headers = fake.requests[0].headers
        assert f"{0x1234:032x}" == headers["traceparent"].split("-")[1]
        assert "vendor=v1" == headers["tracestate"]
        assert "baggage" not in headers
        assert "someone@example.com" not in str(dict(headers))

    async def test_no_traceparent_without_an_sdk(self, fake: FakeProvider) -> None:
        """With only the API (no SDK), nothing is recorded and no trace header is sent."""
        async with Hub.from_config(config(fake), clock=FakeClock()) as h:
            await h.chat(HELLO)
        assert "traceparent" not in fake.requests[0].headers

    async def test_backoff_is_a_span_event(self, fake: FakeProvider, otel: Otel) -> None:
        """Waits between attempts appear as tokenhub.backoff events with their delay."""
        fake.script("m1", Reply(status=429, headers={"retry-after": "2"}))
        cfg_hub = Hub.from_config(
            {**config(fake), "models": {"m1": {"provider": "o"}}},
            clock=FakeClock(),
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
        )
        async with cfg_hub as h:
            await h.chat(HELLO)
        route = next(s for s in otel.spans.get_finished_spans() if s.name == "tokenhub.route")
        events: list[tuple[str, Any]] = [
            (e.name, (e.attributes or {})["delay_s"]) for e in route.events
        ]
        assert [("tokenhub.backoff", pytest.approx(2.2))] == events

    async def test_failed_request_status_is_scrubbed(self, fake: FakeProvider, otel: Otel) -> None:
        """A provider message echoing the key never reaches span status or attributes."""
        body = {
            "error": {
                "message": f"Incorrect API key provided: {CANARY}",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        }
        fake.default(None, Reply(status=401, body=body))
        async with hub(fake, otel) as h:
            with pytest.raises(AuthenticationError):
                await h.chat(HELLO)
        for span in otel.spans.get_finished_spans():
            text = (
                f"{span.status.description} {span.attributes} {[e.attributes for e in span.events]}"
            )
            assert CANARY not in text
            assert CANARY[:12] not in text
            assert StatusCode.ERROR == span.status.status_code or span.kind != SpanKind.CLIENT

    async def test_stream_records_time_to_first_chunk(self, fake: FakeProvider, otel: Otel) -> None:
        """A streamed attempt carries its time to first chunk, and per-chunk timings are metered."""
        async with hub(fake, otel) as h:
            _ = [c async for c in h.stream(HELLO)]
        attempt = next(s for s in otel.spans.get_finished_spans() if s.kind == SpanKind.CLIENT)
        assert sc.RESPONSE_TIME_TO_FIRST_CHUNK in (attempt.attributes or {})
        metrics = otel.metrics()
        assert sc.TIME_TO_FIRST_CHUNK in metrics
        assert sc.TIME_PER_OUTPUT_CHUNK in metrics

    async def test_server_is_the_base_url_each_attempt_used(self, otel: Otel) -> None:
        """With several vLLM base URLs, each attempt's span and metrics name the replica it used."""
        async with FakeProvider() as a, FakeProvider() as b:
            cfg = {
                "providers": {
                    "gpu": {"kind": "vllm", "base_url": [a.openai_base_url, b.openai_base_url]}
                },
                "models": {"llama": {"provider": "gpu"}},
            }
            async with Hub.from_config(
                cfg, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
            ) as h:
                for _ in range(3):
                    await h.chat(HELLO)
            first, second = a.port, b.port
        attempts = [s for s in otel.spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
        assert [first, second, first] == [(s.attributes or {})[sc.SERVER_PORT] for s in attempts]
        points = otel.metrics()[sc.OPERATION_DURATION].data.data_points
        assert {first: 2, second: 1} == {p.attributes[sc.SERVER_PORT]: p.count for p in points}

    async def test_hedged_attempts_have_distinct_indices(
        self, fake: FakeProvider, otel: Otel
    ) -> None:
        """A hedge and the attempt it races are numbered 1 and 2; the lost one is no error."""
        fake.script("m1", Reply(text="slow", delay_headers=2))
        async with hub(fake, otel, hedge_after=0.1) as h:
            await h.chat(HELLO)
        attempts = {s.name: s for s in otel.spans.get_finished_spans() if s.kind == SpanKind.CLIENT}
        assert {"chat m1": 1, "chat m2": 2} == {
            name: (s.attributes or {})[sc.ATTEMPT_INDEX] for name, s in attempts.items()
        }
        assert StatusCode.UNSET == attempts["chat m1"].status.status_code


class TestCancellation:
    async def test_stream_closed_early_is_not_an_error(
        self, fake: FakeProvider, otel: Otel, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Closing a stream after a chunk leaves every span's status unset and counts the attempt."""
        fake.script("m1", Reply(text="one two three four"))
        with caplog.at_level(logging.DEBUG, logger="tokenhub"):
            async with hub(fake, otel) as h, h.stream(HELLO) as stream:
                async for _ in stream:
                    break
        spans = {s.name: s for s in otel.spans.get_finished_spans()}
        assert {"tokenhub.route", "chat m1"} == set(spans)
        for span in spans.values():
            assert StatusCode.UNSET == span.status.status_code
            assert sc.ERROR_TYPE not in (span.attributes or {})
        assert 1 == (spans["tokenhub.route"].attributes or {})[sc.ATTEMPT_COUNT]
        assert ["cancelled"] == [a.outcome for a in stream.trace.attempts]
        request_id = stream.request_id
        assert [("INFO", f"request {request_id} cancelled by the caller after 1 attempt(s)")] == [
            (r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("tokenhub")
        ]
        metrics = otel.metrics()
        assert [("m1", "cancelled", 1)] == [
            (p.attributes[sc.REQUEST_MODEL], p.attributes[sc.OUTCOME], p.value)
            for p in metrics[sc.ATTEMPTS].data.data_points
        ]
        assert sc.OPERATION_DURATION not in metrics

    async def test_cancelled_call_is_not_an_error(
        self, fake: FakeProvider, otel: Otel, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A call cancelled while its attempt is in flight logs no warning and counts the attempt."""
        fake.script("m1", Reply(hang=True))
        with caplog.at_level(logging.DEBUG, logger="tokenhub"):
            async with hub(fake, otel) as h:
                with anyio.move_on_after(0.2):
                    await h.chat(HELLO)
        spans = {s.name: s for s in otel.spans.get_finished_spans()}
        assert {"tokenhub.route", "chat m1"} == set(spans)
        for span in spans.values():
            assert StatusCode.UNSET == span.status.status_code
        assert 1 == (spans["tokenhub.route"].attributes or {})[sc.ATTEMPT_COUNT]
        records = [r for r in caplog.records if r.name.startswith("tokenhub")]
        assert ["INFO"] == [r.levelname for r in records]
        assert records[0].getMessage().endswith("cancelled by the caller after 1 attempt(s)")
        assert "cancelled" == getattr(records[0], "error_class", None)


class TestMetrics:
    async def test_store_log_drops(
        self, fake: FakeProvider, otel: Otel, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Request-log rows dropped on a full buffer are counted in tokenhub.store.log_drops."""
        from tokenhub._ledger import RequestLog

        monkeypatch.setattr(RequestLog, "_start", lambda self: None)  # the writer never drains
        cfg = config(fake)
        cfg["store"] = {"path": str(tmp_path / "t.db"), "logs": {"enabled": True, "buffer": 2}}
        async with Hub.from_config(
            cfg, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
        ) as h:
            for _ in range(5):
                await h.chat(HELLO)
        drops = otel.metrics()[sc.LOG_DROPS]
        assert ("{row}", 3) == (drops.unit, drops.data.data_points[0].value)

    async def test_names_units_buckets_and_bounded_attributes(
        self, fake: FakeProvider, otel: Otel
    ) -> None:
        """GenAI metrics use the spec's units and bucket boundaries; no ids or prompts as attributes."""
        fake.script("m1", Reply(status=503))
        fake.script("m2", Reply(text="hi", usage=(11, 3)))
        async with hub(fake, otel) as h:
            await h.chat(HELLO)
        metrics = otel.metrics()
        duration, tokens = metrics[sc.OPERATION_DURATION], metrics[sc.TOKEN_USAGE]
        assert ("s", "{token}") == (duration.unit, tokens.unit)
        assert list(sc.DURATION_BUCKETS) == list(duration.data.data_points[0].explicit_bounds)
        assert [4.0**i for i in range(14)] == list(tokens.data.data_points[0].explicit_bounds)
        assert {("input", 11), ("output", 3)} == {
            (p.attributes[sc.TOKEN_TYPE], p.sum) for p in tokens.data.data_points
        }
        errors = {p.attributes.get(sc.ERROR_TYPE) for p in duration.data.data_points}
        assert {None, "overloaded"} == errors
        outcomes = {
            (p.attributes[sc.REQUEST_MODEL], p.attributes[sc.OUTCOME]): p.value
            for p in metrics[sc.ATTEMPTS].data.data_points
        }
        assert {("m1", "overloaded"): 1, ("m2", "ok"): 1} == outcomes
        assert 1 == metrics[sc.FAILOVERS].data.data_points[0].value
        assert (11 * 2 + 3 * 2) / 1e6 == pytest.approx(metrics[sc.COST].data.data_points[0].value)
        allowed = {
            sc.OPERATION_NAME,
            sc.PROVIDER_NAME,
            sc.REQUEST_MODEL,
            sc.RESPONSE_MODEL,
            sc.SERVER_ADDRESS,
            sc.SERVER_PORT,
            sc.ERROR_TYPE,
            sc.TOKEN_TYPE,
            sc.OUTCOME,
            sc.MODEL,
            sc.RATELIMIT_KIND,
        }
        for metric in metrics.values():
            for point in metric.data.data_points:
                assert set(point.attributes) <= allowed, metric.name

    async def test_failovers_inside_a_hedge_race(self, fake: FakeProvider, otel: Otel) -> None:
        """A racer that fails while its hedge is still running counts as a failover."""
        fake.script("m1", Reply(status=503, delay_headers=0.3))
        fake.script("m2", Reply(text="late but fine", delay_headers=0.6))
        async with hub(fake, otel, hedge_after=0.05) as h:
            r = await h.chat(HELLO)
        assert "m2" == r.model
        assert {("m1", "overloaded"): 1} == failovers(otel)

    async def test_failovers_of_a_continued_stream(self, fake: FakeProvider, otel: Otel) -> None:
        """Continuing a broken stream on another model counts as a failover."""
        fake.script("m1", Reply(text="Once upon a time", cut_after=2))
        fake.script("m2", Reply(text=" there was a fox."))
        cfg = config(fake)
        cfg["models"]["m2"]["capabilities"] = ["prefill"]
        async with Hub.from_config(
            cfg,
            clock=FakeClock(),
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
        ) as h:
            _ = [c async for c in h.stream(HELLO)]
        assert {("m1", "stream_interrupted"): 1} == failovers(otel)

    async def test_breaker_state_gauge(self, fake: FakeProvider, otel: Otel) -> None:
        """The breaker gauge reports 1 for an open circuit."""
        fake.default("m1", Reply(status=503))
        async with hub(fake, otel) as h:
            for _ in range(5):
                await h.chat(HELLO)
        points = {
            p.attributes[sc.MODEL]: p.value
            for p in otel.metrics()[sc.BREAKER_STATE].data.data_points
        }
        assert {"m1": 1, "m2": 0} == points

    async def test_rate_limit_remaining_gauge(self, fake: FakeProvider, otel: Otel) -> None:
        """Remaining requests and tokens from the provider's headers are reported per model."""
        headers = {"x-ratelimit-remaining-requests": "99", "x-ratelimit-remaining-tokens": "1500"}
        fake.script("m1", Reply(text="ok", headers=headers))
        async with hub(fake, otel) as h:
            await h.chat(HELLO)
        points = {
            (p.attributes[sc.MODEL], p.attributes[sc.RATELIMIT_KIND]): p.value
            for p in otel.metrics()[sc.RATELIMIT_REMAINING].data.data_points
        }
        assert {("m1", "requests"): 99, ("m1", "tokens"): 1500} == points

    async def test_anthropic_stream_remaining_headers(self, fake: FakeProvider, otel: Otel) -> None:
        """Anthropic's headers on a stream feed the same gauge."""
        cfg = {
            "providers": {"a": {"kind": "anthropic", "base_url": fake.anthropic_base_url}},
            "models": {"c": {"provider": "a"}},
        }
        fake.script("c", Reply(text="ok", headers={"anthropic-ratelimit-requests-remaining": "7"}))
        async with Hub.from_config(cfg, meter_provider=otel.meter_provider) as h:
            _ = [c async for c in h.stream(HELLO)]
        points = {
            (p.attributes[sc.MODEL], p.attributes[sc.RATELIMIT_KIND]): p.value
            for p in otel.metrics()[sc.RATELIMIT_REMAINING].data.data_points
        }
        assert {("c", "requests"): 7} == points


class TestLogs:
    async def test_one_record_per_failed_attempt_and_per_outcome(
        self, fake: FakeProvider, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Attempt failures and request outcomes are logged with structured fields and no prompt."""
        fake.script("m1", Reply(status=503))
        with caplog.at_level(logging.DEBUG, logger="tokenhub"):
            async with Hub.from_config(config(fake), clock=FakeClock()) as h:
                r = await h.chat(HELLO)
        records = [rec for rec in caplog.records if rec.name == "tokenhub.request"]
        assert 2 == len(records)
        failed, outcome = records
        fields = ("request_id", "model", "error_class", "attempt")
        assert (r.request_id, "m1", "overloaded", 1) == tuple(getattr(failed, f) for f in fields)
        assert (r.request_id, "m2", None, 2) == tuple(getattr(outcome, f) for f in fields)
        for rec in caplog.records:
            assert "Zanzibar" not in rec.getMessage()
            assert "Zanzibar" not in str(rec.__dict__)


class TestJsonLogs:
    async def test_json_lines_with_fields(self, fake: FakeProvider) -> None:
        """enable_json_logs writes one JSON object per record with the structured fields."""
        import io
        import json

        from tokenhub import enable_json_logs

        stream = io.StringIO()
        handler = enable_json_logs(stream=stream)
        try:
            fake.script("m1", Reply(status=503))
            async with Hub.from_config(config(fake), clock=FakeClock()) as h:
                r = await h.chat(HELLO)
        finally:
            handler.close()
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert ["tokenhub.request", "tokenhub.request"] == [line["logger"] for line in lines]
        assert {
            "request_id": r.request_id,
            "model": "m1",
            "error_class": "overloaded",
            "attempt": 1,
        }.items() <= lines[0].items()
        assert {"time", "level", "message", "provider", "latency_ms", "delay_s"} <= set(lines[0])
        assert "Zanzibar" not in stream.getvalue()

    def test_close_restores_the_logger(self) -> None:
        """Closing the returned handler detaches it and restores the logger's previous level."""
        import io

        from tokenhub import enable_json_logs

        logger = logging.getLogger("tokenhub")
        previous = logger.level
        logger.setLevel(logging.WARNING)
        try:
            handler = enable_json_logs(logging.DEBUG, stream=io.StringIO())
            assert (logging.DEBUG, True) == (logger.level, handler in logger.handlers)
            handler.close()
            assert (logging.WARNING, False) == (logger.level, handler in logger.handlers)
            logger.setLevel(logging.ERROR)
            handler.close()  # a second close changes nothing
            assert logging.ERROR == logger.level
        finally:
            logger.setLevel(previous)


def test_global_tracer_provider_set_after_the_hub_takes_effect() -> None:
    """Without a tracer provider nothing is traced or propagated; a global one set later traces."""
    import subprocess
    import sys

    code = """
import anyio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokenhub import Hub
from tokenhub.testing import FakeProvider

async def main():
    async with FakeProvider() as fake:
        config = {"providers": {"f": {"kind": "openai", "base_url": fake.url + "/v1",
                  "api_key": "sk-test"}}, "models": {"m": {"provider": "f"}}}
        async with Hub.from_config(config) as hub:
            await hub.chat([{"role": "user", "content": "hi"}], model="m")
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            await hub.chat([{"role": "user", "content": "hi"}], model="m")
        sent = ["traceparent" in {k.lower() for k in r.headers} for r in fake.requests]
        print(sent, sorted(s.name for s in exporter.get_finished_spans()))

anyio.run(main)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[False, True] ['chat m', 'tokenhub.route']" == out.stdout.strip()
