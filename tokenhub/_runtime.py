"""The runtime-state seam: what the router, the engine, telemetry and the Hub need to know live.

Runtime state is everything tokenhub learns from traffic and forgets on restart:
cooldowns (a rate limit's wait hint), circuit breakers, latency and time-to-first-chunk
statistics and the timeouts learned from them, the average answer length, credentials
taken out of rotation, and the rate-limit allowances providers report.
:class:`StateBackend` is that state in domain terms. The in-memory
:class:`tokenhub.routing._state.RuntimeState` is one implementation; a shared one
(Redis, so that many replicas behave as one Hub) implements the same protocol. This
module holds values and the protocol only: no I/O.
``docs/_drafts/state-seam.md`` is the contributor's guide.

Every method is synchronous and must not do network I/O: the router reads
:meth:`~StateBackend.blocked`, :meth:`~StateBackend.latency_ms`,
:meth:`~StateBackend.failure_rate` and :meth:`~StateBackend.output_tokens` for every
candidate of every request, and the engine feeds the state after every attempt. A
shared backend therefore keeps a local view that answers reads and takes writes at
in-memory speed, publishes what it learns in the background, and folds in what other
replicas publish as it arrives. State is advisory: a replica acting on a view that is
a moment old sends one request too many or too few, never a wrong answer.

Guarantees every backend gives, within one process:

- A cooldown blocks its model until its time has passed; a later, shorter one never
  shortens it.
- A breaker opens as :class:`~tokenhub._settings.BreakerSettings` says. Once its open
  period is over, :meth:`~StateBackend.acquire` admits exactly one probe; the probe's
  outcome (recorded, or handed back with :meth:`~StateBackend.release`) decides what
  comes next. Across replicas one probe per circuit is best effort.
- A disabled credential blocks every model of its provider until it expires or is
  enabled again; one disabled for a model (``model=``) blocks that model, and a
  second model disabled so disables it for the whole provider.
- Times (``Block.until``, ``not_before``) are this process's monotonic seconds, the
  clock the backend was built with. A shared backend never publishes them as they
  are: it sends durations or wall-clock deadlines and converts on receipt.

The retry budget (:class:`tokenhub.routing._health.RetryBudget`) is not part of
this seam on purpose: it is per process. Depositing on every request and
withdrawing on every retry would put a shared write on the request path, and it
is not needed: each replica keeps its retries within ``ratio`` of its own traffic
plus ``burst``, so the fleet keeps within ``ratio`` of the fleet's traffic plus
one burst per replica. The ratio, which is what protects a struggling provider
from a retry storm, holds fleet-wide as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tokenhub._settings import BreakerSettings, LearnedTimeouts

__all__ = ["Block", "StateBackend"]


@attrs.frozen
class Block:
    """Why a deployment must not be tried now, and until when (monotonic seconds)."""

    kind: Literal["circuit_open", "rate_limited", "credential"]
    until: float
    reason: str


class StateBackend(Protocol):
    """Runtime health per deployment (model) and credential blocks per provider.

    Unknown models and providers are healthy and unmeasured: reads return ``None``
    (or ``0.0`` for :meth:`not_before`) until traffic says otherwise.
    """

    #: The breaker settings of models first seen from now on (the Hub sets it on reconfigure).
    breaker_settings: BreakerSettings

    # -- read by the router for every candidate: local and cheap

    def blocked(self, model: str, provider: str) -> Block | None:
        """Why ``model`` (served by ``provider``) must not be tried now, if so.

        The credential first, then a cooldown, then the circuit (open, or half-open
        with its probe out). An expired credential block is forgotten here.
        """
        ...

    def latency_ms(self, model: str) -> float | None:
        """The decayed average latency of ``model``'s successful attempts, if any."""
        ...

    def failure_rate(self, model: str) -> float | None:
        """The decayed failure rate of ``model`` in [0, 1], if any attempts were seen."""
        ...

    def output_tokens(self) -> float | None:
        """The decayed average output length of successful answers, one for all models."""
        ...

    # -- read and fed by the engine around every attempt

    def not_before(self, model: str) -> float:
        """The monotonic time before which ``model`` must not be sent anything (0.0 if none)."""
        ...

    def acquire(self, model: str) -> bool:
        """Take the right to send one request to ``model`` now.

        ``True`` while the circuit is closed. Once an open circuit's period is over
        it turns half-open and the first caller takes the one probe; everyone else
        gets ``False`` until the probe's outcome is recorded or released.
        """
        ...

    def probe_due(self, model: str) -> bool:
        """Take the right to send a probe to ``model`` beside a request another model serves.

        ``True`` at most once per ``probe_interval`` while its circuit is open, and
        only with no probe of it out; taken atomically like :meth:`acquire`.
        """
        ...

    def probe_done(self, model: str, *, ok: bool) -> None:
        """Record a ride-along probe's outcome (it may come after its request ended).

        A success closes the circuit; a failure keeps it open for a full period
        from now, not doubled, so that no lone half-open probe is sent meanwhile.
        """
        ...

    def force_probe(self, model: str) -> None:
        """Send a probe to ``model`` although its circuit is open (every candidate was blocked)."""
        ...

    def release(self, model: str) -> None:
        """Give back a half-open probe whose outcome says nothing about health."""
        ...

    def ttft_p95_ms(self, model: str) -> float | None:
        """The 95th percentile of ``model``'s recent times to first chunk (the hedging delay)."""
        ...

    def first_token_limit(self, model: str) -> float | None:
        """The learned limit in seconds on the wait for ``model``'s first chunk, if any.

        From ``min_samples`` times to first chunk on, their quantile times the
        factor, clamped to the floor and the ceiling (scaled for a thinking model);
        before that, the model's ``ttft_ms`` prior so treated; ``None`` without
        either, or when learning is off. Read once per streamed attempt: cheap.
        """
        ...

    def stall_limit(self, model: str) -> float | None:
        """The learned limit in seconds on a silence between chunks, like :meth:`first_token_limit`.

        From each stream's longest gap between chunks; no prior (``None`` until
        ``min_samples`` streams were seen).
        """
        ...

    def declare_timeouts(
        self, settings: LearnedTimeouts, models: Mapping[str, tuple[float | None, bool]]
    ) -> None:
        """How to learn limits from now on, and each model's (``ttft_ms`` prior, thinking) facts.

        The engine calls it when a config is installed; samples are kept.
        """
        ...

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
        """Feed a successful attempt: averages, samples, and the breaker (a probe closes it).

        ``ttft_ms`` and ``gap_ms`` (a stream's longest silence between chunks) are
        a stream's; ``thinking`` says the answer showed reasoning (the model thinks).
        It runs once per request: appending samples is all it may cost, not sorting.
        """
        ...

    def record_failure(self, model: str) -> None:
        """Feed a failure that says something about the provider (not about the request)."""
        ...

    def cool_down(self, model: str, seconds: float) -> None:
        """Send nothing to ``model`` for ``seconds`` (a rate limit's wait hint); never shortens."""
        ...

    def disable_credential(
        self, provider: str, reason: str, seconds: float | None = None, *, model: str | None = None
    ) -> None:
        """Take ``provider``'s key out of rotation, for ``seconds`` or until enabled again.

        With ``model`` (an auth failure), only for that model until a second model
        of the provider is disabled so: then for the whole provider.
        """
        ...

    # -- the Hub and telemetry

    def enable_credential(self, provider: str) -> None:
        """Put ``provider``'s key back into rotation (an operator's action)."""
        ...

    def observe_limits(self, model: str, headers: Mapping[str, str]) -> None:
        """Remember the remaining request and token allowances a response's headers report.

        Called for every response: it must cost next to nothing when the headers
        carry no allowance.
        """
        ...

    def remaining(self) -> dict[tuple[str, str], int]:
        """The last allowance seen per ``(model, "requests" | "tokens")``, as a new dict."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Health as plain data (what ``Hub.health()`` returns).

        ``{"models": {name: {"circuit": "closed" | "open" | "half_open",
        "open_for_s", "rate_limited_for_s", "latency_ms", "latency_p95_ms",
        "ttft_p95_ms", "failure_rate", "first_token_timeout_s", "stall_timeout_s",
        "ttft_samples", "gap_samples", "thinking"}}, "credentials": {provider:
        {"reason", "disabled_for_s"}}}``: durations in seconds from now (the learned
        limits in seconds), ``None`` where unmeasured, and ``disabled_for_s``
        ``None`` for a block with no end. An open circuit whose period is over
        shows as ``half_open``.
        """
        ...
