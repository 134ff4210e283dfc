"""Route chat requests through a Hub to the bundled fake provider (offline, no API keys)."""

from __future__ import annotations

import anyio

from tokenhub import Hub
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
                "gpt-4o-mini": {
                    "provider": "openai",
                    "pricing": {"input": 0.15, "output": 0.60},
                    "quality": 0.6,
                },
                "claude-haiku": {
                    "provider": "anthropic",
                    "upstream": "claude-3-5-haiku-latest",
                    "pricing": {"input": 0.8, "output": 4.0},
                    "quality": 0.7,
                },
                "vision-only": {
                    "provider": "openai",
                    "capabilities": ["vision"],
                    "pricing": {"input": 0.1, "output": 0.1},
                },
            },
            "routing": {"mode": "cheap"},
        }
        fake.default("gpt-4o-mini", Reply(text="Hello from the OpenAI wire format!"))
        messages = [{"role": "user", "content": "What's the weather in Paris?"}]
        tools = [
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": {"type": "object"}},
            }
        ]
        async with Hub.from_config(config) as hub:
            r = await hub.chat(messages, tools=tools)  # no model named: the policy chooses
            print(f"answered by {r.model} via {r.provider}: {r.text!r} (cost ${r.cost_usd:.7f})")
            print(r.trace)  # why: candidates with scores, exclusions, attempts
            fake.script("gpt-4o-mini", Reply(status=429, headers={"retry-after": "2"}))
            stream = hub.stream(messages, tools=tools)  # the cheap model is rate-limited now
            async for chunk in stream:
                print(chunk.text, end="", flush=True)
            print(
                f"\n  -> {stream.response.model}; attempts: {[(a.model, a.outcome) for a in stream.trace.attempts]}"
            )
        print(f"the fake provider saw {len(fake.requests)} HTTP requests")


if __name__ == "__main__":
    anyio.run(main)
