"""The checks of a config: its shape and references before structuring, its values after.

Each check returns ``(dotted.path, reason)`` pairs; the parser collects them
into one :class:`~tokenhub.errors.ConfigError`. Policies and aliases are
checked beside them, in :mod:`tokenhub.routing._checks`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from tokenhub._redact import quote, safe_name
from tokenhub._request import MAX_SECONDS
from tokenhub._schema import ENV_NAME
from tokenhub._settings import SAMPLES, Pricing, Timeouts, VaultKey

if TYPE_CHECKING:
    from tokenhub._schema import HubConfig, ProviderConfig, StoreConfig, VaultConfig
    from tokenhub._settings import FailoverConfig

__all__ = ["check_references", "check_shape", "check_values", "check_vault"]

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
    "state",
)


def check_shape(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Unknown top-level keys, sections not mappings of names, duplicate names, no models."""
    errors = [(safe_name(k), "unknown key") for k in config if k not in _SECTIONS]
    for section in ("providers", "models", "aliases"):
        value = config.get(section, {})
        if not isinstance(value, Mapping):
            errors.append((section, f"expected a mapping of names, got {type(value).__name__}"))
            continue
        seen: dict[str, str] = {}
        for name in value:
            if not isinstance(name, str) or not name.strip():
                errors.append((f"{section}.{safe_name(name)}", "names must be non-empty strings"))
                continue
            folded = name.strip().casefold()
            if folded in seen:
                errors.append(
                    (
                        f"{section}.{safe_name(name)}",
                        f"duplicate name (same as {quote(seen[folded])})",
                    )
                )
            seen[folded] = name
    if config.get("models", {}) == {}:
        errors.append(("models", "at least one model is required"))
    return errors


def check_references(
    config: Mapping[str, Any], known_kinds: frozenset[str] | None, extra: frozenset[str]
) -> list[tuple[str, str]]:
    """Models naming unknown providers, providers naming unknown adapter kinds."""
    errors: list[tuple[str, str]] = []
    providers = config.get("providers", {})
    models = config.get("models", {})
    if not isinstance(providers, Mapping) or not isinstance(models, Mapping):
        return errors
    for name, m in models.items():
        ref = m.get("provider") if isinstance(m, Mapping) else None
        if isinstance(ref, str) and ref not in providers and ref not in extra:
            known = ", ".join(sorted({*map(safe_name, providers), *extra})) or "none configured"
            errors.append(
                (
                    f"models.{safe_name(name)}.provider",
                    f"unknown provider {quote(ref)}; known: {known}",
                )
            )
    if known_kinds is not None:
        for name, p in providers.items():
            kind = p.get("kind") if isinstance(p, Mapping) else None
            if isinstance(kind, str) and kind not in known_kinds:
                known = ", ".join(sorted(known_kinds))
                errors.append(
                    (
                        f"providers.{safe_name(name)}.kind",
                        f"unknown kind {quote(kind)}; known: {known}",
                    )
                )
    return errors


def check_values(cfg: HubConfig) -> list[tuple[str, str]]:
    """Numbers in range, base URLs, the HTTP implementation, and what needs a store."""
    errors: list[tuple[str, str]] = []
    for name, p in cfg.providers.items():
        errors.extend(_header_and_option_problems(f"providers.{name}", p))
        for i, url in enumerate(p.base_urls):
            where = f"providers.{name}.base_url" + (
                f"[{i}]" if not isinstance(p.base_url, str) else ""
            )
            errors.extend((where, reason) for reason in _url_problems(url))
        if isinstance(p.api_key, VaultKey) and cfg.store is None:
            errors.append((f"providers.{name}.api_key", "vault references need 'store.path'"))
        errors.extend(
            (f"providers.{name}.timeouts.{field.name}", reason)
            for field in attrs.fields(Timeouts)
            if (reason := _seconds_problem(getattr(p.timeouts, field.name)))
        )
        if p.max_connections < 1:
            errors.append((f"providers.{name}.max_connections", "must be at least 1"))
        if p.max_response_bytes < 1:
            errors.append((f"providers.{name}.max_response_bytes", "must be at least 1"))
        if p.http not in ("httpx", "aiohttp"):
            errors.append((f"providers.{name}.http", "expected 'httpx' or 'aiohttp'"))
    errors.extend(check_vault(cfg.store, cfg.vault))
    errors.extend(_state_problems(cfg))
    for i, budget in enumerate(cfg.budgets):
        if budget.usd <= 0:
            errors.append((f"budgets[{i}].usd", "must be positive"))
        if budget.scope == "global" and budget.key != "*":
            errors.append((f"budgets[{i}].key", "a global budget has no key"))
    if cfg.budgets and cfg.store is None:
        errors.append(("budgets", "budgets are kept in the store: set 'store.path'"))
    f = cfg.failover
    errors.extend(
        (f"failover.{key}", reason)
        for key in (
            "timeout",
            "first_token_timeout",
            "stall_timeout",
            "backoff_cap",
            "max_server_wait",
            "max_cooldown",
            "hedge_after",
        )
        if getattr(f, key) is not None and (reason := _seconds_problem(getattr(f, key)))
    )
    if f.backoff_base > MAX_SECONDS:
        errors.append(("failover.backoff_base", f"must be at most {MAX_SECONDS:,} seconds"))
    errors.extend(
        (f"failover.{key}", "must not be negative")
        for key in ("max_retries", "backoff_base", "retry_budget", "retry_burst")
        if getattr(f, key) < 0
    )
    b = f.breaker
    errors.extend(
        (f"failover.breaker.{key}", "must be positive")
        for key in ("failures", "window", "min_calls")
        if getattr(b, key) <= 0
    )
    errors.extend(
        (f"failover.breaker.{key}", reason)
        for key in ("open_for", "max_open_for", "probe_interval")
        if (reason := _seconds_problem(getattr(b, key)))
    )
    if not 0 < b.ratio <= 1:
        errors.append(("failover.breaker.ratio", "must be above 0 and at most 1"))
    if b.max_open_for < b.open_for:
        errors.append(("failover.breaker.max_open_for", "must not be below open_for"))
    errors.extend(_learned_problems(f))
    for name, m in cfg.models.items():
        if m.ttft_ms is not None and m.ttft_ms <= 0:
            errors.append((f"models.{name}.ttft_ms", "must be positive"))
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


def _learned_problems(f: FailoverConfig) -> list[tuple[str, str]]:
    t, where = f.learned_timeouts, "failover.learned_timeouts"
    errors = [
        (f"{where}.{key}", reason)
        for key in ("floor", "stall_floor", "ceiling")
        if (reason := _seconds_problem(getattr(t, key)))
    ]
    if not 0 < t.quantile <= 1:
        errors.append((f"{where}.quantile", "must be above 0 and at most 1"))
    errors.extend(
        (f"{where}.{key}", "must be at least 1 (a limit below what is normal cuts it)")
        for key in ("factor", "thinking_scale")
        if getattr(t, key) < 1
    )
    if t.ceiling < max(t.floor, t.stall_floor):
        errors.append((f"{where}.ceiling", "must not be below floor or stall_floor"))
    if not 1 <= t.min_samples <= SAMPLES:
        errors.append(
            (f"{where}.min_samples", f"must be between 1 and {SAMPLES} (the samples kept)")
        )
    if not t.prompt_tokens_per_s > 0:
        errors.append((f"{where}.prompt_tokens_per_s", "must be positive"))
    return errors


def check_vault(store: StoreConfig | None, v: VaultConfig) -> list[tuple[str, str]]:
    """The ``vault`` and ``store`` sections: how to unlock, and sizes and intervals."""
    errors: list[tuple[str, str]] = []
    if v.auto_lock is not None and (reason := _seconds_problem(v.auto_lock)):
        errors.append(("vault.auto_lock", f"{reason} (or null for never)"))
    if v.password is not None:
        if len(v.password) != 1 or next(iter(v.password)) not in ("env", "file"):
            errors.append(("vault.password", "expected {'env': NAME} or {'file': PATH}"))
        elif "env" in v.password and not ENV_NAME.match(v.password["env"]):
            errors.append(("vault.password.env", "must name an environment variable"))
        if store is None:
            errors.append(("vault.password", "the vault lives in the store: set 'store.path'"))
    if store is not None:
        if store.path is not None and store.url is not None:
            errors.append(
                ("store.url", "set one of 'store.path' (SQLite) or 'store.url', not both")
            )
        elif store.path is None and store.url is None:
            errors.append(("store.path", "set 'store.path' (SQLite) or 'store.url' (PostgreSQL)"))
        if store.pool_size < 1:
            errors.append(("store.pool_size", "must be at least 1"))
        if reason := _seconds_problem(store.connect_timeout):
            errors.append(("store.connect_timeout", reason))
        if store.logs.buffer < 1:
            errors.append(("store.logs.buffer", "must be at least 1"))
        if store.logs.retention_days is not None and store.logs.retention_days <= 0:
            errors.append(("store.logs.retention_days", "must be positive (or null to keep all)"))
        errors.extend(
            (f"store.{key}", reason)
            for key in ("busy_timeout", "sync_interval")
            if getattr(store, key) is not None
            and (reason := _seconds_problem(getattr(store, key), zero=True))
        )
    return errors


_PREFIX = re.compile(r"[!-~]{1,64}")


def _state_problems(cfg: HubConfig) -> list[tuple[str, str]]:
    """The ``state`` section: a key prefix Redis can carry, intervals, the queue's size."""
    s = cfg.state
    errors = [
        (f"state.{key}", reason)
        for key in ("timeout", "flush_interval", "snapshot_interval")
        if (reason := _seconds_problem(getattr(s, key)))
    ]
    if not _PREFIX.fullmatch(s.prefix):
        errors.append(("state.prefix", "1 to 64 printable ASCII characters, no spaces"))
    if s.queue < 1:
        errors.append(("state.queue", "must be at least 1"))
    if s.limits and s.redis is None:
        errors.append(("state.limits", "client-side limits are kept in Redis: set 'state.redis'"))
    for name, limit in s.limits.items():
        where = f"state.limits.{safe_name(name)}"
        if name not in cfg.providers:
            errors.append((where, "not a provider of 'providers'"))
        if limit.rpm < 1:
            errors.append((f"{where}.rpm", "must be at least 1"))
        if limit.lease is not None and limit.lease < 1:
            errors.append((f"{where}.lease", "must be at least 1"))
    return errors


def _seconds_problem(v: float, *, zero: bool = False) -> str | None:
    """Why ``v`` is no duration in seconds (floats are finite already), or ``None``."""
    if v < 0 or (v == 0 and not zero):
        return "must not be negative" if zero else "must be positive"
    if v > MAX_SECONDS:
        return f"must be at most {MAX_SECONDS:,} seconds"
    return None


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _header_and_option_problems(where: str, p: ProviderConfig) -> list[tuple[str, str]]:
    """Headers that HTTP can carry (no CR/LF: no header injection), options named plainly."""
    errors: list[tuple[str, str]] = []
    if not all(map(_HEADER_NAME.fullmatch, p.headers)):
        errors.append((f"{where}.headers", "header names are HTTP tokens (letters, digits, -)"))
    if not all(v.isascii() and v.isprintable() for v in p.headers.values()):
        # Values are not shown: a header may hold a gateway token.
        errors.append((f"{where}.headers", "header values must be printable ASCII, one line"))
    if not all(map(_OPTION_NAME.fullmatch, p.options)):
        errors.append((f"{where}.options", "option names are identifiers (letters, digits, _)"))
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
