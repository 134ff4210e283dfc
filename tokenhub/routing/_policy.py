"""Routing policy: hard constraints, then scoring. Pure: no I/O, no clocks.

Scores are *higher-is-better*: each criterion becomes a utility in [0, 1] (1 is
best) and the score is their weighted mean under the mode's weights.

* cost: ``cheapest / this`` over the estimated request cost (unknown: 0.5)
* latency: ``fastest / this`` over observed, else configured, latency (unknown: 0.5)
* quality: the model's configured ``quality`` (default 0.5)
* reliability: ``1 - observed failure rate`` (no data: 1)
* weight: ``weight / largest weight``

Ratios rather than min-max spreads, so that a tiny price difference does not
look like the whole range.
"""

from __future__ import annotations

import functools
import math
import random
import zlib
from typing import TYPE_CHECKING, Literal

import attrs

from tokenhub._models import Candidate, Exclusion, ImagePart

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tokenhub._models import ChatRequest
    from tokenhub._runtime import Block, StateBackend

__all__ = [
    "CAPABILITIES",
    "MODES",
    "Alias",
    "Features",
    "ModelInfo",
    "Policy",
    "Weights",
    "infer_capabilities",
    "rank",
]

_GOLDEN = (math.sqrt(5) - 1) / 2
DEFAULT_OUTPUT_TOKENS = 256


@attrs.frozen
class Weights:
    """How much each criterion counts; normalised to sum to 1."""

    cost: float = 0.0
    latency: float = 0.0
    quality: float = 0.0
    reliability: float = 0.0
    weight: float = 0.0

    def normalised(self) -> Weights:
        """Scale the weights to sum to 1 (all equal when they sum to 0)."""
        total = self.cost + self.latency + self.quality + self.reliability + self.weight
        if total <= 0:
            return Weights(0.2, 0.2, 0.2, 0.2, 0.2)
        return Weights(
            self.cost / total,
            self.latency / total,
            self.quality / total,
            self.reliability / total,
            self.weight / total,
        )


MODES: dict[str, Weights] = {
    "cheap": Weights(cost=0.65, latency=0.10, quality=0.10, reliability=0.10, weight=0.05),
    "balanced": Weights(cost=0.25, latency=0.25, quality=0.25, reliability=0.20, weight=0.05),
    "fast": Weights(cost=0.10, latency=0.65, quality=0.10, reliability=0.10, weight=0.05),
    "best": Weights(cost=0.05, latency=0.05, quality=0.75, reliability=0.10, weight=0.05),
}


@attrs.frozen
class Policy:
    """Constraints and preferences for choosing a model.

    Config ``routing`` sets the defaults; a request's ``policy=`` overrides keys.
    """

    mode: str = "balanced"
    weights: Weights | None = None
    max_cost_usd: float | None = None
    max_latency_ms: float | None = None
    require: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    providers: frozenset[str] | None = None
    deny_providers: frozenset[str] = frozenset()
    models: frozenset[str] | None = None
    deny_models: frozenset[str] = frozenset()
    headroom: float = 0.1
    exploration: float = 0.0
    fallbacks: tuple[str, ...] = ()

    def effective_weights(self) -> Weights:
        """The custom weights if given, else the mode's profile, normalised."""
        return _normalised(self.weights or MODES[self.mode])


@functools.lru_cache(maxsize=256)
def _normalised(weights: Weights) -> Weights:
    """:meth:`Weights.normalised`, once per distinct weights (every request needs them)."""
    return weights.normalised()


Sticky = Literal["request", "caller", "round_robin", "random"]


@attrs.frozen
class Alias:
    """A name for several models with weights (A/B tests), and fallbacks tried after."""

    models: tuple[tuple[str, float], ...]
    sticky: Sticky = "request"
    fallbacks: tuple[str, ...] = ()

    def pick(self, *, request_id: str, caller: str | None, turn: int) -> str:
        """Choose a variant: sticky by request id or caller, round-robin by ``turn``, or random."""
        total = sum(w for _, w in self.models)
        if self.sticky == "round_robin":
            point = (turn * _GOLDEN) % 1.0
        elif self.sticky == "random":
            point = random.random()  # noqa: S311 - traffic splitting, not cryptography
        else:
            key = caller if self.sticky == "caller" and caller else request_id
            point = zlib.crc32(key.encode()) / 2**32
        point *= total
        for name, w in self.models:
            if point < w:
                return name
            point -= w
        return self.models[-1][0]


@attrs.frozen
class ModelInfo:
    """What routing knows about a configured model (precomputed once per config)."""

    name: str
    provider: str
    index: int
    capabilities: frozenset[str]
    context_window: int | None = None
    max_output_tokens: int | None = None
    input_price: float | None = None
    output_price: float | None = None
    quality: float = 0.5
    tags: frozenset[str] = frozenset()
    enabled: bool = True
    weight: float = 1.0
    latency_ms: float | None = None
    output_tokens: int | None = None


@attrs.frozen
class Features:
    """What the request needs: capabilities and token counts."""

    capabilities: frozenset[str]
    prompt_tokens: int
    max_tokens: int | None


CAPABILITIES = frozenset({"tools", "vision", "json_schema", "prefill"})
"""The capabilities a config may give a model and a policy may require."""


def infer_capabilities(request: ChatRequest) -> frozenset[str]:
    """Capabilities the request needs: tools, vision (image parts), json_schema, prefill."""
    caps: set[str] = set()
    if request.tools:
        caps.add("tools")
    if request.response_format is not None and request.response_format.type == "json_schema":
        caps.add("json_schema")
    for m in request.messages:
        if isinstance(m.content, tuple) and any(isinstance(p, ImagePart) for p in m.content):
            caps.add("vision")
    if request.messages[-1].role == "assistant":
        caps.add("prefill")
    return frozenset(caps)


def _exclusion(m: ModelInfo, f: Features, p: Policy, state: StateBackend, out: int) -> str | None:
    """Return why ``m`` is filtered out, or ``None`` when it passes every constraint."""
    if not m.enabled:
        return "disabled"
    if m.name in p.deny_models or (p.models is not None and m.name not in p.models):
        return "model not allowed by policy"
    if m.provider in p.deny_providers or (
        p.providers is not None and m.provider not in p.providers
    ):
        return f"provider {m.provider!r} not allowed by policy"
    missing = f.capabilities - m.capabilities
    if missing:
        return (
            f"missing capabilit{'y' if len(missing) == 1 else 'ies'}: {', '.join(sorted(missing))}"
        )
    if not p.tags <= m.tags:
        return f"missing tags: {', '.join(sorted(p.tags - m.tags))}"
    if (
        f.max_tokens is not None
        and m.max_output_tokens is not None
        and f.max_tokens > m.max_output_tokens
    ):
        return f"max_tokens {f.max_tokens} exceeds the model's max output {m.max_output_tokens}"
    if m.context_window is not None:
        need = (f.prompt_tokens + out) * (1 + p.headroom)
        if need > m.context_window:
            return (
                f"needs ~{need:.0f} tokens (prompt ~{f.prompt_tokens} + output {out} "
                f"+ {p.headroom:.0%} headroom) > context window {m.context_window}"
            )
    if p.max_cost_usd is not None:
        cost = _cost(m, f.prompt_tokens, out)
        if cost is None:
            return "no pricing, so max_cost_usd cannot be checked"
        if cost > p.max_cost_usd:
            return f"estimated cost ${cost:.6f} > max_cost_usd ${p.max_cost_usd:g}"
    if p.max_latency_ms is not None:
        latency = state.latency_ms(m.name) or m.latency_ms
        if latency is not None and latency > p.max_latency_ms:
            return f"latency ~{latency:.0f} ms > max_latency_ms {p.max_latency_ms:g}"
    return None


def _readmit(blocked: list[tuple[Block, ModelInfo, int]]) -> tuple[ModelInfo, int] | None:
    """Never leave zero candidates for runtime reasons alone: take back the best blocked one.

    The open circuit whose probe is due soonest comes first, then the rate limit
    that ends soonest; a disabled credential never.
    """
    circuits = [b for b in blocked if b[0].kind == "circuit_open"]
    if circuits:
        _, m, out = min(circuits, key=lambda b: b[0].until)
        return m, out
    cooling = [b for b in blocked if b[0].kind == "rate_limited"]
    if cooling:
        _, m, out = min(cooling, key=lambda b: b[0].until)
        return m, out
    return None


def _cost(m: ModelInfo, prompt: int, out: int) -> float | None:
    if m.input_price is None or m.output_price is None:
        return None
    return (prompt * m.input_price + out * m.output_price) / 1_000_000


def _output_tokens(m: ModelInfo, f: Features, state: StateBackend) -> int:
    if f.max_tokens is not None:
        return f.max_tokens
    if m.output_tokens is not None:
        return m.output_tokens
    learned = state.output_tokens()
    return round(learned) if learned is not None else DEFAULT_OUTPUT_TOKENS


def _ratio(best: float | None, value: float | None) -> float:
    """Utility of a lower-is-better value: ``best / value`` (0.5 when unknown)."""
    if value is None or best is None:
        return 0.5
    if value <= 0:
        return 1.0
    return best / value


def rank(
    models: Sequence[ModelInfo],
    features: Features,
    policy: Policy,
    state: StateBackend,
    *,
    ordered: bool,
    seed: str,
) -> tuple[list[Candidate], list[Exclusion]]:
    """Filter ``models`` and score the rest.

    With ``ordered`` the given order is kept (a pinned model, then its
    fallbacks); otherwise candidates are sorted by score, ties broken by config
    order, and ``policy.exploration`` > 0 samples the first by a softmax seeded
    with ``seed``.
    """
    excluded: list[Exclusion] = []
    passed: list[tuple[ModelInfo, int, float | None, float | None]] = []
    blocked: list[tuple[Block, ModelInfo, int]] = []
    for m in models:
        out = _output_tokens(m, features, state)
        why = _exclusion(m, features, policy, state, out)
        if why is not None:
            excluded.append(Exclusion(m.name, why))
            continue
        block = state.blocked(m.name, m.provider)
        if block is not None:
            excluded.append(Exclusion(m.name, block.reason))
            blocked.append((block, m, out))
            continue
        latency = state.latency_ms(m.name) or m.latency_ms
        passed.append((m, out, _cost(m, features.prompt_tokens, out), latency))
    note = None
    if not passed:
        readmit = _readmit(blocked)
        if readmit is None:
            return [], excluded
        m, out = readmit
        note = "every candidate was blocked; trying this one anyway: " + next(
            e.reason for e in excluded if e.model == m.name
        )
        excluded = [e for e in excluded if e.model != m.name]
        latency = state.latency_ms(m.name) or m.latency_ms
        passed.append((m, out, _cost(m, features.prompt_tokens, out), latency))
    w = policy.effective_weights()
    costs = [c for _, _, c, _ in passed if c is not None]
    latencies = [lat for _, _, _, lat in passed if lat is not None]
    best_cost = min(costs) if costs else None
    best_latency = min(latencies) if latencies else None
    top_weight = max(m.weight for m, _, _, _ in passed) or 1.0
    scored: list[tuple[float, int, Candidate]] = []
    for m, out, cost, latency in passed:
        failure = state.failure_rate(m.name)
        comps = (
            ("cost", _ratio(best_cost, cost)),
            ("latency", _ratio(best_latency, latency)),
            ("quality", m.quality),
            ("reliability", 1.0 - (failure or 0.0)),
            ("weight", m.weight / top_weight),
        )
        score = (
            w.cost * comps[0][1]
            + w.latency * comps[1][1]
            + w.quality * comps[2][1]
            + w.reliability * comps[3][1]
            + w.weight * comps[4][1]
        )
        candidate = Candidate(m.name, m.provider, score, comps, cost, out, latency, note)
        scored.append((score, m.index, candidate))
    if not ordered:
        scored.sort(key=lambda t: (-t[0], t[1]))
        if policy.exploration > 0 and len(scored) > 1:
            first = _softmax_pick([s for s, _, _ in scored], policy.exploration, seed)
            scored.insert(0, scored.pop(first))
    return [c for _, _, c in scored], excluded


def _softmax_pick(scores: list[float], temperature: float, seed: str) -> int:
    top = scores[0]
    weights = [math.exp((s - top) / temperature) for s in scores]
    point = random.Random(seed).random() * sum(weights)  # noqa: S311 - not cryptography
    for i, wt in enumerate(weights):
        if point < wt:
            return i
        point -= wt
    return len(scores) - 1
