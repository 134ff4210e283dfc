"""Parsing a config: each section structured from the user's dict, then checked, by path.

The schema lives in :mod:`tokenhub._schema` and the checks in
:mod:`tokenhub._checks` (policies and aliases: :mod:`tokenhub.routing._checks`);
the classes are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from tokenhub._checks import check_references, check_shape, check_values, check_vault
from tokenhub._redact import looks_like_key, printable, register, safe_name, scrub
from tokenhub._schema import (
    HubConfig,
    LogsConfig,
    ModelConfig,
    ProviderConfig,
    StateConfig,
    StoreConfig,
    VaultConfig,
)
from tokenhub._secret import Secret
from tokenhub._serde import converter, validation_errors
from tokenhub._settings import Budget, FailoverConfig
from tokenhub.errors import ConfigError
from tokenhub.routing._checks import check_aliases, check_policy
from tokenhub.routing._policy import CAPABILITIES, Alias, Policy

__all__ = [
    "CAPABILITIES",
    "HubConfig",
    "LogsConfig",
    "ModelConfig",
    "ProviderConfig",
    "StateConfig",
    "StoreConfig",
    "VaultConfig",
    "parse_config",
    "parse_local",
]

T = TypeVar("T")


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
    errors.extend(check_shape(config))
    errors.extend(check_references(config, known_kinds, extra_providers))
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
            store = StoreConfig("x")
    vault = _structure_one(config, "vault", VaultConfig, errors)
    state = _structure_one(config, "state", StateConfig, errors)
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
        state=state,
    )
    errors.extend(check_values(parsed))
    _register_header_secrets(parsed)
    section = config.get("models")
    model_names = set(section) if isinstance(section, Mapping) else set()
    provider_names = set(providers) | extra_providers
    errors.extend(check_policy(routing, "routing", model_names, provider_names))
    errors.extend(check_aliases(aliases, model_names))
    if errors:
        raise _error(errors)
    return parsed


def _error(errors: list[tuple[str, str]]) -> ConfigError:
    """One error for every problem; names from the config are shown printable and scrubbed."""
    clean = ((printable(scrub(path)), printable(scrub(why))) for path, why in errors)
    return ConfigError(sorted(dict.fromkeys(clean)))


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
        errors.extend(check_vault(store, vault))
    if errors:
        raise _error(errors)
    return store, vault


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
        return out  # reported by check_shape
    for name, entry in entries.items():
        try:
            out[name] = converter.structure(entry, cls)
        except Exception as exc:  # noqa: BLE001 - every structuring failure is reported by path
            errors.extend(validation_errors(exc, f"{section}.{safe_name(name)}"))
    return out
