"""Scrub secrets out of text leaving tokenhub (errors, logs); show users' values safely."""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tokenhub._secret import Secret

__all__ = [
    "MASK",
    "ScrubFilter",
    "describe",
    "get_logger",
    "looks_like_key",
    "printable",
    "quote",
    "register",
    "safe_name",
    "scrub",
    "truncate",
]

MASK = "[REDACTED]"

# Common credential shapes: OpenAI/Anthropic/Groq/xAI/Google keys, bearer tokens, AWS-style ids.
_KEY_SHAPES = re.compile(
    r"(?:sk-(?:ant-|proj-)?[A-Za-z0-9_\-*]{8,}|gsk_[A-Za-z0-9]{16,}|xai-[A-Za-z0-9]{20,}|"
    r"AIza[0-9A-Za-z_\-]{35}|(?i:bearer)\s+[A-Za-z0-9._\-~+/]{8,}=*|AKIA[0-9A-Z]{16})"
)
# A credential in a URL's query string, whatever its shape (``?key=…``): the name stays readable.
_QUERY_KEY = re.compile(r"[?&](?i:key|api_key|apikey)=([^&#\s\"'<>]+)")
# What every key of a kind starts with: no distinctive part of any one key.
_PUBLIC_PREFIX = re.compile(
    r"sk-(?:ant-(?:[a-z]+[0-9]*-)?|proj-|svcacct-|admin-)?|gsk_|xai-|AIza|AKIA"
)
_MIN_FRAGMENT = 8


class _Needles:
    """What :func:`scrub` looks for of one secret: the value and its distinctive fragments."""

    __slots__ = ("alone", "parts")

    def __init__(self, value: str) -> None:
        self.alone: re.Pattern[str] | None = None
        self.parts: tuple[str, ...] = ()
        if len(value) < _MIN_FRAGMENT:
            # A short value is masked only where it stands alone, so words stay readable.
            self.alone = re.compile(rf"(?<![\w-]){re.escape(value)}(?![\w-])")
            return
        # Providers echo keys partially ("sk-VKMIs*****wjh3"): mask long prefixes and suffixes
        # too, a prefix counted past the part that every key of its kind shares ("sk-proj-").
        public = _PUBLIC_PREFIX.match(value)
        head = _MIN_FRAGMENT + (public.end() if public else 0)
        if len(value) >= head + _MIN_FRAGMENT:
            self.parts = (value, value[:head], value[-_MIN_FRAGMENT:])
        else:
            self.parts = (value,)


# Every credential tokenhub has seen in this process (config literals, resolved env keys),
# so that any text leaving tokenhub can be scrubbed of them by value. Keyed by the secret
# (hashed by a keyed digest of its value), so registering a known value again costs O(1).
_KNOWN: dict[Secret, _Needles] = {}


def register(secret: Secret) -> None:
    """Remember ``secret`` so that :func:`scrub` removes it from any text from now on."""
    if secret and secret not in _KNOWN:
        _KNOWN[secret] = _Needles(secret.reveal())


def scrub(text: str, secrets: Iterable[Secret] = ()) -> str:
    """Replace every known secret, its distinctive fragments and key-shaped tokens with a mask.

    Every detector marks spans of the original text, and each run of overlapping spans
    becomes one mask: no detector can cut a token so that another no longer sees it.
    """
    spans = [m.span() for m in _KEY_SHAPES.finditer(text)]
    spans.extend(m.span(1) for m in _QUERY_KEY.finditer(text))
    extra = [_Needles(s.reveal()) for s in secrets if s and s not in _KNOWN]
    if len(_KNOWN) <= _SCAN_LIMIT:
        _find_each((*extra, *_KNOWN.values()), text, spans)
    else:
        _find_each(extra, text, spans)
        _find_indexed(text, spans)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    done = 0
    cur_start, cur_end = spans[0]
    for start, end in spans[1:]:
        if start <= cur_end:
            cur_end = max(cur_end, end)
            continue
        out.extend((text[done:cur_start], MASK))
        done, (cur_start, cur_end) = cur_end, (start, end)
    out.extend((text[done:cur_start], MASK, text[cur_end:]))
    return "".join(out)


def _find_each(needles: Iterable[_Needles], text: str, spans: list[tuple[int, int]]) -> None:
    for n in needles:
        if n.alone is not None:
            spans.extend(m.span() for m in n.alone.finditer(text))
        for part in n.parts:
            start = text.find(part)
            while start >= 0:
                spans.append((start, start + len(part)))
                start = text.find(part, start + 1)


# Up to this many known secrets, the text is searched for each; beyond, one pass over the
# text looks its 8-character windows up in an index of every needle's first 8 characters.
_SCAN_LIMIT = 48
_index: list[Any] = [-1, {}, ()]  # [len(_KNOWN) when built, first 8 -> needles, short patterns]


def _find_indexed(text: str, spans: list[tuple[int, int]]) -> None:
    size = len(_KNOWN)
    if _index[0] != size:
        anchors: dict[str, list[str]] = {}
        shorts = []
        for n in list(_KNOWN.values()):
            if n.alone is not None:
                shorts.append(n.alone)
            for part in n.parts:
                anchors.setdefault(part[:_MIN_FRAGMENT], []).append(part)
        _index[:] = [size, {k: tuple(v) for k, v in anchors.items()}, tuple(shorts)]
    get = _index[1].get
    for i in range(len(text) - _MIN_FRAGMENT + 1):
        parts = get(text[i : i + _MIN_FRAGMENT])
        if parts is not None:
            spans.extend((i, i + len(p)) for p in parts if text.startswith(p, i))
    for pattern in _index[2]:
        spans.extend(m.span() for m in pattern.finditer(text))


class ScrubFilter(logging.Filter):
    """Scrub every known secret out of a record's message before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message if it contains a secret; never drop it."""
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def get_logger(name: str) -> logging.Logger:
    """Return a tokenhub logger with the scrubbing filter attached (once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, ScrubFilter) for f in logger.filters):
        logger.addFilter(ScrubFilter())
    return logger


def looks_like_key(text: str) -> bool:
    """Tell whether ``text`` has the shape of a credential."""
    return _KEY_SHAPES.search(text) is not None


def truncate(text: str, limit: int = 300) -> str:
    """Shorten ``text`` to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


_ARTICLES = {"int": "an integer", "float": "a number", "str": "a string", "dict": "a mapping"}
# A value shown in an error message: a name or a word, short, nothing a key or password is made of.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,23}")


def describe(v: object) -> str:
    """What ``v`` is (``a string``, ``null``, ``NaN``), never what it holds."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else "infinity"
    name = type(v).__name__
    if isinstance(v, list | tuple):
        return "a list"
    return _ARTICLES.get(name) or ("a mapping" if hasattr(v, "keys") else f"a {name} value")


def quote(v: object) -> str:
    """``repr(v)`` for a short plain word or a small number, else :func:`describe`.

    So an error can say ``got 'hot'`` or ``got 3`` and never shows a pasted key,
    a password, a long text or a value whose ``repr`` is costly.
    """
    if isinstance(v, str):
        return repr(v) if _PLAIN.fullmatch(v) and not looks_like_key(v) else describe(v)
    if isinstance(v, int) and not isinstance(v, bool) and -(10**12) < v < 10**12:
        return repr(v)
    if isinstance(v, float) and math.isfinite(v) and len(repr(v)) <= 24:
        return repr(v)
    return describe(v)


def safe_name(name: object) -> str:
    """A user's key as a part of a path: printable, key-shaped ones masked, long ones cut."""
    text = name if isinstance(name, str) else describe(name)
    if looks_like_key(text):
        return MASK
    return truncate(printable(text), 64)


def printable(text: str) -> str:
    """``text`` with control characters and lone surrogates escaped, as ``repr`` shows them."""
    return text if text.isprintable() else repr(text)[1:-1]
