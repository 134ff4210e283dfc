"""The failover engine driven directly: a Deployment table, an in-process provider, a FakeClock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from types import MappingProxyType
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider

from tokenhub._models import Candidate, ChatRequest, ChatResponse, Chunk, Message, RouteTrace, Usage
from tokenhub._settings import FailoverConfig, Pricing
from tokenhub._telemetry import Telemetry
from tokenhub.errors import AuthenticationError, ErrorClass, ProviderError, StreamInterrupted
from tokenhub.providers import Call, Capabilities, Classification
from tokenhub.providers._types import NO_HEADERS
from tokenhub.routing._deployment import Deployment
from tokenhub.routing._engine import Engine, chat, stream
from tokenhub.routing._health import full_jitter
from tokenhub.routing._partial import Partial
from tokenhub.routing._state import RuntimeState
from tokenhub.testing import FakeClock

pytestmark = pytest.mark.anyio

REQUEST = ChatRequest(messages=(Message(role="user", content="hi"),))
STALL = "<stall>"
Step = str | BaseException | Sequence[str | BaseException]


class Scripted:
    """A Provider that answers from a script per upstream model, in process.

    For ``send`` a step is a text or an exception to raise; for ``stream`` a
    sequence of chunk texts and exceptions (``STALL`` waits forever), then a finish.
    """

    def __init__(self, script: Mapping[str, list[Any]]) -> None:
        self.script: dict[str, list[Step]] = {k: list(v) for k, v in script.items()}
        self.calls: list[Call] = []

    def _next(self, call: Call) -> Step:
        self.calls.append(call)
        return self.script[call.upstream].pop(0)

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities()

    async def send(self, call: Call) -> ChatResponse:
        step = self._next(call)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, str)
        if call.observe is not None:
            call.observe({"x-ratelimit-remaining-requests": "7"})
        return call.response(
            text=step, finish_reason="stop", usage=Usage(input_tokens=10, output_tokens=2)
        )

    async def stream(self, call: Call) -> AsyncIterator[Chunk]:
        step = self._next(call)
        parts = [step] if isinstance(step, BaseException | str) else step
        for part in parts:
            if isinstance(part, BaseException):
                raise part
            if part == STALL:
                await anyio.sleep_forever()
            yield call.chunk(text=part)
        yield call.chunk(finish_reason="stop", usage=Usage(input_tokens=10, output_tokens=2))

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Classification:
        return Classification(ErrorClass.TRANSIENT, "unused")

    async def aclose(self) -> None:
        pass


def failure(cls: ErrorClass = ErrorClass.TRANSIENT) -> ProviderError:
    return ProviderError("boom", error_class=cls, status=503)


def table(provider: Scripted, *names: str, **extra: Any) -> Mapping[str, Deployment]:
    """Models a, b, ... on ``provider``, each sent upstream as ``up-<name>``."""
    return MappingProxyType(
        {
            n: Deployment(
                name=n,
                upstream=f"up-{n}",
                provider_name="p",
                provider=provider,
                kind="scripted",
                base_url="http://127.0.0.1:9/v1",
                pricing=Pricing(input=1.0, output=2.0),
                **extra,
            )
            for n in names
        }
    )


def engine_for(
    deployments: Mapping[str, Deployment],
    clock: FakeClock,
    tracer_provider: TracerProvider | None = None,
    **failover: Any,
) -> Engine:
    state = RuntimeState(clock=clock.monotonic)
    telemetry = Telemetry(state, tracer_provider=tracer_provider)
    return Engine(FailoverConfig(**failover), state, clock, deployments, telemetry=telemetry)


def route(*names: str) -> RouteTrace:
    candidates = tuple(
        Candidate(n, "p", 1.0, (), None, output_tokens=256, latency_ms=None) for n in names
    )
    return RouteTrace(request_id="req-1", mode="cheap", prompt_tokens=3, candidates=candidates)


async def streamed(engine: Engine, trace: RouteTrace, partial: Partial | None = None) -> list[str]:
    texts = []
    async with aclosing(stream(engine, REQUEST, trace, None, partial or Partial())) as chunks:
        async for chunk, _, _ in chunks:
            texts.append(chunk.text)
    return texts


class TestChat:
    async def test_answers_from_the_table(self) -> None:
        """The engine builds the call from the deployment: upstream, names, pricing, rate limits."""
        provider = Scripted({"up-a": ["hello"]})
        engine = engine_for(table(provider, "a"), FakeClock())
        response = await chat(engine, REQUEST, route("a"), None)
        call = provider.calls[0]
        assert ("a", "up-a", "p", "req-1") == (call.model, call.upstream, call.provider, "req-1")
        assert ("hello", 14e-6) == (response.text, response.cost_usd)
        assert response.trace is not None
        assert ["ok"] == [a.outcome for a in response.trace.attempts]
        assert {("a", "requests"): 7} == engine.state.remaining()

    async def test_fails_over_to_the_next_candidate(self) -> None:
        """A transient failure moves on at once and counts against the first model's health."""
        provider = Scripted({"up-a": [failure()], "up-b": ["from b"]})
        clock = FakeClock()
        engine = engine_for(table(provider, "a", "b"), clock)
        response = await chat(engine, REQUEST, route("a", "b"), None)
        assert response.trace is not None
        assert ("from b", []) == (response.text, clock.sleeps)
        assert ["transient", "ok"] == [a.outcome for a in response.trace.attempts]
        assert engine.state.snapshot()["models"]["a"]["failure_rate"] > 0

    async def test_retries_the_last_candidate_after_a_backoff(self) -> None:
        """On the last candidate a transient failure is retried after full-jitter backoff."""
        provider = Scripted({"up-a": [failure(), "again"]})
        clock = FakeClock()
        engine = engine_for(table(provider, "a"), clock)
        response = await chat(engine, REQUEST, route("a"), None)
        s = engine.settings
        assert "again" == response.text
        assert [full_jitter(0, 0.5, base=s.backoff_base, cap=s.backoff_cap)] == clock.sleeps

    async def test_auth_disables_the_credential(self) -> None:
        """An auth failure takes the provider's key out of rotation and fails over."""
        auth = AuthenticationError("bad key", error_class=ErrorClass.AUTH, status=401)
        provider = Scripted({"up-a": [auth], "up-b": ["ok"]})
        engine = engine_for(table(provider, "a", "b"), FakeClock())
        await chat(engine, REQUEST, route("a", "b"), None)
        assert engine.state.blocked("a", "p") is not None

    async def test_the_last_error_carries_the_trace(self) -> None:
        """When every candidate failed, the last error is raised with every attempt."""
        provider = Scripted({"up-a": [failure()], "up-b": [failure(ErrorClass.CONTENT_POLICY)]})
        engine = engine_for(table(provider, "a", "b"), FakeClock())
        with pytest.raises(ProviderError) as caught:
            await chat(engine, REQUEST, route("a", "b"), None)
        assert caught.value.trace is not None
        assert ["transient", "content_policy"] == [a.outcome for a in caught.value.trace.attempts]


class TestHeaders:
    async def test_no_headers_when_not_tracing(self) -> None:
        """Without a sampled span the call carries the one shared, empty, read-only mapping."""
        provider = Scripted({"up-a": ["x"]})
        await chat(engine_for(table(provider, "a"), FakeClock()), REQUEST, route("a"), None)
        assert provider.calls[0].headers is NO_HEADERS

    async def test_traceparent_set_when_the_call_is_built(self) -> None:
        """A sampled attempt's call carries its traceparent in a read-only mapping."""
        provider = Scripted({"up-a": ["x"]})
        engine = engine_for(table(provider, "a"), FakeClock(), TracerProvider())
        await chat(engine, REQUEST, route("a"), None)
        headers = provider.calls[0].headers
        assert ["traceparent"] == list(headers)
        with pytest.raises(TypeError):
            headers["traceparent"] = "x"  # type: ignore[index]


class TestTable:
    async def test_a_run_keeps_the_table_it_started_with(self) -> None:
        """A stream started before a new table was installed finishes on the old deployments."""
        old = Scripted({"up-a": [["one", "two"]]})
        new = Scripted({"up-a": [["new"]]})
        engine = engine_for(table(old, "a"), FakeClock())
        chunks = stream(engine, REQUEST, route("a"), None, Partial())
        async with aclosing(chunks):
            first, run, _ = await anext(chunks)
            replaced = engine.using(table(new, "a"))
            rest = [c.text async for c, _, _ in chunks]
        assert (["one", "two", ""], []) == ([first.text, *rest], new.calls)
        assert (replaced.budget, replaced.deployments["a"].provider) == (engine.budget, new)
        assert run.deployments is engine.deployments

    async def test_context_window_from_the_table_skips_smaller_models(self) -> None:
        """After an overflow that cannot shrink, models with no larger window are skipped."""
        overflow = ProviderError("too long", error_class=ErrorClass.CONTEXT_OVERFLOW)
        provider = Scripted({"up-a": [overflow], "up-c": ["fits"]})
        deployments = {
            **table(provider, "a", "b", context_window=8000),
            **table(provider, "c", context_window=128000),
        }
        engine = engine_for(deployments, FakeClock())
        response = await chat(engine, REQUEST, route("a", "b", "c"), None)
        assert ("fits", ["up-a", "up-c"]) == (response.text, [c.upstream for c in provider.calls])


class TestStream:
    async def test_fails_over_before_the_first_chunk(self) -> None:
        """A failure before any chunk is invisible: the next candidate streams."""
        provider = Scripted({"up-a": [[failure()]], "up-b": [["hi", " there"]]})
        engine = engine_for(table(provider, "a", "b"), FakeClock())
        assert ["hi", " there", ""] == await streamed(engine, route("a", "b"))

    async def test_committed_after_the_first_chunk(self) -> None:
        """Without rescue, a break after a chunk raises StreamInterrupted; no failover."""
        provider = Scripted({"up-a": [["par", "tial", failure()]], "up-b": [["never"]]})
        engine = engine_for(table(provider, "a", "b"), FakeClock(), continue_streams="off")
        with pytest.raises(StreamInterrupted) as caught:
            await streamed(engine, route("a", "b"))
        assert ("partial", ["up-a"]) == (
            caught.value.partial_text,
            [c.upstream for c in provider.calls],
        )
        assert caught.value.trace is not None
        assert ["stream_interrupted"] == [a.outcome for a in caught.value.trace.attempts]

    @pytest.mark.parametrize("read_timeout", [None, 1000.0])
    async def test_deadline_bounds_a_stall(self, read_timeout: float | None) -> None:
        """A stalled stream ends at the deadline, with or without a (longer) HTTP read bound."""
        provider = Scripted({"up-a": [["x", STALL]]})
        engine = engine_for(
            table(provider, "a", read_timeout=read_timeout), FakeClock(), timeout=0.05
        )
        with pytest.raises(StreamInterrupted) as caught:
            await streamed(engine, route("a"))
        assert "x" == caught.value.partial_text

    async def test_continues_on_a_prefill_model(self) -> None:
        """On the defaults, a later prefill-capable model continues a broken stream."""
        provider = Scripted({"up-a": [["Hel", failure()]], "up-b": [["lo"]]})
        deployments = {**table(provider, "a"), **table(provider, "b", prefill=True)}
        engine = engine_for(deployments, FakeClock())
        assert ["Hel", "lo", ""] == await streamed(engine, route("a", "b"))
        continued = provider.calls[1].request.messages[-1]
        assert ("assistant", "Hel") == (continued.role, continued.content)
