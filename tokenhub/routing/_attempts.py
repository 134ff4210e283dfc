"""Attempts: sending to one candidate within its time limit, in order, or hedged.

``open_`` is what an attempt does with the provider (send for a whole answer,
open a stream and take its first chunk); the first candidate whose ``open_``
succeeds wins. Failures go to :meth:`Run.failed`, which decides and applies.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

import anyio

from tokenhub import _semconv as sc
from tokenhub._models import Candidate, ChatResponse
from tokenhub.errors import CredentialError, ErrorClass, ProviderError, RequestError, error_type_for
from tokenhub.providers import Call

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from tokenhub._models import ChatRequest
    from tokenhub._telemetry import AttemptSpan
    from tokenhub.providers import Provider
    from tokenhub.routing._run import Run

__all__ = ["Opened", "aclose", "attempt", "first_success", "send", "unexpected"]

T = TypeVar("T")
if TYPE_CHECKING:
    Opener = Callable[[Call, Provider], Awaitable[T]]


def _raise(exc: BaseException, run: Run) -> NoReturn:
    """Raise a final error with its trace, and without the adapter's frames.

    Adapter and HTTP frames hold raw bodies and request headers in their locals;
    tracebacks rendered with locals (Sentry, structlog) must not show them.
    """
    if isinstance(exc, ProviderError | CredentialError | RequestError) and exc.trace is None:
        exc.trace = run.trace
    # Nor the exceptions it was raised while handling (an adapter's ``raise ... from None``
    # still sets ``__context__``): they can quote bodies and hold frames with headers.
    exc.__context__ = exc.__cause__ = None
    raise exc.with_traceback(None)


def unexpected(call: Call, exc: Exception) -> ProviderError:
    """The error boundary: what an adapter raised that is not a tokenhub error, classified.

    A decoder's ``RecursionError``, a ``TypeError`` from a mis-typed chunk, a raw
    exception of an HTTP library: a transient failure of the provider (it counts
    against health and fails over). The message names the exception's type only:
    its text may quote the body or the request's headers.
    """
    return error_type_for(ErrorClass.TRANSIENT)(
        f"the request or its answer could not be handled ({type(exc).__name__})",
        error_class=ErrorClass.TRANSIENT,
        provider=call.provider,
        model=call.model,
        request_id=call.request_id,
    )


class Opened(Generic[T]):
    """A candidate that produced its first result (a response, or a stream's first chunk)."""

    __slots__ = ("call", "candidate", "span", "started", "value")

    def __init__(
        self, candidate: Candidate, call: Call, value: T, started: float, span: AttemptSpan
    ) -> None:
        self.candidate, self.call, self.value, self.started = candidate, call, value, started
        self.span = span


async def attempt(run: Run, candidate: Candidate, req: ChatRequest, open_: Opener[T]) -> Opened[T]:
    """Send ``req`` to ``candidate`` within the attempt's time limit."""
    engine = run.engine
    d = run.deployments[candidate.model]
    request_id = run.base_trace.request_id
    # The span first: its traceparent goes into the call's headers, and the call reports
    # the URL it is sent to back to the span.
    span = engine.telemetry.attempt(
        run.route, d, req, request_id=request_id, index=run.next_index(), stream=run.stream
    )
    # Positional: this runs for every attempt.
    call = Call(
        req,
        d.name,
        d.upstream,
        d.provider_name,
        request_id,
        d.max_output_tokens,
        d.pricing,
        span.headers,
        engine.observers[d.name],
        span.server,
        time.monotonic() + run.remaining(),
    )
    started = engine.clock.monotonic()
    limit, setting = run.attempt_timeout(candidate)
    try:
        with anyio.move_on_after(limit):
            return Opened(candidate, call, await open_(call, d.provider), started, span)
        error: BaseException = run.timed_out(candidate, limit, setting)
    except (ProviderError, CredentialError, RequestError) as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - the error boundary: anything an adapter raised
        error = unexpected(call, exc)
    except BaseException as exc:  # cancelled (a lost hedge, the caller), or the caller closing
        run.abandoned(candidate, started, span, exc)
        raise
    span.failed(engine.clock.monotonic() - started, sc.error_type(error), str(error))
    raise error


async def first_success(run: Run, open_: Opener[T]) -> Opened[T]:
    """Try the candidates in order (racing the first two when hedging) until one opens.

    When a model left out for an open circuit is due for a probe, the probe rides
    along: it races the whole ordered attempt loop, and the first to open wins.
    """
    if run.base_trace.excluded:  # the usual request excludes nothing: no probe lookup
        probe = _due_probe(run)
        if probe is not None:
            return await _with_probe(run, open_, probe)
    return await _ordered(run, open_)


async def _ordered(run: Run, open_: Opener[T]) -> Opened[T]:
    engine, candidates = run.engine, run.base_trace.candidates
    start = 0
    hedging = engine.settings.hedge_after is not None or engine.settings.hedge_p95
    if hedging and len(candidates) > 1:
        raced = await _hedged(run, open_)
        if isinstance(raced, Opened):
            return raced
        start = raced
    for i in range(start, len(candidates)):
        candidate = candidates[i]
        last = i == len(candidates) - 1
        req, tries = run.request, 0
        while await run.admit(candidate):
            started = engine.clock.monotonic()
            try:
                return await attempt(run, candidate, req, open_)
            except (ProviderError, CredentialError, RequestError) as exc:
                decision = run.failed(candidate, exc, started, tries=tries, last=last)
                action = decision.action
                if action == "raise" or run.remaining() <= 0:
                    _raise(exc, run)
                counter = (
                    engine.telemetry.failovers if action == "next" else engine.telemetry.retries
                )
                counter.add(1, {sc.MODEL: candidate.model, sc.ERROR_TYPE: sc.error_type(exc)})
                if action == "next":
                    break
            # Only reached after a retry decision (a success returns, a failure raises or breaks).
            tries += 1
            req = decision.request or req
            if decision.delay:
                await run.sleep(decision.delay)
    # Every remaining candidate was skipped (smaller context window, probe in flight).
    _raise(run.last_error or run.deadline_error(candidates[-1]), run)


async def _hedged(run: Run, open_: Opener[T]) -> Opened[T] | int:
    """Race the first candidate against the second, started after the hedging delay.

    Returns the winner, or how many candidates were used up when neither won.
    A hedge spends the retry budget; the loser is cancelled and recorded as such.
    """
    engine, candidates = run.engine, run.base_trace.candidates
    first, second = candidates[:2]
    if not await run.admit(first):
        return 1
    send, receive = anyio.create_memory_object_stream[tuple[int, Any, float]](2)
    racers = [first]
    done: set[int] = set()

    async def race(candidate: Candidate, index: int) -> None:
        started = engine.clock.monotonic()
        try:
            result: Any = await attempt(run, candidate, run.request, open_)
        except (ProviderError, CredentialError, RequestError) as exc:
            result = exc
        # Without a checkpoint: a result (an open stream) must not be lost to a cancellation.
        send.send_nowait((index, result, started))

    winner: Opened[T] | None = None
    failure: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(race, first, 0)
        outcome: tuple[int, Any, float] | None = None
        with anyio.move_on_after(_hedge_delay(run, first)):
            outcome = await receive.receive()
        if outcome is None and run.admit_now(second) and engine.budget.withdraw():
            engine.telemetry.retries.add(1, {sc.MODEL: first.model, sc.ERROR_TYPE: "hedge"})
            racers.append(second)
            tg.start_soon(race, second, 1)
        while len(done) < len(racers):
            index, result, started = outcome or await receive.receive()
            outcome = None
            done.add(index)
            if isinstance(result, Opened):
                winner = result
                break
            decision = run.failed(racers[index], result, started, tries=0, last=False)
            if decision.action == "raise":
                failure = result
                break
            if index + 1 < len(candidates):
                engine.telemetry.failovers.add(
                    1, {sc.MODEL: racers[index].model, sc.ERROR_TYPE: sc.error_type(result)}
                )
        run.cancelled_as = "hedge_cancelled"  # the racers still running lost
        tg.cancel_scope.cancel()
    run.cancelled_as = "cancelled"
    send.close()
    with receive:
        async for index, leftover, started in receive:  # a loser that finished at the same moment
            run.record(racers[index], "hedge_cancelled", started)
            engine.state.release(racers[index].model)
            if isinstance(leftover, Opened):
                leftover.span.cancelled()
                if isinstance(leftover.value, tuple):
                    await aclose(leftover.value[0])  # a stream's (source, first chunk): release it
    if winner is not None:
        return winner
    if failure is not None:
        _raise(failure, run)
    return len(racers)


def _due_probe(run: Run) -> Candidate | None:
    """The model excluded for an open circuit whose ride-along probe is due, taken; if any.

    Probes ride on routed requests only: a request pinned with ``model=`` is not
    sent to a model the caller did not ask for.
    """
    trace = run.base_trace
    if trace.pinned is not None or not trace.candidates:
        return None
    state = run.engine.state
    for e in trace.excluded:
        d = run.deployments.get(e.model)
        if d is not None and e.reason.startswith("circuit open") and state.probe_due(e.model):
            out = trace.candidates[0].output_tokens
            return Candidate(e.model, d.provider_name, 0.0, (), None, out, None)
    return None


async def _with_probe(run: Run, open_: Opener[T], probe: Candidate) -> Opened[T]:
    """Race the ordered attempts against a probe of a recovering model; the first to open wins.

    No request waits on the probe. The probe runs detached from the request
    (:class:`~tokenhub.routing._detach.Detached`): when the real attempts open
    first, the request goes on and the probe (``probe_lost`` in the trace) runs
    to its end without it, then reports its verdict to the circuit and its cost
    to the ledger. A failed probe (``probe_failed``) only keeps the circuit
    open. A probe that opens first closes the circuit and answers; the real
    attempt it beat is recorded as ``lost_to_probe``.
    """
    engine = run.engine
    send, receive = anyio.create_memory_object_stream[tuple[bool, Any, float]](2)
    probe_send = send.clone()
    probe_started = engine.clock.monotonic()

    async def probing() -> None:
        with probe_send:
            try:
                result: Any = await attempt(run, probe, run.request, open_)
            except (ProviderError, CredentialError, RequestError) as exc:
                result = exc
            try:
                probe_send.send_nowait((True, result, probe_started))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                await _probe_ended(run, probe, result)  # the request went on without it

    if not engine.detached.spawn(probing):  # the Hub is closing: no probe
        probe_send.close()
        send.close()
        receive.close()
        engine.state.release(probe.model)
        return await _ordered(run, open_)

    async def real() -> None:
        started = engine.clock.monotonic()
        try:
            result: Any = await _ordered(run, open_)
        except (ProviderError, CredentialError, RequestError) as exc:
            result = exc
        send.send_nowait((False, result, started))

    winner: Opened[T] | None = None
    failure: BaseException | None = None
    probe_out = True
    leftovers: list[tuple[bool, Any, float]] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(real)
            for _ in range(2):
                is_probe, result, started = await receive.receive()
                if is_probe:
                    probe_out = False
                if isinstance(result, Opened):
                    winner = result
                    if is_probe:
                        engine.state.probe_done(probe.model, ok=True)
                        run.cancelled_as = "lost_to_probe"
                    break
                if is_probe:
                    _probe_failed(run, probe, result, started)
                else:
                    failure = result  # the probe may still answer
            tg.cancel_scope.cancel()
    finally:
        run.cancelled_as = "cancelled"
        send.close()
        # No checkpoint from here to the close: a result sent meanwhile is either
        # taken here, or meets the closed stream and is handled where it was sent.
        while True:
            try:
                leftovers.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        receive.close()
        probe_out = probe_out and not any(is_probe for is_probe, _, _ in leftovers)
        if probe_out:  # it goes on detached: the trace says so, and hears no more of it
            run.record(probe, "probe_lost", probe_started)
            run.forget(probe)
    for is_probe, leftover, started in leftovers:  # the loser finished at the same moment
        if not isinstance(leftover, Opened):
            if is_probe:
                _probe_failed(run, probe, leftover, started)
            continue
        leftover.span.cancelled()
        value = leftover.value
        usage = value.usage if isinstance(value, ChatResponse) else None
        cost = value.cost_usd if isinstance(value, ChatResponse) else None
        if is_probe:
            engine.state.probe_done(probe.model, ok=True)  # healthy, though not used
        else:
            engine.state.release(leftover.candidate.model)
        outcome = "probe_lost" if is_probe else "lost_to_probe"
        run.record(leftover.candidate, outcome, started, usage=usage, cost=cost)
        if isinstance(value, tuple):
            await aclose(value[0])  # a stream's (source, first chunk): release it
    if winner is not None:
        return winner
    error = failure or run.last_error or run.deadline_error(probe)
    if isinstance(error, ProviderError | CredentialError | RequestError):
        error.trace = None  # raised before the probe ended: the trace gets its outcome too
    _raise(error, run)


async def _probe_ended(run: Run, probe: Candidate, result: Any) -> None:
    """A detached probe's end: its verdict to the circuit, its answer discarded, its cost billed."""
    engine = run.engine
    if not isinstance(result, Opened):
        engine.state.probe_done(probe.model, ok=False)
        return
    engine.state.probe_done(probe.model, ok=True)  # healthy, though not used
    value = result.value
    if isinstance(value, ChatResponse):
        result.span.ok(
            engine.clock.monotonic() - result.started,
            usage=value.usage,
            cost=value.cost_usd,
            response_model=value.upstream_model,
            response_id=value.response_id,
            finish_reason=value.finish_reason,
        )
        if value.cost_usd and engine.billing is not None:
            engine.billing.charge_late(probe.model, value.cost_usd)
    else:  # a stream's (source, first chunk): its first chunk was the verdict
        result.span.cancelled()
        await aclose(value[0])


def _probe_failed(run: Run, probe: Candidate, exc: BaseException, started: float) -> None:
    """Record a failed probe: in the trace, and as no change to the open circuit."""
    status = exc.status if isinstance(exc, ProviderError) else None
    run.record(probe, "probe_failed", started, status=status, message=str(exc))
    run.engine.state.probe_done(probe.model, ok=False)


def _hedge_delay(run: Run, primary: Candidate) -> float:
    s = run.engine.settings
    delay = s.hedge_after if s.hedge_after is not None else math.inf
    if s.hedge_p95:
        p95 = run.engine.state.ttft_p95_ms(primary.model)
        if p95 is not None:
            delay = p95 / 1000
    return min(delay, run.remaining())


async def send(call: Call, provider: Provider) -> ChatResponse:
    return await provider.send(call)


async def aclose(source: AsyncIterator[Any]) -> None:
    """Close ``source`` if it can be closed (an async generator, an adapter's stream)."""
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()
