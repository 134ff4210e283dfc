"""What the caller sees, and how long it takes, for each fault category (default settings).

Two candidates (m1 preferred, m2 fallback) on the FakeProvider unless noted; the real clock,
except for the recovery rows (a FakeClock: an outage of 40 s costs no real time). Each table
is run per wire format (OpenAI, Anthropic) and HTTP implementation (httpx, aiohttp):

    python benchmarks/faults.py [--wire openai,anthropic] [--http httpx,aiohttp]

The fallback answers with the same text as the preferred model would, as a deterministic
model (or a retry of the same prompt at temperature 0) does: that is what a stream rescue
needs. The silent-provider rows use a 1 s read timeout instead of the 60 s default, and the
stall row 10 s, to stay short. "warm" rows first send 12 good streams, so that learned
timeouts have history.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio

from tokenhub import Hub
from tokenhub.testing import FakeClock, FakeProvider, Reply

HELLO = [{"role": "user", "content": "Hello"}]
TEXT = "Once upon a time there was a fox who lived in a wood."


def config(
    fake: FakeProvider,
    names: tuple[str, ...],
    *,
    read: float | None = None,
    kind: str = "openai",
    http: str = "httpx",
) -> dict[str, Any]:
    url = fake.anthropic_base_url if kind == "anthropic" else fake.openai_base_url
    provider: dict[str, Any] = {"kind": kind, "base_url": url, "http": http}
    if read:
        provider["timeouts"] = {"read": read}
    return {
        "providers": {"o": provider},
        "models": {
            n: {"provider": "o", "pricing": {"input": i + 1, "output": i + 1}}
            for i, n in enumerate(names)
        },
        "routing": {"mode": "cheap", "fallbacks": list(names[1:])},
    }


async def case(
    where: dict[str, str],
    name: str,
    reply: Reply,
    *,
    names: tuple[str, ...] = ("m1", "m2"),
    stream: bool = False,
    read: float | None = None,
    repeat: int = 1,
    warm: int = 0,
    pin: str | None = None,
    once: bool = False,
) -> None:
    async with FakeProvider() as fake:
        fake.default(None, Reply(text=TEXT))
        if warm:
            fake.script("m1", *[Reply(text=TEXT)] * warm, reply)
        else:
            (fake.script if once else fake.default)("m1", reply)
        async with Hub.from_config(config(fake, names, read=read, **where)) as hub:
            for _ in range(warm):
                _ = [c async for c in hub.stream(HELLO)]
            for _ in range(repeat - 1):
                await hub.chat(HELLO)
            started = time.monotonic()
            try:
                if stream:
                    s = hub.stream(HELLO, model=pin)
                    text = "".join([c.text async for c in s])
                    outcome = f"answer from {s.response.model}"
                    if text != TEXT:
                        outcome += " (other text)"
                else:
                    r = await hub.chat(HELLO, model=pin)
                    outcome = f"answer from {r.model}"
            except Exception as exc:  # noqa: BLE001 - the outcome is what is reported
                outcome = type(exc).__name__
            elapsed = time.monotonic() - started
        sent = [r.model for r in fake.requests][warm:][-4:]
    print(f"{name:<46} {outcome:<24} {elapsed * 1000:>8.0f} ms   upstream saw {sent}")


async def recovery(where: dict[str, str], *, slower: bool = False) -> None:
    """m1 down for 40 s (FakeClock), a request every second: when does m1 serve again?

    ``slower``: the recovered m1 answers 50 ms after m2, so it loses every race
    against it; each fake second then also lets 0.1 s of real time pass.
    """
    clock = FakeClock()
    async with FakeProvider() as fake:
        fake.default(None, Reply(text=TEXT))
        fake.default("m1", Reply(status=503))
        async with Hub.from_config(config(fake, ("m1", "m2"), **where), clock=clock) as hub:
            start = clock.monotonic()
            back = None
            for second in range(120):
                if second == 40:  # recovered
                    fake.default("m1", Reply(text=TEXT, delay_headers=0.05 if slower else 0))
                r = await hub.chat(HELLO)
                if second >= 40 and r.model == "m1":
                    back = clock.monotonic() - start - 40
                    break
                clock.advance(1)
                if slower:
                    await anyio.sleep(0.1)
    outcome = "never within 80 s" if back is None else f"m1 serves {back:.0f} s after"
    name = "outage of 40 s, recovered " + ("m1 slower than m2" if slower else "(fake clock)")
    print(f"{name:<46} {outcome:<24}")


async def table(where: dict[str, str]) -> None:
    overflow = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (5000 in the messages, 4000 in the completion).",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    }
    print(f"\n{where['kind']} wire, {where['http']}")
    print(f"{'fault':<46} {'caller sees':<24} {'time':>11}")
    await case(
        where,
        "429 with Retry-After: 2 (fallback exists)",
        Reply(status=429, headers={"retry-after": "2"}),
    )
    await case(
        where,
        "429 with Retry-After: 2 (only candidate)",
        Reply(status=429, headers={"retry-after": "2"}),
        names=("m1",),
    )
    await case(where, "503 persistent (fallback exists)", Reply(status=503))
    await case(where, "503 persistent (only candidate)", Reply(status=503), names=("m1",))
    await case(where, "503 with breaker open (6th request)", Reply(status=503), repeat=6)
    await case(where, "reset before headers", Reply(reset=True))
    await case(where, "never answers (read timeout 1 s)", Reply(hang=True), read=1)
    await case(
        where,
        "slow first token 5 s, warm (history: ms)",
        Reply(text=TEXT, delay_first_token=5),
        stream=True,
        warm=12,
    )
    await case(where, "stream cut after 2 chunks", Reply(text=TEXT, cut_after=2), stream=True)
    await case(
        where,
        "stream stall after 1 chunk, warm (read 10 s)",
        Reply(text=TEXT, stall_after=1),
        stream=True,
        read=10,
        warm=12,
    )
    await case(where, "malformed chunk first", Reply(text=TEXT, malformed_after=0), stream=True)
    await case(where, "malformed chunk after 2", Reply(text=TEXT, malformed_after=2), stream=True)
    await case(
        where,
        "in-stream error after 2 chunks",
        Reply(text=TEXT, stream_error={"type": "server_error"}, stream_error_after=2),
        stream=True,
    )
    await case(where, "stream without its terminator", Reply(text=TEXT, no_done=True), stream=True)
    await case(where, "pinned model (model=m1), one 500", Reply(status=500), pin="m1", once=True)
    if where["kind"] == "openai":
        await case(where, "context overflow with numbers", Reply(status=400, body=overflow))
    await recovery(where)
    await recovery(where, slower=True)


async def main(wires: list[str], https: list[str]) -> None:
    for kind in wires:
        for http in https:
            await table({"kind": kind, "http": http})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wire", default="openai,anthropic")
    parser.add_argument("--http", default="httpx,aiohttp")
    args = parser.parse_args()
    anyio.run(main, args.wire.split(","), args.http.split(","))
