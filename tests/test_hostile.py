"""Hostile providers and broken keys: every failure is a classified error, bounded, and leak-free.

A small HTTP server written here misbehaves in the ways the FakeProvider cannot:
raw bytes, gzip bombs, trickled streams, connections closed at the worst moment.
Each test runs on both HTTP implementations.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from tokenhub import Hub
from tokenhub.errors import (
    ConfigError,
    CredentialError,
    ErrorClass,
    ProviderError,
    StreamInterrupted,
    TokenhubError,
)
from tokenhub.http import HttpSettings, HttpxClient
from tokenhub.testing import FakeClock, FakeProvider, Reply

from .conftest import CANARY

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]
Handler = Callable[[anyio.abc.SocketStream, int], Awaitable[bool]]


@pytest.fixture(params=["httpx", "aiohttp"])
def http(request: pytest.FixtureRequest) -> str:
    """The HTTP implementation under test."""
    return str(request.param)


async def _read_request(stream: anyio.abc.SocketStream, buf: bytearray) -> bool:
    """Read one whole request (headers and Content-Length body) into ``buf``; False at EOF."""
    while b"\r\n\r\n" not in buf:
        try:
            buf += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return False
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += await stream.receive()
    buf[:] = rest[length:]
    return True


@asynccontextmanager
async def hostile(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler(stream, n)`` for the n-th request (from 0); it returns whether to keep alive.

    Yields the base URL.
    """
    count = 0

    async def serve(stream: anyio.abc.SocketStream) -> None:
        nonlocal count
        buf = bytearray()
        async with stream:
            while await _read_request(stream, buf):
                n, count = count, count + 1
                try:
                    if not await handler(stream, n):
                        return
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio typed attribute
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()


def head(status: int = 200, headers: Mapping[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def whole(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> bytes:
    """A complete response with a Content-Length body."""
    fields = {"content-type": "application/json", "content-length": str(len(body))}
    return head(status, {**fields, **(headers or {})}) + body


SSE_HEAD = head(200, {"content-type": "text/event-stream", "connection": "close"})


def first_chunk(kind: str) -> bytes:
    """An SSE opening that yields one chunk of text, in ``kind``'s wire format."""
    if kind == "openai":
        delta = {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
        return b"data: " + json.dumps(delta).encode() + b"\n\n"
    start = {"type": "message_start", "message": {"id": "m1", "model": "m", "usage": {}}}
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
    text = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "hi"},
    }
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in (start, block, text)
    )


def config(
    bad_url: str,
    fake: FakeProvider | None,
    http: str,
    *,
    kind: str = "openai",
    key: str = CANARY,
    bad: Mapping[str, Any] | None = None,
    failover: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Model ``bad`` (cheapest, on ``bad_url``) and, with ``fake``, fallback ``good``."""
    providers: dict[str, Any] = {
        "h": {"kind": kind, "base_url": bad_url, "http": http, "api_key": key, **(bad or {})}
    }
    models: dict[str, Any] = {"bad": {"provider": "h", "pricing": {"input": 1, "output": 1}}}
    if fake is not None:
        providers["f"] = {
            "kind": "openai",
            "base_url": fake.openai_base_url,
            "http": http,
            "api_key": "sk-fallback-0123456789abcdef",
        }
        models["good"] = {"provider": "f", "pricing": {"input": 5, "output": 5}}
    return {
        "providers": providers,
        "models": models,
        "routing": {"mode": "cheap"},
        "failover": {"max_retries": 0, **(failover or {})},
    }


def _holds(value: object, key: str) -> bool:
    """Whether ``value`` shows ``key``: its repr, a mapping's items, or the headers it carries."""
    shown = [repr(value)]
    if isinstance(value, Mapping):
        shown.append(repr(list(value.items())))
    for holder in (
        value,
        getattr(value, "request", None),
        getattr(value, "request_info", None),
        getattr(value, "_request", None),
    ):
        headers = getattr(holder, "headers", None)
        if headers is not None:
            try:
                shown.append(repr(list(headers.items())))
            except Exception:  # noqa: S112 - a lazy attribute of a third-party object
                continue
    return any(key in s for s in shown)


def leaks(exc: BaseException, key: str) -> list[str]:
    """Where ``key`` can be reached from ``exc``: text, chain, and tokenhub's and libraries' frames.

    This test's own frames are skipped: they hold the config with the key.
    """
    found: list[str] = []
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if any(key in s for s in (str(e), repr(e), repr(e.args))):
            found.append(f"{type(e).__name__} text")
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if not frame.f_code.co_filename.endswith("test_hostile.py"):
                found += [
                    f"{type(e).__name__}: {frame.f_code.co_name}.{name}"
                    for name, value in frame.f_locals.items()
                    if _holds(value, key)
                ]
            tb = tb.tb_next
        pending += [c for c in (e.__context__, e.__cause__) if c is not None]
    return found


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _fail(hub: Hub, *, stream: bool) -> TokenhubError:
    try:
        if stream:
            async with hub.stream(HELLO, model="bad") as s:
                _ = [c async for c in s]
        else:
            await hub.chat(HELLO, model="bad")
    except TokenhubError as exc:
        return exc
    raise AssertionError("the request succeeded")


class TestNoContextChain:
    @pytest.mark.parametrize("kind", ["openai", "anthropic"])
    @pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
    async def test_refused_connection_error_reaches_no_key(
        self, http: str, kind: str, *, stream: bool
    ) -> None:
        """A refused connection raises an error whose chain and frames hold no key."""
        url = f"http://127.0.0.1:{_closed_port()}"
        async with Hub.from_config(config(url, None, http, kind=kind), clock=FakeClock()) as hub:
            exc = await _fail(hub, stream=stream)
        assert isinstance(exc, ProviderError)
        assert ErrorClass.PROVIDER_DOWN == exc.error_class
        assert exc.__context__ is None
        assert exc.__cause__ is None
        assert [] == leaks(exc, CANARY)

    @pytest.mark.parametrize("kind", ["openai", "anthropic"])
    @pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
    async def test_reset_connection_error_reaches_no_key(
        self, http: str, kind: str, *, stream: bool
    ) -> None:
        """A connection reset before the answer raises an error whose chain and frames hold no key."""
        async with FakeProvider() as fake:
            url = fake.openai_base_url if kind == "openai" else fake.anthropic_base_url
            fake.script("bad", Reply(reset=True))
            cfg = config(url, None, http, kind=kind)
            async with Hub.from_config(cfg, clock=FakeClock()) as hub:
                exc = await _fail(hub, stream=stream)
        assert isinstance(exc, ProviderError)
        assert exc.__context__ is None
        assert [] == leaks(exc, CANARY)

    async def test_a_broken_committed_stream_has_no_context(self, http: str) -> None:
        """A stream cut after its first chunk raises StreamInterrupted without a context chain."""
        async with FakeProvider() as fake:
            fake.script("bad", Reply(text="a b c d", cut_after=1))
            cfg = config(fake.openai_base_url, None, http)
            async with Hub.from_config(cfg, clock=FakeClock()) as hub:
                exc = await _fail(hub, stream=True)
        assert isinstance(exc, StreamInterrupted)
        assert exc.__context__ is None
        assert [] == leaks(exc, CANARY)


class TestUnsendableKey:
    @pytest.mark.parametrize("kind", ["openai", "anthropic"])
    @pytest.mark.parametrize("key", [CANARY + "\n", CANARY + "é", CANARY + "\r\nx-a: b"])
    async def test_a_key_http_cannot_carry_is_a_credential_error_that_fails_over(
        self,
        fake: FakeProvider,
        http: str,
        kind: str,
        key: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A key with a newline or non-ASCII is a CredentialError quoting nothing; the fallback answers.

        The key comes from the environment, resolved per request (a literal one is refused
        by the config already).
        """
        url = fake.openai_base_url if kind == "openai" else fake.anthropic_base_url
        fake.script("good", Reply(text="fallback"))
        monkeypatch.setenv("TOKENHUB_TEST_UNSENDABLE_KEY", key)
        cfg = config(url, fake, http, kind=kind)
        cfg["providers"]["h"]["api_key"] = {"env": "TOKENHUB_TEST_UNSENDABLE_KEY"}
        async with Hub.from_config(cfg) as hub:
            r = await hub.chat(HELLO)
            assert "fallback" == r.text
            assert r.trace is not None
            assert ["credential", "ok"] == [a.outcome for a in r.trace.attempts]
            exc = await _fail(hub, stream=False)
        assert isinstance(exc, CredentialError)
        assert "cannot be sent in an HTTP header" in str(exc)
        assert [] == leaks(exc, CANARY)
        assert ["good"] == [q.model for q in fake.requests]  # nothing went out with the bad key


def nested(depth: int) -> bytes:
    return b'{"choices": ' + b"[" * depth + b"]" * depth + b"}"


class TestErrorBoundary:
    @pytest.mark.parametrize(
        ("body", "stream"),
        [
            pytest.param(nested(200_000), False, id="deep-json"),
            pytest.param(b'data: {"choices": "x"}\n\n', True, id="choices-a-string"),
            pytest.param(b'data: {"choices": [{"delta": 7}]}\n\n', True, id="delta-a-number"),
            pytest.param(b"data: [1, 2]\n\n", True, id="chunk-a-list"),
            pytest.param(b"data: " + nested(200_000)[6:] + b"\n\n", True, id="deep-chunk"),
        ],
    )
    async def test_a_body_the_adapter_chokes_on_fails_over_and_counts(
        self, fake: FakeProvider, http: str, body: bytes, *, stream: bool
    ) -> None:
        """Whatever the adapter raises on a hostile body is a transient failure: counted, failed over."""

        async def handler(wire: anyio.abc.SocketStream, _: int) -> bool:
            await wire.send(SSE_HEAD + body if stream else whole(body))
            return not stream

        fake.script("good", Reply(text="fallback"))
        async with hostile(handler) as url, Hub.from_config(config(url, fake, http)) as hub:
            if stream:
                async with hub.stream(HELLO) as s:
                    text = "".join([c.text async for c in s])
                trace = s.trace
            else:
                r = await hub.chat(HELLO)
                assert r.trace is not None
                text, trace = r.text, r.trace
            health = hub.health()["models"]["bad"]
        assert "fallback" == text
        assert ["transient", "ok"] == [a.outcome for a in trace.attempts]
        assert health["failure_rate"] > 0

    async def test_an_sse_line_over_the_cap_fails_over(self, fake: FakeProvider, http: str) -> None:
        """A line longer than the SSE decoder's cap is a transient failure that fails over."""

        async def handler(wire: anyio.abc.SocketStream, _: int) -> bool:
            await wire.send(SSE_HEAD + b"data: " + b"x" * (17 * 1024 * 1024))
            return False

        fake.script("good", Reply(text="fallback"))
        async with (
            hostile(handler) as url,
            Hub.from_config(config(url, fake, http)) as hub,
            hub.stream(HELLO) as s,
        ):
            text = "".join([c.text async for c in s])
        assert "fallback" == text
        assert "transient" == s.trace.attempts[0].outcome


class TestSizeLimits:
    LIMIT = {"max_response_bytes": 1024 * 1024}

    def test_the_limit_defaults_to_32_mib_and_must_be_positive(self) -> None:
        """``max_response_bytes`` is 32 MiB unless set; zero is a ConfigError naming its path."""
        assert 32 * 1024 * 1024 == HttpSettings().max_response_bytes
        cfg = config("http://127.0.0.1:9", None, "httpx", bad={"max_response_bytes": 0})
        with pytest.raises(ConfigError) as info:
            Hub.from_config(cfg)
        assert ("providers.h.max_response_bytes", "must be at least 1") in info.value.errors

    async def test_the_limit_reaches_the_http_client(self, http: str) -> None:
        """A provider's ``max_response_bytes`` is in the settings its HTTP client is built from."""
        seen: list[HttpSettings] = []

        def factory(settings: HttpSettings) -> HttpxClient:
            seen.append(settings)
            return HttpxClient(settings)

        cfg = config("http://127.0.0.1:9", None, http, bad={"max_response_bytes": 12345})
        async with Hub.from_config(cfg, http=factory):
            pass
        assert [12345] == [s.max_response_bytes for s in seen]

    @pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip-bomb"])
    async def test_a_body_over_the_limit_fails_over(
        self, fake: FakeProvider, http: str, *, gzipped: bool
    ) -> None:
        """A JSON body over max_response_bytes (after decompression) is a transient failure."""
        body = b'{"choices": [], "pad": "' + b"0" * (8 * 1024 * 1024) + b'"}'
        wire_body = gzip.compress(body) if gzipped else body
        extra = {"content-encoding": "gzip"} if gzipped else {}

        async def handler(wire: anyio.abc.SocketStream, _: int) -> bool:
            await wire.send(whole(wire_body, headers=extra))
            return True

        fake.script("good", Reply(text="fallback"))
        cfg = config("", fake, http, bad=self.LIMIT)
        async with hostile(handler) as url:
            cfg["providers"]["h"]["base_url"] = url
            async with Hub.from_config(cfg) as hub:
                r = await hub.chat(HELLO)
        assert "fallback" == r.text
        assert r.trace is not None
        first = r.trace.attempts[0]
        assert "transient" == first.outcome
        assert "larger than 1048576 bytes" in (first.message or "")

    async def test_an_error_body_over_the_limit_fails_over(
        self, fake: FakeProvider, http: str
    ) -> None:
        """A streamed request's error body over max_response_bytes is not buffered whole."""

        async def handler(wire: anyio.abc.SocketStream, _: int) -> bool:
            await wire.send(whole(b"x" * (4 * 1024 * 1024), status=500))
            return True

        fake.script("good", Reply(text="fallback"))
        cfg = config("", fake, http, bad=self.LIMIT)
        async with hostile(handler) as url:
            cfg["providers"]["h"]["base_url"] = url
            async with Hub.from_config(cfg) as hub, hub.stream(HELLO) as s:
                text = "".join([c.text async for c in s])
        assert "fallback" == text
        assert "larger than" in (s.trace.attempts[0].message or "")

    async def test_an_event_that_never_ends_fails_over(self, fake: FakeProvider, http: str) -> None:
        """``data:`` lines never followed by a blank line stop at max_response_bytes."""

        async def handler(wire: anyio.abc.SocketStream, _: int) -> bool:
            await wire.send(SSE_HEAD)
            line = b"data: " + b"y" * 1000 + b"\n"
            for _ in range(4000):  # 4 MB in one event, never dispatched
                await wire.send(line * 10)
            return False

        fake.script("good", Reply(text="fallback"))
        cfg = config("", fake, http, bad=self.LIMIT)
        async with hostile(handler) as url:
            cfg["providers"]["h"]["base_url"] = url
            async with Hub.from_config(cfg) as hub, hub.stream(HELLO) as s:
                text = "".join([c.text async for c in s])
        assert "fallback" == text
        assert "larger than 1048576 bytes" in (s.trace.attempts[0].message or "")


class TestCommittedStreamDeadline:
    @pytest.mark.parametrize("trickle", [b": ping\n", b"x"], ids=["comments", "single-bytes"])
    @pytest.mark.parametrize("kind", ["openai", "anthropic"])
    async def test_a_trickling_stream_ends_at_its_deadline(
        self, http: str, kind: str, trickle: bytes
    ) -> None:
        """After its first chunk, a stream trickling comments or bytes is interrupted at the deadline."""

        async def handler(wire: anyio.abc.SocketStream, _: int) -> bool:
            await wire.send(SSE_HEAD + first_chunk(kind) + (b"data: " if trickle == b"x" else b""))
            while True:
                await wire.send(trickle)
                await anyio.sleep(0.02)

        async with hostile(handler) as url:
            # Each read is well within the read timeout; the deadline is further away than it.
            bad = {"timeouts": {"read": 0.25}}
            cfg = config(url, None, http, kind=kind, bad=bad, failover={"timeout": 0.8})
            async with Hub.from_config(cfg) as hub:
                started = time.monotonic()
                with anyio.fail_after(10), pytest.raises(StreamInterrupted) as info:
                    async with hub.stream(HELLO, model="bad") as s:
                        _ = [c async for c in s]
                elapsed = time.monotonic() - started
        assert elapsed < 3.0
        assert "timeout" in str(info.value)


class TestStaleConnection:
    async def test_a_pooled_connection_closed_by_the_server_is_retried_once(
        self, http: str
    ) -> None:
        """A request sent on a connection the server closed unanswered goes out again, uncharged."""
        answer = json.dumps(
            {
                "id": "c",
                "model": "m",
                "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
            }
        ).encode()

        async def handler(wire: anyio.abc.SocketStream, n: int) -> bool:
            if n == 0:  # an error answer, keep-alive, no Connection: close
                await wire.send(whole(b'{"error": {"message": "bad"}}', status=400))
                return True
            if n == 1:  # the next request on that connection: closed without a byte
                return False
            await wire.send(whole(answer))
            return True

        async with (
            hostile(handler) as url,
            Hub.from_config(config(url, None, http), clock=FakeClock()) as hub,
        ):
            with pytest.raises(ProviderError):
                await hub.chat(HELLO, model="bad")
            r = await hub.chat(HELLO, model="bad")
            health = hub.health()["models"]["bad"]
        assert "ok" == r.text
        assert r.trace is not None
        assert ["ok"] == [a.outcome for a in r.trace.attempts]
        assert "closed" == health["circuit"]


class TestStreamTrace:
    async def test_a_stream_that_failed_before_its_first_chunk_lists_its_attempts(
        self, fake: FakeProvider, http: str
    ) -> None:
        """ChatStream.trace lists the attempts of a stream that failed before any chunk."""
        fake.script("bad", Reply(status=500))
        cfg = config(fake.openai_base_url, None, http)
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            s = hub.stream(HELLO, model="bad")
            with pytest.raises(ProviderError) as info:
                _ = [c async for c in s]
        assert ["transient"] == [a.outcome for a in s.trace.attempts]
        assert info.value.trace == s.trace
