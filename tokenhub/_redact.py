"""Scrub secrets out of text that leaves tokenhub (error messages, logs)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tokenhub._secret import Secret

__all__ = ["MASK", "ScrubFilter", "get_logger", "looks_like_key", "register", "scrub", "truncate"]

MASK = "[REDACTED]"

# Common credential shapes: OpenAI/Anthropic/Groq/xAI/Google keys, bearer tokens, AWS-style ids.
_KEY_SHAPES = re.compile(
    r"(?:sk-(?:ant-|proj-)?[A-Za-z0-9_\-*]{8,}|gsk_[A-Za-z0-9]{16,}|xai-[A-Za-z0-9]{20,}|"
    r"AIza[0-9A-Za-z_\-]{35}|(?i:bearer)\s+[A-Za-z0-9._\-~+/]{8,}=*|AKIA[0-9A-Z]{16})"
)
# A credential in a URL's query string, whatever its shape (``?key=…``): the name stays readable.
_QUERY_KEY = re.compile(r"([?&](?i:key|api_key|apikey)=)[^&#\s\"'<>]+")
_MIN_FRAGMENT = 8
# Every credential tokenhub has seen in this process (config literals, resolved env keys),
# so that any text leaving tokenhub can be scrubbed of them by value.
_KNOWN: set[Secret] = set()


def register(secret: Secret) -> None:
    """Remember ``secret`` so that :func:`scrub` removes it from any text from now on."""
    if secret:
        _KNOWN.add(secret)


def scrub(text: str, secrets: Iterable[Secret] = ()) -> str:
    """Replace every known secret, its distinctive fragments and key-shaped tokens with a mask."""
    for secret in (*secrets, *_KNOWN):
        value = secret.reveal()
        if not value:
            continue
        if len(value) < _MIN_FRAGMENT:
            # A short value is masked only where it stands alone, so words stay readable.
            text = re.sub(rf"(?<![\w-]){re.escape(value)}(?![\w-])", MASK, text)
            continue
        text = text.replace(value, MASK)
        # Providers echo keys partially ("sk-VKMIs*****wjh3"): mask long prefixes and suffixes too.
        if len(value) >= 2 * _MIN_FRAGMENT:
            text = text.replace(value[:_MIN_FRAGMENT], MASK).replace(value[-_MIN_FRAGMENT:], MASK)
    return _QUERY_KEY.sub(rf"\1{MASK}", _KEY_SHAPES.sub(MASK, text))


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
