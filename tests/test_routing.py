"""Routing: constraints, scoring modes, aliases, fallbacks, failover order and the trace."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenhub import Hub
from tokenhub.errors import InvalidRequestError, NoRouteError, RateLimitError, RequestError
from tokenhub.testing import FakeClock, FakeProvider, Reply

HELLO = [{"role": "user", "content": "Hello"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def hub_for(models: dict[str, dict[str, Any]], **extra: Any) -> Hub:
    """A Hub over offline providers (nothing is sent by explain())."""
    providers = {
        "o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
        "a": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"},
    }
    return Hub.from_config({"providers": providers, "models": models, **extra})


def priced(inp: float, out: float, **kw: Any) -> dict[str, Any]:
    return {"provider": "o", "pricing": {"input": inp, "output": out}, **kw}


class TestConstraints:
    @pytest.mark.parametrize(
        ("model", "request_kw", "policy", "reason"),
        [
            ({"enabled": False}, {}, {}, "disabled"),
            ({}, {}, {"deny_models": ["m"]}, "model not allowed by policy"),
            ({}, {}, {"models": ["other"]}, "model not allowed by policy"),
            ({}, {}, {"deny_providers": ["o"]}, "provider 'o' not allowed by policy"),
            ({}, {}, {"providers": ["a"]}, "provider 'o' not allowed by policy"),
            ({"capabilities": []}, {"tools": [TOOL]}, {}, "missing capability: tools"),
            (
                {"capabilities": ["tools"]},
                {},
                {"require": ["vision", "json_schema"]},
                "missing capabilities: json_schema, vision",
            ),
            (
                {"capabilities": []},
                {
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "x", "schema": {}},
                    }
                },
                {},
                "missing capability: json_schema",
            ),
            ({}, {}, {"tags": ["eu", "zdr"]}, "missing tags: eu, zdr"),
            ({"tags": ["eu"]}, {}, {"tags": ["eu", "zdr"]}, "missing tags: zdr"),
            (
                {"max_output_tokens": 100},
                {"max_tokens": 500},
                {},
                "max_tokens 500 exceeds the model's max output 100",
            ),
            ({"context_window": 500}, {"max_tokens": 460}, {}, "needs ~"),
            (
                {"pricing": {"input": 1000, "output": 1000}},
                {"max_tokens": 100},
                {"max_cost_usd": 0.01},
                "estimated cost $0.1",
            ),
            ({}, {}, {"max_cost_usd": 1}, "no pricing, so max_cost_usd cannot be checked"),
            (
                {"latency_ms": 900},
                {},
                {"max_latency_ms": 500},
                "latency ~900 ms > max_latency_ms 500",
            ),
        ],
    )
    def test_each_constraint_excludes_with_a_reason(
        self, model: dict[str, Any], request_kw: dict[str, Any], policy: dict[str, Any], reason: str
    ) -> None:
        """Each hard constraint filters the model and says why; nothing fits -> NoRouteError."""
        hub = hub_for(
            {"m": {"provider": "o", **model}, "other": {"provider": "a", "enabled": False}}
        )
        with pytest.raises(NoRouteError) as info:
            hub.explain(HELLO, policy=policy, **request_kw)
        reasons = dict(info.value.excluded)
        assert reasons["m"].startswith(reason)
        assert "disabled" == reasons["other"]
        assert isinstance(info.value, LookupError)
        assert "m: " + reason in str(info.value)

    def test_inferred_vision_and_prefill(self) -> None:
        """Image parts need vision; a trailing assistant message needs prefill."""
        hub = hub_for(
            {
                "plain": {"provider": "o", "capabilities": []},
                "full": {"provider": "o", "capabilities": ["vision", "prefill"]},
            }
        )
        image = [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
            }
        ]
        prefill = [*HELLO, {"role": "assistant", "content": "Sure,"}]
        for messages in (image, prefill):
            trace = hub.explain(messages)
            assert ["full"] == [c.model for c in trace.candidates]
            assert "plain" == trace.excluded[0].model

    def test_context_window_fits_with_headroom(self) -> None:
        """A prompt that fits the window (with headroom) passes; one that does not is excluded."""
        hub = hub_for(
            {
                "small": {"provider": "o", "context_window": 1000},
                "big": {"provider": "o", "context_window": 100000},
            }
        )
        long = [{"role": "user", "content": "word " * 2000}]
        trace = hub.explain(long, max_tokens=10)
        assert ["big"] == [c.model for c in trace.candidates]
        assert "context window 1000" in trace.excluded[0].reason
        assert 2 == len(hub.explain(HELLO, max_tokens=10).candidates)

    def test_pinned_model_that_fails_a_constraint_falls_to_fallbacks(self) -> None:
        """A pinned model is still checked; its fallbacks take over when it is filtered."""
        hub = hub_for(
            {"a": {"provider": "o", "enabled": False}, "b": {"provider": "o"}},
            routing={"fallbacks": ["b"]},
        )
        trace = hub.explain(HELLO, model="a")
        assert ("a", ["b"]) == (trace.pinned, [c.model for c in trace.candidates])
        assert [("a", "disabled")] == [(e.model, e.reason) for e in trace.excluded]


class TestScoring:
    MODELS: dict[str, dict[str, Any]] = {
        "cheap": priced(0.1, 0.4, latency_ms=2000, quality=0.5),
        "fast": priced(3, 12, latency_ms=200, quality=0.7),
        "smart": priced(15, 60, latency_ms=1500, quality=0.95),
    }

    @pytest.mark.parametrize(
        ("mode", "first"), [("cheap", "cheap"), ("fast", "fast"), ("best", "smart")]
    )
    def test_modes_rank_by_their_criterion(self, mode: str, first: str) -> None:
        """cheap prefers price, fast latency, best quality."""
        trace = hub_for(self.MODELS).explain(HELLO, policy={"mode": mode})
        assert first == trace.candidates[0].model
        assert mode == trace.mode
        assert trace.candidates == tuple(sorted(trace.candidates, key=lambda c: -c.score))

    def test_config_default_and_custom_weights(self) -> None:
        """routing sets the default mode; request weights override it and report mode 'custom'."""
        hub = hub_for(self.MODELS, routing={"mode": "best"})
        assert "smart" == hub.explain(HELLO).candidates[0].model
        trace = hub.explain(HELLO, policy={"weights": {"latency": 1}})
        assert ("custom", "fast") == (trace.mode, trace.candidates[0].model)
        assert "cheap" == hub.explain(HELLO, policy={"mode": "cheap"}).candidates[0].model

    def test_components_and_estimates_are_reported(self) -> None:
        """Each candidate carries normalised components, estimated cost and output tokens."""
        trace = hub_for(self.MODELS).explain(HELLO, max_tokens=100, policy={"mode": "cheap"})
        first = trace.candidates[0]
        comps = dict(first.components)
        assert 1.0 == comps["cost"]
        assert set(comps) == {"cost", "latency", "quality", "reliability", "weight"}
        assert all(0.0 <= v <= 1.0 for c in trace.candidates for _, v in c.components)
        assert 100 == first.output_tokens
        expected = (trace.prompt_tokens * 0.1 + 100 * 0.4) / 1e6
        assert expected == pytest.approx(first.estimated_cost_usd)

    def test_ties_keep_config_order(self) -> None:
        """Equal scores keep the order of the config, every time."""
        hub = hub_for({"z": priced(1, 1), "a": priced(1, 1), "m": priced(1, 1)})
        for _ in range(3):
            assert ["z", "a", "m"] == [c.model for c in hub.explain(HELLO).candidates]

    def test_weight_breaks_otherwise_equal_models(self) -> None:
        """The model weight nudges the ranking."""
        hub = hub_for({"a": priced(1, 1, weight=1), "b": priced(1, 1, weight=3)})
        assert "b" == hub.explain(HELLO).candidates[0].model

    def test_exploration_is_seeded_by_request_id(self) -> None:
        """With exploration the first pick varies across requests but is fixed per request id."""
        hub = hub_for(self.MODELS, routing={"exploration": 1.0})
        firsts = {hub.explain(HELLO, request_id=f"r{i}").candidates[0].model for i in range(60)}
        assert len(firsts) > 1
        assert (
            hub.explain(HELLO, request_id="same").candidates
            == hub.explain(HELLO, request_id="same").candidates
        )
        assert 1 == len(
            {
                hub_for(self.MODELS).explain(HELLO, request_id=f"r{i}").candidates[0].model
                for i in range(20)
            }
        )


class TestPolicyErrors:
    @pytest.mark.parametrize(
        ("policy", "expected"),
        [
            (
                {"mode": "cheapest"},
                [
                    (
                        "policy.mode",
                        "unknown mode 'cheapest'; expected one of cheap, balanced, fast, best",
                    )
                ],
            ),
            ({"colour": 1}, [("policy.colour", "unknown key")]),
            ({"max_cost_usd": "free"}, [("policy.max_cost_usd", "expected a number, got 'free'")]),
            ({"require": ["telepathy"]}, [("policy.require", "unknown capabilities: telepathy")]),
            ({"fallbacks": ["nope"]}, [("policy.fallbacks", "unknown model 'nope'")]),
            ({"headroom": 1.5}, [("policy.headroom", "must be at least 0 and below 1")]),
            ({"weights": {"cost": -1}}, [("policy.weights.cost", "must not be negative")]),
        ],
    )
    def test_bad_request_policy(
        self, policy: dict[str, Any], expected: list[tuple[str, str]]
    ) -> None:
        """A bad per-request policy is a RequestError naming the key."""
        with pytest.raises(RequestError) as info:
            hub_for({"m": priced(1, 1)}).explain(HELLO, policy=policy)
        assert expected == list(info.value.errors)

    def test_request_policy_without_the_config_parser(self) -> None:
        """Routing structures and checks a request's policy without loading the config parser."""
        code = (
            "import sys\n"
            "from tokenhub.errors import RequestError\n"
            "from tokenhub.routing._checks import policy_override\n"
            "from tokenhub.routing._policy import Policy\n"
            "p = policy_override(Policy(), {'tags': ['a'], 'fallbacks': ['m']}, {'m'}, set())\n"
            "try:\n"
            "    policy_override(Policy(), {'tags': 'ab', 'fallbacks': 'm'}, {'m'}, set())\n"
            "except RequestError as e:\n"
            "    print(*(f'{path}: {reason}' for path, reason in sorted(e.errors)), sep='\\n')\n"
            "config = sorted(m for m in sys.modules if m in ('tokenhub._config', 'tokenhub._schema'))\n"
            "print(p.tags, p.fallbacks, config)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert [
            "policy.fallbacks: expected a list of names",
            "policy.tags: expected a list of strings",
            "frozenset({'a'}) ('m',) []",
        ] == out.stdout.splitlines()

    def test_bad_config_routing_and_aliases(self) -> None:
        """routing and aliases are validated with the rest of the config."""
        from tokenhub.errors import ConfigError

        with pytest.raises(ConfigError) as info:
            hub_for(
                {"m": priced(1, 1)},
                routing={"mode": "fastest", "fallbacks": ["x"]},
                aliases={
                    "m": {"models": ["m"]},
                    "a": {"models": {"m": 0}},
                    "b": {"models": ["q"], "sticky": "sometimes"},
                },
            )
        assert [
            ("aliases.a", "models: expected a list of names or a mapping of names to weights > 0"),
            ("aliases.b", "sticky: expected 'request', 'caller', 'round_robin' or 'random'"),
            ("aliases.m", "an alias must not have the name of a model"),
            ("routing.fallbacks", "unknown model 'x'"),
            ("routing.mode", "unknown mode 'fastest'; expected one of cheap, balanced, fast, best"),
        ] == list(info.value.errors)


class TestAliases:
    MODELS: dict[str, dict[str, Any]] = {"a": priced(1, 1), "b": priced(1, 1), "c": priced(1, 1)}

    def test_weights_split_traffic(self) -> None:
        """A request-sticky alias splits requests in proportion to the weights."""
        hub = hub_for(self.MODELS, aliases={"ab": {"models": {"a": 3, "b": 1}}})
        counts = collections.Counter(
            hub.explain(HELLO, model="ab", request_id=f"req-{i}").pinned for i in range(4000)
        )
        assert 0.70 < counts["a"] / 4000 < 0.80
        assert set(counts) == {"a", "b"}

    def test_request_stickiness(self) -> None:
        """The same request id always gets the same variant."""
        hub = hub_for(self.MODELS, aliases={"ab": {"models": ["a", "b"]}})
        assert (
            len({hub.explain(HELLO, model="ab", request_id="fixed").pinned for _ in range(20)}) == 1
        )

    def test_caller_stickiness(self) -> None:
        """A caller-sticky alias gives each caller one variant across requests."""
        hub = hub_for(self.MODELS, aliases={"ab": {"models": ["a", "b"], "sticky": "caller"}})
        for caller in ("alice", "bob", "carol"):
            assert 1 == len(
                {hub.explain(HELLO, model="ab", caller=caller).pinned for _ in range(20)}
            )
        assert 2 == len(
            {hub.explain(HELLO, model="ab", caller=f"user-{i}").pinned for i in range(50)}
        )

    def test_round_robin_follows_weights(self) -> None:
        """Round-robin hands out variants in proportion to their weights; explain() only peeks."""
        import anyio

        from tests.test_hub import EchoProvider

        models = {name: {"provider": "x"} for name in ("a", "b", "c")}
        aliases = {"abc": {"models": {"a": 2, "b": 1, "c": 1}, "sticky": "round_robin"}}
        hub = Hub.from_config(
            {"models": models, "aliases": aliases}, providers={"x": EchoProvider()}
        )
        assert 1 == len({hub.explain(HELLO, model="abc").pinned for _ in range(5)})

        async def run() -> list[str]:
            got = []
            for _ in range(400):
                expected = hub.explain(HELLO, model="abc").pinned
                r = await hub.chat(HELLO, model="abc")
                assert expected == r.model
                got.append(r.model)
            return got

        counts = collections.Counter(anyio.run(run))
        assert {"a": 200, "b": 100, "c": 100} == {k: round(v, -1) for k, v in counts.items()}

    def test_alias_fallbacks_and_trace(self) -> None:
        """The chosen variant comes first, then the alias's fallbacks, then the policy's."""
        hub = hub_for(
            self.MODELS,
            aliases={"x": {"models": ["a"], "fallbacks": ["b"]}},
            routing={"fallbacks": ["c", "b"]},
        )
        trace = hub.explain(HELLO, model="x")
        assert ("x", "a", ["a", "b", "c"]) == (
            trace.alias,
            trace.pinned,
            [c.model for c in trace.candidates],
        )

    def test_unknown_name(self) -> None:
        """An unknown model or alias lists both kinds of names."""
        from tokenhub.errors import ModelNotFoundError

        hub = hub_for(self.MODELS, aliases={"x": {"models": ["a"]}})
        with pytest.raises(ModelNotFoundError, match="a, b, c, x"):
            hub.explain(HELLO, model="nope")


class TestTrace:
    def test_to_dict_and_str(self) -> None:
        """The trace serialises to JSON and prints a readable table."""
        hub = hub_for({"m": priced(1, 2), "off": {"provider": "a", "enabled": False}})
        trace = hub.explain(HELLO, request_id="r1")
        data = trace.to_dict()
        assert "r1" == json.loads(json.dumps(data))["request_id"]
        assert {"cost", "latency", "quality", "reliability", "weight"} == set(
            data["candidates"][0]["components"]
        )
        text = str(trace)
        assert "route r1 mode=balanced" in text
        assert "off: disabled" in text
        assert "m" in text.splitlines()[2]


@pytest.mark.anyio
class TestFailover:
    async def test_attempts_follow_explain_order_and_fail_over(self, fake: FakeProvider) -> None:
        """The Hub tries candidates in explain() order, moving on after provider failures."""
        cfg = {
            "providers": {
                "o": {"kind": "openai", "base_url": fake.openai_base_url},
                "a": {"kind": "anthropic", "base_url": fake.anthropic_base_url},
            },
            "models": {
                "m1": priced(1, 1),
                "m2": {"provider": "a", "pricing": {"input": 2, "output": 2}},
                "m3": priced(3, 3),
            },
            "routing": {"mode": "cheap"},
        }
        fake.script("m1", Reply(status=429, headers={"retry-after": "5"}))
        fake.script("m2", Reply(status=503))
        fake.script("m3", Reply(text="third time lucky"))
        async with Hub.from_config(cfg) as hub:
            planned = [c.model for c in hub.explain(HELLO, request_id="r").candidates]
            r = await hub.chat(HELLO, request_id="r")
        assert ["m1", "m2", "m3"] == planned
        assert planned == [req.model for req in fake.requests]
        assert ("third time lucky", "m3", "o") == (r.text, r.model, r.provider)
        assert r.trace is not None
        assert [("m1", "rate_limited", 429), ("m2", "overloaded", 503), ("m3", "ok", None)] == [
            (a.model, a.outcome, a.status) for a in r.trace.attempts
        ]
        assert "m3" == r.trace.chosen

    async def test_invalid_request_does_not_fail_over(self, fake: FakeProvider) -> None:
        """A request the provider rejects as invalid is raised at once, with the trace."""
        cfg = {
            "providers": {"o": {"kind": "openai", "base_url": fake.openai_base_url}},
            "models": {"m1": priced(1, 1), "m2": priced(2, 2)},
            "routing": {"mode": "cheap"},
        }
        fake.script("m1", Reply(status=400))
        async with Hub.from_config(cfg) as hub:
            with pytest.raises(InvalidRequestError) as info:
                await hub.chat(HELLO)
        assert ["m1"] == [r.model for r in fake.requests]
        assert info.value.trace is not None
        assert ["invalid_request"] == [a.outcome for a in info.value.trace.attempts]

    async def test_last_error_is_raised_with_every_attempt(self, fake: FakeProvider) -> None:
        """When every candidate fails, the last error carries the whole trace, retries included."""
        cfg = {
            "providers": {"o": {"kind": "openai", "base_url": fake.openai_base_url}},
            "models": {"m1": priced(1, 1), "m2": priced(2, 2)},
            "routing": {"mode": "cheap"},
        }
        fake.default(None, Reply(status=429))
        clock = FakeClock()
        async with Hub.from_config(cfg, clock=clock) as hub:
            with pytest.raises(RateLimitError) as info:
                await hub.chat(HELLO)
        assert info.value.trace is not None
        assert ["m1", "m2", "m2", "m2"] == [a.model for a in info.value.trace.attempts]
        assert [0.125, 0.25] == clock.sleeps  # full jitter at draw 0.5: 0.5 * 0.25 * 2**n

    async def test_filtered_fallback_is_never_attempted(self, fake: FakeProvider) -> None:
        """A fallback that fails a constraint is never sent a request."""
        cfg = {
            "providers": {"o": {"kind": "openai", "base_url": fake.openai_base_url}},
            "models": {
                "main": priced(1, 1),
                "nocaps": {"provider": "o", "capabilities": []},
                "ok": priced(1, 1),
            },
            "routing": {"fallbacks": ["nocaps", "ok"]},
        }
        fake.script("main", Reply(status=503))  # an overload: no quick retry on a pinned model
        async with Hub.from_config(cfg) as hub:
            r = await hub.chat(HELLO, model="main", tools=[TOOL])
        assert ["main", "ok"] == [req.model for req in fake.requests]
        assert r.trace is not None
        assert [("nocaps", "missing capability: tools")] == [
            (e.model, e.reason) for e in r.trace.excluded
        ]

    async def test_stream_fails_over_before_the_first_chunk(self, fake: FakeProvider) -> None:
        """A stream whose candidate fails before any chunk moves on invisibly."""
        cfg = {
            "providers": {"o": {"kind": "openai", "base_url": fake.openai_base_url}},
            "models": {"m1": priced(1, 1), "m2": priced(2, 2)},
            "routing": {"mode": "cheap"},
        }
        fake.script("m1", Reply(text="never", cut_after=0))
        fake.script("m2", Reply(text="from the fallback"))
        async with Hub.from_config(cfg) as hub:
            stream = hub.stream(HELLO)
            text = "".join([c.text async for c in stream])
        assert "from the fallback" == text
        assert ("m2", ["provider_down", "ok"]) == (
            stream.response.model,
            [a.outcome for a in stream.trace.attempts],
        )
        assert stream.response.trace is not None

    async def test_learned_output_length_feeds_estimates(self, fake: FakeProvider) -> None:
        """Without max_tokens, the estimate uses the observed average output length."""
        cfg = {
            "providers": {"o": {"kind": "openai", "base_url": fake.openai_base_url}},
            "models": {"m": priced(1, 1)},
        }
        fake.default("m", Reply(text="x", usage=(10, 40)))
        async with Hub.from_config(cfg) as hub:
            assert 256 == hub.explain(HELLO).candidates[0].output_tokens
            await hub.chat(HELLO)
            assert 40 == hub.explain(HELLO).candidates[0].output_tokens


# --- properties -------------------------------------------------------------------------------

CAPS = ["tools", "vision", "json_schema", "prefill"]


def _fits(m: dict[str, Any]) -> bool:
    return bool(m["max_output_tokens"] <= m["context_window"])


model_st: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "provider": st.sampled_from(["o", "a"]),
        "enabled": st.booleans(),
        "capabilities": st.lists(st.sampled_from(CAPS), unique=True),
        "tags": st.lists(st.sampled_from(["eu", "us", "zdr"]), unique=True),
        "context_window": st.integers(10, 5000),
        "max_output_tokens": st.integers(1, 2000),
        "quality": st.floats(0, 1),
        "latency_ms": st.floats(1, 5000),
        "pricing": st.fixed_dictionaries({"input": st.floats(0, 50), "output": st.floats(0, 50)}),
    }
).filter(_fits)
policy_st = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["cheap", "balanced", "fast", "best"]),
        "require": st.lists(st.sampled_from(CAPS), unique=True, max_size=2),
        "tags": st.lists(st.sampled_from(["eu", "zdr"]), unique=True, max_size=1),
        "max_cost_usd": st.floats(0, 0.5),
        "max_latency_ms": st.floats(1, 5000),
        "deny_providers": st.lists(st.sampled_from(["o", "a"]), max_size=1),
    },
)


class TestProperties:
    @settings(max_examples=150, deadline=None)
    @given(
        models=st.dictionaries(st.sampled_from([f"m{i}" for i in range(8)]), model_st, min_size=1),
        policy=policy_st,
        max_tokens=st.integers(1, 3000),
        words=st.integers(1, 400),
        tools=st.booleans(),
    )
    def test_every_candidate_satisfies_every_constraint(
        self,
        models: dict[str, Any],
        policy: dict[str, Any],
        max_tokens: int,
        words: int,
        tools: bool,
    ) -> None:
        """Candidates pass every constraint; every other model is excluded with a reason."""
        hub = hub_for(models)
        messages = [{"role": "user", "content": "word " * words}]
        kw: dict[str, Any] = {"max_tokens": max_tokens, "policy": policy}
        if tools:
            kw["tools"] = [TOOL]
        try:
            trace = hub.explain(messages, **kw)
        except NoRouteError as e:
            assert {m for m, _ in e.excluded} == set(models)
            return
        chosen = {c.model for c in trace.candidates}
        assert chosen | {e.model for e in trace.excluded} == set(models)
        assert not chosen & {e.model for e in trace.excluded}
        need = set(policy.get("require", ())) | ({"tools"} if tools else set())
        for c in trace.candidates:
            m = models[c.model]
            assert m["enabled"]
            assert need <= set(m["capabilities"])
            assert set(policy.get("tags", ())) <= set(m["tags"])
            assert m["provider"] not in policy.get("deny_providers", ())
            assert max_tokens <= m["max_output_tokens"]
            assert (trace.prompt_tokens + max_tokens) * 1.1 <= m["context_window"]
            if "max_cost_usd" in policy:
                assert c.estimated_cost_usd is not None
                assert c.estimated_cost_usd <= policy["max_cost_usd"]
            if "max_latency_ms" in policy:
                assert m["latency_ms"] <= policy["max_latency_ms"]

    @settings(max_examples=100, deadline=None)
    @given(
        base=model_st.filter(lambda m: m["pricing"]["input"] >= 0.01),
        factor=st.floats(1.01, 10),
        mode_field=st.sampled_from(
            [("cheap", "pricing"), ("fast", "latency_ms"), ("best", "quality")]
        ),
        first_is_better=st.booleans(),
    )
    def test_mode_prefers_the_better_of_two_otherwise_equal_models(
        self,
        base: dict[str, Any],
        factor: float,
        mode_field: tuple[str, str],
        first_is_better: bool,
    ) -> None:
        """Of two models equal but for price/latency/quality, cheap/fast/best ranks the better first."""
        mode, field = mode_field
        base = {
            **base,
            "enabled": True,
            "capabilities": [],
            "tags": [],
            "context_window": 100000,
            "max_output_tokens": 2000,
            "quality": 0.4,
        }
        worse = dict(base)
        if field == "pricing":
            worse["pricing"] = {k: v * factor for k, v in base["pricing"].items()}
        elif field == "latency_ms":
            worse["latency_ms"] = base["latency_ms"] * factor
        else:
            worse["quality"] = (
                min(1.0, base["quality"] * factor) if base["quality"] * factor <= 1 else 1.0
            )
            base, worse = worse, base  # higher quality is better
        models = (
            {"first": base, "second": worse}
            if first_is_better
            else {"first": worse, "second": base}
        )
        trace = hub_for(models).explain(HELLO, policy={"mode": mode}, max_tokens=10)
        better = "first" if first_is_better else "second"
        assert better == trace.candidates[0].model


class _Failing:
    """An in-process provider that fails every call with a retryable error, recording the order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def capabilities(self, model: str) -> Any:
        from tokenhub.providers import Capabilities

        return Capabilities(tools=True, vision=True, json_schema=True, prefill=True)

    async def send(self, call: Any) -> Any:
        from tokenhub.errors import ErrorClass, ProviderUnavailableError

        self.seen.append(call.model)
        raise ProviderUnavailableError("down", error_class=ErrorClass.OVERLOADED, model=call.model)

    def stream(self, call: Any) -> Any:  # pragma: no cover - not used
        raise NotImplementedError

    def classify(self, status: int, headers: Any, body: bytes) -> Any:  # pragma: no cover
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class TestAttemptProperties:
    @settings(max_examples=60, deadline=None)
    @given(
        models=st.dictionaries(
            st.sampled_from([f"m{i}" for i in range(6)]),
            st.fixed_dictionaries(
                {
                    "provider": st.just("x"),
                    "enabled": st.booleans(),
                    "quality": st.floats(0, 1),
                    "latency_ms": st.floats(1, 5000),
                    "tags": st.lists(st.sampled_from(["eu", "us"]), unique=True),
                    "pricing": st.fixed_dictionaries(
                        {"input": st.floats(0, 50), "output": st.floats(0, 50)}
                    ),
                }
            ),
            min_size=1,
        ),
        policy=st.fixed_dictionaries(
            {},
            optional={
                "mode": st.sampled_from(["cheap", "balanced", "fast", "best"]),
                "tags": st.lists(st.just("eu"), max_size=1),
                "exploration": st.floats(0, 2),
            },
        ),
        pinned=st.none() | st.sampled_from([f"m{i}" for i in range(6)]),
    )
    def test_attempts_follow_explain_and_skip_excluded(
        self, models: dict[str, Any], policy: dict[str, Any], pinned: str | None
    ) -> None:
        """The Hub tries exactly explain()'s candidates, in order, and never an excluded model."""
        import anyio

        if pinned is not None and pinned not in models:
            pinned = None
        provider = _Failing()
        routing = {"fallbacks": sorted(models)}
        cfg = {"models": models, "routing": routing, "failover": {"max_retries": 0}}
        hub = Hub.from_config(cfg, providers={"x": provider})
        try:
            planned = hub.explain(HELLO, model=pinned, policy=policy, request_id="fixed")
        except NoRouteError as e:
            assert {m for m, _ in e.excluded} <= set(models)
            return

        async def run() -> None:
            with pytest.raises(Exception, match="down") as info:
                await hub.chat(HELLO, model=pinned, policy=policy, request_id="fixed")
            trace = info.value.trace  # type: ignore[attr-defined]
            assert [c.model for c in planned.candidates] == [a.model for a in trace.attempts]

        anyio.run(run)
        assert [c.model for c in planned.candidates] == provider.seen
        assert not set(provider.seen) & {e.model for e in planned.excluded}
