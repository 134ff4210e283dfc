"""The failover engine: the attempt loop across ranked candidates, acting on each error class.

What it does per class (the docs' failover page has the table):

* rate_limited (and overloaded with a wait hint): record the hint as a cooldown
  (nothing is sent before it), fail over at once; on the last candidate wait
  only if the hint fits both ``max_server_wait`` and the deadline.
* overloaded, transient, provider_down (connect, reset): fail over at once; on
  the last candidate retry with full-jitter backoff, at most ``max_retries``
  times, within the retry budget, unless the provider said ``x-should-retry: false``.
* timeouts: fail over (never retry a silent provider, so it costs one timeout).
* context_overflow: shrink ``max_tokens`` once when the provider's numbers
  allow (on any candidate, outside ``max_retries``), else skip to a candidate
  with a larger context window.
* auth, quota_exhausted: take the credential out of rotation, fail over.
* request_too_large_for_limit, a missing credential (``CredentialError``) or a
  request the adapter cannot express (``RequestError``): fail over.
* content_policy: raise (fail over only with ``content_policy_fallback``).
* invalid_request: raise, except a prefill rejection, which fails over.
"""

from __future__ import annotations

import logging
import math
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Generic, Literal, NoReturn, TypeVar

import anyio
import attrs

from tokenhub import _semconv as sc
from tokenhub._models import Attempt, Message
from tokenhub._redact import get_logger
from tokenhub._telemetry import finish_route
from tokenhub.errors import (
    ContextOverflowError,
    CredentialError,
    ErrorClass,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    RequestError,
    StreamInterrupted,
)
from tokenhub.routing._health import RetryBudget, full_jitter, server_wait

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

    from tokenhub._clock import Clock
    from tokenhub._models import Candidate, ChatRequest, ChatResponse, Chunk, RouteTrace, Usage
    from tokenhub._settings import FailoverConfig
    from tokenhub._telemetry import AttemptSpan, Telemetry
    from tokenhub.providers import Call, Provider
    from tokenhub.routing._partial import Partial
    from tokenhub.routing._state import RuntimeState

__all__ = ["Engine", "Run", "chat", "stream"]

Action = Literal["retry", "next", "raise"]
T = TypeVar("T")
if TYPE_CHECKING:
    Opener = Callable[["Call", "Provider"], Awaitable[T]]
_MIN_SHRUNK_OUTPUT = 64
_log = get_logger("tokenhub.request")
_SAME_MODEL_RETRY = frozenset({ErrorClass.OVERLOADED, ErrorClass.TRANSIENT})


class Engine:
    """Shared failover machinery: settings, state, clock and the process-wide retry budget."""

    def __init__(
        self,
        settings: FailoverConfig,
        state: RuntimeState,
        clock: Clock,
        *,
        call: Callable[[str, ChatRequest, str, Callable[[str], None]], tuple[Provider, Call]],
        windows: Callable[[str], int | None],
        prefill: Callable[[str], bool],
        describe: Callable[[str], tuple[str, str | None]],
        telemetry: Telemetry,
        read_timeout: Callable[[str], float | None] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.clock = clock
        self.call = call
        self.windows = windows
        self.prefill = prefill
        self.describe = describe
        self.telemetry = telemetry
        self.read_timeout = read_timeout
        self.budget = RetryBudget(settings.retry_budget, settings.retry_burst)

    def run(
        self, request: ChatRequest, trace: RouteTrace, timeout: float | None, *, stream: bool
    ) -> Run:
        """Start the bookkeeping (and the route span) for one request."""
        self.budget.deposit()
        limit = self.settings.timeout if timeout is None else timeout
        return Run(self, request, trace, limit, stream=stream)


class Run:
    """One request's attempts: deadline, waits, decisions and the trace they produce."""

    def __init__(
        self,
        engine: Engine,
        request: ChatRequest,
        trace: RouteTrace,
        timeout: float,
        *,
        stream: bool,
    ) -> None:
        self.engine = engine
        self.request = request
        self.base_trace = trace
        self.stream = stream
        self.attempts: list[Attempt] = []
        self.started = engine.clock.monotonic()
        self.deadline = self.started + timeout
        self.route = engine.telemetry.route(trace, request, stream=stream)
        self._waited = 0.0
        self._min_window: int | None = None  # after a context overflow: only larger windows
        self._started_attempts = 0
        self._trace: RouteTrace | None = None
        #: The outcome recorded for an attempt cut short by cancellation: the caller's,
        #: unless a hedge race is cancelling its loser.
        self.cancelled_as = "cancelled"
        self.last_error: ProviderError | CredentialError | RequestError | None = None

    @property
    def trace(self) -> RouteTrace:
        """The route trace with the attempts made so far (built once per attempt count)."""
        cached = self._trace
        if cached is None or len(cached.attempts) != len(self.attempts):
            cached = self._trace = self.base_trace.with_attempts(tuple(self.attempts))
        return cached

    def remaining(self) -> float:
        """Seconds left before the request's deadline."""
        return self.deadline - self.engine.clock.monotonic()

    def _deadline_error(self, candidate: Candidate) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            "the request's deadline passed",
            error_class=ErrorClass.PROVIDER_DOWN,
            provider=candidate.provider,
            model=candidate.model,
            request_id=self.base_trace.request_id,
        )

    async def admit(self, candidate: Candidate) -> bool:
        """Get ``candidate`` ready to be sent: wait out a cooldown if allowed, take the breaker.

        Returns ``False`` to skip it. Raises when a needed wait does not fit.
        """
        engine, name = self.engine, candidate.model
        if self._min_window is not None:
            window = engine.windows(name)
            if window is not None and window <= self._min_window:
                return False
        wait = engine.state.not_before(name) - engine.clock.monotonic()
        if wait > 0:
            if wait > engine.settings.max_server_wait or wait >= self.remaining():
                exc = RateLimitError(
                    f"rate-limited for another {wait:.1f} s, longer than the request can wait",
                    error_class=ErrorClass.RATE_LIMITED,
                    provider=candidate.provider,
                    model=name,
                    retry_after=wait,
                    request_id=self.base_trace.request_id,
                )
                exc.trace = self.trace
                raise exc
            await self.sleep(wait)
        breaker = engine.state.breaker(name)
        if breaker.acquire(engine.clock.monotonic()):
            return True
        if candidate.note is not None:  # re-admitted although blocked: it goes as the probe
            breaker.force_probe()
            return True
        return False

    def admit_now(self, candidate: Candidate) -> bool:
        """Take ``candidate``'s breaker if it can be sent to right now, without waiting."""
        state = self.engine.state
        if state.blocked(candidate.model, candidate.provider) is not None:
            return False
        return state.breaker(candidate.model).acquire(self.engine.clock.monotonic())

    async def sleep(self, seconds: float) -> None:
        """Wait, counting it for the next attempt's record (and as a span event)."""
        self._waited += seconds
        if self.route.is_recording():
            self.route.add_event(sc.BACKOFF_EVENT, {sc.DELAY_S: seconds})
        await self.engine.clock.sleep(seconds)

    def next_index(self) -> int:
        """Number a new attempt: 1, 2, ... in the order they start (hedged ones included)."""
        self._started_attempts += 1
        return self._started_attempts

    def attempt_timeout(self) -> float:
        """Return the attempt's time limit: the first-token timeout, capped by the deadline."""
        limit = self.engine.settings.first_token_timeout
        return min(limit if limit is not None else math.inf, self.remaining())

    def timed_out(self, candidate: Candidate, seconds: float, setting: str) -> ProviderError:
        """The error for an attempt that waited ``seconds`` (its ``setting``), or the deadline."""
        if self.remaining() <= 0:
            return self._deadline_error(candidate)
        return ProviderTimeoutError(
            f"no answer within {seconds:g} s ({setting})",
            error_class=ErrorClass.PROVIDER_DOWN,
            provider=candidate.provider,
            model=candidate.model,
            request_id=self.base_trace.request_id,
        )

    def record(
        self,
        candidate: Candidate,
        outcome: str,
        started: float,
        *,
        status: int | None = None,
        message: str | None = None,
        usage: Usage | None = None,
        cost: float | None = None,
    ) -> None:
        """Add one attempt to the trace (and a log record when it failed)."""
        elapsed = (self.engine.clock.monotonic() - started) * 1000
        if outcome not in ("ok", "cancelled") and _log.isEnabledFor(logging.INFO):
            _log.info(
                "request %s: attempt %d on %s failed (%s)",
                self.base_trace.request_id,
                len(self.attempts) + 1,
                candidate.model,
                outcome,
                extra={
                    "request_id": self.base_trace.request_id,
                    "model": candidate.model,
                    "provider": candidate.provider,
                    "attempt": len(self.attempts) + 1,
                    "error_class": outcome,
                    "latency_ms": round(elapsed, 1),
                    "delay_s": self._waited,
                },
            )
        self.attempts.append(
            Attempt(
                candidate.model,
                candidate.provider,
                outcome,
                elapsed,
                status,
                message,
                wait_s=self._waited,
                usage=usage,
                cost_usd=cost,
            )
        )
        self._waited = 0.0

    def succeeded(
        self,
        candidate: Candidate,
        started: float,
        usage: Usage | None,
        first_at: float | None = None,
    ) -> None:
        """Record a success and feed the runtime state."""
        now = self.engine.clock.monotonic()
        self.engine.state.record_success(
            candidate.model,
            latency_ms=(now - started) * 1000,
            output_tokens=usage.output_tokens if usage else None,
            ttft_ms=None if first_at is None else (first_at - started) * 1000,
        )
        self.record(candidate, "ok", started)

    def abandoned(
        self,
        candidate: Candidate,
        started: float,
        span: AttemptSpan,
        exc: BaseException,
        *,
        usage: Usage | None = None,
        cost: float | None = None,
    ) -> None:
        """Record an attempt cut short by something other than a provider error; free its probe.

        The caller stopping (a cancellation, a stream closed early) or a lost
        hedge is no failure; anything else (a bug in an adapter) is ``_OTHER``.
        """
        engine = self.engine
        if _stopped(exc):
            span.cancelled()
            outcome = self.cancelled_as
        else:
            outcome = sc.error_type(exc)
            span.failed(engine.clock.monotonic() - started, outcome, type(exc).__name__)
        engine.state.release(candidate.model)
        self.record(candidate, outcome, started, usage=usage, cost=cost)

    def finish(self, error: BaseException | None) -> None:
        """End the route span and log the request's outcome."""
        trace = self.trace
        if error is None or _stopped(error):
            finish_route(self.route, trace)
            if not _log.isEnabledFor(logging.INFO):
                return
            if error is None:
                _log.info(
                    "request %s answered by %s after %d attempt(s)",
                    trace.request_id,
                    trace.chosen,
                    len(trace.attempts),
                    extra=self._outcome(trace, None),
                )
            else:
                _log.info(
                    "request %s cancelled by the caller after %d attempt(s)",
                    trace.request_id,
                    len(trace.attempts),
                    extra=self._outcome(trace, "cancelled"),
                )
            return
        kind = sc.error_type(error)
        finish_route(self.route, trace, error_type=kind, message=str(error))
        _log.warning(
            "request %s failed after %d attempt(s) (%s)",
            trace.request_id,
            len(trace.attempts),
            kind,
            extra=self._outcome(trace, kind),
        )

    def _outcome(self, trace: RouteTrace, error: str | None) -> dict[str, Any]:
        last = trace.attempts[-1] if trace.attempts else None
        return {
            "request_id": trace.request_id,
            "model": last.model if last else None,
            "provider": last.provider if last else None,
            "attempt": len(trace.attempts),
            "error_class": error,
            "latency_ms": round((self.engine.clock.monotonic() - self.started) * 1000, 1),
        }

    def failed(
        self,
        candidate: Candidate,
        exc: ProviderError | CredentialError | RequestError,
        started: float,
        *,
        tries: int,
        last: bool,
    ) -> tuple[Action, float, ChatRequest | None]:
        """Record a failure, update health, and decide: retry (after a delay), next, or raise."""
        engine, state, s = self.engine, self.engine.state, self.engine.settings
        name = candidate.model
        self.last_error = exc
        if isinstance(exc, CredentialError | RequestError):
            outcome = "credential" if isinstance(exc, CredentialError) else "unsupported"
            self.record(candidate, outcome, started, message=str(exc))
            state.release(name)
            return ("raise" if last else "next"), 0.0, None
        cls = exc.error_class
        self.record(candidate, cls.value, started, status=exc.status, message=exc.message)
        if cls.counts_against_health:
            state.record_failure(name)
        else:
            state.release(name)
        if exc.retry_after is not None and cls in (ErrorClass.RATE_LIMITED, ErrorClass.OVERLOADED):
            state.cool_down(name, exc.retry_after)
        if cls in (ErrorClass.AUTH, ErrorClass.QUOTA_EXHAUSTED):
            state.disable_credential(candidate.provider, cls.value, exc.retry_after)
        if cls is ErrorClass.CONTEXT_OVERFLOW:
            shrunk = self._shrunk(exc, candidate, tries)
            if shrunk is not None:
                return "retry", 0.0, shrunk
            limit = exc.limit if isinstance(exc, ContextOverflowError) else None
            self._min_window = max(self._min_window or 0, engine.windows(name) or limit or 0)
            return ("raise" if last else "next"), 0.0, None
        if cls is ErrorClass.INVALID_REQUEST:
            prefill = "prefill" in exc.message.lower()
            return ("next" if prefill and not last else "raise"), 0.0, None
        if cls is ErrorClass.CONTENT_POLICY:
            return ("next" if s.content_policy_fallback and not last else "raise"), 0.0, None
        if not last:
            return "next", 0.0, None
        return self._retry_last(exc, tries)

    def _retry_last(self, exc: ProviderError, tries: int) -> tuple[Action, float, None]:
        """On the last candidate: retry overloads, transients and rate limits within limits."""
        s, clock = self.engine.settings, self.engine.clock
        cls = exc.error_class
        timeout = isinstance(exc, ProviderTimeoutError)
        if tries >= s.max_retries or timeout or exc.should_retry is False:
            return "raise", 0.0, None
        if cls is ErrorClass.RATE_LIMITED and exc.retry_after is not None:
            if exc.retry_after > s.max_server_wait:
                return "raise", 0.0, None
            delay = server_wait(exc.retry_after, clock.random())
        elif cls in _SAME_MODEL_RETRY or cls in (ErrorClass.PROVIDER_DOWN, ErrorClass.RATE_LIMITED):
            delay = full_jitter(tries, clock.random(), base=s.backoff_base, cap=s.backoff_cap)
        else:
            return "raise", 0.0, None
        if delay >= self.remaining() or not self.engine.budget.withdraw():
            return "raise", 0.0, None
        return "retry", delay, None

    def _shrunk(self, exc: ProviderError, candidate: Candidate, tries: int) -> ChatRequest | None:
        """A copy of the request with a smaller ``max_tokens`` that fits, if the numbers allow."""
        if not isinstance(exc, ContextOverflowError) or tries:
            return None
        limit, prompt = exc.limit, exc.prompt_tokens
        if limit is None or prompt is None:
            return None
        room = limit - prompt - _MIN_SHRUNK_OUTPUT // 4
        current = self.request.max_tokens or candidate.output_tokens
        if room < _MIN_SHRUNK_OUTPUT or room >= current:
            return None
        return attrs.evolve(self.request, max_tokens=room)


def _stopped(exc: BaseException) -> bool:
    """Whether ``exc`` is the caller stopping, not a failure.

    A stream closed early raises ``GeneratorExit``, a cancelled call the
    backend's cancellation exception: neither subclasses ``Exception``.
    """
    return not isinstance(exc, Exception)


def _raise(exc: BaseException, run: Run) -> NoReturn:
    """Raise a final error with its trace, and without the adapter's frames.

    Adapter and HTTP frames hold raw bodies and request headers in their locals;
    tracebacks rendered with locals (Sentry, structlog) must not show them.
    """
    if isinstance(exc, ProviderError | CredentialError | RequestError) and exc.trace is None:
        exc.trace = run.trace
    raise exc.with_traceback(None)


class _Opened(Generic[T]):
    """A candidate that produced its first result (a response, or a stream's first chunk)."""

    __slots__ = ("call", "candidate", "span", "started", "value")

    def __init__(
        self, candidate: Candidate, call: Call, value: T, started: float, span: AttemptSpan
    ) -> None:
        self.candidate, self.call, self.value, self.started = candidate, call, value, started
        self.span = span


async def _attempt(
    run: Run, candidate: Candidate, req: ChatRequest, open_: Opener[T]
) -> _Opened[T]:
    """Send ``req`` to ``candidate`` within the attempt's time limit."""
    engine = run.engine
    # The span needs the call (its headers carry traceparent) and the call reports its URL to
    # the span: a one-slot holder ties them without rebuilding the call.
    holder: list[AttemptSpan] = []
    provider, call = engine.call(
        candidate.model,
        req,
        run.base_trace.request_id,
        lambda url: holder[0].server(url),  # noqa: PLW0108 - holder is filled below
    )
    kind, base_url = engine.describe(candidate.model)
    span = engine.telemetry.attempt(
        run.route,
        candidate,
        call,
        kind=kind,
        base_url=base_url,
        index=run.next_index(),
        stream=run.stream,
    )
    holder.append(span)
    started = engine.clock.monotonic()
    limit = run.attempt_timeout()
    try:
        with anyio.move_on_after(limit):
            return _Opened(candidate, call, await open_(call, provider), started, span)
        error: BaseException = run.timed_out(candidate, limit, "first_token_timeout")
    except (ProviderError, CredentialError, RequestError) as exc:
        error = exc
    except BaseException as exc:  # cancelled (a lost hedge, the caller), or a bug
        run.abandoned(candidate, started, span, exc)
        raise
    span.failed(engine.clock.monotonic() - started, sc.error_type(error), str(error))
    raise error


async def _first_success(run: Run, open_: Opener[T]) -> _Opened[T]:
    """Try the candidates in order (racing the first two when hedging) until one opens."""
    engine, candidates = run.engine, run.base_trace.candidates
    start = 0
    hedging = engine.settings.hedge_after is not None or engine.settings.hedge_p95
    if hedging and len(candidates) > 1:
        raced = await _hedged(run, open_)
        if isinstance(raced, _Opened):
            return raced
        start = raced
    for i in range(start, len(candidates)):
        candidate = candidates[i]
        last = i == len(candidates) - 1
        req, tries = run.request, 0
        while await run.admit(candidate):
            started = engine.clock.monotonic()
            try:
                return await _attempt(run, candidate, req, open_)
            except (ProviderError, CredentialError, RequestError) as exc:
                action, delay, changed = run.failed(candidate, exc, started, tries=tries, last=last)
                if action == "raise" or run.remaining() <= 0:
                    _raise(exc, run)
                counter = (
                    engine.telemetry.failovers if action == "next" else engine.telemetry.retries
                )
                counter.add(1, {sc.MODEL: candidate.model, sc.ERROR_TYPE: sc.error_type(exc)})
                if action == "next":
                    break
            tries += 1
            req = changed or req
            if delay:
                await run.sleep(delay)
    # Every remaining candidate was skipped (smaller context window, probe in flight).
    _raise(run.last_error or run._deadline_error(candidates[-1]), run)  # noqa: SLF001


async def _hedged(run: Run, open_: Opener[T]) -> _Opened[T] | int:
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
            result: Any = await _attempt(run, candidate, run.request, open_)
        except (ProviderError, CredentialError, RequestError) as exc:
            result = exc
        # Without a checkpoint: a result (an open stream) must not be lost to a cancellation.
        send.send_nowait((index, result, started))

    winner: _Opened[T] | None = None
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
            if isinstance(result, _Opened):
                winner = result
                break
            action, _, _ = run.failed(racers[index], result, started, tries=0, last=False)
            if action == "raise":
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
            if isinstance(leftover, _Opened):
                leftover.span.cancelled()
                if isinstance(leftover.value, tuple):
                    await _aclose(leftover.value[0])  # a stream's (source, first chunk): release it
    if winner is not None:
        return winner
    if failure is not None:
        _raise(failure, run)
    return len(racers)


def _hedge_delay(run: Run, primary: Candidate) -> float:
    s = run.engine.settings
    delay = s.hedge_after if s.hedge_after is not None else math.inf
    if s.hedge_p95:
        p95 = run.engine.state.ttft_p95_ms(primary.model)
        if p95 is not None:
            delay = p95 / 1000
    return min(delay, run.remaining())


async def _send(call: Call, provider: Provider) -> ChatResponse:
    return await provider.send(call)


async def chat(
    engine: Engine, request: ChatRequest, trace: RouteTrace, timeout: float | None
) -> ChatResponse:
    """Get a whole answer, trying the candidates in order."""
    run = engine.run(request, trace, timeout, stream=False)
    try:
        opened = await _first_success(run, _send)
    except BaseException as exc:
        run.finish(exc)
        raise
    response = opened.value
    opened.span.ok(
        engine.clock.monotonic() - opened.started,
        usage=response.usage,
        cost=response.cost_usd,
        response_model=response.upstream_model,
        response_id=response.response_id,
        finish_reason=response.finish_reason,
    )
    run.succeeded(opened.candidate, opened.started, response.usage)
    run.finish(None)
    return with_trace(response, run.trace)


async def _open_stream(call: Call, provider: Provider) -> tuple[AsyncIterator[Chunk], Chunk]:
    source = provider.stream(call)
    try:
        first = await anext(source)
    except StopAsyncIteration:
        await _aclose(source)
        raise _ended(call) from None
    except BaseException:
        await _aclose(source)
        raise
    return source, first


async def stream(
    engine: Engine,
    request: ChatRequest,
    trace: RouteTrace,
    timeout: float | None,
    partial: Partial,
) -> AsyncGenerator[tuple[Chunk, Run, Call]]:
    """Yield the chunks of the first candidate that delivers one; then stay committed to it.

    Failover is invisible until the first chunk; after it, a break raises
    :class:`StreamInterrupted` carrying the partial answer.
    """
    run = engine.run(request, trace, timeout, stream=True)
    try:
        opened = await _first_success(run, _open_stream)
        try:
            async with aclosing(_follow(run, opened, partial)) as chunks:
                async for chunk in chunks:
                    yield chunk, run, opened.call
        except StreamInterrupted:
            continuation = await _continuation(run, opened.candidate, partial)
            if continuation is None:
                raise
            async with aclosing(_follow(run, continuation, partial)) as chunks:
                async for chunk in chunks:
                    yield chunk, run, continuation.call
    except BaseException as exc:
        run.finish(exc)
        raise
    run.finish(None)


def _follow(
    run: Run, opened: _Opened[tuple[AsyncIterator[Chunk], Chunk]], partial: Partial
) -> AsyncGenerator[Chunk]:
    source, first = opened.value
    return _committed(
        run,
        candidate=opened.candidate,
        call=opened.call,
        source=source,
        first=first,
        started=opened.started,
        partial=partial,
        span=opened.span,
    )


async def _continuation(
    run: Run, broken: Candidate, partial: Partial
) -> _Opened[tuple[AsyncIterator[Chunk], Chunk]] | None:
    """Open a stream that continues the partial answer on a later prefill-capable candidate.

    Only with ``continue_streams``, never with tool calls in flight, one try per
    candidate; any failure leaves the original interruption to be raised.
    """
    engine = run.engine
    if not engine.settings.continue_streams or partial.tool_calls or not partial.text:
        return None
    candidates = run.base_trace.candidates
    later = candidates[candidates.index(broken) + 1 :]
    prefill = Message(role="assistant", content=partial.text)
    request = attrs.evolve(run.request, messages=(*run.request.messages, prefill))
    left, why = broken, ErrorClass.STREAM_INTERRUPTED.value
    for candidate in later:
        if not engine.prefill(candidate.model) or not run.admit_now(candidate):
            continue
        engine.telemetry.failovers.add(1, {sc.MODEL: left.model, sc.ERROR_TYPE: why})
        started = engine.clock.monotonic()
        try:
            return await _attempt(run, candidate, request, _open_stream)
        except (ProviderError, CredentialError, RequestError) as exc:
            run.failed(candidate, exc, started, tries=0, last=False)
            left, why = candidate, sc.error_type(exc)
    return None


def with_trace(response: ChatResponse, trace: RouteTrace) -> ChatResponse:
    """``response`` with its trace.

    A response fresh from its adapter (no trace yet) has not left the engine, so
    the trace (excluded from equality and hashing) is set in place rather than
    copying every field; anything else (a provider reusing a response) is copied.
    """
    if response.trace is not None:
        return attrs.evolve(response, trace=trace)
    object.__setattr__(response, "trace", trace)
    return response


def _ended(call: Call) -> ProviderError:
    return ProviderUnavailableError(
        "the provider ended the stream without a finish reason",
        error_class=ErrorClass.TRANSIENT,
        provider=call.provider,
        model=call.model,
        request_id=call.request_id,
    )


async def _committed(
    run: Run,
    *,
    candidate: Candidate,
    call: Call,
    source: AsyncIterator[Chunk],
    first: Chunk,
    started: float,
    partial: Partial,
    span: AttemptSpan,
) -> AsyncGenerator[Chunk]:
    """The stream after its first chunk: a stall, cut or error is a StreamInterrupted."""
    engine = run.engine
    first_at = engine.clock.monotonic()
    stall = engine.settings.stall_timeout
    # A built-in adapter's HTTP read timeout already bounds every wait for a chunk; while
    # the deadline is further away than that, a cancel scope per chunk (µs each) is waste.
    read_bound = engine.read_timeout(candidate.model) if stall is None else None
    last = first
    delivered = 1
    # Looked up once: this loop runs for every chunk.
    monotonic, deadline = engine.clock.monotonic, run.deadline
    on_chunk, add = span.chunk, partial.add
    try:
        on_chunk(first_at, started)
        add(first)
        yield first
        while True:
            remaining = deadline - monotonic()
            if read_bound is not None and remaining > read_bound:
                try:
                    chunk = await anext(source)
                except StopAsyncIteration:
                    break
            else:
                limit = min(stall if stall is not None else math.inf, remaining)
                with anyio.move_on_after(limit) as scope:
                    try:
                        chunk = await anext(source)
                    except StopAsyncIteration:
                        break
                if scope.cancelled_caught:
                    raise run.timed_out(candidate, limit, "stall_timeout")
            on_chunk(monotonic(), started)
            add(chunk)
            last = chunk
            delivered += 1
            yield chunk
        if last.finish_reason is None:
            raise _ended(call)
    except ProviderError as exc:
        span.failed(engine.clock.monotonic() - started, "stream_interrupted", str(exc))
        engine.state.record_failure(candidate.model)
        usage = partial.usage or exc.usage
        run.record(
            candidate,
            ErrorClass.STREAM_INTERRUPTED.value,
            started,
            status=exc.status,
            message=exc.message,
            usage=usage,
            cost=call.cost(usage),
        )
        interrupted = StreamInterrupted(
            f"the stream broke after {delivered} chunk(s): {exc.message}",
            partial_text=partial.text,
            partial_tool_calls=partial.tool_calls,
            usage=usage,
            provider=call.provider,
            model=call.model,
            status=exc.status,
            code=exc.error_class.value,
            request_id=call.request_id,
        )
        interrupted.trace = run.trace
        raise interrupted from None
    except BaseException as exc:  # closed early by the caller, or cancelled (or a bug)
        usage = partial.usage
        run.abandoned(candidate, started, span, exc, usage=usage, cost=call.cost(usage))
        raise
    finally:
        await _aclose(source)
    span.ok(
        engine.clock.monotonic() - started,
        usage=partial.usage,
        cost=call.cost(partial.usage),
        response_model=last.upstream_model,
        response_id=last.response_id,
        finish_reason=last.finish_reason,
    )
    run.succeeded(candidate, started, partial.usage, first_at)


async def _aclose(source: AsyncIterator[Any]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()
