"""The SQLite store: migrations, the control plane, admin changes, and sharing one file."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import CANARY, config_for, sqlite_store
from tokenhub import Hub, SyncHub
from tokenhub._store import SCHEMA_VERSION, Store
from tokenhub.errors import (
    ConfigError,
    NoRouteError,
    StoreError,
)
from tokenhub.testing import FakeClock, FakeProvider

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]
GOLDEN = Path(__file__).parent / "data" / "store-v1.db"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hub.db"


def audit(path: Path) -> list[tuple[str, str]]:
    with Store(path) as s:
        return [(r["action"], r["target"]) for r in s.query("SELECT * FROM audit_log")]


class TestSchema:
    async def test_new_file_gets_every_table(self, db: Path) -> None:
        """A new file is created at the current schema with WAL and secure_delete on."""
        with Store(db) as s:
            assert SCHEMA_VERSION == s.schema_version
            tables = {
                r["name"] for r in s.query("SELECT name FROM sqlite_master WHERE type='table'")
            }
            assert {
                "providers",
                "models",
                "aliases",
                "settings",
                "store_meta",
                "vault_meta",
                "vault_keys",
                "vault_credentials",
                "request_logs",
                "audit_log",
                "feedback",
                "spend",
            } <= tables
            assert "wal" == s.query("PRAGMA journal_mode")[0]["journal_mode"]
            assert 1 == s.query("PRAGMA secure_delete")[0]["secure_delete"]

    async def test_first_release_file_opens(self, tmp_path: Path) -> None:
        """The checked-in file from the first release opens, migrates and serves, forever."""
        path = tmp_path / "old.db"
        shutil.copy(GOLDEN, path)
        with Store(path) as s:
            assert SCHEMA_VERSION == s.schema_version
            assert 2 == len(s.query("SELECT * FROM vault_credentials"))
            assert [1.5] == [r["usd"] for r in s.query("SELECT usd FROM spend")]
        async with Hub.from_store(path) as hub:
            assert ("gpt-4o-mini", "llama-8b") == hub.models
            exported = hub.store.export_config()
            assert {"vault": "openai"} == exported["providers"]["openai"]["api_key"]
            assert {"mode": "cheap"} == exported["routing"]
            assert "default" in exported["aliases"]
            assert [{"scope": "global", "period": "month", "usd": 100}] == exported["budgets"]
            (row,) = await hub.usage(group_by="model")
            assert ("gpt-4o-mini", 1) == (row["model"], row["requests"])
            hub.vault.unlock("correct horse battery staple")
            assert "sk-golden-openai-0123456789abcdef" == hub.vault.get("openai").reveal()

    async def test_newer_schema_is_refused(self, db: Path) -> None:
        """A file from a newer tokenhub is refused with a clear error, untouched."""
        Store(db).close()
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        conn.close()
        with pytest.raises(StoreError, match="newer than this tokenhub understands"):
            Store(db)

    async def test_empty_file_is_migrated(self, db: Path) -> None:
        """An existing empty SQLite file (version 0) is migrated in one transaction."""
        sqlite3.connect(db).close()
        with Store(db) as s:
            assert SCHEMA_VERSION == s.schema_version

    def test_memory_store(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """':memory:' is an in-memory store, not a file named ':memory:'."""
        monkeypatch.chdir(tmp_path)
        with Store(":memory:") as s:
            assert SCHEMA_VERSION == s.schema_version
        assert [] == list(tmp_path.iterdir())

    def test_owner_only_file(self, db: Path) -> None:
        """A new store file is readable by its owner only."""
        Store(db).close()
        assert 0o600 == db.stat().st_mode & 0o777

    def test_busy_store_is_a_store_error(self, db: Path) -> None:
        """A write lock held elsewhere past the busy timeout raises StoreError; nothing is written."""
        Store(db).close()
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with (
                Store(db, busy_timeout=0) as s,
                pytest.raises(StoreError, match="is busy"),
                s.transaction() as conn,
            ):
                conn.execute("INSERT INTO audit_log (at, action) VALUES (1, 'a')")
        finally:
            other.execute("ROLLBACK")
            other.close()
        with Store(db) as s:
            assert [] == s.query("SELECT * FROM audit_log")

    async def test_transaction_is_all_or_nothing(self, db: Path) -> None:
        """An exception inside a transaction rolls every statement back."""
        with Store(db) as s:
            with pytest.raises(RuntimeError), s.transaction() as conn:
                conn.execute("INSERT INTO audit_log (at, action) VALUES (1, 'a')")
                raise RuntimeError
            assert [] == s.query("SELECT * FROM audit_log")


class TestConfigRoundTrip:
    async def test_export_import_export(self, fake: FakeProvider, tmp_path: Path) -> None:
        """export_config → from_config → export_config is identical; literal keys stay out."""
        cfg = config_for(fake)
        cfg["aliases"] = {"chat": {"models": ["gpt-4o-mini", "claude-haiku"]}}
        cfg["routing"] = {"mode": "cheap"}
        async with Hub.from_config(cfg, store=tmp_path / "a.db") as hub:
            exported = hub.store.export_config()
        assert "api_key" not in exported["providers"]["openai"]
        assert list(cfg["models"]) == list(exported["models"])
        assert {"mode": "cheap"} == exported["routing"]
        async with Hub.from_config(exported, store=tmp_path / "b.db") as again:
            assert exported == again.store.export_config()
        for name in ("a.db", "b.db"):
            with Store(tmp_path / name):
                pass
            data = b"".join(p.read_bytes() for p in tmp_path.glob(f"{name}*"))  # noqa: ASYNC240
            assert CANARY.encode() not in data

    async def test_entry_order_is_kept(self, fake: FakeProvider, db: Path) -> None:
        """Updates keep an entry's place (routing ties follow config order); new ones go last."""
        async with Hub.from_config(config_for(fake), store=db) as hub:
            await hub.admin.upsert_model("a-new-model", {"provider": "openai"})
            await hub.admin.upsert_model("gpt-4o-mini", {"provider": "openai", "quality": 0.1})
            expected = ("gpt-4o-mini", "claude-haiku", "llama-8b", "a-new-model")
            assert expected == hub.models
            assert expected == tuple(hub.store.export_config()["models"])
        async with Hub.from_store(db) as again:
            assert expected == again.models

    async def test_from_store(self, fake: FakeProvider, db: Path) -> None:
        """Hub.from_store rebuilds the Hub from the file alone."""
        cfg = config_for(fake)
        for p in cfg["providers"].values():
            p.pop("api_key", None)
        async with Hub.from_config(cfg, store=db):
            pass
        async with Hub.from_store(db) as hub:
            assert ("gpt-4o-mini", "claude-haiku", "llama-8b") == hub.models
            r = await hub.chat(HELLO, model="llama-8b")
            assert "echo: Hello" == r.text

    async def test_config_updates_the_store(self, fake: FakeProvider, db: Path) -> None:
        """A later from_config adds and updates entries; entries it does not name stay."""
        cfg = config_for(fake)
        async with Hub.from_config(cfg, store=db):
            pass
        smaller = config_for(fake)
        del smaller["models"]["llama-8b"]
        smaller["models"]["gpt-4o-mini"]["quality"] = 0.9
        async with Hub.from_config(smaller, store=db) as hub:
            assert ("gpt-4o-mini", "claude-haiku", "llama-8b") == hub.models
            assert 0.9 == hub.store.export_config()["models"]["gpt-4o-mini"]["quality"]

    async def test_invalid_config_writes_nothing(self, fake: FakeProvider, db: Path) -> None:
        """A config that does not validate (with what is stored) leaves the file unchanged."""
        async with Hub.from_config(config_for(fake), store=db):
            pass
        bad = {"models": {"x": {"provider": "nowhere"}}}
        with pytest.raises(ConfigError, match=r"models\.x\.provider"):
            Hub.from_config(bad, store=db)
        with Store(db) as s:
            assert "x" not in s.export_config()["models"]

    async def test_literal_keys_kept_in_memory(self, fake: FakeProvider, db: Path) -> None:
        """A literal key is used by the Hub that was given it, never written to the file."""
        async with Hub.from_config(config_for(fake), store=db) as hub:
            await hub.chat(HELLO, model="gpt-4o-mini")
            await hub.admin.upsert_model("gpt-4o", {"provider": "openai"})
            await hub.chat(HELLO, model="gpt-4o")
        assert [f"Bearer {CANARY}"] * 2 == [r.headers["authorization"] for r in fake.requests]

    async def test_from_store_needs_the_file(self, tmp_path: Path) -> None:
        """from_store on a missing path raises StoreError and creates nothing."""
        with pytest.raises(StoreError, match="no store at"):
            Hub.from_store(tmp_path / "typo.db")
        assert not (tmp_path / "typo.db").exists()


class TestAdmin:
    async def test_model_lifecycle(self, fake: FakeProvider, db: Path) -> None:
        """upsert, disable, enable and remove a model; each is persisted and audited."""
        async with Hub.from_config(config_for(fake), store=db) as hub:
            await hub.admin.upsert_model("gpt-4o", {"provider": "openai", "quality": 0.9})
            assert "gpt-4o" in hub.models
            assert "gpt-4o" == (await hub.chat(HELLO, model="gpt-4o")).model
            await hub.admin.disable_model("gpt-4o")
            trace = hub.explain(HELLO, policy={"mode": "best"})
            assert "gpt-4o" not in [c.model for c in trace.candidates]
            assert hub.store.export_config()["models"]["gpt-4o"]["enabled"] is False
            await hub.admin.enable_model("gpt-4o")
            assert "gpt-4o" == hub.explain(HELLO, policy={"mode": "best"}).candidates[0].model
            await hub.admin.remove_model("gpt-4o")
            assert "gpt-4o" not in hub.models
        assert [
            ("model.upsert", "gpt-4o"),
            ("model.disable", "gpt-4o"),
            ("model.enable", "gpt-4o"),
            ("model.remove", "gpt-4o"),
        ] == audit(db)[-4:]

    async def test_validation_errors_name_the_path(self, fake: FakeProvider, db: Path) -> None:
        """Bad changes raise ConfigError with the full path, before anything is written."""
        async with Hub.from_config(config_for(fake), store=db) as hub:
            before = (hub.store.export_config(), audit(db))
            with pytest.raises(ConfigError, match=r"models\.m\.pricing\.input"):
                await hub.admin.upsert_model(
                    "m", {"provider": "openai", "pricing": {"input": "cheap", "output": 1}}
                )
            with pytest.raises(ConfigError, match=r"models\.gpt-4o-mini\.provider"):
                await hub.admin.remove_provider("openai")
            with pytest.raises(ConfigError, match=r"providers\.p\.kind"):
                await hub.admin.upsert_provider("p", {"kind": "nope"})
            with pytest.raises(ConfigError, match=r"models\.ghost: no such entry"):
                await hub.admin.disable_model("ghost")
            with pytest.raises(ConfigError, match=r"routing\.mode"):
                await hub.admin.configure("routing", {"mode": "fastest"})
            with pytest.raises(ConfigError, match="not a policy section"):
                await hub.admin.configure("store", {})
            with pytest.raises(ConfigError, match=r"aliases\.a"):
                await hub.admin.upsert_alias("a", {"models": ["ghost"]})
            assert before == (hub.store.export_config(), audit(db))
            assert "m" not in hub.models

    async def test_providers_aliases_and_policy(self, fake: FakeProvider, db: Path) -> None:
        """Providers, aliases and policy sections change at runtime."""
        async with Hub.from_config(config_for(fake), store=db) as hub:
            await hub.admin.upsert_provider(
                "local", {"kind": "vllm", "base_url": fake.openai_base_url}
            )
            await hub.admin.upsert_model("tiny", {"provider": "local", "upstream": "tiny-1b"})
            assert "tiny" == (await hub.chat(HELLO, model="tiny")).model
            assert "tiny-1b" == fake.requests[-1].model
            await hub.admin.upsert_alias("default", {"models": ["tiny"]})
            assert "tiny" == (await hub.chat(HELLO, model="default")).model
            await hub.admin.remove_alias("default")
            with pytest.raises(LookupError):
                await hub.chat(HELLO, model="default")
            await hub.admin.configure("routing", {"mode": "cheap"})
            assert "cheap" == hub.explain(HELLO).mode
            await hub.admin.configure("routing", None)
            assert "balanced" == hub.explain(HELLO).mode
            await hub.admin.remove_model("tiny")
            await hub.admin.remove_provider("local")
            assert "local" not in hub.store.export_config()["providers"]

    async def test_in_flight_stream_survives_removal(self, fake: FakeProvider, db: Path) -> None:
        """Removing the model a stream is using does not break that stream."""
        async with Hub.from_config(config_for(fake), store=db) as hub:
            text: list[str] = []
            async with hub.stream(
                [{"role": "user", "content": "one two three"}], model="llama-8b"
            ) as s:
                async for chunk in s:
                    if not text:
                        await hub.admin.remove_model("llama-8b")
                        await hub.admin.remove_provider("vllm")
                    text.append(chunk.text or "")
            assert "echo: one two three" == "".join(text)
            with pytest.raises(LookupError):
                await hub.chat(HELLO, model="llama-8b")

    async def test_no_store(self, fake: FakeProvider) -> None:
        """A Hub without a store has no admin and no store."""
        async with Hub.from_config(config_for(fake)) as hub:
            with pytest.raises(StoreError):
                _ = hub.admin
            with pytest.raises(StoreError):
                _ = hub.store

    def test_sync_hub_admin(self, fake_sync: tuple[str, str], db: Path) -> None:
        """SyncHub.admin offers the same changes, blocking."""
        openai_url, _ = fake_sync
        cfg = {
            "providers": {"p": {"kind": "vllm", "base_url": openai_url}},
            "models": {"a": {"provider": "p"}},
        }
        with SyncHub.from_config(cfg, store=db) as hub:
            hub.admin.upsert_model("b", {"provider": "p"})
            assert ("a", "b") == hub.models
            assert "echo: Hello" == hub.chat(HELLO, model="b").text
        with SyncHub.from_store(db) as again:
            assert ("a", "b") == again.models


@pytest.fixture
def fake_sync() -> Any:
    """A FakeProvider running on its own event loop thread (for SyncHub tests)."""
    from anyio.from_thread import start_blocking_portal

    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(FakeProvider()) as fake,
    ):
        yield fake.openai_base_url, fake.anthropic_base_url


class TestSharing:
    async def test_second_hub_sees_changes(self, fake: FakeProvider, db: Path) -> None:
        """A Hub sharing the file picks up another Hub's change after sync_interval."""
        clock = FakeClock()
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "sync_interval": 5}
        async with (
            Hub.from_config(cfg, clock=clock) as first,
            Hub.from_config({"store": cfg["store"]}, clock=clock) as second,
        ):
            await first.admin.upsert_model("gpt-4o", {"provider": "openai"})
            await first.admin.disable_model("llama-8b")
            assert "gpt-4o" not in second.models
            clock.advance(4)
            second.explain(HELLO)
            assert "gpt-4o" not in second.models
            clock.advance(1)
            trace = second.explain(HELLO)
            assert "gpt-4o" in second.models
            assert "llama-8b" in {e.model for e in trace.excluded}

    async def test_poll_never_waits_for_a_busy_connection(
        self, fake: FakeProvider, db: Path
    ) -> None:
        """While another thread holds the store's connection, the poll is skipped, not awaited."""
        clock = FakeClock()
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "sync_interval": 1}
        async with (
            Hub.from_config(cfg, clock=clock) as first,
            Hub.from_config({"store": cfg["store"]}, clock=clock) as second,
        ):
            await first.admin.upsert_model("late", {"provider": "openai"})
            held, release = threading.Event(), threading.Event()

            def hold() -> None:
                with sqlite_store(second.store).lock:
                    held.set()
                    release.wait(10)

            holder = threading.Thread(target=hold)
            holder.start()
            held.wait(10)
            clock.advance(1)
            second.explain(HELLO)  # returns at once; the lock is busy
            release.set()
            holder.join()
            assert "late" not in second.models
            clock.advance(1)
            second.explain(HELLO)
            assert "late" in second.models

    async def test_bad_revision_is_ignored(self, fake: FakeProvider, db: Path) -> None:
        """A stored config that no longer validates is logged and ignored; the Hub keeps going."""
        clock = FakeClock()
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "sync_interval": 0}
        async with Hub.from_config(cfg, clock=clock) as hub:
            with Store(db) as s, s.transaction() as conn:
                conn.execute('UPDATE models SET config = \'{"provider": "gone"}\'')
                conn.execute("UPDATE store_meta SET value = value + 1 WHERE key = 'revision'")
            r = await hub.chat(HELLO, model="gpt-4o-mini")
            assert "echo: Hello" == r.text

    async def test_no_model_left(self, fake: FakeProvider, db: Path) -> None:
        """Disabling every model makes routing fail with NoRouteError, not a crash."""
        async with Hub.from_config(config_for(fake), store=db) as hub:
            for name in hub.models:
                await hub.admin.disable_model(name)
            with pytest.raises(NoRouteError):
                await hub.chat(HELLO)


WRITER = """
import sys, time
from tokenhub._control import ControlPlane
from tokenhub._ledger import RequestLog
from tokenhub._store import Store

db, me, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rl = RequestLog(db, busy_timeout=60, buffer=1_000_000, retention_days=None)
with Store(db, busy_timeout=60) as s:
    cp = ControlPlane(s)
    for i in range(n if n > 0 else 10**9):
        rl.record({"request_id": f"{me}-{i}", "at": time.time()})
        if i % 10 == 0:
            cp.write([("models", f"{me}-{i}", {"provider": "p"})], "model.upsert")
        if i == 200:
            print("ready", flush=True)
rl.close()
assert rl.dropped == 0, rl.dropped
"""


def invariants(db: Path) -> tuple[int, int, int, int]:
    """(rows logged, models, config audit rows, revision), after an integrity check."""
    with Store(db) as s:
        assert [{"integrity_check": "ok"}] == s.query("PRAGMA integrity_check")
        logs = s.query("SELECT count(*) AS n FROM request_logs")[0]["n"]
        models = s.query("SELECT count(*) AS n FROM models")[0]["n"]
        audits = s.query("SELECT count(*) AS n FROM audit_log WHERE action = 'model.upsert'")[0][
            "n"
        ]
        revision = int(s.query("SELECT value FROM store_meta WHERE key = 'revision'")[0]["value"])
    return logs, models, audits, revision


class TestProcesses:
    def test_concurrent_writers_lose_nothing(self, db: Path) -> None:
        """Four processes logging and changing config at once: every write is there, intact."""
        Store(db).close()
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"p{i}", "400"])
            for i in range(4)
        ]
        assert [0, 0, 0, 0] == [p.wait(timeout=120) for p in procs]
        assert (1600, 160, 160, 160) == invariants(db)
        with Store(db) as s:
            ids = {r["request_id"] for r in s.query("SELECT request_id FROM request_logs")}
        assert {f"p{i}-{j}" for i in range(4) for j in range(400)} == ids

    def test_killed_writer_leaves_a_consistent_file(self, db: Path) -> None:
        """A writer killed with SIGKILL mid-stream leaves a file that opens and adds up."""
        Store(db).close()
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), "k", "0"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert "ready" == proc.stdout.readline().strip()
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        logs, models, audits, revision = invariants(db)
        assert models == audits == revision >= 21
        assert logs >= 0


class TestAdminConcurrency:
    async def test_parallel_changes_on_one_hub(self, fake: FakeProvider, db: Path) -> None:
        """Parallel admin calls on one Hub all land, in the store and in memory."""
        async with Hub.from_config(config_for(fake), store=db) as hub:
            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(hub.admin.upsert_model, f"m{i}", {"provider": "openai"})
            assert {f"m{i}" for i in range(5)} <= set(hub.models)
            assert {f"m{i}" for i in range(5)} <= set(hub.store.export_config()["models"])

    async def test_own_write_includes_other_writers(self, fake: FakeProvider, db: Path) -> None:
        """A Hub's admin change is validated on, and installs, what others wrote before it."""
        cfg = config_for(fake)
        cfg["store"] = {"path": str(db), "sync_interval": 3600}
        async with Hub.from_config(cfg) as first, Hub.from_config(cfg) as second:
            await first.admin.upsert_model("from-first", {"provider": "openai"})
            await second.admin.upsert_model("from-second", {"provider": "openai"})
            assert {"from-first", "from-second"} <= set(second.models)

    async def test_unchanged_import_writes_nothing(self, fake: FakeProvider, db: Path) -> None:
        """Starting again with the same config neither bumps the revision nor audits."""
        async with Hub.from_config(config_for(fake), store=db):
            pass
        before = audit(db)
        async with Hub.from_config(config_for(fake), store=db):
            pass
        assert before == audit(db)


def test_sync_hub_close_closes_the_store(db: Path) -> None:
    """Closing a SyncHub that never sent a request still locks the vault and closes the store."""
    cfg = {
        "providers": {"p": {"kind": "vllm", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"a": {"provider": "p"}},
    }
    hub = SyncHub.from_config(cfg, store=db)
    hub.close()
    with pytest.raises(StoreError, match="closed"):
        sqlite_store(hub.store).query("SELECT 1")


def fill_to_the_brim(store: Store) -> None:
    """Cap the file at its size (SQLite's max_page_count) and use up its free room: a full disk."""
    pages = store.query("PRAGMA page_count")[0]["page_count"]
    store.query(f"PRAGMA max_page_count={pages}")
    with pytest.raises(StoreError, match="full"):
        for i in range(100_000):
            with store.transaction() as tx:
                tx.execute("INSERT INTO audit_log (at, action) VALUES (?, ?)", (i, "x" * 200))


class TestDiskFull:
    async def test_chat_admin_and_vault_raise_a_store_error_naming_the_file(
        self, fake: FakeProvider, db: Path
    ) -> None:
        """On a full disk, a budgeted chat, an admin change and vault.put raise StoreError naming the file."""
        from tokenhub.testing import insecure_vault_kdf

        cfg = config_for(fake)
        cfg["budgets"] = [{"scope": "caller", "key": "*", "period": "day", "usd": 10}]
        async with Hub.from_config(cfg, store=db) as hub:
            with insecure_vault_kdf():
                hub.vault.init("pw")
            assert hub._second is not None
            fill_to_the_brim(sqlite_store(hub.store))
            fill_to_the_brim(sqlite_store(hub._second))
            errors = []
            for i in range(3):  # each a new row: room runs out within a few
                with pytest.raises(StoreError) as info:
                    for n in range(200):
                        await hub.chat(HELLO, model="gpt-4o-mini", caller=f"{i}-{n}")
                errors.append(info.value)
            with pytest.raises(StoreError) as info:
                for n in range(200):
                    await hub.admin.upsert_model(
                        f"m{n}", {"provider": "openai", "upstream": "x" * 500}
                    )
            errors.append(info.value)
            with pytest.raises(StoreError) as info:
                for n in range(200):
                    hub.vault.put(f"k{n}", "sk-" + "a" * 500)
            errors.append(info.value)
        for e in errors:
            assert str(db) in str(e)
            assert "database or disk is full" in str(e), e
            assert "rollback" not in str(e)

    def test_a_failed_commit_names_its_cause(self, db: Path) -> None:
        """A COMMIT that cannot be written (the file may not grow) names the I/O error, not a busy lock."""
        Store(db).close()
        script = (
            "import resource, signal, sys\n"
            "from tokenhub._store import Store\n"
            "from tokenhub.errors import StoreError\n"
            "s = Store(sys.argv[1])\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (40000, 40000))\n"
            "try:\n"
            "    with s.transaction() as tx:\n"
            "        tx.add_request_logs([{'request_id': 'x' * 100000, 'at': 1.0}])\n"
            "except StoreError as exc:\n"
            "    print(exc)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, str(db)], capture_output=True, text=True, check=True
        )
        assert str(db) in out.stdout
        assert "busy" not in out.stdout
        assert "disk I/O error" in out.stdout or "full" in out.stdout, out.stdout


class TestDamagedFiles:
    def store_with_data(self, path: Path) -> None:
        with Store(path) as s, s.transaction() as tx:
            tx.add_request_logs(
                [{"request_id": f"r{i}", "at": float(i), "prompt": "p" * 300} for i in range(200)]
            )

    def use(self, path: Path) -> None:
        """Open the file and use every part: only StoreError may come out."""
        with Store(path) as s:
            with s.reading() as r:
                r.request_logs(since=0, limit=1000)
                r.usage(since=0, group_by="model")
                r.spend_rows()
            with s.transaction() as tx:
                tx.add_request_logs([{"request_id": "new", "at": 1.0}])
                tx.charge(("global", "*", "day:x"), 1.0)

    @pytest.mark.parametrize("damage", ["zeroed interior page", "garbage last page"])
    def test_damaged_pages_are_a_store_error(self, db: Path, damage: str) -> None:
        """A zeroed interior page or garbage in the last page raises StoreError naming the file."""
        self.store_with_data(db)
        data = bytearray(db.read_bytes())
        page = 4096
        assert len(data) > 6 * page
        if damage == "zeroed interior page":  # the root of request_logs' b-tree
            conn = sqlite3.connect(db)
            (root,) = conn.execute(
                "SELECT rootpage FROM sqlite_master WHERE name = 'request_logs'"
            ).fetchone()
            conn.close()
            data[(root - 1) * page : root * page] = bytes(page)
        else:
            data[-page:] = bytes(range(256)) * (page // 256)
        db.write_bytes(bytes(data))
        with pytest.raises(StoreError) as info:
            self.use(db)
        assert str(db) in str(info.value)

    def test_a_foreign_file_at_our_version_is_refused(self, db: Path) -> None:
        """Another application's SQLite file at tokenhub's schema version is refused, untouched."""
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.commit()
        conn.close()
        with pytest.raises(StoreError, match="is not a tokenhub store") as info:
            self.use(db)
        assert str(db) in str(info.value)
        conn = sqlite3.connect(db)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        conn.close()
        assert ["notes"] == tables
