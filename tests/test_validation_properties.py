"""Property tests: any JSON-like value anywhere in a config or a call is a typed error, or valid."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CANARY
from tokenhub import Hub
from tokenhub._config import parse_config, parse_local
from tokenhub._request import CHAT_KEYS, request_from
from tokenhub.errors import ConfigError, RequestError, TokenhubError
from tokenhub.providers._registry import kinds_for

# Text with lone surrogates and control characters, as well as plain words.
_text = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["", "openai", "gpt-4o-mini", "cheap", "tools", "env", "vault", "*", CANARY, "\ud800"]
)
_numbers = (
    st.integers()
    | st.sampled_from([0, -1, 1, 2**53 + 1, 2**64, 10**30, 10**400, -(10**400)])
    | st.floats()  # NaN and both infinities included
    | st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 5e-324])
)
_scalars = st.none() | st.booleans() | _numbers | _text
_odd = st.sampled_from([b"bytes", {1, 2}, frozenset({"a"}), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)])
_values = st.recursive(
    _scalars | _odd,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(_text, inner, max_size=4)
        | st.dictionaries(st.integers() | st.none() | st.booleans(), inner, max_size=2)
    ),
    max_leaves=12,
)
_SETTINGS = settings(
    max_examples=120,
    deadline=dt.timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)


def _config() -> dict[str, Any]:
    return {
        "providers": {
            "openai": {
                "kind": "openai",
                "base_url": "https://api.example.test/v1",
                "api_key": CANARY,
                "headers": {"X-Team": "a"},
                "timeouts": {"connect": 5, "read": 60},
                "options": {},
            },
        },
        "models": {
            "gpt-4o-mini": {
                "provider": "openai",
                "context_window": 128000,
                "max_output_tokens": 16384,
                "pricing": {"input": 0.15, "output": 0.6},
                "capabilities": ["tools"],
                "tags": ["eu"],
                "quality": 0.5,
            },
        },
        "routing": {"mode": "balanced", "require": [], "tags": [], "weights": {"cost": 1}},
        "aliases": {"fast": {"models": ["gpt-4o-mini"], "fallbacks": []}},
        "failover": {"timeout": 30, "max_retries": 1, "breaker": {"failures": 3}},
        "tokenizer": "heuristic",
    }


# Every path of the config above, each section and each leaf.
def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    return out


CONFIG_PATHS = [
    *_paths(_config()),
    ("budgets",),
    ("providers", "openai", "max_connections"),
    ("providers", "openai", "http"),
    ("models", "gpt-4o-mini", "weight"),
    ("models", "gpt-4o-mini", "latency_ms"),
    ("failover", "breaker", "ratio"),
    ("routing", "providers"),
    ("routing", "fallbacks"),
    ("routing", "headroom"),
    ("new-key",),
]
LOCAL_PATHS = [
    ("store",),
    ("store", "busy_timeout"),
    ("store", "sync_interval"),
    ("store", "logs"),
    ("store", "logs", "retention_days"),
    ("store", "logs", "buffer"),
    ("vault",),
    ("vault", "password"),
    ("vault", "auto_lock"),
]
HELLO = [{"role": "user", "content": "hi"}]


def _set(cfg: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


class TestConfigProperties:
    @_SETTINGS
    @given(path=st.sampled_from(CONFIG_PATHS), value=_values)
    def test_any_value_at_any_path_is_valid_or_a_config_error(
        self, path: tuple[str, ...], value: Any
    ) -> None:
        """Hub.from_config raises ConfigError (quoting no key) or builds a Hub that can route."""
        cfg = _set(copy.deepcopy(_config()), path, value)
        try:
            hub = Hub.from_config(cfg)
        except ConfigError as exc:
            assert CANARY not in str(exc)
            str(exc).encode()  # printable: no lone surrogate in the message
            return
        with contextlib.suppress(TokenhubError):  # e.g. no model fits: typed, not a crash
            hub.explain(HELLO)
        anyio.run(hub.aclose)

    @_SETTINGS
    @given(path=st.sampled_from(LOCAL_PATHS), value=_values)
    def test_any_store_or_vault_value_is_valid_or_a_config_error(
        self, path: tuple[str, ...], value: Any
    ) -> None:
        """The store and vault sections parse, or raise ConfigError, whatever they hold."""
        cfg = _config()
        cfg["store"] = {"path": "unused.db", "logs": {}}
        cfg["vault"] = {}
        _set(cfg, path, value)
        try:
            parse_local(cfg)
            parse_config(cfg, known_kinds=kinds_for(cfg))
        except ConfigError as exc:
            str(exc).encode()


_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | _values},
    optional={
        "content": _values | st.lists(st.fixed_dictionaries({"type": _values, "text": _values})),
        "name": _values,
        "tool_calls": _values,
        "tool_call_id": _values,
    },
)
_options = st.dictionaries(st.sampled_from(sorted(CHAT_KEYS)), _values, max_size=4)


class TestRequestProperties:
    @_SETTINGS
    @given(messages=st.lists(_message, max_size=3) | _values, options=_options)
    def test_any_call_is_valid_or_a_request_error(self, messages: Any, options: Any) -> None:
        """Request validation, including the routing options, raises RequestError or nothing."""
        try:
            request_from(messages, options)
        except RequestError as exc:
            str(exc).encode()

    @settings(max_examples=60, deadline=dt.timedelta(seconds=2))
    @given(options=_options)
    def test_a_hub_plans_any_call_or_raises_a_typed_error(self, options: Any) -> None:
        """Through the Hub (policy overrides, model names, timeouts): only tokenhub errors."""
        hub = Hub.from_config(_config())
        try:
            hub.explain(HELLO, **options)
        except TokenhubError as exc:
            str(exc).encode()
