"""Incremental Server-Sent Events parser following the WHATWG rules.

Bytes are fed as they arrive from the network and complete events come out.
The parser works on whole buffers: it finds the last line terminator of a
chunk with ``bytes.rfind``, decodes every complete line in one call, splits
them in C and only then loops over lines (never over bytes).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, NamedTuple

from tokenhub.errors import TokenhubError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_MAX_LINE", "SSEDecoder", "SSEError", "SSEEvent", "parse_json"]

DEFAULT_MAX_LINE = 16 * 1024 * 1024
"""Default cap, in bytes, on the length of one line of the stream."""

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D


# The decoder's C scanner (json.loads's own); typeshed does not declare the attribute.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_loads = json.loads


def parse_json(data: str) -> Any:
    """``json.loads(data)``, a microsecond cheaper for data without surrounding whitespace.

    ``json.loads`` goes through three Python frames and two regular-expression
    matches (the whitespace around the value) before and after the C scanner;
    an event's data rarely has any, so the scanner is called directly and any
    other case (whitespace, extra data, an error) is left to ``json.loads``,
    which then returns or raises exactly what it always does.
    """
    try:
        value, end = _scan(data, 0)
    except StopIteration:  # no value at the very start: let json.loads say why
        return _loads(data)
    return value if end == len(data) else _loads(data)


class SSEError(TokenhubError, ValueError):
    """The event stream cannot be parsed safely (e.g. a line is too long).

    Adapters on tokenhub's HTTP layer turn it into a transient
    :class:`~tokenhub.errors.ProviderError` (a broken stream); it is a
    :class:`~tokenhub.errors.TokenhubError` for anyone decoding streams themselves.
    """


class SSEEvent(NamedTuple):
    """One dispatched event."""

    event: str
    """The event type: ``"message"`` when no ``event:`` field was given."""
    data: str
    """The ``data:`` lines joined with ``"\\n"``."""
    id: str | None = None
    """The last event ID of the stream when the event was dispatched, if any."""
    retry: int | None = None
    """The ``retry:`` value (milliseconds) given within this event, if any."""


# SSEEvent(...) runs a Python-level __new__; the tuple constructor makes the same value.
_new_event = tuple.__new__


class SSEDecoder:
    """Feed bytes as they arrive; get complete events out.

    Lines end in LF, CRLF or CR (a CRLF split across two chunks is one line
    end). A blank line dispatches the event being built; an event whose data
    buffer is empty is not dispatched. The last event ID persists from event
    to event, as WHATWG specifies; ``retry`` is reported on the event whose
    block carried it and is also available as `retry`.

    Text is decoded as UTF-8 one complete line at a time, so a character split
    across chunks decodes correctly; invalid bytes become U+FFFD. A UTF-8 BOM
    at the very start of the stream is dropped.

    A line longer than *max_line* bytes raises `SSEError`; the decoder then
    discards its buffers, and the stream should be abandoned.
    """

    __slots__ = (
        "_buf",
        "_data",
        "_dirty",
        "_event_retry",
        "_event_type",
        "_last_id",
        "_max_line",
        "_retry",
        "_skip_lf",
        "_started",
        "_truncated",
    )

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._max_line = max_line
        self._buf = bytearray()  # the unterminated tail of the stream
        self._skip_lf = False  # the stream so far ends in CR: drop a leading LF
        self._started = False  # whether the BOM check is done
        self._data: list[str] = []
        self._event_type = ""
        self._event_retry: int | None = None
        self._last_id: str | None = None
        self._retry: int | None = None
        self._dirty = False  # a field line was seen since the last blank line
        self._truncated = False  # the last flush() discarded something

    @property
    def pending(self) -> bool:
        """Whether unterminated bytes or fields of an undispatched event are held.

        After `flush` this tells whether the flush discarded anything, i.e.
        whether the stream was cut in the middle of an event.
        """
        return self._truncated or self._dirty or bool(self._buf)

    @property
    def last_event_id(self) -> str | None:
        """The last event ID seen on the stream (``None`` if never set)."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The latest reconnection time (milliseconds) given by a ``retry:`` field."""
        return self._retry

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume *chunk* and return the events it completes, in order."""
        if not chunk:
            return []
        self._truncated = False
        if not self._started:
            chunk = self._strip_bom(chunk)
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == _LF:  # the second half of a CRLF split across chunks
                chunk = chunk[1:]
        if not chunk:
            return []
        # The held tail never holds a line terminator, so this tells about the whole block.
        cr = b"\r" in chunk
        if (
            not cr
            and not self._dirty  # so no data, event type or retry is pending either
            and not self._buf
            and chunk.startswith(b"data: ")
            and chunk.endswith(b"\n\n")
            and chunk.find(b"\n", 6) == len(chunk) - 2
            and len(chunk) <= self._max_line
        ):
            # The shape most chunks of an LLM stream have: one event of one data line, whole.
            data = chunk[6:-2].decode("utf-8", "replace")
            return [_new_event(SSEEvent, ("message", data, self._last_id, None))]
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) if cr else chunk.rfind(b"\n")
        buf = self._buf
        if end < 0:  # no line ends yet: keep the bytes
            buf += chunk
            if len(buf) > self._max_line:
                self._overflow()
            return []
        # The complete lines up to chunk[end], a line terminator; the rest is kept.
        max_line = self._max_line
        size = len(chunk)
        stop = end + 1
        if buf:
            buf += memoryview(chunk)[:stop]
            block = bytes(buf)
            buf.clear()
        elif stop == size:
            block = chunk
        else:
            block = chunk[:stop]
        if len(block) > max_line and any(len(x) > max_line for x in block.splitlines()):
            self._overflow()
        if stop != size:
            buf += memoryview(chunk)[stop:]
            if len(buf) > max_line:
                self._overflow()
        elif cr and chunk[end] == _CR:
            self._skip_lf = True
        # Line terminators are ASCII and never occur inside a UTF-8 sequence,
        # so decoding the whole block equals decoding it line by line.
        text = block.decode("utf-8", "replace")
        if cr:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines.pop()  # the empty string after the final terminator
        return self._process(lines)

    def flush(self) -> list[SSEEvent]:
        """Signal end of stream; discard any incomplete event (WHATWG).

        Always returns an empty list: an event without its terminating blank
        line is never dispatched. `pending` then tells whether something was
        discarded. The decoder may be reused for a new stream (e.g. after a
        reconnection); the last event ID is kept.
        """
        self._truncated = self.pending
        self._reset()
        return []

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Drop a BOM at the start of the stream, which may come in pieces."""
        buf = self._buf
        if buf:
            chunk = bytes(buf) + chunk
            buf.clear()
        if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
            buf += chunk  # cannot tell yet whether this is a BOM
            return b""
        self._started = True
        return chunk.removeprefix(_BOM)

    def _reset(self) -> None:
        self._buf.clear()
        self._skip_lf = False
        self._started = False
        self._data = []
        self._event_type = ""
        self._event_retry = None
        self._dirty = False

    def _overflow(self) -> None:
        self._reset()
        raise SSEError(f"SSE line longer than {self._max_line} bytes")

    def _process(self, lines: list[str]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        data = self._data
        event_type = self._event_type
        event_retry = self._event_retry
        last_id = self._last_id
        dirty = self._dirty
        for line in lines:
            if not line:
                if data:
                    events.append(
                        _new_event(
                            SSEEvent,
                            (
                                event_type or "message",
                                data[0] if len(data) == 1 else "\n".join(data),
                                last_id,
                                event_retry,
                            ),
                        )
                    )
                    data = []
                event_type = ""
                event_retry = None
                dirty = False
                continue
            if line.startswith("data: "):  # the overwhelmingly common case
                data.append(line[6:])
                dirty = True
                continue
            colon = line.find(":")
            if colon == 0:  # a comment
                continue
            dirty = True
            if colon < 0:
                name = line
                value = ""
            else:
                name = line[:colon]
                value = line[colon + 1 :]
                value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id":
                if "\0" not in value:
                    last_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                with contextlib.suppress(ValueError):  # beyond the int-from-str digit limit
                    event_retry = self._retry = int(value)
        self._data = data
        self._event_type = event_type
        self._event_retry = event_retry
        self._last_id = last_id
        self._dirty = dirty
        return events
