"""ChatStream: a streaming answer, iterated once, with its accounting."""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Self

from tokenhub.errors import HubClosedError, StreamInterrupted, TokenhubError

if TYPE_CHECKING:
    import threading
    from collections.abc import AsyncGenerator, AsyncIterator
    from types import TracebackType

    from tokenhub._clock import Clock
    from tokenhub._ledger import Ledger
    from tokenhub._models import ChatRequest, ChatResponse, Chunk, RouteTrace
    from tokenhub.routing import _engine
    from tokenhub.routing._engine import Engine

__all__ = ["ChatStream"]


class ChatStream:
    """A streaming answer: iterate it once for chunks; then read :attr:`response`.

    If the stream breaks after chunks have been delivered, iteration raises
    :class:`~tokenhub.errors.StreamInterrupted` carrying the partial answer:
    a truncated answer is never reported as a success.
    """

    def __init__(
        self,
        engine: Engine,
        request: ChatRequest,
        trace: RouteTrace,
        timeout: float | None,
        *,
        ledger: Ledger | None = None,
        caller: str | None = None,
        clock: Clock | None = None,
        closed: threading.Event | None = None,
    ) -> None:
        self._engine = engine
        self._request = request
        self._trace = trace
        self._timeout = timeout
        self._run: _engine.Run | None = None
        self._iterator: AsyncIterator[Chunk] | None = None
        self._response: ChatResponse | None = None
        # Budgets and request logs, when the Hub keeps them (a clock comes with a ledger).
        self._ledger, self._caller, self._clock = ledger, caller, clock
        self._closed = closed  # set when the Hub closes

    @property
    def request_id(self) -> str:
        """The request id, known before the first chunk."""
        return self._trace.request_id

    @property
    def trace(self) -> RouteTrace:
        """The route: candidates, exclusions, and the attempts made so far."""
        return self._trace if self._run is None else self._run.trace

    @property
    def response(self) -> ChatResponse:
        """The whole answer, once the stream has ended normally."""
        if self._response is None:
            raise RuntimeError("the stream has not finished")
        return self._response

    def __aiter__(self) -> AsyncIterator[Chunk]:
        if self._iterator is None:
            self._iterator = self._iterate()
        return self._iterator

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream and release its connection."""
        it = self._iterator
        if it is not None and hasattr(it, "aclose"):
            await it.aclose()

    async def _iterate(self) -> AsyncGenerator[Chunk]:
        from tokenhub.routing._engine import stream, with_trace  # noqa: PLC0415 - first Hub
        from tokenhub.routing._partial import Partial  # noqa: PLC0415

        if self._closed is not None and self._closed.is_set():
            raise HubClosedError
        partial = Partial()
        entry = None
        if self._ledger is not None and self._clock is not None:
            entry = self._ledger.entry(
                self._request,
                self._trace,
                self._caller,
                self._clock,
                stream=True,
                timeout=self._timeout,
            )
            await entry.admit()
        source = stream(self._engine, self._request, self._trace, self._timeout, partial)
        call = None
        try:
            async with aclosing(source) as chunks:
                async for chunk, run, attempt_call in chunks:
                    self._run, call = run, attempt_call
                    if entry is not None:
                        entry.first_chunk()
                    yield chunk
        except BaseException as exc:
            if self._run is None:  # failed before its first chunk: the error has the attempts
                failed = getattr(exc, "trace", None)
                if failed is not None:
                    self._trace = failed
            if entry is not None:  # an error, a cancellation or an early close
                entry.close_now(self.trace, None, exc)
            if self._closed is None or not self._closed.is_set():
                raise
            if isinstance(exc, TokenhubError) or not isinstance(exc, Exception):
                raise
            # The Hub closed its clients under this stream: say so, not how the client broke
            # (raised below, outside this block, so that no context leads to the client's error).
            replacement: TokenhubError | None = (
                HubClosedError()
                if call is None
                else StreamInterrupted(
                    "the Hub was closed during the stream",
                    partial_text=partial.text,
                    partial_tool_calls=partial.tool_calls,
                    usage=partial.usage,
                    provider=call.provider,
                    model=call.model,
                    request_id=self.request_id,
                    code="hub_closed",
                )
            )
        else:
            replacement = None
        if replacement is not None:
            raise replacement
        last = partial.last
        finish = partial.finish_reason
        if call is None or last is None or finish is None:  # pragma: no cover
            raise AssertionError("the engine ended a stream without its finish")
        response = call.response(
            text=partial.text,
            tool_calls=partial.tool_calls,
            finish_reason=finish,
            usage=partial.usage,
            upstream_model=last.upstream_model,
            response_id=last.response_id,
            created=last.created or None,
            reasoning=partial.reasoning,
        )
        self._response = with_trace(response, self.trace)
        if entry is not None:
            await entry.close(self.trace, self._response, None)
