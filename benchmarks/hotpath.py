"""Microseconds per stage of tokenhub's per-request hot path, on the realistic bodies.

The bodies are what benchmarks/upstream.c answers under /realistic/ (built and asked here once):
OpenAI's 1.2 KB pretty-printed chat.completion with its response headers, and the stream of
70 chat.completion.chunk events, the usage chunk and ``[DONE]``. Each stage runs alone, in
process, with no network: the figures say where a request's CPU goes in tokenhub's own code,
which the end-to-end transport benchmark (benchmarks/transport.py) cannot separate from the
HTTP library's. Every figure is CPU time (the process's, so that time spent descheduled on a
shared machine does not count): the mean of many calls per round, rounds interleaved over the
stages; the median and the minimum over rounds are shown.

    python benchmarks/hotpath.py             # about half a minute
    python benchmarks/hotpath.py --quick
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).parent))

from transport import MESSAGES, MODEL, start_upstream

from tokenhub import Hub
from tokenhub._http import HttpResponse
from tokenhub._request import build_request
from tokenhub._sse import SSEDecoder, SSEEvent
from tokenhub.providers import Call
from tokenhub.providers._base import dumps
from tokenhub.routing._estimate import estimate_prompt_tokens, heuristic_tokens
from tokenhub.routing._partial import Partial

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from tokenhub._models import Chunk


def fetch_bodies() -> tuple[bytes, dict[str, str], bytes]:
    """The realistic JSON answer (body and lower-cased headers) and the SSE stream, de-chunked."""
    with tempfile.TemporaryDirectory() as d:
        upstream, port = start_upstream(Path(d), chunks=60)
        try:
            out = []
            for stream in (False, True):
                conn = http.client.HTTPConnection("127.0.0.1", port)
                body = json.dumps({"model": MODEL, "stream": stream}).encode()
                conn.request("POST", "/realistic/v1/chat/completions", body)
                r = conn.getresponse()
                out.append(({k.lower(): v for k, v in r.getheaders()}, r.read()))
                conn.close()
        finally:
            upstream.terminate()
            upstream.wait()
    (headers, body), (_, sse) = out
    return body, headers, sse


def run_async(agen: AsyncIterator[Chunk]) -> int:
    """Drain an async iterator that never suspends, without an event loop."""

    async def consume() -> int:
        n = 0
        async for _ in agen:
            n += 1
        return n

    coro = consume()
    try:
        coro.send(None)
    except StopIteration as stop:
        return int(stop.value)
    raise RuntimeError("the iterator suspended")


async def aiter_list(items: list[SSEEvent]) -> AsyncIterator[SSEEvent]:
    for item in items:
        yield item


def stages() -> dict[str, tuple[Callable[[], object], int]]:
    """name -> (one run of the stage, how many of it one request or stream does)."""
    body, headers, sse = fetch_bodies()
    hub = Hub.from_config(
        {
            "providers": {"o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": {MODEL: {"provider": "o"}},
        }
    )
    messages = MESSAGES["realistic"]
    request = build_request(messages)
    router = hub._router
    provider = hub._providers["o"]
    call = Call(request=request, model=MODEL, upstream=MODEL, provider="o", request_id="r1")
    response = HttpResponse(200, headers, body)
    events_per_read = [e for part in sse.split(b"\n\n") for e in SSEDecoder().feed(part + b"\n\n")]
    events = SSEDecoder().feed(sse)
    assert events == events_per_read
    parts = [part + b"\n\n" for part in sse.split(b"\n\n") if part]
    chunks: list[Chunk] = []

    async def collect() -> AsyncIterator[Chunk]:
        async for c in provider.chunks(call, aiter_list(events), None):
            chunks.append(c)
            yield c

    run_async(collect())

    def sse_per_event() -> None:
        decoder = SSEDecoder()
        for part in parts:
            decoder.feed(part)

    def partial() -> None:
        p = Partial()
        for c in chunks:
            p.add(c)
        _ = (p.text, p.reasoning, p.tool_calls)

    def plan() -> object:
        return router.plan(request, model=MODEL, policy=router.policy, caller=None, request_id="r")

    chunk_args = chunks[1]
    return {
        "validate (build_request)": (lambda: build_request(messages), 1),
        "estimate prompt tokens": (lambda: estimate_prompt_tokens(request, heuristic_tokens), 1),
        "route (Router.plan)": (plan, 1),
        "encode (body + dumps)": (lambda: dumps(provider.encode(call, stream=False)).encode(), 1),
        "decode (loads + decode)": (
            lambda: provider.decode(call, response, json.loads(body), None),
            1,
        ),
        "SSE, one read per event": (sse_per_event, 1),
        "SSE, the stream in one read": (lambda: SSEDecoder().feed(sse), 1),
        "adapter chunks() per stream": (
            lambda: run_async(provider.chunks(call, aiter_list(events), None)),
            1,
        ),
        "Call.chunk per chunk": (lambda: call.chunk(text=chunk_args.text, created=1), len(chunks)),
        "Partial.add per stream": (partial, 1),
    }


def measure(fn: Callable[[], object], budget_s: float) -> tuple[int, float]:
    """Calls per round so that a round lasts about ``budget_s``; and a first estimate (µs)."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_s / 4:
        fn()
        n += 1
    return max(4 * n, 1), (time.perf_counter() - start) / max(n, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    opts, _ = parser.parse_known_args()  # nox passes the transport benchmark's options too
    rounds, budget = (5, 0.05) if opts.quick else (15, 0.2)
    table = stages()
    sizes = {name: measure(fn, budget)[0] for name, (fn, _) in table.items()}
    samples: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(rounds):
        for name, (fn, _) in table.items():
            n = sizes[name]
            start = time.process_time_ns()
            for _ in range(n):
                fn()
            samples[name].append((time.process_time_ns() - start) / n / 1e3)
    print(f"{'stage':<30}{'µs, median':>12}{'min':>9}{'per request':>13}")
    for name, (_, per) in table.items():
        us = statistics.median(samples[name])
        print(f"{name:<30}{us:>12.2f}{min(samples[name]):>9.2f}{us * per:>13.1f}")


if __name__ == "__main__":
    main()
