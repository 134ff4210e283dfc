"""What the caller sees, and how long it takes, for each fault category (default settings).

Two candidates (m1 preferred, m2 fallback) on the FakeProvider unless noted; the real clock.
The silent-provider rows use a 1 s read timeout instead of the 60 s default, to stay short:
the cost is one timeout either way.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from tokenhub import Hub
from tokenhub.testing import FakeProvider, Reply

HELLO = [{"role": "user", "content": "Hello"}]


def config(
    fake: FakeProvider, names: tuple[str, ...], read: float | None = None, kind: str = "openai"
) -> dict[str, Any]:
    url = fake.anthropic_base_url if kind == "anthropic" else fake.openai_base_url
    provider: dict[str, Any] = {"kind": kind, "base_url": url}
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
    name: str,
    reply: Reply,
    *,
    names: tuple[str, ...] = ("m1", "m2"),
    stream: bool = False,
    read: float | None = None,
    repeat: int = 1,
    kind: str = "openai",
    pin: str | None = None,
    once: bool = False,
) -> None:
    async with FakeProvider() as fake:
        (fake.script if once else fake.default)("m1", reply)
        async with Hub.from_config(config(fake, names, read, kind)) as hub:
            for _ in range(repeat - 1):
                await hub.chat(HELLO)
            started = time.monotonic()
            try:
                if stream:
                    s = hub.stream(HELLO, model=pin)
                    _ = [c async for c in s]
                    outcome = f"answer from {s.response.model}"
                else:
                    r = await hub.chat(HELLO, model=pin)
                    outcome = f"answer from {r.model}"
            except Exception as exc:  # noqa: BLE001 - the outcome is what is reported
                outcome = type(exc).__name__
            elapsed = time.monotonic() - started
        sent = [r.model for r in fake.requests][-4:]
    print(f"{name:<44} {outcome:<24} {elapsed * 1000:>8.0f} ms   upstream saw {sent}")


async def main() -> None:
    overflow = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (5000 in the messages, 4000 in the completion).",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    }
    print(f"{'fault':<44} {'caller sees':<24} {'time':>11}")
    await case(
        "429 with Retry-After: 2 (fallback exists)", Reply(status=429, headers={"retry-after": "2"})
    )
    await case(
        "429 with Retry-After: 2 (only candidate)",
        Reply(status=429, headers={"retry-after": "2"}),
        names=("m1",),
    )
    await case("429 without hint, persistent (only cand.)", Reply(status=429), names=("m1",))
    await case("503 persistent (fallback exists)", Reply(status=503))
    await case("503 persistent (only candidate)", Reply(status=503), names=("m1",))
    await case("503 with breaker open (6th request)", Reply(status=503), repeat=6)
    await case("reset before headers", Reply(reset=True))
    await case("never answers (read timeout 1 s)", Reply(hang=True), read=1)
    await case(
        "slow first token 1.5 s (read timeout 1 s)",
        Reply(text="x", delay_first_token=1.5),
        stream=True,
        read=1,
    )
    await case("stream cut after 2 chunks", Reply(text="a b c d", cut_after=2), stream=True)
    await case(
        "stream stall (read timeout 1 s)", Reply(text="a b c", stall_after=1), stream=True, read=1
    )
    await case("malformed chunk first", Reply(text="a b", malformed_after=0), stream=True)
    await case("malformed chunk after 1", Reply(text="a b", malformed_after=1), stream=True)
    await case("stream without [DONE]", Reply(text="a b", no_done=True), stream=True)
    await case(
        "Anthropic stream without message_stop",
        Reply(text="a b", no_done=True),
        stream=True,
        kind="anthropic",
    )
    await case("pinned model (model=m1), one 500", Reply(status=500), pin="m1", once=True)
    await case("context overflow with numbers", Reply(status=400, body=overflow))
    await case(
        "content filter",
        Reply(
            status=400,
            body={"error": {"message": "filtered", "type": None, "code": "content_filter"}},
        ),
    )


if __name__ == "__main__":
    anyio.run(main)
