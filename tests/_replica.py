"""One replica of a fleet, for the multi-process tests: a ``SyncHub`` driven over stdin/stdout.

Run as ``python tests/_replica.py CONFIG_JSON``. Each line on stdin is a JSON command,
answered by one JSON line on stdout:

- ``{"op": "chat", "model": M}``: ``{"ok": true, "model": served_by}`` or
  ``{"ok": false, "error": class name}``;
- ``{"op": "health"}``: ``Hub.health()``;
- ``{"op": "quit"}``: closes the Hub and exits.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tokenhub import SyncHub


def main() -> None:
    """Serve commands until ``quit`` or the end of stdin."""
    config = json.loads(sys.argv[1])
    with SyncHub.from_config(config) as hub:
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            answer: Any
            if op == "quit":
                break
            if op == "chat":
                try:
                    r = hub.chat([{"role": "user", "content": "hi"}], model=command["model"])
                    answer = {"ok": True, "model": r.model}
                except Exception as exc:  # reported to the test
                    answer = {"ok": False, "error": type(exc).__name__}
            else:
                answer = hub.health()
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
