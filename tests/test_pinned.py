"""A pinned model (``model=``) gets one quick retry on a one-off failure before its fallbacks."""

from __future__ import annotations

from typing import Any

import pytest

from tokenhub import Hub
from tokenhub.testing import FakeClock, FakeProvider, Reply

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]
UPSTREAM = {"openai": "pinned-up", "anthropic": "claude-pinned-up"}
#: full_jitter(0, 0.5) with the default backoff_base 0.25: FakeClock draws 0.5.
QUICK = [0.125]


@pytest.fixture(params=["chat", "stream"])
def mode(request: pytest.FixtureRequest) -> str:
    """Whole answers and streams go through the same attempt loop."""
    return str(request.param)


def config(fake: FakeProvider, wire: str, http: str, **failover: Any) -> dict[str, Any]:
    """``pinned`` speaks ``wire`` and is the cheaper; ``backup`` (OpenAI) is its fallback."""
    common = {"api_key": "sk-test-abcdefgh12345678", "http": http}
    return {
        "providers": {
            "openai": {"kind": "openai", "base_url": fake.openai_base_url, **common},
            "anthropic": {"kind": "anthropic", "base_url": fake.anthropic_base_url, **common},
        },
        "models": {
            "pinned": {
                "provider": wire,
                "upstream": UPSTREAM[wire],
                "pricing": {"input": 1, "output": 1},
            },
            "backup": {"provider": "openai", "pricing": {"input": 9, "output": 9}},
        },
        "routing": {"mode": "cheap", "fallbacks": ["backup"]},
        "failover": failover,
    }


async def ask(hub: Hub, mode: str, model: str | None = "pinned") -> Any:
    if mode == "chat":
        return await hub.chat(HELLO, model=model)
    stream = hub.stream(HELLO, model=model)
    _ = [c async for c in stream]
    return stream.response


def sent(fake: FakeProvider) -> list[str | None]:
    return [r.model for r in fake.requests]


async def test_one_500_is_retried_on_the_pinned_model(
    fake: FakeProvider, wire: str, http_impl: str, mode: str
) -> None:
    """Pinned model, one 500 then OK: the pinned model answers after 2 attempts and a short wait."""
    fake.script(UPSTREAM[wire], Reply(status=500))
    clock = FakeClock()
    async with Hub.from_config(config(fake, wire, http_impl), clock=clock) as hub:
        r = await ask(hub, mode)
    assert ("pinned", [UPSTREAM[wire]] * 2, QUICK) == (r.model, sent(fake), clock.sleeps)
    assert r.trace is not None
    assert ["transient", "ok"] == [a.outcome for a in r.trace.attempts]


async def test_a_reset_is_retried_on_the_pinned_model(
    fake: FakeProvider, wire: str, http_impl: str
) -> None:
    """Pinned model, a connection reset before any byte: one quick retry on it, which answers."""
    fake.script(UPSTREAM[wire], Reply(reset=True))
    clock = FakeClock()
    async with Hub.from_config(config(fake, wire, http_impl), clock=clock) as hub:
        r = await hub.chat(HELLO, model="pinned")
    assert ("pinned", QUICK) == (r.model, clock.sleeps)
    assert r.trace is not None
    assert ["provider_down", "ok"] == [a.outcome for a in r.trace.attempts]


async def test_only_one_retry(fake: FakeProvider, wire: str, http_impl: str) -> None:
    """Two 500s in a row on the pinned model: the second fails over to the backup."""
    fake.script(UPSTREAM[wire], Reply(status=500), Reply(status=502))
    clock = FakeClock()
    async with Hub.from_config(config(fake, wire, http_impl), clock=clock) as hub:
        r = await hub.chat(HELLO, model="pinned")
    assert ("backup", [UPSTREAM[wire]] * 2 + ["backup"]) == (r.model, sent(fake))
    assert QUICK == clock.sleeps


@pytest.mark.parametrize("status", [503, 529, 429])
async def test_overload_and_rate_limit_fail_over_at_once(
    fake: FakeProvider, wire: str, http_impl: str, mode: str, status: int
) -> None:
    """Pinned model, a 503, 529 or 429: the backup answers at once, without a wait."""
    fake.script(UPSTREAM[wire], Reply(status=status))
    clock = FakeClock()
    async with Hub.from_config(config(fake, wire, http_impl), clock=clock) as hub:
        r = await ask(hub, mode)
    assert ("backup", [UPSTREAM[wire], "backup"], []) == (r.model, sent(fake), clock.sleeps)


async def test_unpinned_500_fails_over_at_once(
    fake: FakeProvider, wire: str, http_impl: str, mode: str
) -> None:
    """Without model=, a 500 on the first-ranked model moves on to the next at once."""
    fake.script(UPSTREAM[wire], Reply(status=500))
    clock = FakeClock()
    async with Hub.from_config(config(fake, wire, http_impl), clock=clock) as hub:
        r = await ask(hub, mode, model=None)
    assert ("backup", [UPSTREAM[wire], "backup"], []) == (r.model, sent(fake), clock.sleeps)


async def test_no_retry_budget_fails_over(fake: FakeProvider, wire: str, http_impl: str) -> None:
    """With the retry budget spent, a pinned model's 500 fails over instead of retrying."""
    fake.script(UPSTREAM[wire], Reply(status=500))
    cfg = config(fake, wire, http_impl, retry_budget=0, retry_burst=0)
    clock = FakeClock()
    async with Hub.from_config(cfg, clock=clock) as hub:
        r = await hub.chat(HELLO, model="pinned")
    assert ("backup", [UPSTREAM[wire], "backup"], []) == (r.model, sent(fake), clock.sleeps)


async def test_max_retries_zero_turns_it_off(fake: FakeProvider, wire: str, http_impl: str) -> None:
    """failover.max_retries 0 (no same-model retries) also turns the pinned model's retry off."""
    fake.script(UPSTREAM[wire], Reply(status=500))
    clock = FakeClock()
    async with Hub.from_config(config(fake, wire, http_impl, max_retries=0), clock=clock) as hub:
        r = await hub.chat(HELLO, model="pinned")
    assert ("backup", [UPSTREAM[wire], "backup"]) == (r.model, sent(fake))
