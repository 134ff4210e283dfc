"""Request bodies and SSE parsers shared by the tests of tokenhub.testing."""

from __future__ import annotations

from typing import Any

import httpx
import pydantic
import pytest
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletionChunk

BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
EVENT_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


def oa(model: str = "gpt", text: str = "hello big world", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def an(model: str = "claude", text: str = "hello big world", **extra: Any) -> dict[str, Any]:
    body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    return body | extra


def events(raw: str) -> list[tuple[str | None, str]]:
    """Parse complete SSE events into (event name, data); comments come back as (":", text)."""
    out: list[tuple[str | None, str]] = []
    for block in raw.split("\n\n")[:-1]:
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                out.append((":", line[1:].strip()))
            elif line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if data:
            out.append((name, "\n".join(data)))
    return out


def data_events(raw: str) -> list[str]:
    return [data for name, data in events(raw) if name != ":"]


async def collect(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> tuple[httpx.Response, str, Exception | None]:
    """Stream a POST, returning the response, every byte received and the error that ended it."""
    received = bytearray()
    error: Exception | None = None
    async with client.stream("POST", path, json=body) as response:
        try:
            async for piece in response.aiter_raw():
                received += piece
        except httpx.HTTPError as exc:
            error = exc
    return response, received.decode(), error


def chunks(raw: str) -> list[ChatCompletionChunk]:
    return [ChatCompletionChunk.model_validate_json(d) for d in data_events(raw) if d != "[DONE]"]


def anthropic_events(raw: str) -> list[Any]:
    parsed = []
    for name, data in events(raw):
        if name in {"ping", "error", ":"}:
            continue
        event = EVENT_ADAPTER.validate_json(data)
        assert event.type == name
        parsed.append(event)
    return parsed


def text_of(parsed: list[Any]) -> str:
    return "".join(
        e.delta.text
        for e in parsed
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
