"""The Hub: the one entry object, its streams, and its synchronous facade."""

from __future__ import annotations

import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Self

import attrs

from tokenhub._models import ChatResponse, Chunk, ToolCall, Usage
from tokenhub._request import build_request
from tokenhub.errors import (
    ConfigError,
    ErrorClass,
    ModelNotFoundError,
    ProviderError,
    ProviderUnavailableError,
    StreamInterrupted,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
    from types import TracebackType

    import httpx
    from anyio.from_thread import BlockingPortal

    from tokenhub._config import HubConfig, ModelConfig
    from tokenhub._models import ChatRequest, Message, Tool
    from tokenhub.providers import Call, Capabilities, Provider

__all__ = ["ChatStream", "Hub", "SyncChatStream", "SyncHub"]


def _new_request_id() -> str:
    return os.urandom(12).hex()


@attrs.frozen
class _Model:
    """A configured model, resolved against its provider for the hot path."""

    name: str
    upstream: str
    provider_name: str
    provider: Provider
    config: ModelConfig


class Hub:
    """Routes chat requests to configured models and providers.

    Build one with :meth:`from_config` and use it as an async context manager::

        async with Hub.from_config(config) as hub:
            r = await hub.chat([{"role": "user", "content": "Hello"}], model="gpt-4o-mini")

    A Hub is safe to share between tasks; it holds one connection pool per provider.
    """

    def __init__(
        self,
        config: HubConfig,
        providers: Mapping[str, Provider],
        *,
        request_ids: Callable[[], str] = _new_request_id,
    ) -> None:
        self._config = config
        self._providers: dict[str, Provider] = dict(providers)
        self._request_ids = request_ids
        self._models: dict[str, _Model] = {}
        for name, m in config.models.items():
            self._models[name] = _Model(
                name=name,
                upstream=m.upstream or name,
                provider_name=m.provider,
                provider=self._providers[m.provider],
                config=m,
            )

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        providers: Mapping[str, Provider] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Hub:
        """Build a Hub from a plain dict. No network I/O happens here.

        ``providers`` adds ready-made :class:`~tokenhub.providers.Provider`
        instances that models may name; ``transport`` is an httpx transport used
        by every built-in adapter (for tests, proxies or custom TLS); ``clock``
        returns UNIX time and is used to interpret rate-limit reset headers.

        Raises :class:`~tokenhub.errors.ConfigError` listing every problem.
        """
        from tokenhub._config import parse_config  # noqa: PLC0415 - cattrs loads on first use
        from tokenhub._httpx import HttpxClient  # noqa: PLC0415
        from tokenhub.providers import ProviderSettings  # noqa: PLC0415
        from tokenhub.providers._registry import find_kind, kinds_for  # noqa: PLC0415

        extra = dict(providers or {})
        parsed = parse_config(
            config, known_kinds=kinds_for(config), extra_providers=frozenset(extra)
        )
        built: dict[str, Provider] = {}
        errors: list[tuple[str, str]] = []
        for name, p in parsed.providers.items():
            factory = find_kind(p.kind)
            if factory is None:  # pragma: no cover - parse_config checked the kind
                raise ConfigError([(f"providers.{name}.kind", f"unknown kind {p.kind!r}")])
            http = HttpxClient(
                timeouts=p.timeouts, max_connections=p.max_connections, transport=transport
            )
            settings = ProviderSettings(
                name=name,
                kind=p.kind,
                base_urls=p.base_urls,
                api_key=p.api_key,
                headers=p.headers,
                timeouts=p.timeouts,
                options=p.options,
                http=http,
                clock=clock,
            )
            try:
                built[name] = factory(settings)
            except ConfigError as exc:  # adapters report paths relative to their entry
                errors.extend((f"providers.{name}.{path}", why) for path, why in exc.errors)
        if errors:
            raise ConfigError(errors)
        built.update(extra)
        return cls(parsed, built)

    @property
    def models(self) -> tuple[str, ...]:
        """The configured model names."""
        return tuple(self._models)

    def capabilities(self, model: str) -> Capabilities:
        """Describe what ``model`` can do.

        A model's configured ``capabilities`` list replaces its adapter's
        defaults; its ``context_window`` sets ``max_context``.
        """
        m = self._models.get(model)
        if m is None:
            raise ModelNotFoundError(model, tuple(self._models))
        caps = m.provider.capabilities(m.upstream)
        named = m.config.capabilities
        if named is not None:
            caps = attrs.evolve(
                caps,
                tools="tools" in named,
                vision="vision" in named,
                json_schema="json_schema" in named,
                prefill="prefill" in named,
            )
        if m.config.context_window is not None:
            caps = attrs.evolve(caps, max_context=m.config.context_window)
        return caps

    def add_provider(self, name: str, provider: Provider) -> None:
        """Register ``provider`` under ``name``, replacing a provider of that name.

        Models configured with ``"provider": name`` use it from the next request on.
        """
        self._providers[name] = provider
        for key, m in self._models.items():
            if m.provider_name == name:
                self._models[key] = attrs.evolve(m, provider=provider)

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
        """Close every provider's connections."""
        for provider in self._providers.values():
            await provider.aclose()

    def _call(
        self, model: str, request: ChatRequest, request_id: str | None
    ) -> tuple[Provider, Call]:
        from tokenhub.providers import Call  # noqa: PLC0415 - cheap after the first call

        m = self._models.get(model)
        if m is None:
            raise ModelNotFoundError(model, tuple(self._models))
        call = Call(
            request=request,
            model=m.name,
            upstream=m.upstream,
            provider=m.provider_name,
            request_id=request_id or self._request_ids(),
            max_output_tokens=m.config.max_output_tokens,
            pricing=m.config.pricing,
        )
        return m.provider, call

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any] | Message],
        *,
        model: str,
        tools: Sequence[Mapping[str, Any] | Tool] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: Mapping[str, Any] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        user: str | None = None,
        metadata: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> ChatResponse:
        """Send a chat request and return the whole answer.

        Arguments follow OpenAI's Chat Completions API. ``extra_body`` is merged
        into the provider's request body as is. ``request_id`` is generated when
        not given and sent upstream as ``X-Request-ID``.

        Raises :class:`~tokenhub.errors.RequestError` for an invalid request and
        :class:`~tokenhub.errors.ModelNotFoundError` for an unknown model, both
        before any I/O, and a :class:`~tokenhub.errors.ProviderError` subclass when
        the provider fails.
        """
        request = build_request(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            response_format=response_format,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=seed,
            user=user,
            metadata=metadata,
            extra_body=extra_body,
        )
        provider, call = self._call(model, request, request_id)
        return await provider.send(call)

    def stream(
        self,
        messages: Sequence[Mapping[str, Any] | Message],
        *,
        model: str,
        tools: Sequence[Mapping[str, Any] | Tool] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: Mapping[str, Any] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        user: str | None = None,
        metadata: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> ChatStream:
        """Start a streaming chat request; iterate the result for its chunks.

        The request is validated here, before any I/O; it is sent when iteration
        starts. After the stream ends, :attr:`ChatStream.response` holds the
        whole answer. Use ``async with`` to release the connection early::

            async with hub.stream(messages, model="claude-haiku") as stream:
                async for chunk in stream:
                    print(chunk.text, end="")
        """
        request = build_request(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            response_format=response_format,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=seed,
            user=user,
            metadata=metadata,
            extra_body=extra_body,
        )
        provider, call = self._call(model, request, request_id)
        return ChatStream(provider, call)


class ChatStream:
    """A streaming answer: iterate it once for chunks; then read :attr:`response`.

    If the stream breaks after chunks have been delivered, iteration raises
    :class:`~tokenhub.errors.StreamInterrupted` carrying the partial answer:
    a truncated answer is never reported as a success.
    """

    def __init__(self, provider: Provider, call: Call) -> None:
        self._provider = provider
        self._call = call
        self._iterator: AsyncIterator[Chunk] | None = None
        self._response: ChatResponse | None = None
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tools: dict[int, list[str]] = {}
        self._usage: Usage | None = None

    @property
    def request_id(self) -> str:
        """The request id, known before the first chunk."""
        return self._call.request_id

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

    def _tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(id=parts[0], name=parts[1], arguments="".join(parts[2:]))
            for _, parts in sorted(self._tools.items())
        )

    def _add(self, chunk: Chunk) -> None:
        if chunk.text:
            self._text.append(chunk.text)
        if chunk.reasoning:
            self._reasoning.append(chunk.reasoning)
        for d in chunk.tool_calls:
            parts = self._tools.setdefault(d.index, ["", ""])
            if d.id:
                parts[0] = d.id
            if d.name:
                parts[1] = d.name
            if d.arguments:
                parts.append(d.arguments)
        if chunk.usage is not None:
            self._usage = chunk.usage

    async def _iterate(self) -> AsyncIterator[Chunk]:
        call = self._call
        delivered = 0
        last: Chunk | None = None
        source = self._provider.stream(call)
        try:
            async for chunk in source:
                self._add(chunk)
                last = chunk
                delivered += 1
                yield chunk
        except ProviderError as exc:
            if delivered == 0:
                raise
            raise StreamInterrupted(
                f"the stream broke after {delivered} chunk(s): {exc.message}",
                partial_text="".join(self._text),
                partial_tool_calls=self._tool_calls(),
                usage=self._usage,
                error_class=ErrorClass.STREAM_INTERRUPTED,
                provider=call.provider,
                model=call.model,
                status=exc.status,
                code=exc.error_class.value,
                request_id=call.request_id,
            ) from None
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        if last is None or last.finish_reason is None:
            why = "the provider ended the stream without a finish reason"
            if delivered == 0:
                raise ProviderUnavailableError(
                    why,
                    error_class=ErrorClass.TRANSIENT,
                    provider=call.provider,
                    model=call.model,
                    request_id=call.request_id,
                )
            raise StreamInterrupted(
                why,
                partial_text="".join(self._text),
                partial_tool_calls=self._tool_calls(),
                usage=self._usage,
                provider=call.provider,
                model=call.model,
                code=ErrorClass.TRANSIENT.value,
                request_id=call.request_id,
            )
        self._response = call.response(
            text="".join(self._text),
            tool_calls=self._tool_calls(),
            finish_reason=last.finish_reason,
            usage=self._usage,
            upstream_model=last.upstream_model,
            response_id=last.response_id,
            created=last.created or None,
            reasoning="".join(self._reasoning),
        )


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

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> SyncHub:
        """Build from a plain dict; takes the same arguments as :meth:`Hub.from_config`."""
        return cls(Hub.from_config(config, **kwargs))

    @property
    def hub(self) -> Hub:
        """The underlying async Hub."""
        return self._hub

    def _get_portal(self) -> BlockingPortal:
        if self._portal is None:
            from anyio.from_thread import start_blocking_portal  # noqa: PLC0415

            self._portal_cm = start_blocking_portal()
            self._portal = self._portal_cm.__enter__()
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
        """Close the Hub and stop the background event loop."""
        if self._portal is not None:
            try:
                self._portal.call(self._hub.aclose)
            finally:
                cm, self._portal, self._portal_cm = self._portal_cm, None, None
                cm.__exit__(None, None, None)

    def chat(self, messages: Sequence[Mapping[str, Any] | Message], **kwargs: Any) -> ChatResponse:
        """Blocking :meth:`Hub.chat`."""
        return self._get_portal().call(partial(self._hub.chat, messages, **kwargs))

    def stream(
        self, messages: Sequence[Mapping[str, Any] | Message], **kwargs: Any
    ) -> SyncChatStream:
        """Blocking :meth:`Hub.stream`: iterate the result for chunks, then read ``response``.

        Validation errors are raised here, at the call, before any I/O.
        """
        return SyncChatStream(self._get_portal(), self._hub.stream(messages, **kwargs))


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
