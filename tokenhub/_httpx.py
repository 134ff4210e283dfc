"""The default HTTP seam implementation: one pooled ``httpx.AsyncClient`` per provider."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio
import httpx

from tokenhub._http import DRAIN_BYTES, DRAIN_SECONDS, HttpResponse, HttpSettings
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


class _HttpxStream:
    __slots__ = ("_raw", "_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._raw: AsyncGenerator[bytes] | None = None
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _translate(exc) from None

    async def events(self) -> AsyncGenerator[SSEEvent]:
        decoder = SSEDecoder()
        # Not closed here: drain() may read the rest of it (post_stream closes it).
        raw = self._raw = cast("AsyncGenerator[bytes]", self._response.aiter_bytes())
        while True:
            try:
                data = await anext(raw)
            except StopAsyncIteration:
                break
            except httpx.HTTPError as exc:
                raise _translate(exc) from None
            for event in decoder.feed(data):
                yield event
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

    def _get(self) -> httpx.AsyncClient:
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

    async def post_json(self, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """POST and read the whole response."""
        client = self._get()
        request = client.build_request("POST", url, content=body, headers=headers)
        del headers  # no plaintext credential in this frame's locals from here on
        try:
            r = await client.send(request)
        except httpx.HTTPError as exc:
            raise _translate(exc) from None
        return HttpResponse(r.status_code, r.headers, r.content)

    @asynccontextmanager
    async def post_stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[HttpStream]:
        """POST and yield the open streaming response; the connection is released on exit."""
        client = self._get()
        request = client.build_request("POST", url, content=body, headers=headers)
        del headers  # no plaintext credential in this frame's locals while the stream is open
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _translate(exc) from None
        stream = _HttpxStream(response)
        try:
            yield stream
            # Ended normally: reuse the connection (closing an unfinished body drops it).
            await stream.drain()
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        """Close the pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
