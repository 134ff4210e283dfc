"""The Hub itself: lookups, custom providers, registration, the sync facade and import hygiene."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal

import tokenhub
from tests.conftest import config_for
from tokenhub import ChatOptions, ChatResponse, Chunk, Hub, Message, SyncHub, ToolCallDelta, Usage
from tokenhub._models import ChatRequest
from tokenhub.errors import ErrorClass, ModelNotFoundError, RateLimitError, RequestError
from tokenhub.providers import (
    Call,
    Capabilities,
    Classification,
    Provider,
    ProviderSettings,
    _registry,
)
from tokenhub.testing import FakeProvider, Reply, ScriptedToolCall

HELLO = [{"role": "user", "content": "Hello"}]


class EchoProvider:
    """A third-party adapter that answers locally."""

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        self.settings = settings
        self.closed = False

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities()

    async def send(self, call: Call) -> ChatResponse:
        return call.response(
            text=call.request.messages[-1].text[::-1], finish_reason="stop", usage=None
        )

    async def stream(self, call: Call) -> AsyncIterator[Chunk]:
        yield call.chunk(text="e")
        yield call.chunk(finish_reason="stop")

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Classification:
        return Classification(ErrorClass.TRANSIENT, "no")

    async def aclose(self) -> None:
        self.closed = True


class TestHub:
    @pytest.mark.anyio
    async def test_unknown_model_lists_known_and_sends_nothing(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """An unknown model raises ModelNotFoundError (a LookupError) naming the known ones."""
        async with make_hub() as hub:
            with pytest.raises(
                LookupError,
                match="unknown model 'gpt-5'; known: claude-haiku, gpt-4o-mini, llama-8b",
            ) as info:
                await hub.chat(HELLO, model="gpt-5")
            with pytest.raises(ModelNotFoundError):
                hub.stream(HELLO, model="gpt-5")
        assert isinstance(info.value, ModelNotFoundError)
        assert [] == fake.requests

    @pytest.mark.anyio
    async def test_invalid_request_sends_nothing(
        self, fake: FakeProvider, make_hub: Callable[..., Hub]
    ) -> None:
        """Invalid requests fail in chat and stream before any network call."""
        async with make_hub() as hub:
            with pytest.raises(RequestError):
                await hub.chat([], model="gpt-4o-mini")
            with pytest.raises(RequestError):
                hub.stream([{"role": "bot", "content": "x"}], model="claude-haiku")
        assert [] == fake.requests

    @pytest.mark.anyio
    async def test_a_reused_response_object_gets_its_own_trace(self) -> None:
        """A provider returning one response object twice: each answer carries its own trace."""

        class Constant(EchoProvider):
            answer: ChatResponse | None = None

            async def send(self, call: Call) -> ChatResponse:
                if self.answer is None:
                    self.answer = await super().send(call)
                return self.answer

        cfg = {"models": {"local": {"provider": "mine"}}}
        async with Hub.from_config(cfg, providers={"mine": Constant()}) as hub:
            first = await hub.chat(HELLO, model="local", request_id="one")
            second = await hub.chat(HELLO, model="local", request_id="two")
        assert first.trace is not None
        assert second.trace is not None
        assert ("one", "two") == (first.trace.request_id, second.trace.request_id)

    @pytest.mark.anyio
    async def test_provider_instances_from_config_and_add_provider(self) -> None:
        """Models may name provider instances; add_provider swaps one in for later requests."""
        echo = EchoProvider()
        assert isinstance(echo, Provider)
        cfg = {"models": {"local": {"provider": "mine"}}}
        async with Hub.from_config(cfg, providers={"mine": echo}) as hub:
            r = await hub.chat([{"role": "user", "content": "abc"}], model="local")
            assert ("cba", "local", "mine") == (r.text, r.model, r.provider)
            other = EchoProvider()
            hub.add_provider("mine", other)
            chunks = [c async for c in hub.stream(HELLO, model="local")]
            assert ["e", ""] == [c.text for c in chunks]
        assert echo.closed is False
        assert other.closed is True

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        ("chunks", "error"), [(0, "ProviderUnavailableError"), (1, "StreamInterrupted")]
    )
    async def test_stream_without_finish_reason(self, chunks: int, error: str) -> None:
        """A provider stream that just ends is a provider failure, or an interruption once chunks arrived."""

        class Truncating(EchoProvider):
            async def stream(self, call: Call) -> AsyncIterator[Chunk]:
                for _ in range(chunks):
                    yield call.chunk(text="part")

        async with Hub.from_config(
            {"models": {"m": {"provider": "t"}}}, providers={"t": Truncating()}
        ) as hub:
            with pytest.raises(tokenhub.errors.ProviderError) as info:
                _ = [c async for c in hub.stream(HELLO, model="m")]
        assert error == type(info.value).__name__
        assert ErrorClass.TRANSIENT.value in (info.value.code, info.value.error_class.value)

    def test_capabilities_merge_model_config_over_adapter_defaults(self) -> None:
        """hub.capabilities() uses the adapter's defaults unless the model names its own."""
        cfg = {
            "providers": {"o": {"kind": "openai"}, "a": {"kind": "anthropic"}},
            "models": {
                "plain": {"provider": "o"},
                "named": {"provider": "a", "capabilities": ["tools"], "context_window": 200000},
            },
        }
        hub = Hub.from_config(cfg)
        assert Capabilities(tools=True, vision=True, json_schema=True) == hub.capabilities("plain")
        assert Capabilities(tools=True, max_context=200000) == hub.capabilities("named")
        with pytest.raises(ModelNotFoundError):
            hub.capabilities("nope")

    def test_third_party_kind_through_entry_points(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A kind registered in the tokenhub.providers group is built from config like the built-ins."""
        ep = EntryPoint("echo", "tests.test_hub:EchoProvider", _registry.GROUP)
        monkeypatch.setattr(_registry, "_installed", lambda: {"echo": ep})
        hub = Hub.from_config(
            {
                "providers": {"p": {"kind": "echo", "options": {"x": 1}}},
                "models": {"m": {"provider": "p"}},
            }
        )
        provider: Any = hub._engine.deployments["m"].provider
        settings = provider.settings
        assert "EchoProvider" == type(provider).__name__
        assert ("p", "echo", {"x": 1}) == (settings.name, settings.kind, settings.options)
        # A third-party adapter may not apply timeouts.read: streams keep their per-chunk guard.
        assert hub._engine.deployments["m"].read_timeout is None

    def test_read_timeout_bound_only_for_tokenhub_http_adapters(self) -> None:
        """The engine relies on timeouts.read only for adapters on tokenhub's HTTP layer."""
        cfg = {
            "providers": {
                "o": {
                    "kind": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "timeouts": {"read": 7},
                }
            },
            "models": {"a": {"provider": "o"}, "b": {"provider": "mine"}},
        }
        hub = Hub.from_config(cfg, providers={"mine": EchoProvider()})
        table = hub._engine.deployments
        assert (7.0, None) == (table["a"].read_timeout, table["b"].read_timeout)

    def test_builtins_are_declared_as_entry_points(self) -> None:
        """The built-in adapters are registered in the same entry-point group third parties use."""
        installed = {ep.name: ep.value for ep in entry_points(group=_registry.GROUP)}
        builtin = {name: ep.value for name, ep in _registry._BUILTIN.items()}
        assert builtin == {k: v for k, v in installed.items() if k in builtin}

    @pytest.mark.parametrize("anyio_backend", ["trio"])
    @pytest.mark.anyio
    # httpx's nested response generators are not closed explicitly when a stream ends before EOF;
    # trio reports them (asyncio finalises them quietly). tokenhub's own generators must not appear.
    @pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <async_generator object (Response|BoundAsyncStream|"
        "AsyncResponseStream|PoolByteStream|HTTP11ConnectionByteStream|AsyncHTTP11Connection)"
        ":pytest.PytestUnraisableExceptionWarning"
    )
    async def test_works_on_trio(self, anyio_backend: str) -> None:
        """Chat and stream work under trio as well as asyncio."""
        async with FakeProvider() as fake, Hub.from_config(config_for(fake)) as hub:
            r = await hub.chat(HELLO, model="claude-haiku")
            chunks = [c async for c in hub.stream(HELLO, model="gpt-4o-mini")]
        assert "echo: Hello" == r.text
        assert "echo: Hello" == "".join(c.text for c in chunks)


class TestCall:
    def test_chunk_maps_every_argument_to_its_field(self) -> None:
        """Call.chunk builds its Chunk positionally (a hot path): each value lands in its field."""
        call = Call(
            request=ChatRequest(messages=(Message(role="user", content="hi"),)),
            model="m",
            upstream="up",
            provider="p",
            request_id="rid",
        )
        fields: dict[str, Any] = {
            "text": "t",
            "tool_calls": (ToolCallDelta(index=0, id="c1", name="f", arguments="{}"),),
            "finish_reason": "stop",
            "usage": Usage(input_tokens=1, output_tokens=2),
            "reasoning": "r",
            "response_id": "resp",
            "upstream_model": "um",
            "created": 7,
        }
        assert Chunk(model="m", provider="p", request_id="rid", **fields) == call.chunk(**fields)
        assert "up" == call.chunk().upstream_model


class TestOpenAICompatibility:
    @pytest.mark.anyio
    @pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku", "llama-8b"])
    async def test_to_openai_validates_with_the_sdk(
        self, fake: FakeProvider, make_hub: Callable[..., Hub], model: str
    ) -> None:
        """to_openai() of responses and chunks validates as the openai SDK's ChatCompletion(Chunk)."""
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        upstream = fake.requests  # noqa: F841 - keep the fake referenced
        for name in ("gpt-4o-mini", "claude-3-5-haiku-latest", "meta-llama/Llama-3.1-8B-Instruct"):
            fake.default(
                name,
                Reply(
                    text="Hi",
                    tool_calls=[ScriptedToolCall(id="call_1", name="f", arguments={"a": 1})],
                ),
            )
        async with make_hub() as hub:
            r = await hub.chat(HELLO, model=model)
            chunks = [c async for c in hub.stream(HELLO, model=model)]
        completion = ChatCompletion.model_validate(r.to_openai())
        assert "call_1" == completion.choices[0].message.tool_calls[0].id  # type: ignore[index]
        assert "tool_calls" == completion.choices[0].finish_reason
        for c in chunks:
            ChatCompletionChunk.model_validate(c.to_openai())
        assert chunks[-1].to_openai()["usage"]["prompt_tokens"] > 0


class TestSyncHub:
    def test_chat_stream_and_errors_from_any_thread(self) -> None:
        """The blocking facade works from the main thread and from another thread."""
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(FakeProvider()) as fake,
        ):
            fake.script("gpt-4o-mini", Reply(status=429, headers={"retry-after": "1"}))
            with SyncHub.from_config(config_for(fake)) as hub:
                with pytest.raises(RateLimitError):
                    hub.chat(HELLO, model="gpt-4o-mini")
                assert "echo: Hello" == hub.chat(HELLO, model="claude-haiku").text
                stream = hub.stream(HELLO, model="llama-8b")
                assert "echo: Hello" == "".join(c.text for c in stream)
                assert ("echo: Hello", stream.request_id) == (
                    stream.response.text,
                    stream.response.request_id,
                )
                with pytest.raises(RequestError):
                    hub.stream([], model="llama-8b")
                results: list[str] = []
                t = threading.Thread(
                    target=lambda: results.append(hub.chat(HELLO, model="gpt-4o-mini").text)
                )
                t.start()
                t.join()
                assert ["echo: Hello"] == results

    def test_same_methods_as_the_hub(self) -> None:
        """Every public Hub method has a SyncHub counterpart."""
        public = {n for n in dir(Hub) if not n.startswith("_")} - {"aclose", "from_config"}
        assert public <= {n for n in dir(SyncHub) if not n.startswith("_")}
        sync = SyncHub.from_config(
            {"providers": {"o": {"kind": "openai"}}, "models": {"m": {"provider": "o"}}}
        )
        assert (("m",), {"models": {}, "credentials": {}}) == (sync.models, sync.health())
        assert sync.capabilities("m").tools

    def test_stream_closed_early(self) -> None:
        """Breaking out of a sync stream releases it; the hub keeps working."""
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(FakeProvider()) as fake,
        ):
            hub = SyncHub.from_config(config_for(fake))
            try:
                for _ in hub.stream(HELLO, model="gpt-4o-mini"):
                    break
                assert (
                    "echo: Hi"
                    == hub.chat([{"role": "user", "content": "Hi"}], model="gpt-4o-mini").text
                )
            finally:
                hub.close()


class TestChatOptions:
    # Each misspelt call carries `type: ignore[call-arg]`: mypy strict (warn_unused_ignores) fails
    # if the ignore is unused, so these lines also prove that a type checker rejects the key.
    @pytest.mark.anyio
    async def test_unknown_keyword_raises_type_error_before_any_io(
        self, fake: FakeProvider
    ) -> None:
        """chat, stream and explain reject a misspelt keyword with TypeError naming it, sending nothing."""
        async with Hub.from_config(config_for(fake)) as hub:
            with pytest.raises(
                TypeError, match=r"^Hub\.chat\(\) got an unexpected keyword argument 'temprature'$"
            ):
                await hub.chat(HELLO, model="gpt-4o-mini", temprature=0.2)  # type: ignore[call-arg]
            with pytest.raises(
                TypeError, match=r"^Hub\.stream\(\) got an unexpected keyword argument 'max_token'$"
            ):
                hub.stream(HELLO, max_token=5)  # type: ignore[call-arg]
            with pytest.raises(
                TypeError, match=r"^Hub\.explain\(\) got an unexpected keyword argument 'modle'$"
            ):
                hub.explain(HELLO, modle="gpt-4o-mini")  # type: ignore[call-arg]
        assert [] == fake.requests

    def test_sync_facade_rejects_unknown_keywords(self) -> None:
        """SyncHub's chat, stream and explain raise the same TypeError, naming their own method."""
        with SyncHub.from_config(
            {"providers": {"o": {"kind": "openai"}}, "models": {"m": {"provider": "o"}}}
        ) as hub:
            with pytest.raises(TypeError, match=r"^SyncHub\.chat\(\) .* 'temprature'$"):
                hub.chat(HELLO, temprature=0.2)  # type: ignore[call-arg]
            with pytest.raises(TypeError, match=r"^SyncHub\.stream\(\) .* 'top_k'$"):
                hub.stream(HELLO, top_k=5)  # type: ignore[call-arg]
            with pytest.raises(TypeError, match=r"^SyncHub\.explain\(\) .* 'modle'$"):
                hub.explain(HELLO, modle="m")  # type: ignore[call-arg]
            assert "m" == hub.explain(HELLO, model="m").candidates[0].model

    @pytest.mark.anyio
    async def test_a_value_of_the_wrong_type_is_a_request_error(self, fake: FakeProvider) -> None:
        """A known keyword with a bad value still raises RequestError naming it (mypy rejects it too)."""
        async with Hub.from_config(config_for(fake)) as hub:
            with pytest.raises(RequestError, match="temperature: expected a number, got 'hot'"):
                hub.explain(HELLO, temperature="hot")  # type: ignore[arg-type]
        assert [] == fake.requests

    @pytest.mark.anyio
    async def test_a_typed_options_dict_is_passed_through(self, fake: FakeProvider) -> None:
        """A ChatOptions dict passed as **options routes and shapes the request like keywords."""
        options: ChatOptions = {
            "model": "llama-8b",
            "request_id": "req-1",
            "temperature": 0.2,
            "max_tokens": 7,
            "metadata": {"k": "v"},
        }
        async with Hub.from_config(config_for(fake)) as hub:
            assert "llama-8b" == hub.explain(HELLO, **options).candidates[0].model
            r = await hub.chat(HELLO, **options)
            async with hub.stream(HELLO, **options) as stream:
                assert "echo: Hello" == "".join([c.text async for c in stream])
        assert ("llama-8b", "req-1", "echo: Hello") == (r.model, r.request_id, r.text)
        bodies = [q.body for q in fake.requests]
        assert [(0.2, 7, False), (0.2, 7, True)] == [
            (b["temperature"], b["max_tokens"], b.get("stream", False)) for b in bodies
        ]
        assert ["req-1", "req-1"] == [q.headers["x-request-id"] for q in fake.requests]
        assert all("metadata" not in b for b in bodies)

    def test_help_points_to_the_options(self) -> None:
        """The docstrings of chat, stream and explain, async and sync, name ChatOptions."""
        methods = [Hub.chat, Hub.stream, Hub.explain, SyncHub.chat, SyncHub.stream, SyncHub.explain]
        assert all("ChatOptions" in (m.__doc__ or "") for m in methods)


class TestImport:
    def test_import_has_no_side_effects_and_stays_light(self) -> None:
        """Importing tokenhub starts no thread and loads neither httpx, cattrs, anyio, sqlite-utils, PyNaCl nor psycopg."""
        code = (
            "import sys, threading\n"
            "n = threading.active_count()\n"
            "import tokenhub, tokenhub.errors, tokenhub.providers\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'httpx', 'httpcore', 'cattrs', 'anyio', 'h11', 'ssl', 'sqlite_utils', 'nacl', 'psycopg', 'psycopg_pool'})\n"
            "print(threading.active_count() - n, heavy)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "0 []" == out.stdout.strip()

    def test_public_names_are_documented(self) -> None:
        """Every public top-level name appears in the API reference."""
        api = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
        reference = api + (Path(__file__).parent.parent / "docs" / "quickstart.md").read_text()
        missing = [n for n in tokenhub.__all__ if n != "__version__" and n not in reference]
        assert [] == missing
        assert sorted(tokenhub.__all__) == tokenhub.__all__


def test_secret_hides_itself() -> None:
    """Secrets show a mask in repr, str and format, compare by value, and refuse to pickle."""
    import pickle

    s = tokenhub.Secret("sk-abc-123")
    assert "sk-abc" not in f"{s!r} {s} {s:>20}"
    assert tokenhub.Secret("sk-abc-123") == s
    assert tokenhub.Secret("other") != s
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_version() -> None:
    """The version is exposed."""
    assert "0.1.0" == tokenhub.__version__


def test_library_logging_is_silent_by_default() -> None:
    """tokenhub's loggers have a NullHandler, so nothing reaches stderr unless the app configures logging."""
    code = (
        "import logging, tokenhub\n"
        "logging.getLogger('tokenhub.failover').warning('circuit of m opened')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "" == out.stderr
