"""Time per routing decision among 10 and 200 models (median of many), and the trace's share.

The decision is ``Router.plan``: the prompt estimate, the ranking (constraints and scores, which
builds each candidate's record) and the ``RouteTrace`` that carries them. The trace column is the
cost of that last step alone, as a share of the decision.
"""

from __future__ import annotations

import statistics
import time

from tokenhub import Hub
from tokenhub._models import RouteTrace
from tokenhub._request import build_request
from tokenhub.routing._estimate import estimate_prompt_tokens
from tokenhub.routing._policy import Features, rank

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Summarise the attached report in three bullet points, please."},
]


def hub_with(n: int) -> Hub:
    models = {
        f"model-{i}": {
            "provider": "p",
            "context_window": 8000 * (1 + i % 16),
            "pricing": {"input": 0.1 * (1 + i % 7), "output": 0.4 * (1 + i % 5)},
            "quality": (i % 10) / 10,
            "latency_ms": 200.0 + 37 * (i % 13),
            "tags": ["eu"] if i % 3 else ["us"],
            "capabilities": ["tools"] if i % 2 else [],
        }
        for i in range(n)
    }
    return Hub.from_config({"providers": {"p": {"kind": "openai"}}, "models": models})


def median_us(fn: object, repeat: int) -> float:
    samples = []
    call = fn  # type: ignore[assignment]
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(repeat):
            call()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) / repeat * 1e6)
    return statistics.median(samples)


def main() -> None:
    print(
        f"{'models':>7}{'decision µs':>13}{'rank µs':>9}{'estimate µs':>13}{'trace µs':>10}"
        f"{'trace share':>13}{'explain() µs':>14}"
    )
    for n in (10, 200):
        hub = hub_with(n)
        router = hub._router
        request = build_request(MESSAGES)
        policy = router.policy
        repeat = 20000 if n == 10 else 1000

        def decide() -> None:
            router.plan(request, model=None, policy=policy, caller=None, request_id="r")

        features = Features(frozenset(), 30, None)
        pool = list(router.models.values())
        candidates, excluded = rank(pool, features, policy, router.state, ordered=False, seed="r")

        def rank_only() -> None:
            rank(pool, features, policy, router.state, ordered=False, seed="r")

        def estimate() -> None:
            estimate_prompt_tokens(request, router.count)

        def trace() -> None:
            RouteTrace(
                request_id="r",
                mode=policy.mode,
                prompt_tokens=30,
                candidates=tuple(candidates),
                excluded=tuple(excluded),
                alias=None,
                pinned=None,
            )

        def explain() -> None:
            hub.explain(MESSAGES, request_id="r")

        d, r, est, t, e = (
            median_us(decide, repeat),
            median_us(rank_only, repeat),
            median_us(estimate, repeat),
            median_us(trace, repeat),
            median_us(explain, repeat),
        )
        print(f"{n:>7}{d:>13.1f}{r:>9.1f}{est:>13.1f}{t:>10.1f}{t / d:>13.0%}{e:>14.1f}")


if __name__ == "__main__":
    main()
