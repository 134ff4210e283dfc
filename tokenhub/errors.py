"""Every error tokenhub raises, rooted at :class:`TokenhubError`.

The tree::

    TokenhubError
    ├── ConfigError (ValueError)            the config dict is wrong; lists every bad path
    ├── RequestError (ValueError)           the request envelope is wrong; raised before any I/O
    ├── ModelNotFoundError (LookupError)    ``model=`` names no configured model or alias
    ├── NoRouteError (LookupError)          every candidate was excluded; says why for each
    ├── CredentialError                     a provider's key cannot be resolved (env var unset)
    │   └── VaultLockedError                the key is in the vault, and the vault is locked
    ├── VaultError                          the credential vault refused an operation
    │   ├── VaultLockedError                (also a CredentialError)
    │   ├── VaultUnlockError                wrong password (one message, whatever failed)
    │   └── VaultCorruptedError             a stored row failed authentication: tampered or moved
    ├── StoreError                          the SQLite store cannot be opened or used
    │   └── StoreBusyError                  another connection holds the write lock
    ├── BudgetExceededError                 a spend limit would be exceeded; nothing was sent
    ├── HubClosedError                      the Hub was closed (``aclose``); nothing was sent
    ├── TransportError                      an HTTP client failed below HTTP; adapters map it
    └── ProviderError                       a provider call failed; ``error_class`` says how
        ├── RateLimitError                  rate_limited, request_too_large_for_limit
        ├── QuotaExhaustedError             quota_exhausted (out of credit; not retryable)
        ├── AuthenticationError             auth (401/403)
        ├── ContextOverflowError            context_overflow (prompt + output too long)
        ├── ContentPolicyError              content_policy
        ├── InvalidRequestError (ValueError)  invalid_request (the provider rejected the request)
        ├── ProviderUnavailableError        overloaded, transient, provider_down
        │   └── ProviderTimeoutError (TimeoutError)
        └── StreamInterrupted               a stream broke after its first chunk was delivered

Messages are sanitised: provider error bodies are parsed, truncated and never
chained as raw bodies, and no credential ever appears in an error's text.
Errors pickle with all their fields.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tokenhub._models import RouteTrace, ToolCall, Usage


__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigError",
    "ContentPolicyError",
    "ContextOverflowError",
    "CredentialError",
    "ErrorClass",
    "HubClosedError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NoRouteError",
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "QuotaExhaustedError",
    "RateLimitError",
    "RequestError",
    "StoreBusyError",
    "StoreError",
    "StreamInterrupted",
    "TokenhubError",
    "TransportError",
    "VaultCorruptedError",
    "VaultError",
    "VaultLockedError",
    "VaultUnlockError",
    "error_type_for",
]


class ErrorClass(enum.StrEnum):
    """How a provider failure is classified; the failover engine acts on it."""

    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    TRANSIENT = "transient"
    QUOTA_EXHAUSTED = "quota_exhausted"
    AUTH = "auth"
    CONTEXT_OVERFLOW = "context_overflow"
    REQUEST_TOO_LARGE_FOR_LIMIT = "request_too_large_for_limit"
    CONTENT_POLICY = "content_policy"
    INVALID_REQUEST = "invalid_request"
    PROVIDER_DOWN = "provider_down"
    STREAM_INTERRUPTED = "stream_interrupted"

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if sent again to the same model."""
        return self in _RETRYABLE

    @property
    def counts_against_health(self) -> bool:
        """Whether this failure says something about the provider, not the request."""
        return self in _HEALTH


_RETRYABLE = frozenset(
    {
        ErrorClass.RATE_LIMITED,
        ErrorClass.OVERLOADED,
        ErrorClass.TRANSIENT,
        ErrorClass.PROVIDER_DOWN,
    }
)
_HEALTH = frozenset(
    {
        ErrorClass.OVERLOADED,
        ErrorClass.TRANSIENT,
        ErrorClass.PROVIDER_DOWN,
        ErrorClass.STREAM_INTERRUPTED,
    }
)


class TokenhubError(Exception):
    """The root of every error tokenhub raises."""


class ConfigError(TokenhubError, ValueError):
    """The configuration is invalid.

    ``errors`` holds one ``(path, reason)`` pair per problem, e.g.
    ``("models.gpt-4o-mini.pricing.input", "expected a number, got 'cheap'")``.
    """

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors: tuple[tuple[str, str], ...] = tuple(errors)
        lines = "\n".join(f"  {path}: {reason}" for path, reason in self.errors)
        n = len(self.errors)
        super().__init__(f"invalid configuration ({n} error{'s' if n != 1 else ''}):\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


class RequestError(TokenhubError, ValueError):
    """The request envelope is invalid; raised before anything is sent.

    ``errors`` holds ``(path, reason)`` pairs, e.g. ``("messages[2].role", "unknown role 'bot'")``.
    """

    #: The route trace when no candidate's adapter could express the request.
    trace: RouteTrace | None = None

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors: tuple[tuple[str, str], ...] = tuple(errors)
        lines = "; ".join(f"{path}: {reason}" if path else reason for path, reason in self.errors)
        super().__init__(f"invalid request: {lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


class ModelNotFoundError(TokenhubError, LookupError):
    """The requested model is not configured."""

    def __init__(self, model: str, known: Sequence[str] = ()) -> None:
        self.model = model
        self.known = tuple(known)
        hint = f"; known: {', '.join(sorted(self.known))}" if self.known else ""
        super().__init__(f"unknown model {model!r}{hint}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.model, self.known))


class NoRouteError(TokenhubError, LookupError):
    """No model satisfies the request's constraints.

    ``excluded`` holds one ``(model, reason)`` pair per model that was considered.
    """

    def __init__(
        self, excluded: Sequence[tuple[str, str]], *, request_id: str | None = None
    ) -> None:
        self.excluded: tuple[tuple[str, str], ...] = tuple(excluded)
        self.request_id = request_id
        reasons = "".join(f"\n  {model}: {reason}" for model, reason in self.excluded)
        super().__init__(f"no model fits this request:{reasons or ' no models are configured'}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_no_route, (self.excluded, self.request_id))


def _rebuild_no_route(
    excluded: tuple[tuple[str, str], ...], request_id: str | None
) -> NoRouteError:
    return NoRouteError(excluded, request_id=request_id)


class CredentialError(TokenhubError):
    """A provider's credential could not be resolved (the message names where it was looked for)."""

    #: The route trace when the Hub gave up on this error; set by the Hub.
    trace: RouteTrace | None = None


class VaultError(TokenhubError):
    """The credential vault refused an operation."""


class VaultLockedError(VaultError, CredentialError):
    """The operation needs a key from the vault, and the vault is locked."""

    def __init__(self, message: str = "the vault is locked") -> None:
        super().__init__(message)


class VaultUnlockError(VaultError):
    """The vault could not be unlocked: the wrapped data key did not open with this password.

    That means a wrong password, or a key row forged with a matching checksum
    (accidental damage is reported as :class:`VaultCorruptedError`). The message
    is the same in every case, so it tells an attacker nothing.
    """

    def __init__(self, message: str = "invalid password or corrupted vault") -> None:
        super().__init__(message)


class VaultCorruptedError(VaultError):
    """A stored vault row failed authentication: it was altered, or moved from elsewhere."""


class StoreError(TokenhubError):
    """The SQLite store cannot be opened or used (the message says why)."""


class StoreBusyError(StoreError):
    """Another connection holds the store's write lock (a write that may not wait)."""


class BudgetExceededError(TokenhubError):
    """A spend limit would be exceeded by this request; it was refused before any I/O.

    ``scope`` is ``global``, ``caller`` or ``model``; ``key`` the caller or model
    (``*`` for global); ``period`` ``day`` or ``month`` (UTC).
    """

    def __init__(
        self,
        *,
        scope: str,
        key: str,
        period: str,
        limit_usd: float,
        spent_usd: float,
        estimate_usd: float = 0.0,
        request_id: str | None = None,
    ) -> None:
        self.scope, self.key, self.period = scope, key, period
        self.limit_usd, self.spent_usd, self.estimate_usd = limit_usd, spent_usd, estimate_usd
        self.request_id = request_id
        who = "all requests" if scope == "global" else f"{scope} {key!r}"
        super().__init__(
            f"the {period} budget of {limit_usd:g} USD for {who} would be exceeded: "
            f"{spent_usd:g} USD spent or reserved, this request estimated at {estimate_usd:g} USD"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_budget, (self.__dict__.copy(),))


def _rebuild_budget(fields: dict[str, Any]) -> BudgetExceededError:
    return BudgetExceededError(**fields)


class HubClosedError(TokenhubError):
    """The Hub was closed (``aclose``): it sends nothing more, and refuses before any I/O."""

    def __init__(self, message: str = "the Hub is closed") -> None:
        super().__init__(message)


class TransportError(TokenhubError):
    """An HTTP client failed below HTTP: no connection, a timeout, or a broken connection.

    Raised by :mod:`tokenhub.http` clients; adapters turn it into a
    :class:`ProviderError` (the built-in ones into :class:`ProviderTimeoutError`
    or the ``provider_down`` type), so a Hub's callers never see it. ``kind`` is
    ``connect`` (nothing was sent), ``timeout``, ``network`` or ``too_large`` (the
    response, or one stream event, is over the client's ``max_response_bytes``); ``detail``
    names the underlying exception type (the limit, for ``too_large``). The message
    never contains URLs, headers or bodies.
    """

    def __init__(
        self, kind: Literal["connect", "timeout", "network", "too_large"], detail: str
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: Literal["connect", "timeout", "network", "too_large"] = kind
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.detail))


class ProviderError(TokenhubError):
    """A provider call failed.

    The message is a sanitised, truncated summary of the provider's reason.
    """

    error_class: ErrorClass

    def __init__(
        self,
        message: str,
        *,
        error_class: ErrorClass,
        provider: str | None = None,
        model: str | None = None,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        upstream_request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error_class
        self.provider = provider
        self.model = model
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id
        self.upstream_request_id = upstream_request_id
        #: The route trace (every attempt) when the Hub gave up; set by the Hub.
        self.trace: RouteTrace | None = None
        #: Usage a stream reported before it failed (what a failed attempt was billed), if any.
        self.usage: Usage | None = None
        #: The provider's own verdict (``x-should-retry``): ``False`` forbids a same-model retry.
        self.should_retry: bool | None = None

    def _fields(self) -> dict[str, Any]:
        return {
            "error_class": self.error_class,
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "code": self.code,
            "retry_after": self.retry_after,
            "request_id": self.request_id,
            "upstream_request_id": self.upstream_request_id,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.message,), self._fields()))

    def __str__(self) -> str:
        where = "/".join(p for p in (self.provider, self.model) if p)
        status = f" {self.status}" if self.status is not None else ""
        prefix = f"[{self.error_class.value}{status}{' ' + where if where else ''}] "
        return prefix + self.message


def _rebuild(cls: type[ProviderError], args: tuple[Any, ...], kw: dict[str, Any]) -> ProviderError:
    return cls(*args, **kw)


class RateLimitError(ProviderError):
    """The provider rate-limited the request; ``retry_after`` is its hint in seconds, if any."""


class QuotaExhaustedError(ProviderError):
    """The credential is out of quota or credit; retrying will not help."""


class AuthenticationError(ProviderError):
    """The provider rejected the credential (401/403)."""


class ContextOverflowError(ProviderError):
    """The prompt plus the requested output does not fit the model's context window.

    ``limit``, ``prompt_tokens`` and ``requested_output_tokens`` are filled when the
    provider's message states them.
    """

    def __init__(
        self,
        message: str,
        *,
        limit: int | None = None,
        prompt_tokens: int | None = None,
        requested_output_tokens: int | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.limit = limit
        self.prompt_tokens = prompt_tokens
        self.requested_output_tokens = requested_output_tokens

    def _fields(self) -> dict[str, Any]:
        return super()._fields() | {
            "limit": self.limit,
            "prompt_tokens": self.prompt_tokens,
            "requested_output_tokens": self.requested_output_tokens,
        }


class ContentPolicyError(ProviderError):
    """The provider refused the request on content-policy grounds."""


class InvalidRequestError(ProviderError, ValueError):
    """The provider rejected the request as invalid (a 400-class error caused by the request)."""


class ProviderUnavailableError(ProviderError):
    """The provider is overloaded, erroring, or unreachable."""


class ProviderTimeoutError(ProviderUnavailableError, TimeoutError):
    """The provider did not answer in time."""


class StreamInterrupted(ProviderError):  # noqa: N818 - the name users look for
    """A stream broke after chunks had been delivered to the caller.

    A truncated answer is never reported as a success: this error carries what
    arrived before the break in ``partial_text``, ``partial_tool_calls`` and
    ``usage`` (``None`` when the provider never reported it).
    """

    def __init__(
        self,
        message: str,
        *,
        partial_text: str = "",
        partial_tool_calls: tuple[ToolCall, ...] = (),
        usage: Usage | None = None,
        **kw: Any,
    ) -> None:
        kw.setdefault("error_class", ErrorClass.STREAM_INTERRUPTED)
        super().__init__(message, **kw)
        self.partial_text = partial_text
        self.partial_tool_calls = partial_tool_calls
        self.usage = usage

    def _fields(self) -> dict[str, Any]:
        return super()._fields() | {
            "partial_text": self.partial_text,
            "partial_tool_calls": self.partial_tool_calls,
            "usage": self.usage,
        }


_BY_CLASS: dict[ErrorClass, type[ProviderError]] = {
    ErrorClass.RATE_LIMITED: RateLimitError,
    ErrorClass.REQUEST_TOO_LARGE_FOR_LIMIT: RateLimitError,
    ErrorClass.QUOTA_EXHAUSTED: QuotaExhaustedError,
    ErrorClass.AUTH: AuthenticationError,
    ErrorClass.CONTEXT_OVERFLOW: ContextOverflowError,
    ErrorClass.CONTENT_POLICY: ContentPolicyError,
    ErrorClass.INVALID_REQUEST: InvalidRequestError,
    ErrorClass.OVERLOADED: ProviderUnavailableError,
    ErrorClass.TRANSIENT: ProviderUnavailableError,
    ErrorClass.PROVIDER_DOWN: ProviderUnavailableError,
    ErrorClass.STREAM_INTERRUPTED: StreamInterrupted,
}


def error_type_for(error_class: ErrorClass) -> type[ProviderError]:
    """Return the exception type raised for ``error_class``."""
    return _BY_CLASS[error_class]
