"""The default HTTP seam implementation: one pooled ``httpx.AsyncClient`` per provider.

Errors are raised outside the ``except`` block that caught httpx's exception,
after the request (its headers hold the credential) has left the frame: the
raised :class:`TransportError` has no ``__context__`` reaching httpx's
exception or its frames.
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from time import monotonic
from typing import TYPE_CHECKING, Any, cast

import anyio
import httpx

from tokenhub._http import (
    DRAIN_BYTES,
    DRAIN_SECONDS,
    HttpResponse,
    HttpSettings,
    past_deadline,
    too_large,
)
from tokenhub._sse import SSEDecoder
from tokenhub.errors import TransportError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Mapping

    from tokenhub._http import HttpStream
    from tokenhub._sse import SSEEvent

__all__ = ["HttpxClient"]


def _translate(exc: httpx.HTTPError) -> TransportError:
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return TransportError("timeout", name)
    if isinstance(exc, httpx.ConnectError):
        return TransportError("connect", name)
    return TransportError("network", name)


def _unanswered(exc: httpx.HTTPError) -> bool:
    """Whether the server closed the connection before sending a byte of the response.

    That is what a pooled connection the server has meanwhile closed looks like:
    worth one more try, which httpx makes on a new connection.
    """
    return isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc)


async def _read(response: httpx.Response, limit: int) -> bytes:
    """Read the decompressed body, raising ``too_large`` once it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        size += len(part)
        if size > limit:
            raise too_large(limit)
        parts.append(part)
    return b"".join(parts)


class _HttpxStream:
    __slots__ = ("_limit", "_raw", "_read_timeout", "_response", "headers", "status")

    def __init__(self, response: httpx.Response, settings: HttpSettings) -> None:
        self._response = response
        self._raw: AsyncGenerator[bytes] | None = None
        self._limit = settings.max_response_bytes
        self._read_timeout = settings.timeouts.read
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await _read(self._response, self._limit)
        except httpx.HTTPError as exc:
            error = _translate(exc)
        except TransportError as exc:
            error = exc.with_traceback(None)
        raise error

    async def events(self, deadline: float = math.inf) -> AsyncGenerator[SSEEvent]:
        decoder = SSEDecoder()
        # Not closed here: drain() may read the rest of it (post_stream closes it).
        raw = self._raw = cast("AsyncGenerator[bytes]", self._response.aiter_bytes())
        limit, read_timeout = self._limit, self._read_timeout
        pending = 0  # bytes received since the last complete event
        error: TransportError | None = None
        while True:
            left = deadline - monotonic()
            try:
                if left > read_timeout:  # httpx's read timeout fires first: no scope needed
                    data = await anext(raw)
                else:
                    # Near the deadline: bound this read by it (a read that needs no wait
                    # would not notice a passed deadline, hence the first check).
                    if left > 0:
                        with anyio.move_on_after(left):
                            data = await anext(raw)
                            left = math.inf
                    if left != math.inf:
                        error = past_deadline()
                        break
            except StopAsyncIteration:
                break
            except httpx.HTTPError as exc:
                error = _translate(exc)
                break
            events = decoder.feed(data)
            if events:
                pending = 0
                for event in events:
                    yield event
            else:
                pending += len(data)
                if pending > limit:
                    error = too_large(limit)
                    break
        if error is not None:
            raise error
        for event in decoder.flush():
            yield event

    async def drain(self) -> None:
        """Read the little that follows the last event, so the connection is reused."""
        if self._raw is None:
            return
        seen = 0
        with anyio.move_on_after(DRAIN_SECONDS):
            try:
                async for piece in self._raw:
                    seen += len(piece)
                    if seen > DRAIN_BYTES:
                        return
            except httpx.HTTPError:
                return

    async def aclose(self) -> None:
        if self._raw is not None:
            await self._raw.aclose()
        await self._response.aclose()


class HttpxClient:
    """The default :class:`~tokenhub.http.HttpClient`: one pooled ``httpx.AsyncClient``.

    The client is created on first use, with ``settings``' timeouts and pool
    size. ``transport`` replaces httpx's network transport: an
    ``httpx.MockTransport`` in tests, or an ``httpx.AsyncHTTPTransport`` with a
    ``proxy``, ``verify`` (custom TLS) or ``local_address`` (a transport you
    pass brings its own pool, so ``max_connections`` does not bound it).

    A request the server closed its connection on before answering at all (a
    pooled connection it had closed meanwhile) is sent once more.
    """

    def __init__(
        self,
        settings: HttpSettings = HttpSettings(),  # noqa: B008 - a frozen value
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    def _get(self) -> httpx.AsyncClient:
        if self._closed:  # closed for good: never a new pool that nothing would close
            raise TransportError("connect", "client closed")
        if self._client is None:
            t, n = self.settings.timeouts, self.settings.max_connections
            kwargs: dict[str, Any] = {}
            if self._transport is not None:
                kwargs["transport"] = self._transport
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                follow_redirects=False,
                **kwargs,
            )
        return self._client

    async def _send(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (streamed); once more if it went out on a dead connection."""
        try:
            return await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            if not _unanswered(exc):
                raise
        return await client.send(request, stream=True)

    async def _exchange(self, client: httpx.AsyncClient, request: httpx.Request) -> HttpResponse:
        r = await self._send(client, request)
        try:
            content = await _read(r, self.settings.max_response_bytes)
        finally:
            await r.aclose()
        return HttpResponse(r.status_code, r.headers, content)

    async def post_json(self, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """POST and read the whole response (at most ``max_response_bytes`` of it)."""
        client = self._get()
        request = client.build_request("POST", url, content=body, headers=headers)
        del headers  # no plaintext credential in this frame's locals from here on
        try:
            return await self._exchange(client, request)
        except httpx.HTTPError as exc:
            error = _translate(exc)
        except TransportError as exc:  # too large
            error = exc
        del request
        # Without the frames below this one: they hold the request and response.
        raise error.with_traceback(None)

    @asynccontextmanager
    async def post_stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[HttpStream]:
        """POST and yield the open streaming response; the connection is released on exit."""
        client = self._get()
        request = client.build_request("POST", url, content=body, headers=headers)
        del headers  # no plaintext credential in this frame's locals while the stream is open
        try:
            response = await self._send(client, request)
        except httpx.HTTPError as exc:
            error: TransportError | None = _translate(exc)
        else:
            error = None
        del request
        if error is not None:
            raise error
        stream = _HttpxStream(response, self.settings)
        try:
            yield stream
            # Ended normally: reuse the connection (closing an unfinished body drops it).
            await stream.drain()
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        """Close the pool; the client stays closed (a request then fails with ``connect``)."""
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
            self._client = None
