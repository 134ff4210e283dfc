"""The fake provider: an h11 server on real sockets that answers scripts and injects faults."""

from __future__ import annotations

import contextlib
import http
import json
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
from tokenhub.testing._wire import (
    anthropic_body,
    anthropic_stream,
    api_of,
    dumps,
    error_envelope,
    hex_id,
    openai_body,
    openai_stream,
    plan_answer,
    problem_of,
    stream_error,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import TracebackType

    from tokenhub.testing._script import Api
    from tokenhub.testing._wire import Events

__all__ = ["FakeProvider"]

_SKIPPED_HEADERS = frozenset({"content-length", "transfer-encoding"})
_CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


@attrs.define
class _Connection:
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
        wire = _Connection(stream)
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
                    payload = dumps(error_envelope("unknown", 400, "Malformed HTTP request."))
                    with contextlib.suppress(*_CLOSED):
                        await self._send_full(wire, "unknown", 400, payload, {}, close=True)

    async def _exchange(self, wire: _Connection) -> bool:
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

    async def _respond(
        self, wire: _Connection, head: h11.Request, raw: bytes, arrived: float
    ) -> bool:
        method = head.method.decode("ascii", "replace")
        path = head.target.decode("latin-1").split("?", 1)[0]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fields = body if isinstance(body, dict) else {}
        model = fields.get("model") if isinstance(fields.get("model"), str) else None
        api = api_of(method, path)
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
            error = error_envelope(api, 404, f"Unknown request URL: {method} {path}")
            return await self._send_full(wire, api, 404, dumps(error), {})
        problem = problem_of(api, body)
        if problem is not None or model is None:
            error = error_envelope(api, 400, problem)
            return await self._send_full(wire, api, 400, dumps(error), {})
        return await self._answer(wire, api, fields, model, self._next_reply(model))

    async def _models(self, wire: _Connection, path: str, *, anthropic: bool) -> bool:
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
                error = error_envelope(api, 404, f"The model `{wanted}` does not exist.")
                return await self._send_full(wire, api, 404, dumps(error), {})
        return await self._send_full(wire, api, 200, dumps(listing), {})

    async def _answer(
        self, wire: _Connection, api: Api, body: dict[str, Any], model: str, reply: Reply
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
            verbatim = error_envelope(api, reply.status)
        if verbatim is not None:
            if isinstance(verbatim, str):
                payload = verbatim.encode()
            elif isinstance(verbatim, bytes):
                payload = verbatim
            else:
                payload = dumps(dict(verbatim))
            return await self._send_full(
                wire, api, reply.status, payload, reply.headers, reply=reply
            )
        plan = plan_answer(reply, body, model, prefill=api == "anthropic")
        if body.get("stream") is not True:
            answer = openai_body(plan) if api == "openai" else anthropic_body(plan)
            return await self._send_full(wire, api, 200, dumps(answer), reply.headers, reply=reply)
        render = openai_stream if api == "openai" else anthropic_stream
        return await self._stream(wire, api, reply, render(plan, not reply.no_done))

    def _headers(
        self, api: Api, content_type: str, extra: Mapping[str, str], *, close: bool
    ) -> list[tuple[str, str]]:
        headers = {"content-type": content_type}
        headers["request-id" if api == "anthropic" else "x-request-id"] = "req_" + hex_id()
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
        wire: _Connection,
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

    async def _stream(self, wire: _Connection, api: Api, reply: Reply, events: Events) -> bool:
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
        cut = reply.cut_tail_after
        for event in closing if cut is None else closing[:cut]:
            await wire.data(event)
        if cut is not None:
            return False
        await wire.send(h11.EndOfMessage())
        return not reply.no_done

    async def _fault(
        self, wire: _Connection, api: Api, reply: Reply, sent: int, *, final: bool
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
            await wire.data(stream_error(api, reply.stream_error))
            await wire.send(h11.EndOfMessage())
            return not reply.no_done
        if due(reply.malformed_after):
            prefix = b"event: content_block_delta\n" if api == "anthropic" else b""
            await wire.data(prefix + b"data: {not json\n\n")
        return None
