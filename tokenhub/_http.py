"""The thin HTTP seam between adapters and the network.

Adapters see only :class:`HttpClient`: POST JSON bytes and get status, headers
and body back, or open a stream and iterate Server-Sent Events. Nothing above
this module touches httpx types: the httpx implementation lives in
:mod:`tokenhub._httpx`, and another one (aiohttp) can sit beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping
    from contextlib import AbstractAsyncContextManager

    from tokenhub._sse import SSEEvent

__all__ = [
    "DRAIN_BYTES",
    "DRAIN_SECONDS",
    "HttpClient",
    "HttpResponse",
    "HttpStream",
    "TransportError",
]

TransportKind = Literal["connect", "timeout", "network"]


class TransportError(Exception):
    """The request failed below HTTP: no connection, a timeout, or a broken connection.

    ``kind`` is ``connect`` (nothing was sent), ``timeout`` or ``network``.
    The message never contains URLs, headers or bodies.
    """

    def __init__(self, kind: TransportKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: TransportKind = kind
        self.detail = detail


class HttpResponse(NamedTuple):
    """A complete response: status, lower-cased headers and the raw body.

    Its repr shows neither headers nor body: error bodies can echo credentials,
    and reprs end up in tracebacks rendered with their locals.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:
        return f"HttpResponse(status={self.status}, body=<{len(self.body)} bytes>)"


#: After a stream's last event, read at most this much of what follows (usually nothing, or
#: ``data: [DONE]``) for this long, so that the connection can go back to the pool.
DRAIN_BYTES = 65536
DRAIN_SECONDS = 0.25


class HttpStream(Protocol):
    """An open streaming response."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """Read the whole (error) body."""
        ...

    def events(self) -> AsyncGenerator[SSEEvent]:
        """Iterate the body as Server-Sent Events until the connection closes."""
        ...


class HttpClient(Protocol):
    """What adapters need from HTTP.

    Implementations never follow redirects: the request's headers carry the
    credential, and a redirect could send them to another host.
    """

    async def post_json(self, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """POST ``body`` (JSON bytes) and return the whole response."""
        ...

    def post_stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AbstractAsyncContextManager[HttpStream]:
        """POST ``body`` and open the response as a stream."""
        ...

    async def aclose(self) -> None:
        """Close pooled connections."""
        ...
