"""Stream rescue on the defaults: a stream broken after chunks is finished, honestly, or raised.

Every test runs on both HTTP implementations and both wire formats. On the
OpenAI wire the fallback has no prefill, so the answer is regenerated and
checked against what was delivered; on the Anthropic wire the fallback
continues the delivered text (the FakeProvider, like the API, treats a trailing
assistant message as the start of its answer).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tokenhub import Hub
from tokenhub.errors import StreamInterrupted
from tokenhub.routing._rescue import CONTINUE
from tokenhub.testing import FakeClock, FakeProvider, Reply, ScriptedToolCall

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Tell me a story"}]
STORY = "Once upon a time there was a fox who lived in a wood."
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def config(
    fake: FakeProvider,
    wire: str,
    http: str,
    *names: str,
    failover: dict[str, Any] | None = None,
    read: float | None = None,
    capabilities: list[str] | None = None,
) -> dict[str, Any]:
    """Models m1, m2, ... in that order (cheapest first) on one provider of the given wire."""
    url = fake.openai_base_url if wire == "openai" else fake.anthropic_base_url
    provider: dict[str, Any] = {"kind": wire, "base_url": url, "http": http, "api_key": "sk-t"}
    if read is not None:
        provider["timeouts"] = {"read": read}
    models: dict[str, Any] = {
        n: {"provider": "p", "pricing": {"input": i + 1, "output": i + 1}}
        for i, n in enumerate(names or ("m1", "m2"))
    }
    if capabilities is not None:
        for m in models.values():
            m["capabilities"] = capabilities
    cfg = {"providers": {"p": provider}, "models": models, "routing": {"mode": "cheap"}}
    if failover is not None:
        cfg["failover"] = failover
    return cfg


def seen(fake: FakeProvider) -> list[str | None]:
    return [r.model for r in fake.requests]


async def read_all(hub: Hub, **options: Any) -> tuple[str, Any]:
    stream = hub.stream(HELLO, **options)
    text = "".join([c.text async for c in stream])
    return text, stream


class TestRescued:
    @pytest.mark.parametrize(
        "fault",
        [
            Reply(text=STORY, cut_after=3),
            Reply(text=STORY, malformed_after=3),
            Reply(text=STORY, stream_error={"type": "server_error"}, stream_error_after=3),
        ],
        ids=["cut", "malformed", "in-stream-error"],
    )
    async def test_a_broken_stream_becomes_the_whole_answer(
        self, fake: FakeProvider, wire: str, http_impl: str, fault: Reply
    ) -> None:
        """Cut, corrupted or errored after chunks, the answer is finished by the fallback, exactly."""
        fake.script("m1", fault)
        fake.default("m2", Reply(text=STORY))
        async with Hub.from_config(config(fake, wire, http_impl), clock=FakeClock()) as hub:
            text, stream = await read_all(hub)
        assert STORY == text == stream.response.text
        assert ("m2", "stop") == (stream.response.model, stream.response.finish_reason)
        trace = stream.response.trace
        assert ["stream_interrupted", "ok"] == [a.outcome for a in trace.attempts]
        (splice,) = trace.splices
        method = "regenerate" if wire == "openai" else "prefill"
        assert ("m1", "m2", method) == (splice.broken, splice.model, splice.method)
        assert STORY.startswith(STORY[: splice.offset])
        assert 0 < splice.offset < len(STORY)
        assert not stream.response.unverified

    async def test_a_stall_is_rescued(self, fake: FakeProvider, wire: str, http_impl: str) -> None:
        """A stream that stalls after chunks (the read timeout fires) is finished by the fallback."""
        fake.script("m1", Reply(text=STORY, stall_after=2))
        fake.default("m2", Reply(text=STORY))
        cfg = config(fake, wire, http_impl, read=0.3)
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            text, stream = await read_all(hub)
        assert (STORY, "m2") == (text, stream.response.model)

    async def test_prefill_sends_the_delivered_text_without_trailing_space(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """The prefill is the delivered text less its trailing space, which is not repeated."""
        fake.script("m1", Reply(text=STORY, cut_after=2))
        fake.script("m2", Reply(text=" a time."))
        cfg = config(fake, wire, http_impl, capabilities=["prefill"])
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            text, stream = await read_all(hub)
        assert "Once upon a time." == text
        sent = fake.requests[-1].body["messages"][-1]
        assert ("assistant", "Once upon") == (sent["role"], _text(sent["content"]))
        assert "prefill" == stream.response.trace.splices[0].method

    async def test_a_rejected_prefill_is_regenerated_and_checked(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A model that refuses the prefill gets the request again; its answer is checked."""
        rejected = Reply(
            status=400,
            body={
                "error": {
                    "message": "This model does not support assistant message prefill.",
                    "type": "invalid_request_error",
                }
            },
        )
        fake.script("m1", Reply(text=STORY, cut_after=2))
        fake.script("m2", rejected, Reply(text=STORY))
        cfg = config(fake, wire, http_impl, capabilities=["prefill"])
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            text, stream = await read_all(hub)
            assert (STORY, "m2") == (text, stream.response.model)
            assert "regenerate" == stream.response.trace.splices[0].method
            # Learned: the next rescue on m2 regenerates at once.
            fake.script("m1", Reply(text=STORY, cut_after=2))
            fake.script("m2", Reply(text=STORY))
            text, stream = await read_all(hub)
        assert STORY == text
        assert ["m1", "m2", "m2", "m1", "m2"] == seen(fake)

    async def test_the_only_model_can_rescue_itself(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """With no fallback, the broken model itself is asked again (a break may be a one-off)."""
        fake.script("m1", Reply(text=STORY, cut_after=3))
        fake.default("m1", Reply(text=STORY))
        async with Hub.from_config(config(fake, wire, http_impl, "m1"), clock=FakeClock()) as hub:
            text, _stream = await read_all(hub)
        assert (STORY, ["m1", "m1"]) == (text, seen(fake))

    async def test_a_cut_tool_call_is_spliced_when_regenerated_the_same(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A tool call cut mid-arguments is finished only by a regeneration making the same call."""
        call = ScriptedToolCall(id="call_1", name="f", arguments={"city": "Paris", "days": 3})
        again = ScriptedToolCall(id="call_9", name="f", arguments={"city": "Paris", "days": 3})
        fake.script("m1", Reply(tool_calls=[call], cut_after=2))
        fake.script("m2", Reply(tool_calls=[again]))
        cfg = config(fake, wire, http_impl, capabilities=["tools", "prefill"])
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            _, stream = await read_all(hub, tools=TOOLS)
        (tc,) = stream.response.tool_calls
        assert ("call_1", "f", {"city": "Paris", "days": 3}) == (tc.id, tc.name, _json(tc))
        assert "regenerate" == stream.response.trace.splices[0].method
        assert "assistant" != fake.requests[-1].body["messages"][-1]["role"]  # never prefilled


class TestNotRescued:
    async def test_a_different_answer_is_never_spliced(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """When no candidate reproduces what was delivered, StreamInterrupted is raised as before."""
        fake.script("m1", Reply(text=STORY, cut_after=3))
        fake.default("m1", Reply(text="Something else entirely."))
        fake.default("m2", Reply(text="Once upon another time."))
        cfg = config(fake, wire, http_impl, capabilities=[])  # no prefill: every rescue is checked
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            got: list[str] = []
            with pytest.raises(StreamInterrupted) as info:
                async for c in hub.stream(HELLO):
                    got.append(c.text)
        assert "".join(got) == info.value.partial_text == "Once upon a "
        trace = info.value.trace
        assert trace is not None
        outcomes = [a.outcome for a in trace.attempts]
        assert ["stream_interrupted", "diverged", "diverged"] == outcomes
        diverged = trace.attempts[1]
        assert diverged.usage is not None
        assert diverged.cost_usd is not None
        assert not trace.splices

    async def test_a_diverging_regeneration_is_dropped_at_once(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A regeneration is closed at its first differing chunk, not read to its end."""
        fake.script("m1", Reply(text=STORY, cut_after=3))
        slow = " ".join(["Different"] * 40)
        fake.script("m2", Reply(text=slow, delay_between_chunks=0.05))  # 2 s to read in full
        fake.script("m1", Reply(text="Another story."))
        cfg = config(fake, wire, http_impl, capabilities=[])
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            started = time.monotonic()
            with pytest.raises(StreamInterrupted):
                await read_all(hub)
        assert time.monotonic() - started < 1.0

    async def test_a_tool_call_with_other_arguments_is_never_spliced(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A regeneration calling the tool with other arguments is not spliced."""
        call = ScriptedToolCall(id="call_1", name="f", arguments={"city": "Paris", "days": 3})
        other = ScriptedToolCall(id="call_2", name="f", arguments={"city": "Lyon", "days": 3})
        fake.script("m1", Reply(tool_calls=[call], cut_after=2), Reply(tool_calls=[other]))
        fake.script("m2", Reply(tool_calls=[other]))
        cfg = config(fake, wire, http_impl, capabilities=["tools"])
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            with pytest.raises(StreamInterrupted) as info:
                await read_all(hub, tools=TOOLS)
        assert ("call_1", "f") == (info.value.partial_tool_calls[0].id, "f")

    async def test_off_raises_at_once(self, fake: FakeProvider, wire: str, http_impl: str) -> None:
        """With continue_streams "off", nothing is tried after the break."""
        fake.script("m1", Reply(text=STORY, cut_after=3))
        cfg = config(fake, wire, http_impl, failover={"continue_streams": "off"})
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            with pytest.raises(StreamInterrupted):
                await read_all(hub)
        assert ["m1"] == seen(fake)


class TestInstruct:
    async def test_instruct_asks_a_model_to_continue_and_marks_the_answer(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """With "instruct", when nothing verified works, a model is asked to go on: unverified."""
        fake.script("m1", Reply(text=STORY, cut_after=3), Reply(text="No."))
        fake.script("m2", Reply(text="Not this."), Reply(text="time there lived a fox."))
        cfg = config(
            fake, wire, http_impl, capabilities=[], failover={"continue_streams": "instruct"}
        )
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            text, stream = await read_all(hub)
        assert "Once upon a time there lived a fox." == text
        assert stream.response.unverified
        assert "instruct" == stream.response.trace.splices[0].method
        assert CONTINUE == _text(fake.requests[-1].body["messages"][-1]["content"])


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def _json(tc: Any) -> Any:
    import json

    return json.loads(tc.arguments)
