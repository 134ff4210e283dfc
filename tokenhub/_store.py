"""The SQLite store backend: schema, migrations, transactions, and every SQL statement.

One connection per :class:`Store`, shared by threads under a lock; WAL mode,
a busy timeout and ``BEGIN IMMEDIATE`` transactions so that several processes
can write one file; ``secure_delete`` so that overwritten and deleted rows (old
wrapped keys, removed credentials) do not linger in free pages. Writers never
hold a transaction across I/O.

:class:`Store` implements :class:`tokenhub._storage.StoreBackend`; the vault, the
control plane and the ledger use nothing else, and no SQL lives outside this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import attrs
import sqlite_utils

from tokenhub._redact import get_logger
from tokenhub._storage import (
    CONFIG_KINDS,
    LOG_COLUMNS,
    USAGE_GROUPS,
    AuditEntry,
    Reservation,
    SealedCredential,
    SpendRow,
    UsageRow,
    VaultMeta,
    WrappedKey,
    stored_config,
)
from tokenhub.errors import StoreBusyError, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from tokenhub._storage import SpendKey, StoreBackend

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


def _v2(db: sqlite_utils.Database) -> None:
    """Reservations per request, with an owner and an expiry (a dead process's expire).

    Version 1 kept only the total in ``spend.reserved``, with no owner: what a
    killed process left there could never be released, so it is reset here.
    """
    # One row per request, keyed by its hold (one b-tree: admission writes it, settlement
    # deletes it); ``keys`` is the JSON list of the spend rows it counts in.
    db.execute(
        "CREATE TABLE reservations (hold TEXT PRIMARY KEY, keys TEXT NOT NULL, "
        "usd REAL NOT NULL, owner TEXT, created_at REAL, expires_at REAL NOT NULL) "
        "WITHOUT ROWID"
    )
    db.execute("UPDATE spend SET reserved = 0")


#: Migrations in order; ``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)
#: Tables every tokenhub store has: a file at a known version without them is someone else's.
_TABLES = frozenset(
    {"providers", "models", "aliases", "settings", "store_meta", "vault_meta", "vault_keys"}
    | {"vault_credentials", "request_logs", "audit_log", "spend", "reservations"}
)
#: SQLite result codes that mean another connection holds the lock.
_BUSY = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})

_CONFIG_TABLES = frozenset(CONFIG_KINDS)
_META_COLUMNS = tuple(f.name for f in attrs.fields(VaultMeta))
_META_BLOBS = frozenset({"vault_id", "kdf_salt", "checksum"})
_LOG_INSERT = (
    f"INSERT INTO request_logs ({', '.join(LOG_COLUMNS)}) "  # noqa: S608 - our column names
    f"VALUES ({', '.join('?' for _ in LOG_COLUMNS)})"
)


def _config_table(kind: str) -> str:
    if kind not in _CONFIG_TABLES:
        raise ValueError(f"not a config kind: {kind!r}")
    return kind


def _spend_keys(text: str) -> tuple[SpendKey, ...]:
    return tuple((scope, key, period) for scope, key, period in json.loads(text))


def _blob(value: object) -> bytes | None:
    """SQLite columns hold any type: a value that is not bytes reads as missing."""
    return value if isinstance(value, bytes) else None


class Transaction:
    """The reads and writes of :class:`~tokenhub._storage.StoreTransaction`, on one connection.

    Valid only inside the :meth:`Store.reading` or :meth:`Store.transaction` block
    that made it. :meth:`execute` runs raw SQL, for tests and tools.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one SQL statement (for tests and tools; tokenhub uses the methods below)."""
        return self.conn.execute(sql, params)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def audit(self, action: str, target: str, detail: str, *, at: float) -> None:
        """Append an audit row."""
        self.conn.execute(
            "INSERT INTO audit_log (at, action, target, detail) VALUES (?, ?, ?, ?)",
            (at, action, target, detail),
        )

    def audit_log(self) -> list[AuditEntry]:
        """Every audit row, oldest first."""
        return [
            AuditEntry(*r)
            for r in self._all("SELECT at, action, target, detail FROM audit_log ORDER BY id")
        ]

    # -- control plane

    def revision(self) -> int:
        """The config change counter."""
        row = self._one("SELECT value FROM store_meta WHERE key = 'revision'")
        return int(row[0]) if row else 0

    def bump_revision(self) -> int:
        """Move the change counter by one; the new value."""
        self.conn.execute(
            "INSERT INTO store_meta (key, value) VALUES ('revision', '1') "
            "ON CONFLICT (key) DO UPDATE "
            "SET value = CAST(CAST(store_meta.value AS INTEGER) + 1 AS TEXT)"
        )
        return self.revision()

    def config_entries(self, kind: str) -> list[tuple[str, str]]:
        """``(name, JSON text)`` of every entry of ``kind``, in stored order."""
        table = _config_table(kind)
        return [
            (name, text)
            for name, text in self._all(f"SELECT name, config FROM {table} ORDER BY seq")  # noqa: S608 - ours
        ]

    def config_entry(self, kind: str, name: str) -> str | None:
        """The JSON text stored for ``name``."""
        table = _config_table(kind)
        row = self._one(f"SELECT config FROM {table} WHERE name = ?", (name,))  # noqa: S608
        return None if row is None else row[0]

    def put_config_entry(self, kind: str, name: str, text: str, *, at: float) -> None:
        """Store an entry: an update keeps its place, a new one goes last."""
        table = _config_table(kind)
        self.conn.execute(
            f"INSERT INTO {table} (name, seq, config, updated_at) "  # noqa: S608 - ours
            # WHERE true: SQLite's parser needs it before ON CONFLICT in INSERT…SELECT.
            f"SELECT ?, coalesce(max(seq), 0) + 1, ?, ? FROM {table} WHERE true "
            "ON CONFLICT (name) DO UPDATE SET config = excluded.config, "
            "updated_at = excluded.updated_at",
            (name, text, at),
        )

    def delete_config_entry(self, kind: str, name: str) -> bool:
        """Remove an entry; whether there was one."""
        table = _config_table(kind)
        return self.conn.execute(f"DELETE FROM {table} WHERE name = ?", (name,)).rowcount > 0  # noqa: S608

    # -- vault

    def vault_meta(self) -> list[VaultMeta]:
        """The vault's parameter rows."""
        rows = self._all(f"SELECT {', '.join(_META_COLUMNS)} FROM vault_meta")  # noqa: S608 - ours
        out = []
        for row in rows:
            values: dict[str, Any] = dict(zip(_META_COLUMNS, row, strict=True))
            values.update((c, _blob(values[c])) for c in _META_BLOBS)
            out.append(VaultMeta(**values))
        return out

    def set_vault_meta(self, meta: VaultMeta) -> None:
        """Replace the parameter row."""
        self.conn.execute("DELETE FROM vault_meta")
        self.conn.execute(
            f"INSERT INTO vault_meta ({', '.join(_META_COLUMNS)}) "  # noqa: S608 - ours
            f"VALUES ({', '.join('?' for _ in _META_COLUMNS)})",
            tuple(getattr(meta, c) for c in _META_COLUMNS),
        )

    def vault_key(self, term: int) -> WrappedKey | None:
        """The wrapped data key of ``term``."""
        row = self._one(
            "SELECT term, wrap_nonce, wrapped_dek, created_at, retired_at "
            "FROM vault_keys WHERE term = ?",
            (term,),
        )
        if row is None:
            return None
        term, nonce, wrapped, created_at, retired_at = row
        return WrappedKey(term, _blob(nonce), _blob(wrapped), created_at, retired_at)

    def put_vault_key(self, key: WrappedKey) -> None:
        """Insert or replace a term's wrapped key (secure_delete overwrites the old bytes)."""
        self.conn.execute(
            "INSERT INTO vault_keys (term, wrap_nonce, wrapped_dek, created_at, retired_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (term) DO UPDATE SET "
            "wrap_nonce = excluded.wrap_nonce, wrapped_dek = excluded.wrapped_dek, "
            "created_at = excluded.created_at, retired_at = excluded.retired_at",
            (key.term, key.wrap_nonce, key.wrapped_dek, key.created_at, key.retired_at),
        )

    def credential(self, name: str) -> SealedCredential | None:
        """The sealed credential ``name``."""
        found = self._credentials("WHERE name = ?", (name,))
        return found[0] if found else None

    def credentials(self) -> list[SealedCredential]:
        """Every sealed credential, by name."""
        return self._credentials("ORDER BY name")

    def _credentials(self, where: str, params: Sequence[Any] = ()) -> list[SealedCredential]:
        rows = self._all(
            "SELECT name, provider, term, nonce, ct, created_at, updated_at "  # noqa: S608 - ours
            f"FROM vault_credentials {where}",
            params,
        )
        return [
            SealedCredential(name, provider, term, _blob(nonce), _blob(ct), created, updated)
            for name, provider, term, nonce, ct, created, updated in rows
        ]

    def put_credential(self, credential: SealedCredential) -> None:
        """Insert or replace a credential (secure_delete overwrites the old bytes)."""
        c = credential
        self.conn.execute(
            "INSERT INTO vault_credentials "
            "(name, provider, term, nonce, ct, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "provider = excluded.provider, term = excluded.term, nonce = excluded.nonce, "
            "ct = excluded.ct, created_at = excluded.created_at, updated_at = excluded.updated_at",
            (c.name, c.provider, c.term, c.nonce, c.ct, c.created_at, c.updated_at),
        )

    def delete_credential(self, name: str) -> bool:
        """Remove a credential (securely deleted); whether there was one."""
        gone = self.conn.execute("DELETE FROM vault_credentials WHERE name = ?", (name,))
        return gone.rowcount > 0

    # -- ledger

    def spend(self, key: SpendKey) -> SpendRow | None:
        """One budget row."""
        row = self._one(
            "SELECT scope, key, period, usd, reserved FROM spend "
            "WHERE scope = ? AND key = ? AND period = ?",
            key,
        )
        return None if row is None else SpendRow(*row)

    def spend_rows(self) -> list[SpendRow]:
        """Every budget row."""
        return [
            SpendRow(*r)
            for r in self._all(
                "SELECT scope, key, period, usd, reserved FROM spend ORDER BY scope, key, period"
            )
        ]

    def reservations(self) -> list[Reservation]:
        """Every reservation not yet released."""
        return [
            Reservation(hold, _spend_keys(keys), usd, owner, created, expires)
            for hold, keys, usd, owner, created, expires in self._all(
                "SELECT hold, keys, usd, owner, created_at, expires_at "
                "FROM reservations ORDER BY expires_at, hold"
            )
        ]

    def reserve(self, reservation: Reservation) -> None:
        """Record a reservation and add it to its rows' totals."""
        r = reservation
        self.conn.execute(
            "INSERT INTO reservations (hold, keys, usd, owner, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (r.hold, json.dumps(r.keys), r.usd, r.owner, r.created_at, r.expires_at),
        )
        self.conn.executemany(
            "INSERT INTO spend (scope, key, period, usd, reserved) VALUES (?, ?, ?, 0, ?) "
            "ON CONFLICT (scope, key, period) "
            "DO UPDATE SET reserved = spend.reserved + excluded.reserved",
            [(*key, r.usd) for key in r.keys],
        )

    def release(self, hold: str) -> None:
        """Remove a hold and take it off its rows."""
        self._release("hold = ?", (hold,))

    def expire_reservations(self, *, now: float) -> int:
        """Release the reservations past their expiry; how many."""
        return self._release("expires_at <= ?", (now,))

    def _release(self, where: str, params: tuple[Any, ...]) -> int:
        gone = self._all(f"SELECT keys, usd FROM reservations WHERE {where}", params)  # noqa: S608
        if gone:
            self.conn.executemany(
                "UPDATE spend SET reserved = CASE WHEN reserved > ? THEN reserved - ? ELSE 0 END "
                "WHERE scope = ? AND key = ? AND period = ?",
                [(usd, usd, *key) for keys, usd in gone for key in _spend_keys(keys)],
            )
            self.conn.execute(f"DELETE FROM reservations WHERE {where}", params)  # noqa: S608
        return len(gone)

    def charge(self, key: SpendKey, usd: float) -> None:
        """Add to a row's spend."""
        self.conn.execute(
            "INSERT INTO spend (scope, key, period, usd) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (scope, key, period) DO UPDATE SET usd = spend.usd + excluded.usd",
            (*key, usd),
        )

    def add_request_logs(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append request-log rows."""
        unknown = set().union(*rows) - set(LOG_COLUMNS)
        if unknown:
            raise ValueError(f"not request-log fields: {', '.join(sorted(unknown))}")
        self.conn.executemany(_LOG_INSERT, [tuple(r.get(c) for c in LOG_COLUMNS) for r in rows])

    def delete_request_logs(self, *, before: float) -> int:
        """Delete the rows older than ``before``; how many."""
        return self.conn.execute("DELETE FROM request_logs WHERE at < ?", (before,)).rowcount

    def usage(self, *, since: float, group_by: str) -> list[UsageRow]:
        """Request-log totals per value of ``group_by``."""
        if group_by not in USAGE_GROUPS:
            raise ValueError(f"cannot group request logs by {group_by!r}")
        key = "date(at, 'unixepoch')" if group_by == "day" else group_by
        rows = self._all(
            f"SELECT {key}, count(*), "  # noqa: S608 - from USAGE_GROUPS
            "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), "
            "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(cost_usd), 0) "
            f"FROM request_logs WHERE at >= ? GROUP BY {key} ORDER BY {key}",
            (since,),
        )
        return [UsageRow(*r) for r in rows]

    def request_logs(self, *, since: float, limit: int) -> list[dict[str, Any]]:
        """The newest request-log rows."""
        rows = self._all(
            f"SELECT {', '.join(LOG_COLUMNS)} FROM request_logs "  # noqa: S608 - ours
            "WHERE at >= ? ORDER BY at DESC, id DESC LIMIT ?",
            (since, limit),
        )
        return [dict(zip(LOG_COLUMNS, r, strict=True)) for r in rows]


class Store:
    """A tokenhub SQLite file, migrated to the current schema when opened.

    Implements :class:`~tokenhub._storage.StoreBackend`. Thread-safe: one
    connection guarded by :attr:`lock`.
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
            self.migrate()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.OperationalError as exc:
            conn.close()
            raise StoreError(f"cannot open the store {str(self.path)!r}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{str(self.path)!r} is not a usable tokenhub store: {exc}") from None
        except BaseException:
            conn.close()
            raise
        if not tables >= _TABLES:  # at a version we know, yet not our schema: another app's file
            conn.close()
            missing = ", ".join(sorted(_TABLES - tables))
            raise StoreError(
                f"{str(self.path)!r} is not a tokenhub store: it has no table {missing}"
            )

    @property
    def conn(self) -> sqlite3.Connection:
        """The SQLite connection (hold :attr:`lock` while using it)."""
        return self.db.conn

    @property
    def name(self) -> str:
        """The file's path."""
        return str(self.path)

    def migrate(self) -> None:
        """Bring the file to :data:`SCHEMA_VERSION` in one transaction; refuse a newer one."""
        if self.schema_version == SCHEMA_VERSION:
            return
        with self.transaction() as tx:
            version = tx.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{str(self.path)!r} has schema version {version}, newer than this tokenhub "
                    f"understands ({SCHEMA_VERSION}); upgrade tokenhub to open it"
                )
            for migrate in MIGRATIONS[version:]:
                migrate(self.db)
            if version < SCHEMA_VERSION:
                # PRAGMA takes no parameters; the value is an int we computed.
                tx.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        """The schema version of the file (``PRAGMA user_version``)."""
        with self.lock:
            try:
                return int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise self._error(exc, wrote=False) from None

    @contextlib.contextmanager
    def reading(self, *, wait: bool = True) -> Iterator[Transaction]:
        """Read one snapshot (a deferred transaction: in WAL mode it never waits for writers).

        ``wait=False`` raises :class:`StoreBusyError` instead of waiting for another
        thread using the connection (the event loop must not block behind it).
        """
        if not self.lock.acquire(blocking=wait):
            raise StoreBusyError("the store's connection is in use")
        try:
            conn = self.conn
            if conn.in_transaction:  # inside a transaction: read what it sees
                yield Transaction(conn)
                return
            try:
                conn.execute("BEGIN")
                try:
                    yield Transaction(conn)
                finally:
                    self._end("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(exc, wrote=False) from None
        finally:
            self.lock.release()

    @contextlib.contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[Transaction]:
        """Run a block in one ``BEGIN IMMEDIATE`` transaction: all of it commits, or none.

        With ``wait=False``, raise :class:`StoreBusyError` at once if another connection holds
        the write lock, instead of waiting up to the busy timeout (so that an event
        loop can try without blocking, and move to a thread only when it must).
        Any SQLite failure (a full disk, a damaged file) is a :class:`StoreError`
        naming the file and SQLite's reason, and nothing is written.
        """
        with self.lock:
            conn = self.conn
            if conn.in_transaction:  # nested: the outer block commits
                yield Transaction(conn)
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
            except sqlite3.Error as exc:
                self._end()
                if not wait and getattr(exc, "sqlite_errorname", None) in _BUSY:
                    raise StoreBusyError(str(exc)) from None
                raise self._error(exc) from None
            try:
                yield Transaction(conn)
            except sqlite3.Error as exc:
                self._end()
                raise self._error(exc) from None
            except BaseException:
                self._end()
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._end()
                raise self._error(exc) from None

    def _end(self, how: str = "ROLLBACK") -> None:
        """End the transaction, if SQLite has not ended it already; never raise.

        After a full disk or an I/O error SQLite may have rolled back on its own, and
        a ROLLBACK would then fail ("no transaction is active"): that must not hide
        the error that matters, which the caller raises.
        """
        try:
            if self.conn.in_transaction:
                self.conn.execute(how)
        except sqlite3.Error as exc:
            log.debug("%s after a failure: %s", how, exc)

    def _error(self, exc: sqlite3.Error, *, wrote: bool = True) -> StoreError:
        """The StoreError for an SQLite failure: the file, what kind, SQLite's reason."""
        name = getattr(exc, "sqlite_errorname", None)
        where = repr(str(self.path))
        if name in _BUSY:
            what = f"the store {where} is busy ({exc})"
        elif name in {"SQLITE_CORRUPT", "SQLITE_NOTADB"}:
            what = f"the store {where} is damaged ({exc}); restore it from a backup"
        elif isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            what = f"the store {where} is closed"
        else:
            what = f"the store {where} failed ({exc})"
        return StoreError(f"{what}; nothing was written" if wrote else what)

    def sibling(self) -> Store:
        """Another connection to the same file (``:memory:`` opens a new, empty store)."""
        return Store(self.path, busy_timeout=self.busy_timeout)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Run a read query and return its rows as dicts (for tests and tools)."""
        with self.lock:
            try:
                cur = self.conn.execute(sql, params)
                rows = cur.fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc, wrote=False) from None
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in rows]

    def export_config(self) -> dict[str, Any]:
        """The stored providers, models, aliases and policy sections, as a config dict.

        :meth:`Hub.from_config <tokenhub.Hub.from_config>` accepts it. Keys are
        referenced (``{"env": ...}``, ``{"vault": ...}``), never included:
        literal keys are never stored.
        """
        with self.reading() as reader:
            return stored_config(reader)

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it (no old page lingers in ``-wal``)."""
        with self.lock:
            try:
                busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc, wrote=False) from None
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


if TYPE_CHECKING:

    def _implements(store: Store) -> StoreBackend:  # mypy checks Store against the protocol
        return store
