"""What a test scripts and what the fake records: replies, their tool calls, requests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["Api", "RecordedRequest", "Reply", "ScriptedToolCall"]

Api = Literal["openai", "anthropic", "models", "unknown"]
"""Which API a request was routed to (:attr:`RecordedRequest.api`)."""


def _at_least_one(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


def _at_least_zero(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be at least 0, got {value}")


@attrs.frozen(kw_only=True)
class ScriptedToolCall:
    """A tool call the fake model makes (OpenAI ``tool_calls``, Anthropic ``tool_use`` blocks).

    Scripted in :attr:`Reply.tool_calls`. Unlike :class:`tokenhub.ToolCall`, the call a
    response carries, its ``arguments`` are a mapping rather than a JSON string.
    """

    id: str
    """The call id, e.g. ``"call_1"`` (OpenAI) or ``"toolu_1"`` (Anthropic)."""
    name: str
    """The tool (function) name."""
    arguments: Mapping[str, Any] = attrs.field(factory=dict)
    """The arguments: a JSON string for OpenAI, the ``input`` object for Anthropic."""


@attrs.frozen(kw_only=True)
class Reply:
    """One scripted answer or fault; ``Reply()`` echoes the last user message.

    Success fields shape the answer; the fault fields (``status`` onwards) break it.
    "After N content chunks" faults fire at the end of the content when the stream has
    fewer than N content chunks (text pieces and tool-argument fragments).
    """

    text: str | None = None
    """The answer; None echoes ``"echo: " + <last user text>`` (no text if tool calls are set)."""
    tool_calls: Sequence[ScriptedToolCall] = ()
    """Tool calls the model makes (finish reason ``tool_calls`` / stop reason ``tool_use``)."""
    finish_reason: str | None = None
    """OpenAI finish reason override; mapped to Anthropic's stop_reason (stop→end_turn, ...)."""
    usage: tuple[int, int] | None = None
    """(input_tokens, output_tokens); None estimates them from the words of the exchange.

    Input counts every prompt token, cached ones included: OpenAI reports it as
    ``prompt_tokens``; Anthropic reports ``input_tokens = input - cached_input_tokens``.
    """
    cached_input_tokens: int = 0
    """OpenAI ``prompt_tokens_details.cached_tokens``; Anthropic ``cache_read_input_tokens``."""
    reasoning_tokens: int = 0
    """OpenAI ``completion_tokens_details.reasoning_tokens`` (part of the output tokens)."""
    response_model: str | None = None
    """The model named in the response (default: the requested model)."""
    chunks: int | None = attrs.field(default=None, validator=_at_least_one)
    """How many pieces the streamed text is cut into (default: one per word)."""
    status: int = 200
    """HTTP status; anything but 200 sends an error body instead of an answer."""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    """Extra response headers, on every status (Content-Length/Transfer-Encoding are ignored)."""
    body: bytes | str | Mapping[str, Any] | None = None
    """Verbatim response body (a mapping is sent as JSON); None sends the API's error envelope."""
    delay_headers: float = 0
    """Seconds to wait before sending the response headers."""
    delay_first_token: float = 0
    """Streaming: seconds between the opening event and the first content chunk."""
    delay_between_chunks: float = 0
    """Streaming: seconds between content chunks."""
    cut_after: int | None = None
    """Close the connection after N content chunks (non-streaming: after half the body)."""
    stall_after: int | None = None
    """Stop sending after N content chunks and hold the connection until shutdown."""
    malformed_after: int | None = None
    """Streaming: send one event whose data is ``{not json`` after N content chunks."""
    no_done: bool = False
    """Streaming: omit ``data: [DONE]`` (OpenAI) or ``message_stop`` (Anthropic), then close."""
    cut_tail_after: int | None = attrs.field(default=None, validator=_at_least_zero)
    """Streaming: send N events of the tail that follows the content, then close the
    connection mid-body. The tail is OpenAI's finish chunk, usage chunk (when asked for) and
    ``[DONE]``; Anthropic's ``message_delta`` (stop reason and usage) and ``message_stop``.
    ``0`` cuts before the finish reason, ``1`` after it (OpenAI: before the usage)."""
    stream_error: Mapping[str, Any] | None = None
    """Streaming: send this in-stream error object (merged over a default) and end the stream."""
    stream_error_after: int = 0
    """How many content chunks precede ``stream_error``."""
    reset: bool = False
    """Read the request, then reset the TCP connection (RST) without a response byte."""
    hang: bool = False
    """Read the request and never answer (until the client leaves or the server stops)."""
    ping_every: int | None = attrs.field(default=None, validator=_at_least_one)
    """Streaming: a ping (Anthropic ``event: ping``, OpenAI ``: ping`` comment) before content
    chunks 0, N, 2N, ..., sent halfway through the delay that precedes that chunk."""


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request the fake received, faults included, in arrival order."""

    method: str
    """The HTTP method, e.g. ``"POST"``."""
    path: str
    """The request path without the query string, e.g. ``"/v1/chat/completions"``."""
    api: Api
    """Which API the path belongs to."""
    model: str | None
    """The ``model`` field of the JSON body, if any."""
    headers: Mapping[str, str]
    """Request headers with lower-cased names (the last value wins)."""
    body: Any
    """The parsed JSON body, or None when it is not JSON."""
    raw_body: bytes
    """The body exactly as received."""
    stream: bool
    """Whether the body asked for a stream (``"stream": true``)."""
    time: float
    """The injected clock's reading when the request head arrived."""
