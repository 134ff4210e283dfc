"""The rescue's checks: a regenerated stream is spliced only where it reproduces the delivered answer."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenhub._models import Chunk, ToolCallDelta
from tokenhub.routing._partial import Partial
from tokenhub.routing._rescue import Diverged, Trim, Verifier


def chunk(
    text: str = "", *, tools: tuple[ToolCallDelta, ...] = (), finish: str | None = None
) -> Chunk:
    return Chunk("m", "p", "r", text=text, tool_calls=tools, finish_reason=finish)


def delivered(*chunks: Chunk) -> Partial:
    partial = Partial()
    for c in chunks:
        partial.add(c)
    return partial


def pieces(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


def feed_all(verifier: Verifier, chunks: list[Chunk]) -> list[Chunk]:
    out = []
    for c in chunks:
        fed = verifier.feed(c)
        if fed is not None:
            out.append(fed)
    return out


class TestText:
    @given(
        answer=st.text(min_size=1, max_size=40),
        at=st.integers(min_value=1, max_value=40),
        cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
        other=st.text(max_size=40),
    )
    def test_spliced_exactly_when_the_new_answer_begins_with_the_delivered_text(
        self, answer: str, at: int, cuts: list[int], other: str
    ) -> None:
        """Whatever the chunking, the caller sees delivered + rest == the new answer, or nothing."""
        sent = answer[: min(at, len(answer))]
        verifier = Verifier(delivered(chunk(sent)))
        new = [chunk(p) for p in pieces(other, cuts)] + [chunk(finish="stop")]
        try:
            out = feed_all(verifier, new)
        except Diverged:
            assert not other.startswith(sent)
            return
        assert other.startswith(sent)
        assert sent + "".join(c.text for c in out) == other
        assert "stop" == out[-1].finish_reason

    def test_an_answer_that_ends_before_the_splice_point_diverged(self) -> None:
        """A new answer shorter than what was delivered is dropped at its end."""
        verifier = Verifier(delivered(chunk("Hello there")))
        with pytest.raises(Diverged, match="ended before"):
            feed_all(verifier, [chunk("Hello"), chunk(finish="stop")])

    def test_reasoning_before_the_splice_is_dropped(self) -> None:
        """The new attempt's reasoning is not delivered a second time; after the splice it is."""
        verifier = Verifier(delivered(chunk("Hi")))
        before = Chunk("m", "p", "r", reasoning="thinking", text="H")
        after = Chunk("m", "p", "r", reasoning="more", text="i!")
        assert verifier.feed(before) is None
        fed = verifier.feed(after)
        assert fed is not None
        assert ("!", "") == (fed.text, fed.reasoning)
        late = verifier.feed(Chunk("m", "p", "r", reasoning="late"))
        assert late is not None
        assert "late" == late.reasoning


class TestToolCalls:
    SENT = (chunk(tools=(ToolCallDelta(0, id="call_1", name="f", arguments='{"a": 1'),)),)

    def test_the_same_call_goes_on_with_the_first_id(self) -> None:
        """A regenerated call with the same name and arguments goes on; its own id is dropped."""
        verifier = Verifier(delivered(*self.SENT))
        new = [
            chunk(tools=(ToolCallDelta(0, id="call_9", name="f", arguments='{"a": '),)),
            chunk(tools=(ToolCallDelta(0, arguments='1, "b": 2}'),)),
            chunk(finish="tool_calls"),
        ]
        out = feed_all(verifier, new)
        assert [ToolCallDelta(0, arguments=', "b": 2}')] == [d for c in out for d in c.tool_calls]

    @pytest.mark.parametrize(
        "delta",
        [
            ToolCallDelta(0, id="x", name="g", arguments='{"a": 1'),
            ToolCallDelta(0, id="x", name="f", arguments='{"a": 2'),
            ToolCallDelta(1, id="x", name="f", arguments="{}"),
        ],
        ids=["other-tool", "other-arguments", "other-index"],
    )
    def test_another_call_diverged(self, delta: ToolCallDelta) -> None:
        """Another tool, other arguments or a call at another position is never spliced."""
        verifier = Verifier(delivered(*self.SENT))
        with pytest.raises(Diverged):
            verifier.feed(chunk(tools=(delta,)))

    def test_text_where_a_tool_call_was_delivered_diverged(self) -> None:
        """Text instead of the delivered tool call is never spliced."""
        verifier = Verifier(delivered(*self.SENT))
        with pytest.raises(Diverged):
            verifier.feed(chunk("Sure"))

    def test_a_call_that_was_complete_must_not_go_on(self) -> None:
        """Arguments longer than a call delivered whole (a later call had begun) diverge."""
        sent = delivered(
            chunk(tools=(ToolCallDelta(0, id="a", name="f", arguments="{}"),)),
            chunk(tools=(ToolCallDelta(1, id="b", name="g", arguments="{"),)),
        )
        verifier = Verifier(sent)
        with pytest.raises(Diverged):
            verifier.feed(chunk(tools=(ToolCallDelta(0, id="z", name="f", arguments="{} "),)))


class TestTrim:
    def test_the_left_off_space_is_not_repeated(self) -> None:
        """A continuation that starts with the whitespace left off the prefill drops it once."""
        trim = Trim(" ")
        first, second = trim.feed(chunk(" there")), trim.feed(chunk(" was"))
        assert first is not None
        assert second is not None
        assert (" there"[1:], " was") == (first.text, second.text)

    def test_a_continuation_without_it_is_kept(self) -> None:
        """A continuation that does not repeat the space is passed on as it is."""
        fed = Trim(" ").feed(chunk("there"))
        assert fed is not None
        assert "there" == fed.text
