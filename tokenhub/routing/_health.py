"""Pure failover arithmetic: circuit breakers, the retry budget and backoff. No I/O, no clocks.

Every function takes ``now`` (monotonic seconds) or a random draw from the caller,
so that the state machines can be tested exhaustively.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tokenhub._settings import BreakerSettings

__all__ = ["Breaker", "RetryBudget", "full_jitter", "server_wait"]


State = Literal["closed", "open", "half_open"]


class Breaker:
    """A circuit breaker for one deployment (provider + model)."""

    __slots__ = (
        "_consecutive",
        "_recent",
        "next_probe",
        "opened_at",
        "opens",
        "probing",
        "settings",
        "state",
        "until",
    )

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self.state: State = "closed"
        self.until = 0.0
        self.opened_at = 0.0
        self.next_probe = 0.0
        self.opens = 0
        self.probing = False
        self._consecutive = 0
        self._recent: collections.deque[bool] = collections.deque(maxlen=settings.window)

    def blocked(self, now: float) -> bool:
        """Whether a request must skip this deployment now (open, or a probe already out)."""
        if self.state == "closed":
            return False
        if self.state == "open":
            return now < self.until or self.probing
        return self.probing

    def acquire(self, now: float) -> bool:
        """Take the right to send one request; an expired open breaker admits one probe."""
        if self.state == "open" and now >= self.until:
            if self.probing:  # a ride-along probe is out: it decides
                return False
            self.state = "half_open"
            self.probing = False
        if self.state == "half_open":
            if self.probing:
                return False
            self.probing = True
            return True
        return self.state == "closed"

    def probe_due(self, now: float) -> bool:
        """Take the right to send a ride-along probe while open: one out, one per interval."""
        if self.state != "open" or self.probing or now < self.next_probe:
            return False
        self.probing = True
        self.next_probe = now + self.settings.probe_interval
        return True

    def probe_done(self, ok: bool, now: float) -> None:
        """A ride-along probe's outcome: a success closes, a failure waits for the next probe.

        A failure also pushes the end of the open period to a full period from
        now (without doubling it): while ride-along probes keep finding the model
        down, no real request is sent to it as the lone half-open probe.
        """
        if self.state != "open":
            return  # a lone half-open probe took over meanwhile; its outcome decides
        self.probing = False
        if ok:
            self._close()
        else:
            self.until = max(self.until, now + self._period())

    def force_probe(self) -> None:
        """Send a probe now although the breaker is open (every candidate was blocked)."""
        self.state = "half_open"
        self.probing = True

    def record(self, ok: bool, now: float) -> None:
        """Count one outcome; open, re-open or close as the settings say."""
        s = self.settings
        if self.state == "half_open":
            self.probing = False
            if ok:
                self._close()
            else:
                self._open(now)
            return
        if self.state == "open":
            return  # a late answer from before the breaker opened changes nothing
        self._recent.append(ok)
        self._consecutive = 0 if ok else self._consecutive + 1
        failed = self._recent.count(False)
        if self._consecutive >= s.failures or (
            len(self._recent) >= s.min_calls and failed / len(self._recent) >= s.ratio
        ):
            self._open(now)

    def _open(self, now: float) -> None:
        s = self.settings
        self.opens += 1
        self.state = "open"
        self.opened_at = now
        self.next_probe = now + s.probe_interval
        self.until = now + self._period()
        self._consecutive = 0
        self._recent.clear()

    def _period(self) -> float:
        s = self.settings
        return min(s.open_for * 2.0 ** (self.opens - 1), s.max_open_for)

    def _close(self) -> None:
        self.state = "closed"
        self.opens = 0
        self._consecutive = 0
        self._recent.clear()


class RetryBudget:
    """A token bucket shared by all of a Hub's requests: each adds ``ratio``, each retry spends one.

    Retries (and hedges) therefore never exceed ``ratio`` of the traffic plus ``burst``.
    It is per process on purpose, outside the state seam (``tokenhub._runtime`` says why):
    replicas that each keep the ratio keep it together.
    """

    __slots__ = ("_tokens", "burst", "ratio")

    def __init__(self, ratio: float = 0.2, burst: float = 3.0) -> None:
        self.ratio = ratio
        self.burst = burst
        self._tokens = burst

    @property
    def tokens(self) -> float:
        """Tokens left."""
        return self._tokens

    def deposit(self) -> None:
        """Count one request."""
        self._tokens = min(self.burst + self.ratio, self._tokens + self.ratio)

    def withdraw(self) -> bool:
        """Spend a token for one retry; ``False`` when the budget is exhausted."""
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def full_jitter(attempt: int, draw: float, *, base: float = 0.25, cap: float = 8.0) -> float:
    """AWS full jitter: a delay in ``[0, min(cap, base * 2**attempt))`` from a draw in [0, 1)."""
    return draw * min(cap, base * 2.0**attempt)


def server_wait(hint: float, draw: float) -> float:
    """Stretch a server's wait hint by up to 20 % so that clients do not return in lockstep."""
    return hint * (1 + 0.2 * draw)
