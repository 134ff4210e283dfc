"""The failover decision per error class: a pure function of the error and the facts."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenhub._models import ChatRequest, Message
from tokenhub._settings import FailoverConfig
from tokenhub.errors import (
    ContextOverflowError,
    CredentialError,
    ErrorClass,
    ProviderError,
    ProviderTimeoutError,
    RequestError,
)
from tokenhub.routing._decide import Decision, decide
from tokenhub.routing._health import full_jitter, server_wait

REQUEST = ChatRequest(messages=(Message(role="user", content="hi"),))
SETTINGS = FailoverConfig()


def error(cls: ErrorClass, **kw: Any) -> ProviderError:
    return ProviderError("boom", error_class=cls, **kw)


def overflow(limit: int | None = 8000, prompt: int | None = 7000) -> ContextOverflowError:
    return ContextOverflowError(
        "too long", error_class=ErrorClass.CONTEXT_OVERFLOW, limit=limit, prompt_tokens=prompt
    )


def run(exc: BaseException, **kw: Any) -> Decision:
    """``decide`` with defaults: first try, not the last candidate, plenty of time."""
    args: dict[str, Any] = {
        "request": REQUEST,
        "output_tokens": 4000,
        "context_window": None,
        "tries": 0,
        "last": False,
        "settings": SETTINGS,
        "remaining": 600.0,
        "random": lambda: 0.5,
    }
    args.update(kw)
    assert isinstance(exc, ProviderError | CredentialError | RequestError)
    return decide(exc, **args)


class TestContextOverflow:
    def test_shrinks_max_tokens_once_when_the_numbers_allow(self) -> None:
        """An overflow with limit and prompt size retries with a max_tokens that fits."""
        d = run(overflow())
        assert "retry" == d.action
        assert d.request is not None
        assert 8000 - 7000 - 16 == d.request.max_tokens
        assert (0.0, False, None) == (d.delay, d.spends_budget, d.min_window)

    def test_only_once(self) -> None:
        """After one shrink, the same overflow moves on to a larger window instead."""
        d = run(overflow(), tries=1, context_window=8000)
        assert Decision("next", min_window=8000) == d

    def test_shrinks_even_on_the_last_candidate_outside_max_retries(self) -> None:
        """The shrink is no retry in max_retries' sense: it happens with max_retries 0."""
        d = run(overflow(), last=True, settings=FailoverConfig(max_retries=0))
        assert "retry" == d.action

    @pytest.mark.parametrize(
        ("limit", "prompt", "max_tokens"),
        [(None, 7000, None), (8000, None, None), (8000, 7990, None), (8000, 1000, 500)],
    )
    def test_no_shrink_without_room(
        self, limit: int | None, prompt: int | None, max_tokens: int | None
    ) -> None:
        """No numbers, too little room, or a max_tokens that already fits: skip to a larger window."""
        request = attrs.evolve(REQUEST, max_tokens=max_tokens)
        d = run(overflow(limit, prompt), request=request)
        assert ("next", None, limit or 0) == (d.action, d.request, d.min_window)

    def test_raises_on_the_last_candidate(self) -> None:
        """With no candidate left to try, an overflow that cannot shrink is raised."""
        assert "raise" == run(overflow(None, None), last=True).action

    def test_configured_window_wins_over_the_providers_limit(self) -> None:
        """Later candidates must beat the window configured for this one."""
        assert 32000 == run(overflow(None, None), context_window=32000).min_window


class TestCredentials:
    @pytest.mark.parametrize("cls", [ErrorClass.AUTH, ErrorClass.QUOTA_EXHAUSTED])
    def test_disables_the_credential_and_fails_over(self, cls: ErrorClass) -> None:
        """Auth and quota failures take the key out of rotation (for the hint, if any).

        Auth failures take it out for the failed model first; quota is the account's.
        """
        scoped = cls is ErrorClass.AUTH
        expected = Decision("next", disable_credential=(cls.value, None), credential_model=scoped)
        assert expected == run(error(cls))
        timed = run(error(cls, retry_after=30.0), last=True)
        expected = Decision("raise", disable_credential=(cls.value, 30.0), credential_model=scoped)
        assert expected == timed

    @pytest.mark.parametrize(
        "exc", [CredentialError("no key"), RequestError([("tools", "not supported")])]
    )
    def test_missing_key_or_unsupported_request_fails_over(self, exc: BaseException) -> None:
        """A CredentialError or RequestError moves on, frees the probe, and is raised last."""
        assert Decision("next") == run(exc)
        assert Decision("raise") == run(exc, last=True)


class TestLastCandidate:
    @pytest.mark.parametrize(
        "cls", [ErrorClass.TRANSIENT, ErrorClass.OVERLOADED, ErrorClass.PROVIDER_DOWN]
    )
    def test_retries_with_full_jitter_spending_the_budget(self, cls: ErrorClass) -> None:
        """Transient failures on the last candidate retry after a full-jitter backoff."""
        d = run(error(cls), last=True, tries=1)
        delay = full_jitter(1, 0.5, base=SETTINGS.backoff_base, cap=SETTINGS.backoff_cap)
        assert ("retry", delay, True) == (d.action, d.delay, d.spends_budget)

    def test_bounded_by_max_retries(self) -> None:
        """The retry after max_retries tries is a raise."""
        s = FailoverConfig(max_retries=2)
        actions = [
            run(error(ErrorClass.TRANSIENT), last=True, tries=t, settings=s).action
            for t in range(4)
        ]
        assert ["retry", "retry", "raise", "raise"] == actions

    def test_bounded_by_the_deadline(self) -> None:
        """A backoff that would not end before the deadline is a raise."""
        delay = run(error(ErrorClass.TRANSIENT), last=True).delay
        assert "raise" == run(error(ErrorClass.TRANSIENT), last=True, remaining=delay).action
        assert "retry" == run(error(ErrorClass.TRANSIENT), last=True, remaining=delay * 2).action

    def test_timeouts_never_retry(self) -> None:
        """A silent provider costs one timeout: never retried, only failed over."""
        timeout = ProviderTimeoutError("silent", error_class=ErrorClass.PROVIDER_DOWN)
        assert Decision("raise", health="failure") == run(timeout, last=True)
        assert Decision("next", health="failure") == run(timeout)

    def test_provider_forbids_a_retry(self) -> None:
        """x-should-retry: false turns a retry into a raise."""
        exc = error(ErrorClass.OVERLOADED)
        exc.should_retry = False
        assert "raise" == run(exc, last=True).action

    def test_rate_limit_waits_its_hint_when_it_fits(self) -> None:
        """A hint within max_server_wait is waited out (and recorded as a cooldown)."""
        d = run(error(ErrorClass.RATE_LIMITED, retry_after=5.0), last=True)
        assert Decision("retry", server_wait(5.0, 0.5), cool_down=5.0, spends_budget=True) == d

    def test_rate_limit_longer_than_max_server_wait_raises(self) -> None:
        """A hint beyond max_server_wait is not waited for."""
        d = run(error(ErrorClass.RATE_LIMITED, retry_after=61.0), last=True)
        assert Decision("raise", cool_down=61.0) == d

    def test_not_last_fails_over_at_once(self) -> None:
        """Before the last candidate, a retryable failure moves on without a wait or a draw."""
        draws: list[float] = []

        def random() -> float:
            draws.append(0.5)
            return 0.5

        d = run(error(ErrorClass.RATE_LIMITED, retry_after=5.0), random=random)
        assert (Decision("next", cool_down=5.0), []) == (d, draws)


class TestPinned:
    @pytest.mark.parametrize(
        "exc",
        [
            error(ErrorClass.TRANSIENT, status=500),
            error(ErrorClass.TRANSIENT, status=502),
            error(ErrorClass.TRANSIENT, status=504),
            error(ErrorClass.PROVIDER_DOWN),  # connection refused or reset
        ],
    )
    def test_one_quick_retry_before_failing_over(self, exc: ProviderError) -> None:
        """A one-off 5xx or reset on the pinned model is retried once, after a short full jitter."""
        d = run(exc, pinned=True)
        delay = full_jitter(0, 0.5, base=SETTINGS.backoff_base, cap=SETTINGS.backoff_cap)
        expected = Decision("retry", delay, health="failure", spends_budget=True, no_budget="next")
        assert expected == d
        assert Decision("next", health="failure") == run(exc, pinned=True, tries=1)

    @pytest.mark.parametrize(
        ("exc", "expected"),
        [
            (error(ErrorClass.OVERLOADED, status=503), Decision("next", health="failure")),
            (error(ErrorClass.OVERLOADED, status=529), Decision("next", health="failure")),
            (error(ErrorClass.RATE_LIMITED), Decision("next")),
            (error(ErrorClass.RATE_LIMITED, retry_after=2.0), Decision("next", cool_down=2.0)),
            (
                ProviderTimeoutError("silent", error_class=ErrorClass.PROVIDER_DOWN),
                Decision("next", health="failure"),
            ),
            (error(ErrorClass.INVALID_REQUEST), Decision("raise")),
        ],
    )
    def test_overloads_rate_limits_and_timeouts_fail_over_at_once(
        self, exc: ProviderError, expected: Decision
    ) -> None:
        """On a pinned model, 503/529, 429 and timeouts still move on without a retry."""
        assert expected == run(exc, pinned=True)

    def test_unpinned_fails_over_at_once(self) -> None:
        """Without a pin, a 500 moves on to the next candidate at once, as before."""
        assert Decision("next", health="failure") == run(error(ErrorClass.TRANSIENT))

    def test_bounded_by_the_deadline_max_retries_and_the_server(self) -> None:
        """No quick retry past the deadline, with max_retries 0, or against x-should-retry: false."""
        exc = error(ErrorClass.TRANSIENT)
        delay = run(exc, pinned=True).delay
        assert "next" == run(exc, pinned=True, remaining=delay).action
        assert "next" == run(exc, pinned=True, settings=FailoverConfig(max_retries=0)).action
        exc.should_retry = False
        assert "next" == run(exc, pinned=True).action

    def test_the_last_candidate_is_unchanged(self) -> None:
        """A pinned model with no fallbacks retries as any last candidate does (raise when refused)."""
        exc = error(ErrorClass.TRANSIENT)
        assert run(exc, last=True) == run(exc, last=True, pinned=True)
        assert "raise" == run(exc, last=True).no_budget


class TestRequestErrors:
    def test_content_policy_raises_unless_fallback(self) -> None:
        """A content-policy refusal is final, unless content_policy_fallback is on."""
        exc = error(ErrorClass.CONTENT_POLICY)
        fallback = FailoverConfig(content_policy_fallback=True)
        assert "raise" == run(exc).action
        assert "next" == run(exc, settings=fallback).action
        assert "raise" == run(exc, settings=fallback, last=True).action

    def test_prefill_rejection_fails_over(self) -> None:
        """An invalid request that names prefill moves on; any other is final."""
        prefill = ProviderError("Prefill is not supported", error_class=ErrorClass.INVALID_REQUEST)
        assert "next" == run(prefill).action
        assert "raise" == run(error(ErrorClass.INVALID_REQUEST)).action


CLASSES = st.sampled_from(list(ErrorClass))


@st.composite
def errors(draw: st.DrawFn) -> BaseException:
    kind = draw(st.sampled_from(["plain", "timeout", "overflow", "credential", "request"]))
    cls = draw(CLASSES)
    hint = draw(st.none() | st.floats(0, 120))
    if kind == "timeout":
        return ProviderTimeoutError("t", error_class=cls, retry_after=hint)
    if kind == "overflow":
        return ContextOverflowError(
            "o",
            error_class=ErrorClass.CONTEXT_OVERFLOW,
            limit=draw(st.none() | st.integers(0, 200_000)),
            prompt_tokens=draw(st.none() | st.integers(0, 200_000)),
        )
    if kind == "credential":
        return CredentialError("c")
    if kind == "request":
        return RequestError([("x", "y")])
    exc = error(cls, retry_after=hint)
    exc.should_retry = draw(st.none() | st.booleans())
    return exc


class TestProperties:
    @settings(max_examples=300, deadline=None)
    @given(
        exc=errors(),
        tries=st.integers(0, 5),
        last=st.booleans(),
        remaining=st.floats(0, 700),
        draw=st.floats(0, 1, exclude_max=True),
        window=st.none() | st.integers(1, 200_000),
        pinned=st.booleans(),
    )
    def test_pure_and_within_bounds(
        self,
        exc: BaseException,
        tries: int,
        last: bool,
        remaining: float,
        draw: float,
        window: int | None,
        pinned: bool,
    ) -> None:
        """Same inputs, same decision; a retry fits the deadline; only the last or pinned one waits."""
        kw: dict[str, Any] = {
            "tries": tries,
            "last": last,
            "remaining": remaining,
            "random": lambda: draw,
            "context_window": window,
            "pinned": pinned,
        }
        first, second = run(exc, **kw), run(exc, **kw)
        assert first == second
        if first.action == "retry":
            assert first.delay < remaining or first.request is not None
            if first.request is None:  # a same-model retry: the last candidate, or a pinned one
                assert last or (pinned and tries == 0 and first.no_budget == "next")
                assert tries < SETTINGS.max_retries
                assert first.spends_budget
                assert not isinstance(exc, ProviderTimeoutError)
                if not last:
                    assert isinstance(exc, ProviderError)
                    assert exc.error_class in {ErrorClass.TRANSIENT, ErrorClass.PROVIDER_DOWN}
            else:  # the one shrink
                assert (0, 0.0, False) == (tries, first.delay, first.spends_budget)
        if first.action == "next":
            assert not last
        other = run(exc, **(kw | {"pinned": not pinned}))
        if "retry" not in (first.action, other.action) or last:  # the pin changes nothing else
            assert first == other


class TestServerWaitCap:
    @pytest.mark.parametrize("cls", [ErrorClass.RATE_LIMITED, ErrorClass.OVERLOADED])
    def test_a_huge_wait_hint_is_capped_at_max_cooldown(self, cls: ErrorClass) -> None:
        """A Retry-After of 10^22 s cools the model down for max_cooldown, not forever."""
        d = run(error(cls, retry_after=1e22))
        assert (SETTINGS.max_cooldown, "next") == (d.cool_down, d.action)
        small = run(error(cls, retry_after=1e22), settings=FailoverConfig(max_cooldown=5.0))
        assert 5.0 == small.cool_down

    def test_a_credential_block_hint_is_capped_too(self) -> None:
        """A quota failure's huge wait hint disables the key for max_cooldown at most."""
        d = run(error(ErrorClass.QUOTA_EXHAUSTED, retry_after=1e22))
        assert ("quota_exhausted", SETTINGS.max_cooldown) == d.disable_credential

    def test_a_hint_below_the_cap_is_kept(self) -> None:
        """Waits shorter than max_cooldown pass unchanged."""
        assert 20.0 == run(error(ErrorClass.RATE_LIMITED, retry_after=20.0)).cool_down
