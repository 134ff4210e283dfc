"""Streaming: the first candidate to deliver a chunk wins; after it, the stream is committed.

Failover is invisible until the first chunk. After it, a stall, cut or error is
rescued when another attempt can finish the answer consistently with what was
delivered (``continue_streams``; the checks are in ``_rescue``), and raises
:class:`~tokenhub.errors.StreamInterrupted` with the partial answer otherwise.
"""

from __future__ import annotations

import math
from contextlib import aclosing
from typing import TYPE_CHECKING, Literal

import anyio

from tokenhub import _semconv as sc
from tokenhub._models import Splice
from tokenhub.errors import (
    CredentialError,
    ErrorClass,
    ProviderError,
    ProviderUnavailableError,
    RequestError,
    StreamInterrupted,
)
from tokenhub.routing._attempts import Opened, aclose, attempt, first_success, unexpected
from tokenhub.routing._rescue import Diverged, Trim, Verifier, estimated_usage, prefilled, told

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from tokenhub._models import Candidate, ChatRequest, Chunk, RouteTrace
    from tokenhub._telemetry import AttemptSpan
    from tokenhub.providers import Call, Provider
    from tokenhub.routing._partial import Partial
    from tokenhub.routing._run import Engine, Run

    Check = Verifier | Trim
    Method = Literal["prefill", "regenerate", "instruct"]
    Opening = tuple[AsyncIterator[Chunk], Chunk]

__all__ = ["stream"]


async def _open_stream(call: Call, provider: Provider) -> tuple[AsyncIterator[Chunk], Chunk]:
    source = provider.stream(call)
    try:
        first = await anext(source)
    except StopAsyncIteration:
        await aclose(source)
        raise _ended(call) from None
    except BaseException:
        await aclose(source)
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

    Failover is invisible until the first chunk. After it, a break is rescued
    (``continue_streams``) when another attempt can finish the answer consistently
    with what was delivered; otherwise :class:`StreamInterrupted` carries the partial answer.
    """
    run = engine.run(request, trace, timeout, stream=True)
    try:
        opened = await first_success(run, _open_stream)
        check: Check | None = None
        splice: Splice | None = None
        rescuer = _Rescuer(run, partial)
        while True:
            try:
                async with aclosing(_follow(run, opened, partial, check)) as chunks:
                    async for chunk in chunks:
                        if splice is not None:  # the rescue delivered its first new chunk
                            run.splice(splice)
                            splice = None
                        yield chunk, run, opened.call
                break
            except StreamInterrupted as exc:
                rescuer.broke(opened.candidate, exc)
            except Diverged:  # a regeneration took another path: on to the next rescue
                pass
            plan = await rescuer.next()
            if plan is None:
                raise rescuer.failed()
            opened, check, splice = plan
    except BaseException as exc:
        run.finish(exc)
        raise
    run.finish(None)


def _follow(
    run: Run,
    opened: Opened[tuple[AsyncIterator[Chunk], Chunk]],
    partial: Partial,
    check: Check | None,
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
        read_timeout=run.deployments[opened.candidate.model].read_timeout,
        check=check,
    )


class _Rescuer:
    """The rescue attempts of one stream, after it broke: which candidate next, and how.

    Candidates are tried from the one after the broken one, round to the broken one
    itself (a break may be a one-off), each at most once, without waiting for a
    cooldown. A prefill-capable one continues the text; any other (or one that
    rejects the prefill) regenerates the answer, checked against what was
    delivered. With ``instruct``, when nothing verified worked, a model is asked
    to continue. Tool calls are only ever regenerated and checked.
    """

    __slots__ = (
        "_broken",
        "_instructed",
        "_order",
        "_queue",
        "_tried",
        "interrupted",
        "partial",
        "run",
    )

    def __init__(self, run: Run, partial: Partial) -> None:
        # Made for every stream, used only for one that breaks: nothing is built until then.
        self.run, self.partial = run, partial
        self._queue: list[tuple[Candidate, Method]] = []
        self._order: tuple[Candidate, ...] = ()
        self._tried: set[str] = set()
        self._instructed = False
        self._broken: Candidate | None = None
        self.interrupted: StreamInterrupted | None = None

    def broke(self, candidate: Candidate, exc: StreamInterrupted) -> None:
        """A committed stream broke (the first, or a rescue after its splice): plan anew."""
        self.interrupted, self._broken = exc, candidate
        if self.run.engine.settings.continue_streams == "off":
            return
        candidates = self.run.base_trace.candidates
        i = candidates.index(candidate) if candidate in candidates else len(candidates) - 1
        order = self._order = (*candidates[i + 1 :], *candidates[: i + 1])
        tools = bool(self.partial.tool_calls)
        self._queue = [
            (c, "prefill" if not tools and self._prefill(c.model) else "regenerate")
            for c in order
            if c.model not in self._tried
        ]

    def _prefill(self, model: str) -> bool:
        engine = self.run.engine
        return self.run.deployments[model].prefill and model not in engine.no_prefill

    def failed(self) -> StreamInterrupted:
        """The interruption to raise when nothing could finish the answer, with every attempt."""
        exc = self.interrupted
        if exc is None:  # pragma: no cover - a regeneration is only checked after a break
            raise AssertionError("a rescue without a broken stream")
        exc.trace = self.run.trace
        return exc

    async def next(self) -> tuple[Opened[Opening], Check | None, Splice] | None:
        """Open the next rescue attempt that gets a first chunk, or ``None`` when none is left."""
        run, partial, broken = self.run, self.partial, self._broken
        if broken is None:  # pragma: no cover - a regeneration is only checked after a break
            raise AssertionError("a rescue without a broken stream")
        while self._queue:
            candidate, method = self._queue.pop(0)
            if not run.admit_now(candidate):
                continue
            self._tried.add(candidate.model)
            check: Check | None = None
            if method == "prefill":
                request, space = prefilled(run.request, partial.text)
                check = Trim(space) if space else None
            else:
                request, check = run.request, Verifier(partial)
            opened = await self._open(broken, candidate, request)
            if isinstance(opened, ProviderError):
                if method == "prefill" and opened.error_class is ErrorClass.INVALID_REQUEST:
                    run.engine.no_prefill.add(candidate.model)  # learned: regenerate instead
                    self._queue.insert(0, (candidate, "regenerate"))
                    self._tried.discard(candidate.model)
                continue
            if opened is None:
                continue
            return opened, check, self._splice(broken, candidate, method)
        mode = run.engine.settings.continue_streams
        if mode != "instruct" or self._instructed or partial.tool_calls:
            return None
        self._instructed = True
        for candidate in self._order:
            if not run.admit_now(candidate):
                continue
            request, space = told(run.request, partial.text)
            opened = await self._open(broken, candidate, request)
            if isinstance(opened, Opened):
                return opened, Trim(space), self._splice(broken, candidate, "instruct")
        return None

    def _splice(self, broken: Candidate, candidate: Candidate, method: Method) -> Splice:
        p = self.partial
        return Splice(broken.model, candidate.model, method, len(p.text), len(p.tool_calls))

    async def _open(
        self, broken: Candidate, candidate: Candidate, request: ChatRequest
    ) -> Opened[Opening] | ProviderError | None:
        run = self.run
        why = ErrorClass.STREAM_INTERRUPTED.value
        run.engine.telemetry.failovers.add(1, {sc.MODEL: broken.model, sc.ERROR_TYPE: why})
        started = run.engine.clock.monotonic()
        try:
            return await attempt(run, candidate, request, _open_stream)
        except ProviderError as exc:
            run.failed(candidate, exc, started, tries=0, last=False)
            return exc
        except (CredentialError, RequestError) as exc:
            run.failed(candidate, exc, started, tries=0, last=False)
            return None


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
    read_timeout: float | None,
    check: Check | None = None,
) -> AsyncGenerator[Chunk]:
    """The stream after its first chunk: a stall, cut or error is a StreamInterrupted.

    A rescue's ``check`` filters each chunk first (``None``: nothing to deliver
    yet); a regeneration that diverges raises :class:`Diverged`, recorded here.
    """
    engine = run.engine
    first_at = engine.clock.monotonic()
    stall = run.stall_limit(candidate)
    # A built-in adapter's HTTP client bounds every wait for bytes by its read timeout and,
    # through ``call.deadline``, by the deadline (a trickle of comments or single bytes
    # included); while the deadline is further away than the read timeout, a cancel scope
    # per chunk (µs each) is waste.
    read_bound = read_timeout if stall is None else None
    last = first
    delivered, gap = 1, 0.0
    diverged: Diverged | None = None
    failure: ProviderError | None = None
    # Looked up once: this loop runs for every chunk.
    monotonic, deadline = engine.clock.monotonic, run.deadline
    on_chunk, add = span.chunk, partial.add
    try:
        on_chunk(first_at, started)
        head = first if check is None else check.feed(first)
        if head is not None:
            add(head)
            yield head
        now = first_at
        while True:
            # ``now`` is the last chunk's time: on this path the HTTP client enforces the
            # deadline itself, so the time the caller spent on that chunk needs no fresh clock.
            if read_bound is not None and deadline - now > read_bound:
                try:
                    chunk = await anext(source)
                except StopAsyncIteration:
                    break
            else:
                limit = min(stall if stall is not None else math.inf, deadline - monotonic())
                with anyio.move_on_after(limit) as scope:
                    try:
                        chunk = await anext(source)
                    except StopAsyncIteration:
                        break
                if scope.cancelled_caught:
                    raise run.timed_out(candidate, limit, "stall_timeout")
            chunk_at = monotonic()
            if chunk_at - now > gap:  # noqa: PLR1730 - per chunk: cheaper than a max() call
                gap = chunk_at - now
            now = chunk_at
            on_chunk(now, started)
            if check is not None:
                fed = check.feed(chunk)
                if fed is None:
                    continue
                chunk = fed
            add(chunk)
            last = chunk
            delivered += 1
            yield chunk
        if check is not None and not check.spliced:
            raise Diverged("the new answer ended before the splice point", check.received)
        if partial.finish_reason is None:  # a usage-only chunk may follow the finish chunk
            raise _ended(call)
    except Diverged as exc:
        diverged = exc
    except ProviderError as exc:
        failure = exc
    except Exception as exc:  # noqa: BLE001 - the error boundary: anything an adapter raised
        failure = unexpected(call, exc)
    except BaseException as exc:  # closed early by the caller, or cancelled
        usage = partial.usage
        run.abandoned(candidate, started, span, exc, usage=usage, cost=call.cost(usage))
        raise
    finally:
        await aclose(source)
    if diverged is not None:  # nothing of it was delivered: no failure of the provider either
        usage = estimated_usage(run.base_trace.prompt_tokens, diverged.received)
        span.failed(engine.clock.monotonic() - started, "diverged", diverged.why)
        engine.state.release(candidate.model)
        run.record(
            candidate, "diverged", started, message=diverged.why, usage=usage, cost=call.cost(usage)
        )
        raise diverged
    if failure is not None:
        # Raised here, outside the except block: no __context__ leads to the adapter's error.
        raise _interrupted(
            run,
            failure,
            candidate=candidate,
            call=call,
            started=started,
            partial=partial,
            span=span,
            delivered=delivered,
        )
    span.ok(
        engine.clock.monotonic() - started,
        usage=partial.usage,
        cost=call.cost(partial.usage),
        response_model=last.upstream_model,
        response_id=last.response_id,
        finish_reason=partial.finish_reason,
    )
    gaps = gap if delivered > 1 else None
    run.succeeded(candidate, started, partial.usage, first_at, gaps, reasoned=bool(first.reasoning))


def _interrupted(
    run: Run,
    exc: ProviderError,
    *,
    candidate: Candidate,
    call: Call,
    started: float,
    partial: Partial,
    span: AttemptSpan,
    delivered: int,
) -> StreamInterrupted:
    """Record a committed stream's failure; return the :class:`StreamInterrupted` to raise."""
    engine = run.engine
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
    return interrupted
