"""The built-in adapters against the FakeProvider over real loopback HTTP."""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from tests.conftest import CANARY, config_for
from tokenhub import Hub, Usage
from tokenhub.errors import (
    AuthenticationError,
    ContentPolicyError,
    ContextOverflowError,
    ErrorClass,
    InvalidRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExhaustedError,
    RateLimitError,
    RequestError,
    StreamInterrupted,
)
from tokenhub.testing import FakeClock, FakeProvider, Reply, ScriptedToolCall

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio

MODELS = ["gpt-4o-mini", "claude-haiku", "llama-8b"]
UPSTREAM = {
    "gpt-4o-mini": "gpt-4o-mini",
    "claude-haiku": "claude-3-5-haiku-latest",
    "llama-8b": "meta-llama/Llama-3.1-8B-Instruct",
}
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def collect(hub: Hub, model: str, messages: list[dict[str, Any]] = HELLO, **kw: Any) -> Any:
    stream = hub.stream(messages, model=model, **kw)
    chunks = [c async for c in stream]
    return chunks, stream.response


class TestChat:
    @pytest.mark.parametrize("model", MODELS)
    async def test_text_usage_and_names(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """A plain answer reports text, finish reason, usage and the model and provider that answered."""
        fake.script(UPSTREAM[model], Reply(text="Hi there!", usage=(12, 3)))
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model=model, temperature=0)
        assert "Hi there!" == r.text
        assert "stop" == r.finish_reason
        assert 12 == r.usage.input_tokens if r.usage else None
        assert 3 == r.usage.output_tokens if r.usage else None
        assert model == r.model
        assert model.split("-", maxsplit=1)[0] in {"gpt", "claude", "llama"}
        assert {"gpt-4o-mini": "openai", "claude-haiku": "anthropic", "llama-8b": "vllm"}[
            model
        ] == r.provider
        assert UPSTREAM[model] == r.upstream_model
        assert r.response_id
        assert r.upstream_request_id
        sent = fake.requests[-1]
        assert UPSTREAM[model] == sent.model
        assert r.request_id == sent.headers["x-request-id"]

    async def test_openai_cost_counts_cached_tokens_at_their_price(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Cached input tokens are a subset of prompt tokens and priced at the cached rate."""
        fake.script(
            "gpt-4o-mini",
            Reply(text="ok", usage=(1000, 100), cached_input_tokens=400, reasoning_tokens=7),
        )
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model="gpt-4o-mini")
        assert (
            Usage(input_tokens=1000, output_tokens=100, cached_input_tokens=400, reasoning_tokens=7)
            == r.usage
        )
        expected = (600 * 0.15 + 400 * 0.075 + 100 * 0.60) / 1e6
        assert expected == pytest.approx(r.cost_usd)

    async def test_anthropic_usage_adds_cache_reads_to_input(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Anthropic's input_tokens exclude cache reads; tokenhub's input_tokens include them."""
        fake.script(
            "claude-3-5-haiku-latest", Reply(text="ok", usage=(100, 10), cached_input_tokens=40)
        )
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model="claude-haiku")
        assert Usage(input_tokens=100, output_tokens=10, cached_input_tokens=40) == r.usage
        assert (60 * 0.8 + 40 * 0.08 + 10 * 4.0) / 1e6 == pytest.approx(r.cost_usd)

    async def test_no_pricing_means_unknown_cost(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A model without pricing reports cost None, not a misleading zero."""
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model="llama-8b")
        assert r.cost_usd is None

    async def test_caller_request_id_is_sent_upstream(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A caller-supplied request id is used and sent as X-Request-ID."""
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model="gpt-4o-mini", request_id="abc-123")
        assert "abc-123" == r.request_id
        assert "abc-123" == fake.requests[-1].headers["x-request-id"]


class TestWire:
    async def test_openai_body_carries_every_parameter(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """OpenAI-style parameters reach the wire unchanged, extra_body merged last."""
        async with make_hub() as hub:
            await hub.chat(
                [{"role": "system", "content": "Be brief."}, *HELLO],
                model="gpt-4o-mini",
                tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                parallel_tool_calls=False,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
                },
                temperature=0.5,
                top_p=0.9,
                max_tokens=50,
                stop=["END"],
                seed=7,
                user="u1",
                extra_body={"logit_bias": {"1": 2}},
            )
        body = fake.requests[-1].body
        assert {"role": "system", "content": "Be brief."} == body["messages"][0]
        assert [WEATHER_TOOL] == body["tools"]
        assert {"type": "function", "function": {"name": "get_weather"}} == body["tool_choice"]
        assert body["parallel_tool_calls"] is False
        assert {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
        } == body["response_format"]
        assert (0.5, 0.9, 50, ["END"], 7, "u1") == (
            body["temperature"],
            body["top_p"],
            body["max_tokens"],
            body["stop"],
            body["seed"],
            body["user"],
        )
        assert {"1": 2} == body["logit_bias"]
        assert "stream" not in body
        assert f"Bearer {CANARY}" == fake.requests[-1].headers["authorization"]

    async def test_openai_stream_asks_for_usage(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Streams request include_usage so that usage and cost are known."""
        async with make_hub() as hub:
            await collect(hub, "gpt-4o-mini")
        assert {"include_usage": True} == fake.requests[-1].body["stream_options"]

    async def test_anthropic_body_lifts_system_and_translates(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """System messages go to `system`; stop becomes stop_sequences; max_tokens comes from the model."""
        async with make_hub() as hub:
            await hub.chat(
                [
                    {"role": "system", "content": "Be brief."},
                    {"role": "developer", "content": "No lists."},
                    *HELLO,
                ],
                model="claude-haiku",
                stop="END",
                temperature=0.2,
                user="u1",
                tools=[WEATHER_TOOL],
                tool_choice="required",
            )
        sent = fake.requests[-1]
        body = sent.body
        assert "Be brief.\n\nNo lists." == body["system"]
        assert [{"role": "user", "content": "Hello"}] == body["messages"]
        assert 1024 == body["max_tokens"]
        assert ["END"] == body["stop_sequences"]
        assert {"user_id": "u1"} == body["metadata"]
        assert [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": WEATHER_TOOL["function"]["parameters"],
            }
        ] == body["tools"]
        assert {"type": "any"} == body["tool_choice"]
        assert CANARY == sent.headers["x-api-key"]
        assert "2023-06-01" == sent.headers["anthropic-version"]
        assert "authorization" not in sent.headers

    async def test_adapter_options_reach_the_wire(self, fake: FakeProvider) -> None:
        """max_tokens_field renames max_tokens; anthropic options set the version and beta headers."""
        cfg = config_for(fake)
        cfg["providers"]["openai"]["options"] = {"max_tokens_field": "max_completion_tokens"}
        cfg["providers"]["anthropic"]["options"] = {
            "anthropic_version": "2024-01-01",
            "beta": ["a-1", "b-2"],
        }
        async with Hub.from_config(cfg) as hub:
            await hub.chat(HELLO, model="gpt-4o-mini", max_tokens=9)
            await hub.chat(HELLO, model="claude-haiku")
        openai_body = fake.requests[0].body
        assert (9, False) == (openai_body["max_completion_tokens"], "max_tokens" in openai_body)
        headers = fake.requests[1].headers
        assert ("2024-01-01", "a-1,b-2") == (
            headers["anthropic-version"],
            headers["anthropic-beta"],
        )
        assert headers["user-agent"].startswith("tokenhub/")

    async def test_anthropic_max_tokens_defaults_to_4096(self, fake: FakeProvider) -> None:
        """Without max_tokens from the caller or the model, Anthropic gets 4096."""
        cfg = config_for(fake)
        del cfg["models"]["claude-haiku"]["max_output_tokens"]
        async with Hub.from_config(cfg) as hub:
            await hub.chat(HELLO, model="claude-haiku")
        assert 4096 == fake.requests[-1].body["max_tokens"]

    async def test_anthropic_images(self, fake: FakeProvider, make_hub: Callable[..., Hub]) -> None:
        """Image parts become base64 or URL image blocks."""
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]
        async with make_hub() as hub:
            await hub.chat([{"role": "user", "content": content}], model="claude-haiku")
        blocks = fake.requests[-1].body["messages"][0]["content"]
        assert {"type": "text", "text": "What is this?"} == blocks[0]
        assert {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        } == blocks[1]
        assert {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/cat.jpg"},
        } == blocks[2]

    async def test_anthropic_rejects_response_format_before_sending(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A JSON response_format the adapter cannot honour fails before any request is sent."""
        async with make_hub() as hub:
            with pytest.raises(RequestError, match="response_format"):
                await hub.chat(HELLO, model="claude-haiku", response_format={"type": "json_object"})
        assert [] == fake.requests

    async def test_vllm_sends_no_auth_without_key(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """VLLM without a configured key sends no Authorization header."""
        async with make_hub() as hub:
            await hub.chat(HELLO, model="llama-8b")
        assert "authorization" not in fake.requests[-1].headers

    async def test_vllm_round_robins_base_urls(self) -> None:
        """Several vLLM base URLs take requests in turn."""
        async with FakeProvider() as a, FakeProvider() as b:
            cfg = {
                "providers": {
                    "gpu": {"kind": "vllm", "base_url": [a.openai_base_url, b.openai_base_url]}
                },
                "models": {"llama": {"provider": "gpu"}},
            }
            async with Hub.from_config(cfg) as hub:
                for _ in range(4):
                    await hub.chat(HELLO, model="llama")
                await collect(hub, "llama")
            assert (3, 2) == (len(a.requests), len(b.requests))


class TestToolCalls:
    HISTORY: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
        {"role": "user", "content": "Which is warmer?"},
    ]

    @pytest.mark.parametrize("model", MODELS)
    async def test_tool_calls_come_back(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """The model's tool calls arrive with ids, names and JSON arguments."""
        fake.script(
            UPSTREAM[model],
            Reply(
                tool_calls=[
                    ScriptedToolCall(id="call_9", name="get_weather", arguments={"city": "Paris"})
                ]
            ),
        )
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model=model, tools=[WEATHER_TOOL])
        assert "tool_calls" == r.finish_reason
        assert 1 == len(r.tool_calls)
        assert ("call_9", "get_weather", {"city": "Paris"}) == (
            r.tool_calls[0].id,
            r.tool_calls[0].name,
            r.tool_calls[0].parsed_arguments(),
        )
        assert r.to_openai()["choices"][0]["message"]["tool_calls"][0]["id"] == "call_9"

    @pytest.mark.parametrize("model", MODELS)
    async def test_streamed_tool_calls_are_reassembled(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """Tool-call fragments streamed by index rebuild the whole call, in both wire formats."""
        calls = [
            ScriptedToolCall(
                id="call_a", name="get_weather", arguments={"city": "Paris", "unit": "C"}
            ),
            ScriptedToolCall(id="call_b", name="get_weather", arguments={"city": "Rome"}),
        ]
        fake.script(UPSTREAM[model], Reply(text="Checking.", tool_calls=calls))
        async with make_hub() as hub:
            chunks, r = await collect(hub, model, tools=[WEATHER_TOOL])
        assert "tool_calls" == r.finish_reason
        assert [("call_a", {"city": "Paris", "unit": "C"}), ("call_b", {"city": "Rome"})] == [
            (t.id, t.parsed_arguments()) for t in r.tool_calls
        ]
        assert "Checking." == r.text
        assert sum(len(c.tool_calls) for c in chunks) > 2

    async def test_anthropic_history_becomes_tool_use_and_tool_result(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Assistant tool calls become tool_use blocks; tool results join one user message, ids kept."""
        async with make_hub() as hub:
            await hub.chat(self.HISTORY, model="claude-haiku", tools=[WEATHER_TOOL])
        messages = fake.requests[-1].body["messages"]
        assert 3 == len(messages)
        assert {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        } == messages[1]
        assert {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
                {"type": "text", "text": "Which is warmer?"},
            ],
        } == messages[2]

    async def test_openai_history_is_sent_as_is(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """OpenAI receives the tool-call history in its own shape."""
        async with make_hub() as hub:
            await hub.chat(self.HISTORY, model="gpt-4o-mini", tools=[WEATHER_TOOL])
        messages = fake.requests[-1].body["messages"]
        assert self.HISTORY[1]["tool_calls"] == messages[1]["tool_calls"]
        assert {"role": "tool", "content": "18C", "tool_call_id": "call_1"} == messages[2]

    async def test_anthropic_round_trip_of_its_own_tool_call(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A tool call returned by Anthropic can be fed back as history unchanged."""
        fake.script(
            "claude-3-5-haiku-latest",
            Reply(
                tool_calls=[
                    ScriptedToolCall(id="toolu_1", name="get_weather", arguments={"city": "Oslo"})
                ]
            ),
        )
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model="claude-haiku", tools=[WEATHER_TOOL])
            assistant = r.to_openai()["choices"][0]["message"]
            history = [
                *HELLO,
                assistant,
                {"role": "tool", "tool_call_id": "toolu_1", "content": "-3C"},
            ]
            await hub.chat(history, model="claude-haiku", tools=[WEATHER_TOOL])
        sent = fake.requests[-1].body["messages"]
        assert {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "get_weather",
            "input": {"city": "Oslo"},
        } == sent[1]["content"][0]
        assert "toolu_1" == sent[2]["content"][0]["tool_use_id"]


class TestStream:
    @pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku"])
    async def test_finished_streams_reuse_the_connection(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """A stream read to its end hands its connection back: three streams, one connection."""
        async with make_hub() as hub:
            for _ in range(3):
                _ = [c async for c in hub.stream([{"role": "user", "content": "hi"}], model=model)]
            await hub.chat([{"role": "user", "content": "hi"}], model=model)
        assert 1 == fake.connections

    @pytest.mark.parametrize("model", MODELS)
    async def test_chunks_then_final_response(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """Chunks concatenate to the answer; the last carries finish reason and usage; response matches."""
        fake.script(UPSTREAM[model], Reply(text="Once upon a time, there was a fox.", usage=(9, 8)))
        async with make_hub() as hub:
            chunks, r = await collect(hub, model)
        assert "Once upon a time, there was a fox." == "".join(c.text for c in chunks)
        assert len(chunks) > 3
        assert all(c.finish_reason is None for c in chunks[:-1])
        assert "stop" == chunks[-1].finish_reason
        assert (
            (9, 8) == (chunks[-1].usage.input_tokens, chunks[-1].usage.output_tokens)
            if chunks[-1].usage
            else None
        )
        assert "Once upon a time, there was a fox." == r.text
        assert r.usage == chunks[-1].usage
        assert {c.request_id for c in chunks} == {r.request_id}

    async def test_async_with_closes_early(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Leaving `async with` after one chunk releases the stream; the hub stays usable."""
        fake.script("gpt-4o-mini", Reply(text="one two three four five"))
        async with make_hub() as hub:
            async with hub.stream(HELLO, model="gpt-4o-mini") as stream:
                async for _ in stream:
                    break
            with pytest.raises(RuntimeError, match="not finished"):
                _ = stream.response
            r = await hub.chat(HELLO, model="gpt-4o-mini")
        assert r.text

    @pytest.mark.parametrize("model", MODELS)
    async def test_cut_after_chunks_raises_stream_interrupted_with_partial(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """A stream cut after delivered chunks raises StreamInterrupted carrying the partial text."""
        fake.script(UPSTREAM[model], Reply(text="alpha beta gamma delta", cut_after=2))
        got: list[str] = []
        async with make_hub(failover={"continue_streams": "off"}) as hub:
            with pytest.raises(StreamInterrupted) as info:
                async for c in hub.stream(HELLO, model=model):
                    got.append(c.text)
        assert "".join(got) == info.value.partial_text
        assert info.value.partial_text.startswith("alpha")
        assert ErrorClass.STREAM_INTERRUPTED == info.value.error_class

    @pytest.mark.parametrize("model", MODELS)
    async def test_cut_before_any_chunk_is_a_provider_failure(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """A stream cut before anything was delivered is an ordinary (retryable) provider error."""
        fake.script(UPSTREAM[model], Reply(text="alpha beta", cut_after=0))
        async with make_hub() as hub:
            with pytest.raises(ProviderUnavailableError) as info:
                await collect(hub, model)
        assert not isinstance(info.value, StreamInterrupted)
        assert info.value.error_class.retryable

    @pytest.mark.parametrize("model", MODELS)
    async def test_malformed_chunk_is_never_passed_on(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """A malformed chunk ends the stream with StreamInterrupted; no garbage reaches the caller."""
        fake.script(UPSTREAM[model], Reply(text="alpha beta gamma", malformed_after=1))
        got: list[str] = []
        async with make_hub(failover={"continue_streams": "off"}) as hub:
            with pytest.raises(StreamInterrupted):
                async for c in hub.stream(HELLO, model=model):
                    got.append(c.text)
        assert "not json" not in "".join(got)

    async def test_openai_without_done_but_complete_is_accepted(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A stream that closes without [DONE] after its finish reason and usage is finalised at once."""
        fake.script("gpt-4o-mini", Reply(text="all here", no_done=True))
        async with make_hub() as hub:
            _, r = await collect(hub, "gpt-4o-mini")
        assert ("all here", "stop") == (r.text, r.finish_reason)
        assert r.usage is not None

    async def test_anthropic_without_message_stop_is_complete(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """An Anthropic stream that closes after message_delta (stop reason, usage) is complete."""
        fake.script("claude-3-5-haiku-latest", Reply(text="all here", no_done=True))
        async with make_hub() as hub:
            _, r = await collect(hub, "claude-haiku")
        assert ("all here", "stop") == (r.text, r.finish_reason)
        assert r.usage is not None

    @pytest.mark.parametrize("model", MODELS)
    async def test_in_stream_error_is_classified(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """An error event inside a 200 stream before any text raises its classified error."""
        upstream = UPSTREAM[model]
        error = {"type": "overloaded_error", "message": "Overloaded"}
        fake.script(upstream, Reply(text="x y", stream_error=error, stream_error_after=0))
        async with make_hub() as hub:
            with pytest.raises(ProviderUnavailableError) as info:
                await collect(hub, model)
        assert ErrorClass.OVERLOADED == info.value.error_class

    async def test_in_stream_error_after_text_carries_partial(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """An Anthropic error event after text raises StreamInterrupted naming the original class."""
        fake.script(
            "claude-3-5-haiku-latest",
            Reply(
                text="a b c d",
                stream_error={"type": "overloaded_error", "message": "Overloaded"},
                stream_error_after=2,
            ),
        )
        async with make_hub(failover={"continue_streams": "off"}) as hub:
            with pytest.raises(StreamInterrupted) as info:
                await collect(hub, "claude-haiku")
        assert "overloaded" == info.value.code
        assert info.value.partial_text

    async def test_pings_are_ignored(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Anthropic pings between chunks do not disturb the answer."""
        fake.script("claude-3-5-haiku-latest", Reply(text="a b c d e f", ping_every=1))
        async with make_hub() as hub:
            _, r = await collect(hub, "claude-haiku")
        assert "a b c d e f" == r.text

    async def test_stream_error_status_before_body(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A non-200 status on a stream request raises the classified error before any chunk."""
        fake.script("gpt-4o-mini", Reply(status=429, headers={"retry-after": "3"}))
        async with make_hub() as hub:
            with pytest.raises(RateLimitError) as info:
                await collect(hub, "gpt-4o-mini")
        assert 3.0 == info.value.retry_after


class TestErrors:
    @pytest.mark.parametrize("model", MODELS)
    @pytest.mark.parametrize(
        ("status", "error", "cls"),
        [
            (429, ErrorClass.RATE_LIMITED, RateLimitError),
            (401, ErrorClass.AUTH, AuthenticationError),
            (403, ErrorClass.AUTH, AuthenticationError),
            (500, ErrorClass.TRANSIENT, ProviderUnavailableError),
            (503, ErrorClass.OVERLOADED, ProviderUnavailableError),
            (404, ErrorClass.INVALID_REQUEST, InvalidRequestError),
        ],
    )
    async def test_default_error_envelopes(
        self,
        fake: FakeProvider,
        make_hub: Callable[..., Hub],
        model: str,
        status: int,
        error: ErrorClass,
        cls: type[Exception],
    ) -> None:
        """Each provider's documented error envelope maps to its class and exception type."""
        fake.script(UPSTREAM[model], Reply(status=status))
        async with make_hub() as hub:
            with pytest.raises(cls) as info:
                await hub.chat(HELLO, model=model)
        assert error == info.value.error_class  # type: ignore[attr-defined]
        assert status == info.value.status  # type: ignore[attr-defined]

    async def test_anthropic_529_is_overloaded(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Anthropic's 529 overloaded_error is overloaded, not a rate limit."""
        fake.script("claude-3-5-haiku-latest", Reply(status=529))
        async with make_hub() as hub:
            with pytest.raises(ProviderUnavailableError) as info:
                await hub.chat(HELLO, model="claude-haiku")
        assert ErrorClass.OVERLOADED == info.value.error_class

    async def test_rate_limit_carries_retry_after(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """retry-after-ms wins over retry-after and is reported in seconds."""
        fake.script(
            "gpt-4o-mini", Reply(status=429, headers={"retry-after": "9", "retry-after-ms": "1500"})
        )
        async with make_hub() as hub:
            with pytest.raises(RateLimitError) as info:
                await hub.chat(HELLO, model="gpt-4o-mini")
        assert 1.5 == info.value.retry_after

    async def test_insufficient_quota_is_not_a_rate_limit(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """OpenAI's 429 insufficient_quota is quota_exhausted."""
        body = {
            "error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            }
        }
        fake.script("gpt-4o-mini", Reply(status=429, body=body))
        async with make_hub() as hub:
            with pytest.raises(QuotaExhaustedError):
                await hub.chat(HELLO, model="gpt-4o-mini")

    @pytest.mark.parametrize(
        ("model", "body", "numbers"),
        [
            (
                "gpt-4o-mini",
                {
                    "error": {
                        "message": "This model's maximum context length is 8192 tokens. However, you requested 9120 tokens (8120 in the messages, 1000 in the completion).",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": "context_length_exceeded",
                    }
                },
                (8192, 8120, 1000),
            ),
            (
                "claude-haiku",
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "prompt is too long: 208310 tokens > 200000 maximum",
                    },
                },
                (200000, 208310, None),
            ),
            (
                "llama-8b",
                {
                    "object": "error",
                    "message": "This model's maximum context length is 32768 tokens. However, you requested 41648 tokens (37552 in the messages, 4096 in the completion).",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
                (32768, 37552, 4096),
            ),
            (
                "llama-8b",
                {
                    "error": {
                        "message": "The prompt (total length 25938) is too long to fit into the model (context length 4096).",
                        "type": "BadRequestError",
                        "code": 400,
                    }
                },
                (4096, 25938, None),
            ),
        ],
    )
    async def test_context_overflow_with_numbers(
        self,
        fake: FakeProvider,
        make_hub: Callable[..., Hub],
        model: str,
        body: dict[str, Any],
        numbers: tuple[int | None, ...],
    ) -> None:
        """Context-length messages of every provider are context_overflow, with the numbers extracted."""
        fake.script(UPSTREAM[model], Reply(status=400, body=body))
        async with make_hub() as hub:
            with pytest.raises(ContextOverflowError) as info:
                await hub.chat(HELLO, model=model)
        e = info.value
        assert numbers == (e.limit, e.prompt_tokens, e.requested_output_tokens)
        assert not e.error_class.counts_against_health

    async def test_content_filter_400(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """An Azure-style 400 content_filter is a content-policy error."""
        body = {
            "error": {
                "message": "The response was filtered",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
            }
        }
        fake.script("gpt-4o-mini", Reply(status=400, body=body))
        async with make_hub() as hub:
            with pytest.raises(ContentPolicyError):
                await hub.chat(HELLO, model="gpt-4o-mini")

    async def test_refusal_finish_reason_maps_to_content_filter(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Anthropic's refusal stop reason is reported as content_filter."""
        fake.script(
            "claude-3-5-haiku-latest",
            Reply(text="I can't help with that.", finish_reason="content_filter"),
        )
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model="claude-haiku")
        assert "content_filter" == r.finish_reason

    async def test_html_error_body_is_not_echoed(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A non-JSON error body (a CDN's HTML page) never reaches the message."""
        fake.script(
            "claude-3-5-haiku-latest",
            Reply(status=413, body="<html><body>Request Entity Too Large</body></html>"),
        )
        async with make_hub() as hub:
            with pytest.raises(ContextOverflowError) as info:
                await hub.chat(HELLO, model="claude-haiku")
        assert "<html>" not in str(info.value)

    async def test_401_echoing_the_key_is_scrubbed(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """An OpenAI 401 body that echoes the key never shows it in the error."""
        body = {
            "error": {
                "message": f"Incorrect API key provided: {CANARY}. You can find your API key at ...",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        fake.script("gpt-4o-mini", Reply(status=401, body=body))
        async with make_hub() as hub:
            with pytest.raises(AuthenticationError) as info:
                await hub.chat(HELLO, model="gpt-4o-mini")
        e = info.value
        for text in (str(e), repr(e), repr(e.args), e.message):
            assert CANARY not in text
            assert CANARY[:12] not in text
        assert e.__cause__ is None
        assert e.__context__ is None

    @pytest.mark.parametrize("model", MODELS)
    @pytest.mark.parametrize("stream", [False, True])
    async def test_redirect_is_not_followed(
        self, fake: FakeProvider, http_impl: str, model: str, *, stream: bool
    ) -> None:
        """A 307 to another host is never followed (the key stays home) and is not echoed."""
        async with FakeProvider() as elsewhere:
            other = elsewhere.url
            target = f"{other}/v1/chat/completions?key={CANARY}"
            body = f"<html>Redirecting to {target}</html>"
            fake.script(UPSTREAM[model], Reply(status=307, headers={"location": target}, body=body))
            async with Hub.from_config(config_for(fake, http_impl)) as hub:
                with pytest.raises(InvalidRequestError) as info:
                    if stream:
                        await collect(hub, model)
                    else:
                        await hub.chat(HELLO, model=model)
            assert [] == elsewhere.requests
        e = info.value
        assert (ErrorClass.INVALID_REQUEST, 307) == (e.error_class, e.status)
        assert "redirect" in e.message
        for text in (str(e), repr(e), e.message):
            assert other not in text
            assert CANARY[:12] not in text

    async def test_reset_is_provider_down(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A connection reset before any response byte is provider_down."""
        fake.script("gpt-4o-mini", Reply(reset=True))
        async with make_hub() as hub:
            with pytest.raises(ProviderUnavailableError) as info:
                await hub.chat(HELLO, model="gpt-4o-mini")
        assert ErrorClass.PROVIDER_DOWN == info.value.error_class

    async def test_connection_refused_is_provider_down(self) -> None:
        """Nothing listening on the port is provider_down."""
        async with FakeProvider() as f:
            url = f.openai_base_url
        cfg = {
            "providers": {"p": {"kind": "openai", "base_url": url}},
            "models": {"m": {"provider": "p"}},
        }
        async with Hub.from_config(cfg) as hub:
            with pytest.raises(ProviderUnavailableError) as info:
                await hub.chat(HELLO, model="m")
        assert ErrorClass.PROVIDER_DOWN == info.value.error_class

    @pytest.mark.parametrize("model", MODELS)
    async def test_silent_provider_times_out(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """A provider that never answers costs one read timeout and raises ProviderTimeoutError."""
        fake.script(UPSTREAM[model], Reply(hang=True))
        async with make_hub(read=0.2) as hub:
            with pytest.raises(ProviderTimeoutError) as info:
                await hub.chat(HELLO, model=model)
        assert isinstance(info.value, TimeoutError)

    async def test_waiting_for_a_pooled_connection_is_bounded(
        self, fake: FakeProvider, clock: FakeClock, http_impl: str
    ) -> None:
        """With the pool full, a request waits `timeouts.pool` then times out, on both HTTP stacks.

        (aiohttp bounds the wait and the connect together, by their sum.)
        """
        fake.script("gpt-4o-mini", Reply(hang=True))
        cfg = config_for(fake, http_impl, pool=0.2, connect=0.2, read=30)
        cfg["providers"]["openai"]["max_connections"] = 1
        async with Hub.from_config(cfg, clock=clock) as hub, anyio.create_task_group() as tg:
            # The first request takes the only connection and keeps it.
            tg.start_soon(partial(hub.chat, HELLO, model="gpt-4o-mini"))
            await wait_all_tasks_blocked()
            with anyio.fail_after(5), pytest.raises(ProviderTimeoutError) as info:
                await hub.chat(HELLO, model="gpt-4o-mini")
            tg.cancel_scope.cancel()
        assert "timeout" in info.value.message
        assert 1 == len(fake.requests)

    async def test_stall_mid_stream_times_out_as_interruption(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A stream that stalls after chunks raises StreamInterrupted once the read timeout passes."""
        fake.script("gpt-4o-mini", Reply(text="a b c d", stall_after=2))
        async with make_hub(read=0.2) as hub:
            with pytest.raises(StreamInterrupted) as info:
                await collect(hub, "gpt-4o-mini")
        assert "provider_down" == info.value.code

    async def test_200_with_unreadable_body(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A 200 whose body is not JSON is a transient provider failure, not a crash."""
        fake.script("gpt-4o-mini", Reply(body="<html>oops</html>"))
        async with make_hub() as hub:
            with pytest.raises(ProviderUnavailableError) as info:
                await hub.chat(HELLO, model="gpt-4o-mini")
        assert ErrorClass.TRANSIENT == info.value.error_class

    @pytest.mark.parametrize(
        ("model", "body"),
        [
            ("gpt-4o-mini", {"choices": [{"message": {"tool_calls": [{"id": "c1"}]}}]}),
            ("claude-haiku", {"content": [{"type": "tool_use"}]}),
            ("claude-haiku", {"id": "msg_1"}),
        ],
    )
    async def test_200_with_malformed_json_shape(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str, body: dict[str, Any]
    ) -> None:
        """A 200 JSON body missing required fields is a transient provider failure."""
        fake.script(UPSTREAM[model], Reply(body=body))
        async with make_hub() as hub:
            with pytest.raises(ProviderUnavailableError) as info:
                await hub.chat(HELLO, model=model)
        assert ErrorClass.TRANSIENT == info.value.error_class

    async def test_errors_pickle_with_their_fields(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Provider errors survive pickling with every field."""
        import pickle

        fake.script("gpt-4o-mini", Reply(status=429, headers={"retry-after": "2"}))
        async with make_hub() as hub:
            with pytest.raises(RateLimitError) as info:
                await hub.chat(HELLO, model="gpt-4o-mini")
        clone = pickle.loads(pickle.dumps(info.value))
        assert (type(info.value), str(info.value), clone.retry_after, clone.request_id) == (
            type(clone),
            str(clone),
            2.0,
            info.value.request_id,
        )

    async def test_missing_env_key_fails_before_sending(
        self, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unset environment variable raises CredentialError naming it, and nothing is sent."""
        from tokenhub.errors import CredentialError

        monkeypatch.delenv("TOKENHUB_TEST_KEY", raising=False)
        cfg = {
            "providers": {
                "p": {
                    "kind": "openai",
                    "base_url": fake.openai_base_url,
                    "api_key": {"env": "TOKENHUB_TEST_KEY"},
                }
            },
            "models": {"m": {"provider": "p"}},
        }
        async with Hub.from_config(cfg) as hub:
            with pytest.raises(CredentialError, match="TOKENHUB_TEST_KEY"):
                await hub.chat(HELLO, model="m")
            monkeypatch.setenv("TOKENHUB_TEST_KEY", "sk-from-env-123456")
            await hub.chat(HELLO, model="m")
        assert 1 == len(fake.requests)
        assert "Bearer sk-from-env-123456" == fake.requests[0].headers["authorization"]


def test_body_is_compact_json() -> None:
    """Request bodies are compact UTF-8 JSON (non-ASCII text is not escaped)."""
    from tokenhub.providers._base import dumps as _dumps

    assert '{"a":"日本"}' == _dumps({"a": "日本"})
    assert json.loads(_dumps({"a": [1, 2]})) == {"a": [1, 2]}


class TestScrub:
    def test_short_values_mask_only_whole_tokens(self) -> None:
        """A short secret is masked where it stands alone, without garbling other words."""
        from tokenhub._redact import scrub
        from tokenhub._secret import Secret

        assert "Incorrect API key provided: [REDACTED]." == scrub(
            "Incorrect API key provided: k.", [Secret("k")]
        )

    def test_long_values_and_fragments_are_masked(self) -> None:
        """A long secret, its distinctive prefix and suffix, and key-shaped strings are masked."""
        from tokenhub._redact import scrub
        from tokenhub._secret import Secret

        text = f"a {CANARY} b {CANARY[:10]}*** c ***{CANARY[-9:]} d sk-proj-abcdefghijklmnop"
        out = scrub(text, [Secret(CANARY)])
        assert CANARY[:8] not in out
        assert CANARY[-8:] not in out
        assert "abcdefghijklmnop" not in out

    def test_google_xai_and_query_string_keys_are_masked(self) -> None:
        """Google AIza… and xAI keys, and any key= value in a URL, are masked without registration."""
        import secrets

        from tokenhub._redact import scrub

        google = "AIza" + secrets.token_urlsafe(27)[:35]
        xai = "xai-" + secrets.token_hex(40)
        plain = secrets.token_hex(12)
        text = (
            f"bad key {google}; also {xai}. GET https://example.test/v1/models?key={plain}&alt=sse "
            f"and /x?api_key={plain} /y?foo=1&APIKEY={plain}#top"
        )
        out = scrub(text)
        for canary in (google, xai, plain):
            assert canary not in out
            assert canary[:12] not in out
        assert "?key=[REDACTED]&alt=sse" in out
        assert "?api_key=[REDACTED] " in out
        assert "&APIKEY=[REDACTED]#top" in out

    def test_look_alikes_stay_readable(self) -> None:
        """Model names and other query parameters are not mistaken for keys."""
        from tokenhub._redact import scrub

        text = "xai-grok-2-vision-1212 is unavailable; see /docs?monkey=1&keyword=2&turkey=3"
        assert text == scrub(text)
