"""The in-memory state backend: health, latency, cooldowns and credentials, per deployment.

Ephemeral and rebuilt from traffic. The scorer reads averages from it; the
router skips what it says is blocked; the failover engine feeds it. It
implements :class:`tokenhub._runtime.StateBackend`, and a shared backend can use
it as its local view.
"""

from __future__ import annotations

import collections
import math
import time
from typing import TYPE_CHECKING, Any

from tokenhub._redact import get_logger
from tokenhub._runtime import Block
from tokenhub._settings import SAMPLES, BreakerSettings, LearnedTimeouts
from tokenhub.routing._health import Breaker

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["RuntimeState"]

_log = get_logger("tokenhub.failover")
#: A cached quantile is recomputed after this many new samples, or at once when a
#: sample above it arrives: the limit rises with the first slow sample and falls
#: a few samples late, and a request sorts nothing most of the time.
_STALE_AFTER = 8

_REMAINING = {
    "requests": ("x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"),
    "tokens": ("x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-remaining"),
}


class _Samples:
    """A model's recent samples of one kind (ms), their quantile and limit computed lazily."""

    __slots__ = ("fresh", "limit", "quantile", "values")

    def __init__(self) -> None:
        self.values: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self.quantile: float | None = None  # None: stale, recomputed when next read
        self.limit: float | None = None  # the limit (s) built on it; None: stale
        self.fresh = 0

    def add(self, ms: float) -> None:
        self.values.append(ms)
        self.fresh += 1
        q = self.quantile
        if q is not None and (ms > q or self.fresh >= _STALE_AFTER):
            self.quantile = self.limit = None

    def stale(self) -> None:
        self.quantile = self.limit = None

    def at(self, quantile: float) -> float:
        q = self.quantile
        if q is None:
            ordered = sorted(self.values)
            q = self.quantile = ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]
            self.fresh = 0
        return q


class _Stats:
    __slots__ = (
        "breaker",
        "failure",
        "gaps",
        "latencies",
        "latency_ms",
        "not_before",
        "thinking",
        "ttft",
        "ttfts",
    )

    def __init__(self, settings: BreakerSettings) -> None:
        self.latency_ms: float | None = None
        self.failure: float | None = None
        self.latencies: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self.ttft = _Samples()
        self.ttfts = self.ttft.values
        self.gaps = _Samples()
        self.thinking = False  # seen reporting reasoning
        self.not_before = 0.0
        self.breaker = Breaker(settings)


def _ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else old + alpha * (sample - old)


def _left(until: float, now: float) -> float | None:
    return None if until == math.inf else until - now


_UNDECLARED: tuple[float | None, bool] = (None, False)


def _limit(base_ms: float, floor: float, t: LearnedTimeouts, *, thinking: bool) -> float:
    """``base_ms`` (a quantile or the prior) times the factor, clamped, scaled when thinking."""
    scale = t.thinking_scale if thinking else 1.0
    return min(t.ceiling, max(floor * scale, base_ms / 1000 * t.factor * scale))


def _p95(samples: collections.deque[float]) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


class RuntimeState:
    """Per-deployment averages, breakers and cooldowns, and per-provider credential blocks.

    The in-memory :class:`~tokenhub._runtime.StateBackend`, for one process.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.2,
        breaker: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._alpha = alpha
        self.breaker_settings = breaker or BreakerSettings()
        self.clock = clock
        self._stats: dict[str, _Stats] = {}
        self._credentials: dict[str, tuple[float, str]] = {}
        #: Blocks of one model's use of its provider's key: (provider, model) -> (until, reason).
        self._model_credentials: dict[tuple[str, str], tuple[float, str]] = {}
        self._output_tokens: float | None = None
        self._remaining: dict[tuple[str, str], int] = {}
        self._learned = LearnedTimeouts()
        #: Per model: its ``ttft_ms`` prior and whether it is declared to think.
        self._declared: Mapping[str, tuple[float | None, bool]] = {}

    def _get(self, model: str) -> _Stats:
        s = self._stats.get(model)
        if s is None:
            s = self._stats[model] = _Stats(self.breaker_settings)
        return s

    def acquire(self, model: str) -> bool:
        """Take the right to send one request to ``model`` now (one probe when half-open)."""
        return self._get(model).breaker.acquire(self.clock())

    def probe_due(self, model: str) -> bool:
        """Take a ride-along probe of ``model`` if its circuit is open and one is due."""
        s = self._stats.get(model)
        return s is not None and s.breaker.probe_due(self.clock())

    def probe_done(self, model: str, *, ok: bool) -> None:
        """Record a ride-along probe's outcome: a success closes the circuit."""
        breaker = self._get(model).breaker
        before = breaker.state
        breaker.probe_done(ok, self.clock())
        if before != breaker.state:
            _log.info("circuit of %s closed", model, extra={"model": model, "circuit": "closed"})

    def force_probe(self, model: str) -> None:
        """Send a probe to ``model`` although its circuit is open (every candidate was blocked)."""
        self._get(model).breaker.force_probe()

    # --- feeding ------------------------------------------------------------------------------

    def record_success(
        self,
        model: str,
        *,
        latency_ms: float,
        output_tokens: int | None,
        ttft_ms: float | None = None,
        gap_ms: float | None = None,
        thinking: bool = False,
    ) -> None:
        """Feed a successful attempt."""
        s = self._get(model)
        s.latency_ms = _ewma(s.latency_ms, latency_ms, self._alpha)
        s.latencies.append(latency_ms)
        if ttft_ms is not None:
            s.ttft.add(ttft_ms)
        if gap_ms is not None:
            s.gaps.add(gap_ms)
        if thinking and not s.thinking:
            s.thinking = True
            s.ttft.limit = s.gaps.limit = None
        s.failure = _ewma(s.failure, 0.0, self._alpha)
        if output_tokens is not None:
            self._output_tokens = _ewma(self._output_tokens, float(output_tokens), self._alpha)
        self._record(model, s.breaker, ok=True)

    def record_failure(self, model: str) -> None:
        """Feed a failure that says something about the provider (not about the request)."""
        s = self._get(model)
        s.failure = _ewma(s.failure, 1.0, self._alpha)
        self._record(model, s.breaker, ok=False)

    def _record(self, model: str, breaker: Breaker, *, ok: bool) -> None:
        before = breaker.state
        breaker.record(ok, self.clock())
        if breaker.state == before:
            return
        if breaker.state == "open":
            _log.warning(
                "circuit of %s opened for %.1f s",
                model,
                breaker.until - self.clock(),
                extra={
                    "model": model,
                    "circuit": "open",
                    "open_for_s": breaker.until - self.clock(),
                },
            )
        elif breaker.state == "closed":
            _log.info("circuit of %s closed", model, extra={"model": model, "circuit": "closed"})

    def declare_timeouts(
        self, settings: LearnedTimeouts, models: Mapping[str, tuple[float | None, bool]]
    ) -> None:
        """Learn limits as ``settings`` say; ``models``: name -> (``ttft_ms`` prior, thinking)."""
        for s in self._stats.values():
            s.ttft.stale()
            s.gaps.stale()
        self._learned, self._declared = settings, models

    def release(self, model: str) -> None:
        """Give back a half-open probe whose outcome says nothing about health."""
        self._get(model).breaker.probing = False

    def observe_limits(self, model: str, headers: Mapping[str, str]) -> None:
        """Remember the provider's remaining request and token allowances for ``model``."""
        for kind, names in _REMAINING.items():
            for name in names:
                value = headers.get(name)
                if value is not None and value.isdigit():
                    self._remaining[model, kind] = int(value)
                    break

    def remaining(self) -> dict[tuple[str, str], int]:
        """The last remaining allowance seen per (model, ``requests``/``tokens``)."""
        return dict(self._remaining)

    def cool_down(self, model: str, seconds: float) -> None:
        """Send nothing to ``model`` for ``seconds`` (a rate limit's wait hint)."""
        s = self._get(model)
        s.not_before = max(s.not_before, self.clock() + seconds)

    def disable_credential(
        self, provider: str, reason: str, seconds: float | None = None, *, model: str | None = None
    ) -> None:
        """Take ``provider``'s key out of rotation, for ``seconds`` or until re-enabled.

        With ``model``, the failure was seen on that model only (a gateway may
        relay one deployment's 401): the key is taken out for that model, and for
        the whole provider once a second model of it is blocked so too.
        """
        now = self.clock()
        until = math.inf if seconds is None else now + seconds
        if model is not None:
            blocked = self._model_credentials
            others = [
                m
                for (p, m), (end, _) in blocked.items()
                if p == provider and m != model and end > now
            ]
            if not others:
                blocked[provider, model] = (until, reason)
                _log.warning(
                    "credential of %s taken out of rotation for %s (%s)",
                    provider,
                    model,
                    reason,
                    extra={"provider": provider, "model": model, "error_class": reason},
                )
                return
            self._forget_models(provider)
        self._credentials[provider] = (until, reason)
        _log.warning(
            "credential of %s taken out of rotation (%s)",
            provider,
            reason,
            extra={"provider": provider, "error_class": reason},
        )

    def enable_credential(self, provider: str) -> None:
        """Put ``provider``'s key back into rotation (operator action), for all its models."""
        self._credentials.pop(provider, None)
        self._forget_models(provider)

    def _forget_models(self, provider: str) -> None:
        for k in [k for k in self._model_credentials if k[0] == provider]:
            del self._model_credentials[k]

    # --- reading ------------------------------------------------------------------------------

    def blocked(self, model: str, provider: str) -> Block | None:
        """Why ``model`` (served by ``provider``) must not be tried now, if so."""
        now = self.clock()
        cred = self._credentials.get(provider)
        if cred is not None:
            until, reason = cred
            if now < until:
                return Block("credential", until, f"credential of {provider!r} disabled ({reason})")
            del self._credentials[provider]
        if self._model_credentials:  # empty until an auth failure: no lookup per candidate
            cred = self._model_credentials.get((provider, model))
            if cred is not None:
                until, reason = cred
                if now < until:
                    return Block(
                        "credential",
                        until,
                        f"credential of {provider!r} disabled for {model!r} ({reason})",
                    )
                del self._model_credentials[provider, model]
        s = self._stats.get(model)
        if s is None:
            return None
        if now < s.not_before:
            wait = s.not_before - now
            return Block("rate_limited", s.not_before, f"rate-limited for another {wait:.1f} s")
        if s.breaker.blocked(now):
            left = s.breaker.until - now
            why = (
                f"circuit open for another {left:.1f} s"
                if left > 0
                else "circuit half-open, probe in flight"
            )
            return Block("circuit_open", s.breaker.until, why)
        return None

    def not_before(self, model: str) -> float:
        """The monotonic time before which ``model`` must not be sent anything."""
        s = self._stats.get(model)
        return 0.0 if s is None else s.not_before

    def latency_ms(self, model: str) -> float | None:
        """The observed latency average, if any."""
        s = self._stats.get(model)
        return None if s is None else s.latency_ms

    def ttft_p95_ms(self, model: str) -> float | None:
        """The 95th percentile of observed times to first chunk, if any."""
        s = self._stats.get(model)
        return None if s is None else _p95(s.ttfts)

    def first_token_limit(self, model: str) -> float | None:
        """The learned limit (s) on ``model``'s first chunk: from its samples, else its prior."""
        s = self._stats.get(model)
        if s is not None and s.ttft.limit is not None:  # the usual case: cached
            return s.ttft.limit
        t = self._learned
        if not t.enabled:
            return None
        prior, declared = self._declared.get(model, _UNDECLARED)
        if s is not None and len(s.ttft.values) >= t.min_samples:
            thinking = declared or s.thinking
            limit = s.ttft.limit = _limit(s.ttft.at(t.quantile), t.floor, t, thinking=thinking)
            return limit
        if prior is None:
            return None
        return _limit(prior, t.floor, t, thinking=declared or (s is not None and s.thinking))

    def stall_limit(self, model: str) -> float | None:
        """The learned limit (s) on a silence between ``model``'s chunks, once it has samples."""
        s = self._stats.get(model)
        if s is None:
            return None
        if s.gaps.limit is not None:
            return s.gaps.limit
        t = self._learned
        if not t.enabled or len(s.gaps.values) < t.min_samples:
            return None
        thinking = self._declared.get(model, _UNDECLARED)[1] or s.thinking
        limit = s.gaps.limit = _limit(s.gaps.at(t.quantile), t.stall_floor, t, thinking=thinking)
        return limit

    def failure_rate(self, model: str) -> float | None:
        """The decayed failure rate in [0, 1], if any attempts were seen."""
        s = self._stats.get(model)
        return None if s is None else s.failure

    def output_tokens(self) -> float | None:
        """The average output length of successful answers across models, if any.

        One average for every model, so that cost estimates compare like with like.
        """
        return self._output_tokens

    def snapshot(self) -> dict[str, Any]:
        """Health per model and blocked credentials, as plain data."""
        now = self.clock()
        models = {
            name: {
                "circuit": s.breaker.state
                if not (s.breaker.state == "open" and now >= s.breaker.until)
                else "half_open",
                "open_for_s": max(0.0, s.breaker.until - now) if s.breaker.state == "open" else 0.0,
                "rate_limited_for_s": max(0.0, s.not_before - now),
                "latency_ms": s.latency_ms,
                "latency_p95_ms": _p95(s.latencies),
                "ttft_p95_ms": _p95(s.ttfts),
                "failure_rate": s.failure,
                "first_token_timeout_s": self.first_token_limit(name),
                "stall_timeout_s": self.stall_limit(name),
                "ttft_samples": len(s.ttft.values),
                "gap_samples": len(s.gaps.values),
                "thinking": s.thinking or self._declared.get(name, _UNDECLARED)[1],
            }
            for name, s in self._stats.items()
        }
        credentials: dict[str, dict[str, Any]] = {}
        for (p, m), (until, reason) in sorted(self._model_credentials.items()):
            if until > now:
                entry = credentials.setdefault(
                    p,
                    {"reason": reason, "disabled_for_s": _left(until, now), "models": []},
                )
                entry["models"].append(m)
        credentials.update(
            (p, {"reason": reason, "disabled_for_s": _left(until, now)})
            for p, (until, reason) in self._credentials.items()
            if until > now
        )
        return {"models": models, "credentials": credentials}
