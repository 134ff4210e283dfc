"""The configuration schema: the attrs classes a config dict is structured into, and their hooks.

Importing this module registers the hooks for API keys, base URLs and
capability names on the one converter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NewType

import attrs

from tokenhub._http import DEFAULT_MAX_RESPONSE_BYTES
from tokenhub._redact import looks_like_key, quote, register
from tokenhub._secret import Secret
from tokenhub._serde import FieldError, converter, string_list
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
from tokenhub.routing._policy import CAPABILITIES, Alias, Policy

__all__ = [
    "ENV_NAME",
    "CapabilityNames",
    "HubConfig",
    "LogsConfig",
    "ModelConfig",
    "ProviderConfig",
    "RedisURL",
    "RequestLimit",
    "StateConfig",
    "StoreConfig",
    "StoreURL",
    "VaultConfig",
    "hide_url_password",
    "redis_url_problem",
]

CapabilityNames = NewType("CapabilityNames", frozenset[str])
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
"""What an environment variable's name may look like."""


def _structure_key(v: Any, t: Any) -> KeyRef | None:
    if v is None and t != KeyRef:
        return None
    if isinstance(v, str):
        if not v:
            raise FieldError("an empty API key")
        if not (v.isascii() and v.isprintable()):
            # Not shown: it is a key. A header cannot carry it (a trailing newline, usually).
            raise FieldError("a key must be printable ASCII (a stray newline?)")
        secret = Secret(v)
        register(secret)
        return LiteralKey(secret)
    if isinstance(v, Mapping) and len(v) == 1:
        ((kind, name),) = v.items()
        if kind == "env" and isinstance(name, str):
            if not ENV_NAME.match(name) or looks_like_key(name):
                raise FieldError("'env' must name an environment variable (a key was pasted?)")
            return EnvKey(name)
        if kind == "vault" and isinstance(name, str) and name:
            return VaultKey(name)
    # Never echo the value: it may be a key pasted into the wrong shape.
    raise FieldError("expected {'env': NAME}, {'vault': NAME} or a literal key string")


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
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

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
    ttft_ms: float | None = None
    thinking: bool = False


@attrs.frozen
class LogsConfig:
    """Request logs in the store: off by default; prompts and completions only on request."""

    enabled: bool = False
    content: bool = False
    retention_days: float | None = 30.0
    buffer: int = 10_000


#: A ``store.url`` as given: the URL itself (masked in every repr), or the variable holding it.
StoreURL = Secret | EnvKey


def _structure_url(v: Any, _: type) -> StoreURL | None:
    if v is None:
        return None
    if isinstance(v, str):
        if not v.startswith(("postgresql://", "postgres://")):
            # Not shown: a URL holds its password.
            raise FieldError("expected a postgresql:// URL or {'env': NAME}")
        hide_url_password(v)
        return Secret(v)
    if isinstance(v, Mapping) and len(v) == 1 and isinstance(v.get("env"), str):
        if not ENV_NAME.match(v["env"]):
            raise FieldError("'env' must name an environment variable")
        return EnvKey(v["env"])
    raise FieldError("expected a postgresql:// URL or {'env': NAME}")


def hide_url_password(url: str) -> None:
    """Register a URL's passwords (if any) as secrets: scrubbed from every message and log."""
    import re  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    try:
        found = [urlsplit(url).password]
    except ValueError:
        found = []
    found += re.findall(r"[?&]password=([^&#]*)", url, flags=re.IGNORECASE)
    for password in filter(None, found):
        register(Secret(password))
    if any(found):
        register(Secret(url))


converter.register_structure_hook_func(lambda t: t == StoreURL | None, _structure_url)


@attrs.frozen
class StoreConfig:
    """Where the store lives (an SQLite ``path`` or a PostgreSQL ``url``), and what to log into it.

    ``sync_interval`` is ``None`` for the backend's default (2 s for SQLite, 1 s for
    PostgreSQL, which is also notified of changes).
    """

    path: str | None = None
    url: StoreURL | None = None
    busy_timeout: float = 5.0
    sync_interval: float | None = None
    pool_size: int = 10
    connect_timeout: float = 2.0
    logs: LogsConfig = LogsConfig()

    @property
    def interval(self) -> float:
        """How often, at most, to look for config changes other processes made (seconds)."""
        if self.sync_interval is not None:
            return self.sync_interval
        return 2.0 if self.url is None else 1.0


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is no Redis URL (never showing it: it may hold a password), or ``None``."""
    from urllib.parse import urlsplit  # noqa: PLC0415 - only with a shared state

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "expected a redis://, rediss:// or unix:// URL"
    if parts.scheme != "unix" and not parts.hostname:
        return "the URL names no host"
    return None


class RedisURL(Secret):
    """A ``state.redis`` URL: a Secret (it may hold a password), typed apart from ``store.url``."""

    __slots__ = ()


def _structure_redis(v: Any, _: type) -> RedisURL | EnvKey | None:
    if v is None:
        return None
    if isinstance(v, str):
        problem = redis_url_problem(v)
        if problem is not None:
            raise FieldError(problem)
        from urllib.parse import urlsplit  # noqa: PLC0415

        password = urlsplit(v).password
        if password:
            register(Secret(password))  # scrubbed from any message from now on
        return RedisURL(v)
    if isinstance(v, Mapping) and len(v) == 1:
        ((kind, name),) = v.items()
        if kind == "env" and isinstance(name, str) and ENV_NAME.match(name):
            return EnvKey(name)
    raise FieldError("expected a redis:// URL or {'env': NAME}")


converter.register_structure_hook_func(lambda t: t == RedisURL | EnvKey | None, _structure_redis)


@attrs.frozen
class RequestLimit:
    """A client-side request limit of one provider, kept fleet-wide in Redis leases."""

    rpm: int
    lease: int | None = None  # requests taken per Redis round trip; None: rpm / 20, at least 1


@attrs.frozen
class StateConfig:
    """Runtime state shared by replicas: the Redis it lives in (none: this process only).

    ``redis`` is a URL (kept as a :class:`~tokenhub._secret.Secret`) or
    ``{"env": NAME}``; ``prefix`` namespaces the keys so fleets can share a server.
    """

    redis: RedisURL | EnvKey | None = None
    prefix: str = "tokenhub:"
    timeout: float = 0.25
    flush_interval: float = 1.0
    snapshot_interval: float = 5.0
    queue: int = 10_000
    limits: Mapping[str, RequestLimit] = attrs.field(factory=dict)


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
    state: StateConfig = StateConfig()


def _structure_base_url(v: Any, _: type) -> str | tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, list | tuple) and v and all(isinstance(u, str) for u in v):
        return tuple(v)
    raise FieldError("expected a URL string or a non-empty list of URL strings")


converter.register_structure_hook_func(
    lambda t: t == str | tuple[str, ...] | None, _structure_base_url
)


def _structure_caps(v: Any, _: type) -> CapabilityNames | None:
    if v is None:
        return None
    unknown = sorted(set(string_list(v, "capability names")) - CAPABILITIES)
    if unknown:
        raise FieldError(
            f"unknown capabilit{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(quote, unknown))}; expected some of {', '.join(sorted(CAPABILITIES))}"
        )
    return CapabilityNames(frozenset(v))


converter.register_structure_hook_func(
    lambda t: t in (CapabilityNames, CapabilityNames | None), _structure_caps
)
