"""What a stream has delivered so far, accumulated chunk by chunk."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenhub._models import ToolCall

if TYPE_CHECKING:
    from tokenhub._models import Chunk, Usage

__all__ = ["Partial"]


class Partial:
    """What a stream has delivered so far: text, reasoning, tool calls and usage."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tools: dict[int, list[str]] = {}
        self.usage: Usage | None = None
        self.last: Chunk | None = None

    @property
    def text(self) -> str:
        """The text so far."""
        return "".join(self._text)

    @property
    def reasoning(self) -> str:
        """The reasoning text so far."""
        return "".join(self._reasoning)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls so far, their argument fragments joined."""
        return tuple(
            ToolCall(id=parts[0], name=parts[1], arguments="".join(parts[2:]))
            for _, parts in sorted(self._tools.items())
        )

    def add(self, chunk: Chunk) -> None:
        """Take in one chunk."""
        self.last = chunk
        if chunk.text:
            self._text.append(chunk.text)
        if chunk.reasoning:
            self._reasoning.append(chunk.reasoning)
        for d in chunk.tool_calls:
            parts = self._tools.setdefault(d.index, ["", ""])
            if d.id:
                parts[0] = d.id
            if d.name:
                parts[1] = d.name
            if d.arguments:
                parts.append(d.arguments)
        if chunk.usage is not None:
            self.usage = chunk.usage
