"""Streaming: the first candidate to deliver a chunk wins; after it, the stream is committed.

Failover is invisible until the first chunk; after it a stall, cut or error
raises :class:`~tokenhub.errors.StreamInterrupted` with the partial answer
(or, with ``continue_streams``, a later prefill-capable candidate continues it).
"""

from __future__ import annotations

import math
from contextlib import aclosing
from typing import TYPE_CHECKING

import anyio
import attrs

from tokenhub import _semconv as sc
from tokenhub._models import Message
from tokenhub.errors import (
    CredentialError,
    ErrorClass,
    ProviderError,
    ProviderUnavailableError,
    RequestError,
    StreamInterrupted,
)
from tokenhub.routing._attempts import Opened, aclose, attempt, first_success, unexpected

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from tokenhub._models import Candidate, ChatRequest, Chunk, RouteTrace
    from tokenhub._telemetry import AttemptSpan
    from tokenhub.providers import Call, Provider
    from tokenhub.routing._partial import Partial
    from tokenhub.routing._run import Engine, Run

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

    Failover is invisible until the first chunk; after it, a break raises
    :class:`StreamInterrupted` carrying the partial answer.
    """
    run = engine.run(request, trace, timeout, stream=True)
    try:
        opened = await first_success(run, _open_stream)
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
    run: Run, opened: Opened[tuple[AsyncIterator[Chunk], Chunk]], partial: Partial
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
    )


async def _continuation(
    run: Run, broken: Candidate, partial: Partial
) -> Opened[tuple[AsyncIterator[Chunk], Chunk]] | None:
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
        if not run.deployments[candidate.model].prefill or not run.admit_now(candidate):
            continue
        engine.telemetry.failovers.add(1, {sc.MODEL: left.model, sc.ERROR_TYPE: why})
        started = engine.clock.monotonic()
        try:
            return await attempt(run, candidate, request, _open_stream)
        except (ProviderError, CredentialError, RequestError) as exc:
            run.failed(candidate, exc, started, tries=0, last=False)
            left, why = candidate, sc.error_type(exc)
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
) -> AsyncGenerator[Chunk]:
    """The stream after its first chunk: a stall, cut or error is a StreamInterrupted."""
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
    # Looked up once: this loop runs for every chunk.
    monotonic, deadline = engine.clock.monotonic, run.deadline
    on_chunk, add = span.chunk, partial.add
    try:
        on_chunk(first_at, started)
        add(first)
        yield first
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
            add(chunk)
            last = chunk
            delivered += 1
            yield chunk
        if last.finish_reason is None:
            raise _ended(call)
    except ProviderError as exc:
        failure: ProviderError | None = exc
    except Exception as exc:  # noqa: BLE001 - the error boundary: anything an adapter raised
        failure = unexpected(call, exc)
    except BaseException as exc:  # closed early by the caller, or cancelled
        usage = partial.usage
        run.abandoned(candidate, started, span, exc, usage=usage, cost=call.cost(usage))
        raise
    else:
        failure = None
    finally:
        await aclose(source)
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
        finish_reason=last.finish_reason,
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
