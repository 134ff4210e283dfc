"""The provider contract: what a third-party adapter must implement, and nothing more."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tokenhub import ChatResponse, Chunk, Hub
from tokenhub.providers import Call, Capabilities, Provider
from tokenhub.providers._base import HTTPProvider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

HELLO = [{"role": "user", "content": "Hello"}]


class Minimal:
    """A third-party adapter with exactly the four methods of the protocol."""

    def __init__(self, text: str = "minimal") -> None:
        self.text, self.closed = text, False

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(tools=True)

    async def send(self, call: Call) -> ChatResponse:
        return call.response(text=self.text, finish_reason="stop", usage=None)

    async def stream(self, call: Call) -> AsyncIterator[Chunk]:
        yield call.chunk(text=self.text)
        yield call.chunk(finish_reason="stop")

    async def aclose(self) -> None:
        self.closed = True


class TestProtocol:
    def test_the_four_methods_satisfy_it(self) -> None:
        """capabilities, send, stream and aclose make a Provider; classify is not required."""
        assert isinstance(Minimal(), Provider)
        assert not hasattr(Minimal(), "classify")

    def test_a_missing_method_does_not(self) -> None:
        """An object without aclose is not a Provider."""

        class NoClose:
            def capabilities(self, model: str) -> Capabilities:
                return Capabilities()

            async def send(self, call: Call) -> ChatResponse:
                raise NotImplementedError

            def stream(self, call: Call) -> AsyncIterator[Chunk]:
                raise NotImplementedError

        assert not isinstance(NoClose(), Provider)

    def test_built_in_adapters_keep_classify(self) -> None:
        """The built-in adapters still classify error responses, as a method of their base."""
        assert callable(HTTPProvider.classify)

    @pytest.mark.anyio
    async def test_a_minimal_provider_serves_a_hub(self) -> None:
        """A minimal adapter answers chat and stream, reports capabilities and is closed by the Hub."""
        first, second = Minimal(), Minimal("swapped")
        cfg = {"models": {"m": {"provider": "mine"}}}
        async with Hub.from_config(cfg, providers={"mine": first}) as hub:
            assert "minimal" == (await hub.chat(HELLO, model="m")).text
            assert hub.capabilities("m").tools
            assert ["m"] == [c.model for c in hub.explain(HELLO, tools=[_TOOL]).candidates]
            hub.add_provider("mine", second)
            async with hub.stream(HELLO, model="m") as s:
                assert ["swapped", ""] == [c.text async for c in s]
            assert "stop" == s.response.finish_reason
        assert (False, True) == (first.closed, second.closed)


_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
