"""OpenTelemetry traces and metrics through the API only: no-ops unless the app installs an SDK.

One INTERNAL ``tokenhub.route`` span per routed request; one CLIENT span per
provider attempt, named ``"chat {model}"`` after the GenAI conventions. Exceptions
are never auto-recorded (their text could carry what a provider echoed); status
text is scrubbed. Attributes are built only for recording spans.
"""

from __future__ import annotations

import functools
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tokenhub import _semconv as sc
from tokenhub._redact import scrub, truncate
from tokenhub._version import __version__
from tokenhub.providers._types import NO_HEADERS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from tokenhub._models import ChatRequest, RouteTrace, Usage
    from tokenhub._runtime import StateBackend
    from tokenhub.routing._deployment import Deployment

__all__ = ["AttemptSpan", "Telemetry"]

_BREAKER_CODES = {"closed": 0, "open": 1, "half_open": 2}
# W3C trace context only, never the global propagator: its default also sends the
# caller's baggage, which is none of the model provider's business.
_TRACE_CONTEXT = TraceContextTextMapPropagator()


@functools.lru_cache(maxsize=256)  # a Hub talks to a handful of base URLs
def _server(url: str | None) -> tuple[str, int] | None:
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


class Telemetry:
    """The tracer and the instruments of one Hub."""

    def __init__(
        self,
        state: StateBackend,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("tokenhub", __version__, tracer_provider=tracer_provider)
        self._own_tracer = tracer_provider is not None
        meter = metrics.get_meter("tokenhub", __version__, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            sc.OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration, per provider attempt.",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            sc.TOKEN_USAGE,
            unit="{token}",
            description="Billable tokens per provider attempt.",
            explicit_bucket_boundaries_advisory=sc.TOKEN_BUCKETS,
        )
        self.first_chunk = meter.create_histogram(
            sc.TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to the first chunk of a streamed answer.",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        )
        self.per_chunk = meter.create_histogram(
            sc.TIME_PER_OUTPUT_CHUNK,
            unit="s",
            description="Time between chunks of a streamed answer, after the first.",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        )
        self.attempts = meter.create_counter(
            sc.ATTEMPTS, unit="{attempt}", description="Provider attempts, by outcome."
        )
        self.failovers = meter.create_counter(
            sc.FAILOVERS, unit="{failover}", description="Moves to the next candidate."
        )
        self.retries = meter.create_counter(
            sc.RETRIES, unit="{retry}", description="Same-model retries and hedges."
        )
        self.cost = meter.create_counter(
            sc.COST, unit="USD", description="Cost of answered attempts, from model pricing."
        )
        self.log_drops = meter.create_counter(
            sc.LOG_DROPS,
            unit="{row}",
            description="Request-log rows dropped because the store's buffer was full.",
        )
        self._state = state
        meter.create_observable_gauge(
            sc.BREAKER_STATE,
            callbacks=[self._breakers],
            unit="1",
            description="Circuit state per model: 0 closed, 1 open, 2 half-open.",
        )
        meter.create_observable_gauge(
            sc.RATELIMIT_REMAINING,
            callbacks=[self._remaining],
            unit="1",
            description="Requests or tokens left in the provider's rate-limit window, per model.",
        )

    def _remaining(self, _options: Any) -> list[metrics.Observation]:
        return [
            metrics.Observation(value, {sc.MODEL: model, sc.RATELIMIT_KIND: kind})
            for (model, kind), value in self._state.remaining().items()
        ]

    def _breakers(self, _options: Any) -> list[metrics.Observation]:
        models = self._state.snapshot()["models"]
        return [
            metrics.Observation(_BREAKER_CODES[info["circuit"]], {sc.MODEL: name})
            for name, info in models.items()
        ]

    def tracing(self) -> bool:
        """Whether spans can be recorded: a tracer provider was given, or a global one is set.

        Without one (the OpenTelemetry API alone) every span is the API's invalid
        span: skipping its contexts saves microseconds per request. Checked per
        request, so a global provider set after the Hub was built takes effect.
        """
        return self._own_tracer or not isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider
        )

    def route(self, trace_: RouteTrace, request: ChatRequest, *, stream: bool) -> Span:
        """Start the INTERNAL span of one routed request (ended by the caller)."""
        if not self.tracing():
            return trace.INVALID_SPAN
        span = self.tracer.start_span(ROUTE_SPAN_NAME, kind=SpanKind.INTERNAL)
        if span.is_recording():
            span.set_attributes(
                {
                    sc.OPERATION_NAME: sc.OPERATION_CHAT,
                    sc.ROUTE_MODE: trace_.mode,
                    sc.REQUEST_ID: trace_.request_id,
                    sc.REQUEST_STREAM: stream,
                    **({sc.ROUTE_ALIAS: trace_.alias} if trace_.alias else {}),
                    **_request_attributes(request),
                }
            )
        return span

    def attempt(
        self,
        route: Span,
        deployment: Deployment,
        request: ChatRequest,
        *,
        request_id: str,
        index: int,
        stream: bool,
    ) -> AttemptSpan:
        """Start the CLIENT span of one provider attempt, before its call is built.

        The span's :attr:`~AttemptSpan.headers` are the ones to send: its W3C
        ``traceparent`` when the span is sampled, else none.
        """
        upstream = deployment.upstream
        attrs: dict[str, Any] = {
            sc.OPERATION_NAME: sc.OPERATION_CHAT,
            sc.PROVIDER_NAME: deployment.kind,
            sc.REQUEST_MODEL: upstream,
        }
        server = _server(deployment.base_url)
        if server is not None:
            attrs[sc.SERVER_ADDRESS], attrs[sc.SERVER_PORT] = server
        if route is trace.INVALID_SPAN:  # not tracing (see tracing()): no span, no traceparent
            return AttemptSpan(self, route, attrs)
        context = trace.set_span_in_context(route)
        span = self.tracer.start_span(
            f"{sc.OPERATION_CHAT} {upstream}", kind=SpanKind.CLIENT, context=context
        )
        if span.is_recording():
            span.set_attributes(
                {
                    **attrs,
                    sc.ATTEMPT_INDEX: index,
                    sc.REQUEST_STREAM: stream,
                    sc.REQUEST_ID: request_id,
                    sc.MODEL: deployment.name,
                    **_request_attributes(request),
                }
            )
        headers = NO_HEADERS
        if span.get_span_context().is_valid:
            carrier: dict[str, str] = {}
            _TRACE_CONTEXT.inject(carrier, context=trace.set_span_in_context(span))
            headers = MappingProxyType(carrier)
        return AttemptSpan(self, span, attrs, headers)


ROUTE_SPAN_NAME = sc.ROUTE_SPAN


def _request_attributes(request: ChatRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if request.max_tokens is not None:
        out[sc.REQUEST_MAX_TOKENS] = request.max_tokens
    if request.temperature is not None:
        out[sc.REQUEST_TEMPERATURE] = request.temperature
    if request.top_p is not None:
        out[sc.REQUEST_TOP_P] = request.top_p
    if request.seed is not None:
        out[sc.REQUEST_SEED] = request.seed
    return out


class AttemptSpan:
    """One attempt's span and metric attributes, closed by :meth:`ok` or :meth:`failed`.

    ``headers`` are the ones the attempt sends for tracing (read-only; empty
    when the span is not sampled).
    """

    __slots__ = ("_attrs", "_last_chunk", "_t", "headers", "span")

    def __init__(
        self,
        telemetry: Telemetry,
        span: Span,
        attrs: dict[str, Any],
        headers: Mapping[str, str] = NO_HEADERS,
    ) -> None:
        self._t = telemetry
        self.span = span
        self._attrs = attrs
        self.headers = headers
        self._last_chunk: float | None = None

    def chunk(self, now: float, started: float) -> None:
        """Record a streamed chunk: time to the first one, then the gaps between them."""
        if self._last_chunk is None:
            seconds = now - started
            self._t.first_chunk.record(seconds, self._attrs)
            if self.span.is_recording():
                self.span.set_attribute(sc.RESPONSE_TIME_TO_FIRST_CHUNK, seconds)
        else:
            self._t.per_chunk.record(now - self._last_chunk, self._attrs)
        self._last_chunk = now

    def server(self, url: str) -> None:
        """Name the host and port the attempt was sent to (a provider may rotate base URLs)."""
        server = _server(url)
        if server is None:
            return
        self._attrs[sc.SERVER_ADDRESS], self._attrs[sc.SERVER_PORT] = server
        if self.span.is_recording():
            self.span.set_attributes({sc.SERVER_ADDRESS: server[0], sc.SERVER_PORT: server[1]})

    def ok(
        self,
        seconds: float,
        *,
        usage: Usage | None,
        cost: float | None,
        response_model: str | None,
        response_id: str | None,
        finish_reason: str | None,
    ) -> None:
        """Close a successful attempt.

        ``response_model`` is the upstream's word: a span attribute only. As a
        metric attribute it would let an upstream mint series without bound.
        """
        attrs = self._attrs
        t = self._t
        t.duration.record(seconds, attrs)
        t.attempts.add(1, {**self._attrs, sc.OUTCOME: "ok"})
        if usage is not None:
            t.tokens.record(usage.input_tokens, {**attrs, sc.TOKEN_TYPE: "input"})
            t.tokens.record(usage.output_tokens, {**attrs, sc.TOKEN_TYPE: "output"})
        if cost is not None:
            t.cost.add(cost, self._attrs)
        span = self.span
        if span.is_recording():
            extra: dict[str, Any] = {}
            if response_model:
                extra[sc.RESPONSE_MODEL] = response_model
            if response_id:
                extra[sc.RESPONSE_ID] = response_id
            if finish_reason:
                extra[sc.RESPONSE_FINISH_REASONS] = [finish_reason]
            if usage is not None:
                extra[sc.USAGE_INPUT_TOKENS] = usage.input_tokens
                extra[sc.USAGE_OUTPUT_TOKENS] = usage.output_tokens
                if usage.cached_input_tokens:
                    extra[sc.USAGE_CACHE_READ] = usage.cached_input_tokens
                if usage.cache_write_input_tokens:
                    extra[sc.USAGE_CACHE_CREATION] = usage.cache_write_input_tokens
            span.set_attributes(extra)
        span.end()

    def cancelled(self) -> None:
        """Close an attempt abandoned by the caller or by a won hedge: counted, but not an error."""
        self._t.attempts.add(1, {**self._attrs, sc.OUTCOME: "cancelled"})
        self.span.end()

    def failed(self, seconds: float, error_type: str, message: str) -> None:
        """Close a failed attempt, with a low-cardinality ``error.type`` and scrubbed status."""
        attrs = {**self._attrs, sc.ERROR_TYPE: error_type}
        self._t.duration.record(seconds, attrs)
        self._t.attempts.add(1, {**self._attrs, sc.OUTCOME: error_type})
        span = self.span
        if span.is_recording():
            span.set_attribute(sc.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, truncate(scrub(message), 200)))
        span.end()


def finish_route(
    span: Span,
    trace_: RouteTrace,
    *,
    error_type: str | None = None,
    message: str = "",
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """End the route span: attempt count, the chosen model, whether a fallback answered.

    Without ``error_type`` the status stays unset: the request was answered, or
    the caller stopped it.
    """
    if span.is_recording():
        attempts = trace_.attempts
        chosen = trace_.chosen if error_type is None and attempts else None
        first = trace_.candidates[0].model if trace_.candidates else None
        span.set_attributes(
            {
                sc.ATTEMPT_COUNT: len(attempts),
                sc.FALLBACK_USED: bool(chosen and chosen != first),
                **({sc.ROUTE_CHOSEN: chosen} if chosen else {}),
                **(attributes or {}),
            }
        )
        if error_type is not None:
            span.set_attribute(sc.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, truncate(scrub(message), 200)))
    span.end()
