"""The fake's wire formats: OpenAI and Anthropic bodies and streams, checked against the SDKs."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from tests.testing.helpers import (
    ANTHROPIC_PATH,
    BOTH,
    OPENAI_PATH,
    an,
    anthropic_events,
    chunks,
    collect,
    data_events,
    oa,
    text_of,
)
from tokenhub.testing import FakeProvider, Reply, ScriptedToolCall


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
