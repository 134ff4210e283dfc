"""One replica process for tests/test_fleet_postgres.py: a Hub on a shared PostgreSQL.

``python tests/_pg_replica.py MODE DATABASE_URL OPENAI_BASE_URL``, prints JSON lines:

- ``budget N``: N workers send requests under the shared budget until each is refused
  five times in a row (a refusal may be due to holds in flight); print what happened.
- ``watch``: print ``ready``, then the wall time at which ``llama-8b`` is excluded.
- ``disable``: print ``ready``, wait for a line on stdin, disable ``llama-8b`` through
  ``hub.admin``; print the wall time when that returned.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio
import anyio.to_thread

from tokenhub import Hub
from tokenhub.errors import BudgetExceededError

HELLO = [{"role": "user", "content": "Hello"}]


def config(url: str, base_url: str) -> dict[str, Any]:
    return {
        "failover": {"max_retries": 0},
        "providers": {"vllm": {"kind": "vllm", "base_url": base_url}},
        "models": {
            "gpt-4o-mini": {"provider": "vllm", "pricing": {"input": 1000, "output": 1000}},
            "llama-8b": {"provider": "vllm", "pricing": {"input": 2000, "output": 2000}},
        },
        "store": {"url": url},
        "budgets": [{"scope": "global", "period": "day", "usd": 1.0}],
    }


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)  # noqa: T201 - the test reads it


async def budget(hub: Hub, n: int) -> None:
    ok, refused = 0, 0
    estimates: list[float] = []
    costs: list[float | None] = []

    async def one() -> None:
        nonlocal ok, refused
        in_a_row = 0
        while in_a_row < 5:
            try:
                r = await hub.chat(HELLO, model="gpt-4o-mini", max_tokens=8)
            except BudgetExceededError as exc:
                refused += 1
                in_a_row += 1
                estimates.append(exc.estimate_usd)
                await anyio.sleep(0.02)
            else:
                in_a_row = 0
                ok += 1
                costs.append(r.cost_usd)
                assert r.trace is not None
                estimates.append(r.trace.candidates[0].estimated_cost_usd or 0.0)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    say(ok=ok, refused=refused, max_estimate=max(estimates), costs=costs)


async def watch(hub: Hub) -> None:
    say(ready=True)
    while "llama-8b" not in {e.model for e in hub.explain(HELLO).excluded}:
        await anyio.sleep(0.005)
    say(seen=time.time())


async def disable(hub: Hub) -> None:
    say(ready=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)
    await hub.admin.disable_model("llama-8b")
    say(done=time.time())


async def main(*argv: str) -> None:
    mode, url, base_url, *args = argv
    async with Hub.from_config(config(url, base_url)) as hub:
        if mode == "budget":
            await budget(hub, int(args[0]))
        elif mode == "watch":
            await watch(hub)
        else:
            await disable(hub)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
