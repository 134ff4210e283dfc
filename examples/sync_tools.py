"""The blocking SyncHub and a tool-call round trip through Anthropic's wire format (offline)."""

from __future__ import annotations

from anyio.from_thread import start_blocking_portal

from tokenhub import SyncHub
from tokenhub.testing import FakeProvider, Reply, ScriptedToolCall

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

# The fake provider is async; run it on a background event loop for this synchronous script.
with start_blocking_portal() as portal, portal.wrap_async_context_manager(FakeProvider()) as fake:
    weather = ScriptedToolCall(id="toolu_1", name="get_weather", arguments={"city": "Paris"})
    fake.script("claude-3-5-haiku-latest", Reply(tool_calls=[weather]))
    fake.script("claude-3-5-haiku-latest", Reply(text="It is 18°C in Paris."))
    config = {
        "providers": {
            "anthropic": {
                "kind": "anthropic",
                "base_url": fake.anthropic_base_url,
                "api_key": "sk-ant-demo",
            }
        },
        "models": {
            "claude-haiku": {"provider": "anthropic", "upstream": "claude-3-5-haiku-latest"}
        },
    }
    with SyncHub.from_config(config) as hub:
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        first = hub.chat(messages, model="claude-haiku", tools=[WEATHER])
        call = first.tool_calls[0]
        print(f"model asked for {call.name}({call.parsed_arguments()}) id={call.id}")
        messages += [
            first.to_openai()["choices"][0]["message"],
            {"role": "tool", "tool_call_id": call.id, "content": "18C"},
        ]
        print("answer:", hub.chat(messages, model="claude-haiku", tools=[WEATHER]).text)
    sent = fake.requests[-1].body["messages"]
    print(
        "sent to Anthropic as:",
        [block["type"] for m in sent if isinstance(m["content"], list) for block in m["content"]],
    )
