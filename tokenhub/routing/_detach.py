"""Work that goes on after the request that started it returned: a probe that lost its race.

A task group cannot outlive the call that opened it, and a Hub need not be
entered with ``async with``, so detached work runs as a task of the event loop
itself (asyncio) or a system task (trio). :class:`Detached` keeps track of it so
that the Hub can cancel what is still running when it closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Detached"]

_log = logging.getLogger("tokenhub.failover")


class Detached:
    """One Hub's detached tasks: started with :meth:`spawn`, cancelled by :meth:`aclose`."""

    __slots__ = ("_scopes", "_tasks", "closed")

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps weak ones
        self.closed = False

    def __len__(self) -> int:
        return len(self._scopes)

    def spawn(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Run ``work`` on the current event loop without waiting; ``False`` once closed.

        ``work`` must handle its own errors: anything it lets escape is logged
        (by type only: its frames may hold the request) and dropped.
        """
        if self.closed:
            return False
        scope = anyio.CancelScope()
        self._scopes.add(scope)

        async def body() -> None:
            try:
                with scope:
                    await work()
            except Exception as exc:  # noqa: BLE001 - nobody is left to raise to
                _log.error("detached work failed (%s)", type(exc).__name__)
            finally:
                self._scopes.discard(scope)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: trio, the other backend anyio runs on
            import trio  # noqa: PLC0415

            trio.lowlevel.spawn_system_task(body)
        else:
            task = loop.create_task(body())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def aclose(self) -> None:
        """Cancel the work still running, and let it finish its cancellation."""
        self.closed = True
        for scope in list(self._scopes):
            scope.cancel()
        for _ in range(1000):  # each ends at its next checkpoint: a few loop turns
            if not self._scopes:
                return
            await anyio.lowlevel.checkpoint()
