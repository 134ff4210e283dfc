"""The fake's server: model listings, HTTP and stream faults, connections and lifecycle."""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest

from tests.testing.helpers import (
    ANTHROPIC_PATH,
    BOTH,
    OPENAI_PATH,
    an,
    anthropic_events,
    chunks,
    collect,
    data_events,
    events,
    oa,
    text_of,
)
from tokenhub.testing import FakeProvider, Reply


class TestModels:
    @pytest.mark.anyio
    async def test_models_listing(self) -> None:
        """/v1/models lists seeded, scripted and defaulted models once each."""
        async with (
            FakeProvider(models=["a", "b"]) as fake,
            httpx.AsyncClient(base_url=fake.url) as client,
        ):
            fake.script("c", Reply())
            fake.script("a", Reply())
            fake.default("d", Reply())
            listing = (await client.get("/v1/models")).json()
            one = await client.get("/v1/models/c")
            missing = await client.get("/v1/models/zzz")
        assert listing["object"] == "list"
        assert [m["id"] for m in listing["data"]] == ["a", "b", "c", "d"]
        entry = listing["data"][0]
        assert entry["object"] == "model"
        assert entry["owned_by"] == "tokenhub-fake"
        assert isinstance(entry["created"], int)
        assert one.json()["id"] == "c"
        assert missing.status_code == 404
        assert fake.requests[0].api == "models"


def _anthropic_types() -> list[tuple[int, str]]:
    return [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ]


class TestHTTPFaults:
    @pytest.mark.parametrize(("status", "kind"), _anthropic_types())
    @pytest.mark.anyio
    async def test_anthropic_error_envelopes(self, status: int, kind: str) -> None:
        """Anthropic error statuses get the realistic envelope and error type."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(status=status, headers={"x-extra": "1"}))
            response = await client.post(ANTHROPIC_PATH, json=an(stream=True))
        assert response.status_code == status
        assert response.headers["x-extra"] == "1"
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == kind
        assert isinstance(body["error"]["message"], str)
        assert body["request_id"].startswith("req_")

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 429, 500, 502, 503])
    @pytest.mark.anyio
    async def test_openai_error_envelopes(self, status: int) -> None:
        """OpenAI error statuses get the {"error": {message, type, param, code}} envelope."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(status=status))
            response = await client.post(OPENAI_PATH, json=oa())
        assert response.status_code == status
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] is None
        assert isinstance(error["type"], str)

    @pytest.mark.anyio
    async def test_verbatim_bodies(self) -> None:
        """Given bodies are sent verbatim: dict as JSON, str and bytes as is, 200 included."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script(
                "gpt",
                Reply(status=418, body={"custom": True}),
                Reply(
                    status=502,
                    body="<html>bad gateway</html>",
                    headers={"content-type": "text/html"},
                ),
                Reply(status=500, body=b"\x00raw"),
                Reply(body='{"not": "a completion"}'),
            )
            responses = [await client.post(OPENAI_PATH, json=oa(stream=True)) for _ in range(4)]
        assert responses[0].json() == {"custom": True}
        assert (responses[1].status_code, responses[1].text) == (502, "<html>bad gateway</html>")
        assert responses[1].headers["content-type"] == "text/html"
        assert responses[2].content == b"\x00raw"
        assert (responses[3].status_code, responses[3].json()) == (200, {"not": "a completion"})

    @pytest.mark.anyio
    async def test_headers_on_success(self) -> None:
        """Reply headers are added to successful responses, streaming and not."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.default("gpt", Reply(text="x", headers={"X-RateLimit-Remaining": "3"}))
            plain = await client.post(OPENAI_PATH, json=oa())
            streamed, _, _ = await collect(client, OPENAI_PATH, oa(stream=True))
        assert plain.headers["x-ratelimit-remaining"] == "3"
        assert streamed.headers["x-ratelimit-remaining"] == "3"

    @pytest.mark.anyio
    async def test_delay_headers_times_out(self) -> None:
        """delay_headers holds the response past a shorter client timeout."""
        async with (
            FakeProvider() as fake,
            httpx.AsyncClient(base_url=fake.url, timeout=httpx.Timeout(5.0, read=0.1)) as client,
        ):
            fake.script("gpt", Reply(delay_headers=0.3))
            with pytest.raises(httpx.ReadTimeout):
                await client.post(OPENAI_PATH, json=oa())

    @pytest.mark.anyio
    async def test_delay_headers_then_answer(self) -> None:
        """delay_headers delays but still answers when the client waits."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="late", delay_headers=0.15))
            started = time.monotonic()
            response = await client.post(OPENAI_PATH, json=oa())
        assert time.monotonic() - started >= 0.15
        assert response.json()["choices"][0]["message"]["content"] == "late"

    @pytest.mark.anyio
    async def test_non_stream_cut(self) -> None:
        """Non-streaming cut_after sends half the declared body and closes."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(cut_after=0))
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(OPENAI_PATH, json=oa())
            assert (await client.post(OPENAI_PATH, json=oa())).status_code == 200

    @BOTH
    @pytest.mark.anyio
    async def test_reset(self) -> None:
        """Reply.reset drops the connection with no response: the client sees an error."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(reset=True))
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)):
                await client.post(OPENAI_PATH, json=oa())
            assert (await client.post(OPENAI_PATH, json=oa())).status_code == 200
        assert len(fake.requests) == 2

    @BOTH
    @pytest.mark.anyio
    async def test_hang_times_out(self) -> None:
        """Reply.hang reads the request and never answers."""
        async with (
            FakeProvider() as fake,
            httpx.AsyncClient(base_url=fake.url, timeout=httpx.Timeout(5.0, read=0.1)) as client,
        ):
            fake.script("gpt", Reply(hang=True))
            with pytest.raises(httpx.ReadTimeout):
                await client.post(OPENAI_PATH, json=oa())
        assert fake.requests[0].model == "gpt"


class TestStreamFaults:
    @pytest.mark.anyio
    async def test_delay_first_token(self) -> None:
        """delay_first_token sends headers and the opening event, then waits."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="a b", delay_first_token=0.2))
            started = time.monotonic()
            async with client.stream("POST", OPENAI_PATH, json=oa(stream=True)) as response:
                headers_at = time.monotonic() - started
                raw = b""
                async for piece in response.aiter_raw():
                    raw += piece
            total = time.monotonic() - started
        assert headers_at < 0.2 <= total
        assert len(chunks(raw.decode())) == 4

    @pytest.mark.anyio
    async def test_delay_between_chunks(self) -> None:
        """delay_between_chunks spaces the content chunks out."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="a b c", delay_between_chunks=0.05))
            started = time.monotonic()
            _, raw, error = await collect(client, ANTHROPIC_PATH, an(stream=True))
        assert time.monotonic() - started >= 0.1
        assert error is None
        assert text_of(anthropic_events(raw)) == "a b c"

    @BOTH
    @pytest.mark.anyio
    async def test_cut_after_openai(self) -> None:
        """cut_after closes mid-stream: N content chunks, no finish, no [DONE]."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="one two three four", cut_after=2))
            body = oa(stream=True, stream_options={"include_usage": True})
            _, raw, error = await collect(client, OPENAI_PATH, body)
        assert isinstance(error, httpx.RemoteProtocolError)
        datas = data_events(raw)
        assert len(datas) == 3  # role chunk + 2 content chunks
        assert "[DONE]" not in datas
        assert [c.choices[0].delta.content for c in chunks(raw)[1:]] == ["one ", "two "]

    @pytest.mark.anyio
    async def test_cut_after_anthropic(self) -> None:
        """cut_after on Anthropic leaves out message_delta and message_stop."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="one two three", cut_after=1))
            _, raw, error = await collect(client, ANTHROPIC_PATH, an(stream=True))
        assert isinstance(error, httpx.RemoteProtocolError)
        kinds = [e.type for e in anthropic_events(raw)]
        assert kinds == ["message_start", "content_block_start", "content_block_delta"]

    @pytest.mark.anyio
    async def test_cut_tail_after_openai(self) -> None:
        """cut_tail_after=1 on OpenAI sends the finish chunk, then cuts before the usage chunk."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="a b", cut_tail_after=1))
            body = oa(stream=True, stream_options={"include_usage": True})
            _, raw, error = await collect(client, OPENAI_PATH, body)
        assert isinstance(error, httpx.RemoteProtocolError)
        parsed = chunks(raw)
        assert parsed[-1].choices[0].finish_reason == "stop"
        assert all(c.usage is None for c in parsed)

    @pytest.mark.anyio
    async def test_cut_tail_after_anthropic(self) -> None:
        """cut_tail_after=1 on Anthropic sends message_delta, then cuts before message_stop."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="a b", cut_tail_after=1))
            _, raw, error = await collect(client, ANTHROPIC_PATH, an(stream=True))
        assert isinstance(error, httpx.RemoteProtocolError)
        assert [e.type for e in anthropic_events(raw)][-2:] == [
            "content_block_stop",
            "message_delta",
        ]

    @pytest.mark.anyio
    async def test_fault_beyond_content_fires_at_end(self) -> None:
        """A cut_after larger than the content count cuts after the last content chunk."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="only two", cut_after=10))
            _, raw, error = await collect(client, OPENAI_PATH, oa(stream=True))
        assert error is not None
        assert len(data_events(raw)) == 3

    @BOTH
    @pytest.mark.anyio
    async def test_stall_after(self) -> None:
        """stall_after stops sending but keeps the connection: the read timeout fires."""
        timeout = httpx.Timeout(5.0, read=0.25)
        async with (
            FakeProvider() as fake,
            httpx.AsyncClient(base_url=fake.url, timeout=timeout) as client,
        ):
            fake.script("gpt", Reply(text="one two three", stall_after=1))
            _, raw, error = await collect(client, OPENAI_PATH, oa(stream=True))
        assert isinstance(error, httpx.ReadTimeout)
        assert len(data_events(raw)) == 2

    @pytest.mark.anyio
    async def test_malformed_after(self) -> None:
        """malformed_after injects one non-JSON data event and carries on."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="a b c", malformed_after=1))
            fake.script("claude", Reply(text="a b c", malformed_after=2))
            _, oa_raw, _ = await collect(client, OPENAI_PATH, oa(stream=True))
            _, an_raw, _ = await collect(client, ANTHROPIC_PATH, an(stream=True))
        datas = data_events(oa_raw)
        assert datas[2] == "{not json"
        assert datas[-1] == "[DONE]"
        assert len(datas) == 1 + 3 + 1 + 1 + 1  # role, 3 content, malformed, finish, [DONE]
        named = events(an_raw)
        bad = [i for i, (_, data) in enumerate(named) if data == "{not json"]
        assert len(bad) == 1
        assert named[bad[0]][0] == "content_block_delta"
        assert [
            json.loads(d)["delta"]["text"] for n, d in named[: bad[0]] if n == "content_block_delta"
        ] == [
            "a ",
            "b ",
        ]
        assert named[-1][0] == "message_stop"

    @pytest.mark.anyio
    async def test_no_done_openai(self) -> None:
        """no_done sends finish and usage chunks but no [DONE], then closes cleanly."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="a b", no_done=True))
            body = oa(stream=True, stream_options={"include_usage": True})
            response, raw, error = await collect(client, OPENAI_PATH, body)
        assert error is None
        assert response.headers["connection"] == "close"
        datas = data_events(raw)
        assert "[DONE]" not in datas
        parsed = chunks(raw)
        assert parsed[-2].choices[0].finish_reason == "stop"
        assert parsed[-1].usage is not None

    @pytest.mark.anyio
    async def test_no_done_anthropic(self) -> None:
        """no_done on Anthropic omits message_stop but sends message_delta."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="a b", no_done=True))
            _, raw, error = await collect(client, ANTHROPIC_PATH, an(stream=True))
        assert error is None
        kinds = [e.type for e in anthropic_events(raw)]
        assert kinds[-1] == "message_delta"
        assert "message_stop" not in kinds

    @pytest.mark.anyio
    async def test_stream_error_openai(self) -> None:
        """stream_error sends data: {"error": ...} after N chunks and ends the stream."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="a b c", stream_error={}, stream_error_after=2))
            fake.script("gpt", Reply(stream_error={"message": "custom", "code": "x"}))
            _, raw, error = await collect(client, OPENAI_PATH, oa(stream=True))
            _, custom, _ = await collect(client, OPENAI_PATH, oa(stream=True))
        assert error is None
        datas = data_events(raw)
        assert len(datas) == 4
        assert json.loads(datas[-1]) == {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        last = json.loads(data_events(custom)[-1])["error"]
        assert (last["message"], last["code"], last["type"]) == ("custom", "x", "server_error")
        assert len(data_events(custom)) == 2

    @pytest.mark.anyio
    async def test_stream_error_anthropic(self) -> None:
        """stream_error on Anthropic sends event: error with the error envelope, then ends."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="a b", stream_error={}, stream_error_after=1))
            _, raw, error = await collect(client, ANTHROPIC_PATH, an(stream=True))
        assert error is None
        name, data = events(raw)[-1]
        assert name == "error"
        assert json.loads(data) == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
        assert [e.type for e in anthropic_events(raw)][-1] == "content_block_delta"

    @pytest.mark.anyio
    async def test_ping_every(self) -> None:
        """ping_every sends a ping before content chunks 0, N, 2N... (SSE comment for OpenAI)."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="a b c d e", ping_every=2))
            fake.script("gpt", Reply(text="a b c", ping_every=1))
            _, an_raw, _ = await collect(client, ANTHROPIC_PATH, an(stream=True))
            _, oa_raw, _ = await collect(client, OPENAI_PATH, oa(stream=True))
        names = [n for n, _ in events(an_raw)]
        assert names.count("ping") == 3
        assert events(an_raw)[names.index("ping")][1] == '{"type":"ping"}'
        kinds_between = names[names.index("ping") + 1 :]
        assert kinds_between[:3] == ["content_block_delta", "content_block_delta", "ping"]
        assert text_of(anthropic_events(an_raw)) == "a b c d e"
        assert [n for n, _ in events(oa_raw)].count(":") == 3

    @pytest.mark.anyio
    async def test_ping_splits_the_delay(self) -> None:
        """A due ping arrives halfway through the delay before its chunk."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="a", ping_every=1, delay_first_token=0.2))
            arrivals: list[tuple[float, bytes]] = []
            started = time.monotonic()
            async with client.stream("POST", ANTHROPIC_PATH, json=an(stream=True)) as response:
                arrivals.extend(
                    [(time.monotonic() - started, p) async for p in response.aiter_raw()]
                )
        ping_at = next(t for t, piece in arrivals if b"event: ping" in piece)
        delta_at = next(t for t, piece in arrivals if b"content_block_delta" in piece)
        assert 0.1 <= ping_at < delta_at
        assert delta_at >= 0.2


class TestConnections:
    @BOTH
    @pytest.mark.anyio
    async def test_keep_alive_reuses_the_connection(self) -> None:
        """Several requests, streaming and not, share one kept-alive connection."""
        limits = httpx.Limits(max_connections=1)
        async with (
            FakeProvider() as fake,
            httpx.AsyncClient(base_url=fake.url, limits=limits) as client,
        ):
            peers = set()
            for body in (oa(), an(), oa(stream=True), an(stream=True)):
                path = OPENAI_PATH if "max_tokens" not in body else ANTHROPIC_PATH
                async with client.stream("POST", path, json=body) as response:
                    await response.aread()
                    peers.add(response.extensions["network_stream"].get_extra_info("client_addr"))
            fake.script("gpt", Reply(status=429))
            response = await client.post(OPENAI_PATH, json=oa())
            peers.add(response.extensions["network_stream"].get_extra_info("client_addr"))
        assert len(peers) == 1
        assert len(fake.requests) == 5

    @pytest.mark.anyio
    async def test_raw_client_expect_100_continue(self) -> None:
        """A raw HTTP/1.1 client gets 100 Continue before sending its body, then the answer."""
        payload = json.dumps(oa(text="raw")).encode()
        head = (
            f"POST {OPENAI_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        async with FakeProvider() as fake, await anyio.connect_tcp("127.0.0.1", fake.port) as sock:
            await sock.send(head.encode())
            interim = await sock.receive()
            await sock.send(payload)
            answer = b""
            while True:
                try:
                    answer += await sock.receive()
                except anyio.EndOfStream:
                    break
        assert interim.startswith(b"HTTP/1.1 100 ")
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b'"content":"echo: raw"' in answer

    @pytest.mark.anyio
    async def test_many_concurrent_connections(self) -> None:
        """Many concurrent streams on separate connections are all served."""
        results: list[str] = []
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.default(None, Reply(delay_between_chunks=0.01))

            async def one(i: int) -> None:
                _, raw, _ = await collect(
                    client, OPENAI_PATH, oa(f"m{i}", text=f"n {i}", stream=True)
                )
                results.append("".join(c.choices[0].delta.content or "" for c in chunks(raw)))

            async with anyio.create_task_group() as tg:
                for i in range(25):
                    tg.start_soon(one, i)
        assert sorted(results) == sorted(f"echo: n {i}" for i in range(25))

    @pytest.mark.anyio
    async def test_client_disconnect_mid_stream(self) -> None:
        """A client leaving mid-stream does not break the server."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="a b c d e f", delay_between_chunks=0.02))
            async with client.stream("POST", OPENAI_PATH, json=oa(stream=True)) as response:
                async for _ in response.aiter_raw():
                    break
            assert (await client.post(OPENAI_PATH, json=oa())).status_code == 200

    @BOTH
    @pytest.mark.anyio
    async def test_shutdown_with_hanging_request_is_prompt(self) -> None:
        """Leaving the context while a request hangs cancels it promptly."""
        arrived = anyio.Event()

        def clock() -> float:
            arrived.set()
            return 0.0

        errors: list[Exception] = []
        async with httpx.AsyncClient(timeout=5) as client, anyio.create_task_group() as tg:
            async with FakeProvider(clock=clock) as fake:
                fake.script("gpt", Reply(hang=True))

                async def call() -> None:
                    try:
                        await client.post(fake.url + OPENAI_PATH, json=oa())
                    except httpx.HTTPError as exc:
                        errors.append(exc)

                tg.start_soon(call)
                await arrived.wait()
                started = time.monotonic()
            elapsed = time.monotonic() - started
        assert elapsed < 1.0
        assert len(errors) == 1

    @BOTH
    @pytest.mark.anyio
    async def test_shutdown_with_stalled_stream_is_prompt(self) -> None:
        """Leaving the context while a stream is stalled (and a connection idles) is prompt."""
        async with httpx.AsyncClient(timeout=5) as client:
            async with FakeProvider() as fake:
                await client.get(fake.url + "/v1/models")  # leaves an idle keep-alive connection
                fake.script("gpt", Reply(text="a b c", stall_after=1))
                request = client.build_request("POST", fake.url + OPENAI_PATH, json=oa(stream=True))
                response = await client.send(request, stream=True)
                iterator = response.aiter_raw()
                received = b""
                while received.count(b"\n\n") < 2:
                    received += await anext(iterator)
                started = time.monotonic()
            elapsed = time.monotonic() - started
            with pytest.raises(httpx.HTTPError):
                async for _ in iterator:
                    pass
            await response.aclose()
        assert elapsed < 1.0

    @pytest.mark.anyio
    async def test_urls_and_lifecycle(self) -> None:
        """URLs derive from the bound port; they are unavailable outside the context."""
        fake = FakeProvider()
        with pytest.raises(RuntimeError):
            _ = fake.url
        async with fake:
            assert fake.port > 0
            assert fake.url == f"http://127.0.0.1:{fake.port}"
            assert fake.openai_base_url == fake.url + "/v1"
            assert fake.anthropic_base_url == fake.url
            with pytest.raises(RuntimeError):
                await fake.__aenter__()
        with pytest.raises(RuntimeError):
            _ = fake.port
        async with fake:  # a stopped fake can start again
            assert fake.port > 0

    @BOTH
    @pytest.mark.anyio
    async def test_body_error_propagates_unwrapped(self) -> None:
        """An exception raised inside the context leaves it as is, not in an ExceptionGroup."""
        with pytest.raises(KeyError):
            async with FakeProvider():
                raise KeyError("boom")
