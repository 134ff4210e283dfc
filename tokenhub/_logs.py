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


class _JsonHandler(logging.StreamHandler["TextIO"]):
    """The handler :func:`enable_json_logs` adds; closing it undoes what that did."""

    def __init__(self, stream: TextIO, logger: logging.Logger) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._logger: logging.Logger | None = logger
        self._previous_level = logger.level

    def close(self) -> None:
        """Detach from the ``tokenhub`` logger and give it back the level it had."""
        logger, self._logger = self._logger, None
        if logger is not None:
            logger.removeHandler(self)
            logger.setLevel(self._previous_level)
        super().close()


def enable_json_logs(
    level: int | str = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send tokenhub's log records to ``stream`` (stderr) as JSON lines, at ``level`` and above.

    Only the ``tokenhub`` logger is touched: it gets the handler and ``level``.
    Call ``close()`` on the returned handler to undo both (the logger's previous
    level is restored).
    """
    logger = logging.getLogger("tokenhub")
    handler = _JsonHandler(stream or sys.stderr, logger)
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
