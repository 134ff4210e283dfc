"""The configuration schema and its from-dict structuring with path-precise errors."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs

from tokenhub._redact import looks_like_key
from tokenhub._secret import Secret
from tokenhub._serde import converter, validation_errors
from tokenhub.errors import ConfigError, CredentialError

__all__ = [
    "CAPABILITIES",
    "EnvKey",
    "HubConfig",
    "KeyRef",
    "LiteralKey",
    "ModelConfig",
    "Pricing",
    "ProviderConfig",
    "Timeouts",
    "VaultKey",
    "parse_config",
]

T = TypeVar("T")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

CAPABILITIES = frozenset({"tools", "vision", "json_schema", "prefill"})


@attrs.frozen
class EnvKey:
    """An API key read from an environment variable at request time."""

    env: str

    def resolve(self, provider: str) -> Secret:
        """Return the key, or raise :class:`CredentialError` naming the variable."""
        value = os.environ.get(self.env)
        if not value:
            raise CredentialError(
                f"environment variable {self.env} is not set (API key of provider {provider!r})"
            )
        return Secret(value)


@attrs.frozen
class LiteralKey:
    """An API key written into the config (discouraged; never echoed)."""

    value: Secret

    def resolve(self, provider: str) -> Secret:  # noqa: ARG002 - same signature as EnvKey
        """Return the key."""
        return self.value


@attrs.frozen
class VaultKey:
    """An API key sealed in the vault, decrypted per request."""

    vault: str

    def resolve(self, provider: str) -> Secret:
        """Vault-sealed keys need the vault, which is not part of this release."""
        raise CredentialError(f"provider {provider!r}: the vault is not available")


KeyRef = EnvKey | LiteralKey | VaultKey


def _structure_key(v: Any, t: Any) -> KeyRef | None:
    if v is None and t != KeyRef:
        return None
    if isinstance(v, str):
        if not v:
            raise TypeError("an empty API key")
        return LiteralKey(Secret(v))
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
class Pricing:
    """USD per one million tokens, by token kind.

    ``cached_input`` (cache reads) and ``cache_write`` default to the ``input`` price.
    """

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


@attrs.frozen
class Timeouts:
    """Per-attempt HTTP timeouts in seconds."""

    connect: float = 5.0
    read: float = 60.0
    write: float = 30.0
    pool: float = 10.0


@attrs.frozen
class ProviderConfig:
    """One provider: an adapter ``kind`` plus where and how to reach it."""

    kind: str
    base_url: str | tuple[str, ...] | None = None
    api_key: KeyRef | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    timeouts: Timeouts = Timeouts()
    max_connections: int = 100
    options: Mapping[str, Any] = attrs.field(factory=dict)

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
    capabilities: frozenset[str] | None = None


@attrs.frozen
class HubConfig:
    """The whole configuration, as structured from the user's dict."""

    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelConfig]


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


def _structure_caps(v: Any, _: type) -> frozenset[str] | None:
    if v is None:
        return None
    if not isinstance(v, list | tuple | set | frozenset) or not all(isinstance(c, str) for c in v):
        raise TypeError("expected a list of capability names")
    unknown = sorted(set(v) - CAPABILITIES)
    if unknown:
        raise ValueError(
            f"unknown capabilit{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}; expected some of {', '.join(sorted(CAPABILITIES))}"
        )
    return frozenset(v)


converter.register_structure_hook_func(lambda t: t == frozenset[str] | None, _structure_caps)


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
    parsed = HubConfig(providers=providers, models=models)
    errors.extend(_check_values(parsed))
    if errors:
        raise ConfigError(sorted(dict.fromkeys(errors)))
    return parsed


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


def _check_shape(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    errors = [(str(k), "unknown key") for k in config if k not in ("providers", "models")]
    for section in ("providers", "models"):
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
        if isinstance(p.api_key, VaultKey):
            errors.append(
                (f"providers.{name}.api_key", "vault references need the vault, not yet available")
            )
        errors.extend(
            (f"providers.{name}.timeouts.{field.name}", "must be positive")
            for field in attrs.fields(Timeouts)
            if getattr(p.timeouts, field.name) <= 0
        )
        if p.max_connections < 1:
            errors.append((f"providers.{name}.max_connections", "must be at least 1"))
    for name, m in cfg.models.items():
        for key in ("context_window", "max_output_tokens"):
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
