"""What the built-in HTTP adapters share: URLs, keys, error classification and raising."""

from __future__ import annotations

import itertools
import json
import re
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, ClassVar

from tokenhub._http import HttpResponse
from tokenhub._ratelimit import parse_retry_after, parse_retry_after_text, should_retry_header
from tokenhub._redact import scrub, truncate
from tokenhub._sse import SSEError
from tokenhub._version import __version__
from tokenhub.errors import (
    ConfigError,
    CredentialError,
    ErrorClass,
    ProviderError,
    ProviderTimeoutError,
    TransportError,
    error_type_for,
)
from tokenhub.providers._types import Capabilities, Classification
from tokenhub.providers._wire import detail_message, json_answer_chunks

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from tokenhub._models import ChatResponse, Chunk
    from tokenhub._secret import Secret
    from tokenhub._sse import SSEEvent
    from tokenhub.providers._types import Call, ProviderSettings

__all__ = ["HTTPProvider", "classify_status", "context_numbers", "dumps", "error_envelope"]

_CONTEXT = re.compile(
    r"maximum context length|context length|context window|too long to fit|"
    r"is too long and exceeds|prompt is too long|max_tokens.*too large|input is too long|"
    r"too many tokens",
    re.IGNORECASE,
)
_QUOTA = re.compile(
    r"insufficient_quota|exceeded your current quota|credit balance|billing|spend limit|budget",
    re.IGNORECASE,
)
_NUM = r"(\d[\d,]*)"
#: Compact UTF-8 JSON, as request bodies are sent.
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_USER_AGENT = f"tokenhub/{__version__}"


def _int(s: str) -> int:
    return int(s.replace(",", ""))


def context_numbers(message: str) -> dict[str, int]:
    """Pull the limit, prompt tokens and requested output tokens out of a context-length message."""
    out: dict[str, int] = {}
    patterns = {
        "limit": [
            rf"maximum context length is {_NUM}",
            rf"context length {_NUM}",
            rf"> {_NUM} maximum",
            rf"exceeds limit of {_NUM}",
        ],
        "prompt_tokens": [
            rf"\({_NUM} in the messages",
            rf"messages resulted in {_NUM}",
            rf"prompt contains at least {_NUM}",
            rf"prompt is too long: {_NUM}",
            rf"total length {_NUM}",
            rf"input prompt \({_NUM} tokens\)",
        ],
        "requested_output_tokens": [rf"{_NUM} in the completion", rf"requested {_NUM} output"],
    }
    for key, pats in patterns.items():
        for pat in pats:
            m = re.search(pat, message, re.IGNORECASE)
            if m:
                out[key] = _int(m.group(1))
                break
    return out


def error_envelope(body: bytes) -> tuple[str | None, str | None, str | None]:
    """Parse ``(type, code, message)`` from OpenAI, Anthropic or vLLM error bodies."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    err = data.get("error")
    if isinstance(err, dict):
        data = err
    elif data.get("object") != "error":  # vLLM's older flat shape has object: error
        message = err if isinstance(err, str) else detail_message(data.get("detail"))
        return None, None, message  # a FastAPI-style server sends {"detail": ...}
    kind, code, message = data.get("type"), data.get("code"), data.get("message")
    return (
        kind if isinstance(kind, str) else None,
        str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else None,
    )


def classify_status(
    status: int,
    headers: Mapping[str, str],
    kind: str | None,
    code: str | None,
    message: str,
    *,
    now: float,
) -> Classification:
    """Apply the rules shared by every adapter, after its provider-specific ones."""
    if 300 <= status < 400:
        # Quote neither the body nor Location: they name the target, query string and all.
        return Classification(
            ErrorClass.INVALID_REQUEST,
            f"the provider answered with a redirect (HTTP {status}), which tokenhub does not "
            "follow; check the base URL",
        )
    text = f"{kind or ''} {code or ''} {message}"
    if status == 429:
        if _QUOTA.search(text):
            return Classification(ErrorClass.QUOTA_EXHAUSTED, message, code)
        wait = parse_retry_after(headers, now=now)
        if wait is None:
            wait = parse_retry_after_text(message)
        if message.lower().startswith("request too large"):
            return Classification(ErrorClass.REQUEST_TOO_LARGE_FOR_LIMIT, message, code, wait)
        return Classification(ErrorClass.RATE_LIMITED, message, code, wait)
    if status == 413 or code == "context_length_exceeded" or _CONTEXT.search(message):
        return Classification(
            ErrorClass.CONTEXT_OVERFLOW, message, code, **context_numbers(message)
        )
    if status in (401, 403):
        return Classification(ErrorClass.AUTH, message, code)
    if status == 402 or (400 <= status < 500 and _QUOTA.search(text)):
        return Classification(ErrorClass.QUOTA_EXHAUSTED, message, code)
    if code in ("content_filter", "content_policy_violation"):
        return Classification(ErrorClass.CONTENT_POLICY, message, code)
    if status in (408, 409):
        return Classification(ErrorClass.TRANSIENT, message, code)
    if status in (503, 529):
        return Classification(
            ErrorClass.OVERLOADED, message, code, parse_retry_after(headers, now=now)
        )
    if status >= 500:
        return Classification(ErrorClass.TRANSIENT, message, code)
    return Classification(ErrorClass.INVALID_REQUEST, message, code)


class HTTPProvider:
    """Base of the built-in adapters: round-robin base URLs, per-request keys, error raising."""

    default_base_url: ClassVar[str]
    #: The endpoint path appended to the base URL.
    path: ClassVar[str]
    default_capabilities: ClassVar[Capabilities] = Capabilities()
    #: The ``options`` this adapter accepts: name -> (check, description of valid values).
    option_checks: ClassVar[Mapping[str, tuple[Callable[[Any], bool], str]]] = {}

    def __init__(self, settings: ProviderSettings) -> None:
        checks = self.option_checks
        problems = [
            (f"options.{k}", "unknown key" if k not in checks else f"expected {checks[k][1]}")
            for k, v in settings.options.items()
            if k not in checks or not checks[k][0](v)
        ]
        if problems:
            raise ConfigError(problems)
        self.settings = settings
        self._http = settings.http
        self._bases = tuple(u.rstrip("/") for u in settings.base_urls) or (self.default_base_url,)
        self._next = itertools.cycle(self._bases).__next__

    def capabilities(self, model: str) -> Capabilities:  # noqa: ARG002 - per-kind defaults
        """Return the adapter kind's defaults; a model's configured capabilities override them."""
        return self.default_capabilities

    def _url(self, call: Call) -> str:
        """The endpoint on the next base URL in turn, reported to ``call.observe_url``."""
        url = self._next() + self.path
        if call.observe_url is not None:
            call.observe_url(url)
        return url

    def _auth(self, key: Secret | None) -> dict[str, str]:
        """Return the headers that carry ``key`` (and any fixed protocol headers)."""
        raise NotImplementedError

    def encode(self, call: Call, *, stream: bool) -> dict[str, Any]:
        """Build the request body."""
        raise NotImplementedError

    def decode(self, call: Call, r: HttpResponse, data: Any, key: Secret | None) -> ChatResponse:
        """Turn a 200 response body into a :class:`ChatResponse`."""
        raise NotImplementedError

    def chunks(
        self, call: Call, events: AsyncIterator[SSEEvent], key: Secret | None
    ) -> AsyncGenerator[Chunk]:
        """Translate the SSE events of a 200 stream into chunks."""
        raise NotImplementedError

    async def send(self, call: Call) -> ChatResponse:
        """Send a non-streaming request; the key is resolved now and used once.

        Errors are raised outside the ``except`` blocks that caught their cause, so that no
        ``__context__`` leads to the HTTP library's exception or the frames that held the
        request's headers.
        """
        key = self.settings.key()
        payload = dumps(self.encode(call, stream=False)).encode()
        try:
            # The headers are built inline: no local holds the plaintext key when we raise.
            r = await self._http.post_json(
                self._url(call), self._headers(call, self._auth(key)), payload
            )
        except TransportError as exc:
            error: ProviderError | None = self._transport_error(call, exc)
        else:
            error = None
        if error is not None:
            raise error
        if call.observe is not None:
            call.observe(r.headers)
        if r.status != 200:
            raise self._http_error(call, r, key)
        try:
            return self.decode(call, r, json.loads(r.body), key)
        except ProviderError as exc:
            failure = exc
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
            failure = self._bad_body(call, r)
        raise failure

    async def stream(self, call: Call) -> AsyncGenerator[Chunk]:
        """Send a streaming request and yield its chunks (no wait outlasts ``call.deadline``)."""
        key = self.settings.key()
        payload = dumps(self.encode(call, stream=True)).encode()
        try:
            async with self._http.post_stream(
                self._url(call), self._headers(call, self._auth(key)), payload
            ) as s:
                if call.observe is not None:
                    call.observe(s.headers)
                if s.status != 200:
                    body = await s.read()
                    raise self._http_error(call, HttpResponse(s.status, s.headers, body), key)
                if s.headers.get("content-type", "").startswith("application/json"):
                    r = HttpResponse(s.status, s.headers, await s.read())  # stream ignored
                    for chunk in json_answer_chunks(call, r, key, self.decode):
                        yield chunk
                    return
                async with (
                    aclosing(s.events(call.deadline)) as events,
                    aclosing(self.chunks(call, events, key)) as chunks,
                ):
                    async for chunk in chunks:
                        yield chunk
        except TransportError as exc:
            error = self._transport_error(call, exc)
        except SSEError:
            error = self._stream_broken(call, "the provider sent an oversized stream event")
        else:
            return
        raise error

    async def aclose(self) -> None:
        """Close the HTTP pool."""
        await self._http.aclose()

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Classification:
        """Classify an error response (not part of the :class:`Provider` protocol)."""
        kind, code, message = error_envelope(body)
        return classify_status(
            status, headers, kind, code, message or f"HTTP {status}", now=self.settings.clock()
        )

    def _error(
        self,
        call: Call,
        c: Classification,
        key: Secret | None,
        *,
        status: int | None = None,
        upstream_request_id: str | None = None,
    ) -> ProviderError:
        cls = error_type_for(c.error_class)
        extra: dict[str, Any] = {}
        if c.error_class is ErrorClass.CONTEXT_OVERFLOW:
            extra = {
                "limit": c.limit,
                "prompt_tokens": c.prompt_tokens,
                "requested_output_tokens": c.requested_output_tokens,
            }
        return cls(
            truncate(scrub(c.message, (key,) if key else ())),
            error_class=c.error_class,
            provider=call.provider,
            model=call.model,
            status=status,
            code=c.code,
            retry_after=c.retry_after,
            request_id=call.request_id,
            upstream_request_id=upstream_request_id,
            **extra,
        )

    def _http_error(self, call: Call, r: HttpResponse, key: Secret | None) -> ProviderError:
        error = self._error(
            call,
            self.classify(r.status, r.headers, r.body),
            key,
            status=r.status,
            upstream_request_id=self._upstream_request_id(r.headers),
        )
        error.should_retry = should_retry_header(r.headers)
        return error

    def _transport_error(self, call: Call, exc: TransportError) -> ProviderError:
        if exc.kind == "too_large":
            return self._stream_broken(
                call,
                f"the provider's response is larger than {exc.detail} bytes "
                "(the provider's max_response_bytes)",
            )
        cls = (
            ProviderTimeoutError
            if exc.kind == "timeout"
            else error_type_for(ErrorClass.PROVIDER_DOWN)
        )
        return cls(
            f"{exc.kind} error talking to the provider ({exc.detail})",
            error_class=ErrorClass.PROVIDER_DOWN,
            provider=call.provider,
            model=call.model,
            request_id=call.request_id,
        )

    def _stream_broken(self, call: Call, why: str) -> ProviderError:
        """Report a stream that broke after its headers (transient until the caller got chunks)."""
        return error_type_for(ErrorClass.TRANSIENT)(
            why,
            error_class=ErrorClass.TRANSIENT,
            provider=call.provider,
            model=call.model,
            request_id=call.request_id,
        )

    def _bad_body(self, call: Call, r: HttpResponse) -> ProviderError:
        return self._error(
            call,
            Classification(ErrorClass.TRANSIENT, "the provider sent an unreadable response body"),
            None,
            status=r.status,
            upstream_request_id=self._upstream_request_id(r.headers),
        )

    @staticmethod
    def _upstream_request_id(headers: Mapping[str, str]) -> str | None:
        return headers.get("x-request-id") or headers.get("request-id")

    def _headers(self, call: Call, auth: Mapping[str, str]) -> dict[str, str]:
        h = {
            "content-type": "application/json",
            "user-agent": _USER_AGENT,
            "x-request-id": call.request_id,
        }
        h.update(self.settings.headers)
        h.update(call.headers)
        for value in auth.values():
            # A key HTTP cannot carry (non-ASCII, a newline from a secret mount) would fail
            # deep inside the HTTP library, with the key in the exception and frame locals.
            if not (value.isascii() and value.isprintable()):
                break
        else:
            h.update(auth)
            return h
        del auth, value
        raise CredentialError(
            f"the API key of provider {call.provider!r} cannot be sent in an HTTP header: it "
            "holds a non-ASCII or control character (a trailing newline?)"
        )
