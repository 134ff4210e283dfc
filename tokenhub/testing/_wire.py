"""The wire formats the fake speaks: OpenAI and Anthropic bodies, SSE streams, error envelopes.

Pure functions (no I/O) from a scripted :class:`~tokenhub.testing.Reply` and the request body
to response bodies and SSE events; the server in ``_server`` decides when and how to send them.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tokenhub.testing._script import Api, Reply, ScriptedToolCall

__all__ = [
    "Events",
    "Plan",
    "anthropic_body",
    "anthropic_stream",
    "api_of",
    "dumps",
    "error_envelope",
    "hex_id",
    "openai_body",
    "openai_stream",
    "plan_answer",
    "problem_of",
    "stream_error",
]

_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_TO_OPENAI = {v: k for k, v in _TO_ANTHROPIC.items()}

# status -> (type, code, message) of OpenAI's error envelope
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", "permission_denied", "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded."),
}
# status -> (type, message) of Anthropic's error envelope
_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("overloaded_error", "Overloaded"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
_WORD = re.compile(r"\s*\S+\s*")


@attrs.frozen(kw_only=True)
class Plan:
    """A successful answer resolved against its request, ready to render."""

    model: str
    text: str
    pieces: tuple[str, ...]
    tool_calls: tuple[ScriptedToolCall, ...]
    finish_reason: str
    input_tokens: int
    output_tokens: int
    cached: int
    reasoning: int
    include_usage: bool

    @property
    def stop_reason(self) -> str:
        return _TO_ANTHROPIC.get(self.finish_reason, self.finish_reason)

    @property
    def openai_finish(self) -> str:
        return _TO_OPENAI.get(self.finish_reason, self.finish_reason)

    @property
    def text_block(self) -> bool:
        return bool(self.text) or not self.tool_calls


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as the providers send it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def hex_id() -> str:
    """A random suffix for response and request ids (``chatcmpl-…``, ``msg_…``, ``req_…``)."""
    return secrets.token_hex(12)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _split(text: str, n: int) -> list[str]:
    """Cut ``text`` into ``n`` near-equal non-empty pieces (fewer if it is shorter)."""
    cuts = [len(text) * i // n for i in range(n + 1)]
    return [text[a:b] for a, b in itertools.pairwise(cuts) if a < b]


def _pieces(text: str, chunks: int | None) -> tuple[str, ...]:
    if chunks is not None:
        return tuple(_split(text, chunks))
    words = _WORD.findall(text)
    return tuple(words) if words else ((text,) if text else ())


def _arg_fragments(call: ScriptedToolCall) -> list[str]:
    return _split(json.dumps(dict(call.arguments)), 3) or ["{}"]


def plan_answer(reply: Reply, body: dict[str, Any], model: str, *, prefill: bool = False) -> Plan:
    """Resolve a successful ``reply`` against the request ``body`` (echo, usage, pieces).

    With ``prefill`` (the Anthropic API), a trailing assistant message is the start of
    the answer: an answer that begins with it is sent without that start, as the model
    would continue it.
    """
    messages = [m for m in body["messages"] if isinstance(m, dict)]
    if reply.text is not None:
        text = reply.text
    elif reply.tool_calls:
        text = ""
    else:
        last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = "echo: " + _text_of(last.get("content"))
    if prefill and messages and messages[-1].get("role") == "assistant":
        start = _text_of(messages[-1].get("content"))
        if start and text.startswith(start):
            text = text[len(start) :]
    if reply.usage is None:
        words = sum(len(_text_of(m.get("content")).split()) + 3 for m in messages)
        usage = (words, max(1, len(text.split())))
    else:
        usage = reply.usage
    options = body.get("stream_options")
    return Plan(
        model=reply.response_model or model,
        text=text,
        pieces=_pieces(text, reply.chunks),
        tool_calls=tuple(reply.tool_calls),
        finish_reason=reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop"),
        input_tokens=usage[0],
        output_tokens=usage[1],
        cached=reply.cached_input_tokens,
        reasoning=reply.reasoning_tokens,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )


def error_envelope(api: Api, status: int, message: str | None = None) -> dict[str, Any]:
    """The API's error body for ``status``, with ``message`` or the provider's usual one."""
    if api == "anthropic":
        kind, text = _ANTHROPIC_ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", "Error")
        )
        error = {"type": kind, "message": message or text}
        return {"type": "error", "error": error, "request_id": "req_" + hex_id()}
    default = ("server_error" if status >= 500 else "invalid_request_error", None, "Error")
    kind, code, text = _OPENAI_ERRORS.get(status, default)
    return {"error": {"message": message or text, "type": kind, "param": None, "code": code}}


def stream_error(api: Api, given: Mapping[str, Any]) -> bytes:
    """The in-stream error event, ``given`` merged over the API's default error."""
    if api == "anthropic":
        error = {"type": "overloaded_error", "message": "Overloaded", **given}
        return b"event: error\ndata: " + dumps({"type": "error", "error": error}) + b"\n\n"
    error = {"message": "The server had an error while processing your request."}
    error |= {"type": "server_error", "param": None, "code": None, **given}
    return b"data: " + dumps({"error": error}) + b"\n\n"


def _openai_usage(p: Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": p.input_tokens,
        "completion_tokens": p.output_tokens,
        "total_tokens": p.input_tokens + p.output_tokens,
        "prompt_tokens_details": {"cached_tokens": p.cached},
        "completion_tokens_details": {"reasoning_tokens": p.reasoning},
    }


def _anthropic_usage(p: Plan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": max(0, p.input_tokens - p.cached),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": p.cached,
    }


def openai_body(p: Plan) -> dict[str, Any]:
    """A non-streamed Chat Completions response."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": p.text if p.text_block else None,
        "refusal": None,
    }
    if p.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments))},
            }
            for c in p.tool_calls
        ]
    return {
        "id": "chatcmpl-" + hex_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": p.model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": p.openai_finish, "logprobs": None}
        ],
        "usage": _openai_usage(p),
    }


def anthropic_body(p: Plan) -> dict[str, Any]:
    """A non-streamed Messages response."""
    content: list[dict[str, Any]] = [{"type": "text", "text": p.text}] if p.text_block else []
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)}
        for c in p.tool_calls
    ]
    return {
        "id": "msg_" + hex_id(),
        "type": "message",
        "role": "assistant",
        "model": p.model,
        "content": content,
        "stop_reason": p.stop_reason,
        "stop_sequence": None,
        "usage": _anthropic_usage(p, p.output_tokens),
    }


# A stream is (opening events, body events flagged "is a content chunk", closing events).
Events = tuple[list[bytes], list[tuple[bytes, bool]], list[bytes]]


def openai_stream(p: Plan, done: bool) -> Events:
    """The Chat Completions SSE stream; ``done`` ends it with ``data: [DONE]``."""
    ident, created = "chatcmpl-" + hex_id(), int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": p.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if p.include_usage:
            data["usage"] = None
        return b"data: " + dumps(data) + b"\n\n"

    body = [(chunk({"content": piece}), True) for piece in p.pieces]
    for index, call in enumerate(p.tool_calls):
        for n, fragment in enumerate(_arg_fragments(call)):
            tool: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
            if n == 0:
                tool |= {"id": call.id, "type": "function"}
                tool["function"]["name"] = call.name
            body.append((chunk({"tool_calls": [tool]}), True))
    closing = [chunk({}, p.openai_finish)]
    if p.include_usage:
        usage = {"id": ident, "object": "chat.completion.chunk", "created": created}
        usage |= {"model": p.model, "choices": [], "usage": _openai_usage(p)}
        closing.append(b"data: " + dumps(usage) + b"\n\n")
    if done:
        closing.append(b"data: [DONE]\n\n")
    opening = chunk({"role": "assistant", "content": ""})
    return [opening], body, closing


def _sse(data: dict[str, Any]) -> bytes:
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + dumps(data) + b"\n\n"


def anthropic_stream(p: Plan, done: bool) -> Events:
    """The Messages SSE stream; ``done`` ends it with ``message_stop``."""
    start = anthropic_body(p) | {"content": [], "stop_reason": None}
    start["usage"] = _anthropic_usage(p, 1)
    body: list[tuple[bytes, bool]] = []

    def block(index: int, first: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        body.append(
            (_sse({"type": "content_block_start", "index": index, "content_block": first}), False)
        )
        body.extend(
            (_sse({"type": "content_block_delta", "index": index, "delta": d}), True)
            for d in deltas
        )
        body.append((_sse({"type": "content_block_stop", "index": index}), False))

    if p.text_block:
        block(
            0, {"type": "text", "text": ""}, [{"type": "text_delta", "text": t} for t in p.pieces]
        )
    for n, call in enumerate(p.tool_calls, start=int(p.text_block)):
        first = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        fragments = _arg_fragments(call)
        block(n, first, [{"type": "input_json_delta", "partial_json": f} for f in fragments])
    delta = {"stop_reason": p.stop_reason, "stop_sequence": None}
    closing = [
        _sse({"type": "message_delta", "delta": delta, "usage": {"output_tokens": p.output_tokens}})
    ]
    if done:
        closing.append(_sse({"type": "message_stop"}))
    return [_sse({"type": "message_start", "message": start})], body, closing


def problem_of(api: Api, body: Any) -> str | None:
    """Why the request body would be rejected with a 400, or None."""
    if not isinstance(body, dict):
        return "The request body is not a JSON object."
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("messages"), list):
        return "messages: Field required"
    if api == "anthropic" and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    return None


def api_of(method: str, path: str) -> Api:
    """Which API a request's method and path belong to."""
    if method == "POST" and path.endswith("/chat/completions"):
        return "openai"
    if method == "POST" and path.endswith("/v1/messages"):
        return "anthropic"
    if method == "GET" and re.search(r"/models(/[^/]+)?$", path):
        return "models"
    return "unknown"
