"""Plain settings: the frozen values that the layers below the config parser are built from.

Pricing, timeouts, breaker, failover and budget settings, and references to API keys.
The config parser (``_config``) structures them from the user's dict; nothing here
knows about parsing, and no value holds a live service.
"""

from __future__ import annotations

import os
from typing import Literal, Protocol

import attrs

from tokenhub._redact import register
from tokenhub._secret import Secret
from tokenhub.errors import CredentialError

__all__ = [
    "SAMPLES",
    "BreakerSettings",
    "Budget",
    "EnvKey",
    "FailoverConfig",
    "KeyRef",
    "KeySource",
    "LearnedTimeouts",
    "LiteralKey",
    "Pricing",
    "Timeouts",
    "VaultKey",
]


SAMPLES = 64
"""How many recent samples of each kind the runtime state keeps per model."""


class KeySource(Protocol):
    """Anything that yields a provider's API key when a request needs it."""

    def resolve(self, provider: str) -> Secret:
        """Return the key now (never cache it), or raise :class:`CredentialError`."""
        ...


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
        secret = Secret(value)
        register(secret)
        return secret


@attrs.frozen
class LiteralKey:
    """An API key written into the config (discouraged; never echoed)."""

    value: Secret

    def resolve(self, provider: str) -> Secret:  # noqa: ARG002 - same signature as EnvKey
        """Return the key."""
        return self.value


@attrs.frozen
class VaultKey:
    """An API key sealed in the vault under the entry ``vault``.

    A value names the entry only; the Hub binds its vault (see
    :class:`tokenhub._vault.VaultKeySource`), which decrypts it per request.
    """

    vault: str

    def resolve(self, provider: str) -> Secret:
        """Without a vault bound to it (the Hub binds one), there is nothing to decrypt."""
        raise CredentialError(f"provider {provider!r}: no vault is configured")


KeyRef = EnvKey | LiteralKey | VaultKey


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
class BreakerSettings:
    """When a breaker opens and for how long.

    It opens after ``failures`` consecutive counted failures, or when at least
    ``min_calls`` of the last ``window`` calls were seen and ``ratio`` of them
    failed. It stays open ``open_for`` seconds, doubling on each re-open up to
    ``max_open_for``; then one probe is let through (half-open). Meanwhile, every
    ``probe_interval`` seconds, a probe rides along a real request that another
    candidate serves (the first good answer wins).
    """

    failures: int = 5
    ratio: float = 0.5
    window: int = 20
    min_calls: int = 10
    open_for: float = 30.0
    max_open_for: float = 300.0
    probe_interval: float = 5.0


@attrs.frozen
class LearnedTimeouts:
    """Per-model first-token and stall limits learned from traffic (streams only).

    A limit is the ``quantile`` of a model's recent samples (times to first chunk;
    each stream's longest gap between chunks) times ``factor``, at least ``floor``
    (``stall_floor``) and at most ``ceiling`` seconds, trusted from ``min_samples``
    samples on; before that a model's ``ttft_ms`` prior stands in for the quantile.
    A model that thinks before answering (declared ``thinking``, or seen reporting
    reasoning) has its limits and floors scaled by ``thinking_scale``. A first-token
    limit grows by the prompt's estimated tokens over ``prompt_tokens_per_s``.
    """

    enabled: bool = True
    quantile: float = 0.95
    factor: float = 4.0
    floor: float = 1.0
    stall_floor: float = 5.0
    ceiling: float = 300.0
    thinking_scale: float = 10.0
    min_samples: int = 10
    prompt_tokens_per_s: float = 2000.0


@attrs.frozen
class FailoverConfig:
    """How the Hub retries, waits, fails over and gives up (seconds throughout).

    ``max_cooldown`` caps every wait a provider asks for (``Retry-After`` and the
    like) before it becomes a cooldown or a credential block. ``continue_streams``
    says how a stream that broke after delivering chunks is rescued: ``verified``
    (continue it by prefill, or splice a regenerated answer that begins with
    exactly what was delivered), ``instruct`` (also ask a model to continue,
    unverified, when nothing verified works) or ``off``. ``first_token_timeout`` and
    ``stall_timeout``, when set, override the limits ``learned_timeouts`` learns.
    """

    timeout: float = 600.0
    first_token_timeout: float | None = None
    stall_timeout: float | None = None
    max_retries: int = 2
    backoff_base: float = 0.25
    backoff_cap: float = 8.0
    retry_budget: float = 0.2
    retry_burst: float = 3.0
    max_server_wait: float = 60.0
    max_cooldown: float = 600.0
    content_policy_fallback: bool = False
    hedge_after: float | None = None
    hedge_p95: bool = False
    continue_streams: Literal["verified", "off", "instruct"] = "verified"
    breaker: BreakerSettings = attrs.field(factory=BreakerSettings)
    learned_timeouts: LearnedTimeouts = attrs.field(factory=LearnedTimeouts)


@attrs.frozen
class Budget:
    """A spend limit in USD over a UTC day or month.

    ``scope`` ``global`` covers every request; ``caller`` the requests with that
    ``caller=`` (``key``, or ``*`` for each caller separately); ``model`` one model
    (or ``*`` for each model).
    """

    scope: Literal["global", "caller", "model"]
    period: Literal["day", "month"]
    usd: float
    key: str = "*"
