"""A store backend in memory, for tests: proof that the machinery needs nothing SQLite-specific.

It implements :class:`tokenhub._storage.StoreBackend` with plain Python data: a
transaction works on a copy and swaps it in on success; one lock per database
serialises writers across sibling handles. It is small on purpose and not part of
tokenhub: a real second backend (PostgreSQL) runs the same contract suite.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from tokenhub._storage import (
    CONFIG_KINDS,
    LOG_COLUMNS,
    USAGE_GROUPS,
    AuditEntry,
    Reservation,
    SealedCredential,
    SpendKey,
    SpendRow,
    UsageRow,
    VaultMeta,
    WrappedKey,
    stored_config,
)
from tokenhub.errors import StoreBusyError, StoreError


@attrs.define
class _Data:
    config: dict[str, dict[str, tuple[int, str]]] = attrs.Factory(
        lambda: {kind: {} for kind in CONFIG_KINDS}
    )
    revision: int = 0
    audit: list[AuditEntry] = attrs.Factory(list)
    vault_meta: list[VaultMeta] = attrs.Factory(list)
    vault_keys: dict[int, WrappedKey] = attrs.Factory(dict)
    credentials: dict[str, SealedCredential] = attrs.Factory(dict)
    spend: dict[SpendKey, SpendRow] = attrs.Factory(dict)
    reservations: dict[str, Reservation] = attrs.Factory(dict)
    logs: list[dict[str, Any]] = attrs.Factory(list)


class _Database:
    def __init__(self) -> None:
        self.data = _Data()
        self.writer = threading.Lock()


class _Tx:
    def __init__(self, data: _Data) -> None:
        self.d = data

    @staticmethod
    def _kind(kind: str) -> str:
        if kind not in CONFIG_KINDS:
            raise ValueError(f"not a config kind: {kind!r}")
        return kind

    def revision(self) -> int:
        return self.d.revision

    def config_entries(self, kind: str) -> list[tuple[str, str]]:
        entries = self.d.config[self._kind(kind)]
        return [(name, text) for name, (_, text) in sorted(entries.items(), key=lambda e: e[1][0])]

    def config_entry(self, kind: str, name: str) -> str | None:
        found = self.d.config[self._kind(kind)].get(name)
        return None if found is None else found[1]

    def audit_log(self) -> list[AuditEntry]:
        return list(self.d.audit)

    def vault_meta(self) -> list[VaultMeta]:
        return list(self.d.vault_meta)

    def vault_key(self, term: int) -> WrappedKey | None:
        return self.d.vault_keys.get(term)

    def credential(self, name: str) -> SealedCredential | None:
        return self.d.credentials.get(name)

    def credentials(self) -> list[SealedCredential]:
        return [self.d.credentials[n] for n in sorted(self.d.credentials)]

    def spend(self, key: SpendKey) -> SpendRow | None:
        return self.d.spend.get(key)

    def spend_rows(self) -> list[SpendRow]:
        return [self.d.spend[k] for k in sorted(self.d.spend)]

    def usage(self, *, since: float, group_by: str) -> list[UsageRow]:
        if group_by not in USAGE_GROUPS:
            raise ValueError(f"cannot group request logs by {group_by!r}")
        groups: dict[Any, list[dict[str, Any]]] = {}
        for row in self.d.logs:
            if row["at"] >= since:
                key = (
                    time.strftime("%Y-%m-%d", time.gmtime(row["at"]))
                    if group_by == "day"
                    else row[group_by]
                )
                groups.setdefault(key, []).append(row)
        return [
            UsageRow(
                key,
                len(rows),
                sum(r["status"] == "error" for r in rows),
                sum(r["input_tokens"] or 0 for r in rows),
                sum(r["output_tokens"] or 0 for r in rows),
                sum(r["cost_usd"] or 0 for r in rows),
            )
            for key, rows in sorted(groups.items(), key=lambda g: (g[0] is not None, g[0] or ""))
        ]

    def request_logs(self, *, since: float, limit: int) -> list[dict[str, Any]]:
        rows = [(i, r) for i, r in enumerate(self.d.logs) if r["at"] >= since]
        rows.sort(key=lambda e: (e[1]["at"], e[0]), reverse=True)
        return [dict(r) for _, r in rows[:limit]]

    def audit(self, action: str, target: str, detail: str, *, at: float) -> None:
        self.d.audit.append(AuditEntry(at, action, target, detail))

    def put_config_entry(self, kind: str, name: str, text: str, *, at: float) -> None:
        entries = self.d.config[self._kind(kind)]
        last = max((seq for seq, _ in entries.values()), default=0)
        entries[name] = (entries[name][0] if name in entries else last + 1, text)

    def delete_config_entry(self, kind: str, name: str) -> bool:
        return self.d.config[self._kind(kind)].pop(name, None) is not None

    def bump_revision(self) -> int:
        self.d.revision += 1
        return self.d.revision

    def set_vault_meta(self, meta: VaultMeta) -> None:
        self.d.vault_meta = [meta]

    def put_vault_key(self, key: WrappedKey) -> None:
        self.d.vault_keys[key.term] = key

    def put_credential(self, credential: SealedCredential) -> None:
        self.d.credentials[credential.name] = credential

    def delete_credential(self, name: str) -> bool:
        return self.d.credentials.pop(name, None) is not None

    def reservations(self) -> list[Reservation]:
        return sorted(self.d.reservations.values(), key=lambda r: (r.expires_at, r.hold))

    def reserve(self, reservation: Reservation) -> None:
        self.d.reservations[reservation.hold] = reservation
        for key in reservation.keys:
            row = self.d.spend.get(key) or SpendRow(*key, 0.0, 0.0)
            self.d.spend[key] = attrs.evolve(row, reserved=row.reserved + reservation.usd)

    def release(self, hold: str) -> None:
        self._release([r for r in self.d.reservations.values() if r.hold == hold])

    def expire_reservations(self, *, now: float) -> int:
        gone = [r for r in self.d.reservations.values() if r.expires_at <= now]
        self._release(gone)
        return len(gone)

    def _release(self, gone: list[Reservation]) -> None:
        for r in gone:
            del self.d.reservations[r.hold]
            for key in r.keys:
                row = self.d.spend.get(key)
                if row is not None:
                    self.d.spend[key] = attrs.evolve(row, reserved=max(row.reserved - r.usd, 0.0))

    def charge(self, key: SpendKey, usd: float) -> None:
        row = self.d.spend.get(key) or SpendRow(*key, 0.0, 0.0)
        self.d.spend[key] = attrs.evolve(row, usd=row.usd + usd)

    def add_request_logs(self, rows: Sequence[Mapping[str, Any]]) -> None:
        unknown = set().union(*rows) - set(LOG_COLUMNS)
        if unknown:
            raise ValueError(f"not request-log fields: {', '.join(sorted(unknown))}")
        self.d.logs.extend({c: r.get(c) for c in LOG_COLUMNS} for r in rows)

    def delete_request_logs(self, *, before: float) -> int:
        kept = [r for r in self.d.logs if r["at"] >= before]
        gone = len(self.d.logs) - len(kept)
        self.d.logs = kept
        return gone


class MemoryStore:
    """A :class:`~tokenhub._storage.StoreBackend` holding everything in memory."""

    def __init__(self, database: _Database | None = None) -> None:
        self._db = database or _Database()
        self._local = threading.local()

    @property
    def name(self) -> str:
        return "memory"

    @property
    def schema_version(self) -> int:
        return 2

    def migrate(self) -> None:
        pass

    @contextlib.contextmanager
    def reading(self, *, wait: bool = True) -> Iterator[_Tx]:
        working = getattr(self._local, "working", None)
        # Commits swap the data object whole, so holding one reference is a snapshot.
        yield _Tx(working if working is not None else self._db.data)

    @contextlib.contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[_Tx]:
        working = getattr(self._local, "working", None)
        if working is not None:  # nested: the outer block commits
            yield _Tx(working)
            return
        if not self._db.writer.acquire(timeout=5 if wait else 0):
            if wait:
                raise StoreError("the memory store is busy; nothing was written")
            raise StoreBusyError("another writer holds the memory store")
        try:
            self._local.working = copy.deepcopy(self._db.data)
            yield _Tx(self._local.working)
            self._db.data = self._local.working
        finally:
            self._local.working = None
            self._db.writer.release()

    def sibling(self) -> MemoryStore:
        return MemoryStore(self._db)

    def export_config(self) -> dict[str, Any]:
        with self.reading() as reader:
            return stored_config(reader)

    def checkpoint(self) -> None:
        pass

    def close(self) -> None:
        pass
