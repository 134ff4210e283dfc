"""Config from a dict: structuring, defaults and path-precise errors."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CANARY
from tokenhub import Hub
from tokenhub._config import parse_config
from tokenhub._settings import EnvKey, LiteralKey, Pricing, Timeouts
from tokenhub.errors import ConfigError


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in a fresh directory: configs here name a relative store ("x.db") that may be opened."""
    monkeypatch.chdir(tmp_path)


def base() -> dict[str, Any]:
    return {
        "providers": {"openai": {"kind": "openai", "api_key": {"env": "OPENAI_API_KEY"}}},
        "models": {"gpt-4o-mini": {"provider": "openai"}},
    }


def errors_of(config: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        Hub.from_config(config)
    return list(info.value.errors)


class TestValid:
    def test_issue_example_parses_with_defaults(self) -> None:
        """The documented example config parses; upstream, base_url and timeouts take defaults."""
        cfg = parse_config(
            {
                "providers": {
                    "openai": {
                        "kind": "openai",
                        "base_url": "https://api.openai.com/v1",
                        "api_key": {"env": "OPENAI_API_KEY"},
                    },
                    "anthropic": {"kind": "anthropic", "api_key": {"env": "ANTHROPIC_API_KEY"}},
                    "gpu-box": {"kind": "vllm", "base_url": "http://10.0.0.5:8000/v1"},
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
                        "context_window": 200000,
                    },
                    "llama-8b": {
                        "provider": "gpu-box",
                        "upstream": "meta-llama/Llama-3.1-8B-Instruct",
                        "context_window": 32768,
                    },
                },
            }
        )
        assert EnvKey("OPENAI_API_KEY") == cfg.providers["openai"].api_key
        assert () == cfg.providers["anthropic"].base_urls
        assert None is cfg.providers["gpu-box"].api_key
        assert Timeouts() == cfg.providers["openai"].timeouts
        assert (
            Pricing(input=0.15, output=0.6, cached_input=0.075) == cfg.models["gpt-4o-mini"].pricing
        )
        assert (
            frozenset({"tools", "json_schema", "vision"}) == cfg.models["gpt-4o-mini"].capabilities
        )
        assert None is cfg.models["gpt-4o-mini"].upstream

    def test_from_config_does_no_io(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Building a Hub opens no socket and resolves no key."""
        import socket

        def boom(*a: object, **k: object) -> None:
            raise AssertionError("network I/O in from_config")

        monkeypatch.setattr(socket, "socket", boom)
        monkeypatch.setattr(socket, "create_connection", boom)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        hub = Hub.from_config(base())
        assert ("gpt-4o-mini",) == hub.models

    def test_int_prices_are_numbers(self) -> None:
        """Integers are accepted where numbers are expected."""
        cfg = base()
        cfg["models"]["gpt-4o-mini"]["pricing"] = {"input": 1, "output": 2}
        assert Pricing(1.0, 2.0) == parse_config(cfg).models["gpt-4o-mini"].pricing

    def test_literal_key_is_masked(self) -> None:
        """A literal key is held as a Secret and never shown in reprs."""
        cfg = base()
        cfg["providers"]["openai"]["api_key"] = CANARY
        parsed = parse_config(cfg)
        key = parsed.providers["openai"].api_key
        assert isinstance(key, LiteralKey)
        assert CANARY == key.value.reveal()
        assert CANARY not in repr(parsed)
        assert CANARY not in str(parsed)


class TestErrors:
    def test_issue_example_error_message(self) -> None:
        """A wrong price names its full path and the offending value."""
        cfg = base()
        cfg["models"]["gpt-4o-mini"]["pricing"] = {"input": "cheap", "output": 0.6}
        assert [
            ("models.gpt-4o-mini.pricing.input", "expected a number, got 'cheap'")
        ] == errors_of(cfg)

    def test_every_problem_is_listed_at_once(self) -> None:
        """One ConfigError lists every bad path, sorted."""
        cfg = {
            "providers": {
                "openai": {"kind": "openai", "bogus": 1},
                "other": {"kind": "vllm", "timeouts": {"read": 0}},
                "OpenAI": {"kind": "opnai"},
            },
            "models": {
                "a": {"provider": "nope"},
                "b": {
                    "provider": "openai",
                    "pricing": {"input": True, "output": 1},
                    "capabilities": ["tool"],
                },
                "c": {},
                "d": 3,
                "e": {"provider": "openai", "context_window": 10, "max_output_tokens": 20},
            },
            "extra": {},
        }
        assert [
            ("extra", "unknown key"),
            ("models.a.provider", "unknown provider 'nope'; known: OpenAI, openai, other"),
            (
                "models.b.capabilities",
                "unknown capability 'tool'; expected some of json_schema, prefill, tools, vision",
            ),
            ("models.b.pricing.input", "expected a number, got True"),
            ("models.c.provider", "required key missing"),
            ("models.d", "expected a mapping, got an integer"),
            ("models.e.max_output_tokens", "exceeds context_window"),
            ("providers.OpenAI", "duplicate name (same as 'openai')"),
            ("providers.OpenAI.kind", "unknown kind 'opnai'; known: anthropic, openai, vllm"),
            ("providers.openai.bogus", "unknown key"),
            ("providers.other.timeouts.read", "must be positive"),
        ] == errors_of(cfg)

    def test_is_a_value_error_and_pickles(self) -> None:
        """ConfigError is a ValueError and survives pickling."""
        with pytest.raises(ValueError, match=r"models\.gpt-4o-mini\.provider") as info:
            Hub.from_config({"models": {"gpt-4o-mini": {"provider": 1}}})
        assert isinstance(info.value, ConfigError)
        clone = pickle.loads(pickle.dumps(info.value))
        assert info.value.errors == clone.errors

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ({"envv": CANARY}, "expected {'env': NAME}, {'vault': NAME} or a literal key string"),
            (
                {"env": CANARY, "x": 1},
                "expected {'env': NAME}, {'vault': NAME} or a literal key string",
            ),
            ({"vault": "openai"}, "vault references need 'store.path'"),
            ({"env": CANARY}, "'env' must name an environment variable (a key was pasted?)"),
            (
                {"env": "gsk_" + "A1b2C3d4E5f6G7h8J9k0"},
                "'env' must name an environment variable (a key was pasted?)",
            ),
        ],
    )
    def test_bad_key_is_never_echoed(self, value: Any, reason: str) -> None:
        """Errors about api_key describe the shape and never echo the value."""
        cfg = base()
        cfg["providers"]["openai"]["api_key"] = value
        with pytest.raises(ConfigError) as info:
            Hub.from_config(cfg)
        assert [("providers.openai.api_key", reason)] == list(info.value.errors)
        assert CANARY not in str(info.value)

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            (
                "https://user:pw@api.example.com/v1",
                "credentials must not be put in URLs; use api_key",
            ),
            ("https://api.example.com/v1?key=abc", "must not have a query string or fragment"),
            ("ftp://api.example.com", "expected an http:// or https:// URL"),
        ],
    )
    def test_bad_base_url(self, url: str, reason: str) -> None:
        """Base URLs must be plain http(s) URLs without credentials or queries, and are not echoed."""
        cfg = base()
        cfg["providers"]["openai"]["base_url"] = url
        errors = errors_of(cfg)
        assert [("providers.openai.base_url", reason)] == errors

    def test_base_url_list_index_in_path(self) -> None:
        """A bad URL in a list is reported with its index."""
        cfg = base()
        cfg["providers"]["openai"]["base_url"] = ["http://ok/v1", "nope"]
        assert [
            ("providers.openai.base_url[1]", "expected an http:// or https:// URL")
        ] == errors_of(cfg)

    @pytest.mark.parametrize(
        ("config", "expected"),
        [
            ([], [("", "expected a mapping, got list")]),
            ({}, [("models", "at least one model is required")]),
            ({"models": []}, [("models", "expected a mapping of names, got list")]),
        ],
    )
    def test_wrong_top_level_shapes(self, config: Any, expected: list[tuple[str, str]]) -> None:
        """Wrong top-level shapes are reported, not crashed on."""
        assert expected == errors_of(config)

    def test_negative_and_zero_numbers(self) -> None:
        """Prices must not be negative; sizes and timeouts must be positive."""
        cfg = base()
        cfg["providers"]["openai"]["timeouts"] = {"connect": 0}
        cfg["providers"]["openai"]["max_connections"] = 0
        cfg["models"]["gpt-4o-mini"].update(context_window=0, pricing={"input": -1, "output": 1})
        assert [
            ("models.gpt-4o-mini.context_window", "must be a positive integer"),
            ("models.gpt-4o-mini.pricing.input", "must not be negative"),
            ("providers.openai.max_connections", "must be at least 1"),
            ("providers.openai.timeouts.connect", "must be positive"),
        ] == errors_of(cfg)

    def test_headers_and_options_must_be_mappings(self) -> None:
        """Non-mapping headers and options are reported in plain words."""
        cfg = base()
        cfg["providers"]["openai"].update(headers=3, options=["x"])
        assert [
            ("providers.openai.headers", "expected a mapping, got an integer"),
            ("providers.openai.options", "expected a mapping, got a list"),
        ] == errors_of(cfg)
        cfg["providers"]["openai"].update(headers={"x-a": 1}, options={})
        assert [
            ("providers.openai.headers", "expected string values; not a string: x-a")
        ] == errors_of(cfg)

    def test_strings_are_not_coerced(self) -> None:
        """Numbers given as strings and strings given as numbers are errors, not coerced."""
        cfg = base()
        cfg["models"]["gpt-4o-mini"].update(context_window="128000", upstream=5)
        assert [
            ("models.gpt-4o-mini.context_window", "expected an integer, got '128000'"),
            ("models.gpt-4o-mini.upstream", "expected a string, got 5"),
        ] == errors_of(cfg)


class TestAdapterOptions:
    @pytest.mark.parametrize(
        ("kind", "options", "expected"),
        [
            ("openai", {"max_tokens_field": "max_completion_tokens"}, []),
            (
                "openai",
                {"max_tokens_field": "tokens"},
                [
                    (
                        "providers.p.options.max_tokens_field",
                        "expected 'max_tokens' or 'max_completion_tokens'",
                    )
                ],
            ),
            ("openai", {"colour": 1}, [("providers.p.options.colour", "unknown key")]),
            ("anthropic", {"anthropic_version": "2023-06-01", "beta": ["x"]}, []),
            (
                "anthropic",
                {"beta": "x"},
                [("providers.p.options.beta", "expected a list of anthropic-beta flag strings")],
            ),
            (
                "anthropic",
                {"beta": [1]},
                [("providers.p.options.beta", "expected a list of anthropic-beta flag strings")],
            ),
            (
                "vllm",
                {"max_tokens_field": 3},
                [
                    (
                        "providers.p.options.max_tokens_field",
                        "expected 'max_tokens' or 'max_completion_tokens'",
                    )
                ],
            ),
        ],
    )
    def test_options_are_checked_by_the_adapter(
        self, kind: str, options: dict[str, Any], expected: list[tuple[str, str]]
    ) -> None:
        """Each adapter checks its own options and reports them by path."""
        cfg = {
            "providers": {"p": {"kind": kind, "options": options}},
            "models": {"m": {"provider": "p"}},
        }
        if expected:
            assert expected == errors_of(cfg)
        else:
            Hub.from_config(cfg)


class TestFailoverConfig:
    @pytest.mark.parametrize(
        ("failover", "expected"),
        [
            ({"timeout": 0}, [("failover.timeout", "must be positive")]),
            ({"stall_timeout": -1}, [("failover.stall_timeout", "must be positive")]),
            ({"max_retries": -1}, [("failover.max_retries", "must not be negative")]),
            (
                {"breaker": {"ratio": 0}},
                [("failover.breaker.ratio", "must be above 0 and at most 1")],
            ),
            (
                {"breaker": {"open_for": 60, "max_open_for": 30}},
                [("failover.breaker.max_open_for", "must not be below open_for")],
            ),
            ({"hedge_after": "soon"}, [("failover.hedge_after", "expected a number, got 'soon'")]),
        ],
    )
    def test_bad_values(self, failover: dict[str, Any], expected: list[tuple[str, str]]) -> None:
        """Failover settings are checked by path."""
        cfg = base()
        cfg["failover"] = failover
        assert expected == errors_of(cfg)


class TestHttpImplementation:
    def test_unknown_implementation(self) -> None:
        """Only httpx and aiohttp are accepted."""
        cfg = base()
        cfg["providers"]["openai"]["http"] = "requests"
        assert [("providers.openai.http", "expected 'httpx' or 'aiohttp'")] == errors_of(cfg)

    def test_aiohttp_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Choosing aiohttp without the extra installed is a config error naming the extra."""
        import sys

        monkeypatch.setitem(sys.modules, "aiohttp", None)
        monkeypatch.delitem(sys.modules, "tokenhub._aiohttp", raising=False)
        cfg = base()
        cfg["providers"]["openai"]["http"] = "aiohttp"
        assert [("providers.openai.http", "needs aiohttp: tokenhub[aiohttp]")] == errors_of(cfg)


def test_credentials_in_headers_are_scrubbed() -> None:
    """A credential put in a provider's headers is registered and scrubbed like an API key."""
    from tokenhub._config import parse_config
    from tokenhub._redact import scrub

    token = "gw-canary-" + "7e1f" * 6
    parse_config(
        {
            "providers": {
                "p": {
                    "kind": "openai",
                    "headers": {"X-Gateway-Token": token, "OpenAI-Beta": "assistants=v2"},
                }
            },
            "models": {"m": {"provider": "p"}},
        },
        known_kinds=frozenset({"openai"}),
    )
    assert token not in scrub(f"upstream said: bad token {token}")
    assert "assistants=v2" in scrub("header assistants=v2 kept")


PASSWORD = "hunter2-canary-7f3a9c"


class TestSecretsInErrors:
    @pytest.mark.parametrize(
        ("where", "value"),
        [
            (("vault",), {"password": PASSWORD}),
            (("vault",), {"password": {"env": PASSWORD, "file": PASSWORD}}),
            (("vault",), PASSWORD),
            (("store",), PASSWORD),
            (("providers", "openai"), {"kind": "openai", "headers": f"Authorization: {CANARY}"}),
            (("providers", "openai"), {"kind": "openai", "headers": {"X-Key": [CANARY]}}),
            (("providers", "openai"), {"kind": "openai", "headers": {CANARY: 1}}),
            (("providers", "openai"), {"kind": "openai", "options": CANARY}),
            (("providers", "openai"), {"kind": "openai", "api_key": [CANARY]}),
            (("providers", "openai"), {"kind": "openai", "api_key": CANARY + "\n"}),
            (("providers", "openai"), {"kind": "openai", CANARY: 1}),
            (("models", "gpt-4o-mini"), {"provider": "openai", "upstream": [PASSWORD]}),
            (("budgets",), [{"scope": PASSWORD, "period": "day", "usd": 1}]),
        ],
    )
    def test_a_misplaced_secret_is_never_quoted(self, where: tuple[str, ...], value: Any) -> None:
        """A password or key in the wrong shape is named by path and kind, never quoted."""
        cfg: dict[str, Any] = {**base(), "store": {"path": "x.db"}}
        node = cfg
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
        with pytest.raises(ConfigError) as info:
            Hub.from_config(cfg)
        shown = f"{info.value} {info.value.errors!r} {info.value.args!r}"
        assert PASSWORD not in shown
        assert CANARY not in shown
        assert CANARY[3:15] not in shown
        assert PASSWORD[:8] not in shown
        assert info.value.errors

    def test_a_string_where_a_mapping_belongs_is_named_by_kind(self) -> None:
        """The message still says what was wrong: a string where a mapping was expected."""
        cfg = {**base(), "store": {"path": "x.db"}, "vault": {"password": PASSWORD}}
        assert [("vault.password", "expected a mapping, got a string")] == errors_of(cfg)


class TestNumbersAndNulls:
    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    @pytest.mark.parametrize(
        "path",
        [
            "failover.timeout",
            "failover.backoff_base",
            "failover.breaker.open_for",
            "failover.breaker.ratio",
            "providers.openai.timeouts.read",
            "models.gpt-4o-mini.pricing.input",
            "models.gpt-4o-mini.weight",
            "models.gpt-4o-mini.quality",
            "vault.auto_lock",
            "store.busy_timeout",
            "store.logs.retention_days",
            "routing.max_cost_usd",
            "routing.exploration",
            "routing.weights.cost",
            "budgets[0].usd",
        ],
    )
    def test_nan_and_infinity_are_rejected_everywhere(self, path: str, bad: float) -> None:
        """Every number in a config must be finite: NaN and infinity are ConfigErrors by path."""
        cfg = _with(path, bad)
        errors = errors_of(cfg)
        assert [path] == [p for p, _ in errors]
        assert "finite" in errors[0][1]

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            ("store.busy_timeout", 1e7),
            ("failover.timeout", 1e300),
            ("providers.openai.timeouts.connect", 2e6),
            ("vault.auto_lock", 1e12),
            ("failover.max_retries", 10**30),
            ("failover.breaker.window", 10**30),
            ("models.gpt-4o-mini.quality", 10**400),
        ],
    )
    def test_huge_values_are_rejected(self, path: str, value: float) -> None:
        """Durations over the limit and integers too large to mean anything are ConfigErrors."""
        assert [path] == [p for p, _ in errors_of(_with(path, value))]

    @pytest.mark.parametrize(
        "path",
        ["routing.require", "routing.tags", "routing.deny_models", "models.gpt-4o-mini.tags"],
    )
    def test_null_where_a_list_belongs(self, path: str) -> None:
        """``null`` for a list is a ConfigError saying to write ``[]`` (not a TypeError later)."""
        assert [(path, "expected a list of strings, got null (write [] for none)")] == errors_of(
            _with(path, None)
        )

    def test_null_means_any_where_documented(self) -> None:
        """``routing.providers: null`` stays valid: no restriction."""
        Hub.from_config(_with("routing.providers", None))

    @pytest.mark.parametrize("kind", [["openai"], {"openai": 1}, 3, None])
    def test_kind_of_the_wrong_type(self, kind: Any) -> None:
        """A provider ``kind`` that is not a string is a ConfigError, not a TypeError."""
        cfg = base()
        cfg["providers"]["openai"]["kind"] = kind
        assert ["providers.openai.kind"] == [p for p, _ in errors_of(cfg)]


def _with(path: str, value: Any) -> dict[str, Any]:
    """``base()`` with a store, a budget and ``value`` set at the dotted ``path``."""
    cfg: dict[str, Any] = {
        **base(),
        "store": {"path": "x.db"},
        "budgets": [{"scope": "global", "period": "day", "usd": 1}],
    }
    *parents, last = path.replace("[0]", ".0").split(".")
    node: Any = cfg
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if last == "input":
        node["output"] = 1.0
    node[last] = value
    return cfg


@pytest.mark.parametrize(
    ("headers", "options"),
    [
        ({"X-A": "v\r\nX-Injected: 1"}, {}),
        ({"X A": "v"}, {}),
        ({"X-A": "caf\u00e9"}, {}),
        ({}, {CANARY: 1}),
        ({}, {"\ud800": 1}),
    ],
)
def test_headers_http_cannot_carry_and_odd_option_names(
    headers: dict[str, str], options: dict[str, Any]
) -> None:
    """Header names and values HTTP cannot carry (CR/LF), and odd option names, are ConfigErrors."""
    cfg = base()
    cfg["providers"]["openai"].update(headers=headers, options=options)
    errors = errors_of(cfg)
    assert {"providers.openai.headers", "providers.openai.options"} >= {p for p, _ in errors}
    assert CANARY not in repr(errors)
