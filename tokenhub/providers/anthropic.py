"""Anthropic Messages: system lifted to the top, tools as tool_use/tool_result blocks."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

from tokenhub._http import TransportError
from tokenhub._models import ImagePart, Message, TextPart, ToolCall, ToolCallDelta, Usage
from tokenhub._ratelimit import event_status
from tokenhub._sse import SSEError, parse_json
from tokenhub.errors import ProviderError, RequestError
from tokenhub.providers._base import HTTPProvider, classify_status, dumps, error_envelope
from tokenhub.providers._types import Capabilities, Classification
from tokenhub.providers._wire import malformed, token_count, unbelievable_usage

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from tokenhub._http import HttpResponse
    from tokenhub._models import ChatResponse, Chunk
    from tokenhub._secret import Secret
    from tokenhub._sse import SSEEvent
    from tokenhub.providers._types import Call

__all__ = ["AnthropicProvider"]

DEFAULT_MAX_TOKENS = 4096
_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
# Anthropic error types mapped to the status they behave like, checked before the status rules.
_TYPES = {
    "rate_limit_error": 429,
    "overloaded_error": 529,
    "api_error": 500,
    "authentication_error": 401,
    "permission_error": 403,
    "billing_error": 402,
    "request_too_large": 413,
    "not_found_error": 404,
    "timeout_error": 408,
}


def _image(p: ImagePart) -> dict[str, Any]:
    if p.url.startswith("data:"):
        header, _, data = p.url.partition(",")
        media_type = header[5:].split(";", 1)[0] or "image/png"
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": p.url}}


def _blocks(m: Message) -> list[dict[str, Any]]:
    c = m.content
    if c is None:
        return []
    if isinstance(c, str):
        return [{"type": "text", "text": c}] if c else []
    return [{"type": "text", "text": p.text} if isinstance(p, TextPart) else _image(p) for p in c]


def _tool_use(i: int, j: int, t: ToolCall) -> dict[str, Any]:
    try:
        args = json.loads(t.arguments) if t.arguments else {}
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise RequestError(
            [(f"messages[{i}].tool_calls[{j}].function.arguments", "must be a JSON object")]
        )
    return {"type": "tool_use", "id": t.id, "name": t.name, "input": args}


def encode_messages(messages: tuple[Message, ...]) -> tuple[str | None, list[dict[str, Any]]]:
    """Split out the system prompt and translate the rest into Anthropic messages.

    Consecutive tool results become one user message of ``tool_result`` blocks,
    and a user message that follows them joins that same message.
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            system.append(m.text)
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text}
            if out and out[-1]["role"] == "user" and out[-1].get("_tool_results"):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block], "_tool_results": True})
            continue
        blocks = _blocks(m)
        if m.role == "assistant":
            blocks.extend(_tool_use(i, j, t) for j, t in enumerate(m.tool_calls))
            out.append({"role": "assistant", "content": blocks})
        elif out and out[-1].get("_tool_results"):
            out[-1]["content"].extend(blocks)
        else:
            content: Any = m.content if isinstance(m.content, str) else blocks
            out.append({"role": "user", "content": content})
    for msg in out:
        msg.pop("_tool_results", None)
    return ("\n\n".join(system) if system else None), out


_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def _counts(call: Call, u: Any, into: dict[str, int]) -> bool:
    """Copy the usage counts present in ``u`` into ``into``; ``False`` if one is not believable.

    A later report of a field replaces an earlier one, as in Anthropic's SDK.
    """
    if not isinstance(u, dict):
        return True
    for field in _USAGE_FIELDS:
        n = token_count(u.get(field))
        if n == -1:
            unbelievable_usage(call, field)
            return False
        if n is not None:
            into[field] = n
    return True


def _usage(counts: Mapping[str, int]) -> Usage:
    plain = counts.get("input_tokens", 0)
    read = counts.get("cache_read_input_tokens", 0)
    written = counts.get("cache_creation_input_tokens", 0)
    return Usage(
        input_tokens=plain + read + written,
        output_tokens=counts.get("output_tokens", 0),
        cached_input_tokens=read,
        cache_write_input_tokens=written,
    )


def _block_ok(b: Any) -> bool:
    """Whether a content block has the fields the adapter reads, with their types."""
    if not isinstance(b, dict):
        return False
    kind = b.get("type")
    if kind == "text":
        return b.get("text").__class__ is str
    if kind == "tool_use":
        return (
            b.get("id").__class__ is str
            and b.get("name").__class__ is str
            and isinstance(b.get("input") or {}, dict)
        )
    if kind == "thinking":
        return b.get("thinking", "").__class__ is str
    return True


class AnthropicProvider(HTTPProvider):
    """The Anthropic Messages adapter (``kind: anthropic``).

    ``base_url`` excludes the version path (``https://api.anthropic.com``).
    Options: ``anthropic_version`` (default ``2023-06-01``) and ``beta`` (a list of
    ``anthropic-beta`` flags).
    """

    default_base_url: ClassVar[str] = "https://api.anthropic.com"
    path: ClassVar[str] = "/v1/messages"
    default_capabilities: ClassVar[Capabilities] = Capabilities(
        tools=True, vision=True, prefill=True
    )
    option_checks: ClassVar[Mapping[str, tuple[Callable[[Any], bool], str]]] = {
        "anthropic_version": (
            lambda v: isinstance(v, str) and bool(v),
            "a version string such as '2023-06-01'",
        ),
        "beta": (
            lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
            "a list of anthropic-beta flag strings",
        ),
    }

    def _auth(self, key: Secret | None) -> dict[str, str]:
        opts = self.settings.options
        h = {"anthropic-version": str(opts.get("anthropic_version", "2023-06-01"))}
        if opts.get("beta"):
            h["anthropic-beta"] = ",".join(opts["beta"])
        if key is not None:
            h["x-api-key"] = key.reveal()
        return h

    def encode(self, call: Call, *, stream: bool) -> dict[str, Any]:
        """Build the request body."""
        r = call.request
        fmt = r.response_format
        if fmt is not None and fmt.type != "text":
            raise RequestError(
                [("response_format", f"the anthropic adapter does not support {fmt.type!r}")]
            )
        system, messages = encode_messages(r.messages)
        body: dict[str, Any] = {
            "model": call.upstream,
            "max_tokens": r.max_tokens or call.max_output_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
        }
        if system is not None:
            body["system"] = system
        if stream:
            body["stream"] = True
        if r.tools:
            body["tools"] = [
                {"name": t.name, "input_schema": t.parameters or {"type": "object"}}
                | ({"description": t.description} if t.description else {})
                for t in r.tools
            ]
        tc = r.tool_choice
        if tc is not None:
            choices: dict[str, dict[str, Any]] = {
                "auto": {"type": "auto"},
                "none": {"type": "none"},
                "required": {"type": "any"},
                "function": {"type": "tool", "name": tc.name},
            }
            choice = choices[tc.mode]
            if r.parallel_tool_calls is False and tc.mode != "none":
                choice["disable_parallel_tool_use"] = True
            body["tool_choice"] = choice
        elif r.parallel_tool_calls is False and r.tools:
            body["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
        if r.temperature is not None:
            body["temperature"] = r.temperature
        if r.top_p is not None:
            body["top_p"] = r.top_p
        if r.stop:
            body["stop_sequences"] = list(r.stop)
        if r.user is not None:
            body["metadata"] = {"user_id": r.user}
        if r.extra_body:
            body.update(r.extra_body)
        return body

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Classification:
        """Classify by Anthropic's ``error.type`` first, then by status."""
        kind, code, message = error_envelope(body)
        effective = _TYPES.get(kind or "", status) if status >= 400 else status
        if effective == 529 or (status == 500 and kind == "overloaded_error"):
            effective = 529
        return classify_status(
            effective,
            headers,
            kind,
            code or kind,
            message or f"HTTP {status}",
            now=self.settings.clock(),
        )

    def decode(self, call: Call, r: HttpResponse, data: Any, key: Secret | None) -> ChatResponse:  # noqa: ARG002
        """Turn a 200 response body into a :class:`ChatResponse`.

        A body that is not an answer (no ``content`` list, a block without the
        fields its type needs, a text field that is not a string) is a transient error.
        """
        if not isinstance(data, dict):
            raise malformed(call, r, "not a JSON object")
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise malformed(call, r, "no content")
        if not all(map(_block_ok, blocks)):
            raise malformed(call, r, "a content block has not the expected shape")
        stop, model, response_id = data.get("stop_reason"), data.get("model"), data.get("id")
        if not all(v is None or v.__class__ is str for v in (stop, model, response_id)):
            raise malformed(call, r, "a text field is not a string")
        counts: dict[str, int] = {}
        return call.response(
            text="".join(b["text"] for b in blocks if b.get("type") == "text"),
            tool_calls=tuple(
                ToolCall(id=b["id"], name=b["name"], arguments=dumps(b.get("input") or {}))
                for b in blocks
                if b.get("type") == "tool_use"
            ),
            finish_reason=_STOP.get(stop or "", "stop"),
            usage=_usage(counts) if _counts(call, data.get("usage"), counts) else None,
            upstream_model=model,
            response_id=response_id,
            upstream_request_id=self._upstream_request_id(r.headers),
            reasoning="".join(b.get("thinking", "") for b in blocks if b.get("type") == "thinking"),
        )

    async def chunks(
        self, call: Call, events: AsyncIterator[SSEEvent], key: Secret | None
    ) -> AsyncGenerator[Chunk]:
        """Translate Anthropic's stream events into chunks.

        A failure mid-stream carries the usage reported so far (``error.usage``):
        Anthropic bills the input and the output already generated. Once
        ``message_delta`` has brought the stop reason (and the final usage), the
        answer is complete: losing ``message_stop`` to a cut, a timeout or a
        garbled event changes nothing.
        """
        response_id: str | None = None
        model: str | None = None
        counts: dict[str, int] = {}  # the latest report of each usage field
        believable = True
        stop: str | None = None
        tool_index: dict[int, int] = {}  # content block index -> tool call ordinal
        try:
            async for event in events:
                kind = event.event
                if kind == "ping":
                    continue
                try:
                    data = parse_json(event.data)
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    if stop is not None:  # the tail after the stop reason is garbled
                        break
                    raise self._stream_broken(call, "the provider sent a malformed stream event")
                kind = data.get("type", kind)
                if kind == "content_block_delta":
                    delta = data.get("delta") or {}
                    dtype = delta.get("type")
                    if dtype == "text_delta":
                        yield call.chunk(
                            text=delta.get("text", ""),
                            response_id=response_id,
                            upstream_model=model,
                        )
                    elif dtype == "input_json_delta":
                        i = tool_index.get(data.get("index", -1))
                        if i is not None:
                            arg = ToolCallDelta(index=i, arguments=delta.get("partial_json", ""))
                            yield call.chunk(
                                tool_calls=(arg,), response_id=response_id, upstream_model=model
                            )
                    elif dtype == "thinking_delta":
                        yield call.chunk(
                            reasoning=delta.get("thinking", ""),
                            response_id=response_id,
                            upstream_model=model,
                        )
                elif kind == "content_block_start":
                    block = data.get("content_block") or {}
                    if block.get("type") == "tool_use":
                        i = tool_index[data.get("index", -1)] = len(tool_index)
                        start = ToolCallDelta(index=i, id=block.get("id"), name=block.get("name"))
                        yield call.chunk(
                            tool_calls=(start,), response_id=response_id, upstream_model=model
                        )
                    elif block.get("type") == "text" and block.get("text"):
                        yield call.chunk(
                            text=block["text"], response_id=response_id, upstream_model=model
                        )
                elif kind == "message_start":
                    msg = data.get("message") or {}
                    response_id, model = msg.get("id"), msg.get("model")
                    believable = _counts(call, msg.get("usage"), counts) and believable
                elif kind == "message_delta":
                    stop = (data.get("delta") or {}).get("stop_reason") or stop
                    # Cumulative: each field reported here replaces the one before, never summed.
                    believable = _counts(call, data.get("usage"), counts) and believable
                elif kind == "message_stop":
                    stop = stop or "end_turn"
                    break
                elif kind == "error":
                    err = data.get("error")
                    status = (
                        event_status(err.get("code"), err.get("type"))
                        if isinstance(err, dict)
                        else 500
                    )
                    body = dumps(data).encode()
                    raise self._error(call, self.classify(status, {}, body), key)
            if stop is None:
                raise self._stream_broken(call, "the stream ended before its stop reason")
        except ProviderError as exc:
            exc.usage = _usage(counts) if believable and any(counts.values()) else None
            raise
        except TransportError as exc:
            if stop is None:
                error = self._transport_error(call, exc)
                error.usage = _usage(counts) if believable and any(counts.values()) else None
                raise error from None
        except SSEError:
            if stop is None:
                raise
        # Cut, timed out or oversized after the stop reason: the answer stands.
        yield call.chunk(
            finish_reason=_STOP.get(stop or "", "stop"),
            usage=_usage(counts) if believable else None,
            response_id=response_id,
            upstream_model=model,
        )
