"""A fake clock for tests: time stands still until advanced, and sleeps return at once."""

from __future__ import annotations

import anyio.lowlevel

__all__ = ["FakeClock"]


class FakeClock:
    """A clock for tests: time stands still until advanced; sleeps return at once.

    Pass it as ``Hub.from_config(config, clock=FakeClock())``: backoffs,
    rate-limit waits and breaker periods then cost no real time, and
    :attr:`sleeps` records every wait the Hub took. ``draw`` is what every
    random draw returns (0.5: jitter lands mid-range).
    """

    def __init__(
        self, *, start: float = 1_000.0, wall: float = 1_750_000_000.0, draw: float = 0.5
    ) -> None:
        self.now = start
        self._wall_offset = wall - start
        self.draw = draw
        self.sleeps: list[float] = []

    def wall(self) -> float:
        """UNIX time, moving with :attr:`now`."""
        return self.now + self._wall_offset

    def monotonic(self) -> float:
        """The current fake time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record the wait and advance time by it, without waiting."""
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await anyio.lowlevel.checkpoint()

    def random(self) -> float:
        """Return :attr:`draw`."""
        return self.draw

    def advance(self, seconds: float) -> None:
        """Move time forward (to let a cooldown or an open circuit expire)."""
        self.now += seconds
