"""The control plane in the store: config entries, revisions and the audit log.

The store holds the shareable part of a config (providers, models, aliases and
the routing, failover, tokenizer and budgets sections) as the JSON the user
wrote, minus literal API keys, which never reach the disk. Every change is one
transaction that bumps a revision number; Hubs sharing the file poll it. The
control plane reaches the store only through :class:`~tokenhub._storage.StoreBackend`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tokenhub._storage import ENTRY_KINDS, stored_config

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tokenhub._storage import StoreBackend

__all__ = [
    "ENTRY_SECTIONS",
    "SETTING_SECTIONS",
    "ControlPlane",
    "shareable",
]

ENTRY_SECTIONS = ENTRY_KINDS
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
    """Reads and writes the config entries of a store backend."""

    def __init__(self, store: StoreBackend) -> None:
        self.store = store

    def revision(self, *, wait: bool = True) -> int:
        """The change counter; another process's write moves it.

        ``wait=False`` raises ``StoreBusyError`` instead of waiting for another thread
        using the connection (the event loop must not block behind it).
        """
        with self.store.reading(wait=wait) as reader:
            return reader.revision()

    def read(self) -> dict[str, Any]:
        """The stored config, in the shape ``Hub.from_config`` takes (entries in stored order)."""
        return self.snapshot()[1]

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        """The revision and the config it names, read in one transaction."""
        with self.store.reading() as reader:
            return reader.revision(), stored_config(reader)

    def write(self, changes: Sequence[Change], action: str, *, expect: int | None = None) -> int:
        """Apply ``changes`` in one transaction with an audit row; return the new revision.

        Entries that would not change are skipped; with nothing to change, nothing
        is written. With ``expect``, raise :class:`Conflict` if another writer
        moved the revision since it was read (the caller re-reads and re-validates).
        """
        now = time.time()
        with self.store.transaction() as tx:
            revision = tx.revision()
            if expect is not None and revision != expect:
                raise Conflict(revision)
            changed: list[Change] = []
            for section, name, value in changes:
                kind, key = (section, name) if section in ENTRY_SECTIONS else ("settings", section)
                old = tx.config_entry(kind, key)
                if value is None:
                    if old is not None:
                        tx.delete_config_entry(kind, key)
                        changed.append((section, name, value))
                    continue
                text = json.dumps(_without_literal_key(value), sort_keys=True)
                if old == text:
                    continue
                changed.append((section, name, value))
                tx.put_config_entry(kind, key, text, at=now)
            if not changed:
                return revision
            revision = tx.bump_revision()
            detail = [{"section": s, "name": n, "removed": v is None} for s, n, v in changed]
            tx.audit(
                action, ",".join(sorted({n for _, n, _ in changed})), json.dumps(detail), at=now
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
