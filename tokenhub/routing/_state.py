"""Runtime state the scorer reads: observed latency, failure rate and output length per model.

Ephemeral and rebuilt from traffic. The failover engine adds circuit breakers and
rate-limit cooldowns behind :meth:`RuntimeState.unavailable`.
"""

from __future__ import annotations

__all__ = ["RuntimeState"]


class _Stats:
    __slots__ = ("failure", "latency_ms", "output_tokens")

    def __init__(self) -> None:
        self.latency_ms: float | None = None
        self.failure: float | None = None
        self.output_tokens: float | None = None


def _ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else old + alpha * (sample - old)


class RuntimeState:
    """Per-model exponentially weighted averages, updated after every attempt."""

    def __init__(self, *, alpha: float = 0.2) -> None:
        self._alpha = alpha
        self._stats: dict[str, _Stats] = {}

    def _get(self, model: str) -> _Stats:
        s = self._stats.get(model)
        if s is None:
            s = self._stats[model] = _Stats()
        return s

    def record_success(self, model: str, *, latency_ms: float, output_tokens: int | None) -> None:
        """Feed a successful attempt."""
        s = self._get(model)
        s.latency_ms = _ewma(s.latency_ms, latency_ms, self._alpha)
        s.failure = _ewma(s.failure, 0.0, self._alpha)
        if output_tokens is not None:
            s.output_tokens = _ewma(s.output_tokens, float(output_tokens), self._alpha)

    def record_failure(self, model: str) -> None:
        """Feed a failure that says something about the provider (not about the request)."""
        s = self._get(model)
        s.failure = _ewma(s.failure, 1.0, self._alpha)

    def latency_ms(self, model: str) -> float | None:
        """The observed latency average, if any."""
        s = self._stats.get(model)
        return None if s is None else s.latency_ms

    def failure_rate(self, model: str) -> float | None:
        """The decayed failure rate in [0, 1], if any attempts were seen."""
        s = self._stats.get(model)
        return None if s is None else s.failure

    def output_tokens(self, model: str) -> float | None:
        """The average output length of successful answers, if any."""
        s = self._stats.get(model)
        return None if s is None else s.output_tokens

    def unavailable(self, model: str) -> str | None:  # noqa: ARG002 - the failover engine's hook
        """Why ``model`` must not be tried now (open circuit, rate-limit cooldown), if so."""
        return None
