"""The provider contract: what the Hub hands an adapter and what it expects back."""

from __future__ import annotations

import math
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from tokenhub._models import ChatResponse, Chunk

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from tokenhub._http import HttpClient
    from tokenhub._models import ChatRequest, ToolCall, ToolCallDelta, Usage
    from tokenhub._secret import Secret
    from tokenhub._settings import KeySource, Pricing, Timeouts
    from tokenhub.errors import ErrorClass

__all__ = ["Call", "Capabilities", "Classification", "Provider", "ProviderSettings"]

#: The headers of a call that adds none: one shared, read-only mapping.
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@attrs.frozen
class Capabilities:
    """What a provider's model can do."""

    streaming: bool = True
    tools: bool = False
    vision: bool = False
    json_schema: bool = False
    prefill: bool = False
    max_context: int | None = None


@attrs.frozen
class Classification:
    """A provider failure, classified: the class, a sanitised message and any wait hint."""

    error_class: ErrorClass
    message: str
    code: str | None = None
    retry_after: float | None = None
    limit: int | None = None
    prompt_tokens: int | None = None
    requested_output_tokens: int | None = None


@attrs.frozen
class ProviderSettings:
    """Everything an adapter is built from: its config entry plus the HTTP client to use.

    ``http`` is built from the entry's ``timeouts`` and ``max_connections``, by the
    factory passed as ``Hub.from_config(http=...)`` or else as the entry's ``http`` says.
    """

    name: str
    kind: str
    base_urls: tuple[str, ...]
    api_key: KeySource | None
    headers: Mapping[str, str]
    timeouts: Timeouts
    options: Mapping[str, Any]
    http: HttpClient
    clock: Callable[[], float] = time.time

    def key(self) -> Secret | None:
        """Resolve the API key now (never cache it: it may live in a vault that gets locked)."""
        return None if self.api_key is None else self.api_key.resolve(self.name)


@attrs.frozen
class Call:
    """One attempt: the request plus the model it is sent to.

    ``model`` and ``provider`` are the configured names; ``upstream`` is the
    model id sent on the wire. Build results with :meth:`response` and :meth:`chunk`
    so that names, request id and cost are filled in consistently.
    """

    request: ChatRequest
    model: str
    upstream: str
    provider: str
    request_id: str
    max_output_tokens: int | None = None
    pricing: Pricing | None = None
    #: Extra headers for this attempt (the W3C ``traceparent`` when tracing); read-only.
    headers: Mapping[str, str] = NO_HEADERS
    #: Adapters pass every response's headers here (rate-limit state); may be ``None``.
    observe: Callable[[Mapping[str, str]], None] | None = attrs.field(
        default=None, repr=False, eq=False
    )
    #: Adapters pass the URL of each request here before sending it (the attempt
    #: span's ``server.address`` and ``server.port``); may be ``None``.
    observe_url: Callable[[str], None] | None = attrs.field(default=None, repr=False, eq=False)
    #: The request's deadline as a :func:`time.monotonic` time: a stream's waits for
    #: the provider must not outlast it (built-in adapters hand it to the HTTP client).
    deadline: float = math.inf

    def cost(self, usage: Usage | None) -> float | None:
        """Price ``usage`` at this model's rates (``None`` without pricing or usage).

        Never negative, NaN or infinite: counts that would make it so (from an
        adapter that did not check them) price as unknown, ``None``.
        """
        p = self.pricing
        if p is None or usage is None:
            return None
        cached = usage.cached_input_tokens
        written = usage.cache_write_input_tokens
        plain = max(usage.input_tokens - cached - written, 0)
        cached_price = p.input if p.cached_input is None else p.cached_input
        write_price = p.input if p.cache_write is None else p.cache_write
        try:
            total = (
                plain * p.input
                + cached * cached_price
                + written * write_price
                + usage.output_tokens * p.output
            ) / 1_000_000
        except OverflowError:  # an int count too large for a float
            return None
        return total if 0.0 <= total < math.inf else None

    def response(
        self,
        *,
        text: str,
        tool_calls: tuple[ToolCall, ...] = (),
        finish_reason: str,
        usage: Usage | None,
        upstream_model: str | None = None,
        response_id: str | None = None,
        upstream_request_id: str | None = None,
        created: int | None = None,
        reasoning: str = "",
        refusal: str | None = None,
    ) -> ChatResponse:
        """Build the :class:`ChatResponse` for this call."""
        return ChatResponse(
            text=text,
            tool_calls=tool_calls,
            finish_reason=finish_reason,
            usage=usage,
            cost_usd=self.cost(usage),
            model=self.model,
            provider=self.provider,
            upstream_model=upstream_model or self.upstream,
            request_id=self.request_id,
            response_id=response_id,
            upstream_request_id=upstream_request_id,
            created=int(time.time()) if created is None else created,
            reasoning=reasoning,
            refusal=refusal,
        )

    def chunk(
        self,
        *,
        text: str = "",
        tool_calls: tuple[ToolCallDelta, ...] = (),
        finish_reason: str | None = None,
        usage: Usage | None = None,
        reasoning: str = "",
        response_id: str | None = None,
        upstream_model: str | None = None,
        created: int = 0,
    ) -> Chunk:
        """Build a stream :class:`Chunk` for this call."""
        # Positional: a third cheaper than keywords, and this runs for every chunk.
        return Chunk(
            self.model,
            self.provider,
            self.request_id,
            text,
            tool_calls,
            finish_reason,
            usage,
            reasoning,
            response_id,
            upstream_model or self.upstream,
            created,
        )


@runtime_checkable
class Provider(Protocol):
    """The adapter contract: only what the Hub calls, for built-in and third-party adapters alike.

    A provider *kind* is a callable taking :class:`ProviderSettings` and
    returning a ``Provider`` (usually the class itself), registered in the
    ``tokenhub.providers`` entry-point group; or pass an instance to
    :meth:`tokenhub.Hub.add_provider`.

    ``send`` and ``stream`` raise :class:`tokenhub.errors.ProviderError`
    subclasses for every failure (a :class:`Classification` helps choose one).
    An optional ``default_base_url`` attribute names the server when the
    config gives no ``base_url`` (telemetry reports it).
    """

    def capabilities(self, model: str) -> Capabilities:
        """Describe what ``model`` (the upstream id) supports."""
        ...

    async def send(self, call: Call) -> ChatResponse:
        """Send one request and return the whole answer."""
        ...

    def stream(self, call: Call) -> AsyncIterator[Chunk]:
        """Send one request and yield the answer as it arrives."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
