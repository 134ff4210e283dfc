"""The route trace: why each model was tried, skipped, and how each attempt went."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from tokenhub._models import Usage

__all__ = ["Attempt", "Candidate", "Exclusion", "RouteTrace"]

COMPONENTS = ("cost", "latency", "quality", "reliability", "weight")
_SHORT = {"reliability": "reliab."}


@attrs.frozen
class Candidate:
    """A model that passed every constraint, with its score.

    ``components`` maps each criterion (``cost``, ``latency``, ``quality``,
    ``reliability``, ``weight``) to its normalised utility in [0, 1], 1 being
    best; ``score`` is their weighted sum (higher is better).
    """

    model: str
    provider: str
    score: float
    components: tuple[tuple[str, float], ...]
    estimated_cost_usd: float | None
    output_tokens: int
    latency_ms: float | None
    note: str | None = None


@attrs.frozen
class Exclusion:
    """A model left out by a constraint, and why."""

    model: str
    reason: str


@attrs.frozen
class Attempt:
    """One attempt to get an answer from a candidate.

    ``outcome`` is ``ok``, the error class of the failure, ``credential`` (the
    key could not be resolved), ``unsupported`` (the adapter cannot express
    the request), or ``cancelled``/``hedge_cancelled`` for an attempt abandoned
    by the caller or by a won hedge; ``wait_s`` is the
    time waited (backoff or rate-limit hint) before it; ``usage`` and
    ``cost_usd`` are what a failed attempt was billed, when known (a stream cut
    after some output).
    """

    model: str
    provider: str
    outcome: str
    latency_ms: float
    status: int | None = None
    message: str | None = None
    wait_s: float = 0.0
    usage: Usage | None = None
    cost_usd: float | None = None


@attrs.frozen
class RouteTrace:
    """Why the Hub chose what it chose: candidates in the order tried, exclusions, attempts."""

    request_id: str
    mode: str
    prompt_tokens: int
    candidates: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...] = ()
    alias: str | None = None
    pinned: str | None = None
    attempts: tuple[Attempt, ...] = ()

    def with_attempts(self, attempts: tuple[Attempt, ...]) -> RouteTrace:
        """A copy with ``attempts`` (the hot path's cheaper ``attrs.evolve``)."""
        return RouteTrace(
            request_id=self.request_id,
            mode=self.mode,
            prompt_tokens=self.prompt_tokens,
            candidates=self.candidates,
            excluded=self.excluded,
            alias=self.alias,
            pinned=self.pinned,
            attempts=attempts,
        )

    @property
    def chosen(self) -> str | None:
        """The model that answered (or the first candidate, before any attempt)."""
        for a in reversed(self.attempts):
            if a.outcome == "ok":
                return a.model
        return self.candidates[0].model if self.candidates and not self.attempts else None

    def to_dict(self) -> dict[str, Any]:
        """Return the trace as plain JSON-ready data."""
        out = attrs.asdict(self, recurse=True)
        for c in out["candidates"]:
            c["components"] = dict(c["components"])
        return out

    def __str__(self) -> str:
        head = f"route {self.request_id} mode={self.mode} prompt≈{self.prompt_tokens} tokens"
        if self.alias:
            head += f" alias={self.alias}"
        if self.pinned:
            head += f" pinned={self.pinned}"
        lines = [head]
        name_w = max([len(c.model) for c in self.candidates] + [5])
        prov_w = max([len(c.provider) for c in self.candidates] + [8])
        lines.append(
            f"  #  {'model':<{name_w}}  {'provider':<{prov_w}}  score  "
            + "  ".join(f"{_SHORT.get(k, k):>7}" for k in COMPONENTS)
            + "      est. $"
        )
        for i, c in enumerate(self.candidates, 1):
            cost = "       ?" if c.estimated_cost_usd is None else f"{c.estimated_cost_usd:>8.6f}"
            comps = dict(c.components)
            lines.append(
                f"  {i:<2} {c.model:<{name_w}}  {c.provider:<{prov_w}}  {c.score:.3f}  "
                + "  ".join(f"{comps.get(k, 0.0):>7.3f}" for k in COMPONENTS)
                + f"  {cost}"
            )
        if self.excluded:
            lines.append("  excluded:")
            lines.extend(f"    {e.model}: {e.reason}" for e in self.excluded)
        if self.attempts:
            lines.append("  attempts:")
            for i, a in enumerate(self.attempts, 1):
                status = f" {a.status}" if a.status is not None else ""
                lines.append(
                    f"    {i}. {a.model} via {a.provider}: {a.outcome}{status} "
                    f"in {a.latency_ms:.0f} ms"
                )
        return "\n".join(lines)
