"""The runtime-state contract: what the router, engine, telemetry and Hub rely on, per backend.

Every test runs against each backend in ``BACKENDS`` (the in-memory ``RuntimeState``,
and ``RedisState`` on the tests' Redis under a fresh key prefix) and calls
only :class:`tokenhub._runtime.StateBackend` methods, on an injected clock.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Protocol

import pytest

from tokenhub._secret import Secret
from tokenhub._settings import BreakerSettings
from tokenhub.routing._redis_state import RedisState
from tokenhub.routing._state import RuntimeState
from tokenhub.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tokenhub._runtime import StateBackend


class Factory(Protocol):
    def __call__(self, *, breaker: BreakerSettings, clock: Callable[[], float]) -> StateBackend:
        """A fresh, empty backend on ``clock`` (a test backend may share a server, not state)."""
        ...


def _memory(*, breaker: BreakerSettings, clock: Callable[[], float]) -> StateBackend:
    return RuntimeState(breaker=breaker, clock=clock)


_OPENED: list[RedisState] = []


def _redis(*, breaker: BreakerSettings, clock: Callable[[], float]) -> StateBackend:
    from tests._redis import server

    state = RedisState(
        Secret(server().url), prefix=f"t{os.urandom(6).hex()}:", breaker=breaker, clock=clock
    )
    _OPENED.append(state)
    return state


BACKENDS: dict[str, Factory] = {"memory": _memory, "redis": _redis}


@pytest.fixture(autouse=True)
def _close_backends() -> Iterator[None]:
    yield
    while _OPENED:
        _OPENED.pop().close()


#: Three failures in a row open a circuit for 10 s (20 s, 40 s on re-opens).
FAST = BreakerSettings(failures=3, open_for=10.0, max_open_for=40.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=100.0)


@pytest.fixture(params=sorted(BACKENDS))
def make(request: pytest.FixtureRequest, clock: FakeClock) -> Callable[..., StateBackend]:
    factory = BACKENDS[request.param]

    def build(breaker: BreakerSettings = FAST) -> StateBackend:
        return factory(breaker=breaker, clock=clock.monotonic)

    return build


@pytest.fixture
def state(make: Callable[..., StateBackend]) -> StateBackend:
    return make()


def kind(state: StateBackend, model: str = "m", provider: str = "p") -> str | None:
    """The kind of ``model``'s block now, or ``None``."""
    block = state.blocked(model, provider)
    return None if block is None else block.kind


def trip(state: StateBackend, model: str = "m", n: int = 3) -> None:
    for _ in range(n):
        state.record_failure(model)


class TestUnknown:
    def test_unseen_model_is_healthy_and_unmeasured(self, state: StateBackend) -> None:
        """A model no traffic has touched is not blocked, has no averages and may be sent to."""
        assert (None, None, None, None, 0.0) == (
            state.blocked("m", "p"),
            state.latency_ms("m"),
            state.failure_rate("m"),
            state.ttft_p95_ms("m"),
            state.not_before("m"),
        )
        assert state.output_tokens() is None
        assert ({}, {"models": {}, "credentials": {}}) == (state.remaining(), state.snapshot())
        assert state.acquire("m")


class TestCooldown:
    def test_blocks_until_its_time(self, state: StateBackend, clock: FakeClock) -> None:
        """A cooldown blocks its model (not others) until exactly its end."""
        state.cool_down("m", 5.0)
        assert 105.0 == state.not_before("m")
        assert "rate_limited" == kind(state)
        assert kind(state, "other") is None
        block = state.blocked("m", "p")
        assert block is not None
        assert (105.0, "rate-limited for another 5.0 s") == (block.until, block.reason)
        clock.advance(4.9)
        assert "rate_limited" == kind(state)
        clock.advance(0.1)
        assert kind(state) is None

    def test_shorter_cooldown_never_shortens(self, state: StateBackend, clock: FakeClock) -> None:
        """A second, shorter wait hint keeps the later end; a longer one extends it."""
        state.cool_down("m", 10.0)
        state.cool_down("m", 1.0)
        assert 110.0 == state.not_before("m")
        state.cool_down("m", 20.0)
        assert 120.0 == state.not_before("m")

    def test_cooldown_is_not_a_breaker(self, state: StateBackend) -> None:
        """A cooling model is blocked for the router, yet its circuit stays closed."""
        state.cool_down("m", 5.0)
        assert state.acquire("m")
        assert "closed" == state.snapshot()["models"]["m"]["circuit"]


class TestBreaker:
    def test_opens_after_the_configured_failures(
        self, state: StateBackend, clock: FakeClock
    ) -> None:
        """``failures`` counted failures in a row open the circuit for ``open_for`` seconds."""
        trip(state, n=2)
        assert kind(state) is None
        assert state.acquire("m")
        state.record_failure("m")
        block = state.blocked("m", "p")
        assert block is not None
        assert ("circuit_open", 110.0) == (block.kind, block.until)
        assert "circuit open for another 10.0 s" == block.reason
        assert not state.acquire("m")

    def test_success_resets_the_consecutive_count(self, state: StateBackend) -> None:
        """A success between failures keeps the circuit closed."""
        trip(state, n=2)
        state.record_success("m", latency_ms=1.0, output_tokens=None)
        trip(state, n=2)
        assert kind(state) is None

    def test_half_open_admits_exactly_one_probe(
        self, state: StateBackend, clock: FakeClock
    ) -> None:
        """Once the open period is over one caller gets the probe; the rest wait for it."""
        trip(state)
        clock.advance(9.9)
        assert not state.acquire("m")
        clock.advance(0.1)
        assert state.acquire("m")
        assert not state.acquire("m")
        block = state.blocked("m", "p")
        assert block is not None
        assert ("circuit_open", "circuit half-open, probe in flight") == (block.kind, block.reason)
        assert "half_open" == state.snapshot()["models"]["m"]["circuit"]

    def test_expired_open_circuit_is_not_blocked(
        self, state: StateBackend, clock: FakeClock
    ) -> None:
        """After the open period, before anyone takes the probe, the router may pick it."""
        trip(state)
        clock.advance(10.0)
        assert kind(state) is None
        assert "half_open" == state.snapshot()["models"]["m"]["circuit"]

    def test_release_frees_the_probe(self, state: StateBackend, clock: FakeClock) -> None:
        """A probe handed back (cancelled, or a request error) lets the next caller probe."""
        trip(state)
        clock.advance(10.0)
        assert state.acquire("m")
        state.release("m")
        assert kind(state) is None
        assert state.acquire("m")

    def test_probe_success_closes(self, state: StateBackend, clock: FakeClock) -> None:
        """A good probe closes the circuit, and the next open lasts ``open_for`` again."""
        trip(state)
        clock.advance(10.0)
        assert state.acquire("m")
        state.record_success("m", latency_ms=1.0, output_tokens=None)
        assert kind(state) is None
        assert state.acquire("m")
        assert state.acquire("m")
        trip(state)
        block = state.blocked("m", "p")
        assert block is not None
        assert clock.now + 10.0 == block.until

    def test_probe_failure_reopens_for_longer(self, state: StateBackend, clock: FakeClock) -> None:
        """A bad probe re-opens the circuit for twice as long, up to ``max_open_for``."""
        trip(state)
        periods = []
        for _ in range(4):
            block = state.blocked("m", "p")
            assert block is not None
            clock.now = block.until
            assert state.acquire("m")
            state.record_failure("m")
            reopened = state.blocked("m", "p")
            assert reopened is not None
            periods.append(reopened.until - clock.now)
        assert [20.0, 40.0, 40.0, 40.0] == periods

    def test_force_probe_sends_through_an_open_circuit(
        self, state: StateBackend, clock: FakeClock
    ) -> None:
        """A forced probe goes out while the circuit is open; nobody else gets through."""
        trip(state)
        state.force_probe("m")
        assert not state.acquire("m")
        assert "circuit_open" == kind(state)
        state.record_success("m", latency_ms=1.0, output_tokens=None)
        assert state.acquire("m")

    def test_circuits_are_per_model(self, state: StateBackend) -> None:
        """One model's open circuit leaves the others alone, on the same provider too."""
        trip(state, "a")
        assert ("circuit_open", None) == (kind(state, "a"), kind(state, "b"))

    def test_settings_apply_to_models_seen_from_then_on(self, state: StateBackend) -> None:
        """New breaker settings govern models first seen after the change."""
        trip(state, "old", n=1)
        state.breaker_settings = BreakerSettings(failures=1)
        trip(state, "old", n=1)
        trip(state, "new", n=1)
        assert (None, "circuit_open") == (kind(state, "old"), kind(state, "new"))


class TestCredentials:
    def test_disable_blocks_every_model_of_the_provider(self, state: StateBackend) -> None:
        """A disabled credential blocks the provider's models, with no end, until enabled."""
        state.disable_credential("p", "auth")
        block = state.blocked("a", "p")
        assert block is not None
        assert ("credential", "credential of 'p' disabled (auth)") == (block.kind, block.reason)
        assert "credential" == kind(state, "b", "p")
        assert kind(state, "a", "q") is None
        assert {"p": {"reason": "auth", "disabled_for_s": None}} == state.snapshot()["credentials"]
        state.enable_credential("p")
        assert kind(state, "a", "p") is None
        assert {} == state.snapshot()["credentials"]

    def test_disable_for_a_while_expires(self, state: StateBackend, clock: FakeClock) -> None:
        """A credential disabled for some seconds comes back by itself."""
        state.disable_credential("p", "quota_exhausted", 60.0)
        assert {"reason": "quota_exhausted", "disabled_for_s": 60.0} == state.snapshot()[
            "credentials"
        ]["p"]
        clock.advance(59.0)
        assert "credential" == kind(state)
        clock.advance(1.0)
        assert kind(state) is None
        assert {} == state.snapshot()["credentials"]

    def test_credential_comes_before_other_blocks(self, state: StateBackend) -> None:
        """A model both cooling and on a disabled credential is reported as the credential."""
        state.cool_down("m", 5.0)
        trip(state)
        state.disable_credential("p", "auth")
        assert "credential" == kind(state)

    def test_a_model_scoped_block_leaves_the_siblings(self, state: StateBackend) -> None:
        """A credential disabled for one model blocks that model only, shown with its models."""
        state.disable_credential("p", "auth", model="a")
        block = state.blocked("a", "p")
        assert block is not None
        assert ("credential", "credential of 'p' disabled for 'a' (auth)") == (
            block.kind,
            block.reason,
        )
        assert kind(state, "b", "p") is None
        assert kind(state, "a", "q") is None
        expected = {"p": {"reason": "auth", "disabled_for_s": None, "models": ["a"]}}
        assert expected == state.snapshot()["credentials"]

    def test_a_second_model_widens_the_block_to_the_provider(self, state: StateBackend) -> None:
        """Two models of one provider disabled so: the whole provider's key is out, until enabled."""
        state.disable_credential("p", "auth", model="a")
        state.disable_credential("p", "auth", model="b")
        assert ["credential"] * 3 == [kind(state, m, "p") for m in ("a", "b", "c")]
        assert {"p": {"reason": "auth", "disabled_for_s": None}} == state.snapshot()["credentials"]
        state.enable_credential("p")
        assert [None] * 3 == [kind(state, m, "p") for m in ("a", "b", "c")]
        assert {} == state.snapshot()["credentials"]

    def test_the_same_model_twice_stays_model_scoped(self, state: StateBackend) -> None:
        """Repeated auth failures of one model do not disable the provider."""
        state.disable_credential("p", "auth", model="a")
        state.disable_credential("p", "auth", model="a")
        assert (None, "credential") == (kind(state, "b", "p"), kind(state, "a", "p"))

    def test_enable_clears_model_scoped_blocks(self, state: StateBackend) -> None:
        """Enabling the provider's credential puts it back for every model it was out for."""
        state.disable_credential("p", "auth", model="a")
        state.enable_credential("p")
        assert kind(state, "a", "p") is None
        state.disable_credential("p", "auth", model="b")
        assert kind(state, "c", "p") is None  # "a" was forgotten: no widening

    def test_an_expired_model_block_does_not_widen(
        self, state: StateBackend, clock: FakeClock
    ) -> None:
        """A model-scoped block that has expired does not count toward disabling the provider."""
        state.disable_credential("p", "auth", 10.0, model="a")
        clock.advance(11.0)
        state.disable_credential("p", "auth", model="b")
        assert (None, None, "credential") == tuple(kind(state, m, "p") for m in ("c", "a", "b"))

    def test_enable_unknown_provider_is_a_no_op(self, state: StateBackend) -> None:
        """Enabling a credential that was never disabled changes nothing."""
        state.enable_credential("p")
        assert kind(state) is None


class TestStatistics:
    def test_latency_and_failure_rate_are_decayed_averages(self, state: StateBackend) -> None:
        """The first sample is the average; later ones move it by ``alpha`` (0.2)."""
        state.record_success("m", latency_ms=100.0, output_tokens=None)
        assert (100.0, 0.0) == (state.latency_ms("m"), state.failure_rate("m"))
        state.record_success("m", latency_ms=200.0, output_tokens=None)
        assert 120.0 == pytest.approx(state.latency_ms("m"))
        state.record_failure("m")
        assert 0.2 == pytest.approx(state.failure_rate("m"))
        assert 120.0 == pytest.approx(state.latency_ms("m"))  # failures carry no latency

    def test_output_tokens_one_average_for_all_models(self, state: StateBackend) -> None:
        """Answer lengths from every model feed one average; unknown lengths are skipped."""
        state.record_success("a", latency_ms=1.0, output_tokens=100)
        state.record_success("b", latency_ms=1.0, output_tokens=200)
        state.record_success("b", latency_ms=1.0, output_tokens=None)
        assert 120.0 == pytest.approx(state.output_tokens())

    def test_p95_of_first_token_times(self, state: StateBackend) -> None:
        """Time-to-first-chunk samples give a p95 over a rolling window (the hedging delay)."""
        for ms in range(1, 21):
            state.record_success("m", latency_ms=ms, output_tokens=None, ttft_ms=float(ms))
        assert 19.0 == state.ttft_p95_ms("m")
        for _ in range(1000):
            state.record_success("m", latency_ms=1, output_tokens=None, ttft_ms=1.0)
        assert 1.0 == state.ttft_p95_ms("m")

    def test_success_without_ttft_adds_no_sample(self, state: StateBackend) -> None:
        """A non-streamed success feeds latency but not the first-chunk samples."""
        state.record_success("m", latency_ms=5.0, output_tokens=None)
        assert (5.0, None) == (state.latency_ms("m"), state.ttft_p95_ms("m"))


class TestLimits:
    def test_openai_and_anthropic_headers(self, state: StateBackend) -> None:
        """Remaining requests and tokens are read from either provider's header names."""
        state.observe_limits(
            "a", {"x-ratelimit-remaining-requests": "99", "x-ratelimit-remaining-tokens": "1500"}
        )
        state.observe_limits("b", {"anthropic-ratelimit-requests-remaining": "7"})
        assert {("a", "requests"): 99, ("a", "tokens"): 1500, ("b", "requests"): 7} == (
            state.remaining()
        )

    def test_latest_value_wins_and_garbage_is_ignored(self, state: StateBackend) -> None:
        """A later response overwrites the allowance; a value that is not a count is skipped."""
        state.observe_limits("a", {"x-ratelimit-remaining-requests": "10"})
        state.observe_limits("a", {"x-ratelimit-remaining-requests": "9"})
        state.observe_limits("a", {"x-ratelimit-remaining-requests": "lots"})
        state.observe_limits("a", {"x-ratelimit-remaining-requests": "-1"})
        state.observe_limits("a", {})
        assert {("a", "requests"): 9} == state.remaining()

    def test_remaining_is_a_copy(self, state: StateBackend) -> None:
        """What ``remaining()`` returns can be changed without touching the state."""
        state.observe_limits("a", {"x-ratelimit-remaining-tokens": "5"})
        state.remaining().clear()
        assert {("a", "tokens"): 5} == state.remaining()


def snapshot_model(**changes: object) -> dict[str, object]:
    """One model's snapshot entry: closed and unmeasured, with ``changes``."""
    return {
        "circuit": "closed",
        "open_for_s": 0.0,
        "rate_limited_for_s": 0.0,
        "latency_ms": None,
        "latency_p95_ms": None,
        "ttft_p95_ms": None,
        "failure_rate": None,
        "first_token_timeout_s": None,
        "stall_timeout_s": None,
        "ttft_samples": 0,
        "gap_samples": 0,
        "thinking": False,
        **changes,
    }


class TestSnapshot:
    def test_shape(self, state: StateBackend, clock: FakeClock) -> None:
        """The snapshot is plain data: per model its circuit, waits and averages; credentials."""
        state.record_success("fast", latency_ms=10.0, output_tokens=5, ttft_ms=4.0)
        state.cool_down("cool", 7.0)
        trip(state, "down")
        state.disable_credential("p", "auth", 30.0)
        clock.advance(2.0)
        assert {
            "models": {
                "fast": snapshot_model(
                    latency_ms=10.0,
                    latency_p95_ms=10.0,
                    ttft_p95_ms=4.0,
                    failure_rate=0.0,
                    ttft_samples=1,
                ),
                "cool": snapshot_model(rate_limited_for_s=5.0),
                "down": snapshot_model(circuit="open", open_for_s=8.0, failure_rate=1.0),
            },
            "credentials": {"p": {"reason": "auth", "disabled_for_s": 28.0}},
        } == state.snapshot()


def test_state_changes_are_logged(state: StateBackend, caplog: pytest.LogCaptureFixture) -> None:
    """Circuits opening and closing and credentials leaving rotation are logged, without secrets."""
    with caplog.at_level(logging.INFO, logger="tokenhub.failover"):
        trip(state)
        state.blocked("m", "p")  # reads log nothing
        state.force_probe("m")
        state.record_success("m", latency_ms=1, output_tokens=None)
        state.disable_credential("openai", "auth")
    assert [
        ("WARNING", "circuit of m opened for 10.0 s"),
        ("INFO", "circuit of m closed"),
        ("WARNING", "credential of openai taken out of rotation (auth)"),
    ] == [(r.levelname, r.getMessage()) for r in caplog.records]
    assert "open" == caplog.records[0].circuit  # type: ignore[attr-defined]
