"""The PostgreSQL store in a Hub: selection, secrets, the event loop, following changes, outages."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from tests import _postgres as pg
from tests.conftest import config_for
from tokenhub import Hub
from tokenhub._postgres import PostgresStore, redact_url
from tokenhub.errors import ConfigError, StoreBusyError, StoreError
from tokenhub.testing import FakeProvider

pytestmark = pytest.mark.anyio
HELLO = [{"role": "user", "content": "Hello"}]


def with_url(fake: FakeProvider, url: Any, **store: Any) -> dict[str, Any]:
    cfg = config_for(fake)
    cfg["store"] = {"url": url, **store}
    return cfg


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, within: float) -> float:
    """Poll ``check`` (a short bounded loop) until it is true; the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "not within the bound"
        time.sleep(0.01)
    return time.monotonic() - started


class TestSelection:
    async def test_url_selects_postgres(self, fake: FakeProvider, postgres_url: str) -> None:
        """``store.url`` opens PostgreSQL: logs, budgets and usage work as on SQLite."""
        cfg = with_url(fake, postgres_url, logs={"enabled": True})
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 10}]
        async with Hub.from_config(cfg) as hub:
            assert isinstance(hub.store, PostgresStore)
            r = await hub.chat(HELLO, model="gpt-4o-mini")
            assert "echo: Hello" == r.text
            (row,) = await hub.usage()
            assert ("gpt-4o-mini", 1) == (row["model"], row["requests"])

    async def test_url_from_the_environment(
        self, fake: FakeProvider, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``{"env": NAME}`` reads the URL from the environment, so no password sits in the config."""
        monkeypatch.setenv("TOKENHUB_TEST_DB", postgres_url)
        async with Hub.from_config(with_url(fake, {"env": "TOKENHUB_TEST_DB"})) as hub:
            assert isinstance(hub.store, PostgresStore)
            assert pg.PASSWORD not in hub.store.name

    @pytest.mark.parametrize(
        ("store", "path", "reason"),
        [
            ({"path": "x.db", "url": "postgresql://h/db"}, "store.url", "not both"),
            ({"sync_interval": 1}, "store.path", "store.url"),
            ({"url": "mysql://h/db"}, "store.url", "postgresql://"),
            ({"url": {"env": "1 bad"}}, "store.url", "environment variable"),
            ({"url": "postgresql://h/db", "pool_size": 0}, "store.pool_size", "at least 1"),
            (
                {"url": "postgresql://h/db", "connect_timeout": 0},
                "store.connect_timeout",
                "positive",
            ),
        ],
    )
    async def test_bad_store_sections_name_their_path(
        self, fake: FakeProvider, store: dict[str, Any], path: str, reason: str
    ) -> None:
        """Exactly one of path and url, a postgresql:// URL, sane pool settings: errors name the key."""
        cfg = config_for(fake)
        cfg["store"] = store
        with pytest.raises(ConfigError) as info:
            Hub.from_config(cfg)
        assert [(p, why) for p, why in info.value.errors if p == path and reason in why]

    async def test_unset_variable_names_its_path(
        self, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A URL variable that is not set is a ConfigError at ``store.url.env``."""
        monkeypatch.delenv("TOKENHUB_NO_SUCH_DB", raising=False)
        with pytest.raises(ConfigError) as info:
            Hub.from_config(with_url(fake, {"env": "TOKENHUB_NO_SUCH_DB"}))
        assert "store.url.env" == info.value.errors[0][0]


class TestSecrets:
    async def test_unreachable_server_fails_fast_without_the_password(
        self, fake: FakeProvider, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No server at the URL: a StoreError within the connect timeout, the password in nothing."""
        url = f"postgresql://tokenhub:{pg.PASSWORD}@127.0.0.1:{closed_port()}/db"
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG), pytest.raises(StoreError) as info:
            Hub.from_config(with_url(fake, url, connect_timeout=1))
        assert time.monotonic() - started < 5
        shown = f"{info.value} {info.value!r} {info.value.args!r} {caplog.text}"
        assert "unreachable" in shown or "cannot reach" in shown
        assert "tokenhub:***@127.0.0.1" in shown
        assert pg.PASSWORD not in shown

    async def test_password_is_redacted_everywhere(
        self, fake: FakeProvider, postgres_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The config's repr, the store's name and repr, and failures never show the password."""
        with caplog.at_level(logging.DEBUG):
            async with Hub.from_config(with_url(fake, postgres_url)) as hub:
                store = hub.store
                assert isinstance(store, PostgresStore)
                with pytest.raises(StoreError) as info, store.transaction() as tx:
                    tx.execute("SELECT no_such_column")
                shown = " ".join(
                    [repr(hub._config), store.name, repr(store), str(info.value), caplog.text]
                )
        assert pg.PASSWORD not in shown
        assert redact_url(postgres_url) == store.name
        assert ":***@" in store.name


class TestEventLoop:
    async def test_no_wait_blocks_never_touch_the_network_on_a_loop(
        self, postgres_url: str
    ) -> None:
        """On an event loop, ``wait=False`` raises StoreBusyError at once: no round trip there."""
        store = PostgresStore(postgres_url)
        try:
            with pytest.raises(StoreBusyError, match="event loop"), store.reading(wait=False):
                pass
            with pytest.raises(StoreBusyError, match="event loop"), store.transaction(wait=False):
                pass
            with store.reading() as r:  # waiting is allowed (a thread's work)
                assert 0 == r.revision()
        finally:
            store.close()


class TestIsolation:
    def test_a_read_block_is_one_snapshot(self, postgres_url: str) -> None:
        """A reading() block does not see a commit made while it is open (REPEATABLE READ)."""
        store = PostgresStore(postgres_url)
        other = store.sibling()
        try:
            with store.reading() as r:
                assert 0 == r.revision()
                with other.transaction() as tx:
                    tx.bump_revision()
                assert 0 == r.revision()
            with store.reading() as r:
                assert 1 == r.revision()
        finally:
            other.close()
            store.close()


class TestFollowing:
    async def test_a_change_reaches_another_hub_within_a_second(
        self, fake: FakeProvider, postgres_url: str
    ) -> None:
        """A model disabled through one Hub's admin is excluded by another within ~1 s (NOTIFY)."""
        cfg = with_url(fake, postgres_url)
        async with (
            Hub.from_config(cfg) as first,
            Hub.from_config({"store": cfg["store"]}) as second,
        ):
            assert "llama-8b" not in {e.model for e in second.explain(HELLO).excluded}
            await first.admin.disable_model("llama-8b")
            took = wait_for(
                lambda: "llama-8b" in {e.model for e in second.explain(HELLO).excluded}, 2.0
            )
        assert took < 1.0

    def test_the_default_interval_is_one_second(self) -> None:
        """Without ``sync_interval``, PostgreSQL is polled every second (SQLite every two)."""
        from tokenhub._schema import StoreConfig
        from tokenhub._secret import Secret

        assert 1.0 == StoreConfig(url=Secret("postgresql://h/db")).interval
        assert 2.0 == StoreConfig(path="x.db").interval


@pytest.fixture
def own_server() -> Iterator[pg.Server]:
    """A server of this test's own, to shut down and start again."""
    if not pg.available():
        pytest.skip("needs psycopg, psycopg-pool and pgserver (the tests group)")
    server = pg.Server()
    yield server
    server.stop()


class TestOutage:
    async def test_requests_flow_and_log_rows_wait_while_postgres_is_down(
        self, fake: FakeProvider, own_server: pg.Server
    ) -> None:
        """Server down: requests use the last config, log rows are retried and written on return."""
        url = own_server.fresh_database()
        cfg = with_url(fake, url, logs={"enabled": True}, connect_timeout=1, busy_timeout=1)
        async with Hub.from_config(cfg) as hub:
            await hub.chat(HELLO, model="gpt-4o-mini")
            own_server.halt()
            started = time.monotonic()
            for _ in range(5):
                r = await hub.chat(HELLO, model="gpt-4o-mini")
                assert "echo: Hello" == r.text
            assert time.monotonic() - started < 2  # nothing on the request path waits for it
            own_server.start()
            rows = await hub.usage()
            assert 6 == rows[0]["requests"]
            assert hub._logs is not None
            assert 0 == hub._logs.dropped

    async def test_budgets_fail_closed_while_postgres_is_down(
        self, fake: FakeProvider, own_server: pg.Server
    ) -> None:
        """Server down: a request under a budget is refused with a StoreError, quickly, not sent."""
        url = own_server.fresh_database()
        cfg = with_url(fake, url, connect_timeout=1, busy_timeout=1)
        cfg["budgets"] = [{"scope": "global", "period": "day", "usd": 10}]
        async with Hub.from_config(cfg) as hub:
            await hub.chat(HELLO, model="gpt-4o-mini")
            sent = len(fake.requests)
            own_server.halt()
            started = time.monotonic()
            with pytest.raises(StoreError):
                await hub.chat(HELLO, model="gpt-4o-mini")
            assert time.monotonic() - started < 4
            assert sent == len(fake.requests)
            own_server.start()
            started = time.monotonic()
            while True:  # back: admitted again once the pool has reconnected
                try:
                    r = await hub.chat(HELLO, model="gpt-4o-mini")
                    break
                except StoreError:
                    assert time.monotonic() - started < 10
                    await anyio.sleep(0.05)
            assert "echo: Hello" == r.text


class TestCanary:
    async def test_no_key_or_password_reaches_the_servers_files(
        self, fake: FakeProvider, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A vault key, the vault password and the URL's password appear in no file of the server."""
        from tokenhub._vault import Vault
        from tokenhub.testing import insecure_vault_kdf

        key = "sk-pgcanary-" + "9f3b7d1e5a2c8b4f6e0d"
        vault_password = "vault-pw-Kc4rT8zLq2"
        monkeypatch.setenv("TOKENHUB_CANARY_PASSWORD", vault_password)
        cfg = with_url(fake, postgres_url, logs={"enabled": True, "content": True})
        cfg["vault"] = {"password": {"env": "TOKENHUB_CANARY_PASSWORD"}}
        with insecure_vault_kdf():
            with PostgresStore(postgres_url) as setup:
                vault = Vault(setup)
                vault.init(vault_password)
                vault.put("openai", key, provider="openai")
                vault.lock()
            cfg["providers"]["openai"]["api_key"] = {"vault": "openai"}
            async with Hub.from_config(cfg) as hub:
                r = await hub.chat(HELLO, model="gpt-4o-mini")
                assert "echo: Hello" == r.text
                assert fake.requests[-1].headers["authorization"] == f"Bearer {key}"
                await hub.usage()  # the log row is written
                assert isinstance(hub.store, PostgresStore)
                with hub.store.transaction() as tx:
                    tx.execute("CHECKPOINT")  # every page and the WAL on disk
        server = pg.server()
        files = b"".join(p.read_bytes() for p in server.data.rglob("*") if p.is_file())
        assert b"echo: Hello" in files  # positive control: the logged completion is on disk
        for secret in (key, key[3:15], vault_password, pg.PASSWORD):
            assert secret.encode() not in files


class TestOutageFollowing:
    async def test_the_watcher_rejoins_after_a_restart(
        self, fake: FakeProvider, own_server: pg.Server
    ) -> None:
        """After the server comes back, a change made on one Hub still reaches the other."""
        url = own_server.fresh_database()
        cfg = with_url(fake, url, connect_timeout=1, busy_timeout=1)
        async with (
            Hub.from_config(cfg) as first,
            Hub.from_config({"store": cfg["store"]}) as second,
        ):
            own_server.halt()
            r = await second.chat(HELLO, model="gpt-4o-mini")  # the last good config
            assert "echo: Hello" == r.text
            await anyio.sleep(0.3)  # the watcher notices and backs off
            own_server.start()
            started = time.monotonic()
            while True:  # the admin write needs the pool to have reconnected
                try:
                    await first.admin.disable_model("llama-8b")
                    break
                except StoreError:
                    assert time.monotonic() - started < 10
                    await anyio.sleep(0.05)
            wait_for(lambda: "llama-8b" in {e.model for e in second.explain(HELLO).excluded}, 5.0)


class TestRedaction:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql://u:s3cret-pw@h:5432/db", "postgresql://u:***@h:5432/db"),
            (
                "postgresql://h/db?sslmode=require&password=s3cret-pw",
                "postgresql://h/db?sslmode=require&password=***",
            ),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
        ],
    )
    def test_passwords_are_masked_in_urls(self, url: str, shown: str) -> None:
        """A URL's password, in the user part or the query, is shown as ***."""
        assert shown == redact_url(url)
