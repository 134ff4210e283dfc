"""Shared runtime state in Redis: two replicas (backends) in one process on one real Redis.

Each event kind and merge rule of ``routing/_redis_state`` is checked on the pair: a
write on one replica, the background threads settling (a bounded polling loop), and
the change visible on the other. Both replicas read one ``FakeClock``, so wall-clock
deadlines convert back to the same monotonic times.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest

from tokenhub import Hub
from tokenhub._config import parse_config
from tokenhub._schema import RedisURL
from tokenhub._secret import Secret
from tokenhub._settings import BreakerSettings
from tokenhub.errors import ConfigError
from tokenhub.routing._redis_state import RedisState, redact_url
from tokenhub.testing import FakeClock, FakeProvider, Reply

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests._redis import RedisServer

FAST = BreakerSettings(failures=3, open_for=10.0, max_open_for=40.0)
PASSWORD = "canary-redis-pw-93f1c7d2a8"


def until(check: Callable[[], object], timeout: float = 3.0) -> None:
    """Wait (polling every millisecond) until ``check()`` is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("the replicas did not converge in time")
        time.sleep(0.001)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(start=100.0)


@pytest.fixture
def pair(redis_url: str, fake_clock: FakeClock) -> Iterator[tuple[RedisState, RedisState]]:
    prefix = f"pair{os.urandom(4).hex()}:"
    replicas = [
        RedisState(
            Secret(redis_url),
            prefix=prefix,
            breaker=FAST,
            clock=fake_clock.monotonic,
            wall=fake_clock.wall,
            flush_interval=0.05,
            snapshot_interval=0.2,
        )
        for _ in range(2)
    ]
    until(lambda: all(r.connected for r in replicas))
    yield replicas[0], replicas[1]
    for r in replicas:
        r.close()


def trip(state: RedisState, model: str = "m", n: int = 3) -> None:
    for _ in range(n):
        state.record_failure(model)


class TestCooldown:
    def test_a_cooldown_reaches_the_other_replica(
        self, pair: tuple[RedisState, RedisState]
    ) -> None:
        """A cooldown on one replica blocks the model on the other, to the same end."""
        a, b = pair
        a.cool_down("m", 10.0)
        until(lambda: b.not_before("m") > 0)
        assert pytest.approx(a.not_before("m"), abs=1e-3) == b.not_before("m")
        block = b.blocked("m", "p")
        assert block is not None
        assert "rate_limited" == block.kind

    def test_extend_only(self, pair: tuple[RedisState, RedisState]) -> None:
        """A shorter cooldown from another replica never shortens one; a longer one extends it."""
        a, b = pair
        a.cool_down("m", 10.0)
        until(lambda: b.not_before("m") > 0)
        b.cool_down("m", 2.0)  # shorter: not even published
        a.cool_down("other", 1.0)  # a later event on the same channel, as a marker
        until(lambda: b.not_before("other") > 0)
        assert pytest.approx(110.0, abs=1e-3) == a.not_before("m")
        b.cool_down("m", 20.0)
        until(lambda: a.not_before("m") > 115.0)
        assert pytest.approx(120.0, abs=1e-3) == a.not_before("m")


class TestBreaker:
    def test_an_opening_is_broadcast(self, pair: tuple[RedisState, RedisState]) -> None:
        """A circuit opened on one replica is open on the other, for the same period."""
        a, b = pair
        trip(a)
        until(lambda: b.blocked("m", "p") is not None)
        block = b.blocked("m", "p")
        assert block is not None
        assert "circuit_open" == block.kind
        assert pytest.approx(110.0, abs=1e-3) == block.until
        assert "open" == b.snapshot()["models"]["m"]["circuit"]

    def test_back_off_doubles_fleet_wide(
        self, pair: tuple[RedisState, RedisState], fake_clock: FakeClock
    ) -> None:
        """The open count travels: a re-open on the other replica lasts twice as long."""
        a, b = pair
        trip(a)
        until(lambda: b.blocked("m", "p") is not None)
        fake_clock.advance(10.0)
        b.force_probe("m")
        b.record_failure("m")  # the probe failed: re-opened, for 2 x 10 s
        until(lambda: a.blocked("m", "p") is not None)
        block = a.blocked("m", "p")
        assert block is not None
        assert pytest.approx(fake_clock.now + 20.0, abs=1e-3) == block.until

    def test_a_close_is_broadcast(
        self, pair: tuple[RedisState, RedisState], fake_clock: FakeClock
    ) -> None:
        """A probe that succeeded on one replica closes the circuit on the other."""
        a, b = pair
        trip(a)
        until(lambda: b.blocked("m", "p") is not None)
        fake_clock.advance(10.0)
        a.force_probe("m")
        a.record_success("m", latency_ms=5.0, output_tokens=None)
        until(lambda: b.snapshot()["models"]["m"]["circuit"] == "closed")
        assert b.acquire("m")

    def test_one_replica_owns_the_half_open_probe(
        self, pair: tuple[RedisState, RedisState], fake_clock: FakeClock
    ) -> None:
        """When the open period ends, exactly one replica of the fleet gets the probe."""
        a, b = pair
        trip(a)
        until(lambda: b.blocked("m", "p") is not None)
        fake_clock.advance(9.9)
        until(lambda: bool(a._held or b._held))  # the lease was taken before the period ended
        fake_clock.advance(0.1)
        assert [True, False] == sorted([a.acquire("m"), b.acquire("m")], reverse=True)
        assert not a.acquire("m")
        assert not b.acquire("m")

    def test_the_probe_lease_lapses(
        self, redis_url: str, fake_clock: FakeClock, pair: tuple[RedisState, RedisState]
    ) -> None:
        """When the lease's owner says nothing, the other replica may probe once it lapses."""
        a, b = pair
        for r in pair:
            r._lease_ms = 100
        trip(a)
        until(lambda: b.blocked("m", "p") is not None)
        fake_clock.advance(9.9)
        until(lambda: bool(a._held or b._held))
        waiting = a if a._held else b
        fake_clock.advance(0.5)  # past the lease, on the replicas' clock
        until(lambda: not waiting._held)
        until(lambda: bool(waiting._held) or waiting.acquire("m"))


class TestCredentials:
    def test_disable_and_enable_reach_the_fleet(self, pair: tuple[RedisState, RedisState]) -> None:
        """A credential disabled on one replica is out on the other; an enable there wins."""
        a, b = pair
        a.disable_credential("p", "auth")
        until(lambda: b.blocked("x", "p") is not None)
        assert {"p": {"reason": "auth", "disabled_for_s": None}} == b.snapshot()["credentials"]
        b.enable_credential("p")
        until(lambda: a.blocked("x", "p") is None)
        a.disable_credential("p", "quota_exhausted", 30.0)  # a newer disable beats the enable
        until(lambda: b.blocked("x", "p") is not None)
        assert {
            "p": {"reason": "quota_exhausted", "disabled_for_s": pytest.approx(30.0, abs=1e-3)}
        } == (b.snapshot()["credentials"])

    def test_an_older_event_never_undoes_a_newer_one(
        self, pair: tuple[RedisState, RedisState]
    ) -> None:
        """Credential events apply in version order: a replayed old disable changes nothing."""
        a, b = pair
        a.disable_credential("p", "auth")
        until(lambda: b.blocked("x", "p") is not None)
        b.enable_credential("p")
        until(lambda: a.blocked("x", "p") is None)
        b._apply(
            {"k": "cred", "o": "elsewhere", "p": "p", "m": None, "r": "auth", "u": None, "v": 1}
        )
        assert b.blocked("x", "p") is None

    def test_a_model_scoped_block_stays_model_scoped(
        self, pair: tuple[RedisState, RedisState]
    ) -> None:
        """A key disabled for one model is out for that model on the other replica only."""
        a, b = pair
        a.disable_credential("p", "auth", model="m1")
        until(lambda: b.blocked("m1", "p") is not None)
        assert b.blocked("m2", "p") is None


class TestCounters:
    def test_latency_and_failures_are_fleet_averages(
        self, pair: tuple[RedisState, RedisState]
    ) -> None:
        """One replica's latencies and failures move the other's averages (additive counters)."""
        a, b = pair
        for _ in range(20):
            a.record_success("m", latency_ms=100.0, output_tokens=None)
        until(lambda: b.latency_ms("m") is not None)
        assert pytest.approx(100.0) == b.latency_ms("m")
        assert 0.0 == b.failure_rate("m")
        for _ in range(20):
            b.record_failure("x")
        until(lambda: (a.failure_rate("x") or 0) > 0.9)

    def test_own_counts_are_not_counted_twice(self, pair: tuple[RedisState, RedisState]) -> None:
        """A replica's own samples come back from the fleet totals without moving its average."""
        a, _ = pair
        a.record_success("m", latency_ms=100.0, output_tokens=None)
        a.record_success("m", latency_ms=200.0, output_tokens=None)
        time.sleep(0.2)  # several flushes
        assert pytest.approx(120.0) == a.latency_ms("m")

    def test_allowances_latest_wins(self, pair: tuple[RedisState, RedisState]) -> None:
        """The remaining allowances one replica saw are the other's too, the latest winning."""
        a, b = pair
        a.observe_limits("m", {"x-ratelimit-remaining-requests": "42"})
        until(lambda: b.remaining().get(("m", "requests")) == 42)
        b.observe_limits("m", {"x-ratelimit-remaining-requests": "7"})
        until(lambda: a.remaining().get(("m", "requests")) == 7)


class TestNamespaces:
    def test_two_prefixes_are_two_fleets(self, redis_url: str, fake_clock: FakeClock) -> None:
        """Replicas under another key prefix on the same Redis see nothing of this fleet."""
        one, two, other = (
            RedisState(
                Secret(redis_url), prefix=p, clock=fake_clock.monotonic, wall=fake_clock.wall
            )
            for p in ("one:", "one:", "two:")
        )
        try:
            until(lambda: one.connected and two.connected and other.connected)
            one.cool_down("m", 5.0)
            until(lambda: two.not_before("m") > 0)
            assert 0.0 == other.not_before("m")
        finally:
            for r in (one, two, other):
                r.close()


class TestOutage:
    def test_redis_killed_and_back(
        self,
        redis_server: RedisServer,
        pair: tuple[RedisState, RedisState],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Without Redis each replica works on its own, says so once, and catches up on return."""
        a, b = pair
        with caplog.at_level(logging.INFO, logger="tokenhub.state"):
            redis_server.kill()
            until(lambda: not a.connected and not b.connected)
            start = time.perf_counter()
            a.cool_down("m", 30.0)  # the request path does not wait on the dead server
            assert time.perf_counter() - start < 0.05
            assert a.blocked("m", "p") is not None
            assert b.blocked("m", "p") is None
            time.sleep(0.3)  # a few reconnection attempts: still one warning each
            redis_server.start()
            until(lambda: b.blocked("m", "p") is not None)
        messages = [r.getMessage() for r in caplog.records if r.name == "tokenhub.state"]
        assert 2 == sum("unreachable" in m for m in messages)
        until(lambda: a.connected)
        assert any("rejoined" in m for m in [r.getMessage() for r in caplog.records])

    def test_a_held_probe_is_released_when_redis_goes(
        self,
        redis_server: RedisServer,
        pair: tuple[RedisState, RedisState],
        fake_clock: FakeClock,
    ) -> None:
        """A replica waiting on another's probe lease probes itself once Redis is gone."""
        a, b = pair
        trip(a)
        until(lambda: b.blocked("m", "p") is not None)
        fake_clock.advance(9.9)
        until(lambda: bool(a._held or b._held))
        waiting = a if a._held else b
        redis_server.kill()
        until(lambda: not waiting.connected and not waiting._held)
        fake_clock.advance(0.1)
        assert waiting.acquire("m")
        redis_server.start()

    def test_unreachable_from_the_start(self) -> None:
        """A replica whose Redis never answers serves from its local view and drops the oldest."""
        state = RedisState(Secret("redis://127.0.0.1:9/0"), queue=2, timeout=0.05)
        try:
            for model in ("a", "b", "c", "d"):
                state.cool_down(model, 5.0)
            assert (2, 2) == (state.dropped, state.status()["queued"])
            assert all(state.blocked(m, "p") is not None for m in "abcd")
        finally:
            state.close()


def _config(fake: FakeProvider, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "failover": {"max_retries": 0},
        "providers": {"o": {"kind": "openai", "base_url": fake.openai_base_url, "api_key": "k"}},
        "models": {"a": {"provider": "o"}, "b": {"provider": "o"}},
        "state": state,
    }


@pytest.mark.anyio
class TestHub:
    async def test_a_hub_on_redis_routes_and_closes(
        self, fake: FakeProvider, redis_url: str
    ) -> None:
        """A Hub with ``state.redis`` answers, reports the backend in health(), and stops it."""
        async with Hub.from_config(_config(fake, {"redis": redis_url, "prefix": "hub:"})) as hub:
            response = await hub.chat([{"role": "user", "content": "hi"}], model="a")
            assert "echo: hi" == response.text
            state = hub._state
            assert isinstance(state, RedisState)
            assert {"backend": "redis", "prefix": "hub:"}.items() <= hub.health()["state"].items()
        assert not state._thread.is_alive()

    async def test_hub_shares_a_429_with_its_sibling(
        self, fake: FakeProvider, redis_url: str
    ) -> None:
        """A 429 with Retry-After answered to one Hub keeps its sibling off that model."""
        config = _config(fake, {"redis": redis_url})
        config["routing"] = {"fallbacks": ["b"]}
        async with Hub.from_config(config) as one, Hub.from_config(config) as two:
            fake.script("a", Reply(status=429, headers={"retry-after": "30"}))
            await one.chat([{"role": "user", "content": "hi"}], model="a")
            until(lambda: two.health()["models"].get("a", {}).get("rate_limited_for_s", 0) > 20)
            before = len(fake.requests_for("a"))
            response = await two.chat([{"role": "user", "content": "hi"}], model="a")
            assert ("b", before) == (response.model, len(fake.requests_for("a")))

    async def test_hub_with_a_silent_redis_carries_on(self, fake: FakeProvider) -> None:
        """A Hub whose Redis accepts connections and never answers serves and closes at once."""
        with socket.socket() as silent:  # completes handshakes (the backlog), reads nothing
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
            config = _config(fake, {"redis": url, "timeout": 5.0})
            async with Hub.from_config(config) as hub:
                start = time.perf_counter()
                for _ in range(3):
                    await hub.chat([{"role": "user", "content": "hi"}], model="a")
                assert not hub.health()["state"]["connected"]
            assert time.perf_counter() - start < 2.0  # chats and aclose; the Redis timeout is 5 s


class TestConfig:
    @pytest.mark.parametrize(
        ("state", "path", "why"),
        [
            ({"redis": "http://x"}, "state.redis", "expected a redis://, rediss:// or unix:// URL"),
            ({"redis": "redis://"}, "state.redis", "the URL names no host"),
            ({"redis": 5}, "state.redis", "expected a redis:// URL or {'env': NAME}"),
            ({"redis": "redis://h", "prefix": ""}, "state.prefix", "1 to 64 printable"),
            ({"redis": "redis://h", "timeout": 0}, "state.timeout", "must be positive"),
            ({"redis": "redis://h", "queue": 0}, "state.queue", "must be at least 1"),
            ({"redis": "redis://h", "nope": 1}, "state.nope", "unknown key"),
        ],
    )
    def test_bad_state_sections_name_the_path(
        self, state: dict[str, Any], path: str, why: str
    ) -> None:
        """Each problem of the ``state`` section is a ConfigError naming its path."""
        config = {"providers": {"o": {"kind": "openai"}}, "models": {"a": {"provider": "o"}}}
        with pytest.raises(ConfigError) as info:
            Hub.from_config({**config, "state": state})
        assert any(p.startswith(path) and why in w for p, w in info.value.errors), info.value.errors

    def test_a_redis_and_a_postgres_url_are_each_checked_as_their_own(self) -> None:
        """``state.redis`` and ``store.url`` in one config: each is parsed by its own rules."""
        config = {
            "providers": {"o": {"kind": "openai"}},
            "models": {"a": {"provider": "o"}},
            "store": {"url": "postgresql://h/db"},
            "state": {"redis": "redis://h:6379/0"},
        }
        parsed = parse_config(config)
        assert isinstance(parsed.state.redis, RedisURL)
        assert parsed.store is not None
        assert not isinstance(parsed.store.url, RedisURL)
        bad = {**config, "store": {"url": "redis://h"}, "state": {"redis": "postgresql://h/db"}}
        with pytest.raises(ConfigError) as info:
            parse_config(bad)
        assert {"store.url", "state.redis"} == {p for p, _ in info.value.errors}

    def test_url_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """``{"env": NAME}`` reads the URL when the Hub is built; an unset one is an error."""
        config = {
            "providers": {"o": {"kind": "openai"}},
            "models": {"a": {"provider": "o"}},
            "state": {"redis": {"env": "TH_REDIS_URL"}},
        }
        monkeypatch.delenv("TH_REDIS_URL", raising=False)
        with pytest.raises(ConfigError) as info:
            Hub.from_config(config)
        assert (("state.redis.env", "TH_REDIS_URL is not set"),) == info.value.errors
        monkeypatch.setenv("TH_REDIS_URL", redis_url)
        state = Hub.from_config(config)._state
        try:
            assert isinstance(state, RedisState)
        finally:
            assert isinstance(state, RedisState)
            state.close()


class TestCanary:
    def test_the_password_never_shows(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Redis URL's password is absent from repr, health(), logs and config errors."""
        url = f"redis://user:{PASSWORD}@127.0.0.1:9/0"
        assert "redis://***@127.0.0.1:9/0" == redact_url(url)
        config: dict[str, Any] = {
            "providers": {"o": {"kind": "openai"}},
            "models": {"a": {"provider": "o"}},
            "state": {"redis": url, "timeout": 0.05},
        }
        shown: list[str] = []
        with caplog.at_level(logging.DEBUG):
            hub = Hub.from_config(config)
            state = hub._state
            assert isinstance(state, RedisState)
            until(lambda: any("unreachable" in r.getMessage() for r in caplog.records))
            shown += [repr(state), repr(hub.health()), repr(hub._config), str(state.status())]
            state.close()
            for bad in (
                {**config["state"], "timeout": -1},
                {"redis": url.replace("redis", "http")},
            ):
                with pytest.raises(ConfigError) as info:
                    Hub.from_config({**config, "state": bad})
                shown += [str(info.value), repr(info.value)]
            monkeypatch.setenv("TH_REDIS_URL", url.replace("redis://", "redis:/"))
            with pytest.raises(ConfigError) as info:
                Hub.from_config({**config, "state": {"redis": {"env": "TH_REDIS_URL"}}})
            shown += [str(info.value)]
        shown += [r.getMessage() for r in caplog.records]
        shown += [repr(r.__dict__) for r in caplog.records]
        assert all(PASSWORD not in text for text in shown)
        assert any("redis://***@127.0.0.1:9/0" in text for text in shown)
