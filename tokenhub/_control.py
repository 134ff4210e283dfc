"""The control plane in the store: config entries, revisions and the audit log.

The store holds the shareable part of a config (providers, models, aliases and
the routing, failover, tokenizer and budgets sections) as the JSON the user
wrote, minus literal API keys, which never reach the disk. Every change is one
transaction that bumps a revision number; Hubs sharing the file poll it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tokenhub._store import CONFIG_TABLES, config_revision

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

    from tokenhub._store import Store

__all__ = [
    "ENTRY_SECTIONS",
    "SETTING_SECTIONS",
    "ControlPlane",
    "shareable",
]

ENTRY_SECTIONS = CONFIG_TABLES
SETTING_SECTIONS = ("routing", "failover", "tokenizer", "budgets")

#: One change: (section, name, value); value None removes the entry or setting.
Change = tuple[str, str, Any]


def shareable(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``config`` the store keeps: no local sections, no literal keys."""
    out: dict[str, Any] = {}
    for section in ENTRY_SECTIONS:
        entries = config.get(section)
        if isinstance(entries, Mapping):
            out[section] = {name: _without_literal_key(e) for name, e in entries.items()}
    for section in SETTING_SECTIONS:
        if section in config:
            out[section] = config[section]
    return out


def _without_literal_key(entry: Any) -> Any:
    if isinstance(entry, Mapping) and isinstance(entry.get("api_key"), str):
        return {k: v for k, v in entry.items() if k != "api_key"}
    return entry


def apply(config: Mapping[str, Any], changes: Sequence[Change]) -> dict[str, Any]:
    """A copy of ``config`` with ``changes`` applied (entries keep their order)."""
    out = {k: (dict(v) if k in ENTRY_SECTIONS else v) for k, v in config.items()}
    for section, name, value in changes:
        if section in ENTRY_SECTIONS:
            entries = out.setdefault(section, {})
            if value is None:
                entries.pop(name, None)
            else:
                entries[name] = value
        elif value is None:
            out.pop(section, None)
        else:
            out[section] = value
    return out


class ControlPlane:
    """Reads and writes the config entries of a :class:`~tokenhub._store.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def revision(self, *, wait: bool = True) -> int:
        """The change counter; another process's write moves it.

        ``wait=False`` raises ``StoreBusyError`` instead of waiting for another thread
        using the connection (the event loop must not block behind it).
        """
        if not self.store.lock.acquire(blocking=wait):
            from tokenhub.errors import StoreBusyError  # noqa: PLC0415

            raise StoreBusyError("the store's connection is in use")
        try:
            return config_revision(self.store.conn)
        finally:
            self.store.lock.release()

    def read(self) -> dict[str, Any]:
        """The stored config, in the shape ``Hub.from_config`` takes (entries in stored order)."""
        return self.snapshot()[1]

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        """The revision and the config it names, read in one transaction."""
        return self.store.config_snapshot()

    def write(self, changes: Sequence[Change], action: str, *, expect: int | None = None) -> int:
        """Apply ``changes`` in one transaction with an audit row; return the new revision.

        Entries that would not change are skipped; with nothing to change, nothing
        is written. With ``expect``, raise :class:`Conflict` if another writer
        moved the revision since it was read (the caller re-reads and re-validates).
        """
        now = time.time()
        with self.store.transaction() as conn:
            revision = config_revision(conn)
            if expect is not None and revision != expect:
                raise Conflict(revision)
            changed: list[Change] = []
            for section, name, value in changes:
                table, key = (section, name) if section in ENTRY_SECTIONS else ("settings", section)
                old = conn.execute(
                    f"SELECT config FROM {table} WHERE name = ?",  # noqa: S608 - our names
                    (key,),
                ).fetchone()
                if value is None:
                    if old is not None:
                        conn.execute(f"DELETE FROM {table} WHERE name = ?", (key,))  # noqa: S608
                        changed.append((section, name, value))
                    continue
                text = json.dumps(_without_literal_key(value), sort_keys=True)
                if old is not None and old[0] == text:
                    continue
                changed.append((section, name, value))
                # New entries go last (config order breaks routing ties); updates keep their place.
                conn.execute(
                    f"INSERT INTO {table} (name, seq, config, updated_at) "  # noqa: S608
                    # WHERE true: SQLite's parser needs it before ON CONFLICT in INSERT…SELECT.
                    f"SELECT ?, coalesce(max(seq), 0) + 1, ?, ? FROM {table} WHERE true "
                    "ON CONFLICT (name) DO UPDATE SET config = excluded.config, "
                    "updated_at = excluded.updated_at",
                    (key, text, now),
                )
            if not changed:
                return revision
            revision = _bump(conn)
            detail = [{"section": s, "name": n, "removed": v is None} for s, n, v in changed]
            conn.execute(
                "INSERT INTO audit_log (at, action, target, detail) VALUES (?, ?, ?, ?)",
                (now, action, ",".join(sorted({n for _, n, _ in changed})), json.dumps(detail)),
            )
        return revision

    def import_config(self, config: Mapping[str, Any]) -> int:
        """Upsert every entry and setting of ``config`` (nothing is removed)."""
        changes: list[Change] = []
        for section, value in shareable(config).items():
            if section in ENTRY_SECTIONS:
                changes.extend((section, name, entry) for name, entry in value.items())
            else:
                changes.append((section, section, value))
        return self.write(changes, "config.import")


class Conflict(Exception):  # noqa: N818 - internal signal, never leaves tokenhub
    """The revision moved between a read and a write."""


def _bump(conn: sqlite3.Connection) -> int:
    conn.execute(
        "INSERT INTO store_meta (key, value) VALUES ('revision', '1') "
        "ON CONFLICT (key) DO UPDATE "
        "SET value = CAST(CAST(store_meta.value AS INTEGER) + 1 AS TEXT)"
    )
    return int(conn.execute("SELECT value FROM store_meta WHERE key = 'revision'").fetchone()[0])
