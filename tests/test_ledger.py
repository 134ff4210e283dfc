"""The ledger in the store: request logs, usage, and budget reservations across requests and processes."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import CANARY, config_for, sqlite_store
from tokenhub import Hub
from tokenhub._ledger import RequestLog
from tokenhub._store import Store
from tokenhub.errors import BudgetExceededError, ConfigError, ProviderError, StoreBusyError
from tokenhub.testing import FakeProvider, Reply

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hub.db"


def logged(db: Path) -> list[dict[str, Any]]:
    with Store(db) as s:
        return s.query("SELECT * FROM request_logs ORDER BY id")


class TestRequestLogs:
    async def test_off_by_default(self, fake: FakeProvider, db: Path) -> None:
        """Without store.logs.enabled nothing is logged."""
        async with Hub.from_config(config_for(fake), store=db) as hub:
            await hub.chat(HELLO, model="gpt-4o-mini")
        assert [] == logged(db)

    async def test_rows_without_content(self, fake: FakeProvider, db: Path) -> None:
        """Successes, failures and streams are logged with their numbers, not their text."""
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "logs": {"enabled": True}}
        fake.script("gpt-4o-mini", Reply(usage=(12, 5)), Reply(status=500))
        secret_prompt = [{"role": "user", "content": "my diary entry 7f00d"}]
        async with Hub.from_config(cfg) as hub:
            await hub.chat(secret_prompt, model="gpt-4o-mini", caller="tenant-a", request_id="r1")
            with pytest.raises(ProviderError):
                await hub.chat(secret_prompt, model="gpt-4o-mini", request_id="r2")
            async with hub.stream(secret_prompt, model="claude-haiku", request_id="r3") as s:
                async for _ in s:
                    pass
        rows = {r["request_id"]: r for r in logged(db)}
        assert {"r1", "r2", "r3"} == set(rows)
        ok = rows["r1"]
        assert ("gpt-4o-mini", "openai", "tenant-a", "ok", 1, 0) == (
            ok["model"],
            ok["provider"],
            ok["caller"],
            ok["status"],
            ok["attempts"],
            ok["stream"],
        )
        assert (12, 5) == (ok["input_tokens"], ok["output_tokens"])
        assert ok["cost_usd"] == pytest.approx((12 * 0.15 + 5 * 0.60) / 1e6)
        assert ("error", "transient") == (rows["r2"]["status"], rows["r2"]["error_class"])
        assert rows["r3"]["stream"] == 1
        assert rows["r3"]["ttft_ms"] is not None
        assert all(r["prompt"] is None and r["completion"] is None for r in rows.values())
        data = b"".join(p.read_bytes() for p in db.parent.glob("hub.db*"))
        assert b"7f00d" not in data

    async def test_chat_and_stream_account_alike(self, fake: FakeProvider, db: Path) -> None:
        """A chat and a stream with the same answer log the same row (but stream and TTFT) and spend alike."""
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "logs": {"enabled": True}}
        cfg["budgets"] = [{"scope": "caller", "key": "*", "period": "day", "usd": 1.0}]
        fake.default(None, Reply(text="same answer", usage=(40, 7)))
        async with Hub.from_config(cfg) as hub:
            await hub.chat(HELLO, model="gpt-4o-mini", caller="a", request_id="c")
            async with hub.stream(HELLO, model="gpt-4o-mini", caller="b", request_id="s") as s:
                async for _ in s:
                    pass
        rows = {r["request_id"]: r for r in logged(db)}
        varying = {"id", "request_id", "caller", "at", "latency_ms", "ttft_ms", "stream"}
        same = {k: v for k, v in rows["c"].items() if k not in varying}
        assert same == {k: v for k, v in rows["s"].items() if k not in varying}
        assert (0, 1) == (rows["c"]["stream"], rows["s"]["stream"])
        assert rows["c"]["ttft_ms"] is None
        assert rows["s"]["ttft_ms"] is not None
        with Store(db) as st:
            spend = {r["key"]: (r["usd"], r["reserved"]) for r in st.query("SELECT * FROM spend")}
        assert spend["a"] == pytest.approx(spend["b"])
        assert spend["a"][0] > 0

    async def test_content_logging_is_opt_in_and_scrubbed(
        self, fake: FakeProvider, db: Path
    ) -> None:
        """With content on, prompt and completion are stored, with known keys masked."""
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "logs": {"enabled": True, "content": True}}
        async with Hub.from_config(cfg) as hub:
            await hub.chat([{"role": "user", "content": f"key {CANARY} ok"}], model="gpt-4o-mini")
        (row,) = logged(db)
        assert "[REDACTED]" in row["prompt"]
        assert CANARY not in row["prompt"] + row["completion"]

    async def test_usage(self, fake: FakeProvider, db: Path) -> None:
        """hub.usage groups requests, errors, tokens and cost."""
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "logs": {"enabled": True}}
        fake.script("gpt-4o-mini", Reply(usage=(10, 2)), Reply(usage=(10, 2)), Reply(status=500))
        async with Hub.from_config(cfg) as hub:
            for _ in range(2):
                await hub.chat(HELLO, model="gpt-4o-mini")
            with pytest.raises(ProviderError):
                await hub.chat(HELLO, model="gpt-4o-mini")
            (row,) = await hub.usage(group_by="model")
            assert ("gpt-4o-mini", 3, 1, 20, 4) == (
                row["model"],
                row["requests"],
                row["errors"],
                row["input_tokens"],
                row["output_tokens"],
            )
            assert [] == await hub.usage(since=dt.timedelta(seconds=-60))
            with pytest.raises(ValueError, match="group_by"):
                await hub.usage(group_by="prompt")

    def test_full_buffer_drops_and_counts(self, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """When the buffer is full, rows are dropped and counted; record() never blocks."""
        Store(db).close()
        drops: list[int] = []
        rl = RequestLog(
            str(db), busy_timeout=1, buffer=3, retention_days=None, on_drop=lambda: drops.append(1)
        )
        monkeypatch.setattr(rl, "_start", lambda: None)  # a writer that never catches up
        for i in range(10):
            rl.record({"request_id": str(i), "at": 0.0})
        assert (7, 7) == (rl.dropped, len(drops))

    def test_writer_uses_its_own_handle_on_a_backend(self, db: Path) -> None:
        """Given a backend, the writer thread writes through a sibling handle, not the caller's."""
        with Store(db) as s:
            siblings: list[Store] = []
            real = s.sibling

            def sibling() -> Store:
                siblings.append(real())
                return siblings[-1]

            s.sibling = sibling  # type: ignore[method-assign]
            rl = RequestLog(s, buffer=10, retention_days=None)
            rl.record({"request_id": "via-backend", "at": time.time()})
            rl.close()
            assert 1 == len(siblings)
            assert siblings[0].conn is not s.conn
            assert ["via-backend"] == [
                r["request_id"] for r in s.query("SELECT * FROM request_logs")
            ]

    def test_retention_and_close_flushes(self, db: Path) -> None:
        """close() writes everything queued; rows older than the retention are deleted."""
        with Store(db) as s, s.transaction() as conn:
            conn.execute("INSERT INTO request_logs (request_id, at) VALUES ('old', 1.0)")
        rl = RequestLog(str(db), busy_timeout=1, buffer=10_000, retention_days=1)
        for i in range(1200):
            rl.record({"request_id": f"n{i}", "at": time.time()})
        rl.close()
        rows = logged(db)
        assert 1200 == len(rows)
        assert "old" not in {r["request_id"] for r in rows}
        assert 1200 == rl.written


class TestBudgets:
    def budget_config(
        self, fake: FakeProvider, db: Path, *budgets: dict[str, Any]
    ) -> dict[str, Any]:
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "logs": {"enabled": True}}
        cfg["budgets"] = list(budgets)
        return cfg

    async def test_refused_before_any_request(self, fake: FakeProvider, db: Path) -> None:
        """A request whose estimate exceeds the limit fails with BudgetExceededError, unsent."""
        cfg = self.budget_config(fake, db, {"scope": "global", "period": "day", "usd": 1e-9})
        async with Hub.from_config(cfg) as hub:
            with pytest.raises(BudgetExceededError) as info:
                await hub.chat(HELLO, model="gpt-4o-mini", max_tokens=100)
            with pytest.raises(BudgetExceededError):
                async with hub.stream(HELLO, model="gpt-4o-mini", max_tokens=100) as s:
                    async for _ in s:
                        pass
        assert [] == fake.requests
        assert ("global", "*", "day") == (info.value.scope, info.value.key, info.value.period)
        assert "day budget of 1e-09 USD for all requests" in str(info.value)
        assert {"budget_exceeded"} == {r["error_class"] for r in logged(db)}

    async def test_spend_accumulates_then_refuses(self, fake: FakeProvider, db: Path) -> None:
        """Actual costs are recorded per caller; the caller over its limit is refused, others not."""
        fake.default(None, Reply(usage=(1000, 1000)))  # 0.00075 USD on gpt-4o-mini
        cfg = self.budget_config(
            fake, db, {"scope": "caller", "key": "*", "period": "month", "usd": 0.002}
        )
        async with Hub.from_config(cfg) as hub:
            for _ in range(3):
                await hub.chat(HELLO, model="gpt-4o-mini", caller="a", max_tokens=10)
            with pytest.raises(BudgetExceededError) as info:
                await hub.chat(HELLO, model="gpt-4o-mini", caller="a", max_tokens=10)
            assert ("caller", "a") == (info.value.scope, info.value.key)
            await hub.chat(HELLO, model="gpt-4o-mini", caller="b", max_tokens=10)
        with Store(db) as s:
            spend = {r["key"]: r for r in s.query("SELECT * FROM spend")}
        assert spend["a"]["usd"] == pytest.approx(3 * 0.00075)
        assert 0 == pytest.approx(spend["a"]["reserved"])

    async def test_model_budget_and_admin_change(self, fake: FakeProvider, db: Path) -> None:
        """Model budgets apply to that model; budgets can be changed at runtime."""
        cfg = self.budget_config(
            fake, db, {"scope": "model", "key": "claude-haiku", "period": "day", "usd": 1e-9}
        )
        async with Hub.from_config(cfg) as hub:
            await hub.chat(HELLO, model="gpt-4o-mini")
            with pytest.raises(BudgetExceededError):
                await hub.chat(HELLO, model="claude-haiku")
            await hub.admin.configure("budgets", [])
            await hub.chat(HELLO, model="claude-haiku")

    async def test_concurrent_requests_do_not_overshoot(self, fake: FakeProvider, db: Path) -> None:
        """Of 12 parallel requests under a limit of 3.5 estimates, exactly 3 are admitted."""
        async with Hub.from_config(config_for(fake)) as probe:
            estimate = probe.explain(HELLO, model="gpt-4o-mini", max_tokens=500).candidates[0]
        assert estimate.estimated_cost_usd
        limit = 3.5 * estimate.estimated_cost_usd
        fake.default(None, Reply(usage=(1, 1)))
        cfg = self.budget_config(fake, db, {"scope": "global", "period": "day", "usd": limit})
        results: list[object] = []
        async with Hub.from_config(cfg) as hub:

            async def one() -> None:
                try:
                    results.append(await hub.chat(HELLO, model="gpt-4o-mini", max_tokens=500))
                except BudgetExceededError as exc:
                    results.append(exc)

            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(one)
        admitted = [r for r in results if not isinstance(r, BudgetExceededError)]
        # All 12 are in flight at once: only 3 reservations fit under 3.5 estimates.
        assert 3 == len(admitted)
        assert 9 == len(results) - len(admitted)
        with Store(db) as s:
            (row,) = s.query("SELECT * FROM spend")
        assert row["usd"] <= limit + estimate.estimated_cost_usd

    async def test_budget_config_errors(self, fake: FakeProvider) -> None:
        """Budgets need a store; bad limits name their path."""
        cfg = config_for(fake)
        cfg["budgets"] = [{"scope": "global", "period": "week", "usd": -1, "key": "x"}]
        with pytest.raises(ConfigError) as info:
            Hub.from_config(cfg)
        paths = [p for p, _ in info.value.errors]
        assert "budgets" in " ".join(paths)


class TestBudgetLocking:
    async def test_busy_lock_moves_to_a_thread(
        self, fake: FakeProvider, db: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Admission and settlement try the loop without waiting, then wait in a thread."""
        from tokenhub._ledger import Budgets
        from tokenhub.errors import StoreBusyError

        calls: list[tuple[str, bool, bool]] = []
        real_admit, real_settle = Budgets.admit, Budgets.settle

        def admit(self: Budgets, *a: Any, wait: bool = True, **kw: Any) -> Any:
            calls.append(("admit", wait, threading.current_thread() is threading.main_thread()))
            if not wait:
                raise StoreBusyError("locked")
            return real_admit(self, *a, wait=wait, **kw)

        def settle(self: Budgets, *a: Any, wait: bool = True) -> None:
            calls.append(("settle", wait, threading.current_thread() is threading.main_thread()))
            if not wait:
                raise StoreBusyError("locked")
            real_settle(self, *a, wait=wait)

        monkeypatch.setattr(Budgets, "admit", admit)
        monkeypatch.setattr(Budgets, "settle", settle)
        cfg = config_for(fake)
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 10}]
        async with Hub.from_config(cfg, store=db) as hub:
            await hub.chat(HELLO, model="gpt-4o-mini")
            # The waiting writes used their own connection, not the event loop's.
            assert hub._second is not None
            assert sqlite_store(hub._second).conn is not sqlite_store(hub.store).conn
        assert [
            ("admit", False, True),
            ("admit", True, False),
            ("settle", False, True),
            ("settle", True, False),
        ] == calls

    def test_no_wait_transaction_raises_at_once(self, db: Path) -> None:
        """transaction(wait=False) raises StoreBusyError at once when another writer holds the lock."""
        from tokenhub.errors import StoreBusyError

        Store(db).close()
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with Store(db, busy_timeout=30) as s:
                started = time.monotonic()
                with pytest.raises(StoreBusyError), s.transaction(wait=False):
                    pass
                assert time.monotonic() - started < 5
                assert 30000 == s.query("PRAGMA busy_timeout")[0]["timeout"]
        finally:
            other.execute("ROLLBACK")
            other.close()


ADMITTER = """
import sys, time
from tokenhub._settings import Budget
from tokenhub._ledger import Budgets
from tokenhub._store import Store
from tokenhub.errors import BudgetExceededError
from tokenhub._models import Candidate, RouteTrace

trace = RouteTrace(request_id="x", mode="balanced", prompt_tokens=1, candidates=(
    Candidate(model="m", provider="p", score=1.0, components=(), estimated_cost_usd=1.0,
              output_tokens=1, latency_ms=None),))
admitted = 0
with Store(sys.argv[1], busy_timeout=60) as s:
    budgets = Budgets(s, [Budget("global", "day", 10.0)], wall=time.time)
    for _ in range(10):
        try:
            budgets.admit(trace, None)
            admitted += 1
        except BudgetExceededError:
            pass
print(admitted)
"""


def test_budget_holds_across_processes(db: Path) -> None:
    """Three processes reserving against one 10-estimate budget admit exactly 10 in all."""
    Store(db).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ADMITTER, str(db)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    counts = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert 10 == sum(counts)
    with Store(db) as s:
        (row,) = s.query("SELECT * FROM spend")
    assert 10.0 == row["reserved"]


class TestBudgetEdges:
    async def test_overlapping_budgets_charge_once(self, fake: FakeProvider, db: Path) -> None:
        """A caller under both a '*' and a named budget is charged once, not twice."""
        fake.default(None, Reply(usage=(1000, 1000)))  # 0.00075 USD on gpt-4o-mini
        cfg = config_for(fake)
        cfg["budgets"] = [
            {"scope": "caller", "key": "*", "period": "month", "usd": 1},
            {"scope": "caller", "key": "alice", "period": "month", "usd": 1},
        ]
        async with Hub.from_config(cfg, store=db) as hub:
            await hub.chat(HELLO, model="gpt-4o-mini", caller="alice", max_tokens=10)
        with Store(db) as s:
            (row,) = s.query("SELECT * FROM spend")
        assert row["usd"] == pytest.approx(0.00075)
        assert 0 == pytest.approx(row["reserved"])

    async def test_failed_settlement_keeps_the_answer(
        self,
        fake: FakeProvider,
        db: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """If the spend cannot be recorded, the paid answer is still returned and the miss logged."""
        from tokenhub._ledger import Budgets

        def busy(*a: Any, **k: Any) -> None:
            raise StoreBusyError("locked")

        cfg = config_for(fake)
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 10}]
        async with Hub.from_config(cfg, store=db) as hub:
            monkeypatch.setattr(Budgets, "settle", busy)
            r = await hub.chat(HELLO, model="gpt-4o-mini")
        assert "echo: Hello" == r.text
        assert "could not record the spend" in caplog.text


class TestNativeCancellation:
    """asyncio's own cancellation (task.cancel(), asyncio.timeout) at each await of the books."""

    @pytest.fixture
    def locker(self, db: Path) -> Any:
        """A second connection that takes the store's write lock on demand."""
        Store(db).close()
        conn = sqlite3.connect(db, isolation_level=None)
        yield conn
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()

    def config(self, fake: FakeProvider, db: Path) -> dict[str, Any]:
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "logs": {"enabled": True}, "busy_timeout": 60}
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 10}]
        return cfg

    def spy(self, monkeypatch: pytest.MonkeyPatch, method: str, waiting: threading.Event) -> None:
        """Signal ``waiting`` when ``Budgets.<method>`` starts waiting for the lock in a thread."""
        from tokenhub._ledger import Budgets

        real = getattr(Budgets, method)

        def spied(self: Budgets, *a: Any, wait: bool = True, **kw: Any) -> Any:
            if wait:
                waiting.set()
            return real(self, *a, wait=wait, **kw)

        monkeypatch.setattr(Budgets, method, spied)

    async def cancel(self, how: str, hub: Hub, waiting: threading.Event) -> BaseException:
        """Run a chat, cancel it natively once its bookkeeping waits; what the chat raised."""
        import asyncio

        timeouts: list[asyncio.Timeout] = []

        async def run() -> None:
            if how == "timeout":
                async with asyncio.timeout(None) as cm:
                    timeouts.append(cm)
                    await hub.chat(HELLO, model="gpt-4o-mini", request_id="c")
            else:
                await hub.chat(HELLO, model="gpt-4o-mini", request_id="c")

        task = asyncio.create_task(run())
        await anyio.to_thread.run_sync(waiting.wait)
        if how == "timeout":
            timeouts[0].reschedule(asyncio.get_running_loop().time())
        else:
            task.cancel()
        try:
            await task
        except BaseException as exc:
            return exc
        raise AssertionError("the chat was not cancelled")

    @pytest.mark.parametrize("how", ["cancel", "timeout"])
    async def test_admission_waiting_for_the_lock_leaves_no_reservation(
        self,
        fake: FakeProvider,
        db: Path,
        locker: sqlite3.Connection,
        monkeypatch: pytest.MonkeyPatch,
        how: str,
    ) -> None:
        """Cancelled while admission waits in a thread: what it reserves is released, the row logged."""
        import asyncio

        waiting = threading.Event()
        self.spy(monkeypatch, "admit", waiting)
        hub = Hub.from_config(self.config(fake, db))
        locker.execute("BEGIN IMMEDIATE")
        error = await self.cancel(how, hub, waiting)
        locker.execute("ROLLBACK")  # the admission in its thread now gets the lock
        await hub.aclose()  # waits for bookkeeping under way
        expected = TimeoutError if how == "timeout" else asyncio.CancelledError
        assert isinstance(error, expected)
        assert [] == fake.requests
        with Store(db) as s:
            assert [0.0] == [r["reserved"] for r in s.query("SELECT reserved FROM spend")]
            assert [] == s.query("SELECT * FROM reservations")
        assert [("c", "cancelled")] == [(r["request_id"], r["status"]) for r in logged(db)]

    @pytest.mark.parametrize("how", ["cancel", "timeout"])
    async def test_settlement_waiting_for_the_lock_still_settles(
        self,
        fake: FakeProvider,
        db: Path,
        locker: sqlite3.Connection,
        monkeypatch: pytest.MonkeyPatch,
        how: str,
    ) -> None:
        """Cancelled while settlement waits in a thread: the spend is recorded and the row logged."""
        from tokenhub._ledger import Budgets

        waiting = threading.Event()
        self.spy(monkeypatch, "settle", waiting)
        real_admit = Budgets.admit

        def admit_then_lock(self: Budgets, *a: Any, **kw: Any) -> Any:
            hold = real_admit(self, *a, **kw)
            locker.execute("BEGIN IMMEDIATE")  # busy from now on: settlement must wait
            return hold

        monkeypatch.setattr(Budgets, "admit", admit_then_lock)
        fake.default(None, Reply(usage=(1000, 1000)))  # 0.00075 USD on gpt-4o-mini
        hub = Hub.from_config(self.config(fake, db))
        await self.cancel(how, hub, waiting)
        locker.execute("ROLLBACK")
        await hub.aclose()
        with Store(db) as s:
            (row,) = s.query("SELECT usd, reserved FROM spend")
            assert [] == s.query("SELECT * FROM reservations")
        assert (pytest.approx(0.00075), 0.0) == (row["usd"], row["reserved"])
        assert [("c", "ok")] == [(r["request_id"], r["status"]) for r in logged(db)]

    async def test_settlement_cancelled_before_a_worker_is_free(
        self,
        fake: FakeProvider,
        db: Path,
        locker: sqlite3.Connection,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Cancelled while no worker thread is free: the settlement runs in a thread of its own."""
        import asyncio

        from tokenhub._ledger import Budgets

        limiter = anyio.to_thread.current_default_thread_limiter()
        monkeypatch.setattr(limiter, "total_tokens", 1)
        release, started = threading.Event(), threading.Event()
        real_admit = Budgets.admit

        def admit_then_lock(self: Budgets, *a: Any, **kw: Any) -> Any:
            hold = real_admit(self, *a, **kw)
            locker.execute("BEGIN IMMEDIATE")
            return hold

        monkeypatch.setattr(Budgets, "admit", admit_then_lock)
        hub = Hub.from_config(self.config(fake, db))

        def occupy() -> None:
            started.set()
            release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, occupy)  # the only worker is busy
            await anyio.to_thread.run_sync(started.wait, limiter=anyio.CapacityLimiter(1))
            task = asyncio.create_task(hub.chat(HELLO, model="gpt-4o-mini", request_id="c"))
            while limiter.statistics().tasks_waiting == 0:  # the settlement queues for a worker
                await anyio.lowlevel.checkpoint()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            locker.execute("ROLLBACK")
            release.set()
        await hub.aclose()
        with Store(db) as s:
            (row,) = s.query("SELECT usd, reserved FROM spend")
        assert 0.0 == row["reserved"]
        assert row["usd"] > 0
        assert [("c", "ok")] == [(r["request_id"], r["status"]) for r in logged(db)]


KILLED_WITH_STREAMS = """
import asyncio, os, signal, sys
from tests.conftest import config_for, sqlite_store
from tokenhub import Hub
from tokenhub.testing import FakeClock, FakeProvider, Reply

async def main() -> None:
    async with FakeProvider() as fake:
        fake.default(None, Reply(text="one two three", stall_after=1))
        cfg = config_for(fake)
        cfg["failover"]["timeout"] = 30
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": float(sys.argv[2])}]
        hub = Hub.from_config(cfg, store=sys.argv[1], clock=FakeClock(wall=float(sys.argv[3])))
        streams = []
        for _ in range(10):  # ten streams in flight, each holding its reservation
            streams.append(hub.stream([{"role": "user", "content": "Hello"}],
                                      model="gpt-4o-mini", max_tokens=500).__aiter__())
            await streams[-1].__anext__()
        print(hub._ledger.budgets.spend()[0]["reserved"], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_killed_process_holds_no_budget_after_its_reservations_expire(
    fake: FakeProvider, db: Path
) -> None:
    """A process killed with ten requests in flight starves the budget only until they expire."""
    from tokenhub._ledger import RESERVATION_GRACE
    from tokenhub.testing import FakeClock

    async with Hub.from_config(config_for(fake)) as probe:
        estimate = probe.stream(HELLO, model="gpt-4o-mini", max_tokens=500).trace.candidates[0]
    assert estimate.estimated_cost_usd
    limit = 10.5 * estimate.estimated_cost_usd
    wall = 1_781_524_800.0  # 2026-06-15T12:00:00Z: the expiry stays within the day
    done = await anyio.run_process(
        [sys.executable, "-c", KILLED_WITH_STREAMS, str(db), repr(limit), repr(wall)],
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert -9 == done.returncode, done.stderr.decode()
    assert float(done.stdout) == pytest.approx(10 * estimate.estimated_cost_usd)
    cfg = config_for(fake)
    cfg["failover"]["timeout"] = 30
    cfg["budgets"] = [{"scope": "global", "period": "day", "usd": limit}]
    async with Hub.from_config(cfg, store=db, clock=FakeClock(wall=wall + 1)) as hub:
        with pytest.raises(BudgetExceededError):  # still in flight, as far as anyone knows
            await hub.chat(HELLO, model="gpt-4o-mini", max_tokens=500)
    later = FakeClock(wall=wall + 30 + RESERVATION_GRACE)
    async with Hub.from_config(cfg, store=db, clock=later) as hub:
        for _ in range(10):  # the dead process's reservations expired: the budget is whole
            await hub.chat(HELLO, model="gpt-4o-mini", max_tokens=500)
    with Store(db) as s:
        assert [] == s.query("SELECT * FROM reservations")
        (row,) = s.query("SELECT reserved FROM spend")
    assert row["reserved"] == pytest.approx(0.0, abs=1e-12)


async def test_a_store_failure_at_settlement_keeps_the_paid_answer(
    fake: FakeProvider, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When SQLite fails the settlement (not a busy lock), the answer is returned and the miss logged."""
    cfg = config_for(fake)
    cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 10}]
    async with Hub.from_config(cfg, store=db) as hub:
        sqlite_store(
            hub.store
        ).query(  # every update of a spend row now fails, as on a damaged file
            "CREATE TEMP TRIGGER fail BEFORE UPDATE ON spend "
            "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
        )
        r = await hub.chat(HELLO, model="gpt-4o-mini", request_id="paid")
    assert "echo: Hello" == r.text
    assert "could not record the spend of request paid" in caplog.text
    assert str(db) in caplog.text
