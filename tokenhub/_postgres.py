"""The PostgreSQL store backend: schema, migrations, transactions, and every SQL statement.

A :class:`PostgresStore` is a handle on one database through a pool of synchronous
psycopg 3 connections (:mod:`psycopg_pool`). The store seam is synchronous and
called from worker threads (the request-log writer, budget writes that wait), so
a blocking pooled connection is the right tool; an event loop never does a round
trip: with ``wait=False`` on an event-loop thread, :meth:`~PostgresStore.reading`
and :meth:`~PostgresStore.transaction` raise ``StoreBusyError`` at once, and the
caller moves to its thread path.

Every write transaction takes one transaction-level advisory lock first
(``pg_advisory_xact_lock``), so writers are serialised across handles, threads and
processes, in the order they asked (PostgreSQL queues lock waiters), and run at
``READ COMMITTED``: each statement after the lock sees every earlier commit.
Reads are ``REPEATABLE READ READ ONLY`` snapshots and never wait for writers.
Migrations run under the same lock, once, however many replicas start together.
A config change notifies (``NOTIFY tokenhub_config``) at commit.

No message carries the URL's password: :attr:`~PostgresStore.name` shows
``postgresql://user:***@host/db``, and driver errors are scrubbed before they
become :class:`~tokenhub.errors.StoreError`.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit, urlunsplit

import attrs

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
    from collections.abc import Iterator, Mapping, Sequence

    import psycopg
    import psycopg_pool

    from tokenhub._storage import SpendKey, StoreBackend

__all__ = ["CHANNEL", "SCHEMA_VERSION", "PostgresStore", "redact_url"]

log = get_logger("tokenhub.store")

#: The advisory lock every writer takes (per database): "tokenhub" in ASCII.
WRITE_LOCK: Final = 0x746F6B656E687562
#: The channel a config change notifies, with the new revision as payload.
CHANNEL: Final = "tokenhub_config"
_CONFIG_KINDS = frozenset(CONFIG_KINDS)
_META_COLUMNS = tuple(f.name for f in attrs.fields(VaultMeta))
_USAGE_KEYS: Final = {
    **{g: g for g in USAGE_GROUPS},
    "day": "to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
#: Connection failures (class 08), server shutdown (57P), too many connections (53300).
_UNREACHABLE = re.compile(r"^(08|57P|53300)")
#: Lock timeouts, serialisation failures and deadlocks: another writer was in the way.
_BUSY = frozenset({"55P03", "40001", "40P01"})

_V1: Final = """
CREATE TABLE config_entries (
    kind text NOT NULL, name text NOT NULL, seq bigserial NOT NULL,
    config text NOT NULL, updated_at double precision,
    PRIMARY KEY (kind, name));
CREATE TABLE store_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE vault_meta (
    vault_id bytea PRIMARY KEY, format_version integer, kdf_alg text, kdf_opslimit bigint,
    kdf_memlimit bigint, kdf_parallelism integer, kdf_salt bytea, wrap_alg text,
    active_term integer, created_at double precision, checksum bytea);
CREATE TABLE vault_keys (
    term integer PRIMARY KEY, wrap_nonce bytea, wrapped_dek bytea,
    created_at double precision, retired_at double precision);
CREATE TABLE vault_credentials (
    name text PRIMARY KEY, provider text, term integer, nonce bytea, ct bytea,
    created_at double precision, updated_at double precision);
CREATE TABLE request_logs (
    id bigserial PRIMARY KEY, request_id text, at double precision, model text,
    provider text, alias text, caller text, input_tokens bigint, output_tokens bigint,
    cost_usd double precision, latency_ms double precision, ttft_ms double precision,
    status text, error_class text, attempts integer, stream integer, prompt text,
    completion text);
CREATE INDEX request_logs_at ON request_logs (at);
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY, at double precision, action text, target text, detail text);
CREATE TABLE spend (
    scope text NOT NULL, key text NOT NULL, period text NOT NULL,
    usd double precision NOT NULL DEFAULT 0, reserved double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, key, period));
CREATE TABLE reservations (
    hold text PRIMARY KEY, keys text NOT NULL, usd double precision NOT NULL, owner text,
    created_at double precision, expires_at double precision NOT NULL);
CREATE INDEX reservations_expiry ON reservations (expires_at);
"""

#: Migrations in order; ``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``.
MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or the query) shown as ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
        return _QUERY_PASSWORD.sub(r"\1***", urlunsplit(parts))
    except ValueError:
        return "postgresql://(an invalid URL)"


def url_passwords(url: str) -> list[str]:
    """The passwords a URL holds (user part, ``?password=``), to scrub from messages."""
    found = [m.group(0).partition("=")[2] for m in _QUERY_PASSWORD.finditer(url)]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return [p for p in (password, *found) if p]


def _on_event_loop() -> bool:
    """Whether this thread runs an asyncio or trio event loop (so must do no network I/O)."""
    import asyncio  # noqa: PLC0415 - loaded already wherever a loop runs

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return True
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_run())


def _spend_keys(text: str) -> tuple[SpendKey, ...]:
    return tuple((scope, key, period) for scope, key, period in json.loads(text))


def _blob(value: object) -> bytes | None:
    if isinstance(value, memoryview):
        return value.tobytes()
    return value if isinstance(value, bytes) else None


def _kind(kind: str) -> str:
    if kind not in _CONFIG_KINDS:
        raise ValueError(f"not a config kind: {kind!r}")
    return kind


class Transaction:
    """The reads and writes of :class:`~tokenhub._storage.StoreTransaction`, on one connection.

    Valid only inside the :meth:`PostgresStore.reading` or
    :meth:`PostgresStore.transaction` block that made it. :meth:`execute` runs raw
    SQL, for tests and tools.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one SQL statement (for tests and tools; tokenhub uses the methods below)."""
        return self.conn.execute(sql, params)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()

    def audit(self, action: str, target: str, detail: str, *, at: float) -> None:
        """Append an audit row."""
        self.execute(
            "INSERT INTO audit_log (at, action, target, detail) VALUES (%s, %s, %s, %s)",
            (at, action, target, detail),
        )

    def audit_log(self) -> list[AuditEntry]:
        """Every audit row, oldest first."""
        rows = self._all("SELECT at, action, target, detail FROM audit_log ORDER BY id")
        return [AuditEntry(*r) for r in rows]

    # -- control plane

    def revision(self) -> int:
        """The config change counter."""
        row = self._one("SELECT value FROM store_meta WHERE key = 'revision'")
        return int(row[0]) if row else 0

    def bump_revision(self) -> int:
        """Move the change counter by one and notify at commit; the new value."""
        row = self._one(
            "INSERT INTO store_meta (key, value) VALUES ('revision', '1') "
            "ON CONFLICT (key) DO UPDATE "
            "SET value = (store_meta.value::bigint + 1)::text RETURNING value"
        )
        self.execute("SELECT pg_notify(%s, %s)", (CHANNEL, row[0]))
        return int(row[0])

    def config_entries(self, kind: str) -> list[tuple[str, str]]:
        """``(name, JSON text)`` of every entry of ``kind``, in stored order."""
        rows = self._all(
            "SELECT name, config FROM config_entries WHERE kind = %s ORDER BY seq", (_kind(kind),)
        )
        return [(name, text) for name, text in rows]

    def config_entry(self, kind: str, name: str) -> str | None:
        """The JSON text stored for ``name``."""
        row = self._one(
            "SELECT config FROM config_entries WHERE kind = %s AND name = %s", (_kind(kind), name)
        )
        return None if row is None else str(row[0])

    def put_config_entry(self, kind: str, name: str, text: str, *, at: float) -> None:
        """Store an entry: an update keeps its place (its ``seq``), a new one goes last."""
        self.execute(
            "INSERT INTO config_entries (kind, name, config, updated_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (kind, name) DO UPDATE SET config = excluded.config, "
            "updated_at = excluded.updated_at",
            (_kind(kind), name, text, at),
        )

    def delete_config_entry(self, kind: str, name: str) -> bool:
        """Remove an entry; whether there was one."""
        cur = self.execute(
            "DELETE FROM config_entries WHERE kind = %s AND name = %s", (_kind(kind), name)
        )
        return cur.rowcount > 0

    # -- vault

    def vault_meta(self) -> list[VaultMeta]:
        """The vault's parameter rows."""
        rows = self._all(f"SELECT {', '.join(_META_COLUMNS)} FROM vault_meta")  # noqa: S608 - ours
        out = []
        for row in rows:
            values: dict[str, Any] = dict(zip(_META_COLUMNS, row, strict=True))
            values.update((c, _blob(values[c])) for c in ("vault_id", "kdf_salt", "checksum"))
            out.append(VaultMeta(**values))
        return out

    def set_vault_meta(self, meta: VaultMeta) -> None:
        """Replace the parameter row."""
        self.execute("DELETE FROM vault_meta")
        self.execute(
            f"INSERT INTO vault_meta ({', '.join(_META_COLUMNS)}) "  # noqa: S608 - ours
            f"VALUES ({', '.join('%s' for _ in _META_COLUMNS)})",
            tuple(getattr(meta, c) for c in _META_COLUMNS),
        )

    def vault_key(self, term: int) -> WrappedKey | None:
        """The wrapped data key of ``term``."""
        row = self._one(
            "SELECT term, wrap_nonce, wrapped_dek, created_at, retired_at "
            "FROM vault_keys WHERE term = %s",
            (term,),
        )
        if row is None:
            return None
        term, nonce, wrapped, created_at, retired_at = row
        return WrappedKey(term, _blob(nonce), _blob(wrapped), created_at, retired_at)

    def put_vault_key(self, key: WrappedKey) -> None:
        """Insert or replace a term's wrapped key."""
        self.execute(
            "INSERT INTO vault_keys (term, wrap_nonce, wrapped_dek, created_at, retired_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (term) DO UPDATE SET "
            "wrap_nonce = excluded.wrap_nonce, wrapped_dek = excluded.wrapped_dek, "
            "created_at = excluded.created_at, retired_at = excluded.retired_at",
            (key.term, key.wrap_nonce, key.wrapped_dek, key.created_at, key.retired_at),
        )

    def credential(self, name: str) -> SealedCredential | None:
        """The sealed credential ``name``."""
        found = self._credentials("WHERE name = %s", (name,))
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
        """Insert or replace a credential."""
        c = credential
        self.execute(
            "INSERT INTO vault_credentials "
            "(name, provider, term, nonce, ct, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
            "provider = excluded.provider, term = excluded.term, nonce = excluded.nonce, "
            "ct = excluded.ct, created_at = excluded.created_at, updated_at = excluded.updated_at",
            (c.name, c.provider, c.term, c.nonce, c.ct, c.created_at, c.updated_at),
        )

    def delete_credential(self, name: str) -> bool:
        """Remove a credential; whether there was one."""
        return self.execute("DELETE FROM vault_credentials WHERE name = %s", (name,)).rowcount > 0

    # -- ledger

    def spend(self, key: SpendKey) -> SpendRow | None:
        """One budget row."""
        row = self._one(
            "SELECT scope, key, period, usd, reserved FROM spend "
            "WHERE scope = %s AND key = %s AND period = %s",
            key,
        )
        return None if row is None else SpendRow(*row)

    def spend_rows(self) -> list[SpendRow]:
        """Every budget row."""
        rows = self._all(
            "SELECT scope, key, period, usd, reserved FROM spend ORDER BY scope, key, period"
        )
        return [SpendRow(*r) for r in rows]

    def reservations(self) -> list[Reservation]:
        """Every reservation not yet released."""
        rows = self._all(
            "SELECT hold, keys, usd, owner, created_at, expires_at "
            "FROM reservations ORDER BY expires_at, hold"
        )
        return [
            Reservation(hold, _spend_keys(keys), usd, owner, created, expires)
            for hold, keys, usd, owner, created, expires in rows
        ]

    def reserve(self, reservation: Reservation) -> None:
        """Record a reservation and add it to its rows' totals."""
        r = reservation
        self.execute(
            "INSERT INTO reservations (hold, keys, usd, owner, created_at, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (r.hold, json.dumps(r.keys), r.usd, r.owner, r.created_at, r.expires_at),
        )
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO spend (scope, key, period, usd, reserved) VALUES (%s, %s, %s, 0, %s) "
                "ON CONFLICT (scope, key, period) "
                "DO UPDATE SET reserved = spend.reserved + excluded.reserved",
                [(*key, r.usd) for key in r.keys],
            )

    def release(self, hold: str) -> None:
        """Remove a hold and take it off its rows."""
        self._release("hold = %s", (hold,))

    def expire_reservations(self, *, now: float) -> int:
        """Release the reservations past their expiry; how many."""
        return self._release("expires_at <= %s", (now,))

    def _release(self, where: str, params: tuple[Any, ...]) -> int:
        gone = self._all(f"DELETE FROM reservations WHERE {where} RETURNING keys, usd", params)  # noqa: S608
        if gone:
            with self.conn.cursor() as cur:
                cur.executemany(
                    "UPDATE spend SET reserved = greatest(reserved - %s, 0) "
                    "WHERE scope = %s AND key = %s AND period = %s",
                    [(usd, *key) for keys, usd in gone for key in _spend_keys(keys)],
                )
        return len(gone)

    def charge(self, key: SpendKey, usd: float) -> None:
        """Add to a row's spend."""
        self.execute(
            "INSERT INTO spend (scope, key, period, usd) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (scope, key, period) DO UPDATE SET usd = spend.usd + excluded.usd",
            (*key, usd),
        )

    def add_request_logs(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append request-log rows (one ``COPY``)."""
        unknown = set().union(*rows) - set(LOG_COLUMNS)
        if unknown:
            raise ValueError(f"not request-log fields: {', '.join(sorted(unknown))}")
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY request_logs ({', '.join(LOG_COLUMNS)}) FROM STDIN") as copy,
        ):
            for r in rows:
                copy.write_row(tuple(r.get(c) for c in LOG_COLUMNS))

    def delete_request_logs(self, *, before: float) -> int:
        """Delete the rows older than ``before``; how many."""
        return self.execute("DELETE FROM request_logs WHERE at < %s", (before,)).rowcount

    def usage(self, *, since: float, group_by: str) -> list[UsageRow]:
        """Request-log totals per value of ``group_by``."""
        if group_by not in USAGE_GROUPS:
            raise ValueError(f"cannot group request logs by {group_by!r}")
        key = _USAGE_KEYS[group_by]
        rows = self._all(
            f"SELECT {key}, count(*), "  # noqa: S608 - from USAGE_GROUPS
            "count(*) FILTER (WHERE status = 'error'), "
            "coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint, "
            "coalesce(sum(cost_usd), 0) "
            f"FROM request_logs WHERE at >= %s GROUP BY 1 ORDER BY 1 NULLS FIRST",
            (since,),
        )
        return [UsageRow(*r) for r in rows]

    def request_logs(self, *, since: float, limit: int) -> list[dict[str, Any]]:
        """The newest request-log rows."""
        rows = self._all(
            f"SELECT {', '.join(LOG_COLUMNS)} FROM request_logs "  # noqa: S608 - ours
            "WHERE at >= %s ORDER BY at DESC, id DESC LIMIT %s",
            (since, limit),
        )
        return [dict(zip(LOG_COLUMNS, r, strict=True)) for r in rows]


@attrs.define
class _Pool:
    """The connection pool that a handle and its siblings share; closed with the last of them."""

    pool: psycopg_pool.ConnectionPool[Any]
    handles: int = 1
    lock: threading.Lock = attrs.Factory(threading.Lock)


class PostgresStore:
    """A tokenhub PostgreSQL database, migrated to the current schema when opened.

    Implements :class:`~tokenhub._storage.StoreBackend`. Thread-safe: each block
    takes a connection of its own from the pool (``pool_size`` at most, shared with
    :meth:`sibling` handles). ``connect_timeout`` bounds each connection attempt,
    ``busy_timeout`` the wait for a free connection and for the write lock.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        connect_timeout: float = 2.0,
        busy_timeout: float = 5.0,
        _shared: _Pool | None = None,
    ) -> None:
        self._url, self.name = url, redact_url(url)
        self._secrets = url_passwords(url)
        self.pool_size, self.connect_timeout = pool_size, connect_timeout
        self.busy_timeout = busy_timeout
        self._local = threading.local()  # the transaction this thread has open on this handle
        self._closed = False
        if _shared is not None:
            self._shared = _shared
            return
        try:
            import psycopg_pool  # noqa: PLC0415 - an optional extra, loaded with the store
        except ImportError:
            raise StoreError(
                "a PostgreSQL store needs psycopg and psycopg-pool: "
                "pip install 'tokenhub[postgres]'"
            ) from None
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=busy_timeout,
            kwargs={
                "connect_timeout": max(1, round(connect_timeout)),
                "application_name": "tokenhub",
                # Blocks begin explicitly (BEGIN ISOLATION LEVEL ...) and end with COMMIT.
                "autocommit": True,
            },
            open=False,
            name="tokenhub",
        )
        try:
            pool.open(wait=True, timeout=connect_timeout + 1)
        except Exception as exc:  # noqa: BLE001 - PoolTimeout, or a malformed URL
            pool.close(timeout=0)
            raise StoreError(f"cannot reach the store {self.name}: {self._scrub(exc)}") from None
        self._shared = _Pool(pool)
        try:
            self.migrate()
        except BaseException:
            self.close()
            raise

    # -- connections

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text.replace(self._url, self.name)

    def _error(self, exc: Exception, *, wrote: bool = True) -> StoreError:
        """The StoreError for a driver failure: the database, what kind, the server's reason."""
        import psycopg  # noqa: PLC0415

        state = getattr(exc, "sqlstate", None) or ""
        reason = self._scrub(exc)
        if state in _BUSY:
            return StoreBusyError(f"the store {self.name} is busy ({reason})")
        if (
            isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not state
        ) or _UNREACHABLE.match(state):
            what = f"the store {self.name} is unreachable ({reason})"
        else:
            what = f"the store {self.name} failed ({reason})"
        return StoreError(f"{what}; nothing was written" if wrote else what)

    def _getconn(self, *, wait: bool) -> psycopg.Connection[Any]:
        import psycopg_pool  # noqa: PLC0415

        try:
            conn: psycopg.Connection[Any] = self._shared.pool.getconn(
                timeout=self.busy_timeout if wait else 0.5
            )
        except psycopg_pool.PoolTimeout:
            if not wait:
                raise StoreBusyError(f"the store {self.name} has no free connection") from None
            raise StoreError(
                f"the store {self.name} is unreachable or has no free connection "
                f"after {self.busy_timeout:g} s"
            ) from None
        except psycopg_pool.PoolClosed:
            raise StoreError(f"the store {self.name} is closed") from None
        return conn

    def _begin(self, begin: str, *, wait: bool) -> psycopg.Connection[Any]:
        """A pooled connection with ``begin`` run on it (a dropped connection is replaced once)."""
        import psycopg  # noqa: PLC0415

        if self._closed:
            raise StoreError(f"the store {self.name} is closed")
        if not wait and _on_event_loop():
            # A round trip is network I/O: an event loop never waits for it (nor for a lock).
            raise StoreBusyError(f"the store {self.name} is not used from an event loop")
        pool = self._shared.pool
        for retry in (True, False):
            conn = self._getconn(wait=wait)
            try:
                conn.execute(begin)
            except psycopg.Error as exc:
                _rollback(conn)
                pool.putconn(conn)
                if retry and conn.broken:  # the server dropped it (a restart): check the rest
                    pool.check()
                    continue
                raise self._error(exc, wrote=False) from None
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_block(self) -> Transaction | None:
        return getattr(self._local, "tx", None)

    @contextlib.contextmanager
    def _block(self, begin: str, *, wait: bool, write: bool) -> Iterator[Transaction]:
        import psycopg  # noqa: PLC0415

        if write:
            # One round trip: begin, bound the lock wait, and (waiting) take the write lock.
            ms = int(self.busy_timeout * 1000)
            begin = f"{begin}; SET LOCAL lock_timeout = {ms}"
            if wait:
                begin = f"{begin}; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        conn = self._begin(begin, wait=wait)
        try:
            tx = Transaction(conn)
            try:
                if write and not wait:
                    row = conn.execute(
                        "SELECT pg_try_advisory_xact_lock(%s)", (WRITE_LOCK,)
                    ).fetchone()
                    if not (row and row[0]):
                        _rollback(conn)
                        raise StoreBusyError(f"another writer holds the store {self.name}")
            except psycopg.Error as exc:
                _rollback(conn)
                raise self._error(exc, wrote=False) from None
            self._local.tx = tx
            try:
                yield tx
            except psycopg.Error as exc:
                _rollback(conn)
                raise self._error(exc, wrote=write) from None
            except BaseException:
                _rollback(conn)
                raise
            finally:
                self._local.tx = None
            try:
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                _rollback(conn)
                raise self._error(exc, wrote=write) from None
        finally:
            self._shared.pool.putconn(conn)

    @property
    def schema_version(self) -> int:
        """The schema version of the database (0 before the first migration)."""
        with self.reading() as r:
            row = r._one("SELECT to_regclass('schema_version') IS NOT NULL")  # noqa: SLF001
            if not row[0]:
                return 0
            row = r._one("SELECT max(version) FROM schema_version")  # noqa: SLF001
            return int(row[0] or 0)

    def migrate(self) -> None:
        """Bring the database to :data:`SCHEMA_VERSION` under the write lock; refuse a newer one.

        Replicas starting together take turns: the first migrates, the others find
        the schema current.
        """
        with self.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = tx._one("SELECT max(version) FROM schema_version")  # noqa: SLF001
            version = int(row[0] or 0)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the store {self.name} has schema version {version}, newer than this "
                    f"tokenhub understands ({SCHEMA_VERSION}); upgrade tokenhub to open it"
                )
            if version == SCHEMA_VERSION:
                return
            for script in MIGRATIONS[version:]:
                tx.execute(script)
            tx.execute("DELETE FROM schema_version")
            tx.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))

    @contextlib.contextmanager
    def reading(self, *, wait: bool = True) -> Iterator[Transaction]:
        """Read one snapshot (``REPEATABLE READ READ ONLY``; never waits for writers).

        Inside this thread's open transaction on this handle, read what it sees.
        ``wait=False`` on an event-loop thread raises ``StoreBusyError`` (no round trip).
        """
        tx = self._open_block()
        if tx is not None:
            yield tx
            return
        with self._block(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", wait=wait, write=False
        ) as tx:
            yield tx

    @contextlib.contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[Transaction]:
        """Run a block in one transaction under the write lock: all of it commits, or none.

        ``wait=False`` raises ``StoreBusyError`` at once if another writer holds the
        lock, or on an event-loop thread (no round trip there). A failure to reach the
        server, a lock wait past ``busy_timeout`` or a failed statement or commit is
        a ``StoreError``, and nothing is written.
        """
        tx = self._open_block()
        if tx is not None:  # nested: the outer block commits
            yield tx
            return
        with self._block("BEGIN ISOLATION LEVEL READ COMMITTED", wait=wait, write=True) as tx:
            yield tx

    def sibling(self) -> PostgresStore:
        """Another handle on the same database, sharing this one's pool."""
        shared = self._shared
        with shared.lock:
            if shared.handles == 0:
                raise StoreError(f"the store {self.name} is closed")
            shared.handles += 1
        return PostgresStore(
            self._url,
            pool_size=self.pool_size,
            connect_timeout=self.connect_timeout,
            busy_timeout=self.busy_timeout,
            _shared=shared,
        )

    def export_config(self) -> dict[str, Any]:
        """The stored providers, models, aliases and policy sections, as a config dict."""
        with self.reading() as reader:
            return stored_config(reader)

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL has no log beside the database that tokenhub could truncate.

        Deleted rows stay in the table's pages until ``VACUUM`` reclaims them, and in
        the WAL and its archive: protect those as you protect the database.
        """

    def listen(self) -> Listener:
        """A connection of its own that waits for config notifications (for a watcher thread)."""
        return Listener(self)

    def close(self) -> None:
        """Release the handle; the last handle of a pool closes it (never waits for others)."""
        if self._closed:
            return
        self._closed = True
        shared = self._shared
        with shared.lock:
            shared.handles -= 1
            last = shared.handles == 0
        if last:
            shared.pool.close(timeout=1.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PostgresStore {self.name!r}>"


class Listener:
    """``LISTEN tokenhub_config`` on a dedicated autocommit connection (one thread uses it)."""

    def __init__(self, store: PostgresStore) -> None:
        import psycopg  # noqa: PLC0415

        self._store = store
        try:
            self._conn = psycopg.connect(
                store._url,  # noqa: SLF001 - the listener is part of the store
                autocommit=True,
                connect_timeout=max(1, round(store.connect_timeout)),
                application_name="tokenhub-listen",
            )
            self._conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raise store._error(exc, wrote=False) from None  # noqa: SLF001

    def wait(self, timeout: float) -> int | None:
        """The newest revision notified within ``timeout`` seconds, or ``None``.

        ``StoreError`` when the connection is lost (open a new listener then).
        """
        import psycopg  # noqa: PLC0415

        newest = None
        try:
            for note in self._conn.notifies(timeout=timeout, stop_after=1):
                newest = max(newest or 0, int(note.payload))
        except psycopg.Error as exc:
            self.close()
            raise self._store._error(exc, wrote=False) from None  # noqa: SLF001
        return newest

    def close(self) -> None:
        """Close the connection (never raises)."""
        with contextlib.suppress(Exception):
            self._conn.close()


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """Roll back if the connection still can; never raise (the caller raises what matters)."""
    with contextlib.suppress(Exception):
        conn.execute("ROLLBACK")


if TYPE_CHECKING:

    def _implements(store: PostgresStore) -> StoreBackend:  # mypy checks it against the protocol
        return store
