"""What the SQLite store costs: request-log throughput, and per-request overhead on the Hub.

1. The request-log writer alone: rows/s from the first record() to the last row committed,
   and the cost of record() on the request path.
2. A Hub answering instantly (in-process provider), CPU µs per request: no store; a store
   (config only); + request logs; + a budget (a reservation and a settlement per request).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from tokenhub import Hub
from tokenhub._ledger import RequestLog
from tokenhub._store import Store
from tokenhub.providers import Capabilities

MESSAGES = [{"role": "user", "content": "Hello there, how are you?"}]
ROWS = 50_000
N = 2000


def row(i: int) -> dict[str, Any]:
    return {
        "request_id": f"r{i:08d}",
        "at": time.time(),
        "model": "gpt-4o-mini",
        "provider": "openai",
        "alias": None,
        "caller": "tenant-a",
        "input_tokens": 120,
        "output_tokens": 40,
        "cost_usd": 0.0000420,
        "latency_ms": 321.5,
        "ttft_ms": None,
        "status": "ok",
        "error_class": None,
        "attempts": 1,
        "stream": 0,
        "prompt": None,
        "completion": None,
    }


def log_throughput(tmp: Path) -> None:
    db = tmp / "logs.db"
    Store(db).close()
    rows = [row(i) for i in range(ROWS)]
    rl = RequestLog(str(db), busy_timeout=5, buffer=ROWS + 1, retention_days=None)
    t0 = time.perf_counter()
    c0 = time.process_time()
    for r in rows:
        rl.record(r)
    record_s = time.perf_counter() - t0
    rl.close()
    total_s = time.perf_counter() - t0
    cpu = time.process_time() - c0
    assert rl.written == ROWS
    print(
        f"request log: {ROWS / total_s:,.0f} rows/s written "
        f"({total_s:.2f} s for {ROWS:,} rows, {cpu / ROWS * 1e6:.1f} µs CPU per row); "
        f"record() on the request path {record_s / ROWS * 1e6:.2f} µs"
    )


class Instant:
    def capabilities(self, model: str) -> Capabilities:
        return Capabilities()

    async def send(self, call: Any) -> Any:
        return call.response(text="hi", finish_reason="stop", usage=None)

    def stream(self, call: Any) -> Any:
        raise NotImplementedError

    def classify(self, status: int, headers: Any, body: bytes) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


def make(kind: str, tmp: Path) -> Hub:
    config: dict[str, Any] = {
        "models": {"m": {"provider": "x", "pricing": {"input": 0.15, "output": 0.6}}}
    }
    if kind != "none":
        config["store"] = {"path": str(tmp / f"{kind}.db")}
    if kind in ("logs", "budget"):
        config["store"]["logs"] = {"enabled": True, "buffer": 100_000}
    if kind == "budget":
        config["budgets"] = [{"scope": "global", "period": "day", "usd": 1e9}]
    return Hub.from_config(config, providers={"x": Instant()})


async def per_request(kind: str, tmp: Path) -> float:
    async with make(kind, tmp) as hub:
        for _ in range(200):
            await hub.chat(MESSAGES, model="m", caller="tenant-a")
        samples = []
        for _ in range(5):
            c0 = time.process_time()
            for _ in range(N):
                await hub.chat(MESSAGES, model="m", caller="tenant-a")
            samples.append((time.process_time() - c0) / N * 1e6)
    return statistics.median(samples)


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        log_throughput(tmp)
        base = await per_request("none", tmp)
        print(f"hub, no store:              {base:7.1f} µs CPU per request")
        for kind, label in (
            ("config", "store (config only):"),
            ("logs", "store + request logs:"),
            ("budget", "store + logs + budget:"),
        ):
            us = await per_request(kind, tmp)
            print(f"hub, {label:<22} {us:7.1f} µs CPU per request (+{us - base:.1f})")


if __name__ == "__main__":
    anyio.run(main)
