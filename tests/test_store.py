"""The SQLite store: migrations, the control plane, admin changes, and sharing one file."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CANARY, config_for
from tokenhub import Hub, SyncHub
from tokenhub._store import SCHEMA_VERSION, Store
from tokenhub.errors import ConfigError, NoRouteError, StoreError
from tokenhub.testing import FakeClock, FakeProvider

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "Hello"}]
GOLDEN = Path(__file__).parent / "data" / "vault-v1.db"


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
        """The checked-in file from the first release opens (and migrates) in every version."""
        path = tmp_path / "old.db"
        shutil.copy(GOLDEN, path)
        with Store(path) as s:
            assert SCHEMA_VERSION == s.schema_version
            assert 2 == len(s.query("SELECT * FROM vault_credentials"))

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
