"""What to do about a failed attempt: a pure function from the error and the facts to a decision.

:func:`decide` reads no clock and changes no state: the run that calls it
applies the :class:`Decision` (health, cooldowns, credentials, the retry
budget, the trace). The table of what happens per error class is in the
engine's module docstring and on the docs' failover page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from tokenhub.errors import (
    ContextOverflowError,
    ErrorClass,
    ProviderError,
    ProviderTimeoutError,
)
from tokenhub.routing._health import full_jitter, server_wait

if TYPE_CHECKING:
    from collections.abc import Callable

    from tokenhub._models import ChatRequest
    from tokenhub._settings import FailoverConfig
    from tokenhub.errors import CredentialError, RequestError

__all__ = ["Action", "Decision", "decide"]

Action = Literal["retry", "next", "raise"]
_MIN_SHRUNK_OUTPUT = 64
_SAME_MODEL_RETRY = frozenset({ErrorClass.OVERLOADED, ErrorClass.TRANSIENT})
_WAIT_HINTED = frozenset({ErrorClass.RATE_LIMITED, ErrorClass.OVERLOADED})
_CREDENTIAL = frozenset({ErrorClass.AUTH, ErrorClass.QUOTA_EXHAUSTED})
# A one-off failure worth one quick retry on a pinned model: a plain 5xx, a refused or reset
# connection (a timeout is a ProviderTimeoutError and never retried; overloads go elsewhere).
_PINNED_RETRY = frozenset({ErrorClass.TRANSIENT, ErrorClass.PROVIDER_DOWN})


@attrs.frozen
class Decision:
    """The verdict on one failed attempt, and the effects the run must apply.

    ``action``: ``retry`` the same candidate after ``delay`` seconds (with
    ``request`` instead of the current one when set: a shrunk ``max_tokens``),
    go to the ``next`` candidate, or ``raise``. ``health`` says whether the
    failure counts against the model's breaker (``failure``) or only frees its
    probe (``release``). ``cool_down``: seconds to send nothing to the model.
    ``disable_credential``: take the provider's key out of rotation, as
    (reason, seconds or ``None`` for until re-enabled). ``min_window``: from now
    on only candidates with a larger context window. ``spends_budget``: the
    retry happens only if the retry budget allows one (else it is a ``raise``).
    ``credential_model``: disable the key for the failed model only, at first (an
    auth failure: a gateway may relay one deployment's 401; the state widens the
    block to the provider when a second of its models fails so). ``no_budget``:
    the action instead of a retry the budget refuses (``next`` for a pinned
    model's quick retry, which has candidates left). Server wait hints are capped
    at ``settings.max_cooldown`` before they become a cooldown or a block.
    """

    action: Action
    delay: float = 0.0
    request: ChatRequest | None = None
    health: Literal["failure", "release"] = "release"
    cool_down: float | None = None
    disable_credential: tuple[str, float | None] | None = None
    min_window: int | None = None
    spends_budget: bool = False
    credential_model: bool = False
    no_budget: Action = "raise"


def decide(
    error: ProviderError | CredentialError | RequestError,
    *,
    request: ChatRequest,
    output_tokens: int,
    context_window: int | None,
    tries: int,
    last: bool,
    settings: FailoverConfig,
    remaining: float,
    random: Callable[[], float],
    pinned: bool = False,
) -> Decision:
    """Decide about ``error`` from ``request`` (as sent) on a candidate.

    ``output_tokens`` is the candidate's expected answer length (when the
    request sets no ``max_tokens``), ``context_window`` its configured window;
    ``tries`` counts the retries already made on it, ``last`` says whether it
    is the last candidate; ``remaining`` is the seconds left before the
    deadline. ``random`` is drawn (in [0, 1)) only when a backoff is computed.
    ``pinned`` says the candidate is the model the caller asked for (``model=``):
    a one-off transient failure on it gets one quick retry before failing over.
    """
    if not isinstance(error, ProviderError):  # CredentialError, RequestError
        return Decision("raise" if last else "next")
    cls = error.error_class
    health: Literal["failure", "release"] = "failure" if cls.counts_against_health else "release"
    hint = error.retry_after
    if hint is not None:  # the server's word, bounded: a huge Retry-After must not exclude forever
        hint = min(hint, settings.max_cooldown)
    cool_down = hint if hint is not None and cls in _WAIT_HINTED else None
    disable = (cls.value, hint) if cls in _CREDENTIAL else None

    def verdict(
        action: Action,
        delay: float = 0.0,
        *,
        shrunk: ChatRequest | None = None,
        min_window: int | None = None,
        spends_budget: bool = False,
        no_budget: Action = "raise",
    ) -> Decision:
        return Decision(
            action,
            delay,
            shrunk,
            health,
            cool_down,
            disable,
            min_window,
            spends_budget,
            cls is ErrorClass.AUTH,
            no_budget,
        )

    if cls is ErrorClass.CONTEXT_OVERFLOW:
        shrunk = _shrunk(error, request, output_tokens, tries)
        if shrunk is not None:
            return verdict("retry", shrunk=shrunk)
        limit = error.limit if isinstance(error, ContextOverflowError) else None
        return verdict("raise" if last else "next", min_window=context_window or limit or 0)
    if cls is ErrorClass.INVALID_REQUEST:
        prefill = "prefill" in error.message.lower()
        return verdict("next" if prefill and not last else "raise")
    if cls is ErrorClass.CONTENT_POLICY:
        return verdict("next" if settings.content_policy_fallback and not last else "raise")
    if not last:
        if (
            pinned
            and cls in _PINNED_RETRY
            and tries == 0 < settings.max_retries
            and error.should_retry is not False
            and not isinstance(error, ProviderTimeoutError)
        ):
            delay = full_jitter(0, random(), base=settings.backoff_base, cap=settings.backoff_cap)
            if delay < remaining:
                return verdict("retry", delay, spends_budget=True, no_budget="next")
        return verdict("next")
    # The last candidate: retry overloads, transients and rate limits within limits.
    s = settings
    if tries >= s.max_retries or isinstance(error, ProviderTimeoutError):
        return verdict("raise")
    if error.should_retry is False:
        return verdict("raise")
    if cls is ErrorClass.RATE_LIMITED and hint is not None:
        if hint > s.max_server_wait:
            return verdict("raise")
        delay = server_wait(hint, random())
    elif cls in _SAME_MODEL_RETRY or cls in (ErrorClass.PROVIDER_DOWN, ErrorClass.RATE_LIMITED):
        delay = full_jitter(tries, random(), base=s.backoff_base, cap=s.backoff_cap)
    else:
        return verdict("raise")
    if delay >= remaining:
        return verdict("raise")
    return verdict("retry", delay, spends_budget=True)


def _shrunk(
    error: ProviderError, request: ChatRequest, output_tokens: int, tries: int
) -> ChatRequest | None:
    """A copy of the request with a smaller ``max_tokens`` that fits, if the numbers allow."""
    if not isinstance(error, ContextOverflowError) or tries:
        return None
    limit, prompt = error.limit, error.prompt_tokens
    if limit is None or prompt is None:
        return None
    room = limit - prompt - _MIN_SHRUNK_OUTPUT // 4
    current = request.max_tokens or output_tokens
    if room < _MIN_SHRUNK_OUTPUT or room >= current:
        return None
    return attrs.evolve(request, max_tokens=room)
