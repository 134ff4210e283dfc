"""The store backend seam: what the control plane, the vault and the ledger need from a database.

Everything tokenhub persists goes through :class:`StoreBackend`, in domain terms
(config entries, vault rows, spend, request logs, audit), never SQL. The SQLite
file (:class:`tokenhub._store.Store`) is one implementation; a PostgreSQL one
implements the same three protocols and its own schema and migrations, and the
machinery above runs on it unchanged. This module holds values and protocols only:
no I/O. ``docs/_drafts/store-seam.md`` is the contributor's guide.

Guarantees every backend gives:

- :meth:`StoreBackend.transaction` is all or nothing, even if the process dies, and
  serialised with every other writer on the database (other handles, other
  processes): what it reads inside stays true until it commits. That is what makes
  budget reservations, optimistic config writes and a vault rotation safe.
- :meth:`StoreBackend.reading` sees one consistent snapshot.
- A handle is safe to share between threads; ``wait=False`` never blocks on another
  writer (it raises :class:`~tokenhub.errors.StoreBusyError`), so an event loop can
  try first and move to a thread only when it must.
- Failures are :class:`~tokenhub.errors.StoreError`; nothing half-written remains.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextlib import AbstractContextManager

__all__ = [
    "CONFIG_KINDS",
    "ENTRY_KINDS",
    "LOG_COLUMNS",
    "USAGE_GROUPS",
    "AuditEntry",
    "Reservation",
    "SealedCredential",
    "SpendKey",
    "SpendRow",
    "StoreBackend",
    "StoreReader",
    "StoreTransaction",
    "UsageRow",
    "VaultMeta",
    "WrappedKey",
    "stored_config",
]

#: Config entries, one per name, in the order they were first written.
ENTRY_KINDS: Final = ("providers", "models", "aliases")
#: ``settings`` holds one entry per policy section (``routing``, ...), named after it.
CONFIG_KINDS: Final = (*ENTRY_KINDS, "settings")

#: The fields of a request-log row (what :func:`tokenhub._ledger.log_row` builds).
LOG_COLUMNS: Final = (
    "request_id",
    "at",
    "model",
    "provider",
    "alias",
    "caller",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "status",
    "error_class",
    "attempts",
    "stream",
    "prompt",
    "completion",
)
#: What :meth:`StoreReader.usage` groups by; ``day`` is the UTC date (``YYYY-MM-DD``) of ``at``.
USAGE_GROUPS: Final = ("model", "provider", "caller", "alias", "day")

#: A spend row's identity: (scope, key, period), e.g. ``("caller", "alice", "day:2026-01-31")``.
SpendKey = tuple[str, str, str]


@attrs.frozen
class VaultMeta:
    """The vault's one parameter row, as stored.

    Byte fields read ``None`` when missing or not bytes: the vault checks every
    field before it trusts the row.
    """

    vault_id: bytes | None
    format_version: int
    kdf_alg: str
    kdf_opslimit: int
    kdf_memlimit: int
    kdf_parallelism: int
    kdf_salt: bytes | None
    wrap_alg: str
    active_term: int
    created_at: float
    checksum: bytes | None


@attrs.frozen
class WrappedKey:
    """A data key of one term, wrapped by the password's key; a retired term has no key."""

    term: int
    wrap_nonce: bytes | None
    wrapped_dek: bytes | None
    created_at: float
    retired_at: float | None = None


@attrs.frozen
class SealedCredential:
    """One sealed credential: ``ct`` is the key and its tag, sealed under ``term``'s data key."""

    name: str
    provider: str
    term: int
    nonce: bytes | None
    ct: bytes | None
    created_at: float
    updated_at: float


@attrs.frozen
class SpendRow:
    """What one budget row has spent (``usd``) and holds for requests in flight (``reserved``)."""

    scope: str
    key: str
    period: str
    usd: float
    reserved: float


@attrs.frozen
class Reservation:
    """One admitted request's hold: its ``usd`` counts in each of its rows' ``reserved``.

    ``hold`` names it (unique across processes), ``owner`` the process that made it.
    A hold whose ``expires_at`` has passed is released by an admission that needs
    the room, on any handle: a process that died with requests in flight does not
    hold the budget for ever.
    """

    hold: str
    keys: tuple[SpendKey, ...]
    usd: float
    owner: str
    created_at: float
    expires_at: float


@attrs.frozen
class UsageRow:
    """Request-log totals for one group (``key`` is the group's value, ``None`` for none)."""

    key: Any
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@attrs.frozen
class AuditEntry:
    """One audit row: ``detail`` is JSON text (never a secret value)."""

    at: float
    action: str
    target: str
    detail: str


class StoreReader(Protocol):
    """The reads, inside :meth:`StoreBackend.reading` or :meth:`StoreBackend.transaction`."""

    # -- control plane

    def revision(self) -> int:
        """The config change counter (0 before the first change)."""
        ...

    def config_entries(self, kind: str) -> list[tuple[str, str]]:
        """``(name, JSON text)`` of every entry of ``kind`` (one of :data:`CONFIG_KINDS`), in order.

        The order is the order names were first written: updating an entry keeps
        its place, a new one goes last.
        """
        ...

    def config_entry(self, kind: str, name: str) -> str | None:
        """The JSON text stored for ``name``, exactly as written, or ``None``."""
        ...

    def audit_log(self) -> list[AuditEntry]:
        """Every audit row, oldest first."""
        ...

    # -- vault

    def vault_meta(self) -> list[VaultMeta]:
        """The vault's parameter rows: none before ``init``, one after (more means damage)."""
        ...

    def vault_key(self, term: int) -> WrappedKey | None:
        """The wrapped data key of ``term``."""
        ...

    def credential(self, name: str) -> SealedCredential | None:
        """The sealed credential ``name``."""
        ...

    def credentials(self) -> list[SealedCredential]:
        """Every sealed credential, by name."""
        ...

    # -- ledger

    def spend(self, key: SpendKey) -> SpendRow | None:
        """One budget row."""
        ...

    def spend_rows(self) -> list[SpendRow]:
        """Every budget row, by scope, key and period."""
        ...

    def reservations(self) -> list[Reservation]:
        """Every reservation not yet released, by expiry then hold."""
        ...

    def usage(self, *, since: float, group_by: str) -> list[UsageRow]:
        """Request-log totals of rows ``at >= since``, per value of ``group_by``, by value.

        ``group_by`` is one of :data:`USAGE_GROUPS` (anything else is a ``ValueError``);
        ``None`` sorts first. ``errors`` counts rows with status ``error``; token and
        cost sums treat missing values as 0.
        """
        ...

    def request_logs(self, *, since: float, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` request-log rows ``at >= since``, newest first.

        Rows with the same ``at`` come last written first. Each row has the
        :data:`LOG_COLUMNS` keys.
        """
        ...


class StoreTransaction(StoreReader, Protocol):
    """The writes, inside :meth:`StoreBackend.transaction`: all of them commit, or none."""

    def audit(self, action: str, target: str, detail: str, *, at: float) -> None:
        """Append an audit row."""
        ...

    # -- control plane

    def put_config_entry(self, kind: str, name: str, text: str, *, at: float) -> None:
        """Store ``text`` (JSON) as ``name``; an update keeps its place, a new entry goes last."""
        ...

    def delete_config_entry(self, kind: str, name: str) -> bool:
        """Remove an entry; whether there was one."""
        ...

    def bump_revision(self) -> int:
        """Move the change counter by one; the new value."""
        ...

    # -- vault

    def set_vault_meta(self, meta: VaultMeta) -> None:
        """Replace the parameter row (there is at most one)."""
        ...

    def put_vault_key(self, key: WrappedKey) -> None:
        """Insert or replace the wrapped key of ``key.term``, overwriting the old bytes."""
        ...

    def put_credential(self, credential: SealedCredential) -> None:
        """Insert or replace the credential ``credential.name``, overwriting the old bytes."""
        ...

    def delete_credential(self, name: str) -> bool:
        """Remove a credential so that its bytes are gone; whether there was one."""
        ...

    # -- ledger

    def reserve(self, reservation: Reservation) -> None:
        """Record ``reservation``; add its ``usd`` to each row's ``reserved`` (creating rows)."""
        ...

    def release(self, hold: str) -> None:
        """Remove the hold, taking its ``usd`` off each of its rows (never below 0).

        A hold already released or expired releases nothing.
        """
        ...

    def expire_reservations(self, *, now: float) -> int:
        """Release every reservation with ``expires_at <= now`` (as :meth:`release`); how many."""
        ...

    def charge(self, key: SpendKey, usd: float) -> None:
        """Add ``usd`` to the row's spend, creating the row (reserved 0) if needed."""
        ...

    def add_request_logs(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append request-log rows (keys from :data:`LOG_COLUMNS`; a missing one is ``None``)."""
        ...

    def delete_request_logs(self, *, before: float) -> int:
        """Delete the request-log rows ``at < before``; how many."""
        ...


class StoreBackend(Protocol):
    """A handle on one tokenhub database, migrated to the current schema when opened.

    Thread-safe. Opening refuses a database with a newer schema (``StoreError``).
    """

    @property
    def name(self) -> str:
        """Where the data lives, for messages (a path; a URL without its password)."""
        ...

    @property
    def schema_version(self) -> int:
        """The schema version of the database."""
        ...

    def migrate(self) -> None:
        """Bring the schema to this tokenhub's version, in one transaction (opening does it)."""
        ...

    def reading(self, *, wait: bool = True) -> AbstractContextManager[StoreReader]:
        """Read one consistent snapshot.

        ``wait=False`` raises ``StoreBusyError`` rather than wait for another thread
        using this handle.
        """
        ...

    def transaction(self, *, wait: bool = True) -> AbstractContextManager[StoreTransaction]:
        """Write: serialised with every other writer, and all of it commits or none.

        Nested on one thread, the outer block commits. ``wait=False`` raises
        ``StoreBusyError`` at once if another writer holds the database, instead of
        waiting up to the backend's busy timeout. A write that cannot start or commit
        raises ``StoreError``, and nothing is written.
        """
        ...

    def sibling(self) -> StoreBackend:
        """Another handle on the same database with its own connection (close it when done).

        For work that must not hold this handle while it waits: a writer thread,
        budget writes that wait for the write lock.
        """
        ...

    def export_config(self) -> dict[str, Any]:
        """The stored config as a config dict (:func:`stored_config`)."""
        ...

    def checkpoint(self) -> None:
        """Make overwritten and deleted data unrecoverable from logs kept beside the database.

        SQLite truncates its write-ahead log; a backend without one does nothing.
        """
        ...

    def close(self) -> None:
        """Release the handle (never waits for another connection)."""
        ...


def stored_config(reader: StoreReader) -> dict[str, Any]:
    """The config dict a reader's entries make: entries in stored order, then policy sections."""
    out: dict[str, Any] = {}
    for kind in ENTRY_KINDS:
        rows = reader.config_entries(kind)
        if rows:
            out[kind] = {name: json.loads(text) for name, text in rows}
    for name, text in reader.config_entries("settings"):
        out[name] = json.loads(text)
    return out
