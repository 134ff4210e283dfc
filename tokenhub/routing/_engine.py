"""The failover engine: the attempt loop across ranked candidates, acting on each error class.

The entry points live here (:func:`chat`, :func:`stream`); the parts in their own
modules: the run's bookkeeping (``_run``), the pure decision per failure
(``_decide``), attempts and hedging (``_attempts``), streaming (``_streaming``).

What it does per class (the docs' failover page has the table):

* rate_limited (and overloaded with a wait hint): record the hint as a cooldown
  (nothing is sent before it), fail over at once; on the last candidate wait
  only if the hint fits both ``max_server_wait`` and the deadline.
* overloaded, transient, provider_down (connect, reset): fail over at once; on
  the last candidate retry with full-jitter backoff, at most ``max_retries``
  times, within the retry budget, unless the provider said ``x-should-retry: false``.
* transient, provider_down (connect, reset) on the model pinned with ``model=``:
  one quick retry on it (a full-jitter backoff of at most ``backoff_base``,
  within the retry budget and the deadline), then fail over; overloads, rate
  limits and timeouts fail over at once there too.
* timeouts: fail over (never retry a silent provider, so it costs one timeout).
* context_overflow: shrink ``max_tokens`` once when the provider's numbers
  allow (on any candidate, outside ``max_retries``), else skip to a candidate
  with a larger context window.
* auth, quota_exhausted: take the credential out of rotation, fail over.
* request_too_large_for_limit, a missing credential (``CredentialError``) or a
  request the adapter cannot express (``RequestError``): fail over.
* content_policy: raise (fail over only with ``content_policy_fallback``).
* invalid_request: raise, except a prefill rejection, which fails over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from tokenhub.routing._attempts import first_success, send
from tokenhub.routing._run import Engine, Run
from tokenhub.routing._streaming import stream

if TYPE_CHECKING:
    from tokenhub._models import ChatRequest, ChatResponse, RouteTrace

__all__ = ["Engine", "Run", "chat", "stream", "with_trace"]


async def chat(
    engine: Engine, request: ChatRequest, trace: RouteTrace, timeout: float | None
) -> ChatResponse:
    """Get a whole answer, trying the candidates in order."""
    run = engine.run(request, trace, timeout, stream=False)
    try:
        opened = await first_success(run, send)
    except BaseException as exc:
        run.finish(exc)
        raise
    response = opened.value
    opened.span.ok(
        engine.clock.monotonic() - opened.started,
        usage=response.usage,
        cost=response.cost_usd,
        response_model=response.upstream_model,
        response_id=response.response_id,
        finish_reason=response.finish_reason,
    )
    run.succeeded(opened.candidate, opened.started, response.usage)
    run.finish(None)
    return with_trace(response, run.trace)


def with_trace(response: ChatResponse, trace: RouteTrace) -> ChatResponse:
    """``response`` with its trace.

    A response fresh from its adapter (no trace yet) has not left the engine, so
    the trace (excluded from equality and hashing) is set in place rather than
    copying every field; anything else (a provider reusing a response) is copied.
    """
    if response.trace is not None:
        return attrs.evolve(response, trace=trace)
    object.__setattr__(response, "trace", trace)
    return response
