"""A Hub's life: a closed Hub refuses requests; a SyncHub is safe from its first call on any thread."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal

from tests.conftest import config_for
from tokenhub import Hub, SyncHub
from tokenhub.errors import HubClosedError, StreamInterrupted
from tokenhub.testing import FakeProvider, Reply

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]


def _writers() -> int:
    return sum(t.name == "tokenhub-request-log" for t in threading.enumerate())


class TestClosedHub:
    async def test_refuses_every_request_before_any_io(
        self, fake: FakeProvider, tmp_path: Path
    ) -> None:
        """After aclose(), chat, stream, explain, usage and admin raise HubClosedError; nothing is sent."""
        cfg = config_for(fake)
        cfg["store"] = {"path": str(tmp_path / "hub.db"), "logs": {"enabled": True}}
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 10}]
        hub = Hub.from_config(cfg)
        await hub.chat(HELLO, model="gpt-4o-mini")
        await hub.aclose()
        sent, writers = len(fake.requests), _writers()
        with pytest.raises(HubClosedError, match="the Hub is closed"):
            await hub.chat(HELLO, model="gpt-4o-mini")
        with pytest.raises(HubClosedError):
            hub.stream(HELLO, model="gpt-4o-mini")
        with pytest.raises(HubClosedError):
            hub.explain(HELLO, model="gpt-4o-mini")
        with pytest.raises(HubClosedError):
            await hub.usage()
        with pytest.raises(HubClosedError):
            await hub.admin.remove_model("llama-8b")
        await hub.aclose()  # idempotent
        assert (sent, writers) == (len(fake.requests), _writers())

    async def test_a_stream_made_before_close_refuses_to_start(self, fake: FakeProvider) -> None:
        """A stream created before aclose() and iterated after it raises HubClosedError, unsent."""
        hub = Hub.from_config(config_for(fake))
        stream = hub.stream(HELLO, model="gpt-4o-mini")
        await hub.aclose()
        with pytest.raises(HubClosedError):
            async for _ in stream:
                pass
        assert [] == fake.requests

    @pytest.mark.parametrize("http", ["httpx", "aiohttp"])
    async def test_stream_in_flight_ends_with_stream_interrupted(
        self, fake: FakeProvider, tmp_path: Path, http: str
    ) -> None:
        """A stream being read when its Hub closes raises StreamInterrupted with the partial text."""
        fake.default(None, Reply(text="one two three", stall_after=1))
        cfg = config_for(fake, http=http)
        cfg["store"] = {"path": str(tmp_path / "hub.db"), "logs": {"enabled": True}}
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 10}]
        hub = Hub.from_config(cfg)
        async with hub.stream(HELLO, model="gpt-4o-mini") as stream:
            it = stream.__aiter__()
            first = await it.__anext__()
            await hub.aclose()
            with pytest.raises(StreamInterrupted) as info:
                await it.__anext__()
        assert first.text == info.value.partial_text
        assert ("openai", "gpt-4o-mini") == (info.value.provider, info.value.model)


class TestSyncHub:
    def test_first_calls_from_sixteen_threads_at_once(self) -> None:
        """16 threads making a SyncHub's first call together all get their answer."""
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(FakeProvider()) as fake,
        ):
            hub = SyncHub.from_config(config_for(fake))
            barrier = threading.Barrier(16)
            answers: list[str] = []
            errors: list[BaseException] = []

            def call() -> None:
                barrier.wait()
                try:
                    answers.append(hub.chat(HELLO, model="gpt-4o-mini").text)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=call) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            hub.close()
        assert [] == errors
        assert ["echo: Hello"] * 16 == answers

    def test_closed_sync_hub_refuses(self) -> None:
        """A closed SyncHub raises HubClosedError; closing it again does nothing."""
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(FakeProvider()) as fake,
        ):
            hub = SyncHub.from_config(config_for(fake))
            hub.chat(HELLO, model="gpt-4o-mini")
            hub.close()
            with pytest.raises(HubClosedError):
                hub.chat(HELLO, model="gpt-4o-mini")
            hub.close()
