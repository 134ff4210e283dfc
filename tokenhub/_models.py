"""Frozen value types: the request envelope, responses, stream chunks and usage."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tokenhub.routing import RouteTrace

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "Chunk",
    "ImagePart",
    "Message",
    "ResponseFormat",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@attrs.frozen
class TextPart:
    """A text content part."""

    text: str


@attrs.frozen
class ImagePart:
    """An image content part: an ``https:`` URL or a ``data:`` URL with base64 data."""

    url: str
    detail: str | None = None


ContentPart = TextPart | ImagePart


@attrs.frozen
class ToolCall:
    """A tool call made by the assistant; ``arguments`` is the JSON-encoded string."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        """Decode ``arguments`` (raises :class:`ValueError` if the model wrote invalid JSON)."""
        return json.loads(self.arguments) if self.arguments else {}


@attrs.frozen
class Message:
    """One chat message in OpenAI's vocabulary."""

    role: Role
    content: str | tuple[ContentPart, ...] | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The message's text, with text parts joined."""
        c = self.content
        if c is None:
            return ""
        if isinstance(c, str):
            return c
        return "".join(p.text for p in c if isinstance(p, TextPart))


@attrs.frozen
class Tool:
    """A function the model may call; ``parameters`` is a JSON Schema."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = attrs.field(factory=dict)
    strict: bool | None = None


@attrs.frozen
class ToolChoice:
    """``auto``, ``none``, ``required``, or ``function`` with a ``name``."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


@attrs.frozen
class ResponseFormat:
    """``text``, ``json_object`` or ``json_schema`` (with ``name``, ``schema`` and ``strict``)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool | None = None


@attrs.frozen
class ChatRequest:
    """A validated chat request, independent of any provider."""

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    user: str | None = None
    metadata: Mapping[str, str] | None = None
    extra_body: Mapping[str, Any] | None = None


@attrs.frozen
class Usage:
    """Token counts, normalised across providers.

    ``input_tokens`` counts every input token, including cache reads
    (``cached_input_tokens``) and cache writes (``cache_write_input_tokens``);
    ``output_tokens`` includes ``reasoning_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@attrs.frozen
class ChatResponse:
    """The answer to a chat request.

    ``model`` and ``provider`` name the configured model and provider that
    actually answered; ``upstream_model`` is the model the provider reported.
    ``cost_usd`` is ``None`` when the model has no pricing or no usage was reported.
    ``trace`` says why that model was chosen and lists every attempt.
    """

    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    usage: Usage | None
    cost_usd: float | None
    model: str
    provider: str
    upstream_model: str
    request_id: str
    response_id: str | None = None
    upstream_request_id: str | None = None
    created: int = 0
    reasoning: str = ""
    refusal: str | None = None
    trace: RouteTrace | None = attrs.field(default=None, repr=False, eq=False)

    def to_openai(self) -> dict[str, Any]:
        """Return the response as an OpenAI ``chat.completion`` dict."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.text if self.text or not self.tool_calls else None,
            "refusal": self.refusal,
        }
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": tc.arguments},
                }
                for tc in self.tool_calls
            ]
        out: dict[str, Any] = {
            "id": self.response_id or f"chatcmpl-{self.request_id}",
            "object": "chat.completion",
            "created": self.created,
            "model": self.upstream_model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self.finish_reason,
                    "logprobs": None,
                }
            ],
        }
        if self.usage is not None:
            out["usage"] = _usage_to_openai(self.usage)
        return out


@attrs.frozen
class ToolCallDelta:
    """A fragment of a streamed tool call; fragments with the same ``index`` concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen
class Chunk:
    """One piece of a streamed answer.

    The last chunk carries ``finish_reason``, and ``usage`` when the provider reported it.
    """

    model: str
    provider: str
    request_id: str
    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    reasoning: str = ""
    response_id: str | None = None
    upstream_model: str = ""
    created: int = 0

    def to_openai(self) -> dict[str, Any]:
        """Return the chunk as an OpenAI ``chat.completion.chunk`` dict."""
        delta: dict[str, Any] = {}
        if self.text:
            delta["content"] = self.text
        if self.tool_calls:
            delta["tool_calls"] = [_tool_delta_to_openai(d) for d in self.tool_calls]
        out: dict[str, Any] = {
            "id": self.response_id or f"chatcmpl-{self.request_id}",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.upstream_model or self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": self.finish_reason}],
        }
        if self.usage is not None:
            out["usage"] = _usage_to_openai(self.usage)
        return out


def _tool_delta_to_openai(d: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": d.index, "function": {"arguments": d.arguments}}
    if d.id is not None:
        out["id"] = d.id
        out["type"] = "function"
    if d.name is not None:
        out["function"]["name"] = d.name
    return out


def _usage_to_openai(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
    }
    if u.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out
