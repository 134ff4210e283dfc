"""Client-side request limits (``state.limits``), kept fleet-wide through leases in Redis."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import pytest

from tokenhub import Hub
from tokenhub._secret import Secret
from tokenhub.errors import ConfigError, RateLimitError
from tokenhub.routing._redis_state import RedisState
from tokenhub.testing import FakeClock, FakeProvider

if TYPE_CHECKING:
    from collections.abc import Callable

#: The start of a minute, so that a test's window does not end under it.
MINUTE = 1_800_000_000.0


def until(check: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("did not happen in time")
        time.sleep(0.001)


def send(state: RedisState, model: str = "m", provider: str = "p") -> bool:
    """Route and admit one request as the router and engine do: blocked, then acquire."""
    return state.blocked(model, provider) is None and state.acquire(model)


def replicas(url: str, clock: FakeClock, n: int, rpm: int, lease: int) -> list[RedisState]:
    prefix = f"rl{os.urandom(4).hex()}:"
    out = [
        RedisState(
            Secret(url),
            prefix=prefix,
            clock=clock.monotonic,
            wall=clock.wall,
            limits={"p": (rpm, lease)},
        )
        for _ in range(n)
    ]
    until(lambda: all(r.connected for r in out))
    return out


def drain(fleet: list[RedisState], seconds: float = 0.5) -> list[int]:
    """Send from every replica in turn until none got anything for ``seconds``."""
    sent = [0] * len(fleet)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < seconds:
        for i, r in enumerate(fleet):
            if send(r):
                sent[i] += 1
                quiet_since = time.monotonic()
        time.sleep(0.001)
    return sent


class TestFleetLimit:
    def test_the_fleet_never_exceeds_the_limit(self, redis_url: str) -> None:
        """Three replicas sending as fast as they can send exactly ``rpm`` in one window."""
        clock = FakeClock(start=50.0, wall=MINUTE + 1)
        fleet = replicas(redis_url, clock, 3, rpm=10, lease=2)
        try:
            sent = drain(fleet)
            assert 10 == sum(sent)
            assert all(n > 0 for n in sent)  # shared, not taken by one
            block = fleet[0].blocked("m", "p")
            assert block is not None
            assert ("rate_limited", "client-side limit of 'p' reached (10 rpm)") == (
                block.kind,
                block.reason,
            )
            assert pytest.approx(50.0 + 59.0) == block.until  # the end of the window
            assert pytest.approx(50.0 + 59.0) == fleet[1].not_before("m")
        finally:
            for r in fleet:
                r.close()

    def test_the_next_window_allows_again(self, redis_url: str) -> None:
        """Once the minute is over, the fleet may send ``rpm`` requests again."""
        clock = FakeClock(start=50.0, wall=MINUTE + 1)
        fleet = replicas(redis_url, clock, 2, rpm=4, lease=1)
        try:
            assert 4 == sum(drain(fleet, 0.3))
            clock.advance(60.0)
            assert 4 == sum(drain(fleet, 0.3))
        finally:
            for r in fleet:
                r.close()

    def test_other_providers_are_not_limited(self, redis_url: str) -> None:
        """A limit on one provider leaves the others' models alone."""
        clock = FakeClock(start=50.0, wall=MINUTE + 1)
        (state,) = replicas(redis_url, clock, 1, rpm=1, lease=1)
        try:
            until(lambda: send(state))
            assert not send(state)
            assert all(send(state, "other", "q") for _ in range(5))
        finally:
            state.close()

    def test_a_last_resort_probe_is_counted(self, redis_url: str) -> None:
        """A request the engine sends with no allowance left is added to the fleet's count."""
        import redis

        clock = FakeClock(start=50.0, wall=MINUTE + 1)
        (state,) = replicas(redis_url, clock, 1, rpm=2, lease=1)
        try:
            assert 2 == sum(drain([state], 0.3))
            state.force_probe("m")  # every candidate was blocked: the engine sends anyway
            key = f"{state.prefix}rpm:p:{int((MINUTE + 1) // 60)}"
            with redis.Redis.from_url(redis_url) as client:
                until(lambda: int(client.get(key) or 0) == 4)  # 2 sent, 1 refused lease, 1 owed
        finally:
            state.close()

    def test_without_redis_each_replica_keeps_the_limit_alone(self) -> None:
        """With Redis unreachable a replica grants itself the limit: it never waits."""
        clock = FakeClock(start=50.0, wall=MINUTE + 1)
        state = RedisState(
            Secret("redis://127.0.0.1:9/0"),
            clock=clock.monotonic,
            wall=clock.wall,
            timeout=0.05,
            limits={"p": (3, 1)},
        )
        try:
            assert [True, True, True, False] == [send(state) for _ in range(4)]
        finally:
            state.close()


def _config(fake: FakeProvider, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "failover": {"max_retries": 0},
        "providers": {"o": {"kind": "openai", "base_url": fake.openai_base_url, "api_key": "k"}},
        "models": {"a": {"provider": "o"}, "b": {"provider": "o"}},
        "routing": {"fallbacks": ["b"]},
        "state": state,
    }


@pytest.mark.anyio
async def test_a_hub_keeps_its_limit(fake: FakeProvider, redis_url: str) -> None:
    """Past its provider's limit a Hub sends nothing and raises RateLimitError."""
    clock = FakeClock(start=50.0, wall=MINUTE + 1)
    section = {"redis": redis_url, "prefix": "hubrl:", "limits": {"o": {"rpm": 2, "lease": 1}}}
    config = _config(fake, section)
    config["failover"]["max_server_wait"] = 30.0
    async with Hub.from_config(config, clock=clock) as hub:
        state = hub._state
        messages = [{"role": "user", "content": "hi"}]
        for _ in range(2):
            until(lambda: state.blocked("a", "o") is None)  # a lease has arrived
            await hub.chat(messages, model="a")
        until(lambda: state.not_before("a") > clock.now + 50)  # the fleet's minute is used up
        with pytest.raises(RateLimitError):  # the rest of the minute is longer than it may wait
            await hub.chat(messages, model="a")
        assert 2 == len(fake.requests)
        clock.advance(60.0)  # the next minute
        until(lambda: state.blocked("a", "o") is None)
        await hub.chat(messages, model="a")
    assert 3 == len(fake.requests)


class TestConfig:
    @pytest.mark.parametrize(
        ("state", "path", "why"),
        [
            ({"limits": {"o": {"rpm": 5}}}, "state.limits", "set 'state.redis'"),
            (
                {"redis": "redis://h", "limits": {"x": {"rpm": 5}}},
                "state.limits.x",
                "not a provider",
            ),
            (
                {"redis": "redis://h", "limits": {"o": {"rpm": 0}}},
                "state.limits.o.rpm",
                "at least 1",
            ),
            (
                {"redis": "redis://h", "limits": {"o": {"rpm": 5, "lease": 0}}},
                "state.limits.o.lease",
                "at least 1",
            ),
        ],
    )
    def test_bad_limits_name_the_path(self, state: dict[str, Any], path: str, why: str) -> None:
        """Each problem of ``state.limits`` is a ConfigError naming its path."""
        config = {"providers": {"o": {"kind": "openai"}}, "models": {"a": {"provider": "o"}}}
        with pytest.raises(ConfigError) as info:
            Hub.from_config({**config, "state": state})
        assert any(p == path and why in w for p, w in info.value.errors), info.value.errors
