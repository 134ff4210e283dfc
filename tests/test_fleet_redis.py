"""Three replica processes on one real Redis behave as one Hub (issue 16, the state part).

Each replica (``tests/_replica.py``) is a ``SyncHub`` in its own process on the same Redis,
sending to the ``FakeProvider`` this test serves; the fake's request log shows which replica
sent what (the ``x-replica`` header).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from tokenhub.testing import FakeProvider, Reply

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import Process

    from tests._redis import RedisServer

pytestmark = pytest.mark.anyio

REPLICA = Path(__file__).with_name("_replica.py")


class Replica:
    """One replica process and its command line."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self.out = BufferedByteReceiveStream(process.stdout)

    async def ask(self, **command: Any) -> Any:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(command).encode() + b"\n")
        with anyio.fail_after(20):
            return json.loads(await self.out.receive_until(b"\n", 1 << 20))

    async def rate_limited_for(self, model: str) -> float:
        health = await self.ask(op="health")
        return float(health["models"].get(model, {}).get("rate_limited_for_s", 0.0))


def config(fake: FakeProvider, redis_url: str, n: int) -> dict[str, Any]:
    return {
        "failover": {"max_retries": 0},
        "providers": {
            "o": {
                "kind": "openai",
                "base_url": fake.openai_base_url,
                "api_key": "k",
                "headers": {"x-replica": str(n)},
            }
        },
        "models": {"a": {"provider": "o"}, "b": {"provider": "o"}},
        "routing": {"fallbacks": ["b"]},
        "state": {"redis": redis_url, "prefix": "fleet:", "timeout": 0.1},
    }


@pytest.fixture
async def fleet(fake: FakeProvider, redis_url: str) -> AsyncIterator[list[Replica]]:
    replicas = [
        Replica(
            await anyio.open_process(
                [sys.executable, str(REPLICA), json.dumps(config(fake, redis_url, n))],
                stderr=None,
            )
        )
        for n in range(3)
    ]
    try:
        with anyio.fail_after(20):
            for r in replicas:
                while not (await r.ask(op="health"))["state"]["connected"]:
                    await anyio.sleep(0.01)
        yield replicas
    finally:
        for r in replicas:
            with anyio.move_on_after(5):
                assert r.process.stdin is not None
                await r.process.stdin.send(b'{"op": "quit"}\n')
                await r.process.wait()
            if r.process.returncode is None:
                r.process.kill()
            await r.process.aclose()


def sent_by(fake: FakeProvider, model: str) -> list[str]:
    return [r.headers.get("x-replica", "?") for r in fake.requests_for(model)]


async def test_a_429_keeps_the_fleet_off_the_model(
    fake: FakeProvider, fleet: list[Replica]
) -> None:
    """A 429 with Retry-After answered to one replica keeps the other two off that model."""
    fake.script("a", Reply(status=429, headers={"retry-after": "30"}))
    assert {"ok": True, "model": "b"} == await fleet[0].ask(op="chat", model="a")
    start = time.perf_counter()
    with anyio.fail_after(2):
        for r in fleet[1:]:
            while await r.rate_limited_for("a") <= 0:
                await anyio.sleep(0.001)
    seen_after = time.perf_counter() - start
    for r in fleet[1:]:
        assert {"ok": True, "model": "b"} == await r.ask(op="chat", model="a")
    assert ["0"] == sent_by(fake, "a")  # one request to "a", from the replica it answered
    assert seen_after < 0.5, f"the cooldown took {seen_after * 1000:.0f} ms to reach the fleet"


async def test_redis_killed_mid_run(
    fake: FakeProvider, fleet: list[Replica], redis_server: RedisServer
) -> None:
    """Redis dying mid-run fails no request; when it is back the fleet shares again."""
    answers: list[Any] = []

    async def traffic(r: Replica) -> None:
        for _ in range(20):
            answers.append(await r.ask(op="chat", model="a"))

    async with anyio.create_task_group() as tg:
        for r in fleet:
            tg.start_soon(traffic, r)
        with anyio.fail_after(10):
            while len(answers) < 6:  # killed while the replicas are busy
                await anyio.sleep(0.001)
        redis_server.kill()
    assert 60 == len(answers)
    assert all(a == {"ok": True, "model": "a"} for a in answers)
    redis_server.start()
    with anyio.fail_after(10):
        for r in fleet:
            while not (await r.ask(op="health"))["state"]["connected"]:
                await anyio.sleep(0.01)
    fake.clear()
    fake.script("a", Reply(status=429, headers={"retry-after": "30"}))
    assert {"ok": True, "model": "b"} == await fleet[2].ask(op="chat", model="a")
    with anyio.fail_after(2):
        for r in fleet[:2]:
            while await r.rate_limited_for("a") <= 0:
                await anyio.sleep(0.001)
    for r in fleet[:2]:
        assert {"ok": True, "model": "b"} == await r.ask(op="chat", model="a")
    assert ["2"] == sent_by(fake, "a")
