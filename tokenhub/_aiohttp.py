"""The fast HTTP seam implementation on aiohttp (``pip install tokenhub[aiohttp]``).

Same behaviour as :mod:`tokenhub._httpx` (timeouts, errors, cancellation, no
redirects followed, size limits, errors raised without aiohttp's exception as
their context), at a fraction of httpx's CPU per request. aiohttp runs on
asyncio only.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import asynccontextmanager
from time import monotonic
from typing import TYPE_CHECKING

import aiohttp
import anyio

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

__all__ = ["AiohttpClient"]


def _translate(exc: BaseException) -> TransportError:
    name = type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return TransportError("timeout", name)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportError("connect", name)
    return TransportError("network", name)


_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


async def _read(content: aiohttp.StreamReader, limit: int) -> bytes:
    """Read the decompressed body, raising ``too_large`` once it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while data := await content.readany():
        size += len(data)
        if size > limit:
            raise too_large(limit)
        parts.append(data)
    return b"".join(parts)


class _AiohttpStream:
    __slots__ = ("_limit", "_read_timeout", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, settings: HttpSettings) -> None:
        self._response = response
        self._limit = settings.max_response_bytes
        self._read_timeout = settings.timeouts.read
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await _read(self._response.content, self._limit)
        except _ERRORS as exc:
            error = _translate(exc)
        except TransportError as exc:
            error = exc.with_traceback(None)
        raise error

    async def events(self, deadline: float = math.inf) -> AsyncGenerator[SSEEvent]:
        decoder = SSEDecoder()
        content = self._response.content
        limit, read_timeout = self._limit, self._read_timeout
        pending = 0  # bytes received since the last complete event
        error: TransportError | None = None
        while True:
            left = deadline - monotonic()
            try:
                if left > read_timeout:  # aiohttp's read timeout fires first: no scope needed
                    data = await content.readany()
                else:
                    # Near the deadline: bound this read by it (a read that needs no wait
                    # would not notice a passed deadline, hence the first check).
                    if left > 0:
                        with anyio.move_on_after(left):
                            data = await content.readany()
                            left = math.inf
                    if left != math.inf:
                        error = past_deadline()
                        break
            except _ERRORS as exc:
                error = _translate(exc)
                break
            if not data:
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
        content, seen = self._response.content, 0
        if content.is_eof():  # the whole body is in: aiohttp has already pooled the connection
            return
        with anyio.move_on_after(DRAIN_SECONDS):
            try:
                while seen <= DRAIN_BYTES:
                    data = await content.readany()
                    if not data:
                        return
                    seen += len(data)
            except _ERRORS:
                return


class AiohttpClient:
    """A :class:`~tokenhub.http.HttpClient` on one pooled ``aiohttp.ClientSession`` (asyncio only).

    The session is created on first use, with ``settings``' timeouts and pool size.
    Once closed, the client stays closed: a request then fails (``connect``) rather
    than open a session that nothing would close.
    """

    def __init__(self, settings: HttpSettings = HttpSettings()) -> None:  # noqa: B008 - frozen
        self.settings = settings
        timeouts = settings.timeouts
        # aiohttp bounds waiting for a pooled connection and opening one together (`connect`):
        # the sum of the two limits; `sock_connect` still bounds the TCP connect alone.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.pool + timeouts.connect,
            sock_connect=timeouts.connect,
            sock_read=timeouts.read,
        )
        self._max_connections = settings.max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _get(self) -> aiohttp.ClientSession:
        if self._closed:
            raise TransportError("connect", "client closed")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                auto_decompress=True,
            )
        return self._session

    async def _open(self, url: str, headers: dict[str, str], body: bytes) -> aiohttp.ClientResponse:
        """POST; once more if the request went out on a connection the server had closed."""
        session = self._get()
        try:
            return await session.post(url, data=body, headers=headers, allow_redirects=False)
        except aiohttp.ServerDisconnectedError:
            pass  # nothing of a response came: a pooled connection the server had closed
        return await session.post(url, data=body, headers=headers, allow_redirects=False)

    async def _exchange(self, url: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        r = await self._open(url, headers, body)
        try:
            content = await _read(r.content, self.settings.max_response_bytes)
        finally:
            r.release()
        return HttpResponse(r.status, r.headers, content)

    async def post_json(self, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """POST and read the whole response (at most ``max_response_bytes`` of it)."""
        try:
            return await self._exchange(url, dict(headers), body)
        except _ERRORS as exc:
            error = _translate(exc)
        except TransportError as exc:  # too large
            error = exc
        del headers  # no plaintext credential in this frame's locals from here on
        # Without the frames below this one: they hold the request and response.
        raise error.with_traceback(None)

    @asynccontextmanager
    async def post_stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[HttpStream]:
        """POST and yield the open streaming response; the connection is released on exit."""
        try:
            response = await self._open(url, dict(headers), body)
        except _ERRORS as exc:
            error: TransportError | None = _translate(exc)
        except TransportError as exc:  # closed
            error = exc
        else:
            error = None
        del headers  # no plaintext credential in this frame's locals while the stream is open
        if error is not None:
            raise error
        stream = _AiohttpStream(response, self.settings)
        try:
            yield stream
            # Ended normally: reuse the connection (releasing an unfinished body drops it).
            await stream.drain()
        finally:
            response.release()

    async def aclose(self) -> None:
        """Close the session and its connections."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
