"""The fake provider's HTTP server and the wire formats it speaks (being split up)."""

from __future__ import annotations

import contextlib
import http
import itertools
import json
import re
import secrets
import socket
import struct
import time
from collections import deque
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.abc
import attrs
import h11

from tokenhub.testing._script import RecordedRequest, Reply

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import TracebackType

    from tokenhub.testing._script import Api, ToolCall

__all__ = ["FakeProvider"]

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
_SKIPPED_HEADERS = frozenset({"content-length", "transfer-encoding"})
_CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


@attrs.frozen(kw_only=True)
class _Plan:
    """A successful answer resolved against its request, ready to render."""

    model: str
    text: str
    pieces: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]
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


@attrs.define
class _Wire:
    """One connection: the byte stream and its h11 state machine."""

    stream: anyio.abc.SocketStream
    conn: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.SERVER))

    async def send(self, *events: h11.Event) -> None:
        await self.stream.send(b"".join(self.conn.send(e) or b"" for e in events))

    async def data(self, payload: bytes) -> None:
        await self.send(h11.Data(data=payload))

    async def wait_closed(self) -> None:
        """Discard input until the peer disconnects (or this task is cancelled)."""
        try:
            while True:
                await self.stream.receive()
        except _CLOSED:
            return


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _hex() -> str:
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


def _arg_fragments(call: ToolCall) -> list[str]:
    return _split(json.dumps(dict(call.arguments)), 3) or ["{}"]


def _plan(reply: Reply, body: dict[str, Any], model: str) -> _Plan:
    messages = [m for m in body["messages"] if isinstance(m, dict)]
    if reply.text is not None:
        text = reply.text
    elif reply.tool_calls:
        text = ""
    else:
        last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = "echo: " + _text_of(last.get("content"))
    if reply.usage is None:
        words = sum(len(_text_of(m.get("content")).split()) + 3 for m in messages)
        usage = (words, max(1, len(text.split())))
    else:
        usage = reply.usage
    options = body.get("stream_options")
    return _Plan(
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


def _error_envelope(api: Api, status: int, message: str | None = None) -> dict[str, Any]:
    if api == "anthropic":
        kind, text = _ANTHROPIC_ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", "Error")
        )
        error = {"type": kind, "message": message or text}
        return {"type": "error", "error": error, "request_id": "req_" + _hex()}
    default = ("server_error" if status >= 500 else "invalid_request_error", None, "Error")
    kind, code, text = _OPENAI_ERRORS.get(status, default)
    return {"error": {"message": message or text, "type": kind, "param": None, "code": code}}


def _stream_error(api: Api, given: Mapping[str, Any]) -> bytes:
    if api == "anthropic":
        error = {"type": "overloaded_error", "message": "Overloaded", **given}
        return b"event: error\ndata: " + _dumps({"type": "error", "error": error}) + b"\n\n"
    error = {"message": "The server had an error while processing your request."}
    error |= {"type": "server_error", "param": None, "code": None, **given}
    return b"data: " + _dumps({"error": error}) + b"\n\n"


def _openai_usage(p: _Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": p.input_tokens,
        "completion_tokens": p.output_tokens,
        "total_tokens": p.input_tokens + p.output_tokens,
        "prompt_tokens_details": {"cached_tokens": p.cached},
        "completion_tokens_details": {"reasoning_tokens": p.reasoning},
    }


def _anthropic_usage(p: _Plan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": max(0, p.input_tokens - p.cached),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": p.cached,
    }


def _openai_body(p: _Plan) -> dict[str, Any]:
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
        "id": "chatcmpl-" + _hex(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": p.model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": p.openai_finish, "logprobs": None}
        ],
        "usage": _openai_usage(p),
    }


def _anthropic_body(p: _Plan) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": p.text}] if p.text_block else []
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)}
        for c in p.tool_calls
    ]
    return {
        "id": "msg_" + _hex(),
        "type": "message",
        "role": "assistant",
        "model": p.model,
        "content": content,
        "stop_reason": p.stop_reason,
        "stop_sequence": None,
        "usage": _anthropic_usage(p, p.output_tokens),
    }


# A stream is (opening events, body events flagged "is a content chunk", closing events).
_Events = tuple[list[bytes], list[tuple[bytes, bool]], list[bytes]]


def _openai_stream(p: _Plan, done: bool) -> _Events:
    ident, created = "chatcmpl-" + _hex(), int(time.time())

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
        return b"data: " + _dumps(data) + b"\n\n"

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
        closing.append(b"data: " + _dumps(usage) + b"\n\n")
    if done:
        closing.append(b"data: [DONE]\n\n")
    opening = chunk({"role": "assistant", "content": ""})
    return [opening], body, closing


def _sse(data: dict[str, Any]) -> bytes:
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + _dumps(data) + b"\n\n"


def _anthropic_stream(p: _Plan, done: bool) -> _Events:
    start = _anthropic_body(p) | {"content": [], "stop_reason": None}
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


def _problem(api: Api, body: Any) -> str | None:
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


def _route(method: str, path: str) -> Api:
    if method == "POST" and path.endswith("/chat/completions"):
        return "openai"
    if method == "POST" and path.endswith("/v1/messages"):
        return "anthropic"
    if method == "GET" and re.search(r"/models(/[^/]+)?$", path):
        return "models"
    return "unknown"


class FakeProvider:
    """A real HTTP/1.1 server faking OpenAI and Anthropic, used as an async context manager.

    Args:
        host: The address to bind.
        port: The port to bind; 0 picks a free one.
        clock: Timestamps :attr:`RecordedRequest.time`.
        models: Model names listed by ``GET /v1/models`` besides scripted ones.

    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        models: Iterable[str] = (),
    ) -> None:
        self._host = host
        self._port = port
        self._clock = clock
        self._seeded = dict.fromkeys(models)
        self._queues: dict[str, deque[Reply]] = {}
        self._defaults: dict[str | None, Reply] = {}
        self._requests: list[RecordedRequest] = []
        self._connections = 0
        self._created = int(time.time())
        self._task_group: anyio.abc.TaskGroup | None = None
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (only while running)."""
        if self._bound_port is None:
            raise RuntimeError("the FakeProvider is not running; use `async with`")
        return self._bound_port

    @property
    def url(self) -> str:
        """The server's root URL, ``http://127.0.0.1:PORT``."""
        return f"http://{self._host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The base URL for OpenAI-compatible clients (``url + "/v1"``)."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The base URL for Anthropic clients (they append ``/v1/messages``)."""
        return self.url

    @property
    def connections(self) -> int:
        """How many TCP connections clients opened so far (to check connection reuse)."""
        return self._connections

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, in arrival order."""
        return list(self._requests)

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """Return the recorded requests whose body named ``model``."""
        return [r for r in self._requests if r.model == model]

    def script(self, model: str, *replies: Reply) -> None:
        """Queue ``replies`` for ``model``: each request for it pops the first one."""
        self._queues.setdefault(model, deque()).extend(replies)

    def default(self, model: str | None, reply: Reply) -> None:
        """Answer ``model`` with ``reply`` once its queue is empty (None: every model)."""
        self._defaults[model] = reply

    def clear(self) -> None:
        """Forget recorded requests, scripted replies and defaults."""
        self._requests.clear()
        self._queues.clear()
        self._defaults.clear()

    def _next_reply(self, model: str) -> Reply:
        queue = self._queues.get(model)
        if queue:
            return queue.popleft()
        return self._defaults.get(model) or self._defaults.get(None) or Reply()

    def _model_names(self) -> list[str]:
        named = [m for m in self._defaults if m is not None]
        return list(dict.fromkeys([*self._seeded, *self._queues, *named]))

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("this FakeProvider is already running")
        listener = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port)
        self._bound_port = int(listener.extra(anyio.abc.SocketAttribute.local_port))  # noqa: S610 - anyio typed attribute
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._serve, listener, task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        self._bound_port = None
        if task_group is not None:
            task_group.cancel_scope.cancel()
            if isinstance(exc, Exception):  # the body's own error: re-raised as is, not grouped
                exc_type, exc, tb = None, None, None
            await task_group.__aexit__(exc_type, exc, tb)

    async def _serve(
        self, listener: anyio.abc.Listener[Any], task_group: anyio.abc.TaskGroup
    ) -> None:
        async with listener:
            await listener.serve(self._connection, task_group)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        self._connections += 1
        wire = _Wire(stream)
        async with stream:
            try:
                while await self._exchange(wire):
                    if wire.conn.our_state is not h11.DONE or wire.conn.their_state is not h11.DONE:
                        return
                    wire.conn.start_next_cycle()
            except _CLOSED:
                return
            except h11.RemoteProtocolError:
                if wire.conn.our_state is h11.SEND_RESPONSE:
                    payload = _dumps(_error_envelope("unknown", 400, "Malformed HTTP request."))
                    with contextlib.suppress(*_CLOSED):
                        await self._send_full(wire, "unknown", 400, payload, {}, close=True)

    async def _exchange(self, wire: _Wire) -> bool:
        """Read and answer one request; False means close the connection."""
        head: h11.Request | None = None
        arrived, raw = 0.0, bytearray()
        while True:
            event = wire.conn.next_event()
            if event is h11.NEED_DATA:
                if wire.conn.they_are_waiting_for_100_continue:
                    await wire.send(h11.InformationalResponse(status_code=100, headers=[]))
                try:
                    data = await wire.stream.receive()
                except anyio.EndOfStream:
                    data = b""
                wire.conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head, arrived = event, self._clock()
            elif isinstance(event, h11.Data):
                raw += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return await self._respond(wire, head, bytes(raw), arrived)
            else:  # ConnectionClosed or PAUSED
                return False

    async def _respond(self, wire: _Wire, head: h11.Request, raw: bytes, arrived: float) -> bool:
        method = head.method.decode("ascii", "replace")
        path = head.target.decode("latin-1").split("?", 1)[0]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fields = body if isinstance(body, dict) else {}
        model = fields.get("model") if isinstance(fields.get("model"), str) else None
        api = _route(method, path)
        self._requests.append(
            RecordedRequest(
                method=method,
                path=path,
                api=api,
                model=model,
                headers=MappingProxyType(headers),
                body=body,
                raw_body=raw,
                stream=fields.get("stream") is True,
                time=arrived,
            )
        )
        if api == "models":
            return await self._models(wire, path, anthropic="anthropic-version" in headers)
        if api == "unknown":
            error = _error_envelope(api, 404, f"Unknown request URL: {method} {path}")
            return await self._send_full(wire, api, 404, _dumps(error), {})
        problem = _problem(api, body)
        if problem is not None or model is None:
            error = _error_envelope(api, 400, problem)
            return await self._send_full(wire, api, 400, _dumps(error), {})
        return await self._answer(wire, api, fields, model, self._next_reply(model))

    async def _models(self, wire: _Wire, path: str, *, anthropic: bool) -> bool:
        """Answer ``GET /v1/models[/{id}]`` in OpenAI's shape, or Anthropic's for its clients."""
        api: Api = "anthropic" if anthropic else "openai"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._created))
        entries = [
            {
                "type": "model",
                "id": m,
                "display_name": m,
                "created_at": stamp,
                "lifecycle": "active",
            }
            if anthropic
            else {"id": m, "object": "model", "created": self._created, "owned_by": "tokenhub-fake"}
            for m in self._model_names()
        ]
        listing: dict[str, Any] = {"object": "list", "data": entries}
        if anthropic:
            ids = [e["id"] for e in entries] or [None]
            listing = {"data": entries, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}
        if not path.endswith("/models"):
            wanted = path.rsplit("/", 1)[1]
            listing = next((e for e in entries if e["id"] == wanted), {})
            if not listing:
                error = _error_envelope(api, 404, f"The model `{wanted}` does not exist.")
                return await self._send_full(wire, api, 404, _dumps(error), {})
        return await self._send_full(wire, api, 200, _dumps(listing), {})

    async def _answer(
        self, wire: _Wire, api: Api, body: dict[str, Any], model: str, reply: Reply
    ) -> bool:
        if reply.hang:
            await wire.wait_closed()
            return False
        await anyio.sleep(reply.delay_headers)
        if reply.reset:
            sock = wire.stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610 - anyio typed attribute
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        verbatim = reply.body
        if reply.status != 200 and verbatim is None:
            verbatim = _error_envelope(api, reply.status)
        if verbatim is not None:
            if isinstance(verbatim, str):
                payload = verbatim.encode()
            elif isinstance(verbatim, bytes):
                payload = verbatim
            else:
                payload = _dumps(dict(verbatim))
            return await self._send_full(
                wire, api, reply.status, payload, reply.headers, reply=reply
            )
        plan = _plan(reply, body, model)
        if body.get("stream") is not True:
            answer = _openai_body(plan) if api == "openai" else _anthropic_body(plan)
            return await self._send_full(wire, api, 200, _dumps(answer), reply.headers, reply=reply)
        render = _openai_stream if api == "openai" else _anthropic_stream
        return await self._stream(wire, api, reply, render(plan, not reply.no_done))

    def _headers(
        self, api: Api, content_type: str, extra: Mapping[str, str], *, close: bool
    ) -> list[tuple[str, str]]:
        headers = {"content-type": content_type}
        headers["request-id" if api == "anthropic" else "x-request-id"] = "req_" + _hex()
        headers |= {k.lower(): v for k, v in extra.items() if k.lower() not in _SKIPPED_HEADERS}
        if close:
            headers["connection"] = "close"
        return list(headers.items())

    @staticmethod
    def _head(status: int, headers: list[tuple[str, str]]) -> h11.Response:
        try:
            reason = http.HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
        return h11.Response(status_code=status, headers=headers, reason=reason)

    async def _send_full(
        self,
        wire: _Wire,
        api: Api,
        status: int,
        payload: bytes,
        extra: Mapping[str, str],
        *,
        reply: Reply | None = None,
        close: bool = False,
    ) -> bool:
        headers = self._headers(api, "application/json", extra, close=close)
        headers.append(("content-length", str(len(payload))))
        head = self._head(status, headers)
        if reply is not None and (reply.cut_after is not None or reply.stall_after is not None):
            await wire.send(head, h11.Data(data=payload[: len(payload) // 2]))
            if reply.cut_after is None:
                await wire.wait_closed()
            return False
        await wire.send(head, h11.Data(data=payload), h11.EndOfMessage())
        return True

    async def _stream(self, wire: _Wire, api: Api, reply: Reply, events: _Events) -> bool:
        opening, body, closing = events
        headers = self._headers(api, "text/event-stream", reply.headers, close=reply.no_done)
        headers.append(("cache-control", "no-cache"))
        await wire.send(self._head(200, headers))
        for event in opening:
            await wire.data(event)
        ping = b'event: ping\ndata: {"type":"ping"}\n\n' if api == "anthropic" else b": ping\n\n"
        sent = 0
        outcome = await self._fault(wire, api, reply, sent, final=False)
        for event, is_content in body:
            if outcome is not None:
                return outcome
            if is_content:
                delay = reply.delay_first_token if sent == 0 else reply.delay_between_chunks
                if reply.ping_every is not None and sent % reply.ping_every == 0:
                    await anyio.sleep(delay / 2)
                    await wire.data(ping)
                    delay /= 2
                await anyio.sleep(delay)
            await wire.data(event)
            if is_content:
                sent += 1
                outcome = await self._fault(wire, api, reply, sent, final=False)
        if outcome is None:
            outcome = await self._fault(wire, api, reply, sent, final=True)
        if outcome is not None:
            return outcome
        for event in closing:
            await wire.data(event)
        await wire.send(h11.EndOfMessage())
        return not reply.no_done

    async def _fault(
        self, wire: _Wire, api: Api, reply: Reply, sent: int, *, final: bool
    ) -> bool | None:
        """Apply the fault due after ``sent`` content chunks: None to go on, else stop."""

        def due(n: int | None) -> bool:
            return n is not None and (n > sent if final else n == sent)

        if due(reply.cut_after):
            return False
        if due(reply.stall_after):
            await wire.wait_closed()
            return False
        if reply.stream_error is not None and due(reply.stream_error_after):
            await wire.data(_stream_error(api, reply.stream_error))
            await wire.send(h11.EndOfMessage())
            return not reply.no_done
        if due(reply.malformed_after):
            prefix = b"event: content_block_delta\n" if api == "anthropic" else b""
            await wire.data(prefix + b"data: {not json\n\n")
        return None
