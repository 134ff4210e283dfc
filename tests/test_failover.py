"""The fault suite: every category from the resilience reference, against the FakeProvider.

Each test asserts what the FakeProvider saw (attempts, order, gaps) and what the
caller got. Waits run on a FakeClock, so backoffs and Retry-After cost no time;
only the explicit timeouts (a few tenths of a second) are real.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tokenhub import Hub
from tokenhub._sse import DEFAULT_MAX_LINE
from tokenhub.errors import (
    ContentPolicyError,
    ContextOverflowError,
    ErrorClass,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    StreamInterrupted,
)
from tokenhub.testing import FakeClock, FakeProvider, Reply, ScriptedToolCall

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]


HTTP = {"impl": "httpx"}


@pytest.fixture(autouse=True, params=["httpx", "aiohttp"])
def http_impl(request: pytest.FixtureRequest) -> str:
    """Run the whole fault suite on both HTTP implementations."""
    HTTP["impl"] = str(request.param)
    return HTTP["impl"]


def config(
    fake: FakeProvider,
    *names: str,
    failover: dict[str, Any] | None = None,
    **models: dict[str, Any],
) -> dict[str, Any]:
    """Models m1, m2, ... in that preference order (cheapest first), on one OpenAI provider."""
    entries = {
        n: {"provider": "o", "pricing": {"input": i + 1, "output": i + 1}}
        for i, n in enumerate(names)
    }
    for name, extra in models.items():
        entries[name] = {**entries.get(name, {"provider": "o"}), **extra}
    return {
        "providers": {
            "o": {
                "kind": "openai",
                "base_url": fake.openai_base_url,
                "http": HTTP["impl"],
                "api_key": "sk-test-abcdefgh12345678",
            }
        },
        "models": entries,
        "routing": {"mode": "cheap"},
        "failover": failover or {},
    }


def seen(fake: FakeProvider) -> list[str | None]:
    return [r.model for r in fake.requests]


class TestRateLimits:
    async def test_429_with_retry_after_fails_over_at_once_and_cools_down(
        self, fake: FakeProvider
    ) -> None:
        """A 429 moves to the next candidate without waiting; the model is skipped until its hint passes."""
        clock = FakeClock()
        fake.script("m1", Reply(status=429, headers={"retry-after": "20"}))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            r = await hub.chat(HELLO)
            assert ("m2", []) == (r.model, clock.sleeps)
            second = await hub.chat(HELLO)
            assert second.trace is not None
            assert "rate-limited for another 20.0 s" == second.trace.excluded[0].reason
            clock.advance(20)
            third = await hub.chat(HELLO)
        assert ["m1", "m2", "m2", "m1"] == seen(fake)
        assert "m1" == third.model

    async def test_429_on_the_only_candidate_waits_for_the_hint(self, fake: FakeProvider) -> None:
        """With no other candidate, the Hub waits the hint (plus jitter) and tries again."""
        clock = FakeClock()
        fake.script("m1", Reply(status=429, headers={"retry-after": "2"}))
        async with Hub.from_config(config(fake, "m1"), clock=clock) as hub:
            r = await hub.chat(HELLO)
        assert ["m1", "m1"] == seen(fake)
        assert [pytest.approx(2.2)] == clock.sleeps  # 2 s * (1 + 0.2 * draw 0.5)
        assert r.trace is not None
        assert [("rate_limited", 0.0), ("ok", pytest.approx(2.2))] == [
            (a.outcome, a.wait_s) for a in r.trace.attempts
        ]

    async def test_hint_longer_than_max_server_wait_is_not_slept(self, fake: FakeProvider) -> None:
        """A hint beyond max_server_wait is raised at once with its retry_after, never slept."""
        clock = FakeClock()
        fake.script("m1", Reply(status=429, headers={"retry-after": "300"}))
        async with Hub.from_config(config(fake, "m1"), clock=clock) as hub:
            with pytest.raises(RateLimitError) as info:
                await hub.chat(HELLO)
        assert (300.0, []) == (info.value.retry_after, clock.sleeps)
        assert ["m1"] == seen(fake)

    async def test_hint_beyond_the_deadline_is_not_slept(self, fake: FakeProvider) -> None:
        """A wait that would outlive the request's deadline is not taken."""
        clock = FakeClock()
        fake.script("m1", Reply(status=429, headers={"retry-after": "30"}))
        async with Hub.from_config(config(fake, "m1"), clock=clock) as hub:
            with pytest.raises(RateLimitError):
                await hub.chat(HELLO, timeout=10)
        assert [] == clock.sleeps

    async def test_reset_headers_without_retry_after(self, fake: FakeProvider) -> None:
        """OpenAI's x-ratelimit-reset-* durations set the cooldown when retry-after is absent."""
        clock = FakeClock()
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
        fake.script("m1", Reply(status=429, headers=headers))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            await hub.chat(HELLO)
            assert hub.health()["models"]["m1"]["rate_limited_for_s"] == pytest.approx(360)

    async def test_persistent_429_without_hint_retries_twice_then_raises(
        self, fake: FakeProvider
    ) -> None:
        """A hint-less 429 on the only candidate gets at most two jittered retries, never a loop."""
        clock = FakeClock()
        fake.default("m1", Reply(status=429))
        async with Hub.from_config(config(fake, "m1"), clock=clock) as hub:
            with pytest.raises(RateLimitError):
                await hub.chat(HELLO)
        assert ["m1"] * 3 == seen(fake)
        assert [0.125, 0.25] == clock.sleeps


class TestServerErrors:
    async def test_5xx_once_then_healthy(self, fake: FakeProvider) -> None:
        """One jittered retry on the same model succeeds; the failure shows in the trace only."""
        clock = FakeClock()
        fake.script("m1", Reply(status=500))
        async with Hub.from_config(config(fake, "m1"), clock=clock) as hub:
            r = await hub.chat(HELLO)
            assert "closed" == hub.health()["models"]["m1"]["circuit"]
        assert ("m1", [0.125]) == (r.model, clock.sleeps)
        assert r.trace is not None
        assert ["transient", "ok"] == [a.outcome for a in r.trace.attempts]

    async def test_server_says_do_not_retry(self, fake: FakeProvider) -> None:
        """x-should-retry: false forbids a same-model retry, even on the last candidate."""
        fake.script("m1", Reply(status=503, headers={"x-should-retry": "false"}))
        async with Hub.from_config(config(fake, "m1"), clock=FakeClock()) as hub:
            with pytest.raises(ProviderUnavailableError):
                await hub.chat(HELLO)
        assert ["m1"] == seen(fake)

    async def test_persistent_503_fails_over_then_the_breaker_skips_it(
        self, fake: FakeProvider
    ) -> None:
        """A failing primary is left at once for the fallback; after 5 failures its circuit opens."""
        clock = FakeClock()
        fake.default("m1", Reply(status=503))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            for _ in range(5):
                assert "m2" == (await hub.chat(HELLO)).model
            assert "open" == hub.health()["models"]["m1"]["circuit"]
            r = await hub.chat(HELLO)
        assert ["m1", "m2"] * 5 + ["m2"] == seen(fake)
        assert [] == clock.sleeps
        assert r.trace is not None
        assert r.trace.excluded[0].reason.startswith("circuit open for another 30.0 s")

    async def test_reset_before_headers_fails_over(self, fake: FakeProvider) -> None:
        """A connection reset before any response byte is provider_down and moves on."""
        fake.script("m1", Reply(reset=True))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=FakeClock()) as hub:
            r = await hub.chat(HELLO)
        assert r.trace is not None
        assert (["m1", "m2"], "provider_down") == (seen(fake), r.trace.attempts[0].outcome)

    async def test_silent_provider_costs_one_timeout(self, fake: FakeProvider) -> None:
        """A provider that never answers costs one first-token timeout, then the fallback answers."""
        fake.script("m1", Reply(hang=True))
        cfg = config(fake, "m1", "m2", failover={"first_token_timeout": 0.2})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            started = time.monotonic()
            r = await hub.chat(HELLO)
            elapsed = time.monotonic() - started
        assert ("m2", ["m1", "m2"]) == (r.model, seen(fake))
        assert 0.2 <= elapsed < 1.0
        assert r.trace is not None
        assert "provider_down" == r.trace.attempts[0].outcome

    async def test_silent_only_candidate_is_not_retried(self, fake: FakeProvider) -> None:
        """A timeout is never retried on the same model: one timeout, then the error."""
        fake.default("m1", Reply(hang=True))
        cfg = config(fake, "m1", failover={"first_token_timeout": 0.2})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            with pytest.raises(ProviderTimeoutError):
                await hub.chat(HELLO)
        assert ["m1"] == seen(fake)

    async def test_deadline_bounds_the_whole_call(self, fake: FakeProvider) -> None:
        """timeout= bounds every attempt together; a hung provider cannot exceed it."""
        fake.default(None, Reply(hang=True))
        async with Hub.from_config(config(fake, "m1", "m2")) as hub:
            started = time.monotonic()
            with pytest.raises(ProviderTimeoutError, match="deadline") as info:
                await hub.chat(HELLO, timeout=0.3)
            elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 1.0
        assert ["m1"] == seen(fake)
        assert info.value.trace is not None
        assert [("m1", "provider_down")] == [
            (a.model, a.outcome) for a in info.value.trace.attempts
        ]


class TestStreams:
    async def test_slow_first_token_fails_over_before_anything_is_yielded(
        self, fake: FakeProvider
    ) -> None:
        """A slow first token moves to the next candidate; the caller sees only the fallback's text."""
        fake.script("m1", Reply(text="too late", delay_first_token=5))
        cfg = config(fake, "m1", "m2", failover={"first_token_timeout": 0.2})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            stream = hub.stream(HELLO)
            text = "".join([c.text async for c in stream])
        assert ("echo: Hello", "m2") == (text, stream.response.model)
        assert ["provider_down", "ok"] == [a.outcome for a in stream.trace.attempts]

    async def test_cut_after_chunks_is_never_a_success(self, fake: FakeProvider) -> None:
        """A cut stream that no rescue reproduces raises StreamInterrupted; never a silent switch."""
        fake.script("m1", Reply(text="one two three four", cut_after=2))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=FakeClock()) as hub:
            stream = hub.stream(HELLO)
            with pytest.raises(StreamInterrupted) as info:
                async for _ in stream:
                    pass
        assert "one two " == info.value.partial_text
        # Each rescue (m2, then m1 again) answered "echo: Hello": checked, dropped.
        assert ["m1", "m2", "m1"] == seen(fake)
        outcomes = [a.outcome for a in stream.trace.attempts]
        assert ["stream_interrupted", "diverged", "diverged"] == outcomes
        assert info.value.trace == stream.trace

    async def test_stall_after_chunks(self, fake: FakeProvider) -> None:
        """A stream that stalls past stall_timeout raises StreamInterrupted with the partial text."""
        fake.script("m1", Reply(text="one two three", stall_after=1))
        cfg = config(fake, "m1", failover={"stall_timeout": 0.2})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            started = time.monotonic()
            with pytest.raises(StreamInterrupted) as info:
                _ = [c async for c in hub.stream(HELLO)]
            elapsed = time.monotonic() - started
        assert "one " == info.value.partial_text
        assert elapsed < 1.0

    async def test_stall_bounded_by_the_read_timeout(self, fake: FakeProvider) -> None:
        """Without stall_timeout, the adapter's HTTP read timeout bounds a mid-stream stall."""
        fake.script("m1", Reply(text="one two three", stall_after=1))
        cfg = config(fake, "m1")
        cfg["providers"]["o"]["timeouts"] = {"read": 0.2}
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            started = time.monotonic()
            with pytest.raises(StreamInterrupted) as info:
                _ = [c async for c in hub.stream(HELLO)]
            elapsed = time.monotonic() - started
        assert "one " == info.value.partial_text
        assert elapsed < 1.0

    async def test_deadline_nearer_than_the_read_timeout(self, fake: FakeProvider) -> None:
        """A request deadline closer than the read timeout still cuts a stalled stream on time."""
        fake.script("m1", Reply(text="one two three", stall_after=1))
        async with Hub.from_config(config(fake, "m1")) as hub:
            started = time.monotonic()
            with pytest.raises(StreamInterrupted) as info:
                _ = [c async for c in hub.stream(HELLO, timeout=0.3)]
            elapsed = time.monotonic() - started
        assert "one " == info.value.partial_text
        assert elapsed < 1.5

    async def test_pings_do_not_count_as_progress(self, fake: FakeProvider) -> None:
        """Anthropic pings during a stall do not reset the stall timer."""
        cfg = {
            "providers": {
                "a": {
                    "kind": "anthropic",
                    "base_url": fake.anthropic_base_url,
                    "http": HTTP["impl"],
                }
            },
            "models": {"c": {"provider": "a"}},
            "failover": {"stall_timeout": 0.3, "continue_streams": "off"},
        }
        fake.script("c", Reply(text="a b c d", delay_between_chunks=0.5, ping_every=1))
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            with pytest.raises(StreamInterrupted):
                _ = [c async for c in hub.stream(HELLO)]

    async def test_malformed_first_chunk_fails_over(self, fake: FakeProvider) -> None:
        """A malformed chunk before anything was delivered is a failover, not garbage."""
        fake.script("m1", Reply(text="x y", malformed_after=0))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=FakeClock()) as hub:
            stream = hub.stream(HELLO)
            text = "".join([c.text async for c in stream])
        assert ("echo: Hello", ["m1", "m2"]) == (text, seen(fake))

    async def test_oversized_event_line_fails_over(self, fake: FakeProvider) -> None:
        """An SSE line over the decoder's cap is a broken stream (a failover), never a raw SSEError."""
        fake.script("m1", Reply(text="x" * (DEFAULT_MAX_LINE + 1), chunks=1))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=FakeClock()) as hub:
            stream = hub.stream(HELLO)
            text = "".join([c.text async for c in stream])
        assert ("echo: Hello", ["m1", "m2"]) == (text, seen(fake))
        assert "transient" == stream.trace.attempts[0].outcome

    async def test_stream_retries_the_only_candidate_before_the_first_chunk(
        self, fake: FakeProvider
    ) -> None:
        """Before the first chunk a stream is retried like any request (overload on the last model)."""
        clock = FakeClock()
        fake.script("m1", Reply(status=503))
        async with Hub.from_config(config(fake, "m1"), clock=clock) as hub:
            text = "".join([c.text async for c in hub.stream(HELLO)])
        assert ("echo: Hello", ["m1", "m1"], [0.125]) == (text, seen(fake), clock.sleeps)


class TestRequestProblems:
    async def test_context_overflow_shrinks_max_tokens(self, fake: FakeProvider) -> None:
        """With the provider's numbers, max_tokens is shrunk to fit and the same model retried once."""
        body = {
            "error": {
                "message": "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (5000 in the messages, 4000 in the completion).",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
        fake.script("m1", Reply(status=400, body=body))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=FakeClock()) as hub:
            r = await hub.chat(HELLO, max_tokens=4000)
        assert ("m1", ["m1", "m1"]) == (r.model, seen(fake))
        assert 4000 == fake.requests[0].body["max_tokens"]
        assert 8192 - 5000 - 16 == fake.requests[1].body["max_tokens"]
        assert "closed" == hub.health()["models"]["m1"]["circuit"]

    async def test_context_overflow_escalates_to_a_larger_window(self, fake: FakeProvider) -> None:
        """Without usable numbers the Hub skips to a candidate with a larger context window."""
        body = {
            "error": {
                "message": "prompt is too long",
                "type": "invalid_request_error",
                "code": None,
            }
        }
        fake.script("small", Reply(status=400, body=body))
        cfg = config(
            fake,
            "small",
            "same",
            "large",
            small={"context_window": 8000},
            same={"context_window": 8000},
            large={"context_window": 128000},
        )
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            r = await hub.chat(HELLO)
        assert ("large", ["small", "large"]) == (r.model, seen(fake))

    async def test_context_overflow_with_no_larger_window_raises_it(
        self, fake: FakeProvider
    ) -> None:
        """When every later candidate's window is no larger, the overflow itself is raised."""
        fake.script(
            "a",
            Reply(
                status=400,
                body={"error": {"message": "prompt is too long", "type": "x", "code": None}},
            ),
        )
        cfg = config(fake, "a", "b", a={"context_window": 8000}, b={"context_window": 8000})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            with pytest.raises(ContextOverflowError) as info:
                await hub.chat(HELLO)
        assert ["a"] == seen(fake)
        assert info.value.trace is not None

    async def test_context_overflow_on_the_last_candidate_raises(self, fake: FakeProvider) -> None:
        """With nowhere to escalate, the provider's reason is raised."""
        fake.script(
            "m1",
            Reply(
                status=400,
                body={"error": {"message": "prompt is too long", "type": "x", "code": None}},
            ),
        )
        async with Hub.from_config(config(fake, "m1"), clock=FakeClock()) as hub:
            with pytest.raises(ContextOverflowError, match="prompt is too long"):
                await hub.chat(HELLO)

    async def test_content_filter_is_raised_without_retry(self, fake: FakeProvider) -> None:
        """A content-policy rejection is raised at once, and does not touch health."""
        body = {
            "error": {"message": "filtered", "type": None, "param": None, "code": "content_filter"}
        }
        fake.script("m1", Reply(status=400, body=body))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=FakeClock()) as hub:
            with pytest.raises(ContentPolicyError):
                await hub.chat(HELLO)
            assert hub.health()["models"]["m1"]["failure_rate"] is None
        assert ["m1"] == seen(fake)

    async def test_content_filter_fallback_when_configured(self, fake: FakeProvider) -> None:
        """With content_policy_fallback, the next candidate gets a chance."""
        body = {
            "error": {"message": "filtered", "type": None, "param": None, "code": "content_filter"}
        }
        fake.script("m1", Reply(status=400, body=body))
        cfg = config(fake, "m1", "m2", failover={"content_policy_fallback": True})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            assert "m2" == (await hub.chat(HELLO)).model

    async def test_prefill_rejecting_fallback_moves_on(self, fake: FakeProvider) -> None:
        """A model that rejects assistant prefill is skipped without counting against its health."""
        body = {
            "error": {
                "message": "This model does not support assistant message prefill. The conversation must end with a user message.",
                "type": "invalid_request_error",
                "code": None,
            }
        }
        fake.script("m1", Reply(status=400, body=body))
        caps = {"capabilities": ["prefill"]}
        cfg = config(
            fake, "m1", "m2", "noprefill", m1=caps, m2=caps, noprefill={"capabilities": []}
        )
        prefill = [*HELLO, {"role": "assistant", "content": "Sure,"}]
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            r = await hub.chat(prefill)
            assert hub.health()["models"]["m1"]["failure_rate"] is None
        assert ("m2", ["m1", "m2"]) == (r.model, seen(fake))
        assert r.trace is not None
        assert ("noprefill", "missing capability: prefill") == (
            r.trace.excluded[0].model,
            r.trace.excluded[0].reason,
        )

    async def test_auth_failure_takes_the_credential_out(self, fake: FakeProvider) -> None:
        """A 401 disables the key for that model; it is skipped until an operator re-enables it."""
        cfg = config(fake, "m1")
        cfg["providers"]["b"] = {
            "kind": "anthropic",
            "base_url": fake.anthropic_base_url,
            "http": HTTP["impl"],
        }
        cfg["models"]["c"] = {"provider": "b", "pricing": {"input": 9, "output": 9}}
        fake.script("m1", Reply(status=401))
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            assert "c" == (await hub.chat(HELLO)).model
            expected = {"o": {"reason": "auth", "disabled_for_s": None, "models": ["m1"]}}
            assert expected == hub.health()["credentials"]
            r = await hub.chat(HELLO)
            assert r.trace is not None
            assert "credential of 'o' disabled for 'm1' (auth)" == r.trace.excluded[0].reason
            hub.enable_credential("o")
            assert "m1" == (await hub.chat(HELLO)).model
        assert ["m1", "c", "c", "m1"] == seen(fake)


class TestBreakerLifecycle:
    async def test_flapping_primary(self, fake: FakeProvider) -> None:
        """Down: the circuit opens; after the open period one probe; up: traffic returns; down again: longer."""
        clock = FakeClock()
        fake.default("m1", Reply(status=503))
        lone = {"breaker": {"probe_interval": 600}}  # the lone half-open probe, no ride-alongs
        async with Hub.from_config(config(fake, "m1", "m2", failover=lone), clock=clock) as hub:
            for _ in range(5):
                await hub.chat(HELLO)
            fake.clear()  # forgets requests and scripts: m1 is healthy again
            clock.advance(29)
            assert "m2" == (await hub.chat(HELLO)).model
            assert ["m2"] == seen(fake)
            clock.advance(1)
            fake.clear()
            assert "m1" == (await hub.chat(HELLO)).model  # the probe succeeds: the circuit closes
            assert ["m1"] == seen(fake)
            assert "closed" == hub.health()["models"]["m1"]["circuit"]
            fake.default("m1", Reply(status=503))
            for _ in range(5):
                await hub.chat(HELLO)
            fake.clear()
            fake.default("m1", Reply(status=503))
            clock.advance(30)
            await hub.chat(HELLO)  # the probe fails: re-opened for twice as long
            assert ["m1", "m2"] == seen(fake)
            assert 60.0 == pytest.approx(hub.health()["models"]["m1"]["open_for_s"])

    async def test_every_circuit_open_still_tries_one(self, fake: FakeProvider) -> None:
        """When every candidate's circuit is open, the one due soonest is still tried."""
        clock = FakeClock()
        fake.default(None, Reply(status=503))
        cfg = config(fake, "m1", failover={"max_retries": 0})
        async with Hub.from_config(cfg, clock=clock) as hub:
            for _ in range(5):
                with pytest.raises(ProviderUnavailableError):
                    await hub.chat(HELLO)
            fake.default(None, Reply(text="back"))
            r = await hub.chat(HELLO)
        assert "back" == r.text
        assert r.trace is not None
        assert (r.trace.candidates[0].note or "").startswith("every candidate was blocked")


class TestProbes:
    async def test_a_probe_closed_early_is_handed_back(self, fake: FakeProvider) -> None:
        """A half-open probe whose stream the caller abandons does not leave the circuit stuck."""
        clock = FakeClock()
        fake.default("m1", Reply(status=503))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            for _ in range(5):
                await hub.chat(HELLO)
            fake.clear()
            clock.advance(30)
            async with hub.stream(HELLO) as stream:
                async for _ in stream:
                    break  # the probe (m1) delivered a chunk; the caller leaves
            assert "half_open" == hub.health()["models"]["m1"]["circuit"]
            assert "m1" == (await hub.chat(HELLO)).model  # a new probe may go


class TestAccounting:
    async def test_the_answering_model_is_billed(self, fake: FakeProvider) -> None:
        """After a failover, response names the fallback and prices its usage at its own rates."""
        fake.script("m1", Reply(status=503))
        fake.script("m2", Reply(text="ok", usage=(1000, 100)))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=FakeClock()) as hub:
            r = await hub.chat(HELLO)
        assert ("m2", "o") == (r.model, r.provider)
        assert (1000 * 2 + 100 * 2) / 1e6 == pytest.approx(r.cost_usd)
        assert r.trace is not None
        first = r.trace.attempts[0]
        assert ("m1", "overloaded", 503, None) == (
            first.model,
            first.outcome,
            first.status,
            first.usage,
        )

    async def test_interrupted_stream_bills_what_it_got(self, fake: FakeProvider) -> None:
        """An Anthropic stream cut after output reports its partial usage and cost in the trace."""
        cfg = {
            "providers": {
                "a": {
                    "kind": "anthropic",
                    "base_url": fake.anthropic_base_url,
                    "http": HTTP["impl"],
                }
            },
            "models": {"c": {"provider": "a", "pricing": {"input": 1, "output": 1}}},
            "failover": {"continue_streams": "off"},
        }
        fake.script("c", Reply(text="a b c d", usage=(50, 4), cut_after=2))
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            stream = hub.stream(HELLO)
            with pytest.raises(StreamInterrupted) as info:
                async for _ in stream:
                    pass
        attempt = stream.trace.attempts[-1]
        assert info.value.usage is not None
        assert 50 == info.value.usage.input_tokens
        assert attempt.usage == info.value.usage
        assert attempt.cost_usd == pytest.approx((50 + info.value.usage.output_tokens) / 1e6)


class TestRetryBudget:
    async def test_retries_stop_when_the_budget_is_spent(self, fake: FakeProvider) -> None:
        """Retries never exceed the budget: with ratio 0 and burst 2, only two retries ever happen."""
        fake.default("m1", Reply(status=500))
        cfg = config(
            fake,
            "m1",
            failover={
                "retry_budget": 0,
                "retry_burst": 2,
                "breaker": {"failures": 100, "min_calls": 100, "window": 100},
            },
        )
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            for _ in range(4):
                with pytest.raises(ProviderUnavailableError) as info:
                    await hub.chat(HELLO)
                assert ErrorClass.TRANSIENT == info.value.error_class
        assert 4 + 2 == len(fake.requests)


class TestHedging:
    async def test_slow_primary_is_hedged_and_the_loser_cancelled(self, fake: FakeProvider) -> None:
        """After hedge_after the next candidate starts; the first answer wins, the other is cancelled."""
        fake.script("m1", Reply(text="slow", delay_headers=2))
        cfg = config(fake, "m1", "m2", failover={"hedge_after": 0.1})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            started = time.monotonic()
            r = await hub.chat(HELLO)
            elapsed = time.monotonic() - started
        assert ("m2", ["m1", "m2"]) == (r.model, seen(fake))
        assert elapsed < 1.5
        assert r.trace is not None
        assert {("m2", "ok"), ("m1", "hedge_cancelled")} == {
            (a.model, a.outcome) for a in r.trace.attempts
        }

    async def test_stream_hedge_races_for_the_first_chunk(self, fake: FakeProvider) -> None:
        """A stream whose first token is slow is hedged; only the winner's chunks are delivered."""
        fake.script("m1", Reply(text="slow words", delay_first_token=2))
        fake.script("m2", Reply(text="quick words"))
        cfg = config(fake, "m1", "m2", failover={"hedge_after": 0.1})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            stream = hub.stream(HELLO)
            text = "".join([c.text async for c in stream])
        assert ("quick words", "m2") == (text, stream.response.model)

    async def test_fast_primary_is_not_hedged(self, fake: FakeProvider) -> None:
        """An answer before the hedging delay means no second request."""
        cfg = config(fake, "m1", "m2", failover={"hedge_after": 5})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            r = await hub.chat(HELLO)
        assert ("m1", ["m1"]) == (r.model, seen(fake))

    async def test_hedges_spend_the_retry_budget(self, fake: FakeProvider) -> None:
        """With the budget spent, the Hub waits for the primary instead of hedging."""
        fake.script("m1", Reply(text="slow but sure", delay_headers=0.3))
        cfg = config(
            fake, "m1", "m2", failover={"hedge_after": 0.05, "retry_budget": 0, "retry_burst": 0}
        )
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            r = await hub.chat(HELLO)
        assert ("m1", ["m1"]) == (r.model, seen(fake))

    async def test_primary_failing_early_fails_over_normally(self, fake: FakeProvider) -> None:
        """A primary that fails before the hedging delay is an ordinary failover."""
        fake.script("m1", Reply(status=503))
        cfg = config(fake, "m1", "m2", "m3", failover={"hedge_after": 5})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            r = await hub.chat(HELLO)
        assert ("m2", ["m1", "m2"]) == (r.model, seen(fake))

    async def test_both_racers_failing_moves_on(self, fake: FakeProvider) -> None:
        """When primary and hedge both fail, the third candidate answers."""
        fake.script("m1", Reply(status=503, delay_headers=0.3))
        fake.script("m2", Reply(status=503))
        cfg = config(fake, "m1", "m2", "m3", failover={"hedge_after": 0.05})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            r = await hub.chat(HELLO)
        assert "m3" == r.model
        assert ["m1", "m2", "m3"] == sorted(seen(fake))  # type: ignore[type-var]

    async def test_hedge_after_the_primarys_p95_first_token_time(self) -> None:
        """With hedge_p95 the delay is the primary's observed p95 time to first chunk."""
        import anyio

        from tokenhub._models import ChatResponse
        from tokenhub.providers import Call, Capabilities, Classification

        clock = FakeClock()

        class Timed:
            """Streams one chunk after a (fake) 50 ms, or a real delay when told to be slow."""

            slow = False

            def capabilities(self, model: str) -> Capabilities:
                return Capabilities()

            async def send(self, call: Call) -> ChatResponse:  # pragma: no cover - streams only
                raise NotImplementedError

            async def stream(self, call: Call) -> Any:
                if call.model == "m1" and self.slow:
                    await anyio.sleep(2)
                clock.advance(0.05)
                yield call.chunk(text=call.model)
                yield call.chunk(finish_reason="stop")

            def classify(
                self, status: int, headers: Any, body: bytes
            ) -> Classification:  # pragma: no cover
                raise NotImplementedError

            async def aclose(self) -> None:
                pass

        provider = Timed()
        cfg = {
            "models": {"m1": {"provider": "x", "weight": 2}, "m2": {"provider": "x"}},
            "failover": {"hedge_p95": True},
        }
        async with Hub.from_config(cfg, providers={"x": provider}, clock=clock) as hub:
            for _ in range(5):
                assert "m1" == "".join([c.text async for c in hub.stream(HELLO)])
            assert 50.0 == pytest.approx(hub.health()["models"]["m1"]["ttft_p95_ms"])
            provider.slow = True
            started = time.monotonic()
            assert "m2" == "".join([c.text async for c in hub.stream(HELLO)])
            assert time.monotonic() - started < 1.5


class TestContinuation:
    def cfg(self, fake: FakeProvider) -> dict[str, Any]:
        cfg = config(fake, "m1", "m2")
        cfg["models"]["m2"]["capabilities"] = ["prefill"]
        return cfg

    async def test_cut_stream_continues_on_a_prefill_model(self, fake: FakeProvider) -> None:
        """A cut answer is continued by a prefill-capable fallback (its space not repeated)."""
        fake.script("m1", Reply(text="Once upon a time", cut_after=2))
        fake.script("m2", Reply(text=" there was a fox."))
        async with Hub.from_config(self.cfg(fake), clock=FakeClock()) as hub:
            stream = hub.stream(HELLO)
            text = "".join([c.text async for c in stream])
        assert "Once upon there was a fox." == text
        assert ("m2", text) == (stream.response.model, stream.response.text)
        sent = fake.requests[-1].body["messages"]
        assert {"role": "assistant", "content": "Once upon"} == sent[-1]
        assert ["stream_interrupted", "ok"] == [a.outcome for a in stream.trace.attempts]

    async def test_a_rejected_prefill_does_not_mask_the_failure(self, fake: FakeProvider) -> None:
        """A rejected prefill and answers that differ leave the original interruption raised."""
        fake.script("m1", Reply(text="Once upon a time", cut_after=2))
        fake.script(
            "m2",
            Reply(
                status=400,
                body={
                    "error": {
                        "message": "This model does not support assistant message prefill.",
                        "type": "invalid_request_error",
                        "code": None,
                    }
                },
            ),
        )
        async with Hub.from_config(self.cfg(fake), clock=FakeClock()) as hub:
            with pytest.raises(StreamInterrupted) as info:
                _ = [c async for c in hub.stream(HELLO)]
        assert ("Once upon ", "m1") == (info.value.partial_text, info.value.model)

    async def test_never_with_tool_calls_in_flight(self, fake: FakeProvider) -> None:
        """A stream cut in the middle of a tool call is never continued by prefill."""
        fake.script(
            "m1",
            Reply(
                tool_calls=[ScriptedToolCall(id="c", name="f", arguments={"a": "long value"})],
                cut_after=2,
            ),
        )
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        cfg = self.cfg(fake)
        for m in cfg["models"].values():
            m["capabilities"] = ["tools", "prefill"]
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            with pytest.raises(StreamInterrupted):
                _ = [c async for c in hub.stream(HELLO, tools=tools)]
        # Regenerated and checked (the echoes differ), never continued by prefill.
        assert ["m1", "m2", "m1"] == seen(fake)
        assert all(r.body["messages"][-1]["role"] == "user" for r in fake.requests)
