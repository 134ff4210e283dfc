"""The HTTP seam: what adapters send requests through, and the clients tokenhub ships.

Every built-in adapter talks to the network through one :class:`HttpClient` per
provider: POST JSON bytes and get the status, headers and body back, or open a
stream and iterate its Server-Sent Events. ``Hub.from_config(http=factory)``
plugs in your own: ``factory`` is called once per built-in provider with that
provider's :class:`HttpSettings` and returns its client::

    Hub.from_config(config, http=lambda s: HttpxClient(s, transport=my_transport))

:class:`HttpxClient` is the default; :class:`AiohttpClient` needs
``tokenhub[aiohttp]``. Both are loaded on first use, so importing this module
imports neither httpx nor aiohttp. A client raises :class:`TransportError` for
failures below HTTP, which adapters turn into a
:class:`~tokenhub.errors.ProviderError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenhub._http import HttpClient, HttpResponse, HttpSettings, HttpStream
from tokenhub._settings import Timeouts
from tokenhub._sse import SSEDecoder, SSEEvent
from tokenhub.errors import TransportError

if TYPE_CHECKING:
    from tokenhub._aiohttp import AiohttpClient
    from tokenhub._httpx import HttpxClient

__all__ = [
    "AiohttpClient",
    "HttpClient",
    "HttpResponse",
    "HttpSettings",
    "HttpStream",
    "HttpxClient",
    "SSEDecoder",
    "SSEEvent",
    "Timeouts",
    "TransportError",
]


def __getattr__(name: str) -> Any:
    # httpx and aiohttp load on first use: `import tokenhub.http` stays light.
    if name == "HttpxClient":
        from tokenhub._httpx import HttpxClient  # noqa: PLC0415

        return HttpxClient
    if name == "AiohttpClient":
        try:
            from tokenhub._aiohttp import AiohttpClient  # noqa: PLC0415
        except ImportError as exc:
            msg = "AiohttpClient needs aiohttp: pip install 'tokenhub[aiohttp]'"
            raise ImportError(msg, name="aiohttp") from exc
        return AiohttpClient
    raise AttributeError(f"module 'tokenhub.http' has no attribute {name!r}")
