"""The SQLite file behind a Hub: schema, migrations, transactions.

One connection per :class:`Store`, shared by threads under a lock; WAL mode,
a busy timeout and ``BEGIN IMMEDIATE`` transactions so that several processes
can write one file. Writers never hold a transaction across I/O.

:class:`Store` is the seam for other backends (PostgreSQL): the vault, the
control plane and the ledger use only :meth:`Store.transaction`,
:meth:`Store.query`, :meth:`Store.day` and :meth:`Store.checkpoint`, with
``?`` parameters and SQL that PostgreSQL also runs (``ON CONFLICT (…) DO
UPDATE``, ``CASE``, ``coalesce``; no ``rowid``, no ``PRAGMA`` outside this
module). A second backend implements those methods and its own migrations.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import sqlite_utils

from tokenhub._redact import get_logger
from tokenhub.errors import StoreBusyError, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["SCHEMA_VERSION", "Store", "StoreBusyError"]

log = get_logger("tokenhub.store")


def _v1(db: sqlite_utils.Database) -> None:
    """The first schema: control plane, vault, logs, audit, feedback, spend."""
    for table in ("providers", "models", "aliases", "settings"):
        db[table].create(  # type: ignore[union-attr]
            {"name": str, "seq": int, "config": str, "updated_at": float}, pk="name"
        )
    db["store_meta"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]
    db["vault_meta"].create(  # type: ignore[union-attr]
        {
            "vault_id": bytes,
            "format_version": int,
            "kdf_alg": str,
            "kdf_opslimit": int,
            "kdf_memlimit": int,
            "kdf_parallelism": int,
            "kdf_salt": bytes,
            "wrap_alg": str,
            "active_term": int,
            "created_at": float,
            "checksum": bytes,
        },
        pk="vault_id",
    )
    db["vault_keys"].create(  # type: ignore[union-attr]
        {
            "term": int,
            "wrap_nonce": bytes,
            "wrapped_dek": bytes,
            "created_at": float,
            "retired_at": float,
        },
        pk="term",
    )
    db["vault_credentials"].create(  # type: ignore[union-attr]
        {
            "name": str,
            "provider": str,
            "term": int,
            "nonce": bytes,
            "ct": bytes,
            "created_at": float,
            "updated_at": float,
        },
        pk="name",
    )
    db["request_logs"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "request_id": str,
            "at": float,
            "model": str,
            "provider": str,
            "alias": str,
            "caller": str,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "latency_ms": float,
            "ttft_ms": float,
            "status": str,
            "error_class": str,
            "attempts": int,
            "stream": int,
            "prompt": str,
            "completion": str,
        },
        pk="id",
    )
    db["request_logs"].create_index(["at"])  # type: ignore[union-attr]
    db["audit_log"].create(  # type: ignore[union-attr]
        {"id": int, "at": float, "action": str, "target": str, "detail": str}, pk="id"
    )
    db["feedback"].create(  # type: ignore[union-attr]
        {"id": int, "request_id": str, "at": float, "model": str, "score": float, "detail": str},
        pk="id",
    )
    db["spend"].create(  # type: ignore[union-attr]
        {"scope": str, "key": str, "period": str, "usd": float, "reserved": float},
        pk=("scope", "key", "period"),
        defaults={"usd": 0.0, "reserved": 0.0},
        not_null={"usd", "reserved"},
    )


#: Migrations in order; ``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_v1,)
SCHEMA_VERSION = len(MIGRATIONS)


#: The tables of config entries, in config order (the other sections live in ``settings``).
CONFIG_TABLES = ("providers", "models", "aliases")


def config_revision(conn: sqlite3.Connection) -> int:
    """The config change counter; every config write bumps it."""
    row = conn.execute("SELECT value FROM store_meta WHERE key = 'revision'").fetchone()
    return int(row[0]) if row else 0


class Store:
    """A tokenhub SQLite file, migrated to the current schema when opened.

    Thread-safe: one connection guarded by a lock. Use :meth:`transaction` for
    every write so that a change is all or nothing, even if the process dies.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._busy_ms = busy_timeout * 1000
        self.lock = threading.RLock()
        try:
            # Owner-only from the start (SQLite gives -wal and -shm the same mode).
            if str(path) != ":memory:":
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(
                f"cannot create the store {str(self.path)!r}: {exc.strerror}"
            ) from None
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {str(self.path)!r}: {exc}") from None
        try:
            # Deleted rows (old wrapped keys, removed credentials) are overwritten, not freed.
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self.db = sqlite_utils.Database(conn, execute_plugins=False)
            self._migrate()
        except sqlite3.OperationalError as exc:
            conn.close()
            raise StoreError(f"cannot open the store {str(self.path)!r}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{str(self.path)!r} is not a usable tokenhub store: {exc}") from None
        except BaseException:
            conn.close()
            raise

    @property
    def conn(self) -> sqlite3.Connection:
        """The SQLite connection (hold :attr:`lock` while using it)."""
        return self.db.conn

    def _migrate(self) -> None:
        if self.schema_version == SCHEMA_VERSION:
            return
        with self.transaction():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{str(self.path)!r} has schema version {version}, newer than this tokenhub "
                    f"understands ({SCHEMA_VERSION}); upgrade tokenhub to open it"
                )
            for migrate in MIGRATIONS[version:]:
                migrate(self.db)
            if version < SCHEMA_VERSION:
                # PRAGMA takes no parameters; the value is an int we computed.
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        """The schema version of the file."""
        with self.lock:
            return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    @contextlib.contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """Run a block in one ``BEGIN IMMEDIATE`` transaction: all of it commits, or none.

        With ``wait=False``, raise :class:`StoreBusyError` at once if another connection holds
        the write lock, instead of waiting up to the busy timeout (so that an event
        loop can try without blocking, and move to a thread only when it must).
        """
        with self.lock:
            conn = self.conn
            if conn.in_transaction:  # nested: the outer block commits
                yield conn
                return
            try:
                if wait:
                    conn.execute("BEGIN IMMEDIATE")
                else:
                    conn.execute("PRAGMA busy_timeout=0")
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                    finally:
                        conn.execute(f"PRAGMA busy_timeout={int(self._busy_ms)}")
            except sqlite3.OperationalError as exc:
                if not wait:
                    raise StoreBusyError(str(exc)) from None
                raise self._busy(exc) from None
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                conn.execute("ROLLBACK")
                raise self._busy(exc) from None

    def _busy(self, exc: sqlite3.OperationalError) -> StoreError:
        return StoreError(f"the store {str(self.path)!r} is busy ({exc}); nothing was written")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Run a read query and return its rows as dicts."""
        with self.lock:
            cur = self.conn.execute(sql, params)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @staticmethod
    def day(column: str) -> str:
        """The SQL expression for the UTC date (``YYYY-MM-DD``) of a UNIX-time column."""
        return f"date({column}, 'unixepoch')"

    def export_config(self) -> dict[str, Any]:
        """The stored providers, models, aliases and policy sections, as a config dict.

        :meth:`Hub.from_config <tokenhub.Hub.from_config>` accepts it. Keys are
        referenced (``{"env": ...}``, ``{"vault": ...}``), never included:
        literal keys are never stored.
        """
        return self.config_snapshot()[1]

    def config_snapshot(self) -> tuple[int, dict[str, Any]]:
        """The config revision and the stored config it names, read in one transaction."""
        out: dict[str, Any] = {}
        with self.lock:
            conn = self.conn
            conn.execute("BEGIN")
            try:
                revision = config_revision(conn)
                for section in CONFIG_TABLES:
                    rows = conn.execute(
                        f"SELECT name, config FROM {section} ORDER BY seq"  # noqa: S608 - ours
                    ).fetchall()
                    if rows:
                        out[section] = {name: json.loads(value) for name, value in rows}
                for name, value in conn.execute(
                    "SELECT name, config FROM settings ORDER BY seq"
                ).fetchall():
                    out[name] = json.loads(value)
            finally:
                conn.execute("COMMIT")
        return revision, out

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it (no old page lingers in ``-wal``)."""
        with self.lock:
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("WAL checkpoint incomplete (another connection is busy); retried later")

    def close(self) -> None:
        """Checkpoint (if no other connection is busy: closing never waits) and close."""
        with self.lock:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA busy_timeout=0")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {str(self.path)!r}>"
