"""Tests for tokenhub.testing.FakeProvider: wire formats, scripting, recording and faults."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import anyio
import httpx
import openai
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tokenhub.testing import FakeProvider, RecordedRequest, Reply, ScriptedToolCall

BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
EVENT_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def oa(model: str = "gpt", text: str = "hello big world", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def an(model: str = "claude", text: str = "hello big world", **extra: Any) -> dict[str, Any]:
    body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    return body | extra


def events(raw: str) -> list[tuple[str | None, str]]:
    """Parse complete SSE events into (event name, data); comments come back as (":", text)."""
    out: list[tuple[str | None, str]] = []
    for block in raw.split("\n\n")[:-1]:
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                out.append((":", line[1:].strip()))
            elif line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if data:
            out.append((name, "\n".join(data)))
    return out


def data_events(raw: str) -> list[str]:
    return [data for name, data in events(raw) if name != ":"]


async def collect(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> tuple[httpx.Response, str, Exception | None]:
    """Stream a POST, returning the response, every byte received and the error that ended it."""
    received = bytearray()
    error: Exception | None = None
    async with client.stream("POST", path, json=body) as response:
        try:
            async for piece in response.aiter_raw():
                received += piece
        except httpx.HTTPError as exc:
            error = exc
    return response, received.decode(), error


def chunks(raw: str) -> list[ChatCompletionChunk]:
    return [ChatCompletionChunk.model_validate_json(d) for d in data_events(raw) if d != "[DONE]"]


def anthropic_events(raw: str) -> list[Any]:
    parsed = []
    for name, data in events(raw):
        if name in {"ping", "error", ":"}:
            continue
        event = EVENT_ADAPTER.validate_json(data)
        assert event.type == name
        parsed.append(event)
    return parsed


def text_of(parsed: list[Any]) -> str:
    return "".join(
        e.delta.text
        for e in parsed
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )


class TestOpenAIWire:
    @BOTH
    @pytest.mark.anyio
    async def test_non_stream_validates(self) -> None:
        """A non-streaming answer validates as ChatCompletion and echoes the user."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            response = await client.post(OPENAI_PATH, json=oa())
        assert response.status_code == 200
        assert response.headers["x-request-id"].startswith("req_")
        completion = ChatCompletion.model_validate(response.json())
        assert completion.id.startswith("chatcmpl-")
        assert completion.choices[0].message.content == "echo: hello big world"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.model == "gpt"

    @pytest.mark.anyio
    async def test_stream_validates(self) -> None:
        """Every stream chunk validates; role first, text joined, finish, usage, [DONE]."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="one two  three "))
            body = oa(stream=True, stream_options={"include_usage": True})
            response, raw, error = await collect(client, OPENAI_PATH, body)
        assert error is None
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        assert data_events(raw)[-1] == "[DONE]"
        parsed = chunks(raw)
        assert parsed[0].choices[0].delta.role == "assistant"
        pieces = [c.choices[0].delta.content for c in parsed[1:-2]]
        assert pieces == ["one ", "two  ", "three "]
        assert parsed[-2].choices[0].finish_reason == "stop"
        assert parsed[-1].choices == []
        assert parsed[-1].usage is not None
        assert parsed[-1].usage.completion_tokens == 3

    @pytest.mark.anyio
    async def test_stream_without_include_usage_has_no_usage_chunk(self) -> None:
        """Without stream_options.include_usage no chunk carries usage."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            _, raw, _ = await collect(client, OPENAI_PATH, oa(stream=True))
        parsed = chunks(raw)
        assert all(c.usage is None and c.choices for c in parsed)
        assert "usage" not in data_events(raw)[0]

    @pytest.mark.anyio
    async def test_tool_calls_non_stream(self) -> None:
        """Tool calls render with JSON-string arguments and finish_reason tool_calls."""
        call = ScriptedToolCall(id="call_1", name="lookup", arguments={"q": "x", "n": 2})
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(tool_calls=[call]))
            response = await client.post(OPENAI_PATH, json=oa())
        choice = ChatCompletion.model_validate(response.json()).choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert choice.message.tool_calls is not None
        tool = choice.message.tool_calls[0]
        assert tool.type == "function"
        assert (tool.id, tool.function.name) == ("call_1", "lookup")
        assert json.loads(tool.function.arguments) == {"q": "x", "n": 2}

    @pytest.mark.anyio
    async def test_tool_calls_stream(self) -> None:
        """Streamed tool arguments come in fragments per index; the first carries id and name."""
        calls = [
            ScriptedToolCall(id="a", name="f", arguments={"x": 1}),
            ScriptedToolCall(id="b", name="g"),
        ]
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="ok", tool_calls=calls))
            _, raw, _ = await collect(client, OPENAI_PATH, oa(stream=True))
        arguments: dict[int, str] = {}
        heads: dict[int, tuple[str | None, str | None]] = {}
        for chunk in chunks(raw):
            for tool in chunk.choices[0].delta.tool_calls or []:
                assert tool.function is not None
                if tool.index not in heads:
                    heads[tool.index] = (tool.id, tool.function.name)
                else:
                    assert tool.id is None
                arguments[tool.index] = arguments.get(tool.index, "") + (
                    tool.function.arguments or ""
                )
        assert heads == {0: ("a", "f"), 1: ("b", "g")}
        assert json.loads(arguments[0]) == {"x": 1}
        assert json.loads(arguments[1]) == {}
        assert len([c for c in chunks(raw) if c.choices and c.choices[0].delta.tool_calls]) >= 3
        assert chunks(raw)[-1].choices[0].finish_reason == "tool_calls"

    @pytest.mark.anyio
    async def test_explicit_usage_cached_and_reasoning(self) -> None:
        """Usage, cached tokens (inside prompt_tokens) and reasoning tokens are reported."""
        reply = Reply(text="x", usage=(100, 7), cached_input_tokens=60, reasoning_tokens=4)
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", reply)
            usage = ChatCompletion.model_validate(
                (await client.post(OPENAI_PATH, json=oa())).json()
            ).usage
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 7, 107)
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 60
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == 4

    @pytest.mark.anyio
    async def test_estimated_usage(self) -> None:
        """Estimated usage: request words + 3 per message in, answer words out."""
        body = {
            "model": "gpt",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a b c"}]},
            ],
        }
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="four words right here"), Reply(text=""))
            first = (await client.post(OPENAI_PATH, json=body)).json()["usage"]
            empty = (await client.post(OPENAI_PATH, json=body)).json()["usage"]
        assert (first["prompt_tokens"], first["completion_tokens"]) == (2 + 3 + 3 + 3, 4)
        assert empty["completion_tokens"] == 1

    @pytest.mark.anyio
    async def test_echo_joins_text_parts(self) -> None:
        """Echo uses the last user message, joining its text parts."""
        body = {
            "model": "gpt",
            "messages": [
                {"role": "user", "content": "old"},
                {"role": "assistant", "content": "reply"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:,"}},
                        {"type": "text", "text": "here"},
                    ],
                },
            ],
        }
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            response = await client.post(OPENAI_PATH, json=body)
        assert response.json()["choices"][0]["message"]["content"] == "echo: look here"

    @pytest.mark.anyio
    async def test_chunks_model_and_finish_overrides(self) -> None:
        """Reply.chunks splits the text in N pieces; response_model and finish_reason override."""
        reply = Reply(text="abcdefgh", chunks=3, response_model="gpt-real", finish_reason="length")
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", reply)
            _, raw, _ = await collect(client, OPENAI_PATH, oa(stream=True))
        parsed = chunks(raw)
        assert [c.choices[0].delta.content for c in parsed[1:-1]] == ["ab", "cde", "fgh"]
        assert parsed[-1].choices[0].finish_reason == "length"
        assert {c.model for c in parsed} == {"gpt-real"}


class TestAnthropicWire:
    @BOTH
    @pytest.mark.anyio
    async def test_non_stream_validates(self) -> None:
        """A non-streaming answer validates as anthropic Message with a request-id header."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            response = await client.post(ANTHROPIC_PATH, json=an())
        assert response.headers["request-id"].startswith("req_")
        message = Message.model_validate(response.json())
        assert message.id.startswith("msg_")
        assert message.content[0].type == "text"
        assert message.content[0].text == "echo: hello big world"
        assert message.stop_reason == "end_turn"
        assert message.usage.output_tokens == 4

    @pytest.mark.anyio
    async def test_stream_validates(self) -> None:
        """Every event validates as RawMessageStreamEvent, in the documented order."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="Hi there you", usage=(9, 3)))
            response, raw, error = await collect(client, ANTHROPIC_PATH, an(stream=True))
        assert error is None
        assert response.headers["content-type"] == "text/event-stream"
        parsed = anthropic_events(raw)
        kinds = [e.type for e in parsed]
        assert kinds == [
            "message_start",
            "content_block_start",
            *["content_block_delta"] * 3,
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        start = parsed[0].message
        assert (start.content, start.usage.input_tokens, start.usage.output_tokens) == ([], 9, 1)
        assert text_of(parsed) == "Hi there you"
        assert parsed[-2].delta.stop_reason == "end_turn"
        assert parsed[-2].usage.output_tokens == 3

    @pytest.mark.anyio
    async def test_tool_use_non_stream_and_stream(self) -> None:
        """tool_use blocks carry input objects; streamed as input_json_delta fragments."""
        call = ScriptedToolCall(
            id="toolu_1", name="weather", arguments={"city": "Paris", "days": 3}
        )
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="Sure", tool_calls=[call]), Reply(tool_calls=[call]))
            message = Message.model_validate((await client.post(ANTHROPIC_PATH, json=an())).json())
            _, raw, _ = await collect(client, ANTHROPIC_PATH, an(stream=True))
        assert message.stop_reason == "tool_use"
        tool = message.content[1]
        assert tool.type == "tool_use"
        assert (tool.id, tool.name, tool.input) == (
            "toolu_1",
            "weather",
            {"city": "Paris", "days": 3},
        )
        parsed = anthropic_events(raw)
        start = parsed[1]
        assert start.content_block.type == "tool_use"
        assert start.index == 0
        assert start.content_block.input == {}
        fragments = [
            e.delta.partial_json
            for e in parsed
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        ]
        assert len(fragments) >= 2
        assert json.loads("".join(fragments)) == {"city": "Paris", "days": 3}
        assert parsed[-2].delta.stop_reason == "tool_use"

    @pytest.mark.anyio
    async def test_cached_tokens_not_in_input_tokens(self) -> None:
        """Anthropic reports cache reads beside input_tokens, not inside them."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("claude", Reply(text="x", usage=(100, 5), cached_input_tokens=60))
            usage = Message.model_validate(
                (await client.post(ANTHROPIC_PATH, json=an())).json()
            ).usage
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (
            40,
            60,
            5,
        )
        assert usage.cache_creation_input_tokens == 0

    @pytest.mark.parametrize(
        ("finish", "stop"),
        [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")],
    )
    @pytest.mark.anyio
    async def test_finish_reason_maps_to_stop_reason(self, finish: str, stop: str) -> None:
        """OpenAI finish reasons map to Anthropic stop reasons."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.default("claude", Reply(text="x", finish_reason=finish))
            response = await client.post(ANTHROPIC_PATH, json=an())
        assert Message.model_validate(response.json()).stop_reason == stop

    @pytest.mark.anyio
    async def test_echo_of_block_content(self) -> None:
        """Echo reads Anthropic content blocks of the last user message."""
        content = [{"type": "text", "text": "block"}, {"type": "text", "text": "two"}]
        body = an() | {"messages": [{"role": "user", "content": content}]}
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            response = await client.post(ANTHROPIC_PATH, json=body)
        assert response.json()["content"][0]["text"] == "echo: block two"


class TestSDKConformance:
    # Under trio the OpenAI SDK leaves its SSE generators unclosed after [DONE] and
    # trio's finalizer warns about it when they are garbage collected.
    @pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <async_generator"
        " object:pytest.PytestUnraisableExceptionWarning"
    )
    @BOTH
    @pytest.mark.anyio
    async def test_openai_sdk(self) -> None:
        """The OpenAI SDK parses text, tool calls and usage, streaming and not."""
        call = ScriptedToolCall(id="call_9", name="f", arguments={"a": [1, 2]})
        async with (
            FakeProvider() as fake,
            openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as sdk,
        ):
            fake.script("gpt", Reply(text="Hello world"), Reply(tool_calls=[call]))
            fake.script("gpt", Reply(text="streamed text here", usage=(5, 3)))
            msgs: Any = [{"role": "user", "content": "hi"}]
            first = await sdk.chat.completions.create(model="gpt", messages=msgs)
            second = await sdk.chat.completions.create(model="gpt", messages=msgs)
            stream = await sdk.chat.completions.create(
                model="gpt", messages=msgs, stream=True, stream_options={"include_usage": True}
            )
            pieces, usage = [], None
            async for chunk in stream:
                pieces += [c.delta.content or "" for c in chunk.choices]
                usage = chunk.usage or usage
        assert first.choices[0].message.content == "Hello world"
        assert first.usage is not None
        assert first.usage.total_tokens > 0
        tool_calls = second.choices[0].message.tool_calls
        assert tool_calls is not None
        assert tool_calls[0].type == "function"
        assert json.loads(tool_calls[0].function.arguments) == {"a": [1, 2]}
        assert "".join(pieces) == "streamed text here"
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (5, 3)
        assert fake.requests[0].headers["authorization"] == "Bearer k"

    @BOTH
    @pytest.mark.anyio
    async def test_anthropic_sdk(self) -> None:
        """The Anthropic SDK parses text, tool use and usage, streaming and not."""
        call = ScriptedToolCall(id="toolu_9", name="f", arguments={"deep": {"x": "y"}})
        async with (
            FakeProvider() as fake,
            anthropic.AsyncAnthropic(
                base_url=fake.anthropic_base_url, api_key="k", max_retries=0
            ) as sdk,
        ):
            fake.script("claude", Reply(text="Hello"), Reply(text="Calling", tool_calls=[call]))
            msgs: Any = [{"role": "user", "content": "hi"}]
            first = await sdk.messages.create(model="claude", max_tokens=10, messages=msgs)
            async with sdk.messages.stream(model="claude", max_tokens=10, messages=msgs) as stream:
                streamed = [text async for text in stream.text_stream]
                final = await stream.get_final_message()
        assert first.content[0].type == "text"
        assert first.content[0].text == "Hello"
        assert "".join(streamed) == "Calling"
        assert final.content[1].type == "tool_use"
        assert final.content[1].input == {"deep": {"x": "y"}}
        assert final.stop_reason == "tool_use"
        assert final.usage.output_tokens == 1

    @pytest.mark.anyio
    async def test_sdk_error_classes(self) -> None:
        """Default envelopes map to the SDKs' typed errors, headers included."""
        async with (
            FakeProvider() as fake,
            openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as oai,
            anthropic.AsyncAnthropic(
                base_url=fake.anthropic_base_url, api_key="k", max_retries=0
            ) as ant,
        ):
            fake.script("gpt", Reply(status=429, headers={"retry-after": "7"}))
            fake.script("claude", Reply(status=529))
            msgs: Any = [{"role": "user", "content": "hi"}]
            with pytest.raises(openai.RateLimitError) as oa_error:
                await oai.chat.completions.create(model="gpt", messages=msgs)
            with pytest.raises(anthropic.OverloadedError) as an_error:
                await ant.messages.create(model="claude", max_tokens=5, messages=msgs)
        assert oa_error.value.code == "rate_limit_exceeded"
        assert oa_error.value.response.headers["retry-after"] == "7"
        assert an_error.value.body == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": an_error.value.body["request_id"],  # type: ignore[index]
        }

    @pytest.mark.anyio
    async def test_sdk_stream_errors(self) -> None:
        """In-stream errors surface as SDK errors on both APIs."""
        async with (
            FakeProvider() as fake,
            openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as oai,
            anthropic.AsyncAnthropic(
                base_url=fake.anthropic_base_url, api_key="k", max_retries=0
            ) as ant,
        ):
            fake.script("gpt", Reply(stream_error={"message": "boom"}, stream_error_after=1))
            fake.script("claude", Reply(stream_error={}, stream_error_after=1))
            msgs: Any = [{"role": "user", "content": "hi"}]
            seen: list[Any] = []

            async def read_openai() -> None:
                stream = await oai.chat.completions.create(model="gpt", messages=msgs, stream=True)
                async for chunk in stream:
                    seen.append(chunk)

            async def read_anthropic() -> None:
                async with ant.messages.stream(model="claude", max_tokens=5, messages=msgs) as s:
                    seen.extend([event async for event in s])

            with pytest.raises(openai.APIError, match="boom"):
                await read_openai()
            assert len(seen) == 2  # role chunk and one content chunk
            with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
                await read_anthropic()

    @pytest.mark.anyio
    async def test_sdk_models_listing(self) -> None:
        """Both SDKs list the seeded and scripted models."""
        async with (
            FakeProvider(models=["m1"]) as fake,
            openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as oai,
            anthropic.AsyncAnthropic(
                base_url=fake.anthropic_base_url, api_key="k", max_retries=0
            ) as ant,
        ):
            fake.default("m2", Reply())
            openai_ids = [m.id async for m in await oai.models.list()]
            anthropic_ids = [m.id async for m in await ant.models.list()]
        assert openai_ids == anthropic_ids == ["m1", "m2"]


class TestScripting:
    @pytest.mark.anyio
    async def test_fifo_then_default_then_echo(self) -> None:
        """Scripted replies pop in order, then the model default, then the global echo."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="1"), Reply(status=500))
            fake.script("gpt", Reply(text="3"))
            statuses, texts = [], []
            for _ in range(3):
                response = await client.post(OPENAI_PATH, json=oa())
                statuses.append(response.status_code)
                texts.append(
                    response.json().get("choices", [{}])[0].get("message", {}).get("content")
                )
            echo = (await client.post(OPENAI_PATH, json=oa(text="yo"))).json()
            fake.default("gpt", Reply(text="always"))
            after = [(await client.post(OPENAI_PATH, json=oa())).json() for _ in range(2)]
        assert statuses == [200, 500, 200]
        assert [texts[0], texts[2]] == ["1", "3"]
        assert echo["choices"][0]["message"]["content"] == "echo: yo"
        assert [a["choices"][0]["message"]["content"] for a in after] == ["always", "always"]

    @pytest.mark.anyio
    async def test_queues_are_per_model_and_global_default(self) -> None:
        """Each model has its own queue; default(None, ...) covers every other model."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("a", Reply(text="for a"))
            fake.default(None, Reply(status=503))
            b = await client.post(OPENAI_PATH, json=oa("b"))
            a = await client.post(OPENAI_PATH, json=oa("a"))
            a_again = await client.post(OPENAI_PATH, json=oa("a"))
        assert b.status_code == 503
        assert a.json()["choices"][0]["message"]["content"] == "for a"
        assert a_again.status_code == 503

    @pytest.mark.anyio
    async def test_clear_forgets_requests_scripts_and_defaults(self) -> None:
        """clear() drops recorded requests, queued replies and defaults."""
        async with (
            FakeProvider(models=["seed"]) as fake,
            httpx.AsyncClient(base_url=fake.url) as client,
        ):
            fake.script("gpt", Reply(status=500))
            fake.default("gpt", Reply(status=500))
            await client.post(OPENAI_PATH, json=oa("other"))
            fake.clear()
            assert fake.requests == []
            response = await client.post(OPENAI_PATH, json=oa())
            listing = (await client.get("/v1/models")).json()
        assert response.status_code == 200
        assert [m["id"] for m in listing["data"]] == ["seed"]
        assert len(fake.requests) == 2

    def test_reply_validation(self) -> None:
        """Reply.chunks and ping_every must be at least 1; Reply is frozen."""
        with pytest.raises(ValueError, match="chunks"):
            Reply(chunks=0)
        with pytest.raises(ValueError, match="ping_every"):
            Reply(ping_every=0)
        with pytest.raises(AttributeError):
            Reply().text = "x"  # type: ignore[misc]


class TestRecording:
    @pytest.mark.anyio
    async def test_records_everything(self) -> None:
        """Method, path, api, model, headers, bodies, stream flag and clock time are kept."""
        ticks = iter([10.0, 20.0])
        async with (
            FakeProvider(clock=lambda: next(ticks)) as fake,
            httpx.AsyncClient(base_url=fake.url) as client,
        ):
            fake.script("gpt", Reply(status=500))
            await client.post(
                OPENAI_PATH + "?x=1",
                json=oa(),
                headers={"X-Custom": "A", "Authorization": "Bearer s"},
            )
            await client.post(ANTHROPIC_PATH, json=an(stream=True))
        first, second = fake.requests
        assert isinstance(first, RecordedRequest)
        assert (first.method, first.path, first.api, first.model) == (
            "POST",
            OPENAI_PATH,
            "openai",
            "gpt",
        )
        assert first.headers["x-custom"] == "A"
        assert first.headers["authorization"] == "Bearer s"
        assert first.body == oa()
        assert json.loads(first.raw_body) == oa()
        assert (first.stream, first.time) == (False, 10.0)
        assert (second.api, second.model, second.stream, second.time) == (
            "anthropic",
            "claude",
            True,
            20.0,
        )
        assert fake.requests_for("claude") == [second]

    @pytest.mark.anyio
    async def test_non_json_body_is_400(self) -> None:
        """A non-JSON body gets a 400 JSON error and is recorded with body None."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            oa_response = await client.post(OPENAI_PATH, content=b"{nope")
            an_response = await client.post(ANTHROPIC_PATH, content=b"[]")
        assert oa_response.status_code == 400
        assert oa_response.json()["error"]["type"] == "invalid_request_error"
        assert an_response.status_code == 400
        assert an_response.json()["error"]["type"] == "invalid_request_error"
        assert [(r.body, r.raw_body, r.model) for r in fake.requests] == [
            (None, b"{nope", None),
            ([], b"[]", None),
        ]

    @pytest.mark.anyio
    async def test_missing_fields_are_400(self) -> None:
        """Requests without model, messages or (Anthropic) max_tokens are rejected."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.default(None, Reply(text="never"))
            no_model = await client.post(OPENAI_PATH, json={"messages": []})
            no_messages = await client.post(OPENAI_PATH, json={"model": "gpt"})
            body = an()
            del body["max_tokens"]
            no_max = await client.post(ANTHROPIC_PATH, json=body)
        assert [r.status_code for r in (no_model, no_messages, no_max)] == [400, 400, 400]
        assert "max_tokens" in no_max.json()["error"]["message"]

    @pytest.mark.anyio
    async def test_unknown_path_is_404(self) -> None:
        """Unknown paths get a 404 JSON error and are recorded as api 'unknown'."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            response = await client.post("/v1/embeddings", json={"model": "gpt"})
            wrong_method = await client.get(OPENAI_PATH)
        assert response.status_code == 404
        assert "Unknown request URL" in response.json()["error"]["message"]
        assert wrong_method.status_code == 404
        assert [r.api for r in fake.requests] == ["unknown", "unknown"]
        assert fake.requests[0].model == "gpt"


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
