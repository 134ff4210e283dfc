"""The failover arithmetic on its own: breaker state machine, retry budget and backoff.

The runtime state built on it (cooldowns, credentials, averages) is tested in test_state.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenhub._settings import BreakerSettings
from tokenhub.routing._health import Breaker, RetryBudget, full_jitter, server_wait

S = BreakerSettings()


def state(b: Breaker) -> str:
    """The breaker's state, unnarrowed (it changes behind mypy's back)."""
    return b.state


class TestBreaker:
    def test_opens_after_consecutive_failures(self) -> None:
        """Five failures in a row open the circuit for 30 s."""
        b = Breaker(S)
        for _ in range(4):
            b.record(False, 0.0)
        assert "closed" == b.state
        b.record(False, 0.0)
        assert ("open", 30.0) == (b.state, b.until)
        assert b.blocked(29.9)

    def test_opens_on_failure_ratio_with_minimum_sample(self) -> None:
        """Half of at least ten calls failing opens it, even without five in a row."""
        b = Breaker(S)
        for i in range(9):
            b.record(i % 2 == 0, 0.0)
        assert "closed" == state(b)
        b.record(False, 0.0)  # 5 of 10 failed
        assert "open" == state(b)

    def test_half_open_lets_exactly_one_probe(self) -> None:
        """After the open period one probe goes through; others wait for its outcome."""
        b = Breaker(S)
        for _ in range(5):
            b.record(False, 0.0)
        assert not b.acquire(10.0)
        assert b.acquire(30.0)
        assert "half_open" == b.state
        assert not b.acquire(30.0)
        assert b.blocked(31.0)

    def test_probe_success_closes_and_failure_doubles(self) -> None:
        """A good probe closes the circuit; a bad one re-opens it for twice as long, up to the cap."""
        b = Breaker(S)
        for _ in range(5):
            b.record(False, 0.0)
        periods = []
        now = 0.0
        for _ in range(6):
            now = b.until
            assert b.acquire(now)
            b.record(False, now)
            periods.append(b.until - now)
        assert [60.0, 120.0, 240.0, 300.0, 300.0, 300.0] == periods
        assert b.acquire(b.until)
        b.record(True, b.until)
        assert ("closed", 0) == (b.state, b.opens)

    def test_ride_along_probe_every_interval(self) -> None:
        """While open, one ride-along probe is due every probe_interval; a failure keeps it open, undoubled."""
        b = Breaker(S)
        for _ in range(5):
            b.record(False, 0.0)
        assert not b.probe_due(4.9)
        assert b.probe_due(5.0)
        assert not b.probe_due(20.0)  # one out at a time
        assert b.blocked(40.0)  # and it blocks the lone half-open probe meanwhile
        assert not b.acquire(40.0)
        b.probe_done(False, 40.0)
        assert ("open", 70.0, 1) == (b.state, b.until, b.opens)  # a full period on, undoubled
        assert not b.probe_due(9.9)
        assert b.probe_due(40.0)
        b.probe_done(True, 41.0)
        assert ("closed", 0) == (b.state, b.opens)
        assert not b.probe_due(50.0)

    def test_failing_ride_along_probes_hold_off_the_lone_probe(self) -> None:
        """While ride-along probes keep failing, no lone half-open probe is due and nothing doubles."""
        b = Breaker(S)
        for _ in range(5):
            b.record(False, 0.0)
        for now in range(5, 200, 5):
            assert b.probe_due(float(now))
            b.probe_done(False, now + 1.0)
            assert not b.acquire(now + 2.0)  # no real request goes as the lone probe
        assert ("open", 1) == (b.state, b.opens)
        assert b.until == 196.0 + 30.0
        assert b.acquire(b.until)  # with no ride-along since, the lone probe is the backstop
        b.record(False, b.until)
        assert b.until - b.opened_at == 60.0  # and its failure doubles as before

    def test_ride_along_outcome_after_lone_probe_is_ignored(self) -> None:
        """A ride-along outcome arriving after a lone half-open probe took over changes nothing."""
        b = Breaker(S)
        for _ in range(5):
            b.record(False, 0.0)
        assert b.probe_due(5.0)
        b.force_probe()
        b.probe_done(True, 6.0)
        assert ("half_open", True) == (b.state, b.probing)

    @settings(max_examples=200)
    @given(st.lists(st.tuples(st.booleans(), st.floats(0, 100)), max_size=80))
    def test_invariants(self, events: list[tuple[bool, float]]) -> None:
        """Whatever happens: closed never blocks, at most one probe is out, the period stays capped."""
        b = Breaker(S)
        now = 0.0
        for ok, step in events:
            now += step
            if b.acquire(now):
                assert not (b.state == "half_open" and b.acquire(now))
                b.record(ok, now)
            if b.state == "closed":
                assert not b.blocked(now)
            if b.state == "open":
                assert b.until - b.opened_at <= S.max_open_for + 1e-9  # float sums


class TestBudget:
    @settings(max_examples=200)
    @given(st.lists(st.integers(0, 5), max_size=200), st.floats(0, 1), st.floats(0, 10))
    def test_retries_never_exceed_ratio_of_traffic_plus_burst(
        self, wanted: list[int], ratio: float, burst: float
    ) -> None:
        """However retries are asked for, granted ones stay within ratio * requests + burst."""
        budget = RetryBudget(ratio, burst)
        granted = 0
        for n in wanted:
            budget.deposit()
            granted += sum(budget.withdraw() for _ in range(n))
        assert granted <= ratio * len(wanted) + burst + 1e-9


class TestBackoff:
    @given(st.integers(0, 20), st.floats(0, 1, exclude_max=True))
    def test_full_jitter_bounds(self, attempt: int, draw: float) -> None:
        """Full jitter stays in [0, min(cap, base * 2**attempt))."""
        delay = full_jitter(attempt, draw, base=0.25, cap=8.0)
        assert 0 <= delay < min(8.0, 0.25 * 2**attempt) or delay == 0

    @given(st.floats(0, 3600), st.floats(0, 1, exclude_max=True))
    def test_server_wait_never_shorter_than_the_hint(self, hint: float, draw: float) -> None:
        """A server's wait hint is honoured in full, stretched by at most 20 %."""
        assert hint <= server_wait(hint, draw) <= hint * 1.2
