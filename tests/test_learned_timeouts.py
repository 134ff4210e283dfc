"""Learned first-token and stall limits: from each model's history, per stream, on by default.

The Hub's clock is a FakeClock: it stands still, so every sample is 0 ms and a
learned limit is its floor. Real time passes only where a provider's real delay
is the behaviour under test.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tokenhub import Hub
from tokenhub._settings import LearnedTimeouts
from tokenhub.errors import ConfigError, StreamInterrupted
from tokenhub.routing._state import RuntimeState
from tokenhub.testing import FakeClock, FakeProvider, Reply

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]
#: Small floors (seconds) where the defaults would make a test wait longer than it needs.
FAST = {"floor": 0.3, "stall_floor": 0.3}


def config(
    fake: FakeProvider,
    wire: str,
    http: str,
    *,
    failover: dict[str, Any] | None = None,
    **models: dict[str, Any],
) -> dict[str, Any]:
    """Models m1 then m2 (cheapest first) on one provider of the ``wire`` kind."""
    url = fake.openai_base_url if wire == "openai" else fake.anthropic_base_url
    entries = {
        n: {"provider": "p", "pricing": {"input": i + 1, "output": i + 1}, **models.get(n, {})}
        for i, n in enumerate(("m1", "m2"))
    }
    return {
        "providers": {"p": {"kind": wire, "base_url": url, "http": http, "api_key": "sk-test-1"}},
        "models": entries,
        "routing": {"mode": "cheap"},
        "failover": failover or {},
    }


async def warm(hub: Hub, n: int = 10) -> None:
    """Stream ``n`` fast answers from m1 (the first candidate)."""
    for _ in range(n):
        stream = hub.stream(HELLO)
        _ = [c async for c in stream]
        assert "m1" == stream.response.model


async def timed_stream(hub: Hub) -> tuple[str, str, float, list[str]]:
    started = time.monotonic()
    stream = hub.stream(HELLO)
    text = "".join([c.text async for c in stream])
    outcomes = [a.outcome for a in stream.trace.attempts]
    return text, stream.response.model, time.monotonic() - started, outcomes


class TestFirstToken:
    async def test_slow_first_token_after_fast_history_fails_over(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """On the defaults, a first chunk far later than m1's history fails over to m2 in ~1 s."""
        async with Hub.from_config(config(fake, wire, http_impl), clock=FakeClock()) as hub:
            await warm(hub)
            fake.script("m1", Reply(text="too late", delay_first_token=3))
            text, model, elapsed, outcomes = await timed_stream(hub)
            health = hub.health()["models"]["m1"]
        assert ("echo: Hello", "m2") == (text, model)
        assert ["provider_down", "ok"] == outcomes
        assert 1.0 <= elapsed < 2.5
        assert 1.0 == health["first_token_timeout_s"]

    async def test_cold_hub_without_prior_cuts_nothing(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """Without history or a prior, a slow first token is waited for, as without learning."""
        cfg = config(fake, wire, http_impl, failover={"learned_timeouts": FAST})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub, 9)  # one sample short of min_samples
            health = hub.health()["models"]["m1"]
            fake.script("m1", Reply(text="late but fine", delay_first_token=0.6))
            text, model, _, outcomes = await timed_stream(hub)
        assert ("late but fine", "m1", ["ok"]) == (text, model, outcomes)
        assert (None, 9) == (health["first_token_timeout_s"], health["ttft_samples"])

    async def test_prior_applies_from_the_first_request(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A model's ``ttft_ms`` prior sets its limit (prior x factor) before any traffic."""
        cfg = config(
            fake, wire, http_impl, failover={"learned_timeouts": FAST}, m1={"ttft_ms": 100}
        )
        fake.script("m1", Reply(text="too late", delay_first_token=3))
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            text, model, elapsed, _ = await timed_stream(hub)
        assert ("echo: Hello", "m2") == (text, model)
        assert 0.4 <= elapsed < 1.5  # 100 ms x 4

    async def test_declared_thinking_model_gets_the_larger_scale(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A model declared ``thinking`` has its limit scaled: its slow first token is waited for."""
        learned = {**FAST, "thinking_scale": 5}
        cfg = config(
            fake, wire, http_impl, failover={"learned_timeouts": learned}, m1={"thinking": True}
        )
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            assert 1.5 == hub.health()["models"]["m1"]["first_token_timeout_s"]
            fake.script("m1", Reply(text="thought hard", delay_first_token=0.6))
            text, model, _, _ = await timed_stream(hub)
        assert ("thought hard", "m1") == (text, model)

    async def test_observed_reasoning_makes_a_model_thinking(self, fake: FakeProvider) -> None:
        """A model seen reporting reasoning tokens is treated as thinking from then on."""
        cfg = config(fake, "openai", "httpx", failover={"learned_timeouts": FAST})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            assert 0.3 == hub.health()["models"]["m1"]["first_token_timeout_s"]
            fake.script("m1", Reply(text="hmm", reasoning_tokens=50))
            await warm(hub, 1)
            health = hub.health()["models"]["m1"]
        assert (True, 3.0) == (health["thinking"], health["first_token_timeout_s"])

    async def test_last_candidate_is_never_cut(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """With nothing to fail over to, a learned limit does not cut: the answer is waited for."""
        cfg = config(fake, wire, http_impl, failover={"learned_timeouts": FAST})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            fake.script("m1", Reply(text="slow", delay_first_token=0.6))
            stream = hub.stream(HELLO, model="m1")
            text = "".join([c.text async for c in stream])
        assert ("slow", ["ok"]) == (text, [a.outcome for a in stream.trace.attempts])

    async def test_chat_is_never_cut_by_a_learned_limit(self, fake: FakeProvider) -> None:
        """A whole answer takes as long as it is long: learned limits apply to streams only."""
        cfg = config(fake, "openai", "httpx", failover={"learned_timeouts": FAST})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            fake.script("m1", Reply(text="long answer", delay_first_token=0.6))
            r = await hub.chat(HELLO)
        assert ("long answer", "m1") == (r.text, r.model)

    async def test_static_first_token_timeout_overrides(self, fake: FakeProvider) -> None:
        """``first_token_timeout`` replaces the learned limit (here: longer than it)."""
        failover = {"first_token_timeout": 5, "learned_timeouts": FAST}
        cfg = config(fake, "openai", "httpx", failover=failover)
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            fake.script("m1", Reply(text="within 5 s", delay_first_token=0.6))
            text, model, _, _ = await timed_stream(hub)
        assert ("within 5 s", "m1") == (text, model)

    async def test_learning_can_be_turned_off(self, fake: FakeProvider) -> None:
        """``learned_timeouts.enabled: false`` learns no limit."""
        cfg = config(fake, "openai", "httpx", failover={"learned_timeouts": {"enabled": False}})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            health = hub.health()["models"]["m1"]
        assert (None, None, 10) == (
            health["first_token_timeout_s"],
            health["stall_timeout_s"],
            health["ttft_samples"],
        )


class TestStall:
    async def test_learned_stall_limit_interrupts_a_stalled_stream(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """After fast streams, a silence past the learned stall limit is a StreamInterrupted."""
        failover = {"learned_timeouts": FAST, "continue_streams": "off"}
        cfg = config(fake, wire, http_impl, failover=failover)
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            assert 0.3 == hub.health()["models"]["m1"]["stall_timeout_s"]
            fake.script("m1", Reply(text="one two three", stall_after=1))
            started = time.monotonic()
            with pytest.raises(StreamInterrupted) as info:
                _ = [c async for c in hub.stream(HELLO)]
            elapsed = time.monotonic() - started
        assert "one " == info.value.partial_text
        assert 0.3 <= elapsed < 1.5

    async def test_a_stall_past_the_learned_limit_is_rescued(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A stall caught by the learned limit is rescued by the fallback into the whole answer."""
        cfg = config(fake, wire, http_impl, failover={"learned_timeouts": FAST})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            fake.script("m1", Reply(text="one two three", stall_after=1))
            fake.script("m2", Reply(text="one two three"))
            started = time.monotonic()
            stream = hub.stream(HELLO)
            text = "".join([c.text async for c in stream])
            elapsed = time.monotonic() - started
        assert ("one two three", "m2") == (text, stream.response.model)
        assert 0.3 <= elapsed < 1.5

    async def test_jitter_below_the_limit_does_not_interrupt(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """Gaps between chunks shorter than the learned stall limit pass."""
        cfg = config(fake, wire, http_impl, failover={"learned_timeouts": FAST})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            fake.script("m1", Reply(text="one two three four", delay_between_chunks=0.1))
            text, model, _, _ = await timed_stream(hub)
        assert ("one two three four", "m1") == (text, model)

    async def test_learned_gaps_come_from_real_streams(self, fake: FakeProvider) -> None:
        """On the real clock, the stall limit follows the longest gaps seen (x factor)."""
        learned = {**FAST, "min_samples": 3, "stall_floor": 0.01}
        cfg = config(fake, "openai", "httpx", failover={"learned_timeouts": learned})
        fake.default("m1", Reply(text="a b c", delay_between_chunks=0.05))
        async with Hub.from_config(cfg) as hub:
            await warm(hub, 3)
            health = hub.health()["models"]["m1"]
        assert (3, 3) == (health["ttft_samples"], health["gap_samples"])
        assert 0.2 <= health["stall_timeout_s"] < 1.0

    async def test_static_stall_timeout_overrides(self, fake: FakeProvider) -> None:
        """``stall_timeout`` replaces the learned stall limit (here: longer than it)."""
        failover = {"stall_timeout": 5, "learned_timeouts": FAST}
        cfg = config(fake, "openai", "httpx", failover=failover)
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            await warm(hub)
            fake.script("m1", Reply(text="one two", delay_between_chunks=0.6))
            text, model, _, _ = await timed_stream(hub)
        assert ("one two", "m1") == (text, model)


class TestConfig:
    @pytest.mark.parametrize(
        ("section", "expected"),
        [
            ({"quantile": 0}, ("failover.learned_timeouts.quantile", "must be above 0")),
            ({"factor": 0.5}, ("failover.learned_timeouts.factor", "must be at least 1")),
            ({"thinking_scale": 0}, ("failover.learned_timeouts.thinking_scale", "at least 1")),
            ({"floor": 0}, ("failover.learned_timeouts.floor", "must be positive")),
            ({"stall_floor": -1}, ("failover.learned_timeouts.stall_floor", "must be positive")),
            ({"ceiling": 2, "floor": 3}, ("failover.learned_timeouts.ceiling", "not be below")),
            ({"min_samples": 65}, ("failover.learned_timeouts.min_samples", "between 1 and 64")),
            ({"prompt_tokens_per_s": 0}, ("failover.learned_timeouts.prompt_tokens_per_s", "")),
            ({"bogus": 1}, ("failover.learned_timeouts", "")),
        ],
    )
    async def test_bad_settings_name_their_path(
        self, fake: FakeProvider, section: dict[str, Any], expected: tuple[str, str]
    ) -> None:
        """Each bad learned_timeouts setting is reported at its path."""
        cfg = config(fake, "openai", "httpx", failover={"learned_timeouts": section})
        with pytest.raises(ConfigError) as info:
            Hub.from_config(cfg)
        path, reason = expected
        assert any(p.startswith(path) and reason in why for p, why in info.value.errors)

    async def test_bad_prior_names_its_path(self, fake: FakeProvider) -> None:
        """A model's ``ttft_ms`` must be positive, and its error names the model."""
        cfg = config(fake, "openai", "httpx", m1={"ttft_ms": 0})
        with pytest.raises(ConfigError) as info:
            Hub.from_config(cfg)
        assert [("models.m1.ttft_ms", "must be positive")] == list(info.value.errors)


class TestState:
    def test_limit_rises_with_the_first_slow_sample(self) -> None:
        """A cached limit is recomputed at once when a sample above its quantile arrives."""
        state = RuntimeState(clock=FakeClock().monotonic)
        state.declare_timeouts(LearnedTimeouts(min_samples=10), {})
        for _ in range(20):
            state.record_success("m", latency_ms=1.0, output_tokens=None, ttft_ms=500.0)
        assert 2.0 == state.first_token_limit("m")  # 500 ms x 4
        state.record_success("m", latency_ms=1.0, output_tokens=None, ttft_ms=5000.0)
        state.record_success("m", latency_ms=1.0, output_tokens=None, ttft_ms=5000.0)
        assert 20.0 == state.first_token_limit("m")  # p95 of 22: the 21st, 5 s x 4

    def test_limits_are_clamped_and_scaled(self) -> None:
        """A limit stays within floor and ceiling; a thinking model's is scaled, floor included."""
        state = RuntimeState(clock=FakeClock().monotonic)
        settings = LearnedTimeouts(min_samples=1, floor=1.0, ceiling=30.0, thinking_scale=10)
        state.declare_timeouts(settings, {"t": (None, True)})
        for model in ("fast", "slow", "t"):
            ms = {"fast": 1.0, "slow": 60_000.0, "t": 1.0}[model]
            state.record_success(model, latency_ms=1.0, output_tokens=None, ttft_ms=ms, gap_ms=ms)
        assert (1.0, 30.0, 10.0) == tuple(map(state.first_token_limit, ("fast", "slow", "t")))
        assert (5.0, 30.0, 30.0) == tuple(map(state.stall_limit, ("fast", "slow", "t")))
