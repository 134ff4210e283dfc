"""The Hub: the one entry object, and its streams."""

from __future__ import annotations

import os
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Self

import attrs

from tokenhub._models import ChatResponse, Chunk, ToolCall, Usage
from tokenhub._request import build_request
from tokenhub.errors import (
    ConfigError,
    CredentialError,
    ErrorClass,
    ModelNotFoundError,
    ProviderError,
    ProviderUnavailableError,
    StreamInterrupted,
)
from tokenhub.routing._estimate import make_counter
from tokenhub.routing._policy import ModelInfo
from tokenhub.routing._router import Router
from tokenhub.routing._state import RuntimeState
from tokenhub.routing._trace import Attempt

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
    from types import TracebackType

    import httpx

    from tokenhub._config import HubConfig, ModelConfig
    from tokenhub._models import ChatRequest, Message, Tool
    from tokenhub.providers import Call, Capabilities, Provider
    from tokenhub.routing import RouteTrace

__all__ = ["ChatStream", "Hub"]

# Failures that say "try another model": the provider, the key or the model's limits,
# not the request itself (invalid_request and content_policy are raised at once).
_FAIL_OVER = frozenset(
    {
        ErrorClass.RATE_LIMITED,
        ErrorClass.OVERLOADED,
        ErrorClass.TRANSIENT,
        ErrorClass.PROVIDER_DOWN,
        ErrorClass.QUOTA_EXHAUSTED,
        ErrorClass.AUTH,
        ErrorClass.REQUEST_TOO_LARGE_FOR_LIMIT,
        ErrorClass.CONTEXT_OVERFLOW,
    }
)


def _new_request_id() -> str:
    return os.urandom(12).hex()


def _fails_over(exc: Exception) -> bool:
    return isinstance(exc, CredentialError) or (
        isinstance(exc, ProviderError) and exc.error_class in _FAIL_OVER
    )


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

    With ``model=`` naming a model or an alias, that model is tried first and the
    policy's fallbacks after it; without it, the routing policy ranks every model.
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
        self._models: dict[str, _Model] = {
            name: _Model(name, m.upstream or name, m.provider, self._providers[m.provider], m)
            for name, m in config.models.items()
        }
        self._state = RuntimeState()
        self._router = Router(
            {name: self._info(i, name) for i, name in enumerate(self._models)},
            config.routing,
            config.aliases,
            self._state,
            make_counter(config.tokenizer),
            providers=self._providers,
        )

    def _info(self, index: int, name: str) -> ModelInfo:
        m = self._models[name].config
        caps = self.capabilities(name)
        flags = ("streaming", "tools", "vision", "json_schema", "prefill")
        return ModelInfo(
            name=name,
            provider=m.provider,
            index=index,
            capabilities=frozenset(f for f in flags if getattr(caps, f)),
            context_window=m.context_window,
            max_output_tokens=m.max_output_tokens,
            input_price=m.pricing.input if m.pricing else None,
            output_price=m.pricing.output if m.pricing else None,
            quality=0.5 if m.quality is None else m.quality,
            tags=m.tags,
            enabled=m.enabled,
            weight=m.weight,
            latency_ms=m.latency_ms,
            output_tokens=m.output_tokens,
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

    def _plan(
        self, args: dict[str, Any], *, stream: bool = False
    ) -> tuple[ChatRequest, RouteTrace]:
        """Validate a call's arguments (the caller's ``locals()``) and rank its candidates."""
        params = {k: v for k, v in args.items() if k not in _ROUTING_ARGS}
        request = build_request(**params)
        request_id = args["request_id"] or self._request_ids()
        policy = self._router.policy_for(args["policy"])
        trace = self._router.plan(
            request,
            model=args["model"],
            policy=policy,
            caller=args["caller"],
            request_id=request_id,
            stream=stream,
        )
        return request, trace

    def _call(self, name: str, request: ChatRequest, request_id: str) -> tuple[Provider, Call]:
        from tokenhub.providers import Call  # noqa: PLC0415 - cheap after the first call

        m = self._models[name]
        call = Call(
            request=request,
            model=m.name,
            upstream=m.upstream,
            provider=m.provider_name,
            request_id=request_id,
            max_output_tokens=m.config.max_output_tokens,
            pricing=m.config.pricing,
        )
        return m.provider, call

    def _failed(self, name: str, exc: Exception, started: float) -> Attempt:
        elapsed = (time.perf_counter() - started) * 1000
        if isinstance(exc, ProviderError):
            if exc.error_class.counts_against_health:
                self._state.record_failure(name)
            outcome, status, message = exc.error_class.value, exc.status, exc.message
        else:
            outcome, status, message = "credential", None, str(exc)
        return Attempt(name, self._models[name].provider_name, outcome, elapsed, status, message)

    def _succeeded(self, name: str, started: float, usage: Usage | None) -> Attempt:
        elapsed = (time.perf_counter() - started) * 1000
        self._state.record_success(
            name, latency_ms=elapsed, output_tokens=usage.output_tokens if usage else None
        )
        return Attempt(name, self._models[name].provider_name, "ok", elapsed)

    def explain(
        self,
        messages: Sequence[Mapping[str, Any] | Message],
        *,
        model: str | None = None,
        policy: Mapping[str, Any] | None = None,
        caller: str | None = None,
        request_id: str | None = None,
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
    ) -> RouteTrace:
        """Return the route :meth:`chat` would take for these arguments, sending nothing.

        The candidates are in the order the Hub would try them (for a given
        ``request_id`` when exploration or a sticky alias is involved).
        """
        return self._plan(locals())[1]

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any] | Message],
        *,
        model: str | None = None,
        policy: Mapping[str, Any] | None = None,
        caller: str | None = None,
        request_id: str | None = None,
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
    ) -> ChatResponse:
        """Send a chat request and return the whole answer.

        ``model`` names a model or an alias (tried first, then the policy's
        fallbacks); without it the routing ``policy`` (config ``routing``
        overridden by this argument's keys) ranks every model. ``caller`` names
        who is asking (user, tenant), for sticky aliases. The other arguments
        follow OpenAI's Chat Completions API; ``extra_body`` is merged into the
        provider's request body as is. ``request_id`` is generated when not given
        and sent upstream as ``X-Request-ID``.

        When a candidate fails for a reason another model may not share (rate
        limit, overload, outage, credential, context size), the next candidate is
        tried; ``response.trace`` lists every attempt.

        Raises :class:`~tokenhub.errors.RequestError`,
        :class:`~tokenhub.errors.ModelNotFoundError` or
        :class:`~tokenhub.errors.NoRouteError` before any I/O, and the last
        candidate's :class:`~tokenhub.errors.ProviderError` when all fail.
        """
        request, trace = self._plan(locals())
        attempts: list[Attempt] = []
        for candidate in trace.candidates:
            provider, call = self._call(candidate.model, request, trace.request_id)
            started = time.perf_counter()
            try:
                response = await provider.send(call)
            except (ProviderError, CredentialError) as exc:
                attempts.append(self._failed(candidate.model, exc, started))
                if candidate is trace.candidates[-1] or not _fails_over(exc):
                    if isinstance(exc, ProviderError):
                        exc.trace = attrs.evolve(trace, attempts=tuple(attempts))
                    raise
                continue
            attempts.append(self._succeeded(candidate.model, started, response.usage))
            return attrs.evolve(response, trace=attrs.evolve(trace, attempts=tuple(attempts)))
        raise AssertionError("unreachable: the router never returns an empty plan")

    def stream(
        self,
        messages: Sequence[Mapping[str, Any] | Message],
        *,
        model: str | None = None,
        policy: Mapping[str, Any] | None = None,
        caller: str | None = None,
        request_id: str | None = None,
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
    ) -> ChatStream:
        """Start a streaming chat request; iterate the result for its chunks.

        Takes the same arguments as :meth:`chat`. The request is validated and
        routed here, before any I/O; it is sent when iteration starts. A candidate
        that fails before its first chunk is replaced by the next one, invisibly;
        once a chunk has been delivered the stream is committed to that model.
        After the stream ends, :attr:`ChatStream.response` holds the whole answer.
        Use ``async with`` to release the connection early::

            async with hub.stream(messages, model="claude-haiku") as stream:
                async for chunk in stream:
                    print(chunk.text, end="")
        """
        request, trace = self._plan(locals(), stream=True)
        return ChatStream(self, request, trace)


_ROUTING_ARGS = frozenset({"self", "model", "policy", "caller", "request_id"})


class ChatStream:
    """A streaming answer: iterate it once for chunks; then read :attr:`response`.

    If the stream breaks after chunks have been delivered, iteration raises
    :class:`~tokenhub.errors.StreamInterrupted` carrying the partial answer:
    a truncated answer is never reported as a success.
    """

    def __init__(self, hub: Hub, request: ChatRequest, trace: RouteTrace) -> None:
        self._hub = hub
        self._request = request
        self._trace = trace
        self._attempts: list[Attempt] = []
        self._iterator: AsyncIterator[Chunk] | None = None
        self._response: ChatResponse | None = None
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tools: dict[int, list[str]] = {}
        self._usage: Usage | None = None

    @property
    def request_id(self) -> str:
        """The request id, known before the first chunk."""
        return self._trace.request_id

    @property
    def trace(self) -> RouteTrace:
        """The route: candidates, exclusions, and the attempts made so far."""
        return attrs.evolve(self._trace, attempts=tuple(self._attempts))

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
        hub, candidates = self._hub, self._trace.candidates
        for candidate in candidates:
            provider, call = hub._call(candidate.model, self._request, self.request_id)  # noqa: SLF001
            started = time.perf_counter()
            source = provider.stream(call)
            try:
                try:
                    first = await anext(source)  # nothing is delivered before this succeeds
                except StopAsyncIteration:
                    raise self._ended_early(call) from None
            except (ProviderError, CredentialError) as exc:
                self._attempts.append(hub._failed(candidate.model, exc, started))  # noqa: SLF001
                await _aclose(source)
                if candidate is candidates[-1] or not _fails_over(exc):
                    if isinstance(exc, ProviderError):
                        exc.trace = self.trace
                    raise
                continue
            except BaseException:
                await _aclose(source)
                raise
            async with aclosing(self._deliver(call, first, source, started, candidate.model)) as d:
                async for chunk in d:
                    yield chunk
            return

    def _ended_early(self, call: Call) -> ProviderError:
        return ProviderUnavailableError(
            "the provider ended the stream without a finish reason",
            error_class=ErrorClass.TRANSIENT,
            provider=call.provider,
            model=call.model,
            request_id=call.request_id,
        )

    async def _deliver(
        self, call: Call, first: Chunk, source: AsyncIterator[Chunk], started: float, name: str
    ) -> AsyncGenerator[Chunk]:
        """Yield the committed stream; any break from here on is a StreamInterrupted."""
        last = first
        delivered = 1
        self._add(first)
        try:
            yield first
            async for chunk in source:
                self._add(chunk)
                last = chunk
                delivered += 1
                yield chunk
            if last.finish_reason is None:
                raise self._ended_early(call)
        except ProviderError as exc:
            self._attempts.append(self._hub._failed(name, exc, started))  # noqa: SLF001
            interrupted = StreamInterrupted(
                f"the stream broke after {delivered} chunk(s): {exc.message}",
                partial_text="".join(self._text),
                partial_tool_calls=self._tool_calls(),
                usage=self._usage,
                provider=call.provider,
                model=call.model,
                status=exc.status,
                code=exc.error_class.value,
                request_id=call.request_id,
            )
            interrupted.trace = self.trace
            raise interrupted from None
        finally:
            await _aclose(source)
        self._attempts.append(self._hub._succeeded(name, started, self._usage))  # noqa: SLF001
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
        self._response = attrs.evolve(self._response, trace=self.trace)


async def _aclose(source: AsyncIterator[Chunk]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()
