"""The public HTTP seam: tokenhub.http, its clients, and the Hub's ``http=`` client factory."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal

import tokenhub
from tests.conftest import config_for
from tokenhub import Hub, SyncHub
from tokenhub.errors import ProviderError
from tokenhub.http import (
    AiohttpClient,
    HttpClient,
    HttpResponse,
    HttpSettings,
    HttpStream,
    HttpxClient,
    Timeouts,
    TransportError,
)
from tokenhub.testing import FakeProvider

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

HELLO = [{"role": "user", "content": "Hello"}]
CLIENTS: dict[str, Callable[[HttpSettings], HttpClient]] = {
    "httpx": HttpxClient,
    "aiohttp": AiohttpClient,
}


class Recording:
    """A custom client: records each request's kind and URL, then lets a real client send it."""

    def __init__(self, inner: HttpClient, seen: list[tuple[str, str]]) -> None:
        self.inner, self.seen, self.closed = inner, seen, False

    async def post_json(self, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        self.seen.append(("json", url))
        return await self.inner.post_json(url, headers, body)

    def post_stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AbstractAsyncContextManager[HttpStream]:
        self.seen.append(("stream", url))
        return self.inner.post_stream(url, headers, body)

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


class Factory:
    """An ``http=`` factory that wraps each client it builds in a :class:`Recording`."""

    def __init__(self, inner: Callable[[HttpSettings], HttpClient] = HttpxClient) -> None:
        self.inner = inner
        self.made: list[HttpSettings] = []
        self.clients: list[Recording] = []
        self.seen: list[tuple[str, str]] = []

    def __call__(self, settings: HttpSettings) -> HttpClient:
        self.made.append(settings)
        self.clients.append(Recording(self.inner(settings), self.seen))
        return self.clients[-1]


async def _ask_every_adapter(hub: Hub) -> None:
    await hub.chat(HELLO, model="gpt-4o-mini")
    await hub.chat(HELLO, model="claude-haiku")
    async with hub.stream(HELLO, model="llama-8b") as s:
        assert "stop" == [c async for c in s][-1].finish_reason


class TestFactory:
    @pytest.mark.anyio
    @pytest.mark.parametrize("configured", ["httpx", "aiohttp"])
    async def test_builds_every_built_in_providers_client(
        self, fake: FakeProvider, configured: str
    ) -> None:
        """``http=`` builds each built-in provider's client from its settings, whatever its ``http`` entry says."""
        factory = Factory()
        cfg = config_for(fake, configured, read=7.0)
        cfg["providers"]["openai"]["max_connections"] = 3
        async with Hub.from_config(cfg, http=factory) as hub:
            await _ask_every_adapter(hub)
        by_name = {s.provider: s for s in factory.made}
        assert ["anthropic", "openai", "vllm"] == sorted(by_name)
        assert HttpSettings(Timeouts(read=7.0), 3, "openai") == by_name["openai"]
        assert 100 == by_name["vllm"].max_connections
        assert ["json", "json", "stream"] == [kind for kind, _ in factory.seen]
        assert all(
            url.endswith(r.path) for (_, url), r in zip(factory.seen, fake.requests, strict=True)
        )
        assert all(c.closed for c in factory.clients)

    @pytest.mark.anyio
    @pytest.mark.parametrize("impl", ["httpx", "aiohttp"])
    async def test_wraps_either_shipped_client(self, fake: FakeProvider, impl: str) -> None:
        """A factory may wrap HttpxClient or AiohttpClient; answers and streams come through it."""
        factory = Factory(CLIENTS[impl])
        async with Hub.from_config(config_for(fake), http=factory) as hub:
            await _ask_every_adapter(hub)
        assert 3 == len(factory.seen) == len(fake.requests)

    @pytest.mark.anyio
    async def test_a_mock_transport_replaces_the_network(self, fake: FakeProvider) -> None:
        """``lambda s: HttpxClient(s, transport=httpx.MockTransport(...))`` answers without a socket."""
        answer = {
            "id": "chatcmpl-1",
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "mocked"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        urls: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            urls.append(str(request.url))
            return httpx.Response(200, json=answer)

        transport = httpx.MockTransport(handler)
        async with Hub.from_config(
            config_for(fake), http=lambda s: HttpxClient(s, transport=transport)
        ) as hub:
            r = await hub.chat(HELLO, model="gpt-4o-mini")
        assert ("mocked", 4) == (r.text, r.usage and r.usage.total_tokens)
        assert [fake.openai_base_url + "/chat/completions"] == urls
        assert [] == fake.requests

    @pytest.mark.anyio
    async def test_store_backed_hubs_use_it_for_providers_added_later(
        self, fake: FakeProvider, tmp_path: Path
    ) -> None:
        """A store-backed Hub builds the clients of providers added at runtime with the factory too."""
        factory = Factory()
        async with Hub.from_config(config_for(fake), store=tmp_path / "t.db", http=factory) as hub:
            await hub.admin.upsert_provider(
                "local", {"kind": "vllm", "base_url": fake.openai_base_url, "max_connections": 2}
            )
            await hub.admin.upsert_model("tiny", {"provider": "local"})
            await hub.chat(HELLO, model="tiny")
        assert HttpSettings(Timeouts(), 2, "local") == factory.made[-1]
        assert [("json", fake.openai_base_url + "/chat/completions")] == factory.seen

    def test_sync_hub_takes_it_too(self) -> None:
        """``SyncHub.from_config(http=...)`` builds its clients with the factory."""
        factory = Factory()
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(FakeProvider()) as fake,
            SyncHub.from_config(config_for(fake), http=factory) as hub,
        ):
            assert "echo: Hello" == hub.chat(HELLO, model="gpt-4o-mini").text
            assert [("json", fake.openai_base_url + "/chat/completions")] == factory.seen

    def test_transport_is_no_longer_accepted(self) -> None:
        """``transport=`` is gone: passing it is a TypeError, not silently ignored."""
        kwargs: dict[str, Any] = {"transport": httpx.MockTransport(lambda _: httpx.Response(200))}
        with pytest.raises(TypeError, match="transport"):
            Hub.from_config({"models": {}}, **kwargs)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestClients:
    @pytest.mark.anyio
    @pytest.mark.parametrize("impl", ["httpx", "aiohttp"])
    async def test_a_refused_connection_is_a_transport_error(self, impl: str) -> None:
        """A client built on its own raises TransportError (connect) for a refused connection."""
        client = CLIENTS[impl](HttpSettings(Timeouts(connect=2.0)))
        url = f"http://127.0.0.1:{_closed_port()}/v1/chat/completions"
        try:
            with pytest.raises(TransportError) as info:
                await client.post_json(url, {"content-type": "application/json"}, b"{}")
        finally:
            await client.aclose()
        assert "connect" == info.value.kind
        assert "127.0.0.1" not in str(info.value)

    @pytest.mark.anyio
    @pytest.mark.parametrize("impl", ["httpx", "aiohttp"])
    async def test_a_closed_client_stays_closed(self, impl: str) -> None:
        """After aclose, requests fail with TransportError (connect) instead of opening a new pool."""
        client = CLIENTS[impl](HttpSettings())
        await client.aclose()
        url = f"http://127.0.0.1:{_closed_port()}/v1/chat/completions"
        with pytest.raises(TransportError) as info:
            await client.post_json(url, {}, b"{}")
        assert ("connect", "client closed") == (info.value.kind, info.value.detail)
        with pytest.raises(TransportError):
            async with client.post_stream(url, {}, b"{}"):
                pass
        # And no pool was made meanwhile.
        assert getattr(client, "_session", None) is None
        assert getattr(client, "_client", None) is None

    @pytest.mark.anyio
    @pytest.mark.parametrize("impl", ["httpx", "aiohttp"])
    async def test_the_hub_reports_it_as_a_provider_error(self, impl: str) -> None:
        """Through a Hub, a refused connection is a ProviderError, never a bare TransportError."""
        cfg = {
            "failover": {"max_retries": 0},
            "providers": {
                "p": {"kind": "openai", "base_url": f"http://127.0.0.1:{_closed_port()}"}
            },
            "models": {"m": {"provider": "p"}},
        }
        async with Hub.from_config(cfg, http=CLIENTS[impl]) as hub:
            with pytest.raises(ProviderError) as info:
                await hub.chat(HELLO, model="m")
        assert "provider_down" == info.value.error_class
        assert not isinstance(info.value, TransportError)

    def test_transport_error_is_a_tokenhub_error_and_pickles(self) -> None:
        """TransportError is a TokenhubError in tokenhub.errors, and pickles with its fields."""
        error = TransportError("timeout", "ReadTimeout")
        clone = pickle.loads(pickle.dumps(error))
        assert isinstance(clone, TransportError)
        assert issubclass(TransportError, tokenhub.TokenhubError)
        assert tokenhub.errors.TransportError is TransportError
        assert ("timeout", "ReadTimeout", "timeout: ReadTimeout") == (
            clone.kind,
            clone.detail,
            str(clone),
        )

    def test_settings_default_to_the_configs_defaults(self) -> None:
        """HttpSettings() has the timeouts and pool size a provider entry gets by default."""
        assert HttpSettings(Timeouts(5.0, 60.0, 30.0, 10.0), 100, "") == HttpSettings()


class TestModule:
    def test_import_loads_neither_httpx_nor_aiohttp(self) -> None:
        """``import tokenhub.http`` loads neither HTTP library; the clients load on first use."""
        code = (
            "import sys, tokenhub.http\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'httpx', 'httpcore', 'aiohttp'}))\n"
            "tokenhub.http.HttpxClient\n"
            "print('httpx' in sys.modules, 'aiohttp' in sys.modules)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "[]\nTrue False" == out.stdout.strip()

    def test_aiohttp_client_without_the_extra_names_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without aiohttp installed, ``tokenhub.http.AiohttpClient`` raises ImportError naming the extra."""
        monkeypatch.setitem(sys.modules, "aiohttp", None)
        monkeypatch.delitem(sys.modules, "tokenhub._aiohttp", raising=False)
        with pytest.raises(ImportError, match=r"tokenhub\[aiohttp\]"):
            tokenhub.http.AiohttpClient  # noqa: B018

    def test_unknown_names_are_attribute_errors(self) -> None:
        """An unknown name on tokenhub.http is an AttributeError, as on any module."""
        with pytest.raises(AttributeError, match="Nope"):
            tokenhub.http.Nope  # noqa: B018
