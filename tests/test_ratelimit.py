"""Tests for the rate-limit header and message parsers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenhub._ratelimit import (
    event_status,
    parse_go_duration,
    parse_retry_after,
    parse_retry_after_text,
    should_retry_header,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
HTTP_DATE_IN_30S = "Tue, 14 Nov 2023 22:13:50 GMT"
RFC3339_IN_30S = "2023-11-14T22:13:50Z"


def wait(headers: dict[str, str]) -> float | None:
    return parse_retry_after(headers, now=NOW)


class TestGoDuration:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("1s", 1.0),
            ("12ms", 0.012),
            ("6m0s", 360.0),
            ("1h2m3.5s", 3723.5),
            ("250us", 0.00025),
            ("10\u00b5s", 1e-05),
            ("10\u03bcs", 1e-05),
            ("5ns", 5e-09),
            ("0.5s", 0.5),
            (".5s", 0.5),
            ("1.s", 1.0),
            ("0", 0.0),
            ("0s", 0.0),
            ("1.5h", 5400.0),
            ("2m59.56s", 179.56),
            ("1m1ms", 60.001),
            ("+2s", 2.0),
            (" 3s ", 3.0),
        ],
    )
    def test_table(self, text: str, expected: float) -> None:
        """Go duration strings convert to seconds."""
        actual = parse_go_duration(text)
        assert actual is not None
        assert math.isclose(expected, actual, rel_tol=1e-12)

    @pytest.mark.parametrize(
        "text",
        [
            *("", " ", "-1s", "-0.5s", "1", "1.5", "s", "ms", "1x", "1S", "1e3s", "5m 3s"),
            *("1s-", ".s", "nan", "infs", "1..2s", "1 s", "one second", "1s1", "\u0661s"),
        ],
    )
    def test_garbage(self, text: str) -> None:
        """Garbage, empty and negative durations give None."""
        assert parse_go_duration(text) is None

    @given(
        parts=st.lists(
            st.tuples(st.sampled_from(["h", "m", "s", "ms"]), st.integers(0, 10_000)),
            min_size=1,
            max_size=4,
        ),
        fraction=st.none() | st.integers(0, 999),
    )
    def test_round_trip(self, parts: list[tuple[str, int]], fraction: int | None) -> None:
        """A formatted compound of h/m/s/ms parses back to its sum."""
        factor = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        text = "".join(f"{number}{unit}" for unit, number in parts)
        expected = sum(number * factor[unit] for unit, number in parts)
        if fraction is not None:
            text += f"1.{fraction:03d}s"
            expected += 1 + fraction / 1000
        actual = parse_go_duration(text)
        assert actual is not None
        assert math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)


class TestRetryAfterMs:
    @pytest.mark.parametrize(("value", "expected"), [("1500", 1.5), ("250.5", 0.2505), ("0", 0.0)])
    def test_milliseconds(self, value: str, expected: float) -> None:
        """retry-after-ms is read as milliseconds."""
        assert expected == wait({"retry-after-ms": value})

    def test_wins_over_retry_after(self) -> None:
        """retry-after-ms takes precedence over retry-after."""
        assert 0.1 == wait({"retry-after-ms": "100", "retry-after": "5"})

    @pytest.mark.parametrize("value", ["", "soon", "-5", "nan", "inf", "1e3", "9" * 400])
    def test_unusable_falls_through(self, value: str) -> None:
        """An unusable retry-after-ms gives way to retry-after."""
        assert 5.0 == wait({"retry-after-ms": value, "retry-after": "5"})


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"), [("2", 2.0), ("1.5", 1.5), ("0", 0.0), (" 7 ", 7.0)]
    )
    def test_delta_seconds(self, value: str, expected: float) -> None:
        """Delta-seconds, integer or decimal, are returned as is."""
        assert expected == wait({"retry-after": value})

    def test_http_date(self) -> None:
        """An HTTP-date is converted relative to the injected now."""
        assert 30.0 == wait({"retry-after": HTTP_DATE_IN_30S})

    def test_http_date_example(self) -> None:
        """The RFC example date is understood."""
        headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
        assert 60.0 == parse_retry_after(headers, now=1445412420.0)

    def test_http_date_in_the_past_clamps_to_zero(self) -> None:
        """A date already past means no wait."""
        assert 0.0 == parse_retry_after({"retry-after": HTTP_DATE_IN_30S}, now=NOW + 3600)

    def test_http_date_without_zone_is_utc(self) -> None:
        """An HTTP-date with a -0000 zone is taken as UTC."""
        assert 30.0 == wait({"retry-after": "Tue, 14 Nov 2023 22:13:50 -0000"})

    @pytest.mark.parametrize(
        "value", ["", "soon", "-1", "1e3", "Tue, 99 Nov 2023 22:13:50 GMT", "Wed, 21 Oct"]
    )
    def test_garbage_falls_through(self, value: str) -> None:
        """An unusable retry-after gives way to the reset headers."""
        headers = {"retry-after": value, "x-ratelimit-reset-requests": "3s"}
        assert 3.0 == wait(headers)

    def test_garbage_alone_gives_none(self) -> None:
        """Only garbage means no hint."""
        assert wait({"retry-after": "whenever"}) is None


class TestOpenAIReset:
    def test_exhausted_bucket(self) -> None:
        """The reset of the bucket whose remaining is 0 is used."""
        headers = {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-remaining-tokens": "9000",
            "x-ratelimit-reset-tokens": "6m0s",
        }
        assert 0.012 == wait(headers)

    def test_other_exhausted_bucket(self) -> None:
        """Tokens exhausted: the tokens reset is used."""
        headers = {
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "1m30s",
        }
        assert 90.0 == wait(headers)

    def test_both_exhausted_takes_max(self) -> None:
        """Both buckets at 0: wait for the later reset."""
        headers = {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "2s",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "500ms",
        }
        assert 2.0 == wait(headers)

    def test_no_bucket_exhausted(self) -> None:
        """Remaining budget in every bucket: no hint."""
        headers = {
            "x-ratelimit-remaining-requests": "1",
            "x-ratelimit-reset-requests": "2s",
            "x-ratelimit-remaining-tokens": "100",
            "x-ratelimit-reset-tokens": "5s",
        }
        assert wait(headers) is None

    def test_no_remaining_headers_takes_max(self) -> None:
        """Without remaining headers the longest reset is used."""
        headers = {"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "1m"}
        assert 60.0 == wait(headers)

    def test_bucket_without_remaining_header_counts(self) -> None:
        """A bucket whose remaining header is absent is not ruled out."""
        headers = {
            "x-ratelimit-remaining-requests": "10",
            "x-ratelimit-reset-requests": "2s",
            "x-ratelimit-reset-tokens": "4s",
        }
        assert 4.0 == wait(headers)

    def test_unix_timestamp(self) -> None:
        """A bare number above 1e9 is a UNIX timestamp."""
        assert 30.0 == wait({"x-ratelimit-reset-requests": str(int(NOW) + 30)})

    def test_unix_timestamp_in_the_past(self) -> None:
        """A past timestamp clamps to zero."""
        assert 0.0 == wait({"x-ratelimit-reset-requests": str(NOW - 30)})

    def test_bare_small_number_is_seconds(self) -> None:
        """A bare small number is taken as seconds."""
        assert 20.0 == wait({"x-ratelimit-reset-tokens": "20"})

    def test_unparseable_reset_skipped(self) -> None:
        """A garbage reset is skipped, the other bucket still counts."""
        headers = {"x-ratelimit-reset-requests": "later", "x-ratelimit-reset-tokens": "3s"}
        assert 3.0 == wait(headers)

    def test_unparseable_remaining_is_ignored(self) -> None:
        """A garbage remaining header is treated as absent."""
        headers = {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "3s"}
        assert 3.0 == wait(headers)

    def test_remaining_zero_written_as_decimal(self) -> None:
        """A remaining of 0.0 is exhausted too."""
        headers = {"x-ratelimit-remaining-tokens": "0.0", "x-ratelimit-reset-tokens": "3s"}
        assert 3.0 == wait(headers)


class TestAnthropicReset:
    def test_exhausted_bucket(self) -> None:
        """The reset of the bucket at 0 is used, relative to now."""
        headers = {
            "anthropic-ratelimit-requests-remaining": "10",
            "anthropic-ratelimit-requests-reset": "2023-11-14T22:14:20Z",
            "anthropic-ratelimit-tokens-remaining": "0",
            "anthropic-ratelimit-tokens-reset": RFC3339_IN_30S,
        }
        assert 30.0 == wait(headers)

    @pytest.mark.parametrize("bucket", ["requests", "tokens", "input-tokens", "output-tokens"])
    def test_every_bucket(self, bucket: str) -> None:
        """Each Anthropic bucket is considered."""
        headers = {
            f"anthropic-ratelimit-{bucket}-remaining": "0",
            f"anthropic-ratelimit-{bucket}-reset": RFC3339_IN_30S,
        }
        assert 30.0 == wait(headers)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2023-11-14T22:13:50.5Z", 30.5),
            ("2023-11-14T22:13:50.123456789Z", 30.123456),
            ("2023-11-14T23:13:50+01:00", 30.0),
            ("2023-11-14T21:13:50-01:00", 30.0),
            ("2023-11-14t22:13:50z", 30.0),
            ("2023-11-14T22:13:50", 30.0),
        ],
    )
    def test_rfc3339_forms(self, value: str, expected: float) -> None:
        """Fractional seconds and offsets are understood; a naive time is UTC."""
        actual = wait({"anthropic-ratelimit-requests-reset": value})
        assert actual is not None
        assert math.isclose(expected, actual, abs_tol=1e-6)

    def test_none_exhausted(self) -> None:
        """No bucket at 0: no hint."""
        headers = {
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-requests-reset": RFC3339_IN_30S,
            "anthropic-ratelimit-tokens-remaining": "100",
            "anthropic-ratelimit-tokens-reset": RFC3339_IN_30S,
        }
        assert wait(headers) is None

    def test_bucket_without_remaining_ignored_when_others_have_one(self) -> None:
        """With remaining headers present, only buckets at 0 count."""
        headers = {
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-tokens-reset": RFC3339_IN_30S,
        }
        assert wait(headers) is None

    def test_several_exhausted_takes_max(self) -> None:
        """Several buckets at 0: wait for the latest reset."""
        headers = {
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": RFC3339_IN_30S,
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:14:20Z",
        }
        assert 60.0 == wait(headers)

    def test_no_remaining_headers_takes_max(self) -> None:
        """Without remaining headers the latest reset is used."""
        headers = {
            "anthropic-ratelimit-requests-reset": RFC3339_IN_30S,
            "anthropic-ratelimit-tokens-reset": "2023-11-14T22:14:20Z",
        }
        assert 60.0 == wait(headers)

    def test_past_reset_clamps_to_zero(self) -> None:
        """A reset already past means no wait."""
        headers = {"anthropic-ratelimit-tokens-reset": "2023-11-14T22:00:00Z"}
        assert 0.0 == wait(headers)

    @pytest.mark.parametrize("value", ["", "soon", "2023-13-45T99:00:00Z", "1700000030"])
    def test_garbage_reset_skipped(self, value: str) -> None:
        """An unparseable reset is skipped."""
        headers = {
            "anthropic-ratelimit-requests-reset": value,
            "anthropic-ratelimit-tokens-reset": RFC3339_IN_30S,
        }
        assert 30.0 == wait(headers)


class TestPrecedence:
    HEADERS: dict[str, str] = {
        "retry-after-ms": "100",
        "retry-after": "2",
        "x-ratelimit-reset-requests": "3s",
        "anthropic-ratelimit-requests-reset": RFC3339_IN_30S,
    }
    ORDER = ("retry-after-ms", "retry-after", "x-ratelimit-reset-requests")

    def test_order(self) -> None:
        """Sources are tried in order, dropping the winner each time."""
        headers = dict(self.HEADERS)
        seen: list[float | None] = []
        for name in self.ORDER:
            seen.append(wait(headers))
            del headers[name]
        seen.append(wait(headers))
        assert [0.1, 2.0, 3.0, 30.0] == seen

    def test_openai_no_hint_falls_to_anthropic(self) -> None:
        """An OpenAI bucket with budget left yields to the Anthropic headers."""
        headers = {
            "x-ratelimit-remaining-requests": "5",
            "x-ratelimit-reset-requests": "3s",
            "anthropic-ratelimit-requests-reset": RFC3339_IN_30S,
        }
        assert 30.0 == wait(headers)

    def test_no_headers(self) -> None:
        """No rate-limit header: no hint."""
        assert wait({"content-type": "application/json"}) is None

    def test_non_negative(self) -> None:
        """Every source yields a wait of at least zero."""
        headers = {"x-ratelimit-reset-requests": str(NOW - 1e6)}
        assert 0.0 == wait(headers)


class TestRetryAfterText:
    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            ("Please try again in 644ms.", 0.644),
            ("Please try again in 1.5s.", 1.5),
            ("Please try again in 6m0s. Visit https://platform.openai.com", 360.0),
            ("Please try again in 20 seconds.", 20.0),
            ("Please retry after 20 seconds.", 20.0),
            ("Try again in 1 second", 1.0),
            ("try again in 2 minutes", 120.0),
            ("try again in 1 hour", 3600.0),
            ("try again in 250 milliseconds", 0.25),
            ("try again in 20sec", 20.0),
            ("Try Again In 3MS", 0.003),
        ],
    )
    def test_hints(self, message: str, expected: float) -> None:
        """Waits phrased by OpenAI and others are read."""
        actual = parse_retry_after_text(message)
        assert actual is not None
        assert math.isclose(expected, actual)

    def test_full_openai_message(self) -> None:
        """The hint is found inside a full OpenAI error message."""
        message = (
            "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): "
            "Limit 30000, Used 29500, Requested 1200. Please try again in 1.4s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        assert 1.4 == parse_retry_after_text(message)

    @pytest.mark.parametrize(
        "message",
        ["", "Rate limit reached", "try again later", "try again in a moment", "in 5s"],
    )
    def test_no_hint(self, message: str) -> None:
        """Messages without a wait give None."""
        assert parse_retry_after_text(message) is None


class TestShouldRetry:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("true", True), ("false", False), ("True", True), (" FALSE ", False)],
    )
    def test_values(self, value: str, expected: bool) -> None:
        """The values true and false map to booleans, case-insensitively."""
        assert expected == should_retry_header({"x-should-retry": value})

    @pytest.mark.parametrize("headers", [{}, {"x-should-retry": "maybe"}, {"x-should-retry": ""}])
    def test_absent_or_unclear(self, headers: dict[str, str]) -> None:
        """Anything else is no verdict."""
        assert should_retry_header(headers) is None


class TestEventStatus:
    @pytest.mark.parametrize(
        ("code", "kind", "expected"),
        [
            (429, None, 429),
            ("429", None, 429),
            ("503", "server_error", 503),
            (None, "throttling_error", 429),
            (None, "ThrottlingException", 429),
            ("rate_limit_exceeded", "requests", 429),
            (None, "overloaded_error", 503),
            (None, "authentication_error", 401),
            (None, "server_error", 500),
            (None, None, 500),
            ("4290", None, 500),
            (200, None, 500),
            (True, None, 500),
            ("abc", "mystery", 500),
            (["429"], {"x": 1}, 500),
        ],
    )
    def test_status_of_an_in_stream_error(self, code: object, kind: object, expected: int) -> None:
        """An error status in code wins, then a known word in type, then one in code; else 500."""
        assert expected == event_status(code, kind)

    @given(st.one_of(st.none(), st.integers(), st.text(max_size=8)), st.text(max_size=8))
    def test_never_raises(self, code: object, kind: str) -> None:
        """Any code and type give a status between 400 and 599."""
        assert 400 <= event_status(code, kind) < 600
