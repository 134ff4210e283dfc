"""Assembly: a Hub's parts built from its config, and the store-backed config it follows.

The Hub facade stays thin: this module builds the provider adapters (with their
HTTP clients and key sources), opens the store and its vault, and keeps the
config that lives in the store (:class:`Source`): validating admin changes
against the latest stored revision, and following changes other processes made.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from tokenhub._config import parse_config, parse_local
from tokenhub._control import ENTRY_SECTIONS, Conflict, ControlPlane, apply, shareable
from tokenhub._http import HttpSettings
from tokenhub._httpx import HttpxClient
from tokenhub._redact import get_logger, register
from tokenhub._schema import hide_url_password
from tokenhub._secret import Secret
from tokenhub._settings import VaultKey
from tokenhub.errors import ConfigError, StoreBusyError, StoreError
from tokenhub.providers import ProviderSettings
from tokenhub.providers._base import HTTPProvider
from tokenhub.providers._registry import find_kind, kinds_for
from tokenhub.routing._deployment import Deployment
from tokenhub.routing._policy import ModelInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tokenhub._clock import Clock
    from tokenhub._config import HubConfig, ModelConfig, StoreConfig, VaultConfig
    from tokenhub._control import Change
    from tokenhub._http import HttpClient
    from tokenhub._postgres import PostgresStore
    from tokenhub._settings import KeySource
    from tokenhub._storage import StoreBackend
    from tokenhub._vault import Vault
    from tokenhub.providers import Capabilities, Provider

__all__ = [
    "Assembly",
    "Source",
    "assemble",
    "build_providers",
    "capabilities_of",
    "routing_table",
]

log = get_logger("tokenhub.hub")

#: A config and the providers built for it: what a Hub installs.
Built = tuple["HubConfig", dict[str, "Provider"]]


def build_providers(
    parsed: HubConfig,
    *,
    http: Callable[[HttpSettings], HttpClient] | None,
    clock: Clock,
    vault: Vault | None,
    reuse: tuple[HubConfig, Mapping[str, Provider]] | None = None,
) -> dict[str, Provider]:
    """Build each configured provider's adapter, with its HTTP client and key source.

    ``http`` builds every client when given; otherwise each provider's ``http``
    entry chooses. With ``reuse`` (the current config and providers), a provider
    whose config did not change keeps its adapter and connection pool.
    """
    built: dict[str, Provider] = {}
    errors: list[tuple[str, str]] = []
    for name, p in parsed.providers.items():
        if reuse is not None and reuse[0].providers.get(name) == p and name in reuse[1]:
            built[name] = reuse[1][name]
            continue
        factory = find_kind(p.kind)
        if factory is None:  # pragma: no cover - parse_config checked the kind
            raise ConfigError([(f"providers.{name}.kind", f"unknown kind {p.kind!r}")])
        wanted = HttpSettings(p.timeouts, p.max_connections, name, p.max_response_bytes)
        if http is not None:
            client: HttpClient = http(wanted)
        elif p.http == "aiohttp":
            try:
                from tokenhub._aiohttp import AiohttpClient  # noqa: PLC0415 - an extra
            except ImportError:
                errors.append((f"providers.{name}.http", "needs aiohttp: tokenhub[aiohttp]"))
                continue
            client = AiohttpClient(wanted)
        else:
            client = HttpxClient(wanted)
        api_key: KeySource | None = p.api_key
        if isinstance(api_key, VaultKey) and vault is not None:
            from tokenhub._vault import VaultKeySource  # noqa: PLC0415

            api_key = VaultKeySource(vault, api_key.vault)  # decrypted per request
        settings = ProviderSettings(
            name=name,
            kind=p.kind,
            base_urls=p.base_urls,
            api_key=api_key,
            headers=p.headers,
            timeouts=p.timeouts,
            options=p.options,
            http=client,
            clock=clock.wall,
        )
        try:
            built[name] = factory(settings)
        except ConfigError as exc:  # adapters report paths relative to their entry
            errors.extend((f"providers.{name}.{path}", why) for path, why in exc.errors)
    if errors:
        raise ConfigError(errors)
    return built


def _store_url(cfg: StoreConfig) -> str:
    """The PostgreSQL URL: as configured, or read from the environment variable named."""
    url = cfg.url
    if isinstance(url, Secret):
        return url.reveal()
    assert url is not None  # noqa: S101 - called only with a url
    value = os.environ.get(url.env)
    if not value:
        raise ConfigError([("store.url.env", f"{url.env} is not set")])
    if not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError([("store.url.env", f"{url.env} does not hold a postgresql:// URL")])
    hide_url_password(value)
    return value


def open_backend(cfg: StoreConfig) -> StoreBackend:
    """Open the configured store: the SQLite file at ``path``, or the PostgreSQL at ``url``."""
    if cfg.url is not None:
        from tokenhub._postgres import PostgresStore  # noqa: PLC0415 - psycopg: an extra

        return PostgresStore(
            _store_url(cfg),
            pool_size=cfg.pool_size,
            connect_timeout=cfg.connect_timeout,
            busy_timeout=cfg.busy_timeout,
        )
    from tokenhub._store import Store  # noqa: PLC0415 - sqlite-utils loads only with a store

    assert cfg.path is not None  # noqa: S101 - the checks require path or url
    return Store(cfg.path, busy_timeout=cfg.busy_timeout)


def _open_store(
    cfg: StoreConfig, vault_cfg: VaultConfig, clock: Clock
) -> tuple[StoreBackend, Vault]:
    """Open the configured store and its vault; unlock it when a password source is set."""
    from tokenhub._vault import Vault  # noqa: PLC0415 - PyNaCl loads only with a store

    store = open_backend(cfg)
    vault = Vault(store, auto_lock=vault_cfg.auto_lock, clock=clock.monotonic)
    source = vault_cfg.password
    if source is None:
        return store, vault
    try:
        password = _read_password(source)
        vault.unlock(password)
    except BaseException:
        store.close()
        raise
    return store, vault


def _literal_keys(config: Mapping[str, Any]) -> dict[str, str]:
    entries = config.get("providers")
    if not isinstance(entries, Mapping):
        return {}
    return {
        name: e["api_key"]
        for name, e in entries.items()
        if isinstance(e, Mapping) and isinstance(e.get("api_key"), str)
    }


def _changes(shared: Mapping[str, Any]) -> list[Change]:

    out: list[Change] = []
    for section, value in shared.items():
        if section in ENTRY_SECTIONS:
            out.extend((section, name, entry) for name, entry in value.items())
        else:
            out.append((section, section, value))
    return out


def _read_password(source: Mapping[str, str]) -> bytearray:

    if "env" in source:
        value = os.environ.get(source["env"])
        if not value:
            raise ConfigError([("vault.password.env", f"{source['env']} is not set")])
        register(Secret(value))
        return bytearray(value.encode())
    try:
        with open(source["file"], "rb", buffering=0) as f:  # noqa: PTH123
            # Read into a bytearray (never bytes) so that unlock can zero it.
            data = bytearray(os.fstat(f.fileno()).st_size)
            n = f.readinto(data) or 0
    except OSError as exc:
        raise ConfigError([("vault.password.file", f"cannot read it: {exc.strerror}")]) from None
    while n and data[n - 1] in b"\r\n":
        n -= 1
    password = data[:n]
    data[:] = bytes(len(data))
    return password


class Watcher:
    """Follows a PostgreSQL store's config in a thread: woken by NOTIFY, and polled as a backstop.

    The request path only reads :attr:`latest` (no round trip); the thread reads the
    revision after each notification or ``interval`` seconds, and the whole config
    when it moved. While the server is unreachable it retries with back-off, and the
    Hub keeps the last config it had.
    """

    def __init__(self, store: PostgresStore, control: ControlPlane, interval: float) -> None:
        self._store, self._control = store, control
        self._interval = max(interval, 0.05)
        self._stop = threading.Event()
        self.latest: tuple[int, dict[str, Any]] | None = None
        self._thread = threading.Thread(target=self._run, name="tokenhub-config", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        listener = None
        seen, pause = -1, 0.1
        while not self._stop.is_set():
            try:
                if listener is None:
                    listener = self._store.listen()  # before the read: no change slips between
                if self._control.revision() != seen:
                    self.latest = self._control.snapshot()
                    seen = self.latest[0]
                pause = 0.1
                listener.wait(self._interval)
            except StoreError as exc:
                if listener is not None:
                    listener.close()
                    listener = None
                if self._stop.is_set():
                    break
                log.debug("cannot follow the stored config (retrying): %s", exc)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)
        if listener is not None:
            listener.close()

    def close(self) -> None:
        """Stop following (the thread ends within one interval)."""
        self._stop.set()


@attrs.define
class Source:
    """Where a store-backed Hub's config comes from, and how to rebuild it after a change."""

    control: ControlPlane
    local: dict[str, Any]  # the store and vault sections: never shared
    literal_keys: dict[str, str]  # keys written literally in this process's config
    extra: dict[str, Provider]
    http: Callable[[HttpSettings], HttpClient] | None
    clock: Clock
    vault: Vault
    interval: float
    shared: dict[str, Any] = attrs.field(factory=dict)
    revision: int = 0
    synced: float = 0.0
    lock: anyio.Lock | None = None  # one admin change at a time
    watcher: Watcher | None = None  # PostgreSQL: a thread follows the revision

    def close(self) -> None:
        """Stop following the store."""
        if self.watcher is not None:
            self.watcher.close()

    def full(self, shared: Mapping[str, Any]) -> dict[str, Any]:
        """``shared`` plus the local sections and this process's literal keys."""
        out = {**shared, **self.local}
        entries = shared.get("providers")
        if isinstance(entries, Mapping):
            out["providers"] = {
                name: (
                    {**entry, "api_key": self.literal_keys[name]}
                    if name in self.literal_keys
                    and isinstance(entry, Mapping)
                    and "api_key" not in entry
                    else entry
                )
                for name, entry in entries.items()
            }
        return out

    def prepare(
        self,
        shared: Mapping[str, Any],
        current: tuple[HubConfig, Mapping[str, Provider]] | None = None,
    ) -> Built:
        """Validate ``shared`` exactly like ``from_config`` and build its providers."""
        full = self.full(shared)
        parsed = parse_config(
            full, known_kinds=kinds_for(full), extra_providers=frozenset(self.extra)
        )
        built = build_providers(
            parsed, http=self.http, clock=self.clock, vault=self.vault, reuse=current
        )
        return parsed, {**built, **self.extra}

    async def change(
        self,
        changes: Sequence[Change],
        action: str,
        current: tuple[HubConfig, Mapping[str, Provider]],
    ) -> Built:
        """Validate ``changes`` against the latest stored config, persist them; return the result.

        One change at a time per Hub; a write that finds the revision moved by
        another process re-reads and re-validates (optimistic concurrency).
        """
        if self.lock is None:
            self.lock = anyio.Lock()
        keys = dict(self.literal_keys)
        for section, name, value in changes:
            if section == "providers":
                key = value.get("api_key") if isinstance(value, Mapping) else None
                if isinstance(key, str):
                    keys[name] = key
                else:
                    keys.pop(name, None)
        async with self.lock:
            for _ in range(10):
                revision, stored = await anyio.to_thread.run_sync(self.control.snapshot)
                shared = apply(stored, changes)
                saved, self.literal_keys = self.literal_keys, keys
                try:
                    built = self.prepare(shared, current)
                except BaseException:
                    self.literal_keys = saved
                    raise
                try:
                    write = partial(self.control.write, changes, action, expect=revision)
                    new = await anyio.to_thread.run_sync(write)
                except Conflict:
                    self.literal_keys = saved
                    continue
                self.shared, self.revision = shared, new
                return built
        raise StoreError("the store's config kept changing under this change; try again")

    def poll(self, current: tuple[HubConfig, Mapping[str, Provider]]) -> Built | None:
        """The config other processes stored since the last look (at most every ``interval``).

        ``None`` when nothing changed, when it is too early to look, when the
        store is busy (a worker thread holds the connection: look again later),
        or when the stored revision does not validate (it is logged and skipped).
        """
        if self.watcher is not None:  # what the thread read: no round trip here
            latest = self.watcher.latest
            if latest is None or latest[0] <= self.revision:
                return None
            revision, shared = latest
        else:
            now = self.clock.monotonic()
            if now - self.synced < self.interval:
                return None
            self.synced = now
            try:
                if self.control.revision(wait=False) == self.revision:
                    return None
            except StoreBusyError:
                return None
            revision, shared = self.control.snapshot()
        self.revision = revision
        try:
            built = self.prepare(shared, current)
        except ConfigError as exc:
            log.warning("ignoring the store's config revision %d: %s", revision, exc)
            return None
        self.shared = shared
        return built


@attrs.frozen
class Assembly:
    """What :func:`assemble` built: the config, its providers, and the store's parts if any."""

    config: HubConfig
    providers: dict[str, Provider]
    store: StoreBackend | None = None
    vault: Vault | None = None
    source: Source | None = None

    def close(self) -> None:
        """Close the store (when the Hub could not be built around it)."""
        if self.source is not None:
            self.source.close()
        if self.store is not None:
            self.store.close()


def assemble(
    config: Mapping[str, Any],
    *,
    providers: Mapping[str, Provider],
    http: Callable[[HttpSettings], HttpClient] | None,
    clock: Clock,
) -> Assembly:
    """Validate ``config`` and build its parts; with a store, merge ``config`` into it first.

    The store is the source of truth: this config adds to it and updates it,
    after the merged result validated (nothing is written otherwise).
    """
    extra = dict(providers)
    store_cfg, vault_cfg = parse_local(config)
    if store_cfg is None:
        parsed = parse_config(
            config, known_kinds=kinds_for(config), extra_providers=frozenset(extra)
        )
        built = build_providers(parsed, http=http, clock=clock, vault=None)
        return Assembly(parsed, {**built, **extra})

    opened, vault = _open_store(store_cfg, vault_cfg, clock)
    try:
        source = Source(
            control=ControlPlane(opened),
            local={k: config[k] for k in ("store", "vault", "state") if k in config},
            literal_keys=_literal_keys(config),
            extra=extra,
            http=http,
            clock=clock,
            vault=vault,
            interval=store_cfg.interval,
        )
        mine = shareable(config)
        shared = apply(source.control.read(), _changes(mine))
        parsed, built = source.prepare(shared)  # validated before anything is written
        source.revision = source.control.import_config(mine)
        source.shared, source.synced = shared, clock.monotonic()
        if store_cfg.url is not None:
            from tokenhub._postgres import PostgresStore  # noqa: PLC0415

            assert isinstance(opened, PostgresStore)  # noqa: S101
            source.watcher = Watcher(opened, source.control, store_cfg.interval)
    except BaseException:
        opened.close()
        raise
    return Assembly(parsed, built, opened, vault, source)


_FLAGS = ("streaming", "tools", "vision", "json_schema", "prefill")


def capabilities_of(provider: Provider, upstream: str, m: ModelConfig) -> Capabilities:
    """What a model can do: its adapter's defaults, replaced by its configured list and window."""
    caps = provider.capabilities(upstream)
    named = m.capabilities
    if named is not None:
        caps = attrs.evolve(
            caps,
            tools="tools" in named,
            vision="vision" in named,
            json_schema="json_schema" in named,
            prefill="prefill" in named,
        )
    if m.context_window is not None:
        caps = attrs.evolve(caps, max_context=m.context_window)
    return caps


def routing_table(
    config: HubConfig, providers: Mapping[str, Provider]
) -> tuple[Mapping[str, Deployment], dict[str, ModelInfo]]:
    """The engine's read-only table of deployments and the router's view of every model."""
    table: dict[str, Deployment] = {}
    infos: dict[str, ModelInfo] = {}
    for index, (name, m) in enumerate(config.models.items()):
        provider, upstream = providers[m.provider], m.upstream or name
        caps = capabilities_of(provider, upstream, m)
        p = config.providers.get(m.provider)
        if p is None:  # a provider instance passed in: its name is all we know
            kind, base_url = m.provider, None
        else:
            default = getattr(provider, "default_base_url", None)
            kind, base_url = p.kind, (p.base_urls[0] if p.base_urls else default)
        # Only adapters on tokenhub's HTTP layer apply timeouts.read to each read.
        http = p is not None and isinstance(provider, HTTPProvider)
        table[name] = Deployment(
            name=name,
            upstream=upstream,
            provider_name=m.provider,
            provider=provider,
            kind=kind,
            base_url=base_url,
            context_window=m.context_window,
            prefill=caps.prefill,
            read_timeout=p.timeouts.read if p is not None and http else None,
            max_output_tokens=m.max_output_tokens,
            pricing=m.pricing,
            ttft_ms=m.ttft_ms,
            thinking=m.thinking,
        )
        infos[name] = ModelInfo(
            name=name,
            provider=m.provider,
            index=index,
            capabilities=frozenset(f for f in _FLAGS if getattr(caps, f)),
            context_window=m.context_window,
            max_output_tokens=m.max_output_tokens,
            input_price=m.pricing.input if m.pricing else None,
            output_price=m.pricing.output if m.pricing else None,
            quality=0.5 if m.quality is None else m.quality,
            tags=m.tags,
            enabled=m.enabled,
            weight=m.weight,
            latency_ms=m.latency_ms,
            output_tokens=m.output_tokens,
        )
    return MappingProxyType(table), infos
