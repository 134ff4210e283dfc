"""Token estimation: a fast default over message content, or tiktoken when configured.

The default counts byte classes in C (``bytes.translate``, ``bytes.count``) and
combines them linearly; the coefficients were fitted against tiktoken's
``cl100k_base`` on English prose, source code and CJK text
(``benchmarks/estimator.py`` reports the error). It costs about half a microsecond
for a short message. The config's ``tokenizer: tiktoken[:ENCODING]`` counts
exactly instead (``o200k_base`` by default).
"""

from __future__ import annotations

import base64
import math
import string
import struct
from typing import TYPE_CHECKING, Protocol

from tokenhub._models import ImagePart, TextPart
from tokenhub._redact import get_logger
from tokenhub._request import schema_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from tokenhub._models import ChatRequest, Message

__all__ = [
    "Counter",
    "estimate_prompt_tokens",
    "heuristic_tokens",
    "make_counter",
    "tiktoken_counter",
]

# Byte classes: one translation maps every byte to its class letter, and C counts them.
# Whitespace is what bytes.split() splits on; non-ASCII bytes are classed apart.
_WHITESPACE = b" \t\n\r\x0b\x0c"


def _class_table() -> bytes:
    table = bytearray(b"c" * 128 + b"u" * 128)  # other ASCII, non-ASCII
    for chars, cls in (
        (string.ascii_letters, "a"),
        (string.digits, "0"),
        (string.punctuation, "."),
        (_WHITESPACE.decode(), " "),
    ):
        for c in chars.encode():
            table[c] = ord(cls)
    return bytes(table)


_CLASSES = _class_table()
#: Whitespace to a space, anything else to "x": a chunk starts at each " x" (or at "x" first).
_SPACES = bytes(ord(" ") if i in _WHITESPACE else ord("x") for i in range(256))

# Fitted coefficients: tokens per whitespace-separated chunk, ASCII letter, digit,
# ASCII punctuation character, 2-byte UTF-8 character and 3-/4-byte UTF-8 character.
_PER_CHUNK = 0.127
_PER_LETTER = 0.2187
_PER_DIGIT = 0.6
_PER_PUNCT = 0.7118
_PER_TWO_BYTE = 0.4563
_PER_WIDE = 1.0759

# OpenAI's chat format: every message costs a few tokens around its content, and the
# reply is primed with a few more.
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
_PER_TOOL = 8
_PER_TOOL_CALL = 3
# Images: OpenAI's formula (85 base + 170 per 512-px tile after fitting into 2048x2048
# and scaling the short side to 768). Unknown sizes are priced as 1024x1024 (4 tiles).
_IMAGE_LOW = 85
_IMAGE_TILE = 170


class Counter(Protocol):
    """Counts the tokens of a text."""

    def __call__(self, text: str) -> float:
        """Return the (estimated) token count of ``text``."""
        ...


def heuristic_tokens(text: str) -> float:
    """Estimate the tokens of ``text`` from its byte classes, without a tokenizer."""
    b = text.encode()
    n = len(b)
    classes = b.translate(_CLASSES)
    spaces = b.translate(_SPACES)
    chunks = spaces.count(b" x") + spaces.startswith(b"x")  # == len(b.split()), no list
    tokens = (
        _PER_CHUNK * chunks
        + _PER_LETTER * classes.count(b"a")
        + _PER_DIGIT * classes.count(b"0")
        + _PER_PUNCT * classes.count(b".")
    )
    if n != len(text):  # non-ASCII: count 2-byte and wider characters from the byte surplus
        ascii_bytes = n - classes.count(b"u")
        wide_chars = len(text) - ascii_bytes
        surplus = n - ascii_bytes - wide_chars  # one per 2-byte char, two per 3-byte char
        three = max(surplus - wide_chars, 0)
        tokens += _PER_TWO_BYTE * (wide_chars - three) + _PER_WIDE * three
    return tokens


def tiktoken_counter(encoding: str = "o200k_base") -> Counter:
    """Return an exact counter using tiktoken's ``encoding`` (raises ImportError without it)."""
    import tiktoken  # noqa: PLC0415 - an optional extra

    enc = tiktoken.get_encoding(encoding)

    def count(text: str) -> float:
        return len(enc.encode(text, disallowed_special=()))

    return count


def make_counter(spec: str) -> Counter:
    """Build the counter named by the config's ``tokenizer``.

    ``heuristic`` (the default) needs nothing; ``tiktoken`` or ``tiktoken:ENCODING``
    loads tiktoken on first use and falls back to the heuristic, with one warning,
    when tiktoken or its encoding cannot be loaded.
    """
    if spec == "heuristic":
        return heuristic_tokens
    encoding = spec.partition(":")[2] or "o200k_base"
    exact: list[Counter] = []

    def count(text: str) -> float:
        if not exact:
            try:
                exact.append(tiktoken_counter(encoding))
            except Exception as exc:  # noqa: BLE001 - any failure means "use the heuristic"
                get_logger("tokenhub.routing").warning(
                    "tiktoken encoding %r unavailable (%s); estimating tokens heuristically",
                    encoding,
                    type(exc).__name__,
                )
                exact.append(heuristic_tokens)
        return exact[0](text)

    return count


def image_tokens(part: ImagePart) -> int:
    """Estimate an image's tokens by OpenAI's tile formula; size read from PNG data URLs."""
    if part.detail == "low":
        return _IMAGE_LOW
    width, height = _png_size(part.url) or (1024, 1024)
    scale = min(1.0, 2048 / max(width, height))
    scale *= min(1.0, 768 / (min(width, height) * scale))
    tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    return _IMAGE_LOW + _IMAGE_TILE * tiles


def _png_size(url: str) -> tuple[int, int] | None:
    if not url.startswith("data:image/png;base64,"):
        return None
    try:
        head = base64.b64decode(url[22:54])
    except ValueError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return (w, h) if w and h else None


def estimate_prompt_tokens(request: ChatRequest, count: Callable[[str], float]) -> int:
    """Estimate the prompt tokens of ``request``: messages, tool definitions and tool calls."""
    total = float(_REPLY_PRIMING)
    for m in request.messages:
        total += _message_tokens(m, count)
    for t in request.tools:
        total += _PER_TOOL + count(t.name) + count(t.description or "")
        if t.parameters:
            total += count(schema_json(t.parameters))
    fmt = request.response_format
    if fmt is not None and fmt.schema:
        total += count(schema_json(fmt.schema))
    return round(total)


def _message_tokens(m: Message, count: Callable[[str], float]) -> float:
    total = float(_PER_MESSAGE)
    c = m.content
    if isinstance(c, str):
        total += count(c)
    elif c is not None:
        for part in c:
            total += count(part.text) if isinstance(part, TextPart) else image_tokens(part)
    if m.name:
        total += _PER_NAME
    for tc in m.tool_calls:
        total += _PER_TOOL_CALL + count(tc.name) + count(tc.arguments)
    return total
