"""The fast HTTP seam implementation on aiohttp (``pip install tokenhub[aiohttp]``).

Same behaviour as :mod:`tokenhub._httpx` (timeouts, errors, cancellation, no
redirects followed), at a fraction of httpx's CPU per request. aiohttp runs on
asyncio only.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aiohttp
import anyio

from tokenhub._http import DRAIN_BYTES, DRAIN_SECONDS, HttpResponse, HttpSettings
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


class _AiohttpStream:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except _ERRORS as exc:
            raise _translate(exc) from None

    async def events(self) -> AsyncGenerator[SSEEvent]:
        decoder = SSEDecoder()
        content = self._response.content
        while True:
            try:
                data = await content.readany()
            except _ERRORS as exc:
                raise _translate(exc) from None
            if not data:
                break
            for event in decoder.feed(data):
                yield event
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

    def _get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                auto_decompress=True,
            )
        return self._session

    async def post_json(self, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """POST and read the whole response."""
        session = self._get()
        request = session.post(url, data=body, headers=dict(headers), allow_redirects=False)
        del headers  # no plaintext credential in this frame's locals from here on
        try:
            async with request as r:
                return HttpResponse(r.status, r.headers, await r.read())
        except _ERRORS as exc:
            raise _translate(exc) from None

    @asynccontextmanager
    async def post_stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[HttpStream]:
        """POST and yield the open streaming response; the connection is released on exit."""
        session = self._get()
        request = session.post(url, data=body, headers=dict(headers), allow_redirects=False)
        del headers
        try:
            response = await request
        except _ERRORS as exc:
            raise _translate(exc) from None
        stream = _AiohttpStream(response)
        try:
            yield stream
            # Ended normally: reuse the connection (releasing an unfinished body drops it).
            await stream.drain()
        finally:
            response.release()

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
