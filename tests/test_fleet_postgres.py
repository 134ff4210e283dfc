"""Three replica processes on one PostgreSQL: a shared budget, and config changes that travel.

Each replica is ``tests/_pg_replica.py`` in a process of its own, building a Hub on the
same database; the FakeProvider they call is served by this test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tokenhub._postgres import PostgresStore
from tokenhub.testing import FakeProvider

pytestmark = pytest.mark.anyio
REPLICA = Path(__file__).with_name("_pg_replica.py")
ROOT = REPLICA.parent.parent


def stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        for f in (p.stdin, p.stdout):
            if f is not None:
                f.close()


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(REPLICA), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


async def line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The replica's next JSON line (read in a thread: the fake provider runs on this loop)."""
    assert proc.stdout is not None
    with anyio.fail_after(30):
        text = await anyio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
    assert text, f"replica exited with {proc.wait()}"
    result: dict[str, Any] = json.loads(text)
    return result


async def test_a_shared_budget_is_never_overshot_nor_starved(
    fake: FakeProvider, postgres_url: str
) -> None:
    """Three replicas sending at once spend up to the shared limit, never past it, each some."""
    base = fake.openai_base_url
    PostgresStore(postgres_url).close()  # migrate once, so the replicas start on a ready schema
    procs = [start("budget", postgres_url, base, "8") for _ in range(3)]
    try:
        results = [await line(p) for p in procs]
    finally:
        stop(*procs)
    store = PostgresStore(postgres_url)
    try:
        with store.reading() as r:
            (row,) = r.spend_rows()
            assert [] == r.reservations()
            assert row.reserved == pytest.approx(0.0, abs=1e-9)
    finally:
        store.close()
    estimate = max(r["max_estimate"] for r in results)
    assert row.usd <= 1.0  # never overshot
    assert row.usd >= 1.0 - 3 * estimate  # used up: only the last in-flight estimates are left
    assert all(r["ok"] > 0 for r in results)  # no replica starved
    assert row.usd == pytest.approx(sum(sum(c or 0.0 for c in r["costs"]) for r in results))


async def test_a_model_disabled_on_one_replica_is_dropped_by_the_others_within_a_second(
    fake: FakeProvider, postgres_url: str
) -> None:
    """``hub.admin.disable_model`` on one replica: the other two exclude the model within ~1 s."""
    base = fake.openai_base_url
    PostgresStore(postgres_url).close()
    admin = start("disable", postgres_url, base)
    watchers = [start("watch", postgres_url, base) for _ in range(2)]
    try:
        for p in (admin, *watchers):
            assert (await line(p))["ready"]
        assert admin.stdin is not None
        admin.stdin.write("go\n")
        admin.stdin.flush()
        done = (await line(admin))["done"]
        seen = [(await line(p))["seen"] for p in watchers]
    finally:
        stop(admin, *watchers)
    assert max(s - done for s in seen) < 1.0
