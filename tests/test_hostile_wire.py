"""Hostile and foreign upstreams: what an adapter believes, classifies and bounds (issue 14)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.conftest import CANARY, config_for
from tokenhub import Hub, Usage
from tokenhub import _semconv as sc
from tokenhub._models import ChatRequest, Message
from tokenhub._settings import Pricing
from tokenhub.errors import (
    AuthenticationError,
    ErrorClass,
    InvalidRequestError,
    NoRouteError,
    ProviderError,
    RateLimitError,
    StreamInterrupted,
)
from tokenhub.providers._types import Call
from tokenhub.providers._wire import MAX_TOKEN_COUNT, detail_message, token_count
from tokenhub.testing import FakeClock, FakeProvider, Reply

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]
SSE = {"content-type": "text/event-stream"}
ANSWER = {"role": "assistant", "content": "fine"}


def openai_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": dict(ANSWER), "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }
    body.update(over)
    return body


def anthropic_sse(*events: dict[str, Any], stop: bool = True) -> str:
    out = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]
    if stop:
        out.append('event: message_stop\ndata: {"type": "message_stop"}\n\n')
    return "".join(out)


def message_start(**usage: Any) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {"id": "msg_1", "model": "claude-3-5-haiku-latest", "usage": usage},
    }


TEXT = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}


def message_delta(**usage: Any) -> dict[str, Any]:
    return {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}


def two_models(fake: FakeProvider, http: str) -> dict[str, Any]:
    """Two OpenAI models on one provider, m1 tried first (cheaper)."""
    return {
        "failover": {"max_retries": 0},
        "providers": {
            "o": {
                "kind": "openai",
                "base_url": fake.openai_base_url,
                "api_key": CANARY,
                "http": http,
            }
        },
        "models": {
            "m1": {"provider": "o", "pricing": {"input": 1, "output": 1}},
            "m2": {"provider": "o", "pricing": {"input": 2, "output": 2}},
        },
    }


class TestUsageIsChecked:
    @pytest.mark.parametrize(
        "raw",
        [
            '{"prompt_tokens": 10, "completion_tokens": -1000000}',
            '{"prompt_tokens": 10, "completion_tokens": 1e400}',
            '{"prompt_tokens": NaN, "completion_tokens": 5}',
            '{"prompt_tokens": "10", "completion_tokens": 5}',
            '{"prompt_tokens": true, "completion_tokens": 5}',
            '{"prompt_tokens": 10, "completion_tokens": 5000000000000}',
        ],
    )
    async def test_unbelievable_openai_usage_is_unknown(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], raw: str
    ) -> None:
        """Negative, infinite, NaN, non-integer or absurd counts: the answer is kept, usage unknown."""
        body = json.dumps(openai_body(usage=None)).replace('"usage": null', f'"usage": {raw}')
        fake.script("gpt-4o-mini", Reply(body=body))
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model="gpt-4o-mini")
        assert ("fine", None, None) == (r.text, r.usage, r.cost_usd)

    async def test_unbelievable_anthropic_usage_is_unknown(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """An Anthropic answer with a negative output count keeps its text, not its usage."""
        body = {
            "id": "msg_1",
            "type": "message",
            "model": "claude-3-5-haiku-latest",
            "content": [{"type": "text", "text": "fine"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": -5},
        }
        fake.script("claude-3-5-haiku-latest", Reply(body=body))
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model="claude-haiku")
        assert ("fine", None, None) == (r.text, r.usage, r.cost_usd)

    async def test_nan_usage_in_a_stream_with_budget_and_logs(
        self, fake: FakeProvider, http_impl: str, tmp_path: Path
    ) -> None:
        """A stream whose usage is NaN is answered and logged under a budget, never a raw error."""
        cfg = config_for(fake, http_impl)
        cfg["store"] = {"path": str(tmp_path / "t.db"), "logs": {"enabled": True}}
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 1.0}]
        stream = (
            'data: {"id":"c","model":"gpt-4o-mini","choices":[{"index":0,'
            '"delta":{"content":"fine"},"finish_reason":"stop"}]}\n\n'
            'data: {"id":"c","choices":[],"usage":{"prompt_tokens":NaN,"completion_tokens":-9}}'
            "\n\ndata: [DONE]\n\n"
        )
        fake.script("gpt-4o-mini", Reply(body=stream, headers=SSE), Reply(body=openai_body()))
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            s = hub.stream(HELLO, model="gpt-4o-mini")
            assert "fine" == "".join([c.text async for c in s])
            assert (None, None) == (s.response.usage, s.response.cost_usd)
            r = await hub.chat(HELLO, model="gpt-4o-mini")
            assert r.cost_usd is not None
            assert r.cost_usd > 0

    def test_token_count_bounds(self) -> None:
        """A count is an int (or integral float) in [0, 10^9); None is absent; the rest is -1."""
        assert [None, 0, 7, 7, -1, -1, -1, -1, -1, -1] == [
            token_count(v)
            for v in (
                None,
                0,
                7,
                7.0,
                -1,
                MAX_TOKEN_COUNT,
                float("nan"),
                float("inf"),
                True,
                "7",
            )
        ]

    @pytest.mark.parametrize(
        "usage",
        [
            Usage(input_tokens=10, output_tokens=-(10**6)),
            Usage(input_tokens=10**400, output_tokens=1),
            Usage(input_tokens=-5, cached_input_tokens=-5, output_tokens=0),
        ],
    )
    def test_cost_is_never_negative_nan_or_infinite(self, usage: Usage) -> None:
        """Call.cost prices counts an adapter did not check as unknown, never below zero or infinite."""
        call = Call(
            request=ChatRequest(messages=(Message(role="user", content="hi"),)),
            model="m",
            upstream="m",
            provider="p",
            request_id="r",
            pricing=Pricing(input=1.0, output=1.0, cached_input=2.0),
        )
        assert call.cost(usage) is None


class TestMalformedSuccess:
    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"choices": []},
            {"choices": None},
            "[1, 2]",
            openai_body(choices=[{"index": 0, "message": {"content": 123}}]),
            openai_body(choices=[{"index": 0, "message": "hi"}]),
            openai_body(choices=["x"]),
            openai_body(choices=[{"message": {"content": "x", "tool_calls": [{"id": 1}]}}]),
            openai_body(model=["gpt"]),
            openai_body(created="yesterday"),
        ],
    )
    async def test_openai_malformed_body_fails_over(
        self, fake: FakeProvider, http_impl: str, body: Any
    ) -> None:
        """A 200 that is not an answer is a transient failure: counted, and the next model answers."""
        fake.script("m1", Reply(body=body))
        async with Hub.from_config(two_models(fake, http_impl), clock=FakeClock()) as hub:
            r = await hub.chat(HELLO)
            assert "m2" == r.model
            assert r.trace is not None
            first = r.trace.attempts[0]
            assert ("m1", "transient") == (first.model, first.outcome)
            assert first.message is not None
            assert "malformed response" in first.message
            assert 1.0 == hub.health()["models"]["m1"]["failure_rate"]

    @pytest.mark.parametrize(
        "body",
        [
            {"id": "msg", "content": None},
            {"id": "msg", "content": [{"type": "text", "text": 5}]},
            {"id": "msg", "content": [{"type": "tool_use", "id": "t", "name": None}]},
            {"id": 5, "content": [{"type": "text", "text": "x"}]},
        ],
    )
    async def test_anthropic_malformed_body_is_transient(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], body: Any
    ) -> None:
        """An Anthropic 200 without a content list of well-typed blocks is a transient error."""
        fake.script("claude-3-5-haiku-latest", Reply(body=body))
        async with make_hub() as hub:
            with pytest.raises(ProviderError) as caught:
                await hub.chat(HELLO, model="claude-haiku")
        assert ErrorClass.TRANSIENT == caught.value.error_class
        assert "malformed response" in caught.value.message

    async def test_stream_text_of_the_wrong_type_is_a_broken_stream(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A stream chunk whose content is a number is no text: the stream is reported broken."""
        stream = 'data: {"choices":[{"index":0,"delta":{"content":123}}]}\n\ndata: [DONE]\n\n'
        fake.script("gpt-4o-mini", Reply(body=stream, headers=SSE))
        async with make_hub() as hub:
            with pytest.raises(ProviderError) as caught:
                _ = [c async for c in hub.stream(HELLO, model="gpt-4o-mini")]
        assert "malformed stream chunk" in caught.value.message


class TestCooldownCap:
    async def test_a_huge_retry_after_is_capped(self, fake: FakeProvider, http_impl: str) -> None:
        """A Retry-After of 10^22 s cools the model down for failover.max_cooldown only."""
        cfg = two_models(fake, http_impl)
        cfg["failover"]["max_cooldown"] = 120
        fake.script("m1", Reply(status=429, headers={"retry-after": "1" + "0" * 22}))
        clock = FakeClock()
        async with Hub.from_config(cfg, clock=clock) as hub:
            assert "m2" == (await hub.chat(HELLO)).model
            assert 120.0 == hub.health()["models"]["m1"]["rate_limited_for_s"]
            clock.advance(121)
            assert "m1" == (await hub.chat(HELLO)).model

    async def test_max_cooldown_must_be_positive(self, fake: FakeProvider) -> None:
        """failover.max_cooldown of zero is a configuration error naming the key."""
        cfg = two_models(fake, "httpx")
        cfg["failover"]["max_cooldown"] = 0
        with pytest.raises(ValueError, match=r"failover\.max_cooldown"):
            Hub.from_config(cfg)


class TestMetricAttributes:
    async def test_response_models_mint_no_series(self, fake: FakeProvider) -> None:
        """100 distinct upstream model strings: one duration series, the span keeps each string."""
        reader = InMemoryMetricReader()
        fake.script("gpt-4o-mini", *(Reply(response_model=f"snapshot-{i}") for i in range(100)))
        cfg = config_for(fake, "httpx")
        async with Hub.from_config(cfg, meter_provider=MeterProvider(metric_readers=[reader])) as h:
            for _ in range(100):
                await h.chat(HELLO, model="gpt-4o-mini")
        data = reader.get_metrics_data()
        assert data is not None
        series = {
            m.name: len(m.data.data_points)
            for rm in data.resource_metrics
            for s in rm.scope_metrics
            for m in s.metrics
        }
        assert 1 == series[sc.OPERATION_DURATION]
        assert 2 == series[sc.TOKEN_USAGE]
        for rm in data.resource_metrics:
            for s in rm.scope_metrics:
                for m in s.metrics:
                    for p in m.data.data_points:
                        assert sc.RESPONSE_MODEL not in (p.attributes or {}), m.name


class TestAnthropicStreamUsage:
    async def test_message_delta_usage_wins(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A gateway sending input_tokens 0 first and the real counts in message_delta: the later wins."""
        body = anthropic_sse(
            message_start(input_tokens=0, output_tokens=1),
            TEXT,
            message_delta(input_tokens=25, output_tokens=7, cache_read_input_tokens=5),
        )
        fake.script("claude-3-5-haiku-latest", Reply(body=body, headers=SSE))
        async with make_hub() as hub:
            s = hub.stream(HELLO, model="claude-haiku")
            _ = [c async for c in s]
        assert Usage(input_tokens=30, output_tokens=7, cached_input_tokens=5) == s.response.usage

    async def test_an_interrupted_stream_keeps_its_usage(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Cut after a stop-reason-less message_delta (input_tokens 0 at the start): the error has the counts."""
        body = anthropic_sse(
            message_start(input_tokens=0),
            TEXT,
            message_delta(input_tokens=25, output_tokens=3) | {"delta": {}},
            stop=False,
        )
        fake.script("claude-3-5-haiku-latest", Reply(body=body, headers=SSE))
        async with make_hub(failover={"continue_streams": "off"}) as hub:
            with pytest.raises(StreamInterrupted) as caught:
                _ = [c async for c in hub.stream(HELLO, model="claude-haiku")]
        assert Usage(input_tokens=25, output_tokens=3) == caught.value.usage


class TestAuthScope:
    async def test_one_models_401_leaves_the_others(
        self, fake: FakeProvider, http_impl: str
    ) -> None:
        """A gateway relaying one deployment's 401 blocks that model only; its siblings answer."""
        fake.script("m1", Reply(status=401))
        async with Hub.from_config(two_models(fake, http_impl), clock=FakeClock()) as hub:
            assert "m2" == (await hub.chat(HELLO)).model
            assert "m2" == (await hub.chat(HELLO)).model
            creds = hub.health()["credentials"]
            assert {"o": {"reason": "auth", "disabled_for_s": None, "models": ["m1"]}} == creds
            assert "m2" == (await hub.chat(HELLO, model="m2")).model

    async def test_a_second_model_failing_auth_disables_the_provider(
        self, fake: FakeProvider, http_impl: str
    ) -> None:
        """Auth failures on two models of a provider: its key is bad, every model is skipped."""
        fake.script("m1", Reply(status=401))
        fake.script("m2", Reply(status=401))
        async with Hub.from_config(two_models(fake, http_impl), clock=FakeClock()) as hub:
            with pytest.raises(AuthenticationError):
                await hub.chat(HELLO)
            assert {"o": {"reason": "auth", "disabled_for_s": None}} == hub.health()["credentials"]
            with pytest.raises(NoRouteError, match=r"credential of 'o' disabled \(auth\)"):
                await hub.chat(HELLO)
            hub.enable_credential("o")
            assert {} == hub.health()["credentials"]
            assert "m1" == (await hub.chat(HELLO)).model


class TestDetailBodies:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({"detail": "Model llama-9 is not served here"}, "Model llama-9 is not served here"),
            (
                {"detail": [{"loc": ["body", "messages", 0], "msg": "field required"}]},
                "body.messages.0: field required",
            ),
        ],
    )
    async def test_fastapi_detail_is_the_message(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], body: Any, expected: str
    ) -> None:
        """A FastAPI-style {"detail": ...} error body gives its message, not just "HTTP 400"."""
        fake.script("meta-llama/Llama-3.1-8B-Instruct", Reply(status=400, body=body))
        async with make_hub() as hub:
            with pytest.raises(InvalidRequestError) as caught:
                await hub.chat(HELLO, model="llama-8b")
        assert expected == caught.value.message

    async def test_detail_is_scrubbed(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A key echoed in a detail message is scrubbed like any other error message."""
        fake.script("gpt-4o-mini", Reply(status=400, body={"detail": f"bad key {CANARY}"}))
        async with make_hub() as hub:
            with pytest.raises(InvalidRequestError) as caught:
                await hub.chat(HELLO, model="gpt-4o-mini")
        assert CANARY not in str(caught.value)
        assert caught.value.message.startswith("bad key")

    def test_detail_shapes(self) -> None:
        """Only strings and lists of {msg} give a message; five items at most."""
        many = [{"msg": str(i)} for i in range(9)]
        assert ("0; 1; 2; 3; 4", None, None, None) == (
            detail_message(many),
            detail_message({"msg": "x"}),
            detail_message([1, {"msg": 2}]),
            detail_message(""),
        )


class TestJsonAnswerToAStream:
    async def test_a_json_answer_is_one_chunk(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A server that ignores "stream" and answers JSON: one content chunk and the final one."""
        fake.script("gpt-4o-mini", Reply(body=openai_body()))
        async with make_hub() as hub:
            s = hub.stream(HELLO, model="gpt-4o-mini")
            chunks = [c async for c in s]
        assert ["fine", ""] == [c.text for c in chunks]
        assert ("stop", Usage(input_tokens=10, output_tokens=5)) == (
            s.response.finish_reason,
            s.response.usage,
        )
        assert s.trace is not None
        assert 1 == len(s.trace.attempts)

    async def test_a_json_non_answer_is_one_clear_error(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A JSON body that is no answer is raised once: no retries, nothing charged to health."""
        fake.script("gpt-4o-mini", Reply(body={"status": "ok"}), Reply(body={"status": "ok"}))
        cfg_hub = make_hub()
        async with cfg_hub as hub:
            with pytest.raises(InvalidRequestError, match="JSON body that is not an answer"):
                _ = [c async for c in hub.stream(HELLO, model="gpt-4o-mini")]
            assert 1 == len(fake.requests)
            assert hub.health()["models"]["gpt-4o-mini"]["failure_rate"] is None

    async def test_a_json_error_to_a_stream_is_classified(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """A 200 JSON error object to a stream request is classified like any error body."""
        err = {"error": {"type": "requests", "code": "rate_limit_exceeded", "message": "slow"}}
        fake.script("gpt-4o-mini", Reply(body=err))
        async with make_hub() as hub:
            with pytest.raises(RateLimitError):
                _ = [c async for c in hub.stream(HELLO, model="gpt-4o-mini")]


class TestInStreamErrorCodes:
    @pytest.mark.parametrize(
        "error",
        [
            {"code": "429", "message": "Rate limit reached. Please try again in 2s."},
            {"type": "throttling_error", "message": "Too many requests, retry after 2 seconds"},
            {"code": 429, "message": "Please try again in 2s."},
        ],
    )
    async def test_openai_string_codes_are_rate_limits(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], error: dict[str, Any]
    ) -> None:
        """An in-stream "429" or throttling_error is a rate limit with its hint, not a failure."""
        fake.script("gpt-4o-mini", Reply(stream_error=error))
        async with make_hub() as hub:
            with pytest.raises(RateLimitError) as caught:
                _ = [c async for c in hub.stream(HELLO, model="gpt-4o-mini")]
            assert 2.0 == caught.value.retry_after
            assert hub.health()["models"]["gpt-4o-mini"]["failure_rate"] is None

    async def test_anthropic_throttling_is_a_rate_limit(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """An Anthropic-format error event of type throttling_error is classed rate_limited."""
        fake.script(
            "claude-3-5-haiku-latest",
            Reply(stream_error={"type": "throttling_error", "message": "try again in 3s"}),
        )
        async with make_hub() as hub:
            with pytest.raises(RateLimitError) as caught:
                _ = [c async for c in hub.stream(HELLO, model="claude-haiku")]
        assert 3.0 == caught.value.retry_after
