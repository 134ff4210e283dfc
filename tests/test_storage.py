"""The store backend contract: what every backend (SQLite now, PostgreSQL later) must do.

Each test takes ``backend``, parametrised over the implementations; a new backend
adds itself to ``BACKENDS`` and must pass every test here unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from tests.memory_store import MemoryStore
from tokenhub._control import Conflict, ControlPlane
from tokenhub._ledger import Budgets, RequestLog, usage
from tokenhub._models import Candidate, RouteTrace
from tokenhub._settings import Budget
from tokenhub._storage import (
    LOG_COLUMNS,
    Reservation,
    SealedCredential,
    SpendRow,
    StoreBackend,
    UsageRow,
    VaultMeta,
    WrappedKey,
    stored_config,
)
from tokenhub._store import Store
from tokenhub._vault import Vault
from tokenhub.errors import (
    BudgetExceededError,
    StoreBusyError,
    StoreError,
    VaultCorruptedError,
    VaultUnlockError,
)
from tokenhub.testing import insecure_vault_kdf


def _sqlite(tmp_path: Path) -> StoreBackend:
    return Store(tmp_path / "contract.db", busy_timeout=5)


def _postgres(tmp_path: Path) -> StoreBackend:
    from tests import _postgres as pg
    from tokenhub._postgres import PostgresStore

    if not pg.available():
        pytest.skip("needs psycopg, psycopg-pool and pgserver (the tests group)")
    return PostgresStore(pg.server().fresh_database(), busy_timeout=5)


BACKENDS: dict[str, Callable[[Path], StoreBackend]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
    "memory": lambda _: MemoryStore(),  # the reference in tests/memory_store.py
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    b = BACKENDS[request.param](tmp_path)
    yield b
    b.close()


def meta(term: int = 1, salt: bytes = b"s" * 16) -> VaultMeta:
    return VaultMeta(
        vault_id=b"v" * 16,
        format_version=1,
        kdf_alg="argon2id13",
        kdf_opslimit=1,
        kdf_memlimit=8192,
        kdf_parallelism=1,
        kdf_salt=salt,
        wrap_alg="xchacha20poly1305-ietf",
        active_term=term,
        created_at=1.0,
        checksum=b"c" * 32,
    )


def sealed(name: str, term: int = 1, ct: bytes = b"ct") -> SealedCredential:
    return SealedCredential(name, "openai", term, b"n" * 24, ct, 1.0, 2.0)


class TestConfig:
    def test_entries_keep_their_place(self, backend: StoreBackend) -> None:
        """New entries go last, updates keep their place, and text comes back exactly."""
        with backend.transaction() as tx:
            tx.put_config_entry("models", "b", '{"provider": "p"}', at=1.0)
            tx.put_config_entry("models", "a", '{"provider": "p"}', at=1.0)
            tx.put_config_entry("models", "b", '{"provider":  "q"}', at=2.0)
        with backend.reading() as r:
            assert [("b", '{"provider":  "q"}'), ("a", '{"provider": "p"}')] == r.config_entries(
                "models"
            )
            assert '{"provider": "p"}' == r.config_entry("models", "a")
            assert r.config_entry("models", "zz") is None
            assert [] == r.config_entries("aliases")

    def test_delete_says_whether_there_was_one(self, backend: StoreBackend) -> None:
        """Deleting an entry reports whether it existed."""
        with backend.transaction() as tx:
            tx.put_config_entry("settings", "routing", '{"mode": "cheap"}', at=1.0)
            assert tx.delete_config_entry("settings", "routing")
            assert not tx.delete_config_entry("settings", "routing")

    def test_unknown_kind_is_refused(self, backend: StoreBackend) -> None:
        """A kind outside CONFIG_KINDS is a ValueError, never a query."""
        with backend.reading() as r, pytest.raises(ValueError, match="config kind"):
            r.config_entries("models; DROP TABLE models")

    def test_revision_counts_bumps(self, backend: StoreBackend) -> None:
        """The revision starts at 0 and each bump moves it by one."""
        with backend.reading() as r:
            assert 0 == r.revision()
        with backend.transaction() as tx:
            assert 1 == tx.bump_revision()
            assert 2 == tx.bump_revision()
        with backend.reading() as r:
            assert 2 == r.revision()

    def test_export_is_the_stored_config(self, backend: StoreBackend) -> None:
        """export_config returns entries by kind, then one key per policy section."""
        with backend.transaction() as tx:
            tx.put_config_entry("providers", "p", '{"kind": "vllm"}', at=1.0)
            tx.put_config_entry("models", "m", '{"provider": "p"}', at=1.0)
            tx.put_config_entry("settings", "routing", '{"mode": "best"}', at=1.0)
        expected = {
            "providers": {"p": {"kind": "vllm"}},
            "models": {"m": {"provider": "p"}},
            "routing": {"mode": "best"},
        }
        assert expected == backend.export_config()
        with backend.reading() as r:
            assert expected == stored_config(r)


class TestTransactions:
    def test_all_or_nothing(self, backend: StoreBackend) -> None:
        """An exception in a transaction undoes every write in it."""
        with pytest.raises(RuntimeError), backend.transaction() as tx:
            tx.put_config_entry("models", "m", "{}", at=1.0)
            tx.bump_revision()
            tx.audit("model.upsert", "m", "[]", at=1.0)
            tx.charge(("global", "*", "day:x"), 1.0)
            raise RuntimeError
        with backend.reading() as r:
            assert (0, [], [], []) == (
                r.revision(),
                r.config_entries("models"),
                r.audit_log(),
                r.spend_rows(),
            )

    def test_nested_blocks_commit_with_the_outer(self, backend: StoreBackend) -> None:
        """A transaction inside another joins it: the outer one's failure undoes both."""
        with pytest.raises(RuntimeError), backend.transaction():
            with backend.transaction() as inner:
                inner.bump_revision()
            raise RuntimeError
        with backend.reading() as r:
            assert 0 == r.revision()

    def test_other_handles_see_commits(self, backend: StoreBackend) -> None:
        """A sibling handle sees what this one committed, and the other way round."""
        other = backend.sibling()
        try:
            with backend.transaction() as tx:
                tx.bump_revision()
            with other.reading() as r:
                assert 1 == r.revision()
            with other.transaction() as tx:
                tx.bump_revision()
            with backend.reading() as r:
                assert 2 == r.revision()
        finally:
            other.close()

    def test_no_wait_write_refuses_while_another_writes(self, backend: StoreBackend) -> None:
        """transaction(wait=False) raises StoreBusyError at once while another handle writes."""
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            other = backend.sibling()
            try:
                with other.transaction() as tx:
                    tx.bump_revision()
                    held.set()
                    release.wait(10)
            finally:
                other.close()

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(10)
            started = time.monotonic()
            with pytest.raises(StoreBusyError), backend.transaction(wait=False):
                pass
            assert time.monotonic() - started < 1
        finally:
            release.set()
            holder.join()
        with backend.transaction(wait=False) as tx:
            assert 2 == tx.bump_revision()

    def test_no_wait_read_never_blocks(self, backend: StoreBackend) -> None:
        """reading(wait=False) answers or raises StoreBusyError at once while another thread reads."""
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with backend.reading():
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(10)
            started = time.monotonic()
            try:
                with backend.reading(wait=False) as r:
                    r.revision()
            except StoreBusyError:
                pass
            assert time.monotonic() - started < 1
        finally:
            release.set()
            holder.join()

    def test_writers_on_many_handles_lose_nothing(self, backend: StoreBackend) -> None:
        """Read-then-write transactions on four handles at once are serialised."""

        def work(n: int) -> None:
            other = backend.sibling()
            try:
                for i in range(25):
                    with other.transaction() as tx:
                        row = tx.spend(("global", "*", "day:x"))
                        tx.charge(("global", "*", "day:x"), 1.0)
                        usd = 0.0 if row is None else 1.0
                        tx.reserve(
                            Reservation(f"h{n}-{i}", (("global", "*", "day:x"),), usd, "o", 0, 9)
                        )
            finally:
                other.close()

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with backend.reading() as r:
            assert [SpendRow("global", "*", "day:x", 100.0, 99.0)] == r.spend_rows()

    def test_schema_is_current_and_migrate_is_idempotent(self, backend: StoreBackend) -> None:
        """A new database is at a positive schema version; migrating again changes nothing."""
        version = backend.schema_version
        assert version > 0
        backend.migrate()
        assert version == backend.schema_version


class TestVault:
    def test_meta_is_replaced_whole(self, backend: StoreBackend) -> None:
        """set_vault_meta keeps exactly one parameter row."""
        with backend.reading() as r:
            assert [] == r.vault_meta()
        with backend.transaction() as tx:
            tx.set_vault_meta(meta())
            tx.set_vault_meta(meta(term=2, salt=b"t" * 16))
        with backend.reading() as r:
            assert [meta(term=2, salt=b"t" * 16)] == r.vault_meta()

    def test_keys_per_term(self, backend: StoreBackend) -> None:
        """Wrapped keys are stored per term; a retired term keeps its row without the key."""
        with backend.transaction() as tx:
            tx.put_vault_key(WrappedKey(1, b"n" * 24, b"w" * 48, 1.0))
            tx.put_vault_key(WrappedKey(2, b"m" * 24, b"x" * 48, 2.0))
            tx.put_vault_key(WrappedKey(1, None, None, 1.0, retired_at=3.0))
        with backend.reading() as r:
            assert WrappedKey(1, None, None, 1.0, 3.0) == r.vault_key(1)
            assert WrappedKey(2, b"m" * 24, b"x" * 48, 2.0) == r.vault_key(2)
            assert r.vault_key(3) is None

    def test_credentials(self, backend: StoreBackend) -> None:
        """Credentials are replaced by name, listed by name, and deleted."""
        with backend.transaction() as tx:
            tx.put_credential(sealed("openai"))
            tx.put_credential(sealed("anthropic"))
            tx.put_credential(sealed("openai", term=2, ct=b"new"))
        with backend.reading() as r:
            assert sealed("openai", term=2, ct=b"new") == r.credential("openai")
            assert ["anthropic", "openai"] == [c.name for c in r.credentials()]
            assert r.credential("nope") is None
        with backend.transaction() as tx:
            assert tx.delete_credential("openai")
            assert not tx.delete_credential("openai")
        with backend.reading() as r:
            assert ["anthropic"] == [c.name for c in r.credentials()]

    def test_audit_log(self, backend: StoreBackend) -> None:
        """Audit rows come back oldest first, as written."""
        with backend.transaction() as tx:
            tx.audit("vault.init", "", '{"kdf": {}}', at=1.0)
            tx.audit("vault.put", "openai", "{}", at=2.0)
        with backend.reading() as r:
            assert [("vault.init", "", '{"kdf": {}}'), ("vault.put", "openai", "{}")] == [
                (a.action, a.target, a.detail) for a in r.audit_log()
            ]


def held(
    hold: str, *keys: tuple[str, str, str], usd: float, expires_at: float = 100.0
) -> Reservation:
    return Reservation(hold, keys, usd, "pid-token", 1.0, expires_at)


class TestSpend:
    def test_reserve_release_charge(self, backend: StoreBackend) -> None:
        """Reservations add up per row; releasing a hold takes off its rows, once; charges add."""
        key = ("caller", "alice", "day:2026-01-31")
        other = ("global", "*", "day:2026-01-31")
        with backend.transaction() as tx:
            assert tx.spend(key) is None
            tx.reserve(held("a", key, other, usd=0.5))
            tx.reserve(held("b", key, usd=0.25))
            tx.release("a")
            tx.release("a")  # released already: nothing happens
            tx.release("nope")
            tx.charge(key, 0.1)
        with backend.reading() as r:
            assert SpendRow(*key, 0.1, 0.25) == r.spend(key)
            assert SpendRow(*other, 0.0, 0.0) == r.spend(other)
            assert [held("b", key, usd=0.25)] == r.reservations()
        with backend.transaction() as tx:
            tx.release("b")
            tx.charge(("global", "*", "month:2026-01"), 2.0)
        with backend.reading() as r:
            assert [
                SpendRow("caller", "alice", "day:2026-01-31", 0.1, 0.0),
                SpendRow("global", "*", "day:2026-01-31", 0.0, 0.0),
                SpendRow("global", "*", "month:2026-01", 2.0, 0.0),
            ] == r.spend_rows()
            assert [] == r.reservations()

    def test_expired_reservations_stop_counting(self, backend: StoreBackend) -> None:
        """expire_reservations releases exactly the holds past their expiry; a later release is a no-op."""
        key = ("global", "*", "day:2026-01-31")
        with backend.transaction() as tx:
            tx.reserve(held("dead", key, usd=1.0, expires_at=50.0))
            tx.reserve(held("live", key, usd=2.0, expires_at=150.0))
        with backend.transaction() as tx:
            assert 0 == tx.expire_reservations(now=49.0)
            assert 1 == tx.expire_reservations(now=50.0)
            tx.release("dead")  # its process comes back after all: nothing more is released
        with backend.reading() as r:
            assert SpendRow(*key, 0.0, 2.0) == r.spend(key)
            assert ["live"] == [h.hold for h in r.reservations()]


def day(n: int) -> float:
    return 1_767_225_600.0 + n * 86400  # 2026-01-01T00:00:00Z + n days


class TestRequestLogs:
    def fill(self, backend: StoreBackend) -> None:
        with backend.transaction() as tx:
            tx.add_request_logs(
                [
                    {
                        "request_id": "a",
                        "at": day(0),
                        "model": "m1",
                        "status": "ok",
                        "input_tokens": 10,
                        "output_tokens": 2,
                        "cost_usd": 0.5,
                    },
                    {
                        "request_id": "b",
                        "at": day(0) + 5,
                        "model": "m2",
                        "status": "error",
                        "caller": "alice",
                    },
                    {
                        "request_id": "c",
                        "at": day(1),
                        "model": "m1",
                        "status": "ok",
                        "input_tokens": 1,
                        "output_tokens": 1,
                        "cost_usd": 0.25,
                    },
                ]
            )

    def test_rows_come_back_newest_first(self, backend: StoreBackend) -> None:
        """request_logs returns every field, newest first, bounded by since and limit."""
        self.fill(backend)
        with backend.reading() as r:
            rows = r.request_logs(since=0.0, limit=10)
            assert ["c", "b", "a"] == [row["request_id"] for row in rows]
            assert list(LOG_COLUMNS) == list(rows[0])
            assert rows[1]["prompt"] is None
            assert ["c"] == [row["request_id"] for row in r.request_logs(since=day(1), limit=10)]
            assert ["c", "b"] == [row["request_id"] for row in r.request_logs(since=0, limit=2)]

    def test_unknown_fields_are_refused(self, backend: StoreBackend) -> None:
        """A row with a field outside LOG_COLUMNS is a ValueError; nothing is written."""
        with pytest.raises(ValueError, match="request-log"), backend.transaction() as tx:
            tx.add_request_logs([{"request_id": "x", "at": 1.0, "nope": 1}])
        with backend.reading() as r:
            assert [] == r.request_logs(since=0, limit=10)

    def test_retention_delete(self, backend: StoreBackend) -> None:
        """delete_request_logs removes the rows older than the cut and counts them."""
        self.fill(backend)
        with backend.transaction() as tx:
            assert 2 == tx.delete_request_logs(before=day(1))
        with backend.reading() as r:
            assert ["c"] == [row["request_id"] for row in r.request_logs(since=0, limit=10)]

    def test_usage_groups(self, backend: StoreBackend) -> None:
        """usage totals per model, per UTC day, and per caller with no caller first."""
        self.fill(backend)
        with backend.reading() as r:
            assert [
                UsageRow("m1", 2, 0, 11, 3, 0.75),
                UsageRow("m2", 1, 1, 0, 0, 0),
            ] == r.usage(since=0.0, group_by="model")
            assert ["2026-01-01", "2026-01-02"] == [
                u.key for u in r.usage(since=0.0, group_by="day")
            ]
            assert [None, "alice"] == [u.key for u in r.usage(since=0.0, group_by="caller")]
            assert [UsageRow("m1", 1, 0, 1, 1, 0.25)] == r.usage(since=day(1), group_by="model")
            with pytest.raises(ValueError, match="group"):
                r.usage(since=0.0, group_by="prompt")


class TestSQLite:
    def test_blob_columns_of_another_type_read_as_missing(self, tmp_path: Path) -> None:
        """A vault column holding text instead of bytes reads as None (the vault refuses it)."""
        with Store(tmp_path / "s.db") as s:
            with s.transaction() as tx:
                tx.put_credential(sealed("openai"))
                tx.execute("UPDATE vault_credentials SET ct = 'text'")
            with s.reading() as r:
                credential = r.credential("openai")
            assert credential is not None
            assert credential.ct is None

    def test_statement_failure_is_a_store_error(self, tmp_path: Path) -> None:
        """An SQLite error inside a transaction becomes StoreError, and the block is undone."""
        with Store(tmp_path / "s.db") as s:
            with pytest.raises(StoreError, match="nothing was written"), s.transaction() as tx:
                tx.bump_revision()
                tx.execute("INSERT INTO no_such_table VALUES (1)")
            with s.reading() as r:
                assert 0 == r.revision()


@pytest.fixture
def cheap_kdf() -> Iterator[None]:
    with insecure_vault_kdf():
        yield


def trace(estimate: float) -> RouteTrace:
    candidate = Candidate(
        model="m",
        provider="p",
        score=1.0,
        components=(),
        estimated_cost_usd=estimate,
        output_tokens=1,
        latency_ms=None,
    )
    return RouteTrace(request_id="r", mode="balanced", prompt_tokens=1, candidates=(candidate,))


class TestMachineryOnEveryBackend:
    """The control plane, the vault and the ledger need nothing but the protocol."""

    def test_control_plane(self, backend: StoreBackend) -> None:
        """Writes skip unchanged entries, bump the revision once, audit, and detect conflicts."""
        cp = ControlPlane(backend)
        first = cp.import_config({"providers": {"p": {"kind": "vllm", "api_key": "sk-literal"}}})
        assert 1 == first
        assert first == cp.import_config({"providers": {"p": {"kind": "vllm"}}})
        assert (1, {"providers": {"p": {"kind": "vllm"}}}) == cp.snapshot()
        assert 2 == cp.write([("routing", "routing", {"mode": "cheap"})], "routing.set", expect=1)
        with pytest.raises(Conflict):
            cp.write([("models", "m", {"provider": "p"})], "model.upsert", expect=1)
        assert 2 == cp.revision(wait=False)
        assert {"mode": "cheap"} == backend.export_config()["routing"]
        with backend.reading() as r:
            assert ["config.import", "routing.set"] == [a.action for a in r.audit_log()]

    def test_vault_lifecycle(self, backend: StoreBackend, cheap_kdf: None) -> None:
        """Init, put, rotate, rekey and delete; the values come back and a wrong password fails."""
        v = Vault(backend)
        v.init("pw")
        v.put("openai", "sk-one", provider="openai")
        v.put("anthropic", "sk-two")
        assert 2 == v.rotate_key()
        v.change_password("new pw")
        v.delete("anthropic")
        v.lock()
        with pytest.raises(VaultUnlockError):
            v.unlock("pw")
        v.unlock("new pw")
        assert "sk-one" == v.get("openai").reveal()
        assert ["openai"] == [c["name"] for c in v.names()]
        assert 2 == v.status()["term"]
        with backend.reading() as r:
            retired = r.vault_key(1)
        assert retired is not None
        assert (None, None) == (retired.wrap_nonce, retired.wrapped_dek)

    def test_failed_rotation_is_one_transaction(
        self, backend: StoreBackend, cheap_kdf: None
    ) -> None:
        """A damaged credential aborts rotate_key with nothing changed."""
        v = Vault(backend)
        v.init("pw")
        v.put("a", "sk-a")
        v.put("b", "sk-b")
        with backend.transaction() as tx:
            b = tx.credential("b")
            assert b is not None
            tx.put_credential(attrs.evolve(b, ct=b"damaged" * 4))
        with backend.reading() as r:
            before = (r.credentials(), r.vault_meta(), r.vault_key(1), r.vault_key(2))
        with pytest.raises(VaultCorruptedError):
            v.rotate_key()
        with backend.reading() as r:
            assert before == (r.credentials(), r.vault_meta(), r.vault_key(1), r.vault_key(2))
        assert "sk-a" == v.get("a").reveal()

    def test_budgets(self, backend: StoreBackend) -> None:
        """Reservations hold the estimate until settled; over the limit is refused."""
        budgets = Budgets(backend, [Budget("global", "day", 2.5)], wall=time.time)
        holds = [budgets.admit(trace(1.0), None), budgets.admit(trace(1.0), None)]
        with pytest.raises(BudgetExceededError):
            budgets.admit(trace(1.0), None)
        for hold in holds:
            budgets.settle(hold, None, None)
        (row,) = budgets.spend()
        assert (0.0, 0.0) == (row["usd"], row["reserved"])

    def test_request_log_and_usage(self, backend: StoreBackend) -> None:
        """The writer thread logs through a sibling handle; usage reads the totals."""
        rl = RequestLog(backend, buffer=100, retention_days=None)
        for i in range(3):
            rl.record({"request_id": f"r{i}", "at": time.time(), "model": "m", "status": "ok"})
        rl.close()
        (row,) = usage(backend)
        assert ("m", 3, 0) == (row["model"], row["requests"], row["errors"])
