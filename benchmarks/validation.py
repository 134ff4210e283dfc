"""Per-request validation and secret registration: what the hardening of issue 14 costs.

* ``request_from`` on a plain two-message call, on a call with three tools (a ~1 KB JSON
  Schema each) and ``extra_body``, and with the routing options given (median µs); then
  validation and the router's token estimate together, which share the schemas' JSON text;
* registering 3,000 distinct keys, then what one request spends registering its resolved
  key again once those 3,000 are known;
* ``scrub`` of a 1 KB text with 3 known keys.

Run with ``PYTHONPATH`` pointing at another checkout to compare before and after.
"""

from __future__ import annotations

import secrets
import statistics
import time
from typing import TYPE_CHECKING

from tokenhub._redact import register, scrub
from tokenhub._request import request_from
from tokenhub._secret import Secret
from tokenhub.routing._estimate import estimate_prompt_tokens, heuristic_tokens

if TYPE_CHECKING:
    from collections.abc import Callable

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Summarise the attached report in three bullet points, please."},
]
SCHEMA = {
    "type": "object",
    "properties": {
        f"field_{i}": {"type": "string", "description": f"The {i}th field of the record, in full."}
        for i in range(12)
    },
    "required": ["field_0", "field_1"],
}
TOOLS = [
    {"type": "function", "function": {"name": f"tool_{i}", "parameters": SCHEMA}} for i in range(3)
]
WITH_TOOLS = {"tools": TOOLS, "extra_body": {"top_k": 5, "safe_prompt": True}}
ROUTING = {"model": "gpt-4o-mini", "caller": "team-a", "request_id": "req-123", "timeout": 30.0}


def median_us(fn: Callable[[], object], repeat: int = 2000) -> float:
    samples = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        samples.append((time.perf_counter() - start) / repeat * 1e6)
    return statistics.median(samples)


def main() -> None:
    plain = median_us(lambda: request_from(MESSAGES, {}))
    tools = median_us(lambda: request_from(MESSAGES, WITH_TOOLS))
    routing = median_us(lambda: request_from(MESSAGES, ROUTING))
    print(f"request_from, plain call:           {plain:8.2f} µs")
    print(f"request_from, 3 tools + extra_body: {tools:8.2f} µs")
    print(f"request_from, with routing options: {routing:8.2f} µs")
    both = median_us(
        lambda: estimate_prompt_tokens(request_from(MESSAGES, WITH_TOOLS), heuristic_tokens)
    )
    print(f"  the same, then its token estimate:  {both:8.2f} µs")

    keys = [f"gw-{secrets.token_hex(20)}" for _ in range(3000)]
    start = time.perf_counter()
    for k in keys:
        register(Secret(k))
    first = time.perf_counter() - start
    again = median_us(lambda: register(Secret(keys[-1])), repeat=20)
    print(f"register 3,000 distinct keys:       {first * 1e3:8.1f} ms")
    print(f"register a known key again:         {again:8.2f} µs (3,000 known)")

    text = ("The quick brown fox jumps over the lazy dog. " * 23)[:1000]
    print(f"scrub 1 KB with 3,003 known keys:   {median_us(lambda: scrub(text), 20):8.1f} µs")


if __name__ == "__main__":
    main()
