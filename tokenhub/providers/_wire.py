"""What the built-in adapters check in what an upstream sends: counts, shapes, JSON for streams.

An upstream is not trusted: a usage count must be a plain non-negative integer
below :data:`MAX_TOKEN_COUNT` to be believed, and a success body must have the
shape of an answer (:func:`malformed` says what is missing, quoting no value).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from tokenhub._models import ToolCallDelta
from tokenhub._redact import get_logger
from tokenhub.errors import ErrorClass, ProviderError, error_type_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from tokenhub._http import HttpResponse
    from tokenhub._models import ChatResponse, Chunk
    from tokenhub._secret import Secret
    from tokenhub.providers._types import Call

__all__ = [
    "MALFORMED",
    "MAX_TOKEN_COUNT",
    "detail_message",
    "json_answer_chunks",
    "malformed",
    "token_count",
    "unbelievable_usage",
]

#: A usage count at or above this is not believed (no request comes near a billion tokens).
MAX_TOKEN_COUNT = 10**9
#: The ``code`` of the error raised for a success body that is not an answer.
MALFORMED = "malformed_response"

_MALFORMED_PREFIX = "the provider sent a malformed response ("
_log = get_logger("tokenhub.providers")


def detail_message(detail: Any) -> str | None:
    """The message of a FastAPI-style error body's ``detail``: a string, or a list of ``{msg}``.

    List items read ``loc: msg`` (at most five of them); anything else gives ``None``.
    """
    if isinstance(detail, str):
        return detail or None
    if not isinstance(detail, list):
        return None
    parts = []
    for item in detail[:5]:
        if not isinstance(item, dict) or not isinstance(item.get("msg"), str):
            continue
        loc = item.get("loc")
        where = (
            ".".join(str(p) for p in loc if isinstance(p, str | int))
            if isinstance(loc, list)
            else ""
        )
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts) or None


def token_count(value: Any) -> int | None:
    """``value`` as a usage count, ``None`` when absent (``None``), ``-1`` when not believable.

    A count is an integer (or an integral float) in ``[0, MAX_TOKEN_COUNT)``;
    booleans, strings, negatives, NaN and infinities are not.
    """
    if value is None:
        return None
    cls = value.__class__
    if cls is int:
        return value if 0 <= value < MAX_TOKEN_COUNT else -1
    if cls is float and math.isfinite(value) and value.is_integer():
        return int(value) if 0 <= value < MAX_TOKEN_COUNT else -1
    return -1


def unbelievable_usage(call: Call, field: str) -> None:
    """Log that a usage report was dropped (the answer is kept, its usage unknown)."""
    _log.warning(
        "%s (%s) reported an invalid usage count in %r: usage treated as unknown",
        call.model,
        call.provider,
        field,
        extra={"model": call.model, "provider": call.provider, "request_id": call.request_id},
    )


def malformed(call: Call, r: HttpResponse | None, why: str) -> ProviderError:
    """The transient error for a success body that is not an answer (it fails over)."""
    return error_type_for(ErrorClass.TRANSIENT)(
        f"{_MALFORMED_PREFIX}{why})",
        error_class=ErrorClass.TRANSIENT,
        provider=call.provider,
        model=call.model,
        status=None if r is None else r.status,
        code=MALFORMED,
        request_id=call.request_id,
        upstream_request_id=None
        if r is None
        else r.headers.get("x-request-id") or r.headers.get("request-id"),
    )


def json_answer_chunks(
    call: Call,
    r: HttpResponse,
    key: Secret | None,
    decode: Callable[[Call, HttpResponse, Any, Secret | None], ChatResponse],
) -> tuple[Chunk, ...]:
    """The chunks of a plain JSON answer to a stream request (a server that ignored ``stream``).

    A valid answer becomes one content chunk and the final chunk (finish reason,
    usage); an error object in it is classified as usual; anything else is one
    ``invalid_request`` error: not retried, not charged to the model's health.
    """
    try:
        response = decode(call, r, json.loads(r.body), key)
    except ProviderError as exc:
        if exc.code != MALFORMED:
            raise
        why = exc.message.removeprefix(_MALFORMED_PREFIX).removesuffix(")")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        why = "not JSON"
    else:
        tools = tuple(
            ToolCallDelta(index=i, id=t.id, name=t.name, arguments=t.arguments)
            for i, t in enumerate(response.tool_calls)
        )
        final = call.chunk(
            finish_reason=response.finish_reason,
            usage=response.usage,
            response_id=response.response_id,
            upstream_model=response.upstream_model,
            created=response.created,
        )
        if not (response.text or response.reasoning or tools):
            return (final,)
        content = call.chunk(
            text=response.text,
            tool_calls=tools,
            reasoning=response.reasoning,
            response_id=response.response_id,
            upstream_model=response.upstream_model,
            created=response.created,
        )
        return (content, final)
    raise error_type_for(ErrorClass.INVALID_REQUEST)(
        f"the provider answered a stream request with a JSON body that is not an answer ({why})",
        error_class=ErrorClass.INVALID_REQUEST,
        provider=call.provider,
        model=call.model,
        status=r.status,
        code=MALFORMED,
        request_id=call.request_id,
    )
