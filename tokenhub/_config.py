"""The configuration schema and its from-dict structuring with path-precise errors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NewType, TypeVar
from urllib.parse import urlsplit

import attrs

from tokenhub._redact import looks_like_key, register
from tokenhub._secret import Secret
from tokenhub._serde import converter, string_list, validation_errors
from tokenhub._settings import (
    Budget,
    EnvKey,
    FailoverConfig,
    KeyRef,
    LiteralKey,
    Pricing,
    Timeouts,
    VaultKey,
)
from tokenhub.errors import ConfigError
from tokenhub.routing._checks import check_aliases, check_policy
from tokenhub.routing._policy import CAPABILITIES, Alias, Policy

__all__ = [
    "CAPABILITIES",
    "HubConfig",
    "ModelConfig",
    "ProviderConfig",
    "StoreConfig",
    "VaultConfig",
    "parse_config",
    "parse_local",
]

T = TypeVar("T")
CapabilityNames = NewType("CapabilityNames", frozenset[str])
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _structure_key(v: Any, t: Any) -> KeyRef | None:
    if v is None and t != KeyRef:
        return None
    if isinstance(v, str):
        if not v:
            raise TypeError("an empty API key")
        secret = Secret(v)
        register(secret)
        return LiteralKey(secret)
    if isinstance(v, Mapping) and len(v) == 1:
        ((kind, name),) = v.items()
        if kind == "env" and isinstance(name, str):
            if not _ENV_NAME.match(name) or looks_like_key(name):
                raise TypeError("'env' must name an environment variable (a key was pasted?)")
            return EnvKey(name)
        if kind == "vault" and isinstance(name, str) and name:
            return VaultKey(name)
    # Never echo the value: it may be a key pasted into the wrong shape.
    raise TypeError("expected {'env': NAME}, {'vault': NAME} or a literal key string")


converter.register_structure_hook_func(lambda t: t in (KeyRef, KeyRef | None), _structure_key)


@attrs.frozen
class ProviderConfig:
    """One provider: an adapter ``kind`` plus where and how to reach it."""

    kind: str
    base_url: str | tuple[str, ...] | None = None
    api_key: KeyRef | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    max_connections: int = 100
    options: Mapping[str, Any] = attrs.field(factory=dict)
    http: str = "httpx"

    @property
    def base_urls(self) -> tuple[str, ...]:
        """The configured base URLs (empty: use the adapter's default)."""
        if self.base_url is None:
            return ()
        return (self.base_url,) if isinstance(self.base_url, str) else self.base_url


@attrs.frozen
class ModelConfig:
    """One model: the provider serving it and what it costs and can do."""

    provider: str
    upstream: str | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    pricing: Pricing | None = None
    capabilities: CapabilityNames | None = None
    quality: float | None = None
    tags: frozenset[str] = frozenset()
    enabled: bool = True
    weight: float = 1.0
    latency_ms: float | None = None
    output_tokens: int | None = None


@attrs.frozen
class LogsConfig:
    """Request logs in the store: off by default; prompts and completions only on request."""

    enabled: bool = False
    content: bool = False
    retention_days: float | None = 30.0
    buffer: int = 10_000


@attrs.frozen
class StoreConfig:
    """Where the SQLite store lives, how to share it, and what to log into it."""

    path: str
    busy_timeout: float = 5.0
    sync_interval: float = 2.0
    logs: LogsConfig = LogsConfig()


@attrs.frozen
class VaultConfig:
    """How the vault is unlocked and when it locks itself.

    ``password`` is ``{"env": NAME}`` or ``{"file": PATH}``: the vault is
    unlocked when the Hub is built. ``auto_lock`` locks after that many idle seconds.
    """

    password: Mapping[str, str] | None = None
    auto_lock: float | None = None


@attrs.frozen
class HubConfig:
    """The whole configuration, as structured from the user's dict."""

    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelConfig]
    routing: Policy = attrs.field(factory=Policy)
    aliases: Mapping[str, Alias] = attrs.field(factory=dict)
    tokenizer: str = "heuristic"
    failover: FailoverConfig = attrs.field(factory=FailoverConfig)
    store: StoreConfig | None = None
    vault: VaultConfig = VaultConfig()
    budgets: tuple[Budget, ...] = ()


def _structure_base_url(v: Any, _: type) -> str | tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, list | tuple) and v and all(isinstance(u, str) for u in v):
        return tuple(v)
    raise TypeError("expected a URL string or a non-empty list of URL strings")


converter.register_structure_hook_func(
    lambda t: t == str | tuple[str, ...] | None, _structure_base_url
)


def _structure_caps(v: Any, _: type) -> CapabilityNames | None:
    if v is None:
        return None
    unknown = sorted(set(string_list(v, "capability names")) - CAPABILITIES)
    if unknown:
        raise ValueError(
            f"unknown capabilit{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}; expected some of {', '.join(sorted(CAPABILITIES))}"
        )
    return CapabilityNames(frozenset(v))


converter.register_structure_hook_func(
    lambda t: t in (CapabilityNames, CapabilityNames | None), _structure_caps
)


def parse_config(
    config: Mapping[str, Any],
    *,
    known_kinds: frozenset[str] | None = None,
    extra_providers: frozenset[str] = frozenset(),
) -> HubConfig:
    """Structure and check ``config``; raise one :class:`ConfigError` listing every problem."""
    if not isinstance(config, Mapping):
        raise ConfigError([("", f"expected a mapping, got {type(config).__name__}")])
    errors: list[tuple[str, str]] = []
    errors.extend(_check_shape(config))
    errors.extend(_check_references(config, known_kinds, extra_providers))
    # Entries are structured one by one so that one bad entry does not hide the checks of others.
    providers = _structure_section(config, "providers", ProviderConfig, errors)
    models = _structure_section(config, "models", ModelConfig, errors)
    aliases = _structure_section(config, "aliases", Alias, errors)
    routing = _structure_one(config, "routing", Policy, errors)
    failover = _structure_one(config, "failover", FailoverConfig, errors)
    store = None
    if "store" in config:
        try:
            store = converter.structure(config["store"], StoreConfig)
        except Exception as exc:  # noqa: BLE001 - reported by path like every section
            errors.extend(validation_errors(exc, "store"))
            store = StoreConfig("")
    vault = _structure_one(config, "vault", VaultConfig, errors)
    budgets: tuple[Budget, ...] = ()
    if "budgets" in config:
        try:
            budgets = converter.structure(config["budgets"], tuple[Budget, ...])
        except Exception as exc:  # noqa: BLE001 - reported by path like every section
            errors.extend(validation_errors(exc, "budgets"))
    tokenizer = config.get("tokenizer", "heuristic")
    if not isinstance(tokenizer, str) or not (
        tokenizer == "heuristic" or tokenizer.partition(":")[0] == "tiktoken"
    ):
        errors.append(("tokenizer", "expected 'heuristic', 'tiktoken' or 'tiktoken:ENCODING'"))
        tokenizer = "heuristic"
    parsed = HubConfig(
        providers=providers,
        models=models,
        routing=routing,
        aliases=aliases,
        tokenizer=tokenizer,
        failover=failover,
        store=store,
        vault=vault,
        budgets=budgets,
    )
    errors.extend(_check_values(parsed))
    _register_header_secrets(parsed)
    section = config.get("models")
    model_names = set(section) if isinstance(section, Mapping) else set()
    provider_names = set(providers) | extra_providers
    errors.extend(check_policy(routing, "routing", model_names, provider_names))
    errors.extend(check_aliases(aliases, model_names))
    if errors:
        raise ConfigError(sorted(dict.fromkeys(errors)))
    return parsed


_SECRET_HEADER = re.compile(r"auth|key|token|secret|password|cookie|signature", re.IGNORECASE)


def _register_header_secrets(cfg: HubConfig) -> None:
    """Scrub credentials put in ``headers`` (a gateway token, a custom auth header) like keys."""
    for p in cfg.providers.values():
        for name, value in p.headers.items():
            if _SECRET_HEADER.search(name) or looks_like_key(value):
                register(Secret(value))


def parse_local(config: Mapping[str, Any]) -> tuple[StoreConfig | None, VaultConfig]:
    """Structure and check only the ``store`` and ``vault`` sections (needed to open the store)."""
    errors: list[tuple[str, str]] = []
    store = None
    if "store" in config:
        try:
            store = converter.structure(config["store"], StoreConfig)
        except Exception as exc:  # noqa: BLE001 - reported by path like every section
            errors.extend(validation_errors(exc, "store"))
    vault = _structure_one(config, "vault", VaultConfig, errors)
    if not errors:
        errors.extend(_check_vault(store, vault))
    if errors:
        raise ConfigError(sorted(dict.fromkeys(errors)))
    return store, vault


def _check_vault(store: StoreConfig | None, v: VaultConfig) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    if v.auto_lock is not None and v.auto_lock <= 0:
        errors.append(("vault.auto_lock", "must be positive (or null for never)"))
    if v.password is not None:
        if len(v.password) != 1 or next(iter(v.password)) not in ("env", "file"):
            errors.append(("vault.password", "expected {'env': NAME} or {'file': PATH}"))
        elif "env" in v.password and not _ENV_NAME.match(v.password["env"]):
            errors.append(("vault.password.env", "must name an environment variable"))
        if store is None:
            errors.append(("vault.password", "the vault lives in the store: set 'store.path'"))
    if store is not None:
        if store.logs.buffer < 1:
            errors.append(("store.logs.buffer", "must be at least 1"))
        if store.logs.retention_days is not None and store.logs.retention_days <= 0:
            errors.append(("store.logs.retention_days", "must be positive (or null to keep all)"))
        if store.busy_timeout < 0:
            errors.append(("store.busy_timeout", "must not be negative"))
        if store.sync_interval < 0:
            errors.append(("store.sync_interval", "must not be negative"))
    return errors


def _structure_one(
    config: Mapping[str, Any], section: str, cls: type[T], errors: list[tuple[str, str]]
) -> T:
    if section in config:
        try:
            return converter.structure(config[section], cls)
        except Exception as exc:  # noqa: BLE001 - every structuring failure is reported by path
            errors.extend(validation_errors(exc, section))
    return cls()


def _structure_section(
    config: Mapping[str, Any], section: str, cls: type[T], errors: list[tuple[str, str]]
) -> dict[str, T]:
    entries = config.get(section, {})
    out: dict[str, T] = {}
    if not isinstance(entries, Mapping):
        return out  # reported by _check_shape
    for name, entry in entries.items():
        try:
            out[name] = converter.structure(entry, cls)
        except Exception as exc:  # noqa: BLE001 - every structuring failure is reported by path
            errors.extend(validation_errors(exc, f"{section}.{name}"))
    return out


_SECTIONS = (
    "providers",
    "models",
    "routing",
    "aliases",
    "tokenizer",
    "failover",
    "store",
    "vault",
    "budgets",
)


def _check_shape(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    errors = [(str(k), "unknown key") for k in config if k not in _SECTIONS]
    for section in ("providers", "models", "aliases"):
        value = config.get(section, {})
        if not isinstance(value, Mapping):
            errors.append((section, f"expected a mapping of names, got {type(value).__name__}"))
            continue
        seen: dict[str, str] = {}
        for name in value:
            if not isinstance(name, str) or not name.strip():
                errors.append((f"{section}.{name!r}", "names must be non-empty strings"))
                continue
            folded = name.strip().casefold()
            if folded in seen:
                errors.append((f"{section}.{name}", f"duplicate name (same as {seen[folded]!r})"))
            seen[folded] = name
    if config.get("models", {}) == {}:
        errors.append(("models", "at least one model is required"))
    return errors


def _check_references(
    config: Mapping[str, Any], known_kinds: frozenset[str] | None, extra: frozenset[str]
) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    providers = config.get("providers", {})
    models = config.get("models", {})
    if not isinstance(providers, Mapping) or not isinstance(models, Mapping):
        return errors
    for name, m in models.items():
        ref = m.get("provider") if isinstance(m, Mapping) else None
        if isinstance(ref, str) and ref not in providers and ref not in extra:
            known = ", ".join(sorted({*map(str, providers), *extra})) or "none configured"
            errors.append((f"models.{name}.provider", f"unknown provider {ref!r}; known: {known}"))
    if known_kinds is not None:
        for name, p in providers.items():
            kind = p.get("kind") if isinstance(p, Mapping) else None
            if isinstance(kind, str) and kind not in known_kinds:
                known = ", ".join(sorted(known_kinds))
                errors.append((f"providers.{name}.kind", f"unknown kind {kind!r}; known: {known}"))
    return errors


def _check_values(cfg: HubConfig) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for name, p in cfg.providers.items():
        for i, url in enumerate(p.base_urls):
            where = f"providers.{name}.base_url" + (
                f"[{i}]" if not isinstance(p.base_url, str) else ""
            )
            errors.extend((where, reason) for reason in _url_problems(url))
        if isinstance(p.api_key, VaultKey) and cfg.store is None:
            errors.append((f"providers.{name}.api_key", "vault references need 'store.path'"))
        errors.extend(
            (f"providers.{name}.timeouts.{field.name}", "must be positive")
            for field in attrs.fields(Timeouts)
            if getattr(p.timeouts, field.name) <= 0
        )
        if p.max_connections < 1:
            errors.append((f"providers.{name}.max_connections", "must be at least 1"))
        if p.http not in ("httpx", "aiohttp"):
            errors.append((f"providers.{name}.http", "expected 'httpx' or 'aiohttp'"))
    errors.extend(_check_vault(cfg.store, cfg.vault))
    for i, budget in enumerate(cfg.budgets):
        if budget.usd <= 0:
            errors.append((f"budgets[{i}].usd", "must be positive"))
        if budget.scope == "global" and budget.key != "*":
            errors.append((f"budgets[{i}].key", "a global budget has no key"))
    if cfg.budgets and cfg.store is None:
        errors.append(("budgets", "budgets are kept in the store: set 'store.path'"))
    f = cfg.failover
    errors.extend(
        (f"failover.{key}", "must be positive")
        for key in (
            "timeout",
            "first_token_timeout",
            "stall_timeout",
            "backoff_cap",
            "max_server_wait",
            "hedge_after",
        )
        if getattr(f, key) is not None and getattr(f, key) <= 0
    )
    errors.extend(
        (f"failover.{key}", "must not be negative")
        for key in ("max_retries", "backoff_base", "retry_budget", "retry_burst")
        if getattr(f, key) < 0
    )
    b = f.breaker
    errors.extend(
        (f"failover.breaker.{key}", "must be positive")
        for key in ("failures", "window", "min_calls", "open_for", "max_open_for")
        if getattr(b, key) <= 0
    )
    if not 0 < b.ratio <= 1:
        errors.append(("failover.breaker.ratio", "must be above 0 and at most 1"))
    if b.max_open_for < b.open_for:
        errors.append(("failover.breaker.max_open_for", "must not be below open_for"))
    for name, m in cfg.models.items():
        if m.quality is not None and not 0 <= m.quality <= 1:
            errors.append((f"models.{name}.quality", "must be between 0 and 1"))
        for key in ("weight", "latency_ms"):
            v = getattr(m, key)
            if v is not None and v < 0:
                errors.append((f"models.{name}.{key}", "must not be negative"))
        for key in ("context_window", "max_output_tokens", "output_tokens"):
            v = getattr(m, key)
            if v is not None and v < 1:
                errors.append((f"models.{name}.{key}", "must be a positive integer"))
        if m.pricing is not None:
            for field in attrs.fields(Pricing):
                v = getattr(m.pricing, field.name)
                if v is not None and v < 0:
                    errors.append((f"models.{name}.pricing.{field.name}", "must not be negative"))
        if (
            m.context_window is not None
            and m.max_output_tokens is not None
            and m.max_output_tokens > m.context_window
        ):
            errors.append((f"models.{name}.max_output_tokens", "exceeds context_window"))
    return errors


def _url_problems(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return ["not a valid URL"]
    problems = []
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append("expected an http:// or https:// URL")
    if parts.username or parts.password:
        problems.append("credentials must not be put in URLs; use api_key")
    if parts.query or parts.fragment:
        problems.append("must not have a query string or fragment")
    return problems
