"""The thin HTTP seam between adapters and the network (public as :mod:`tokenhub.http`).

Adapters see only :class:`HttpClient`: POST JSON bytes and get status, headers
and body back, or open a stream and iterate Server-Sent Events. Nothing above
this module touches httpx types: the httpx implementation lives in
:mod:`tokenhub._httpx`, the aiohttp one in :mod:`tokenhub._aiohttp`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple, Protocol

import attrs

from tokenhub._settings import Timeouts
from tokenhub.errors import TransportError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping
    from contextlib import AbstractAsyncContextManager

    from tokenhub._sse import SSEEvent

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DRAIN_BYTES",
    "DRAIN_SECONDS",
    "HttpClient",
    "HttpResponse",
    "HttpSettings",
    "HttpStream",
    "TransportError",
]


#: The default bound on a response body (after decompression) and on one stream event.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


@attrs.frozen
class HttpSettings:
    """What an HTTP client is built from: one provider's timeouts, pool size and size limit.

    ``provider`` is the provider's name in the config (empty for a client built
    on its own), so that a client factory can treat providers differently.
    ``max_response_bytes`` bounds a whole body and each stream event, counted
    after decompression: more raises a ``too_large`` :class:`TransportError`.
    """

    timeouts: Timeouts = attrs.field(factory=Timeouts)
    max_connections: int = 100
    provider: str = ""
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


def too_large(limit: int) -> TransportError:
    """The error for a body (or one stream event) over ``limit`` bytes."""
    return TransportError("too_large", str(limit))


def past_deadline() -> TransportError:
    """The error for a stream still running at the deadline its reader passed."""
    return TransportError("timeout", "deadline")


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

    def events(self, deadline: float = math.inf) -> AsyncGenerator[SSEEvent]:
        """Iterate the body as Server-Sent Events until the connection closes.

        ``deadline`` is a :func:`time.monotonic` time: no wait for bytes may
        outlast it (a stream trickling comments or single bytes included); past
        it, raise a ``timeout`` :class:`TransportError`.
        """
        ...


class HttpClient(Protocol):
    """What adapters need from HTTP: the seam a custom client plugs into.

    Implementations raise :class:`TransportError` for every failure below HTTP
    (their own library's exceptions never escape) and never follow redirects:
    the request's headers carry the credential, and a redirect could send them
    to another host. Headers are returned with lower-cased names.
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
