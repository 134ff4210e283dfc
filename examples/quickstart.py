"""Route chat requests through a Hub to the bundled fake provider (offline, no API keys)."""

from __future__ import annotations

import anyio

from tokenhub import Hub
from tokenhub.errors import RateLimitError
from tokenhub.testing import FakeProvider, Reply


async def main() -> None:
    async with FakeProvider() as fake:  # a real HTTP server on 127.0.0.1 speaking both APIs
        config = {
            "providers": {
                "openai": {
                    "kind": "openai",
                    "base_url": fake.openai_base_url,
                    "api_key": "sk-demo",
                },
                "anthropic": {
                    "kind": "anthropic",
                    "base_url": fake.anthropic_base_url,
                    "api_key": "sk-ant-demo",
                },
            },
            "models": {
                "gpt-4o-mini": {"provider": "openai", "pricing": {"input": 0.15, "output": 0.60}},
                "claude-haiku": {
                    "provider": "anthropic",
                    "upstream": "claude-3-5-haiku-latest",
                    "pricing": {"input": 0.8, "output": 4.0},
                },
            },
        }
        fake.script("gpt-4o-mini", Reply(text="Hello from the OpenAI wire format!", usage=(12, 7)))
        fake.script(
            "claude-3-5-haiku-latest",
            Reply(text="Once upon a time, a router kept its promises.", usage=(14, 9)),
        )
        fake.script("gpt-4o-mini", Reply(status=429, headers={"retry-after": "2"}))
        messages = [{"role": "user", "content": "Hello"}]
        async with Hub.from_config(config) as hub:
            r = await hub.chat(messages, model="gpt-4o-mini", temperature=0)
            print(f"{r.model} via {r.provider} (pinned by model=): {r.text!r}")
            print(f"  usage={r.usage} cost=${r.cost_usd} request_id={r.request_id}")
            stream = hub.stream(messages, model="claude-haiku")
            print("claude-haiku via anthropic, streamed: ", end="")
            async for chunk in stream:
                print(chunk.text, end="", flush=True)
            print(f"\n  finish={stream.response.finish_reason} cost=${stream.response.cost_usd}")
            try:
                await hub.chat(messages, model="gpt-4o-mini")
            except RateLimitError as e:
                print(
                    f"typed error: {type(e).__name__} class={e.error_class} retry_after={e.retry_after}s"
                )
        print(f"the fake provider saw {len(fake.requests)} HTTP requests")


if __name__ == "__main__":
    anyio.run(main)
