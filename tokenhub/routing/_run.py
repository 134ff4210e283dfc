"""One request's bookkeeping: its deadline, waits, attempt records and the decisions it applies.

An :class:`Engine` holds what requests share (settings, runtime state, clock,
telemetry, the retry budget and the table of deployments); a :class:`Run` is
one request's attempts on it. What to do about a failure is decided by the
pure :func:`tokenhub.routing._decide.decide`; :meth:`Run.failed` applies it.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from tokenhub import _semconv as sc
from tokenhub._models import Attempt
from tokenhub._redact import get_logger
from tokenhub._telemetry import finish_route
from tokenhub.errors import (
    CredentialError,
    ErrorClass,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    RequestError,
)
from tokenhub.routing._decide import Decision, decide
from tokenhub.routing._detach import Detached
from tokenhub.routing._health import RetryBudget

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tokenhub._clock import Clock
    from tokenhub._models import Candidate, ChatRequest, RouteTrace, Splice, Usage
    from tokenhub._runtime import StateBackend
    from tokenhub._settings import FailoverConfig
    from tokenhub._telemetry import AttemptSpan, Telemetry
    from tokenhub.routing._deployment import Deployment

__all__ = ["Billing", "Engine", "Run", "stopped"]

_log = get_logger("tokenhub.request")
_RAISE = Decision("raise")


class Billing(Protocol):
    """Where a cost learnt after its request ended is charged (a detached probe's)."""

    def charge_late(self, model: str, usd: float) -> None:
        """Charge ``usd`` spent on ``model`` to the budgets that cover it; never raises."""


class Engine:
    """Shared failover machinery: settings, state, clock, deployments and the retry budget.

    ``deployments`` maps each configured model name to what is needed to send
    to it. A new table means a new engine (:meth:`using`); runs started on the
    old one keep it.
    """

    def __init__(
        self,
        settings: FailoverConfig,
        state: StateBackend,
        clock: Clock,
        deployments: Mapping[str, Deployment],
        *,
        telemetry: Telemetry,
        budget: RetryBudget | None = None,
        no_prefill: set[str] | None = None,
        detached: Detached | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.clock = clock
        self.deployments = deployments
        self.telemetry = telemetry
        #: Process-wide: shared by the engines that replace this one with the same settings.
        self.budget = budget or RetryBudget(settings.retry_budget, settings.retry_burst)
        #: Models that refused a prefill: a broken stream is regenerated on them instead.
        self.no_prefill: set[str] = set() if no_prefill is None else no_prefill
        #: Process-wide: probes that outlive the request that carried them.
        self.detached = Detached() if detached is None else detached
        #: Where a detached probe's cost goes once known (the Hub's ledger, when it has one).
        self.billing: Billing | None = None
        # Built once per table rather than once per attempt.
        self.observers: dict[str, Callable[[Mapping[str, str]], None]] = {
            name: partial(state.observe_limits, name) for name in deployments
        }
        state.declare_timeouts(
            settings.learned_timeouts,
            {name: (d.ttft_ms, d.thinking) for name, d in deployments.items()},
        )

    def using(self, deployments: Mapping[str, Deployment]) -> Engine:
        """The same machinery (and retry budget) over another table of deployments."""
        return Engine(
            self.settings,
            self.state,
            self.clock,
            deployments,
            telemetry=self.telemetry,
            budget=self.budget,
            no_prefill=self.no_prefill,
            detached=self.detached,
        )

    def run(
        self, request: ChatRequest, trace: RouteTrace, timeout: float | None, *, stream: bool
    ) -> Run:
        """Start the bookkeeping (and the route span) for one request."""
        self.budget.deposit()
        limit = self.settings.timeout if timeout is None else timeout
        return Run(self, request, trace, limit, stream=stream)


class Run:
    """One request's attempts: deadline, waits, decisions and the trace they produce."""

    def __init__(
        self,
        engine: Engine,
        request: ChatRequest,
        trace: RouteTrace,
        timeout: float,
        *,
        stream: bool,
    ) -> None:
        self.engine = engine
        #: The table this request started with: a config installed meanwhile makes a new engine.
        self.deployments = engine.deployments
        self.request = request
        self.base_trace = trace
        self.stream = stream
        self.attempts: list[Attempt] = []
        self.started = engine.clock.monotonic()
        self.deadline = self.started + timeout
        self.route = engine.telemetry.route(trace, request, stream=stream)
        self._waited = 0.0
        self._min_window: int | None = None  # after a context overflow: only larger windows
        self._started_attempts = 0
        self._trace: RouteTrace | None = None
        self._forgotten: Candidate | None = None  # a probe that went on without this request
        #: The outcome recorded for an attempt cut short by cancellation: the caller's,
        #: unless a hedge race is cancelling its loser.
        self.cancelled_as = "cancelled"
        self.last_error: ProviderError | CredentialError | RequestError | None = None

    @property
    def trace(self) -> RouteTrace:
        """The route trace with the attempts made so far (built once per attempt count)."""
        cached = self._trace
        if cached is None or len(cached.attempts) != len(self.attempts):
            cached = self._trace = self.base_trace.with_attempts(tuple(self.attempts))
        return cached

    def splice(self, splice: Splice) -> None:
        """Record where a rescue took over a broken stream (it appears on the trace)."""
        base = self.base_trace
        self.base_trace = attrs.evolve(base, splices=(*base.splices, splice))
        self._trace = None

    def forget(self, probe: Candidate) -> None:
        """Record nothing more about ``probe``: it goes on detached, after this request."""
        self._forgotten = probe

    def remaining(self) -> float:
        """Seconds left before the request's deadline."""
        return self.deadline - self.engine.clock.monotonic()

    def failed(
        self,
        candidate: Candidate,
        exc: ProviderError | CredentialError | RequestError,
        started: float,
        *,
        tries: int,
        last: bool,
    ) -> Decision:
        """Record a failure, decide about it, and apply the decision's effects.

        The decision's action is what the caller does next: retry (after its
        delay, with its request when set), go to the next candidate, or raise.
        """
        engine, state = self.engine, self.engine.state
        name = candidate.model
        self.last_error = exc
        if isinstance(exc, ProviderError):
            self.record(
                candidate, exc.error_class.value, started, status=exc.status, message=exc.message
            )
        else:
            outcome = "credential" if isinstance(exc, CredentialError) else "unsupported"
            self.record(candidate, outcome, started, message=str(exc))
        decision = decide(
            exc,
            request=self.request,
            output_tokens=candidate.output_tokens,
            context_window=self.deployments[name].context_window,
            tries=tries,
            last=last,
            settings=engine.settings,
            remaining=self.remaining(),
            random=engine.clock.random,
            pinned=name == self.base_trace.pinned,
        )
        if decision.health == "failure":
            state.record_failure(name)
        else:
            state.release(name)
        if decision.cool_down is not None:
            state.cool_down(name, decision.cool_down)
        if decision.disable_credential is not None:
            reason, seconds = decision.disable_credential
            scope = name if decision.credential_model else None
            state.disable_credential(candidate.provider, reason, seconds, model=scope)
        if decision.min_window is not None:
            self._min_window = max(self._min_window or 0, decision.min_window)
        if decision.spends_budget and not engine.budget.withdraw():
            return _RAISE if decision.no_budget == "raise" else Decision(decision.no_budget)
        return decision

    def deadline_error(self, candidate: Candidate) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            "the request's deadline passed",
            error_class=ErrorClass.PROVIDER_DOWN,
            provider=candidate.provider,
            model=candidate.model,
            request_id=self.base_trace.request_id,
        )

    async def admit(self, candidate: Candidate) -> bool:
        """Get ``candidate`` ready to be sent: wait out a cooldown if allowed, take the breaker.

        Returns ``False`` to skip it. Raises when a needed wait does not fit.
        """
        engine, name = self.engine, candidate.model
        if self._min_window is not None:
            window = self.deployments[name].context_window
            if window is not None and window <= self._min_window:
                return False
        wait = engine.state.not_before(name) - engine.clock.monotonic()
        if wait > 0:
            if wait > engine.settings.max_server_wait or wait >= self.remaining():
                exc = RateLimitError(
                    f"rate-limited for another {wait:.1f} s, longer than the request can wait",
                    error_class=ErrorClass.RATE_LIMITED,
                    provider=candidate.provider,
                    model=name,
                    retry_after=wait,
                    request_id=self.base_trace.request_id,
                )
                exc.trace = self.trace
                raise exc
            await self.sleep(wait)
        if engine.state.acquire(name):
            return True
        if candidate.note is not None:  # re-admitted although blocked: it goes as the probe
            engine.state.force_probe(name)
            return True
        return False

    def admit_now(self, candidate: Candidate) -> bool:
        """Take ``candidate``'s breaker if it can be sent to right now, without waiting."""
        state = self.engine.state
        if state.blocked(candidate.model, candidate.provider) is not None:
            return False
        return state.acquire(candidate.model)

    async def sleep(self, seconds: float) -> None:
        """Wait, counting it for the next attempt's record (and as a span event)."""
        self._waited += seconds
        if self.route.is_recording():
            self.route.add_event(sc.BACKOFF_EVENT, {sc.DELAY_S: seconds})
        await self.engine.clock.sleep(seconds)

    def next_index(self) -> int:
        """Number a new attempt: 1, 2, ... in the order they start (hedged ones included)."""
        self._started_attempts += 1
        return self._started_attempts

    def attempt_timeout(self, candidate: Candidate) -> tuple[float, str]:
        """The attempt's time limit, capped by the deadline, and the setting it comes from.

        ``first_token_timeout`` when set; else, for a stream with another candidate
        left to fail over to, the limit learned for the model (grown for a long
        prompt). A whole answer's time depends on its length, which nothing
        predicts: a learned limit never cuts one, nor the last candidate's stream.
        """
        engine = self.engine
        limit = engine.settings.first_token_timeout
        if limit is not None:
            return min(limit, self.remaining()), "first_token_timeout"
        if self.stream:
            learned = engine.state.first_token_limit(candidate.model)
            if learned is not None and self._fallback_after(candidate):
                learned += (
                    self.base_trace.prompt_tokens
                    / engine.settings.learned_timeouts.prompt_tokens_per_s
                )
                return min(learned, self.remaining()), "the learned first-token limit"
        return self.remaining(), "first_token_timeout"

    def _fallback_after(self, candidate: Candidate) -> bool:
        """Whether a candidate after ``candidate`` could be sent to now."""
        candidates, state = self.base_trace.candidates, self.engine.state
        later = candidates[candidates.index(candidate) + 1 :] if candidate in candidates else ()
        return any(state.blocked(c.model, c.provider) is None for c in later)

    def stall_limit(self, candidate: Candidate) -> float | None:
        """The limit on a silence between a stream's chunks: ``stall_timeout``, else learned.

        ``None`` (the HTTP read timeout bounds each wait) also when the learned
        limit is no shorter than the read timeout.
        """
        engine = self.engine
        static = engine.settings.stall_timeout
        if static is not None:
            return static
        learned = engine.state.stall_limit(candidate.model)
        if learned is None:
            return None
        read = self.deployments[candidate.model].read_timeout
        return None if read is not None and learned >= read else learned

    def timed_out(self, candidate: Candidate, seconds: float, setting: str) -> ProviderError:
        """The error for an attempt that waited ``seconds`` (its ``setting``), or the deadline."""
        if self.remaining() <= 0:
            return self.deadline_error(candidate)
        return ProviderTimeoutError(
            f"no answer within {seconds:g} s ({setting})",
            error_class=ErrorClass.PROVIDER_DOWN,
            provider=candidate.provider,
            model=candidate.model,
            request_id=self.base_trace.request_id,
        )

    def record(
        self,
        candidate: Candidate,
        outcome: str,
        started: float,
        *,
        status: int | None = None,
        message: str | None = None,
        usage: Usage | None = None,
        cost: float | None = None,
    ) -> None:
        """Add one attempt to the trace (and a log record when it failed)."""
        if candidate is self._forgotten:
            return
        elapsed = (self.engine.clock.monotonic() - started) * 1000
        if outcome not in ("ok", "cancelled") and _log.isEnabledFor(logging.INFO):
            _log.info(
                "request %s: attempt %d on %s failed (%s)",
                self.base_trace.request_id,
                len(self.attempts) + 1,
                candidate.model,
                outcome,
                extra={
                    "request_id": self.base_trace.request_id,
                    "model": candidate.model,
                    "provider": candidate.provider,
                    "attempt": len(self.attempts) + 1,
                    "error_class": outcome,
                    "latency_ms": round(elapsed, 1),
                    "delay_s": self._waited,
                },
            )
        self.attempts.append(
            Attempt(
                candidate.model,
                candidate.provider,
                outcome,
                elapsed,
                status,
                message,
                wait_s=self._waited,
                usage=usage,
                cost_usd=cost,
            )
        )
        self._waited = 0.0

    def succeeded(
        self,
        candidate: Candidate,
        started: float,
        usage: Usage | None,
        first_at: float | None = None,
        gap: float | None = None,
        *,
        reasoned: bool = False,
    ) -> None:
        """Record a success and feed the runtime state.

        A stream gives its first chunk's time, its longest gap between chunks
        (seconds) and whether it carried reasoning.
        """
        now = self.engine.clock.monotonic()
        self.engine.state.record_success(
            candidate.model,
            latency_ms=(now - started) * 1000,
            output_tokens=usage.output_tokens if usage else None,
            ttft_ms=None if first_at is None else (first_at - started) * 1000,
            gap_ms=None if gap is None else gap * 1000,
            thinking=reasoned or bool(usage and usage.reasoning_tokens),
        )
        self.record(candidate, "ok", started)

    def abandoned(
        self,
        candidate: Candidate,
        started: float,
        span: AttemptSpan,
        exc: BaseException,
        *,
        usage: Usage | None = None,
        cost: float | None = None,
    ) -> None:
        """Record an attempt cut short by something other than a provider error; free its probe.

        The caller stopping (a cancellation, a stream closed early) or a lost
        hedge is no failure; anything else (a bug in an adapter) is ``_OTHER``.
        """
        engine = self.engine
        if stopped(exc):
            span.cancelled()
            outcome = self.cancelled_as
        else:
            outcome = sc.error_type(exc)
            span.failed(engine.clock.monotonic() - started, outcome, type(exc).__name__)
        engine.state.release(candidate.model)
        self.record(candidate, outcome, started, usage=usage, cost=cost)

    def finish(self, error: BaseException | None) -> None:
        """End the route span and log the request's outcome."""
        trace = self.trace
        if error is None or stopped(error):
            finish_route(self.route, trace)
            if not _log.isEnabledFor(logging.INFO):
                return
            if error is None:
                _log.info(
                    "request %s answered by %s after %d attempt(s)",
                    trace.request_id,
                    trace.chosen,
                    len(trace.attempts),
                    extra=self._outcome(trace, None),
                )
            else:
                _log.info(
                    "request %s cancelled by the caller after %d attempt(s)",
                    trace.request_id,
                    len(trace.attempts),
                    extra=self._outcome(trace, "cancelled"),
                )
            return
        kind = sc.error_type(error)
        finish_route(self.route, trace, error_type=kind, message=str(error))
        _log.warning(
            "request %s failed after %d attempt(s) (%s)",
            trace.request_id,
            len(trace.attempts),
            kind,
            extra=self._outcome(trace, kind),
        )

    def _outcome(self, trace: RouteTrace, error: str | None) -> dict[str, Any]:
        last = trace.attempts[-1] if trace.attempts else None
        return {
            "request_id": trace.request_id,
            "model": last.model if last else None,
            "provider": last.provider if last else None,
            "attempt": len(trace.attempts),
            "error_class": error,
            "latency_ms": round((self.engine.clock.monotonic() - self.started) * 1000, 1),
        }


def stopped(exc: BaseException) -> bool:
    """Whether ``exc`` is the caller stopping, not a failure.

    A stream closed early raises ``GeneratorExit``, a cancelled call the
    backend's cancellation exception: neither subclasses ``Exception``.
    """
    return not isinstance(exc, Exception)
