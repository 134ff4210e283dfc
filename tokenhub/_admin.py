"""``hub.admin``: runtime changes to the stored config, async and blocking."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenhub._control import SETTING_SECTIONS
from tokenhub.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from anyio.from_thread import BlockingPortal

    from tokenhub._control import Change

__all__ = ["Admin", "SyncAdmin"]


class Admin:
    """Runtime changes to providers, models, aliases and policy defaults (``hub.admin``).

    Each change is validated exactly like :meth:`Hub.from_config` (a
    :class:`~tokenhub.errors.ConfigError` names the bad path, and nothing is
    written), persisted in one transaction with an audit row, and applied to
    the running Hub; requests in flight finish on the objects they started with.
    Other Hubs sharing the store pick the change up within ``store.sync_interval``.
    """

    def __init__(
        self,
        change: Callable[[Sequence[Change], str], Awaitable[None]],
        stored: Callable[[], Mapping[str, Any]],
    ) -> None:
        self._change = change
        self._stored = stored

    async def upsert_provider(self, name: str, config: Mapping[str, Any]) -> None:
        """Add or replace the provider ``name``."""
        await self._change([("providers", name, dict(config))], "provider.upsert")

    async def remove_provider(self, name: str) -> None:
        """Remove the provider ``name`` (refused while a model uses it)."""
        self._known("providers", name)
        await self._change([("providers", name, None)], "provider.remove")

    async def upsert_model(self, name: str, config: Mapping[str, Any]) -> None:
        """Add or replace the model ``name``."""
        await self._change([("models", name, dict(config))], "model.upsert")

    async def disable_model(self, name: str) -> None:
        """Take ``name`` out of routing (``enabled: false``), keeping its config."""
        await self._set_enabled(name, enabled=False)

    async def enable_model(self, name: str) -> None:
        """Put ``name`` back into routing."""
        await self._set_enabled(name, enabled=True)

    async def _set_enabled(self, name: str, *, enabled: bool) -> None:
        entry = dict(self._known("models", name))
        entry["enabled"] = enabled
        await self._change(
            [("models", name, entry)], "model.enable" if enabled else "model.disable"
        )

    async def remove_model(self, name: str) -> None:
        """Remove the model ``name`` (refused while an alias or the policy names it)."""
        self._known("models", name)
        await self._change([("models", name, None)], "model.remove")

    async def upsert_alias(self, name: str, config: Mapping[str, Any]) -> None:
        """Add or replace the alias ``name``."""
        await self._change([("aliases", name, dict(config))], "alias.upsert")

    async def remove_alias(self, name: str) -> None:
        """Remove the alias ``name``."""
        self._known("aliases", name)
        await self._change([("aliases", name, None)], "alias.remove")

    async def configure(self, section: str, value: Any) -> None:
        """Replace a policy default section (``routing``, ``failover``, ``tokenizer``, ``budgets``).

        ``None`` restores the section's defaults.
        """
        if section not in SETTING_SECTIONS:
            known = ", ".join(SETTING_SECTIONS)
            raise ConfigError([(section, f"not a policy section; known: {known}")])
        await self._change([(section, section, value)], f"{section}.set")

    def _known(self, section: str, name: str) -> Any:
        entries = self._stored().get(section, {})
        if name not in entries:
            raise ConfigError([(f"{section}.{name}", "no such entry")])
        return entries[name]


class SyncAdmin:
    """:class:`Admin` with blocking methods, for :class:`~tokenhub.SyncHub`."""

    def __init__(self, admin: Admin, portal: BlockingPortal) -> None:
        self._admin, self._portal = admin, portal

    def upsert_provider(self, name: str, config: Mapping[str, Any]) -> None:
        """:meth:`Admin.upsert_provider`."""
        self._portal.call(self._admin.upsert_provider, name, config)

    def remove_provider(self, name: str) -> None:
        """:meth:`Admin.remove_provider`."""
        self._portal.call(self._admin.remove_provider, name)

    def upsert_model(self, name: str, config: Mapping[str, Any]) -> None:
        """:meth:`Admin.upsert_model`."""
        self._portal.call(self._admin.upsert_model, name, config)

    def disable_model(self, name: str) -> None:
        """:meth:`Admin.disable_model`."""
        self._portal.call(self._admin.disable_model, name)

    def enable_model(self, name: str) -> None:
        """:meth:`Admin.enable_model`."""
        self._portal.call(self._admin.enable_model, name)

    def remove_model(self, name: str) -> None:
        """:meth:`Admin.remove_model`."""
        self._portal.call(self._admin.remove_model, name)

    def upsert_alias(self, name: str, config: Mapping[str, Any]) -> None:
        """:meth:`Admin.upsert_alias`."""
        self._portal.call(self._admin.upsert_alias, name, config)

    def remove_alias(self, name: str) -> None:
        """:meth:`Admin.remove_alias`."""
        self._portal.call(self._admin.remove_alias, name)

    def configure(self, section: str, value: Any) -> None:
        """:meth:`Admin.configure`."""
        self._portal.call(self._admin.configure, section, value)
