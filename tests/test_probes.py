"""Ride-along probes: a model whose circuit is open is probed beside requests another model serves.

The breaker's periods run on a FakeClock; only the races (a probe slower than the
real answer, or the other way round) use short real delays.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tokenhub import Hub
from tokenhub._store import Store
from tokenhub.errors import ConfigError, ProviderError
from tokenhub.testing import FakeClock, FakeProvider, Reply

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]
HTTP = {"impl": "httpx"}


@pytest.fixture(autouse=True, params=["httpx", "aiohttp"])
def http_impl(request: pytest.FixtureRequest) -> str:
    """Run every probe test on both HTTP implementations."""
    HTTP["impl"] = str(request.param)
    return HTTP["impl"]


def config(fake: FakeProvider, *names: str, wire: str = "openai") -> dict[str, Any]:
    """Models m1, m2, ... cheapest first, on one provider; a circuit opens after one failure."""
    base = fake.openai_base_url if wire == "openai" else fake.anthropic_base_url
    return {
        "providers": {
            "o": {"kind": wire, "base_url": base, "http": HTTP["impl"], "api_key": "sk-test-1234"}
        },
        "models": {
            n: {"provider": "o", "pricing": {"input": i + 1, "output": i + 1}}
            for i, n in enumerate(names)
        },
        "routing": {"mode": "cheap"},
        "failover": {"breaker": {"failures": 1}},
    }


def circuit(hub: Hub, model: str) -> str:
    return str(hub.health()["models"][model]["circuit"])


async def probes_ended(hub: Hub) -> None:
    """Wait (a few seconds at most) until no probe is still running detached from its request."""
    with anyio.fail_after(5):
        while len(hub._engine.detached):
            await anyio.sleep(0.01)


async def open_m1(hub: Hub) -> None:
    """Fail m1 once (its circuit opens) while m2 answers."""
    r = await hub.chat(HELLO)
    assert "m2" == r.model
    assert "open" == circuit(hub, "m1")


class TestRideAlong:
    async def test_failing_probes_never_delay_a_request(self, fake: FakeProvider) -> None:
        """During an outage a probe rides along every probe interval, fails, and costs the request nothing."""
        clock = FakeClock()
        fake.default("m1", Reply(status=503))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            await open_m1(hub)
            fake.default("m2", Reply(delay_headers=0.1))  # m1's 503 comes first
            outcomes = []
            for _ in range(4):
                clock.advance(5)
                started = time.monotonic()
                r = await hub.chat(HELLO)
                assert time.monotonic() - started < 0.6  # m2's 0.1 s, not more
                assert "m2" == r.model
                assert r.trace is not None
                outcomes.append(sorted((a.model, a.outcome) for a in r.trace.attempts))
                clock.advance(1)  # not due yet: no probe
                quiet = await hub.chat(HELLO)
                assert quiet.trace is not None
                assert [("m2", "ok")] == [(a.model, a.outcome) for a in quiet.trace.attempts]
            assert "open" == circuit(hub, "m1")
        assert [[("m1", "probe_failed"), ("m2", "ok")]] * 4 == outcomes

    async def test_recovered_model_serves_within_five_seconds(self, fake: FakeProvider) -> None:
        """After a 40 s outage, the recovered model answers again within 5 s (probe interval)."""
        clock = FakeClock()
        fake.default("m1", Reply(status=503))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            await open_m1(hub)
            recovered_at = 40.0
            back_at = None
            for t in range(1, 60):
                clock.advance(1)
                if t == recovered_at:
                    fake.default("m1", Reply())
                    fake.default("m2", Reply(delay_headers=0.1))  # the probe wins the race
                r = await hub.chat(HELLO)
                if r.model == "m1":
                    back_at = t
                    break
            assert back_at is not None
            assert back_at - recovered_at <= 5
            assert "closed" == circuit(hub, "m1")
            again = await hub.chat(HELLO)
        assert "m1" == again.model
        assert again.trace is not None
        assert [("m1", "ok")] == [(a.model, a.outcome) for a in again.trace.attempts]

    async def test_recovered_model_slower_than_its_fallback_returns(
        self, fake: FakeProvider
    ) -> None:
        """A recovered model slower than its fallback loses every race, yet is back within 5 s: the probe ends detached."""
        clock = FakeClock()
        fake.default("m1", Reply(status=503))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            await open_m1(hub)
            back_at = None
            for t in range(1, 60):
                clock.advance(1)
                if t == 40:
                    fake.default("m1", Reply(delay_headers=0.2))  # m2 always answers first
                r = await hub.chat(HELLO)
                if r.model == "m1":
                    back_at = t
                    break
                await probes_ended(hub)
            assert back_at is not None
            assert back_at - 40 <= 5
            assert r.trace is not None
            assert [("m1", "ok")] == [(a.model, a.outcome) for a in r.trace.attempts]

    async def test_slow_probe_goes_on_without_the_request(self, fake: FakeProvider) -> None:
        """A probe slower than the real answer does not hold the caller, and still closes the circuit when it ends."""
        clock = FakeClock()
        fake.script("m1", Reply(status=503))
        fake.default("m1", Reply(delay_headers=0.5))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            await open_m1(hub)
            clock.advance(5)
            started = time.monotonic()
            r = await hub.chat(HELLO)
            elapsed = time.monotonic() - started
            assert "open" == circuit(hub, "m1")  # the verdict is not in yet
            await probes_ended(hub)
            assert "closed" == circuit(hub, "m1")
        assert elapsed < 0.4
        assert "m2" == r.model
        assert r.trace is not None
        assert {("m1", "probe_lost"), ("m2", "ok")} == {
            (a.model, a.outcome) for a in r.trace.attempts
        }

    async def test_detached_probe_failure_keeps_the_circuit_open(self, fake: FakeProvider) -> None:
        """A detached probe that fails keeps the circuit open, a full period on, without doubling it."""
        clock = FakeClock()
        fake.script("m1", Reply(status=503), Reply(status=503, delay_headers=0.3))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            await open_m1(hub)
            clock.advance(5)
            await hub.chat(HELLO)
            await probes_ended(hub)
            m1 = hub.health()["models"]["m1"]
        assert "open" == m1["circuit"]
        assert m1["open_for_s"] == pytest.approx(30.0)  # from the probe's end; doubled would be 60

    async def test_closing_the_hub_cancels_a_detached_probe(self, fake: FakeProvider) -> None:
        """Closing the Hub does not wait for a probe still out: it is cancelled, with no verdict."""
        clock = FakeClock()
        fake.script("m1", Reply(status=503))
        fake.default("m1", Reply(delay_headers=5.0))
        hub = Hub.from_config(config(fake, "m1", "m2"), clock=clock)
        await open_m1(hub)
        clock.advance(5)
        assert "m2" == (await hub.chat(HELLO)).model
        started = time.monotonic()
        await hub.aclose()
        assert time.monotonic() - started < 1.0
        assert 0 == len(hub._engine.detached)
        assert "open" == circuit(hub, "m1")

    async def test_probe_answers_when_the_real_attempts_fail(self, fake: FakeProvider) -> None:
        """When every real candidate fails, a probe still in flight that succeeds is the answer."""
        clock = FakeClock()
        fake.script("m1", Reply(status=503), Reply(delay_headers=0.2))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            await open_m1(hub)
            fake.default("m2", Reply(status=503))
            clock.advance(5)
            r = await hub.chat(HELLO)
            assert "closed" == circuit(hub, "m1")
        assert "m1" == r.model
        assert r.trace is not None
        assert [("m2", "overloaded"), ("m1", "ok")] == [
            (a.model, a.outcome) for a in r.trace.attempts
        ]

    async def test_no_probe_on_a_pinned_request(self, fake: FakeProvider) -> None:
        """A request pinned to another model carries no probe."""
        clock = FakeClock()
        fake.default("m1", Reply(status=503))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            await open_m1(hub)
            clock.advance(5)
            r = await hub.chat(HELLO, model="m2")
        assert r.trace is not None
        assert [("m2", "ok")] == [(a.model, a.outcome) for a in r.trace.attempts]
        assert 1 == len(fake.requests_for("m1"))


class TestStreams:
    @pytest.mark.parametrize("wire", ["openai", "anthropic"])
    async def test_slow_probe_loses_to_the_first_chunk(self, fake: FakeProvider, wire: str) -> None:
        """A probe whose first chunk comes later than the real stream's is cancelled."""
        clock = FakeClock()
        fake.script("m1", Reply(status=503))
        fake.default("m1", Reply(delay_first_token=2.0))
        async with Hub.from_config(config(fake, "m1", "m2", wire=wire), clock=clock) as hub:
            await open_m1(hub)
            clock.advance(5)
            started = time.monotonic()
            stream = hub.stream(HELLO)
            text = "".join([c.text async for c in stream])
            elapsed = time.monotonic() - started
            assert "open" == circuit(hub, "m1")
        assert elapsed < 1.0
        assert ("echo: Hello", "m2") == (text, stream.response.model)
        assert {("m1", "probe_lost"), ("m2", "ok")} == {
            (a.model, a.outcome) for a in stream.trace.attempts
        }

    @pytest.mark.parametrize("wire", ["openai", "anthropic"])
    async def test_slow_stream_probe_closes_the_circuit_detached(
        self, fake: FakeProvider, wire: str
    ) -> None:
        """A stream probe that lost the race still closes the circuit once its own first chunk comes."""
        clock = FakeClock()
        fake.script("m1", Reply(status=503))
        fake.default("m1", Reply(delay_first_token=0.3))
        async with Hub.from_config(config(fake, "m1", "m2", wire=wire), clock=clock) as hub:
            await open_m1(hub)
            clock.advance(5)
            stream = hub.stream(HELLO)
            assert "echo: Hello" == "".join([c.text async for c in stream])
            await probes_ended(hub)
            assert "closed" == circuit(hub, "m1")
        assert "m2" == stream.response.model

    async def test_probe_first_chunk_wins_and_closes(self, fake: FakeProvider, wire: str) -> None:
        """A recovered model's probe that delivers the first chunk first serves the stream and closes its circuit."""
        clock = FakeClock()
        fake.script("m1", Reply(status=503))
        async with Hub.from_config(config(fake, "m1", "m2", wire=wire), clock=clock) as hub:
            await open_m1(hub)
            fake.default("m2", Reply(delay_first_token=2.0))
            clock.advance(5)
            started = time.monotonic()
            stream = hub.stream(HELLO)
            text = "".join([c.text async for c in stream])
            elapsed = time.monotonic() - started
            assert "closed" == circuit(hub, "m1")
        assert elapsed < 1.0
        assert ("echo: Hello", "m1") == (text, stream.response.model)
        assert {("m1", "ok"), ("m2", "lost_to_probe")} == {
            (a.model, a.outcome) for a in stream.trace.attempts
        }


class TestLoneProbe:
    async def test_single_model_still_probes_half_open(self, fake: FakeProvider) -> None:
        """With one model, the classic half-open probe (a re-admitted candidate) brings it back."""
        clock = FakeClock()
        fake.script("m1", Reply(status=503))
        async with Hub.from_config(config(fake, "m1"), clock=clock) as hub:
            with pytest.raises(ProviderError):
                await hub.chat(HELLO)
            assert "open" == circuit(hub, "m1")
            clock.advance(5)
            r = await hub.chat(HELLO)
            assert "closed" == circuit(hub, "m1")
        assert "m1" == r.model
        assert r.trace is not None
        assert r.trace.candidates[0].note is not None


class TestCost:
    async def test_probe_cost_reaches_trace_and_ledger(
        self, fake: FakeProvider, tmp_path: Path
    ) -> None:
        """A probe that answers is billed; the beaten real attempt is in the trace, and the spend is the sum."""
        db = tmp_path / "hub.db"
        clock = FakeClock()
        cfg = config(fake, "m1", "m2")
        cfg["store"] = {"path": str(db), "logs": {"enabled": True}}
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 100.0}]
        fake.script("m1", Reply(status=503))
        fake.default(None, Reply(usage=(1000, 1000)))
        async with Hub.from_config(cfg, clock=clock) as hub:
            await open_m1(hub)
            fake.default("m2", Reply(usage=(1000, 1000), delay_headers=2.0))
            clock.advance(5)
            r = await hub.chat(HELLO)
        assert "m1" == r.model
        assert r.cost_usd == pytest.approx(0.002)
        with Store(db) as st:
            usd = sum(row["usd"] for row in st.query("SELECT * FROM spend"))
        assert usd == pytest.approx(0.002 + 0.004)  # m2's first answer, then the probe's

    async def test_detached_probe_cost_reaches_the_ledger(
        self, fake: FakeProvider, tmp_path: Path
    ) -> None:
        """A probe that lost its race is billed when it ends: the spend holds the answer's and the probe's cost."""
        db = tmp_path / "hub.db"
        clock = FakeClock()
        cfg = config(fake, "m1", "m2")
        cfg["store"] = {"path": str(db)}
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 100.0}]
        fake.script("m1", Reply(status=503))
        fake.default("m1", Reply(usage=(1000, 1000), delay_headers=0.3))
        fake.default("m2", Reply(usage=(1000, 1000)))
        async with Hub.from_config(cfg, clock=clock) as hub:
            await open_m1(hub)
            clock.advance(5)
            r = await hub.chat(HELLO)
            await probes_ended(hub)
        assert "m2" == r.model
        with Store(db) as st:
            usd = sum(row["usd"] for row in st.query("SELECT * FROM spend"))
        assert usd == pytest.approx(0.004 + 0.004 + 0.002)  # m2 twice, then the probe on m1


class TestTrio:
    @pytest.mark.parametrize("anyio_backend", ["trio"])
    async def test_detached_probe_on_trio(self, fake: FakeProvider, anyio_backend: str) -> None:
        """Under trio too, a probe that lost its race goes on detached and closes the circuit."""
        if HTTP["impl"] != "httpx":
            pytest.skip("aiohttp runs on asyncio only")
        clock = FakeClock()
        fake.script("m1", Reply(status=503))
        fake.default("m1", Reply(delay_headers=0.2))
        async with Hub.from_config(config(fake, "m1", "m2"), clock=clock) as hub:
            await open_m1(hub)
            clock.advance(5)
            assert "m2" == (await hub.chat(HELLO)).model
            await probes_ended(hub)
            assert "closed" == circuit(hub, "m1")


class TestConfig:
    @pytest.mark.parametrize("bad", [0, -1, "soon"])
    async def test_probe_interval_is_validated(self, fake: FakeProvider, bad: object) -> None:
        """A probe_interval that is not a positive number is a ConfigError naming its path."""
        cfg = config(fake, "m1", "m2")
        cfg["failover"]["breaker"]["probe_interval"] = bad
        with pytest.raises(ConfigError) as info:
            Hub.from_config(cfg)
        assert "failover.breaker.probe_interval" in str(info.value)
