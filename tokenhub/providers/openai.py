"""OpenAI Chat Completions, and every server that speaks it (Groq, Together, Ollama, …)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from tokenhub._http import TransportError
from tokenhub._models import ImagePart, Message, TextPart, ToolCall, ToolCallDelta, Usage
from tokenhub._ratelimit import event_status
from tokenhub._sse import SSEError, parse_json
from tokenhub.providers._base import HTTPProvider, classify_status
from tokenhub.providers._types import Capabilities, Classification
from tokenhub.providers._wire import (
    MAX_TOKEN_COUNT,
    malformed,
    token_count,
    unbelievable_usage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from tokenhub._http import HttpResponse
    from tokenhub._models import ChatResponse, Chunk
    from tokenhub._secret import Secret
    from tokenhub._sse import SSEEvent
    from tokenhub.providers._types import Call, ProviderSettings

_EMPTY: dict[str, Any] = {}

__all__ = ["OpenAIProvider"]


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    c = m.content
    if c is None or isinstance(c, str):
        out["content"] = c
    else:
        out["content"] = [
            {"type": "text", "text": p.text}
            if isinstance(p, TextPart)
            else {"type": "image_url", "image_url": _image(p)}
            for p in c
        ]
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _image(p: ImagePart) -> dict[str, str]:
    return {"url": p.url} if p.detail is None else {"url": p.url, "detail": p.detail}


def _usage(call: Call, u: Any) -> Usage | None:
    """The reported usage, or ``None`` when absent or not believable (logged)."""
    if not isinstance(u, dict):
        return None
    prompt = u.get("prompt_tokens_details")
    completion = u.get("completion_tokens_details")
    p, c = u.get("prompt_tokens"), u.get("completion_tokens")
    if (
        p.__class__ is int
        and c.__class__ is int
        and 0 <= p < MAX_TOKEN_COUNT
        and 0 <= c < MAX_TOKEN_COUNT
        and prompt is None
        and completion is None
    ):  # the common shape, checked without the general path
        return Usage(input_tokens=p, output_tokens=c)
    counts = (
        token_count(u.get("prompt_tokens")),
        token_count(u.get("completion_tokens")),
        token_count(prompt.get("cached_tokens")) if isinstance(prompt, dict) else None,
        token_count(completion.get("reasoning_tokens")) if isinstance(completion, dict) else None,
    )
    if -1 in counts:
        unbelievable_usage(call, "usage")
        return None
    prompt_tokens, completion_tokens, cached, reasoning = counts
    return Usage(
        input_tokens=prompt_tokens or 0,
        output_tokens=completion_tokens or 0,
        cached_input_tokens=cached or 0,
        reasoning_tokens=reasoning,
    )


def _text(v: Any) -> bool:
    """Whether ``v`` is a string or ``null``: what a text field of an answer may be."""
    return v is None or v.__class__ is str


def _tool_call(t: Any) -> ToolCall | None:
    if not isinstance(t, dict):
        return None
    f = t.get("function")
    if not isinstance(f, dict):
        return None
    id_, name, arguments = t.get("id"), f.get("name"), f.get("arguments")
    if id_.__class__ is not str or name.__class__ is not str or not _text(arguments):
        return None
    return ToolCall(id=id_, name=name, arguments=arguments or "")


class OpenAIProvider(HTTPProvider):
    """The OpenAI Chat Completions adapter (``kind: openai``).

    ``base_url`` includes the version path (``https://api.openai.com/v1``).
    Options: ``max_tokens_field`` (``"max_tokens"`` or ``"max_completion_tokens"``).
    """

    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    path: ClassVar[str] = "/chat/completions"
    default_capabilities: ClassVar[Capabilities] = Capabilities(
        tools=True, vision=True, json_schema=True
    )
    option_checks: ClassVar[Mapping[str, tuple[Callable[[Any], bool], str]]] = {
        "max_tokens_field": (
            lambda v: v in ("max_tokens", "max_completion_tokens"),
            "'max_tokens' or 'max_completion_tokens'",
        ),
    }

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        self._max_tokens_field: str = settings.options.get("max_tokens_field", "max_tokens")

    def _auth(self, key: Secret | None) -> dict[str, str]:
        return {} if key is None else {"authorization": f"Bearer {key.reveal()}"}

    def encode(self, call: Call, *, stream: bool) -> dict[str, Any]:
        """Build the request body."""
        r = call.request
        body: dict[str, Any] = {
            "model": call.upstream,
            "messages": [_message(m) for m in r.messages],
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if r.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": _function(t.name, t.description, t.parameters, t.strict),
                }
                for t in r.tools
            ]
        if r.tool_choice is not None:
            tc = r.tool_choice
            body["tool_choice"] = (
                {"type": "function", "function": {"name": tc.name}}
                if tc.mode == "function"
                else tc.mode
            )
        if r.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = r.parallel_tool_calls
        if r.response_format is not None:
            f = r.response_format
            if f.type == "json_schema":
                spec: dict[str, Any] = {"name": f.name, "schema": f.schema or {}}
                if f.strict is not None:
                    spec["strict"] = f.strict
                body["response_format"] = {"type": "json_schema", "json_schema": spec}
            else:
                body["response_format"] = {"type": f.type}
        for field in ("temperature", "top_p", "seed", "user"):
            v = getattr(r, field)
            if v is not None:
                body[field] = v
        if r.max_tokens is not None:
            body[self._max_tokens_field] = r.max_tokens
        if r.stop:
            body["stop"] = list(r.stop)
        if r.extra_body:
            body.update(r.extra_body)
        return body

    def decode(self, call: Call, r: HttpResponse, data: Any, key: Secret | None) -> ChatResponse:
        """Turn a 200 response body into a :class:`ChatResponse`.

        A body that is not an answer (no choices, a message that is not an
        object, a text field that is not a string) is a transient error.
        """
        if not isinstance(data, dict):
            raise malformed(call, r, "not a JSON object")
        choices = data.get("choices")
        if "error" in data and not choices:
            raise self._error(call, self._classify_event(data), key, status=r.status)
        if not isinstance(choices, list) or not choices:
            raise malformed(call, r, "no choices")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise malformed(call, r, "no message in choices[0]")
        content, finish = message.get("content"), choice.get("finish_reason")
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        refusal, model, response_id = message.get("refusal"), data.get("model"), data.get("id")
        for v in (content, finish, reasoning, refusal, model, response_id):
            if v is not None and v.__class__ is not str:  # inline: this runs for every answer
                raise malformed(call, r, "a text field is not a string")
        created = data.get("created")
        if created is not None and created.__class__ is not int:
            raise malformed(call, r, "'created' is not an integer")
        raw_tools = message.get("tool_calls")
        tool_calls: tuple[ToolCall, ...] = ()
        if raw_tools:
            if not isinstance(raw_tools, list):
                raise malformed(call, r, "'tool_calls' is not a list")
            parsed = tuple(map(_tool_call, raw_tools))
            if None in parsed:
                raise malformed(call, r, "a tool call has not the expected shape")
            tool_calls = parsed  # type: ignore[assignment]
        return call.response(
            text=content or "",
            tool_calls=tool_calls,
            finish_reason=finish or "stop",
            usage=_usage(call, data.get("usage")),
            upstream_model=model,
            response_id=response_id,
            upstream_request_id=self._upstream_request_id(r.headers),
            created=created,
            reasoning=reasoning or "",
            refusal=refusal,
        )

    def _classify_event(self, data: dict[str, Any]) -> Classification:
        """Classify an error object that arrived inside a 200 response or stream."""
        err = data.get("error")
        err = err if isinstance(err, dict) else {"message": str(err)}
        message = str(err.get("message") or "error in stream")
        code, kind = err.get("code"), err.get("type")
        status = event_status(code, kind)
        return classify_status(
            status,
            {},
            kind if isinstance(kind, str) else None,
            str(code) if isinstance(code, str) else None,
            message,
            now=self.settings.clock(),
        )

    async def chunks(
        self, call: Call, events: AsyncIterator[SSEEvent], key: Secret | None
    ) -> AsyncGenerator[Chunk]:
        """Translate the SSE events of a 200 stream into chunks.

        The finish reason is held back and delivered on the last chunk together
        with the usage, which OpenAI sends after it. Once the finish reason has
        arrived the answer is complete: losing what follows it (the usage chunk,
        ``[DONE]``) to a cut, a timeout or a garbled event leaves the usage unknown.
        """
        finish: str | None = None
        usage: Usage | None = None
        response_id: str | None = None
        model: str | None = None
        created = 0
        try:
            async for event in events:
                data = event.data
                if data == "[DONE]":
                    break
                try:
                    obj = parse_json(data)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    if finish is not None:  # the tail after the finish reason is garbled
                        break
                    raise self._stream_broken(call, "the provider sent a malformed stream chunk")
                if obj.get("error") is not None:
                    raise self._error(call, self._classify_event(obj), key)
                response_id = obj.get("id", response_id)
                model = obj.get("model", model)
                created = obj.get("created", created)
                raw_usage = obj.get("usage")
                if raw_usage:
                    usage = _usage(call, raw_usage)
                for choice in obj.get("choices") or ():
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or _EMPTY
                    text = delta.get("content") or ""
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
                    if text.__class__ is not str or reasoning.__class__ is not str:
                        raise self._stream_broken(
                            call, "the provider sent a malformed stream chunk"
                        )
                    raw_tools = delta.get("tool_calls")  # most chunks carry none: build nothing
                    tools = (
                        tuple(
                            ToolCallDelta(
                                index=t.get("index", 0),
                                id=t.get("id"),
                                name=(t.get("function") or _EMPTY).get("name"),
                                arguments=(t.get("function") or _EMPTY).get("arguments") or "",
                            )
                            for t in raw_tools
                        )
                        if raw_tools
                        else ()
                    )
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    if text or reasoning or tools:
                        yield call.chunk(
                            text=text,
                            tool_calls=tools,
                            reasoning=reasoning,
                            response_id=response_id,
                            upstream_model=model,
                            created=created,
                        )
        except (TransportError, SSEError):
            if finish is None:
                raise
            # Cut, timed out or oversized after the finish reason: the answer stands.
        if finish is None:
            raise self._stream_broken(call, "the stream ended before its finish reason")
        yield call.chunk(
            finish_reason=finish,
            usage=usage,
            response_id=response_id,
            upstream_model=model,
            created=created,
        )


def _function(
    name: str, description: str | None, parameters: Any, strict: bool | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "parameters": parameters}
    if description is not None:
        out["description"] = description
    if strict is not None:
        out["strict"] = strict
    return out
