"""A fake LLM provider: a real HTTP/1.1 server for tests, scripted per model.

:class:`FakeProvider` listens on ``127.0.0.1`` (an ephemeral port) and speaks the
OpenAI Chat Completions API (``POST /v1/chat/completions``), the Anthropic Messages
API (``POST /v1/messages``) and ``GET /v1/models``, streaming and not. Each request
pops the next scripted :class:`Reply` for its ``model``; a reply is either an answer
(text, tool calls, usage) or a fault (an HTTP error, a delay, a cut, stalled or
malformed stream, an in-stream error, a TCP reset, a hang). Every request is
recorded as a :class:`RecordedRequest`.

It depends only on the standard library, anyio, h11 and attrs, and runs under
anyio on asyncio and trio::

    from tokenhub.testing import FakeProvider, Reply

    async with FakeProvider() as fake:
        fake.script("gpt-4o-mini", Reply(status=429, headers={"retry-after": "1"}))
        fake.default("gpt-4o-mini", Reply(text="Hi"))
        client = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="k")
        ...  # first call gets a 429, every later call answers "Hi"
        assert fake.requests_for("gpt-4o-mini")[0].headers["authorization"] == "Bearer k"
"""

from __future__ import annotations

from tokenhub.testing._clock import FakeClock as FakeClock
from tokenhub.testing._kdf import insecure_vault_kdf as insecure_vault_kdf
from tokenhub.testing._script import RecordedRequest as RecordedRequest
from tokenhub.testing._script import Reply as Reply
from tokenhub.testing._script import ScriptedToolCall as ScriptedToolCall
from tokenhub.testing._server import FakeProvider as FakeProvider

__all__ = [
    "FakeClock",
    "FakeProvider",
    "RecordedRequest",
    "Reply",
    "ScriptedToolCall",
    "insecure_vault_kdf",
]
