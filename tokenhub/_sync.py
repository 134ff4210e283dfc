"""The blocking facade over :class:`~tokenhub.Hub`, for scripts and notebooks."""

from __future__ import annotations

import threading
from functools import partial
from typing import TYPE_CHECKING, Any, Self

from tokenhub._hub import Hub
from tokenhub._request import CHAT_KEYS, unexpected_keyword

if TYPE_CHECKING:
    import datetime as dt
    import os
    from collections.abc import Iterator, Mapping, Sequence
    from types import TracebackType
    from typing import Unpack

    from anyio.from_thread import BlockingPortal

    from tokenhub._admin import SyncAdmin
    from tokenhub._hub import ChatStream
    from tokenhub._models import ChatResponse, Chunk, Message, RouteTrace
    from tokenhub._request import ChatOptions
    from tokenhub._storage import StoreBackend
    from tokenhub._vault import Vault
    from tokenhub.providers import Capabilities, Provider

__all__ = ["SyncChatStream", "SyncHub"]


class SyncHub:
    """The blocking facade over :class:`Hub`, for scripts and notebooks.

    It runs the Hub on an event loop in a background thread (an anyio blocking
    portal), so its methods work from any thread::

        with SyncHub.from_config(config) as hub:
            print(hub.chat([{"role": "user", "content": "Hi"}], model="gpt-4o-mini").text)
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._portal_cm: Any = None
        self._portal: BlockingPortal | None = None
        self._portal_lock = threading.Lock()  # the first calls may come from many threads

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> SyncHub:
        """Build from a plain dict; takes the same arguments as :meth:`Hub.from_config`."""
        return cls(Hub.from_config(config, **kwargs))

    @classmethod
    def from_store(cls, path: str | os.PathLike[str], **kwargs: Any) -> SyncHub:
        """Build from a store file; takes the same arguments as :meth:`Hub.from_store`."""
        return cls(Hub.from_store(path, **kwargs))

    @property
    def store(self) -> StoreBackend:
        """:attr:`Hub.store`."""
        return self._hub.store

    @property
    def admin(self) -> SyncAdmin:
        """:attr:`Hub.admin`, with blocking methods."""
        from tokenhub._admin import SyncAdmin  # noqa: PLC0415 - loads the store's modules

        return SyncAdmin(self._hub.admin, self._get_portal())

    def usage(
        self,
        *,
        since: float | dt.datetime | dt.timedelta | None = None,
        group_by: str = "model",
    ) -> list[dict[str, Any]]:
        """:meth:`Hub.usage`."""
        return self._get_portal().call(partial(self._hub.usage, since=since, group_by=group_by))

    @property
    def hub(self) -> Hub:
        """The underlying async Hub."""
        return self._hub

    @property
    def models(self) -> tuple[str, ...]:
        """The configured model names."""
        return self._hub.models

    @property
    def vault(self) -> Vault:
        """:attr:`Hub.vault` (its methods are blocking already)."""
        return self._hub.vault

    def capabilities(self, model: str) -> Capabilities:
        """:meth:`Hub.capabilities`."""
        return self._hub.capabilities(model)

    def health(self) -> dict[str, Any]:
        """:meth:`Hub.health`."""
        return self._hub.health()

    def enable_credential(self, provider: str) -> None:
        """:meth:`Hub.enable_credential`."""
        self._hub.enable_credential(provider)

    def add_provider(self, name: str, provider: Provider) -> None:
        """:meth:`Hub.add_provider`."""
        self._hub.add_provider(name, provider)

    def _get_portal(self) -> BlockingPortal:
        portal = self._portal
        if portal is not None:
            return portal
        with self._portal_lock:
            if self._portal is None:
                from anyio.from_thread import start_blocking_portal  # noqa: PLC0415

                cm = start_blocking_portal()
                self._portal = cm.__enter__()
                self._portal_cm = cm
            return self._portal

    def __enter__(self) -> Self:
        self._get_portal()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the Hub (its connections, vault and store) and stop the background loop."""
        with self._portal_lock:
            portal, cm = self._portal, self._portal_cm
            self._portal = self._portal_cm = None
        if portal is None:  # never used: the Hub needs no loop to close
            from anyio.from_thread import start_blocking_portal  # noqa: PLC0415

            cm = start_blocking_portal()
            portal = cm.__enter__()
        try:
            portal.call(self._hub.aclose)
        finally:
            cm.__exit__(None, None, None)

    def chat(
        self, messages: Sequence[Mapping[str, Any] | Message], **options: Unpack[ChatOptions]
    ) -> ChatResponse:
        """Blocking :meth:`Hub.chat`; the options are :class:`~tokenhub.ChatOptions`."""
        if not CHAT_KEYS.issuperset(options):
            raise unexpected_keyword("SyncHub.chat", options, CHAT_KEYS)
        return self._get_portal().call(partial(self._hub.chat, messages, **options))

    def explain(
        self, messages: Sequence[Mapping[str, Any] | Message], **options: Unpack[ChatOptions]
    ) -> RouteTrace:
        """:meth:`Hub.explain`; the options are :class:`~tokenhub.ChatOptions`. It needs no loop."""
        if not CHAT_KEYS.issuperset(options):
            raise unexpected_keyword("SyncHub.explain", options, CHAT_KEYS)
        return self._hub.explain(messages, **options)

    def stream(
        self, messages: Sequence[Mapping[str, Any] | Message], **options: Unpack[ChatOptions]
    ) -> SyncChatStream:
        """Blocking :meth:`Hub.stream`: iterate the result for chunks, then read ``response``.

        The options are :class:`~tokenhub.ChatOptions`. Validation errors are raised here,
        at the call, before any I/O.
        """
        if not CHAT_KEYS.issuperset(options):
            raise unexpected_keyword("SyncHub.stream", options, CHAT_KEYS)
        return SyncChatStream(self._get_portal(), self._hub.stream(messages, **options))


class SyncChatStream:
    """A blocking stream: iterate it once for chunks; then read :attr:`response`."""

    def __init__(self, portal: BlockingPortal, stream: ChatStream) -> None:
        self._portal = portal
        self._stream = stream

    @property
    def request_id(self) -> str:
        """The request id, known before the first chunk."""
        return self._stream.request_id

    @property
    def response(self) -> ChatResponse:
        """The whole answer, once the stream has ended normally."""
        return self._stream.response

    @property
    def trace(self) -> RouteTrace:
        """The route: candidates, exclusions, and the attempts made so far."""
        return self._stream.trace

    def __iter__(self) -> Iterator[Chunk]:
        it = self._stream.__aiter__()
        try:
            while True:
                try:
                    chunk = self._portal.call(it.__anext__)
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the stream and release its connection."""
        self._portal.call(self._stream.aclose)
