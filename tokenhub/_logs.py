"""Structured JSON log output for the applications that want it (tokenhub configures none)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from tokenhub._redact import scrub

if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["JsonFormatter", "enable_json_logs"]

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line (secrets scrubbed by value)."""
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        out.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
        return json.dumps(out, default=str, ensure_ascii=False)


def enable_json_logs(
    level: int | str = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send tokenhub's log records to ``stream`` (stderr) as JSON lines, at ``level`` and above.

    Only the ``tokenhub`` logger is touched; remove the returned handler to undo.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tokenhub")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
