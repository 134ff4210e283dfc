"""Tests for the incremental Server-Sent Events parser."""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenhub._sse import DEFAULT_MAX_LINE, SSEDecoder, SSEError, SSEEvent, parse_json

BOM = b"\xef\xbb\xbf"


def feed_all(*chunks: bytes, decoder: SSEDecoder | None = None) -> list[SSEEvent]:
    decoder = decoder or SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def feed_bytewise(stream: bytes) -> list[SSEEvent]:
    return feed_all(*(stream[i : i + 1] for i in range(len(stream))))


def message(data: str, event: str = "message", id: str | None = None) -> SSEEvent:  # noqa: A002
    return SSEEvent(event=event, data=data, id=id)


class TestEvent:
    def test_defaults(self) -> None:
        """An event has no id and no retry unless given."""
        event = SSEEvent("message", "x")
        expected = (None, None)
        assert expected == (event.id, event.retry)

    def test_is_a_tuple(self) -> None:
        """An event unpacks as (event, data, id, retry)."""
        expected = ("a", "b", "c", 5)
        assert expected == tuple(SSEEvent("a", "b", "c", 5))


class TestLineEndings:
    @pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
    def test_each_line_ending(self, eol: bytes) -> None:
        """LF, CRLF and CR each end a line."""
        stream = b"data: a" + eol + b"data: b" + eol + eol
        assert [message("a\nb")] == feed_all(stream)

    def test_mixed_line_endings(self) -> None:
        """Line endings may change from line to line."""
        stream = b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r"
        assert [message("a\nb\nc"), message("d")] == feed_all(stream)

    def test_crlf_split_across_feeds_is_one_line_end(self) -> None:
        """A chunk ending in CR followed by one starting with LF ends one line only."""
        decoder = SSEDecoder()
        steps = [decoder.feed(chunk) for chunk in (b"data: a\r", b"\ndata: b\r", b"\n", b"\r\n")]
        assert [[], [], [], [message("a\nb")]] == steps

    def test_cr_then_lf_chunk_alone(self) -> None:
        """A lone LF chunk after a CR is swallowed, the next LF is a blank line."""
        decoder = SSEDecoder()
        steps = [decoder.feed(chunk) for chunk in (b"data: a\r", b"\n", b"\n")]
        assert [[], [], [message("a")]] == steps

    def test_cr_cr_across_feeds_dispatches(self) -> None:
        """CR then CR in the next chunk is a line end and a blank line."""
        decoder = SSEDecoder()
        steps = [decoder.feed(chunk) for chunk in (b"data: a\r", b"\r")]
        assert [[], [message("a")]] == steps

    def test_cr_then_other_text_across_feeds(self) -> None:
        """A CR followed by a chunk not starting with LF leaves that chunk intact."""
        decoder = SSEDecoder()
        steps = [decoder.feed(chunk) for chunk in (b"data: a\r", b"data: b\r", b"\n\n")]
        assert [[], [], [message("a\nb")]] == steps

    def test_empty_chunks_keep_the_pending_cr(self) -> None:
        """Empty chunks between CR and LF change nothing."""
        decoder = SSEDecoder()
        steps = [decoder.feed(chunk) for chunk in (b"data: a\r", b"", b"\n", b"\n")]
        assert [[], [], [], [message("a")]] == steps

    def test_line_split_across_many_feeds(self) -> None:
        """A line arriving byte by byte is reassembled."""
        assert [message("hello world")] == feed_bytewise(b"data: hello world\n\n")

    def test_several_events_in_one_chunk(self) -> None:
        """One chunk may complete several events."""
        assert [message("1"), message("2"), message("3")] == feed_all(
            b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
        )

    def test_tail_kept_for_next_feed(self) -> None:
        """Bytes after the last line end wait for the next chunk."""
        decoder = SSEDecoder()
        assert [message("1")] == decoder.feed(b"data: 1\n\ndata: 2")
        assert [message("2x")] == decoder.feed(b"x\n\n")


class TestFields:
    def test_comments_are_ignored(self) -> None:
        """Lines starting with a colon are comments."""
        assert [message("a")] == feed_all(b": keep-alive\ndata: a\n: more\n\n")

    def test_comment_only_block_dispatches_nothing(self) -> None:
        """A block of comments followed by a blank line is no event."""
        expected: list[SSEEvent] = []
        assert expected == feed_all(b": ping\n\n")

    def test_exactly_one_leading_space_stripped(self) -> None:
        """Only the first space after the colon is removed."""
        assert [message("  two")] == feed_all(b"data:   two\n\n")

    def test_value_without_space(self) -> None:
        """A value may follow the colon directly."""
        assert [message("x")] == feed_all(b"data:x\n\n")

    def test_trailing_spaces_kept(self) -> None:
        """Spaces at the end of a value are part of it."""
        assert [message("x  ")] == feed_all(b"data: x  \n\n")

    def test_value_may_contain_colons(self) -> None:
        """Only the first colon separates name from value."""
        assert [message('{"a": "b:c"}')] == feed_all(b'data: {"a": "b:c"}\n\n')

    def test_line_without_colon_is_name_with_empty_value(self) -> None:
        """A bare ``data`` line appends an empty data line."""
        assert [message("\na")] == feed_all(b"data\ndata: a\n\n")

    def test_empty_data_field_is_dispatched(self) -> None:
        """An event whose only data line is empty is dispatched with data ""."""
        assert [message("")] == feed_all(b"data:\n\n")

    def test_multiple_data_lines_joined_with_lf(self) -> None:
        """Data lines are joined with a newline."""
        assert [message("a\n\nb")] == feed_all(b"data: a\ndata:\ndata: b\n\n")

    def test_event_type(self) -> None:
        """The event field sets the event type of the next dispatch only."""
        stream = b"event: ping\ndata: 1\n\ndata: 2\n\n"
        assert [message("1", event="ping"), message("2")] == feed_all(stream)

    def test_empty_event_type_means_message(self) -> None:
        """An empty event field gives the default type."""
        assert [message("1")] == feed_all(b"event:\ndata: 1\n\n")

    def test_last_event_type_wins(self) -> None:
        """A repeated event field overrides the earlier one."""
        assert [message("1", event="b")] == feed_all(b"event: a\nevent: b\ndata: 1\n\n")

    def test_no_data_no_dispatch_and_type_reset(self) -> None:
        """An event with an empty data buffer is dropped and its type forgotten."""
        stream = b"event: lonely\n\ndata: 1\n\n"
        assert [message("1")] == feed_all(stream)

    def test_id_persists_across_events(self) -> None:
        """The last event ID carries over to later events (WHATWG)."""
        stream = b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n"
        expected = [message("a", id="7"), message("b", id="7"), message("c", id="8")]
        assert expected == feed_all(stream)

    def test_id_from_block_without_data(self) -> None:
        """An id in a block that dispatches nothing still sets the last event ID."""
        decoder = SSEDecoder()
        events = feed_all(b"id: 3\n\ndata: a\n\n", decoder=decoder)
        assert ([message("a", id="3")], "3") == (events, decoder.last_event_id)

    def test_empty_id_resets(self) -> None:
        """An empty id field sets the last event ID to the empty string."""
        assert [message("a", id="")] == feed_all(b"id: 1\nid\ndata: a\n\n")

    def test_id_with_nul_ignored(self) -> None:
        """An id containing NUL is ignored."""
        assert [message("a", id="1")] == feed_all(b"id: 1\nid: 2\x003\ndata: a\n\n")

    def test_retry_digits(self) -> None:
        """A retry field of ASCII digits is reported on its event and the decoder."""
        decoder = SSEDecoder()
        events = feed_all(b"retry: 1500\ndata: a\n\ndata: b\n\n", decoder=decoder)
        expected = [SSEEvent("message", "a", None, 1500), SSEEvent("message", "b")]
        assert (expected, 1500) == (events, decoder.retry)

    @pytest.mark.parametrize(
        "value", [b"", b"1.5", b"-1", b" 10", b"10ms", b"\xd9\xa3", b"\xc2\xb2", b"1" * 5000]
    )
    def test_retry_not_digits_ignored(self, value: bytes) -> None:
        """A retry value other than ASCII digits is ignored."""
        decoder = SSEDecoder()
        events = feed_all(b"retry: " + value + b"\ndata: a\n\n", decoder=decoder)
        assert ([message("a")], None) == (events, decoder.retry)

    def test_retry_only_block_not_dispatched(self) -> None:
        """A block with only retry dispatches nothing but updates the decoder."""
        decoder = SSEDecoder()
        expected: tuple[list[SSEEvent], int] = ([], 20)
        assert expected == (feed_all(b"retry: 20\n\n", decoder=decoder), decoder.retry)

    def test_unknown_fields_ignored(self) -> None:
        """Unknown field names are ignored."""
        assert [message("a")] == feed_all(b"foo: bar\nDATA: x\ndata : y\ndata: a\n\n")

    def test_blank_line_without_event(self) -> None:
        """Blank lines between events dispatch nothing."""
        assert [message("a")] == feed_all(b"\n\n\ndata: a\n\n\n")


class TestDecoding:
    def test_non_ascii(self) -> None:
        """UTF-8 text decodes."""
        text = "日本語 é 😀"
        assert [message(text)] == feed_all(f"data: {text}\n\n".encode())

    def test_multibyte_split_across_feeds(self) -> None:
        """A character split across chunks decodes correctly."""
        text = "日本語 é 😀"
        assert [message(text)] == feed_bytewise(f"data: {text}\n\n".encode())

    def test_invalid_utf8_replaced(self) -> None:
        """Invalid bytes become U+FFFD instead of raising."""
        assert [message("a\ufffdb\ufffd")] == feed_all(b"data: a\xffb\xe6\x97\n\n")

    def test_truncated_sequence_at_line_end(self) -> None:
        """A sequence cut by a line end is replaced, the next line is intact."""
        assert [message("\ufffd\n\u00e9")] == feed_all(b"data: \xe6\ndata: \xc3\xa9\n\n")

    def test_bom_stripped(self) -> None:
        """A UTF-8 BOM at the start of the stream is dropped."""
        assert [message("a")] == feed_all(BOM + b"data: a\n\n")

    def test_bom_split_across_feeds(self) -> None:
        """A BOM arriving in pieces is still dropped."""
        assert [message("a")] == feed_bytewise(BOM + b"data: a\n\n")

    def test_only_one_bom_stripped(self) -> None:
        """A second BOM is part of the first line (here, an unknown field name)."""
        assert [message("b")] == feed_all(BOM + BOM + b"data: a\n\ndata: b\n\n")

    def test_bom_later_in_stream_kept(self) -> None:
        """A BOM inside a value is kept as U+FEFF."""
        assert [message("\ufeffa")] == feed_all(b"data: " + BOM + b"a\n\n")

    def test_bom_prefix_that_is_not_a_bom(self) -> None:
        """Bytes that start like a BOM but are not one are decoded as usual."""
        assert [message("a")] == feed_all(b"\xef", b"\xbb", b"\n", b"data: a\n\n")

    def test_short_stream_like_a_bom_prefix(self) -> None:
        """A stream cut inside a BOM is pending at EOF."""
        decoder = SSEDecoder()
        expected: tuple[list[SSEEvent], bool] = ([], True)
        assert expected == (decoder.feed(b"\xef\xbb"), decoder.pending)


class TestProviders:
    def test_openai_done_sentinel(self) -> None:
        """OpenAI's ``data: [DONE]`` comes out as data "[DONE]"."""
        stream = b'data: {"id":"1","choices":[]}\n\ndata: [DONE]\n\n'
        assert [message('{"id":"1","choices":[]}'), message("[DONE]")] == feed_all(stream)

    def test_anthropic_named_events(self) -> None:
        """Anthropic's named events keep their type."""
        stream = (
            b"event: message_start\r\n"
            b'data: {"type":"message_start"}\r\n\r\n'
            b"event: ping\r\n"
            b'data: {"type": "ping"}\r\n\r\n'
            b"event: content_block_delta\r\n"
            b'data: {"type":"content_block_delta","delta":{"text":"h\xc3\xa9"}}\r\n\r\n'
            b"event: message_stop\r\n"
            b'data: {"type":"message_stop"}\r\n\r\n'
        )
        expected = [
            message('{"type":"message_start"}', event="message_start"),
            message('{"type": "ping"}', event="ping"),
            message(
                '{"type":"content_block_delta","delta":{"text":"hé"}}',
                event="content_block_delta",
            ),
            message('{"type":"message_stop"}', event="message_stop"),
        ]
        assert expected == feed_all(stream)
        assert expected == feed_bytewise(stream)


class TestMaxLine:
    def test_default(self) -> None:
        """The default cap is 16 MiB."""
        expected = 16 * 1024 * 1024
        assert expected == DEFAULT_MAX_LINE

    def test_error_is_value_error(self) -> None:
        """SSEError is a ValueError."""
        assert issubclass(SSEError, ValueError)

    def test_line_at_cap_accepted(self) -> None:
        """A line of exactly max_line bytes is fine."""
        decoder = SSEDecoder(max_line=10)
        assert [message("abcd")] == feed_all(b"data: abcd\n\n", decoder=decoder)

    def test_complete_long_line_rejected(self) -> None:
        """A complete line longer than max_line raises."""
        with pytest.raises(SSEError):
            SSEDecoder(max_line=10).feed(b"data: abcde\n\n")

    def test_long_line_after_short_ones_rejected(self) -> None:
        """The cap applies to every line of a chunk, not just its length."""
        decoder = SSEDecoder(max_line=10)
        with pytest.raises(SSEError):
            decoder.feed(b"data: a\n\ndata: abcdefgh\n\n")

    def test_long_chunk_of_short_lines_accepted(self) -> None:
        """A chunk longer than max_line made of short lines is fine."""
        decoder = SSEDecoder(max_line=10)
        assert [message("a")] * 5 == feed_all(b"data: a\n\n" * 5, decoder=decoder)

    def test_unterminated_line_growing_across_feeds_rejected(self) -> None:
        """An unterminated line that grows past max_line raises."""
        decoder = SSEDecoder(max_line=10)
        decoder.feed(b"data: ")
        decoder.feed(b"abcd")
        with pytest.raises(SSEError):
            decoder.feed(b"e")

    def test_unterminated_tail_rejected(self) -> None:
        """A tail after a line end longer than max_line raises."""
        decoder = SSEDecoder(max_line=10)
        with pytest.raises(SSEError):
            decoder.feed(b"data: a\ndata: abcdefgh")

    def test_decoder_reset_after_error(self) -> None:
        """After the error, the decoder holds no buffered bytes."""
        decoder = SSEDecoder(max_line=10)
        with pytest.raises(SSEError):
            decoder.feed(b"x" * 11)
        assert not decoder.pending

    def test_max_line_must_be_positive(self) -> None:
        """A non-positive max_line is refused."""
        with pytest.raises(ValueError, match="max_line"):
            SSEDecoder(max_line=0)


class TestPending:
    def test_clean_end(self) -> None:
        """A stream ending with a blank line is not pending."""
        decoder = SSEDecoder()
        decoder.feed(b"data: a\n\n")
        expected: tuple[list[SSEEvent], bool] = ([], False)
        assert expected == (decoder.flush(), decoder.pending)

    def test_fresh_decoder(self) -> None:
        """A decoder that saw nothing is not pending."""
        assert not SSEDecoder().pending

    def test_unterminated_bytes(self) -> None:
        """Bytes without a line end are pending and discarded at EOF."""
        decoder = SSEDecoder()
        events = decoder.feed(b"data: a\n\ndata: b")
        assert ([message("a")], [], True) == (events, decoder.flush(), decoder.pending)

    def test_unterminated_event(self) -> None:
        """Fields without the terminating blank line are discarded at EOF."""
        decoder = SSEDecoder()
        decoder.feed(b"event: x\ndata: a\n")
        expected: tuple[list[SSEEvent], bool] = ([], True)
        assert expected == (decoder.flush(), decoder.pending)

    def test_final_cr_line_end_is_not_pending(self) -> None:
        """A stream whose last line end is a lone CR is complete."""
        decoder = SSEDecoder()
        decoder.feed(b"data: a\r\r")
        expected: tuple[list[SSEEvent], bool] = ([], False)
        assert expected == (decoder.flush(), decoder.pending)

    def test_trailing_comment_not_pending(self) -> None:
        """A complete comment after the last event is not a cut."""
        decoder = SSEDecoder()
        decoder.feed(b"data: a\n\n: bye\n")
        expected: tuple[list[SSEEvent], bool] = ([], False)
        assert expected == (decoder.flush(), decoder.pending)

    def test_pending_before_flush(self) -> None:
        """Pending reflects the current state before EOF."""
        decoder = SSEDecoder()
        decoder.feed(b"data: a\n")
        assert decoder.pending
        decoder.feed(b"\n")
        assert not decoder.pending

    def test_flush_resets_for_a_new_stream(self) -> None:
        """After flush, feeding starts a new stream that keeps the last event ID."""
        decoder = SSEDecoder()
        decoder.feed(b"id: 4\ndata: a\n\ndata: cut")
        decoder.flush()
        assert decoder.pending
        events = decoder.feed(BOM + b"data: b\n\n")
        assert ([message("b", id="4")], False) == (events, decoder.pending)


# --- Property: splitting the byte stream anywhere changes nothing. ---------------------


class Spec(NamedTuple):
    event: str | None
    data: list[str]
    id: str | None
    retry: int | None
    comments: list[str]


_NO_EOL = st.characters(exclude_characters="\r\n", codec="utf-8")
_text = st.one_of(
    st.text(_NO_EOL, max_size=12),
    st.sampled_from(["日本語 é 😀", "[DONE]", " lead", ":colon", "trail ", "é", "😀😀"]),
)
_specs = st.builds(
    Spec,
    event=st.none() | st.text(_NO_EOL, min_size=1, max_size=8),
    data=st.lists(_text, max_size=4),
    id=st.none() | st.text(st.characters(exclude_characters="\r\n\0", codec="utf-8"), max_size=5),
    retry=st.none() | st.integers(0, 10**6),
    comments=st.lists(_text, max_size=2),
)
_eols = st.sampled_from(["\n", "\r\n", "\r"])
#: The shape of most LLM stream events: one data line, nothing else.
_plain_specs = st.builds(
    Spec,
    event=st.none(),
    data=st.lists(_text, min_size=1, max_size=1),
    id=st.none(),
    retry=st.none(),
    comments=st.just([]),
)


def serialise(specs: list[Spec], eols: list[str]) -> str:
    lines: list[str] = []
    for spec in specs:
        lines.extend(f":{comment}" for comment in spec.comments[:1])
        if spec.event is not None:
            lines.append(f"event: {spec.event}")
        if spec.id is not None:
            lines.append(f"id: {spec.id}")
        lines.extend(f"data: {data}" for data in spec.data)
        lines.extend(f":{comment}" for comment in spec.comments[1:])
        if spec.retry is not None:
            lines.append(f"retry: {spec.retry}")
        lines.append("")
    out: list[str] = []
    previous = "\n"
    for index, line in enumerate(lines):
        eol = eols[index % len(eols)]
        if previous == "\r" and not line and eol == "\n":
            eol = "\r\n"  # a CR then an LF would be one line end, not a blank line
        out.append(line + eol)
        previous = eol
    return "".join(out)


def model(specs: list[Spec]) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    last_id: str | None = None
    for spec in specs:
        if spec.id is not None:
            last_id = spec.id
        if spec.data:
            events.append(
                SSEEvent(spec.event or "message", "\n".join(spec.data), last_id, spec.retry)
            )
    return events


class TestSplitInvariance:
    @settings(max_examples=150, deadline=None)
    @given(
        specs=st.lists(_specs, max_size=6),
        eols=st.lists(_eols, min_size=1, max_size=5),
        bom=st.booleans(),
        data=st.data(),
    )
    def test_any_split_gives_the_same_events(
        self, specs: list[Spec], eols: list[str], bom: bool, data: st.DataObject
    ) -> None:
        """Feeding the stream in arbitrary pieces equals feeding it whole."""
        stream = (BOM if bom else b"") + serialise(specs, eols).encode()
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

        whole = SSEDecoder()
        expected = whole.feed(stream)
        split = SSEDecoder()
        actual = [event for piece in pieces for event in split.feed(piece)]

        assert expected == actual
        assert model(specs) == expected
        assert not whole.pending
        assert not split.pending

    @settings(max_examples=150, deadline=None)
    @given(
        specs=st.lists(_plain_specs | _plain_specs | _specs, max_size=8),
        eols=st.lists(st.just("\n") | _eols, min_size=1, max_size=3),
        bom=st.booleans(),
        data=st.data(),
    )
    def test_one_feed_per_event_gives_the_same_events(
        self, specs: list[Spec], eols: list[str], bom: bool, data: st.DataObject
    ) -> None:
        """Feeding the stream one event at a time (as HTTP chunks often carry it) changes nothing.

        Most such feeds are one ``data:`` line and its blank line, the decoder's fast path;
        some pieces are cut at random too, so that the fast path meets pending state.
        """
        stream = (BOM if bom else b"") + serialise(specs, eols).encode()
        pieces = [p for p in re.split(rb"(?<=\n\n)|(?<=\r\r)|(?<=\r\n\r\n)", stream) if p]
        if data.draw(st.booleans()) and pieces:
            i = data.draw(st.integers(0, len(pieces) - 1))
            cut = data.draw(st.integers(0, len(pieces[i])))
            pieces[i : i + 1] = [pieces[i][:cut], pieces[i][cut:]]
        decoder = SSEDecoder()
        actual = [event for piece in pieces for event in decoder.feed(piece)]
        assert model(specs) == actual
        assert not decoder.pending

    def test_fast_path_keeps_the_last_event_id(self) -> None:
        """A one-line event fed alone carries the ID set by an earlier event."""
        decoder = SSEDecoder()
        decoder.feed(b"id: 7\ndata: a\n\n")
        assert [message("b", id="7")] == decoder.feed(b"data: b\n\n")

    def test_fast_path_completes_a_pending_event(self) -> None:
        """A data line fed after another event's fields joins that event."""
        decoder = SSEDecoder()
        decoder.feed(b"event: x\n")
        assert [message("b", event="x")] == decoder.feed(b"data: b\n\n")

    def test_fast_path_after_a_held_tail(self) -> None:
        """A feed that completes a held partial line is one line, not an event of its own."""
        decoder = SSEDecoder()
        decoder.feed(b"data: a")
        assert [message("adata: b")] == decoder.feed(b"data: b\n\n")

    def test_fast_path_respects_max_line(self) -> None:
        """A one-line event longer than max_line is rejected on the fast path too."""
        with pytest.raises(SSEError):
            SSEDecoder(max_line=8).feed(b"data: 123\n\n")
        assert [message("12")] == SSEDecoder(max_line=8).feed(b"data: 12\n\n")

    @settings(max_examples=30, deadline=None)
    @given(specs=st.lists(_specs, min_size=1, max_size=3), eols=st.lists(_eols, min_size=1))
    def test_bytewise_feed_gives_the_same_events(self, specs: list[Spec], eols: list[str]) -> None:
        """Feeding one byte at a time equals feeding the stream whole."""
        stream = serialise(specs, eols).encode()
        assert feed_all(stream) == feed_bytewise(stream)


# --- parse_json: json.loads, minus its per-call overhead. ----------------------------


def outcome(decode: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", decode(text)
    except ValueError as exc:
        return type(exc).__name__, str(exc)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


class TestParseJson:
    @settings(max_examples=200, deadline=None)
    @given(
        value=_json,
        before=st.sampled_from(["", " ", "\n", "\ufeff", "x"]),
        after=st.sampled_from(["", " ", "\n", "x", "}", "{}"]),
        cut=st.integers(0, 200),
    )
    def test_same_as_json_loads(self, value: Any, before: str, after: str, cut: int) -> None:
        """On valid, padded, truncated or trailing-garbage text it returns or raises as json.loads."""
        text = before + json.dumps(value) + after
        for t in (text, text[:cut]):
            assert outcome(json.loads, t) == outcome(parse_json, t)

    @pytest.mark.parametrize("text", ["", "[DONE]", "NaN", '{"a" 1}', "1 2", " {}", "{} "])
    def test_edge_cases(self, text: str) -> None:
        """Empty text, sentinels, NaN, errors and whitespace behave as with json.loads."""
        assert repr(outcome(json.loads, text)) == repr(outcome(parse_json, text))
