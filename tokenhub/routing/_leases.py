"""Client-side request limits per provider (``rpm``), shared by a fleet through leases in Redis.

Each provider's limit is counted in fixed one-minute windows of wall-clock time, one Redis
counter per window (``{prefix}rpm:{provider}:{window}``). A replica takes ``lease``
requests at a time with one ``INCRBY`` (or what is left of the limit), spends them from
memory, one per request sent, and takes the next lease in the background when half of it is
spent, so a request never waits on Redis. Unspent leases die with their window.

Bounds: within one window the fleet sends at most ``rpm`` requests; it may send fewer, by
up to the unspent part of each replica's lease (at most ``lease`` per replica). Fixed
windows allow up to ``2 * rpm`` within a minute that straddles a boundary, and clock skew
between machines moves the boundaries. While Redis is unreachable each replica allows
itself the whole ``rpm`` per window (the fleet: up to N * ``rpm``; a provider's own 429s
still bound it), and what it granted itself is added to the fleet's count when Redis returns.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from redis.asyncio import Redis

__all__ = ["Leases"]

WINDOW = 60.0


class _Limit:
    __slots__ = ("balance", "exhausted", "lease", "owed", "rpm", "taken", "window")

    def __init__(self, rpm: int, lease: int) -> None:
        self.rpm = rpm
        self.lease = max(1, min(lease, rpm))
        self.window = -1  # the window the balance belongs to
        self.balance = 0  # requests this replica may still send in it
        self.taken = 0  # requests it took in it while Redis was away
        self.exhausted = False  # the fleet has no more in this window
        self.owed = 0  # requests sent without a lease (a last-resort probe), counted next time


class Leases:
    """The request allowances of this replica per provider, refilled in the background."""

    def __init__(
        self,
        limits: Mapping[str, tuple[int, int]],
        *,
        prefix: str,
        wall: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self._limits = {p: _Limit(rpm, lease) for p, (rpm, lease) in limits.items()}
        self._prefix = prefix
        self._wall = wall
        self._clock = clock
        self.wanted = False  # set when a request found a balance empty
        self.offline = True  # Redis unreachable (or not yet reached): grant locally

    def __contains__(self, provider: str) -> bool:
        return provider in self._limits

    def _current(self, limit: _Limit) -> _Limit:
        window = math.floor(self._wall() / WINDOW)
        if window != limit.window:
            limit.window, limit.balance, limit.taken, limit.exhausted = window, 0, 0, False
        return limit

    def take(self, provider: str) -> bool:
        """Spend one request of ``provider``'s allowance; ``False`` when there is none now."""
        limit = self._limits.get(provider)
        if limit is None:
            return True
        limit = self._current(limit)
        if limit.balance <= 0 and self.offline and not limit.exhausted:
            self._grant_locally(limit)
        if limit.balance > 0:
            limit.balance -= 1
            return True
        self.wanted = True
        return False

    @staticmethod
    def _grant_locally(limit: _Limit) -> None:
        grant = min(limit.lease, limit.rpm - limit.taken)
        limit.taken += grant
        limit.balance += grant
        limit.owed += grant  # added to the fleet's count once Redis is back
        if grant < limit.lease:
            limit.exhausted = True

    def low(self, provider: str) -> bool:
        """Whether ``provider``'s balance is half spent (time to take the next lease)."""
        limit = self._limits.get(provider)
        return limit is not None and not limit.exhausted and limit.balance * 2 <= limit.lease

    def borrow(self, provider: str) -> None:
        """Count a request sent with no allowance (the engine's last resort) against the fleet."""
        limit = self._limits.get(provider)
        if limit is not None and limit.balance <= 0:
            limit.owed += 1

    def refund(self, provider: str) -> None:
        """Give back a request taken for an attempt that was not sent."""
        limit = self._limits.get(provider)
        if limit is not None:
            limit.balance += 1

    def wait(self, provider: str) -> float:
        """Monotonic time until which ``provider`` has nothing to send (0.0: it has, or may)."""
        limit = self._limits.get(provider)
        if limit is None:
            return 0.0
        limit = self._current(limit)
        if limit.balance > 0 or (self.offline and limit.taken < limit.rpm):
            return 0.0
        if limit.exhausted:  # until the next window
            return self._clock() + (limit.window + 1) * WINDOW - self._wall()
        return self._clock() + 0.05  # a lease is on its way

    def reason(self, provider: str) -> str:
        """Why ``provider`` is blocked, for the route trace."""
        return f"client-side limit of {provider!r} reached ({self._limits[provider].rpm} rpm)"

    async def refill(self, client: Redis) -> None:
        """Take the next lease of every provider whose balance is half spent."""
        self.wanted = False
        for provider, limit in self._limits.items():
            self._current(limit)
            if (limit.exhausted or limit.balance * 2 > limit.lease) and not limit.owed:
                continue
            asked = not limit.exhausted
            grant = await self._lease(client, provider, limit)
            limit.balance += grant
            if asked and grant < limit.lease:
                limit.exhausted = True

    async def _lease(self, client: Redis, provider: str, limit: _Limit) -> int:
        key = f"{self._prefix}rpm:{provider}:{limit.window}"
        owed, want = limit.owed, 0 if limit.exhausted else limit.lease
        async with client.pipeline(transaction=True) as pipe:
            pipe.incrby(key, owed + want)
            pipe.expire(key, int(WINDOW * 2))
            total: Any = (await pipe.execute())[0]
        limit.owed -= owed
        before = int(total) - want  # the fleet's count before this lease, debts included
        return max(0, min(want, limit.rpm - before))
