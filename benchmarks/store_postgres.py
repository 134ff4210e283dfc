"""What the PostgreSQL store costs: request-log throughput and budget admission latency.

Against a real PostgreSQL on a loopback port (the pgserver wheel's binaries, started by
tests/_postgres.py, as the tests do; fsync off, as a test server).

1. The request-log writer alone: rows/s from the first record() to the last row committed
   (batches of up to 500 rows, one COPY each).
2. Budget admission: one reservation (admit) and one settlement (settle), each one
   transaction under the write lock; latency p50/p99 from one thread, and with 8 threads
   contending (what many concurrent requests in one or several processes do).
3. A Hub on the PostgreSQL store answering instantly (in-process provider): wall time per
   request, one at a time, with the config only (the watcher thread keeps the request path
   off the network), with request logs, and with a budget (admission and settlement in a
   worker thread); and requests/s with 32 at once under the budget.

Prints a table and writes benchmarks/results/store_postgres.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
from benchmarks.store import MESSAGES, Instant, row  # noqa: E402

from tests import _postgres as pg  # noqa: E402
from tokenhub import Hub  # noqa: E402
from tokenhub._ledger import Budgets, RequestLog  # noqa: E402
from tokenhub._models import Candidate, RouteTrace  # noqa: E402
from tokenhub._postgres import PostgresStore  # noqa: E402
from tokenhub._settings import Budget  # noqa: E402

ROWS = 50_000
ADMISSIONS = 2000


def log_throughput(url: str) -> dict[str, float]:
    store = PostgresStore(url)
    rows = [row(i) for i in range(ROWS)]
    rl = RequestLog(store, buffer=ROWS + 1, retention_days=None)
    t0 = time.perf_counter()
    for r in rows:
        rl.record(r)
    record_s = time.perf_counter() - t0
    rl.flush()
    total = time.perf_counter() - t0
    rl.close()
    with store.reading() as r:
        assert len(r.request_logs(since=0, limit=ROWS + 1)) == ROWS
    store.close()
    return {"rows_per_s": ROWS / total, "record_us": record_s / ROWS * 1e6}


def trace(i: int) -> RouteTrace:
    c = Candidate("m", "p", 1.0, (), 1e-6, 1, None)
    return RouteTrace(request_id=f"r{i}", mode="balanced", prompt_tokens=1, candidates=(c,))


def admissions(url: str, threads: int) -> dict[str, float]:
    store = PostgresStore(url, pool_size=max(threads, 2))
    budgets = Budgets(store, [Budget("global", "day", 1e9)], wall=time.time)
    per = ADMISSIONS // threads
    admit_ms: list[float] = []
    settle_ms: list[float] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        mine_a, mine_s = [], []
        for i in range(per):
            t0 = time.perf_counter()
            hold = budgets.admit(trace(n * per + i), None)
            t1 = time.perf_counter()
            budgets.settle(hold, None, None)
            t2 = time.perf_counter()
            mine_a.append((t1 - t0) * 1000)
            mine_s.append((t2 - t1) * 1000)
        with lock:
            admit_ms.extend(mine_a)
            settle_ms.extend(mine_s)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    store.close()

    def q(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=100, method="inclusive")[int(p) - 1]

    return {
        "threads": threads,
        "admit_p50_ms": statistics.median(admit_ms),
        "admit_p99_ms": q(admit_ms, 99),
        "settle_p50_ms": statistics.median(settle_ms),
        "settle_p99_ms": q(settle_ms, 99),
        "requests_per_s": per * threads / wall,
    }


async def hub_requests(url: str, kind: str, n: int = 500) -> dict[str, float]:
    config: dict[str, Any] = {
        "models": {"m": {"provider": "x", "pricing": {"input": 0.15, "output": 0.6}}},
        "store": {"url": url},
    }
    if kind in ("logs", "budget"):
        config["store"]["logs"] = {"enabled": True, "buffer": 100_000}
    if kind == "budget":
        config["budgets"] = [{"scope": "global", "period": "day", "usd": 1e9}]
    async with Hub.from_config(config, providers={"x": Instant()}) as hub:
        for _ in range(50):
            await hub.chat(MESSAGES, model="m", caller="tenant-a")
        wall = []
        for _ in range(n):
            t0 = time.perf_counter()
            await hub.chat(MESSAGES, model="m", caller="tenant-a")
            wall.append((time.perf_counter() - t0) * 1e6)
        out = {"kind": kind, "p50_us": statistics.median(wall), "p99_us": _q(wall, 99)}
        if kind == "budget":

            async def one() -> None:
                await hub.chat(MESSAGES, model="m", caller="tenant-a")

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)
            out["concurrent_per_s"] = n / (time.perf_counter() - t0)
    return out


def _q(xs: list[float], p: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1]


def main() -> None:
    server = pg.server()
    try:
        logs = log_throughput(server.fresh_database())
        budget = [admissions(server.fresh_database(), t) for t in (1, 8)]
        hubs = [
            anyio.run(hub_requests, server.fresh_database(), kind)
            for kind in ("config", "logs", "budget")
        ]
    finally:
        pg.stop()
    print("PostgreSQL store (loopback, pgserver's PostgreSQL, fsync off)")
    print(
        f"  request log: {logs['rows_per_s']:>10,.0f} rows/s   record() {logs['record_us']:.2f} µs"
    )
    print("  budget      threads  admit p50   p99    settle p50   p99    admitted+settled/s")
    for b in budget:
        print(
            f"              {b['threads']:>7}  {b['admit_p50_ms']:6.2f} ms {b['admit_p99_ms']:6.2f}"
            f"   {b['settle_p50_ms']:6.2f} ms {b['settle_p99_ms']:6.2f}   {b['requests_per_s']:8,.0f}"
        )
    print("  hub.chat    store                 p50        p99")
    for h in hubs:
        print(f"              {h['kind']:<20} {h['p50_us']:7.0f} µs {h['p99_us']:7.0f} µs")
    print(
        f"  hub.chat under a budget, {500} at once: {hubs[-1]['concurrent_per_s']:,.0f} requests/s"
    )
    out = ROOT / "benchmarks" / "results" / "store_postgres.json"
    results = {"request_log": logs, "budgets": budget, "hub": hubs}
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"  written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
