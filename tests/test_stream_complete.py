"""One rule for a complete stream on both wire formats and both HTTP implementations.

A stream whose content and finish reason arrived is complete, whatever happens to its tail
(the usage chunk, ``[DONE]``, ``message_stop``); a stream cut before its finish reason is not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tokenhub import Hub, Usage
from tokenhub.errors import StreamInterrupted
from tokenhub.providers import Capabilities
from tokenhub.testing import FakeClock, FakeProvider, Reply

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tokenhub import Chunk
    from tokenhub.providers import Call

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]
UPSTREAM = {"openai": "gpt-up", "anthropic": "claude-up"}
#: How many tail events carry the finish reason and the usage: the terminator comes next.
BEFORE_TERMINATOR = {"openai": 2, "anthropic": 1}


def config(fake: FakeProvider, wire: str, http_impl: str) -> dict[str, Any]:
    """``primary`` speaks ``wire``; ``backup`` (OpenAI, pricier) is its fallback."""
    common = {"api_key": "sk-test-abcdefgh12345678", "http": http_impl}
    return {
        "providers": {
            "openai": {"kind": "openai", "base_url": fake.openai_base_url, **common},
            "anthropic": {"kind": "anthropic", "base_url": fake.anthropic_base_url, **common},
        },
        "models": {
            "primary": {
                "provider": wire,
                "upstream": UPSTREAM[wire],
                "pricing": {"input": 1, "output": 1},
            },
            "backup": {"provider": "openai", "pricing": {"input": 9, "output": 9}},
        },
        "routing": {"mode": "cheap"},
        "failover": {"max_retries": 0},
    }


async def collect(hub: Hub) -> tuple[str, Any]:
    stream = hub.stream(HELLO)
    text = "".join([c.text async for c in stream])
    return text, stream.response


class TestTerminatorLost:
    async def test_closed_without_terminator(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A stream closed cleanly after its finish reason and usage, without [DONE] or message_stop, is complete."""
        fake.script(UPSTREAM[wire], Reply(text="all of it", usage=(5, 3), no_done=True))
        async with Hub.from_config(config(fake, wire, http_impl), clock=FakeClock()) as hub:
            text, r = await collect(hub)
        assert ("all of it", "stop", "primary") == (text, r.finish_reason, r.model)
        assert r.usage is not None
        assert (5, 3) == (r.usage.input_tokens, r.usage.output_tokens)
        assert r.cost_usd == pytest.approx(8 / 1e6)

    async def test_cut_before_terminator(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A connection cut mid-body after the finish reason and usage is a complete answer."""
        reply = Reply(text="all of it", usage=(5, 3), cut_tail_after=BEFORE_TERMINATOR[wire])
        fake.script(UPSTREAM[wire], reply)
        async with Hub.from_config(config(fake, wire, http_impl), clock=FakeClock()) as hub:
            text, r = await collect(hub)
        assert ("all of it", "stop", "primary") == (text, r.finish_reason, r.model)
        assert r.usage is not None
        assert (5, 3) == (r.usage.input_tokens, r.usage.output_tokens)
        assert r.trace is not None
        assert ["ok"] == [a.outcome for a in r.trace.attempts]

    async def test_non_stop_finish_reason_survives(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """The finish reason of a stream that lost its terminator is the one it sent (length here)."""
        reply = Reply(text="cut short", finish_reason="length", no_done=True)
        fake.script(UPSTREAM[wire], reply)
        async with Hub.from_config(config(fake, wire, http_impl), clock=FakeClock()) as hub:
            _, r = await collect(hub)
        assert "length" == r.finish_reason


class TestUsageLost:
    async def test_openai_usage_chunk_cut_off(self, fake: FakeProvider, http_impl: str) -> None:
        """OpenAI cut after the finish chunk, before the usage chunk: complete, usage and cost unknown."""
        fake.script(UPSTREAM["openai"], Reply(text="all of it", cut_tail_after=1))
        async with Hub.from_config(config(fake, "openai", http_impl), clock=FakeClock()) as hub:
            text, r = await collect(hub)
        assert ("all of it", "stop") == (text, r.finish_reason)
        assert (None, None) == (r.usage, r.cost_usd)
        assert r.trace is not None
        assert (None, None) == (r.trace.attempts[-1].usage, r.trace.attempts[-1].cost_usd)

    async def test_openai_garbled_tail(self, fake: FakeProvider, http_impl: str) -> None:
        """An OpenAI stream whose tail after the finish chunk is not JSON is complete, usage unknown."""
        body = (
            'data: {"choices":[{"index":0,"delta":{"content":"done"},"finish_reason":null}]}\n\n'
            'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
            "data: {not json\n\n"
        )
        headers = {"content-type": "text/event-stream"}
        fake.script(UPSTREAM["openai"], Reply(body=body, headers=headers))
        async with Hub.from_config(config(fake, "openai", http_impl), clock=FakeClock()) as hub:
            text, r = await collect(hub)
        assert ("done", "stop", None) == (text, r.finish_reason, r.usage)

    async def test_anthropic_usage_known_without_message_stop(
        self, fake: FakeProvider, http_impl: str
    ) -> None:
        """Anthropic: input from message_start and output from message_delta make the usage known."""
        reply = Reply(text="all of it", usage=(40, 3), cached_input_tokens=10, no_done=True)
        fake.script(UPSTREAM["anthropic"], reply)
        cfg = config(fake, "anthropic", http_impl)
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            _, r = await collect(hub)
        assert r.usage is not None
        assert (40, 3, 10) == (
            r.usage.input_tokens,
            r.usage.output_tokens,
            r.usage.cached_input_tokens,
        )


class TestNoFinishReason:
    async def test_cut_before_finish_after_chunks(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """Cut after the content but before the finish reason: incomplete (rescue off: raised)."""
        fake.script(UPSTREAM[wire], Reply(text="all of it", cut_tail_after=0))
        cfg = {**config(fake, wire, http_impl), "failover": {"continue_streams": "off"}}
        async with Hub.from_config(cfg, clock=FakeClock()) as hub:
            stream = hub.stream(HELLO)
            with pytest.raises(StreamInterrupted) as info:
                _ = [c async for c in stream]
        assert "all of it" == info.value.partial_text
        assert "primary" == info.value.model

    async def test_cut_before_finish_before_chunks_fails_over(
        self, fake: FakeProvider, wire: str, http_impl: str
    ) -> None:
        """A stream cut before its finish reason and before any chunk fails over to the backup."""
        fake.script(UPSTREAM[wire], Reply(text="", cut_tail_after=0))
        async with Hub.from_config(config(fake, wire, http_impl), clock=FakeClock()) as hub:
            text, r = await collect(hub)
        assert ("backup", [UPSTREAM[wire], "backup"]) == (r.model, [q.model for q in fake.requests])
        assert text.startswith("echo: ")


class UsageAfterFinish:
    """A third-party adapter that sends its usage in a chunk of its own after the finish chunk."""

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities()

    async def send(self, call: Call) -> Any:  # pragma: no cover - streams only
        raise NotImplementedError

    async def stream(self, call: Call) -> AsyncIterator[Chunk]:
        yield call.chunk(text="hello")
        yield call.chunk(finish_reason="stop")
        yield call.chunk(usage=Usage(input_tokens=2, output_tokens=1))

    async def aclose(self) -> None:
        return None


async def test_usage_only_chunk_after_the_finish_chunk() -> None:
    """The engine takes a finish chunk followed by a usage-only chunk as a complete stream."""
    cfg = {"models": {"local": {"provider": "mine"}}}
    async with Hub.from_config(cfg, providers={"mine": UsageAfterFinish()}) as hub:
        stream = hub.stream(HELLO, model="local")
        chunks = [c async for c in stream]
    assert ["stop", None] == [c.finish_reason for c in chunks[1:]]
    assert ("hello", "stop") == (stream.response.text, stream.response.finish_reason)
    assert Usage(input_tokens=2, output_tokens=1) == stream.response.usage
