"""Policies and aliases from dicts, and their checks by path.

Importing this module loads cattrs and registers the :class:`Alias` hook on the
one converter, so the router imports it on the first request that overrides
the policy, and the config parser when it parses a config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from tokenhub._redact import describe, quote, safe_name
from tokenhub._serde import MAX_INT, FieldError, converter, string_list, validation_errors
from tokenhub.errors import RequestError
from tokenhub.routing._policy import CAPABILITIES, MODES, Alias, Policy

__all__ = ["check_aliases", "check_policy", "policy_override"]


def _structure_alias(v: Any, _: type) -> Alias:
    if not isinstance(v, Mapping):
        raise FieldError(f"expected a mapping, got {describe(v)}")
    extra = sorted(map(safe_name, set(v) - {"models", "sticky", "fallbacks"}))
    if extra:
        raise FieldError(f"unknown key(s): {', '.join(extra)}")
    models = v.get("models")
    if isinstance(models, list | tuple) and all(isinstance(m, str) for m in models):
        variants = tuple((m, 1.0) for m in models)
    elif isinstance(models, Mapping) and all(
        isinstance(k, str)
        and isinstance(w, int | float)
        and not isinstance(w, bool)
        and 0 < w <= MAX_INT
        and math.isfinite(w)
        for k, w in models.items()
    ):
        variants = tuple((k, float(w)) for k, w in models.items())
    else:
        raise FieldError("models: expected a list of names or a mapping of names to weights > 0")
    if not variants:
        raise FieldError("models: at least one model is required")
    sticky = v.get("sticky", "request")
    if sticky not in ("request", "caller", "round_robin", "random"):
        raise FieldError("sticky: expected 'request', 'caller', 'round_robin' or 'random'")
    fallbacks = tuple(string_list(v.get("fallbacks", ()), "model names"))
    return Alias(models=variants, sticky=sticky, fallbacks=fallbacks)


converter.register_structure_hook(Alias, _structure_alias)

attrs.resolve_types(Policy)
_POLICY_TYPES: dict[str, Any] = {f.name: f.type for f in attrs.fields(Policy)}


def check_policy(
    p: Policy, where: str, models: set[str], providers: set[str]
) -> list[tuple[str, str]]:
    """Check a policy's values and the names it refers to."""
    errors: list[tuple[str, str]] = []
    if p.mode not in MODES:
        known = ", ".join(MODES)
        errors.append((f"{where}.mode", f"unknown mode {quote(p.mode)}; expected one of {known}"))
    if p.weights is not None:
        errors.extend(
            (f"{where}.weights.{f.name}", "must not be negative")
            for f in attrs.fields(type(p.weights))
            if getattr(p.weights, f.name) < 0
        )
    for key in ("max_cost_usd", "max_latency_ms", "exploration"):
        v = getattr(p, key)
        if v is not None and v < 0:
            errors.append((f"{where}.{key}", "must not be negative"))
    if not 0 <= p.headroom < 1:
        errors.append((f"{where}.headroom", "must be at least 0 and below 1"))
    unknown_caps = sorted(p.require - CAPABILITIES)
    if unknown_caps:
        errors.append(
            (f"{where}.require", f"unknown capabilities: {', '.join(map(safe_name, unknown_caps))}")
        )
    for key, names, what in (
        ("fallbacks", models, "model"),
        ("models", models, "model"),
        ("deny_models", models, "model"),
        ("providers", providers, "provider"),
        ("deny_providers", providers, "provider"),
    ):
        errors.extend(
            (f"{where}.{key}", f"unknown {what} {quote(n)}")
            for n in sorted(getattr(p, key) or ())
            if n not in names
        )
    return errors


def check_aliases(aliases: Mapping[str, Alias], models: set[str]) -> list[tuple[str, str]]:
    """Check that aliases do not shadow models and name only configured models."""
    errors: list[tuple[str, str]] = []
    for name, alias in aliases.items():
        where = f"aliases.{name}"
        if name in models:
            errors.append((where, "an alias must not have the name of a model"))
        named = [("models", m) for m, _ in alias.models] + [
            ("fallbacks", m) for m in alias.fallbacks
        ]
        errors.extend(
            (f"{where}.{key}", f"unknown model {quote(m)}") for key, m in named if m not in models
        )
    return errors


def policy_override(
    base: Policy, override: Mapping[str, Any], models: set[str], providers: set[str]
) -> Policy:
    """Apply a request's ``policy=`` keys over ``base``; raise :class:`RequestError` by path."""
    if not isinstance(override, Mapping):
        raise RequestError([("policy", f"expected a mapping, got {type(override).__name__}")])
    errors: list[tuple[str, str]] = []
    changes: dict[str, Any] = {}
    for key, value in override.items():
        kind = _POLICY_TYPES.get(key)
        if kind is None:
            errors.append((f"policy.{safe_name(key)}", "unknown key"))
            continue
        try:
            changes[key] = converter.structure(value, kind)
        except Exception as exc:  # noqa: BLE001 - reported by path
            errors.extend(validation_errors(exc, f"policy.{safe_name(key)}"))
    if "mode" in changes and "weights" not in changes:
        changes["weights"] = None  # a mode named in the request replaces configured weights
    policy = attrs.evolve(base, **changes)
    errors.extend(check_policy(policy, "policy", models, providers))
    if errors:
        raise RequestError(errors)
    return policy
