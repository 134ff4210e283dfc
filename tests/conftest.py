from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tokenhub import Hub
from tokenhub import _redact as redact
from tokenhub._store import Store
from tokenhub.testing import FakeClock, FakeProvider

CANARY = "sk-canary-7f3a9c2e5b1d4e8f0a6c"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A real Redis (tests/_redis.py), started once, and only if a test asks for it."""
    from tests._redis import server

    s = server()
    yield s
    s.stop()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The shared Redis, flushed for this test (restarted if a test killed it)."""
    from tests._redis import server

    server().flush()
    return str(redis_server.url)


@pytest.fixture(autouse=True)
def forget_registered_secrets() -> Iterator[None]:
    """Each test ends by forgetting the secrets it registered, so that none masks words later."""
    # The registry is process-wide and only grows: a value a test registers (Hypothesis draws
    # the code's own words, "openai" among them) would be masked in every later test's messages.
    known = dict(redact._KNOWN)
    yield
    redact._KNOWN.clear()
    redact._KNOWN.update(known)
    redact._index[:] = [-1, {}, ()]  # built for a registry of some size: rebuild it


@pytest.fixture(scope="session", autouse=True)
def _postgres_session() -> Iterator[None]:
    """The test PostgreSQL (tests/_postgres.py) starts on first use and is removed at the end."""
    yield
    from tests import _postgres

    _postgres.stop()


@pytest.fixture
def postgres_url() -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL (skipped without one)."""
    from tests import _postgres

    if not _postgres.available():
        pytest.skip("needs psycopg, psycopg-pool and pgserver (the tests group)")
    return _postgres.server().fresh_database()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as f:
        yield f


def sqlite_store(store: object) -> Store:
    """``hub.store`` as the SQLite :class:`~tokenhub._store.Store` it is (for its own tools)."""
    assert isinstance(store, Store)
    return store


def config_for(fake: FakeProvider, http: str = "httpx", **timeouts: float) -> dict[str, Any]:
    """A config with one model per built-in adapter, all served by ``fake``.

    Same-model retries are off, so that each scripted reply answers one call.
    """
    t: dict[str, Any] = {"timeouts": timeouts} if timeouts else {}
    t["http"] = http
    return {
        "failover": {"max_retries": 0},
        "providers": {
            "openai": {"kind": "openai", "base_url": fake.openai_base_url, "api_key": CANARY, **t},
            "anthropic": {
                "kind": "anthropic",
                "base_url": fake.anthropic_base_url,
                "api_key": CANARY,
                **t,
            },
            "vllm": {"kind": "vllm", "base_url": fake.openai_base_url, **t},
        },
        "models": {
            "gpt-4o-mini": {
                "provider": "openai",
                "context_window": 128000,
                "max_output_tokens": 16384,
                "pricing": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
                "capabilities": ["tools", "json_schema", "vision"],
            },
            "claude-haiku": {
                "provider": "anthropic",
                "upstream": "claude-3-5-haiku-latest",
                "max_output_tokens": 1024,
                "pricing": {"input": 0.8, "output": 4.0, "cached_input": 0.08, "cache_write": 1.0},
            },
            "llama-8b": {
                "provider": "vllm",
                "upstream": "meta-llama/Llama-3.1-8B-Instruct",
                "capabilities": ["tools", "json_schema"],
            },
        },
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["httpx", "aiohttp"])
def http_impl(request: pytest.FixtureRequest) -> str:
    """The HTTP implementation under test: every adapter test runs on both."""
    return str(request.param)


@pytest.fixture(params=["openai", "anthropic"])
def wire(request: pytest.FixtureRequest) -> str:
    """The wire format under test (OpenAI or Anthropic streams)."""
    return str(request.param)


@pytest.fixture
def make_hub(fake: FakeProvider, clock: FakeClock, http_impl: str) -> Callable[..., Hub]:
    def make(*, failover: dict[str, Any] | None = None, **timeouts: float) -> Hub:
        config = config_for(fake, http_impl, **timeouts)
        if failover is not None:
            config["failover"] = failover
        return Hub.from_config(config, clock=clock)

    return make
