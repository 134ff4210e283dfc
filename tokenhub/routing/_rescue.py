"""Rescuing a broken stream: the pure parts (what to send, and checking what comes back).

A stream that broke after delivering chunks is finished by another attempt in
one of three ways (:class:`~tokenhub._models.Splice` records which):

* ``prefill``: the delivered text is sent as the start of the assistant's
  answer to a model that continues it (declared ``prefill``-capable);
* ``regenerate``: the request is sent again and the new answer is checked,
  chunk by chunk, against what was delivered (:class:`Verifier`); once it has
  reproduced all of it, only what is new is passed on; at the first difference
  the attempt is dropped (:class:`Diverged`), so it stops being paid for;
* ``instruct`` (opt-in, unverified): a model is asked to continue.

Nothing here does I/O or reads a clock; ``_streaming`` drives the attempts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

from tokenhub._models import Message, ToolCallDelta, Usage

if TYPE_CHECKING:
    from tokenhub._models import ChatRequest, Chunk
    from tokenhub.routing._partial import Partial

__all__ = ["CONTINUE", "Diverged", "Trim", "Verifier", "estimated_usage", "prefilled", "told"]

#: What a model is asked in ``instruct`` mode, after the delivered text as its own turn.
CONTINUE = (
    "Your previous answer was cut off. Continue it exactly from where it stopped: "
    "do not repeat anything, do not comment, just write the rest."
)


class Diverged(Exception):  # noqa: N818 - not an error: a regeneration that took another path
    """A regenerated answer differs from what was delivered (or ended before reproducing it)."""

    def __init__(self, why: str, received: int) -> None:
        super().__init__(why)
        self.why = why
        #: Characters of text and tool arguments received before it was dropped.
        self.received = received


class Verifier:
    """Check a regenerated stream against the delivered answer; pass on only what is new.

    :meth:`feed` takes each chunk of the new attempt and returns ``None`` while
    it is still reproducing the delivered text and tool calls, then the chunk
    with the repeated part cut off. It raises :class:`Diverged` at the first
    character that differs: a tool call where text was delivered, a tool call
    named differently, arguments that differ, text or arguments that go on
    where the delivered answer had moved on, or an answer that ends first.
    Reasoning is dropped until the splice (it was the broken attempt's own).
    """

    __slots__ = (
        "_args",
        "_last_tool",
        "_names",
        "_pos",
        "_text",
        "_tool_pos",
        "received",
        "spliced",
    )

    def __init__(self, partial: Partial) -> None:
        self._text = partial.text
        tools = partial.tool_parts()
        self._names = {i: name for i, (name, _) in tools.items()}
        self._args = {i: args for i, (_, args) in tools.items()}
        self._tool_pos = dict.fromkeys(tools, 0)
        self._last_tool = max(tools) if tools else None
        self._pos = 0
        self.received = 0
        self.spliced = False

    def _complete(self) -> bool:
        return self._pos == len(self._text) and all(
            self._tool_pos[i] == len(args) for i, args in self._args.items()
        )

    def _diverged(self, why: str) -> Diverged:
        return Diverged(why, self.received)

    def feed(self, chunk: Chunk) -> Chunk | None:
        """The part of ``chunk`` to deliver (``None``: nothing yet), or raise :class:`Diverged`."""
        was = self.spliced
        text = self._match_text(chunk.text) if chunk.text else ""
        deltas: tuple[ToolCallDelta, ...] = ()
        if chunk.tool_calls:
            deltas = tuple(d for d in map(self._match_tool, chunk.tool_calls) if d is not None)
        if not was:
            self.spliced = self._complete()
            if not self.spliced:
                if chunk.finish_reason is not None:
                    raise self._diverged("the new answer ended before the splice point")
                return None
        reasoning = chunk.reasoning if was else ""
        if text or deltas or reasoning or chunk.finish_reason is not None or chunk.usage:
            return attrs.evolve(chunk, text=text, tool_calls=deltas, reasoning=reasoning)
        return None

    def _match_text(self, text: str) -> str:
        self.received += len(text)
        pos, need = self._pos, len(self._text) - self._pos
        if need > 0:
            n = min(need, len(text))
            if not self._text.startswith(text[:n], pos):
                raise self._diverged(f"the new answer differs at character {pos}")
            self._pos = pos + n
            text = text[n:]
        if text and self._args and not self.spliced:
            raise self._diverged("the new answer goes on with text where tool calls followed")
        return text

    def _match_tool(self, d: ToolCallDelta) -> ToolCallDelta | None:
        self.received += len(d.arguments)
        i = d.index
        ref = self._args.get(i)
        if ref is None:  # a call after the delivered ones
            if not self._complete():
                raise self._diverged(f"the new answer starts tool call {i} early")
            return d
        if self._pos < len(self._text):
            raise self._diverged("the new answer calls a tool where text was delivered")
        if any(j < i and self._tool_pos[j] < len(a) for j, a in self._args.items()):
            raise self._diverged(f"the new answer starts tool call {i} early")
        if d.name and d.name != self._names[i]:
            raise self._diverged(f"the new answer calls another tool at {i}")
        pos = self._tool_pos[i]
        n = min(len(ref) - pos, len(d.arguments))
        if d.arguments[:n] != ref[pos : pos + n]:
            raise self._diverged(f"the arguments of tool call {i} differ")
        self._tool_pos[i] = pos + n
        rest = d.arguments[n:]
        if not rest:
            return None
        if i != self._last_tool:
            raise self._diverged(f"tool call {i} goes on where the delivered one had ended")
        # The caller has the call's id and name already: only the arguments go on.
        return ToolCallDelta(index=i, arguments=rest)


class Trim:
    """Drop the whitespace a prefill left off from the start of its continuation, if repeated.

    Providers refuse a prefill that ends in whitespace, so it is sent without
    it; a continuation that starts with that whitespace must not repeat it.
    """

    __slots__ = ("_space", "received", "spliced")

    def __init__(self, space: str) -> None:
        self._space = space
        self.spliced = True
        self.received = 0

    def feed(self, chunk: Chunk) -> Chunk | None:
        """``chunk``, without the repeated whitespace at the start of the continuation."""
        space = self._space
        if not space or not chunk.text:
            return chunk
        self._space = ""
        if not chunk.text.startswith(space):
            return chunk
        text = chunk.text[len(space) :]
        if text or chunk.tool_calls or chunk.finish_reason is not None or chunk.usage:
            return attrs.evolve(chunk, text=text)
        return None


def prefilled(request: ChatRequest, text: str) -> tuple[ChatRequest, str]:
    """``request`` with ``text`` as the start of the answer, and the whitespace left off it."""
    head = text.rstrip()
    prefill = Message(role="assistant", content=head)
    return attrs.evolve(request, messages=(*request.messages, prefill)), text[len(head) :]


def told(request: ChatRequest, text: str) -> tuple[ChatRequest, str]:
    """``request`` with ``text`` as the answer so far and a request to go on; the space left off."""
    head = text.rstrip()
    messages = (
        *request.messages,
        Message(role="assistant", content=head),
        Message(role="user", content=CONTINUE),
    )
    return attrs.evolve(request, messages=messages), text[len(head) :]


def estimated_usage(prompt_tokens: int, received_chars: int) -> Usage:
    """What a dropped attempt was likely billed: the prompt and ~4 characters per output token."""
    return Usage(input_tokens=prompt_tokens, output_tokens=math.ceil(received_chars / 4))
