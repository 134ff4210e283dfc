"""Server wait hints read from rate-limit headers and error messages, and error events' statuses.

Every function here is pure: the current time is passed in, nothing raises on
malformed input (an unusable value is skipped), and header names are expected
in lower case.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


__all__ = [
    "event_status",
    "parse_go_duration",
    "parse_retry_after",
    "parse_retry_after_text",
    "should_retry_header",
]

_GO_UNITS: dict[str, float] = {  # in nanoseconds, so that "10us" is exactly 1e-05 s
    "ns": 1.0,
    "us": 1e3,
    "\u00b5s": 1e3,  # MICRO SIGN
    "\u03bcs": 1e3,  # GREEK SMALL LETTER MU
    "ms": 1e6,
    "s": 1e9,
    "m": 60e9,
    "h": 3600e9,
}
_NS_PER_SECOND = 1e9
_GO_PART = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
_GO_DURATION = re.compile(rf"\+?(?:{_GO_PART})+")
_GO_TOKEN = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_UNIX_TIMESTAMP_MIN = 1e9
"""A bare reset value above this is a UNIX timestamp, not a number of seconds."""

_TEXT_HINT = re.compile(
    r"(?:try\s+again|retry)\s+(?:in|after)\s+(?:"
    rf"((?:{_GO_PART})+)"
    r"|([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*"
    r"(milliseconds?|msecs?|seconds?|secs?|minutes?|mins?|hours?|hrs?)"
    r")\b",
    re.IGNORECASE,
)
_TEXT_UNITS: dict[str, float] = {  # in milliseconds
    "millisecond": 1.0,
    "milliseconds": 1.0,
    "msec": 1.0,
    "msecs": 1.0,
    "second": 1e3,
    "seconds": 1e3,
    "sec": 1e3,
    "secs": 1e3,
    "minute": 60e3,
    "minutes": 60e3,
    "min": 60e3,
    "mins": 60e3,
    "hour": 3600e3,
    "hours": 3600e3,
    "hr": 3600e3,
    "hrs": 3600e3,
}

# Error words seen in the ``type`` or ``code`` of error events sent inside a 200 response
# (OpenAI, Anthropic, and gateways relaying Bedrock or Azure), and the HTTP status they mean.
_EVENT_WORDS: dict[str, int] = {
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "rate_limited": 429,
    "throttling_error": 429,
    "throttlingexception": 429,
    "throttled": 429,
    "too_many_requests": 429,
    "insufficient_quota": 429,
    "overloaded_error": 503,
    "overloaded": 503,
    "service_unavailable": 503,
    "serviceunavailableexception": 503,
    "server_error": 500,
    "api_error": 500,
    "internal_error": 500,
    "internal_server_error": 500,
    "timeout_error": 408,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "permission_denied": 403,
    "billing_error": 402,
}

_OPENAI_BUCKETS = ("requests", "tokens")
_ANTHROPIC_BUCKETS = ("requests", "tokens", "input-tokens", "output-tokens")


def parse_go_duration(value: str) -> float | None:
    """Parse a Go ``time.Duration`` string (``"1h2m3.5s"``, ``"250us"``) into seconds.

    Units are ``ns``, ``us``/``µs``, ``ms``, ``s``, ``m`` and ``h``; a bare
    ``"0"`` is zero. Returns ``None`` for garbage, empty or negative values.
    """
    text = value.strip()
    if text == "0":
        return 0.0
    if not _GO_DURATION.fullmatch(text):
        return None
    total = 0.0
    for number, unit in _GO_TOKEN.findall(text):
        total += float(number) * _GO_UNITS[unit]
    seconds = total / _NS_PER_SECOND
    return seconds if math.isfinite(seconds) else None


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Return the seconds (≥ 0) the server asks to wait, or ``None`` if no header says.

    *now* is the current UNIX time. The first usable source wins:

    1. ``retry-after-ms`` (milliseconds);
    2. ``retry-after``: delta-seconds or an HTTP-date;
    3. OpenAI's ``x-ratelimit-reset-{requests,tokens}`` (Go durations, or UNIX
       timestamps when a bare number above 1e9): the longest reset among the
       buckets whose ``x-ratelimit-remaining-*`` header is ``0`` or absent;
    4. Anthropic's ``anthropic-ratelimit-<bucket>-reset`` (RFC 3339): the
       latest reset among the buckets whose ``-remaining`` header is ``0``, or
       among all buckets when no ``-remaining`` header is usable.
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        ms = _parse_number(value)
        if ms is not None:
            return ms / 1000.0
    value = headers.get("retry-after")
    if value is not None:
        wait = _parse_retry_after_value(value, now)
        if wait is not None:
            return wait
    wait = _openai_reset(headers, now)
    if wait is not None:
        return wait
    return _anthropic_reset(headers, now)


def parse_retry_after_text(message: str) -> float | None:
    """Read a wait hint from an error message, e.g. OpenAI's "Please try again in 644ms.".

    Understands Go durations (``"1.5s"``, ``"6m0s"``) and spelled-out units
    (``"20 seconds"``, ``"1 minute"``) after "try again in" or "retry after".
    Returns seconds, or ``None`` when the message gives no hint.
    """
    match = _TEXT_HINT.search(message)
    if match is None:
        return None
    go, number, unit = match.groups()
    if go is not None:
        return parse_go_duration(go.lower())
    seconds = float(number) * _TEXT_UNITS[unit.lower()] / 1e3
    return seconds if math.isfinite(seconds) else None


def event_status(code: object, kind: object, default: int = 500) -> int:
    """The HTTP status an error event sent inside a 200 response behaves like.

    An error status in ``code`` (``429`` or ``"429"``) wins, then a known word in
    ``kind`` (``"rate_limit_error"``, ``"throttling_error"``, ``"overloaded_error"``,
    ...), then one in ``code``; else ``default``.
    """
    if code.__class__ is int and 400 <= code < 600:
        return code
    if isinstance(code, str) and len(code) == 3 and code.isdigit() and "400" <= code < "600":
        return int(code)
    for word in (kind, code):
        if isinstance(word, str):
            status = _EVENT_WORDS.get(word.lower())
            if status is not None:
                return status
    return default


def should_retry_header(headers: Mapping[str, str]) -> bool | None:
    """Return the server's ``x-should-retry`` verdict, or ``None`` if absent or unclear."""
    value = headers.get("x-should-retry")
    if value is None:
        return None
    value = value.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def _parse_number(value: str) -> float | None:
    """Parse a non-negative decimal number (no sign, exponent, inf or nan)."""
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _timestamp(moment: datetime) -> float | None:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _parse_retry_after_value(value: str, now: float) -> float | None:
    seconds = _parse_number(value)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    when = _timestamp(moment)
    return None if when is None else max(0.0, when - now)


def _parse_reset(value: str, now: float) -> float | None:
    """Parse an OpenAI-style reset: a Go duration, seconds, or a UNIX timestamp."""
    number = _parse_number(value)
    if number is None:
        return parse_go_duration(value)
    if number > _UNIX_TIMESTAMP_MIN:
        return max(0.0, number - now)
    return number


def _parse_rfc3339(value: str, now: float) -> float | None:
    try:
        moment = datetime.fromisoformat(value.strip().upper())
    except ValueError:
        return None
    when = _timestamp(moment)
    return None if when is None else max(0.0, when - now)


def _is_exhausted(value: str) -> bool | None:
    """Whether a ``remaining`` header says 0; ``None`` if it is unparseable."""
    number = _parse_number(value)
    return None if number is None else number == 0


def _latest(waits: Iterable[float | None]) -> float | None:
    usable = [wait for wait in waits if wait is not None]
    return max(usable) if usable else None


def _openai_reset(headers: Mapping[str, str], now: float) -> float | None:
    waits: list[float | None] = []
    for bucket in _OPENAI_BUCKETS:
        reset = headers.get(f"x-ratelimit-reset-{bucket}")
        if reset is None:
            continue
        remaining = headers.get(f"x-ratelimit-remaining-{bucket}")
        if remaining is not None and _is_exhausted(remaining) is False:
            continue
        waits.append(_parse_reset(reset, now))
    return _latest(waits)


def _anthropic_reset(headers: Mapping[str, str], now: float) -> float | None:
    exhausted: list[float | None] = []
    every: list[float | None] = []
    any_remaining = False
    for bucket in _ANTHROPIC_BUCKETS:
        prefix = f"anthropic-ratelimit-{bucket}-"
        remaining = headers.get(prefix + "remaining")
        state = None if remaining is None else _is_exhausted(remaining)
        if state is not None:
            any_remaining = True
        reset = headers.get(prefix + "reset")
        if reset is None:
            continue
        wait = _parse_rfc3339(reset, now)
        every.append(wait)
        if state:
            exhausted.append(wait)
    return _latest(exhausted if any_remaining else every)
