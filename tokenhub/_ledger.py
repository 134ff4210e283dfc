"""Request logs (batched off the request path) and spend budgets, in the store.

Request logs go through a bounded queue to one writer thread with its own
store handle; a full queue drops the row and counts it, never blocking a request.
Budgets reserve a request's estimated cost before it is sent, in one store
transaction (serialised with every other writer), and settle the actual cost
afterwards: parallel requests cannot overshoot a limit by more than one request's
estimate. A reservation carries its owner and an expiry (the request's deadline
plus :data:`RESERVATION_GRACE`), so a process killed with requests in flight holds
no budget for ever. Both reach the store only through
:class:`~tokenhub._storage.StoreBackend`.

Bookkeeping survives cancellation, asyncio's own included: a request's log row is
queued synchronously before anything is awaited, and work that must wait for the
store's lock runs in a thread (:class:`Background`) that finishes whatever happens
to the task that started it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import queue
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import attrs

from tokenhub._redact import get_logger, scrub
from tokenhub._semconv import error_type
from tokenhub._storage import USAGE_GROUPS, Reservation
from tokenhub.errors import (
    BudgetExceededError,
    RequestError,
    StoreBusyError,
    StoreError,
    TokenhubError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from tokenhub._clock import Clock
    from tokenhub._models import ChatRequest, ChatResponse, RouteTrace
    from tokenhub._settings import Budget
    from tokenhub._storage import StoreBackend

__all__ = [
    "RESERVATION_GRACE",
    "Background",
    "Budgets",
    "Entry",
    "Hold",
    "Ledger",
    "RequestLog",
    "log_row",
    "usage",
]

log = get_logger("tokenhub.store")

_STOP: Final = object()
_BATCH: Final = 500
_RETENTION_EVERY: Final = 60.0  # seconds between retention sweeps
#: Seconds a reservation outlives its request's deadline before it stops counting.
RESERVATION_GRACE: Final = 60.0


def _new_owner() -> str:
    return f"{os.getpid()}-{os.urandom(6).hex()}"


class _Owner:
    """The name of this process on its reservations: pid and a random token, new after a fork."""

    name = _new_owner()
    holds = itertools.count(1)

    @classmethod
    def renew(cls) -> None:
        cls.name, cls.holds = _new_owner(), itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Owner.renew)


class RequestLog:
    """A bounded, batched writer of request-log rows (one daemon thread, started on first use).

    The thread writes through its own handle: ``store.sibling()``, or for a path,
    the SQLite file there (opened with ``busy_timeout``). A batch the store cannot
    take is retried with back-off for up to :attr:`RETRY_FOR` seconds before its rows
    are dropped and counted.
    """

    RETRY_FOR: float = 30.0

    def __init__(
        self,
        store: StoreBackend | str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        buffer: int,
        retention_days: float | None,
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self._target, self._busy_timeout = store, busy_timeout
        self._queue: queue.Queue[object] = queue.Queue(maxsize=buffer)
        self._retention = None if retention_days is None else retention_days * 86400
        self._on_drop = on_drop
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._wake = threading.Event()  # set by close(): stop waiting between retries
        self.dropped = 0
        self.written = 0

    def record(self, row: dict[str, Any]) -> None:
        """Queue ``row``; if the buffer is full, or the log closed, drop it and count the drop.

        Never blocks.
        """
        if self._thread is None:
            if self._closed:  # a request that outlived its Hub: no new writer
                self.dropped += 1
                self._on_drop()
                return
            self._start()
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1
            self._on_drop()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tokenhub-request-log", daemon=True
                )
                self._thread.start()

    def _open(self) -> StoreBackend:
        if isinstance(self._target, str | os.PathLike):
            from tokenhub._store import Store  # noqa: PLC0415 - a path names an SQLite file

            return Store(os.fspath(self._target), busy_timeout=self._busy_timeout)
        return self._target.sibling()

    def _run(self) -> None:
        store = self._open()
        swept = 0.0
        try:
            while True:
                item = self._queue.get()
                batch: list[Any] = []
                while True:
                    if isinstance(item, threading.Event):  # flush(): write what came before
                        if batch:
                            self._write(store, batch)
                            batch = []
                        item.set()
                    elif item is not _STOP:
                        batch.append(item)
                    if item is _STOP or len(batch) >= _BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                stop = item is _STOP
                if batch:
                    self._write(store, batch)
                now = time.time()
                if self._retention is not None and (stop or now - swept > _RETENTION_EVERY):
                    swept = now
                    with store.transaction() as tx:
                        tx.delete_request_logs(before=now - self._retention)
                if stop:
                    return
        finally:
            store.close()

    def _write(self, store: StoreBackend, batch: list[Any]) -> None:
        # An unreachable store (a server restarting) is retried with back-off for up to
        # RETRY_FOR seconds, new rows waiting in the bounded queue; then the rows are dropped
        # and counted. Closing makes one last attempt.
        pause, deadline = 0.1, time.monotonic() + self.RETRY_FOR
        while True:
            try:
                with store.transaction() as tx:
                    tx.add_request_logs(batch)
            except StoreError:
                if self._closed or time.monotonic() + pause > deadline:
                    break
                self._wake.wait(pause)
                pause = min(pause * 2, 5.0)
            except Exception:  # noqa: BLE001 - a logging failure must not kill the writer
                break
            else:
                self.written += len(batch)
                return
        self.dropped += len(batch)
        for _ in batch:
            self._on_drop()
        log.warning("could not write %d request-log rows", len(batch))

    def flush(self) -> None:
        """Block until every row queued so far is written."""
        if self._thread is not None:
            done = threading.Event()
            self._queue.put(done)
            done.wait()

    def close(self) -> None:
        """Write every queued row, then stop the writer (blocks until done); later rows drop."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None


def log_row(
    request: ChatRequest,
    trace: RouteTrace,
    *,
    caller: str | None,
    started_at: float,
    latency_ms: float,
    response: ChatResponse | None,
    error: BaseException | None,
    ttft_ms: float | None,
    stream: bool,
    content: bool,
) -> dict[str, Any]:
    """One request-log row; prompt and completion only when ``content`` is on (scrubbed).

    Status is ``ok``, ``error`` (with ``error_class``) or ``cancelled`` (by the caller).
    """
    input_tokens = output_tokens = 0
    usages = [a.usage for a in trace.attempts if a.outcome != "ok"]
    usages.append(response.usage if response is not None else None)
    for u in usages:
        if u is not None:
            input_tokens += u.input_tokens
            output_tokens += u.output_tokens
    by_model = costs(trace, response)
    last = trace.attempts[-1] if trace.attempts else None
    error_class = None
    status = "ok"
    if isinstance(error, BudgetExceededError):
        error_class, status = "budget_exceeded", "error"
    elif isinstance(error, TokenhubError):
        error_class, status = error_type(error), "error"
    elif error is not None:
        status = "cancelled"
    prompt = completion = None
    if content:
        from tokenhub._serde import converter  # noqa: PLC0415

        messages = converter.unstructure(request.messages)
        prompt = scrub(json.dumps(messages, ensure_ascii=False, default=str))
        completion = scrub(response.text) if response is not None else None
    return {
        "request_id": trace.request_id,
        "at": started_at,
        "model": response.model if response is not None else (last.model if last else None),
        "provider": (
            response.provider if response is not None else (last.provider if last else None)
        ),
        "alias": trace.alias,
        "caller": caller,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": sum(by_model.values()) if by_model else None,
        "latency_ms": round(latency_ms, 3),
        "ttft_ms": None if ttft_ms is None else round(ttft_ms, 3),
        "status": status,
        "error_class": error_class,
        "attempts": len(trace.attempts),
        "stream": int(stream),
        "prompt": prompt,
        "completion": completion,
    }


def costs(trace: RouteTrace | None, response: ChatResponse | None) -> dict[str, float]:
    """What the request cost, per model: failed attempts billed, plus the answer."""
    out: dict[str, float] = {}
    for a in trace.attempts if trace is not None else ():
        if a.outcome != "ok" and a.cost_usd is not None:
            out[a.model] = out.get(a.model, 0.0) + a.cost_usd
    if response is not None and response.cost_usd is not None:
        out[response.model] = out.get(response.model, 0.0) + response.cost_usd
    return out


GROUPS: Final = USAGE_GROUPS


def usage(
    store: StoreBackend, *, since: float | None = None, group_by: str = "model"
) -> list[dict[str, Any]]:
    """Tokens, cost, requests and errors from the request log, grouped by one column."""
    if group_by not in GROUPS:
        raise RequestError([("group_by", f"expected one of {', '.join(GROUPS)}")])
    with store.reading() as reader:
        rows = reader.usage(since=since or 0.0, group_by=group_by)
    return [
        {
            group_by: u.key,
            "requests": u.requests,
            "errors": u.errors,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cost_usd": round(u.cost_usd, 6),
        }
        for u in rows
    ]


@attrs.frozen
class Hold:
    """The reservations made for one request, to settle when it ends."""

    id: str
    rows: tuple[tuple[str, str, str], ...]
    estimate: float
    model: str | None


class Background:
    """Bookkeeping work in threads that finish whatever happens to the task that started them.

    One per Hub, shared by its ledgers: :meth:`drain` (at ``aclose``) waits for the
    work still running and marks the books closed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[threading.Event] = set()
        self.closed = False

    def _once(self, work: Callable[[], object]) -> Callable[[], None]:
        """``work``, run at most once by whichever thread calls the result first."""
        done, claim = threading.Event(), threading.Lock()
        with self._lock:
            self._running.add(done)

        def once() -> None:
            if claim.acquire(blocking=False):
                try:
                    work()
                finally:
                    with self._lock:
                        self._running.discard(done)
                    done.set()

        return once

    async def run(self, work: Callable[[], object]) -> None:
        """Run ``work`` in a worker thread and wait for it.

        An anyio cancellation waits (shielded); asyncio's own (``task.cancel()``,
        ``asyncio.timeout``) cannot be shielded: the waiting task is cancelled, and
        the work still runs, exactly once (if no worker had picked it up, a thread
        of its own does).
        """
        import anyio  # noqa: PLC0415
        import anyio.to_thread  # noqa: PLC0415

        once = self._once(work)
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(once)
        except BaseException:
            threading.Thread(target=once, name="tokenhub-settle", daemon=True).start()
            raise

    def start(self, work: Callable[[], object]) -> None:
        """Run ``work`` in a thread of its own, without waiting (from synchronous code)."""
        threading.Thread(target=self._once(work), name="tokenhub-settle", daemon=True).start()

    def drain(self) -> None:
        """Close the books: wait for the work still running (blocks)."""
        with self._lock:
            self.closed = True
            running = list(self._running)
        for done in running:
            done.wait()


class Budgets:
    """Checks and records spend against the configured limits, in the store."""

    def __init__(
        self,
        store: StoreBackend,
        limits: Sequence[Budget],
        *,
        wall: Callable[[], float],
        waiting: Callable[[], StoreBackend] | None = None,
    ) -> None:
        self._store, self._limits, self._wall = store, tuple(limits), wall
        # Writes that wait for the lock use their own connection, so that the shared one
        # (the event loop's: vault keys, config polls) is never held during the wait.
        self._waiting = waiting

    def _for(self, wait: bool) -> StoreBackend:
        return self._waiting() if wait and self._waiting is not None else self._store

    def _periods(self, now: float) -> dict[str, str]:
        t = time.gmtime(now)
        return {"day": time.strftime("%Y-%m-%d", t), "month": time.strftime("%Y-%m", t)}

    def _applicable(
        self, caller: str | None, model: str | None, now: float
    ) -> Iterable[tuple[Budget, tuple[str, str, str]]]:
        periods = self._periods(now)
        for b in self._limits:
            if b.scope == "global":
                key = "*"
            elif b.scope == "caller":
                if caller is None or (b.key not in ("*", caller)):
                    continue
                key = caller
            else:
                if model is None or b.key not in ("*", model):
                    continue
                key = model
            yield b, (b.scope, key, f"{b.period}:{periods[b.period]}")

    def admit(
        self,
        trace: RouteTrace,
        caller: str | None,
        *,
        wait: bool = True,
        ttl: float = 600.0 + RESERVATION_GRACE,
    ) -> Hold:
        """Reserve the first candidate's estimated cost, or raise ``BudgetExceededError``.

        The reservation stops counting ``ttl`` seconds from now if it is never
        settled (its process died): when a budget would refuse, reservations past
        their expiry are released and it is checked again. ``wait=False`` raises
        ``StoreBusyError`` rather than wait for the lock.
        """
        first = trace.candidates[0] if trace.candidates else None
        model = first.model if first else None
        estimate = (first.estimated_cost_usd or 0.0) if first else 0.0
        now = self._wall()
        rows = []
        with self._for(wait).transaction(wait=wait) as tx:
            swept = False
            for budget, row in self._applicable(caller, model, now):
                found = tx.spend(row)
                spent, reserved = (found.usd, found.reserved) if found else (0.0, 0.0)
                if spent + reserved + estimate > budget.usd and not swept:
                    # Expired reservations matter only when they would refuse a request:
                    # release them then, not on every admission (they cost a write each).
                    swept = True
                    if tx.expire_reservations(now=now):
                        found = tx.spend(row)
                        spent, reserved = (found.usd, found.reserved) if found else (0.0, 0.0)
                if spent >= budget.usd or spent + reserved + estimate > budget.usd:
                    raise BudgetExceededError(
                        scope=budget.scope,
                        key=row[1],
                        period=budget.period,
                        limit_usd=budget.usd,
                        spent_usd=round(spent + reserved, 6),
                        estimate_usd=round(estimate, 6),
                        request_id=trace.request_id,
                    )
                if row not in rows:  # two budgets (caller '*' and 'alice') share one row
                    rows.append(row)
            owner = _Owner.name
            hold = f"{owner}-{next(_Owner.holds)}"
            tx.reserve(Reservation(hold, tuple(rows), estimate, owner, now, now + ttl))
        return Hold(hold, tuple(rows), estimate, model)

    def settle(
        self,
        hold: Hold,
        trace: RouteTrace | None,
        caller: str | None,
        response: ChatResponse | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Release the reservation and record the actual cost, per model actually used."""
        by_model = costs(trace, response)
        total = sum(by_model.values())
        now = self._wall()
        with self._for(wait).transaction(wait=wait) as tx:
            tx.release(hold.id)
            charges = {
                row: total for b, row in self._applicable(caller, None, now) if b.scope != "model"
            }
            for model, cost in by_model.items():
                charges.update(
                    (row, cost)
                    for b, row in self._applicable(None, model, now)
                    if b.scope == "model"
                )
            for row, cost in charges.items():
                tx.charge(row, cost)

    def charge(self, model: str, usd: float) -> None:
        """Record ``usd`` spent on ``model`` with no reservation: its global and model budgets."""
        with self._for(True).transaction() as tx:
            for _, row in self._applicable(None, model, self._wall()):
                tx.charge(row, usd)

    def spend(self) -> list[dict[str, Any]]:
        """Every spend row (scope, key, period, usd, reserved)."""
        with self._store.reading() as reader:
            return [attrs.asdict(r) for r in reader.spend_rows()]


@attrs.define
class _Admission:
    """What a waiting admission hands back, and whether anyone is still waiting for it."""

    lock: threading.Lock = attrs.Factory(threading.Lock)
    hold: Hold | None = None
    error: BaseException | None = None
    abandoned: bool = False


class Ledger:
    """What a Hub with a store records per request: budget holds and request-log rows."""

    def __init__(
        self,
        logs: RequestLog | None,
        budgets: Budgets | None,
        *,
        content: bool,
        timeout: float = 600.0,
        background: Background | None = None,
    ) -> None:
        self.logs, self.budgets, self.content = logs, budgets, content
        self.timeout = timeout  # the deadline of a request given none (failover.timeout)
        self.background = background or Background()

    def charge_late(self, model: str, usd: float) -> None:
        """Charge a cost learnt after its request ended (a detached probe's), in a thread."""
        budgets = self.budgets
        if budgets is None or self.background.closed:
            return

        def charge() -> None:
            try:
                budgets.charge(model, usd)
            except Exception as exc:  # noqa: BLE001 - bookkeeping never raises into the engine
                log.error(  # noqa: TRY400 - its frames may hold the request
                    "could not record the spend of a probe of %s (%s)", model, type(exc).__name__
                )

        self.background.start(charge)

    def ttl(self, timeout: float | None) -> float:
        """How long a reservation made now counts: the request's deadline, plus the grace."""
        if timeout is None or not 0 < timeout < math.inf:
            timeout = self.timeout
        return timeout + RESERVATION_GRACE

    async def admit(
        self, trace: RouteTrace, caller: str | None, *, timeout: float | None = None
    ) -> Hold | None:
        """Reserve the estimate under every applicable budget.

        Tried on the event loop without waiting (tens of µs); when another
        connection holds the write lock, done in a worker thread that waits. If the
        caller is cancelled meanwhile, whatever the thread reserves is released.
        """
        budgets = self.budgets
        if budgets is None:
            return None
        ttl = self.ttl(timeout)
        try:
            return budgets.admit(trace, caller, wait=False, ttl=ttl)
        except StoreBusyError:
            pass
        box = _Admission()

        def admit() -> None:
            try:
                hold = budgets.admit(trace, caller, ttl=ttl)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting task
                box.error = exc
                return
            with box.lock:
                if not box.abandoned:
                    box.hold = hold
                    return
            self._settle(hold, None, caller, None, trace.request_id)  # nobody waits: release

        try:
            await self.background.run(admit)
        except BaseException:
            with box.lock:
                box.abandoned, hold, box.hold = True, box.hold, None
            if hold is not None:  # admitted as the waiter was cancelled: release
                self.finish_now(hold, trace, caller, None)
            raise
        if box.error is not None:
            raise box.error
        return box.hold

    def _settle(
        self,
        hold: Hold,
        trace: RouteTrace | None,
        caller: str | None,
        response: ChatResponse | None,
        request_id: str,
        *,
        wait: bool = True,
    ) -> bool:
        """Settle; False if ``wait=False`` met a busy store. Never raises.

        The answer is paid for and delivered: it is never failed over bookkeeping.
        A settlement that cannot be written is logged, and the reservation stays
        held (conservative) until it expires.
        """
        assert self.budgets is not None  # noqa: S101 - only called with budgets
        try:
            self.budgets.settle(hold, trace, caller, response, wait=wait)
        except StoreBusyError:
            if not wait:
                return False
            log.error("could not record the spend of request %s: the store is busy", request_id)  # noqa: TRY400 - the reason is in the message; a traceback adds nothing
        except StoreError as exc:
            log.error("could not record the spend of request %s: %s", request_id, exc)  # noqa: TRY400
        except Exception as exc:  # noqa: BLE001 - bookkeeping must never replace a paid answer
            log.error(  # noqa: TRY400 - its frames may hold the request
                "could not record the spend of request %s (%s)", request_id, type(exc).__name__
            )
        return True

    async def finish(
        self,
        hold: Hold | None,
        trace: RouteTrace,
        caller: str | None,
        response: ChatResponse | None,
    ) -> None:
        """Settle a hold with the actual cost, even if the caller is cancelled meanwhile."""
        if hold is None or self.budgets is None or self._closed(trace):
            return
        rid = trace.request_id
        if not self._settle(hold, trace, caller, response, rid, wait=False):
            await self.background.run(partial(self._settle, hold, trace, caller, response, rid))

    def finish_now(
        self,
        hold: Hold | None,
        trace: RouteTrace,
        caller: str | None,
        response: ChatResponse | None,
    ) -> None:
        """:meth:`finish` from synchronous code (a stream closed early).

        A busy store moves the settlement to a short-lived thread rather than block
        the event loop.
        """
        if hold is None or self.budgets is None or self._closed(trace):
            return
        rid = trace.request_id
        if not self._settle(hold, trace, caller, response, rid, wait=False):
            self.background.start(partial(self._settle, hold, trace, caller, response, rid))

    def _closed(self, trace: RouteTrace) -> bool:
        """Whether the Hub closed its store under this request (which then cannot settle)."""
        if self.background.closed:
            log.error(
                "could not record the spend of request %s: the Hub is closed "
                "(its reservation expires on its own)",
                trace.request_id,
            )
        return self.background.closed

    def record(self, request: ChatRequest, trace: RouteTrace, **fields: Any) -> None:
        """Queue the request's log row (no-op without request logs)."""
        if self.logs is not None:
            self.logs.record(log_row(request, trace, content=self.content, **fields))

    def entry(
        self,
        request: ChatRequest,
        trace: RouteTrace,
        caller: str | None,
        clock: Clock,
        *,
        stream: bool,
        timeout: float | None = None,
    ) -> Entry:
        """Start the accounting of one request (chat and stream share it)."""
        return Entry(self, request, trace, caller, clock, stream=stream, timeout=timeout)


class Entry:
    """One request's accounting: its budget hold, its times and, at the end, its log row.

    ``admit`` before sending; ``first_chunk`` when a stream delivers; then exactly
    one of ``close`` (awaitable) or ``close_now`` (synchronous, for a stream closed
    early from a generator's ``finally``). Both queue the log row before anything
    else, so no cancellation can lose it.
    """

    __slots__ = (
        "_clock",
        "_first",
        "_hold",
        "_ledger",
        "_request",
        "_started",
        "_stream",
        "_timeout",
        "_wall",
        "caller",
        "trace",
    )

    def __init__(
        self,
        ledger: Ledger,
        request: ChatRequest,
        trace: RouteTrace,
        caller: str | None,
        clock: Clock,
        *,
        stream: bool,
        timeout: float | None = None,
    ) -> None:
        self._ledger, self._request, self.trace, self.caller = ledger, request, trace, caller
        self._clock, self._stream, self._timeout = clock, stream, timeout
        self._wall, self._started = clock.wall(), clock.monotonic()
        self._first: float | None = None
        self._hold: Hold | None = None

    async def admit(self) -> None:
        """Reserve the estimate under every applicable budget; a refusal is logged and raised."""
        try:
            self._hold = await self._ledger.admit(self.trace, self.caller, timeout=self._timeout)
        except BaseException as exc:
            self.close_now(self.trace, None, exc)
            raise

    def first_chunk(self) -> None:
        """Note the time of a stream's first chunk (its time to first token)."""
        if self._first is None:
            self._first = self._clock.monotonic()

    async def close(
        self, trace: RouteTrace, response: ChatResponse | None, error: BaseException | None
    ) -> None:
        """Queue the log row, then settle the hold with the actual cost."""
        hold, self._hold = self._hold, None
        try:
            self._record(trace, response, error)
        finally:
            await self._ledger.finish(hold, trace, self.caller, response)

    def close_now(
        self, trace: RouteTrace, response: ChatResponse | None, error: BaseException | None
    ) -> None:
        """:meth:`close` from synchronous code."""
        hold, self._hold = self._hold, None
        try:
            self._record(trace, response, error)
        finally:
            self._ledger.finish_now(hold, trace, self.caller, response)

    def _record(
        self, trace: RouteTrace, response: ChatResponse | None, error: BaseException | None
    ) -> None:
        """Queue the log row (synchronously: no await, so no cancellation, comes between)."""
        first, started = self._first, self._started
        self._ledger.record(
            self._request,
            trace,
            caller=self.caller,
            started_at=self._wall,
            latency_ms=(self._clock.monotonic() - started) * 1000,
            response=response,
            error=error,
            ttft_ms=None if first is None else (first - started) * 1000,
            stream=self._stream,
        )
