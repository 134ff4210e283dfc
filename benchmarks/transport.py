"""Client CPU per request against a C upstream that answers instantly: raw httpx, raw aiohttp,
tokenhub on each HTTP implementation, and LiteLLM's Router when it is installed.

The upstream (benchmarks/upstream.c, compiled here with the system C compiler) runs in its own
process on the last core; each client run is a fresh process on core 0 (``taskset``, where it
exists). Two variants of bodies:

- ``small``: a one-line question, a 285-byte answer with one header beyond the framing, a
  stream of 62 events of one word each (the numbers before the realistic variant existed);
- ``realistic``: a system prompt and a 400-character question; the answer OpenAI sends for
  gpt-4o-mini (a 1.2 KB pretty-printed chat.completion with a full usage object, and
  OpenAI's and Cloudflare's response headers: request id, processing time, the six
  x-ratelimit-* headers, ...), and a chunked-encoded stream of 70 chat.completion.chunk
  events of a few words each, then the usage chunk (``stream_options.include_usage``) and
  ``[DONE]``.

For every variant and target: non-stream and stream, 1 and 32 requests in flight, five
repetitions taken in rounds over the targets (a slow spell of the machine then weighs on all of
them alike); the medians of CPU µs per request (user+sys of the client process ÷ requests, the
figure least sensitive to a noisy machine), p50/p99 latency, requests/s and peak RSS. Results go
to benchmarks/results/transport.json and a Markdown table (docs/performance.md quotes it), with
the ratios tokenhub-httpx ÷ httpx and tokenhub-aiohttp ÷ aiohttp against their targets.

    python benchmarks/transport.py                      # everything (6-7 minutes idle, 12 loaded)
    python benchmarks/transport.py --quick              # fewer requests and repetitions
    python benchmarks/transport.py --variants realistic --targets aiohttp,tokenhub-aiohttp
    python benchmarks/transport.py --compare benchmarks/results/transport-before.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
TARGETS = ("httpx", "aiohttp", "tokenhub-httpx", "tokenhub-aiohttp", "litellm")
VARIANTS = ("small", "realistic")
#: Each tokenhub target against its raw HTTP library, and the ceiling on that ratio.
RATIO_TARGETS = {"tokenhub-httpx": ("httpx", 1.2), "tokenhub-aiohttp": ("aiohttp", 1.3)}
MODEL = "gpt-4o-mini"
MESSAGES = {
    "small": [{"role": "user", "content": "Hello there, how are you?"}],
    "realistic": [
        {
            "role": "system",
            "content": (
                "You are a senior backend engineer helping a colleague. Answer precisely and "
                "briefly, name the HTTP headers involved, and prefer concrete steps over "
                "general advice."
            ),
        },
        {
            "role": "user",
            "content": (
                "Our nightly batch job sends about 40,000 chat completion requests to the "
                "OpenAI API from 16 workers, and since last week a few hundred of them fail "
                "with HTTP 429 every night. We retry immediately, up to three times. Is this "
                "the request limit or the token limit, and how should the workers pace "
                "themselves so that the job finishes without errors? We use gpt-4o-mini with "
                "max_tokens set to 4096."
            ),
        },
    ],
}
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json"}


def base_url(port: int, variant: str) -> str:
    """The upstream answers realistic bodies under /realistic/ (see benchmarks/upstream.c)."""
    return f"http://127.0.0.1:{port}" + ("/realistic/v1" if variant == "realistic" else "/v1")


def raw_payload(variant: str, stream: bool) -> bytes:
    """The body a raw client sends: what tokenhub's OpenAI adapter sends for the same call.

    Encoded on every request, as tokenhub encodes its own."""
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES[variant], "stream": stream}
    if stream and variant == "realistic":  # as tokenhub asks for usage in streams
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


# -- the client side (one process per run) -------------------------------------------


def make_client(target: str, variant: str, base: str) -> tuple[Any, Any, Any]:
    """Return (call(stream) coroutine function, aclose coroutine function, setup info)."""
    url = f"{base}/chat/completions"
    messages = MESSAGES[variant]
    if target == "httpx":
        import httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=30)

        async def call(stream: bool) -> None:
            payload = raw_payload(variant, stream)  # per request, as tokenhub encodes
            if not stream:
                r = await client.post(url, content=payload, headers=HEADERS)
                json.loads(r.content)
                return
            async with client.stream("POST", url, content=payload, headers=HEADERS) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        json.loads(line[6:])

        return call, client.aclose, None
    if target == "aiohttp":
        import aiohttp

        session: Any = None

        async def call(stream: bool) -> None:
            nonlocal session
            if session is None:
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
            payload = raw_payload(variant, stream)  # per request, as tokenhub encodes
            async with session.post(url, data=payload, headers=HEADERS) as r:
                if not stream:
                    json.loads(await r.read())
                    return
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("data: ") and line != "data: [DONE]":
                        json.loads(line[6:])

        async def aclose() -> None:
            if session is not None:
                await session.close()

        return call, aclose, None
    if target.startswith("tokenhub-"):
        from tokenhub import Hub

        hub = Hub.from_config(
            {
                "providers": {
                    "o": {
                        "kind": "openai",
                        "base_url": base,
                        "api_key": "sk-bench",
                        "http": target.removeprefix("tokenhub-"),
                        "max_connections": 100,
                    }
                },
                "models": {MODEL: {"provider": "o"}},
            }
        )

        async def call(stream: bool) -> None:
            if not stream:
                await hub.chat(messages, model=MODEL)
                return
            async for _ in hub.stream(messages, model=MODEL):
                pass

        return call, hub.aclose, None
    from litellm import Router

    router = Router(
        model_list=[
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": base,
                    "api_key": "sk-bench",
                },
            }
        ]
    )

    async def call(stream: bool) -> None:
        if not stream:
            await router.acompletion(model=MODEL, messages=messages)
            return
        response = await router.acompletion(model=MODEL, messages=messages, stream=True)
        async for _ in response:
            pass

    async def aclose() -> None:
        pass

    return call, aclose, None


async def client_run(
    target: str, variant: str, *, stream: bool, inflight: int, n: int, base: str
) -> dict[str, Any]:
    import asyncio

    call, aclose, _ = make_client(target, variant, base)
    for _ in range(min(50, n)):  # warm up: connections, imports, caches
        await call(stream)
    latencies: list[float] = []
    todo = n

    async def worker() -> None:
        nonlocal todo
        while todo > 0:
            todo -= 1
            t = time.perf_counter()
            await call(stream)
            latencies.append(time.perf_counter() - t)

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    await aclose()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    latencies.sort()
    return {
        "cpu_us": cpu / n * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1e3,
        "rps": n / wall,
        "rss_mib": r1.ru_maxrss / 1024,
    }


def client_main(args: list[str]) -> None:
    import asyncio

    target, variant, mode, inflight, n, base = args
    stream = mode == "stream"
    result = asyncio.run(
        client_run(target, variant, stream=stream, inflight=int(inflight), n=int(n), base=base)
    )
    print(json.dumps(result))


# -- the driver ----------------------------------------------------------------------


def available(target: str) -> bool:
    module = {"httpx": "httpx", "aiohttp": "aiohttp", "litellm": "litellm"}.get(target)
    if target == "tokenhub-aiohttp":
        module = "aiohttp"
    if module is None:
        return True
    probe = [sys.executable, "-c", f"import {module}"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def pinned(core: int | None, argv: list[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(core), *argv]


def start_upstream(tmp: Path, chunks: int) -> tuple[subprocess.Popen[str], int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("a C compiler (cc or gcc) is needed to build benchmarks/upstream.c")
    binary = tmp / "upstream"
    subprocess.run(
        [cc, "-O2", "-D_GNU_SOURCE", "-o", str(binary), str(HERE / "upstream.c")], check=True
    )
    last = (os.cpu_count() or 1) - 1
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen(
        pinned(last if last > 0 else None, [str(binary), str(port), str(chunks)]),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != f"ready {port}":
        sys.exit("the upstream did not start")
    return proc, port


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("tokenhub", "httpx", "aiohttp", "litellm"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(HERE / "results" / "transport.json"))
    parser.add_argument("--compare", help="an earlier results JSON to compare this run with")
    opts = parser.parse_args()
    reps = 2 if opts.quick else 5
    sizes = {"non-stream": 300 if opts.quick else 2000, "stream": 100 if opts.quick else 500}
    variants = [v for v in VARIANTS if v in opts.variants.split(",")]
    client_core = 0 if (os.cpu_count() or 1) > 1 else None
    targets = []
    for target in opts.targets.split(","):
        if available(target):
            targets.append(target)
        else:
            print(f"{target}: not installed, skipped", file=sys.stderr)
    runs: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        upstream, port = start_upstream(Path(d), chunks=60)
        try:
            for variant in variants:
                base = base_url(port, variant)
                for mode in ("non-stream", "stream"):
                    for inflight in (1, 32):
                        # Repetitions interleave the targets, so that a slow spell of a shared
                        # machine weighs on every target alike, not on whichever ran during it.
                        for rep in range(reps):
                            print(
                                f"{variant} {mode} x{inflight}: round {rep + 1}/{reps}",
                                file=sys.stderr,
                            )
                            for target in targets:
                                n = sizes[mode] // (5 if target == "litellm" else 1)
                                argv = [sys.executable, __file__, "--client", target, variant]
                                argv += [mode, str(inflight), str(n), base]
                                proc = subprocess.run(
                                    pinned(client_core, argv),
                                    capture_output=True,
                                    text=True,
                                    check=True,
                                )
                                result = json.loads(proc.stdout.strip().splitlines()[-1])
                                runs.setdefault((variant, target, mode, inflight), []).append(
                                    result
                                )
        finally:
            upstream.terminate()
            upstream.wait()
    elapsed = time.perf_counter() - started
    results: list[dict[str, Any]] = []
    for (variant, target, mode, inflight), rs in sorted(
        runs.items(), key=lambda kv: _order(*kv[0])
    ):
        row = {
            "variant": variant,
            "target": target,
            "mode": mode,
            "inflight": inflight,
            "requests": sizes[mode] // (5 if target == "litellm" else 1),
            **{k: statistics.median(r[k] for r in rs) for k in rs[0]},
            "cpu_us_runs": [round(r["cpu_us"], 1) for r in rs],
        }
        results.append(row)
        print(
            f"{variant:<9} {target:<17} {mode:<10} x{inflight:<3} "
            f"{row['cpu_us']:8.0f} µs CPU/req  p50 {row['p50_ms']:6.2f} ms  "
            f"p99 {row['p99_ms']:6.2f} ms  {row['rps']:7.0f} req/s  "
            f"RSS {row['rss_mib']:5.1f} MiB",
            flush=True,
        )
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "quick": opts.quick,
        "repetitions": reps,
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(elapsed),
    }
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    md = tables(results)
    out.with_suffix(".md").write_text(md + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.md')} ({elapsed / 60:.1f} minutes)\n")
    print(md)
    if opts.compare:
        before = json.loads(Path(opts.compare).read_text())["results"]
        print(f"\nagainst {opts.compare}:\n")
        print(comparison(before, results))


def _order(variant: str, target: str, mode: str, inflight: int) -> tuple[int, int, int, int]:
    return (VARIANTS.index(variant), TARGETS.index(target), mode == "stream", inflight)


COLS = (("non-stream", 1), ("non-stream", 32), ("stream", 1), ("stream", 32))
ABOUT = {
    "small": "a one-line question; a 285-byte answer; a stream of 62 one-word events",
    "realistic": (
        "a system prompt and a 400-character question; OpenAI's 1.2 KB answer with its "
        "response headers; a chunked stream of 70 events of a few words, then the usage chunk"
    ),
}


def _cpu(results: list[dict[str, Any]], variant: str) -> dict[tuple[str, str, int], float]:
    # Rows written before the variants existed are the small variant.
    return {
        (r["target"], r["mode"], r["inflight"]): r["cpu_us"]
        for r in results
        if r.get("variant", "small") == variant
    }


def tables(results: list[dict[str, Any]]) -> str:
    """Per variant: CPU µs per request with ratios to the raw clients, then the ratio targets."""
    parts = []
    for variant in VARIANTS:
        cpu = _cpu(results, variant)
        if cpu:
            parts.append(f"**{variant} bodies** ({ABOUT[variant]}):\n\n{table(cpu)}")
            parts.append(ratio_table(cpu))
    return "\n\n".join(parts)


def table(cpu: dict[tuple[str, str, int], float]) -> str:
    """CPU µs per request, with ratios to raw httpx and raw aiohttp."""
    head = "| client | " + " | ".join(f"{m}, {i} in flight" for m, i in COLS) + " |"
    lines = [head, "|---" * (len(COLS) + 1) + "|"]
    for target in TARGETS:
        if not any(k[0] == target for k in cpu):
            continue
        cells = []
        for m, i in COLS:
            us = cpu.get((target, m, i))
            if us is None:
                cells.append("-")
                continue
            ratios = []
            for ref in ("httpx", "aiohttp"):
                base = cpu.get((ref, m, i))
                if base and target != ref:
                    ratios.append(f"{us / base:.2f}x {ref}")
            cells.append(f"{us:,.0f} µs" + (f" ({', '.join(ratios)})" if ratios else ""))
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(cpu: dict[tuple[str, str, int], float]) -> str:
    """Each tokenhub target ÷ its raw HTTP library, against the ceiling; over it in bold."""
    head = "| ratio | target | " + " | ".join(f"{m}, {i} in flight" for m, i in COLS) + " |"
    lines = [head, "|---" * (len(COLS) + 2) + "|"]
    for target, (ref, ceiling) in RATIO_TARGETS.items():
        cells = []
        for m, i in COLS:
            us, base = cpu.get((target, m, i)), cpu.get((ref, m, i))
            if us is None or not base:
                cells.append("-")
                continue
            ratio = us / base
            cells.append(f"{ratio:.2f}" if ratio <= ceiling else f"**{ratio:.2f}**")
        lines.append(f"| {target} ÷ {ref} | ≤ {ceiling} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """CPU µs per request before → after (after ÷ before), per variant, target and cell."""
    lines = []
    for variant in VARIANTS:
        b, a = _cpu(before, variant), _cpu(after, variant)
        if not b or not a:
            continue
        lines += [f"**{variant} bodies**, before → after:", ""]
        lines.append("| client | " + " | ".join(f"{m}, {i} in flight" for m, i in COLS) + " |")
        lines.append("|---" * (len(COLS) + 1) + "|")
        for target in TARGETS:
            cells = []
            for m, i in COLS:
                x, y = b.get((target, m, i)), a.get((target, m, i))
                cells.append(
                    "-" if x is None or y is None else f"{x:,.0f} → {y:,.0f} ({y / x:.2f}x)"
                )
            if any(c != "-" for c in cells):
                lines.append(f"| {target} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    else:
        main()
