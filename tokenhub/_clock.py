"""Where tokenhub gets the time, sleeps and random draws; swapped for a fake in tests."""

from __future__ import annotations

import random
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Time, sleep and randomness, as the Hub uses them.

    :class:`tokenhub.testing.FakeClock` implements it with instant, recorded
    sleeps, so that failover tests never wait.
    """

    def wall(self) -> float:
        """UNIX time in seconds (to read rate-limit reset headers)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (deadlines, cooldowns, breakers)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (backoffs and server-directed waits)."""
        ...

    def random(self) -> float:
        """A draw in [0, 1) (jitter and traffic splitting)."""
        ...


class SystemClock:
    """The real clock."""

    # The C functions themselves: read several times per request, no Python frame each time.
    wall = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        """Sleep with anyio (asyncio or trio)."""
        import anyio  # noqa: PLC0415 - keep `import tokenhub` light

        await anyio.sleep(seconds)

    random = staticmethod(random.random)  # not for cryptography
