"""What a stream has delivered so far, accumulated chunk by chunk."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenhub._models import ToolCall

if TYPE_CHECKING:
    from tokenhub._models import Chunk, ToolCallDelta, Usage

__all__ = ["Partial"]


class Partial:
    """What a stream has delivered so far: text, reasoning, tool calls, usage, finish reason."""

    __slots__ = ("_reasoning", "_text", "_tools", "finish_reason", "last", "usage")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tools: dict[int, list[str]] = {}
        self.usage: Usage | None = None
        self.last: Chunk | None = None
        #: The finish reason, once a chunk brought it (a usage-only chunk may follow it).
        self.finish_reason: str | None = None

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

    def tool_parts(self) -> dict[int, tuple[str, str]]:
        """The tool calls so far by stream index: (name, arguments joined)."""
        return {i: (parts[1], "".join(parts[2:])) for i, parts in self._tools.items()}

    def add(self, chunk: Chunk) -> None:
        """Take in one chunk (this runs for every chunk: most carry text and nothing else)."""
        self.last = chunk
        text = chunk.text
        if text:
            self._text.append(text)
        if chunk.reasoning:
            self._reasoning.append(chunk.reasoning)
        if chunk.tool_calls:
            self._add_tools(chunk.tool_calls)
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason

    def _add_tools(self, deltas: tuple[ToolCallDelta, ...]) -> None:
        for d in deltas:
            parts = self._tools.setdefault(d.index, ["", ""])
            if d.id:
                parts[0] = d.id
            if d.name:
                parts[1] = d.name
            if d.arguments:
                parts.append(d.arguments)
