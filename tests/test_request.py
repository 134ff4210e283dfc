"""The request envelope: validation before any I/O, with paths."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.conftest import config_for
from tokenhub import Hub, Message, ToolCall
from tokenhub._models import ImagePart, ResponseFormat, TextPart, ToolChoice
from tokenhub._request import ChatOptions, RequestOptions, build_request
from tokenhub.errors import RequestError
from tokenhub.testing import FakeProvider

USER = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def errors(messages: Any, **kw: Any) -> list[tuple[str, str]]:
    with pytest.raises(RequestError) as info:
        build_request(messages, **kw)
    return list(info.value.errors)


class TestValid:
    def test_full_envelope(self) -> None:
        """Every OpenAI-style field is parsed into the typed request."""
        r = build_request(
            [
                {"role": "system", "content": "s"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/y.png", "detail": "low"},
                        },
                    ],
                },
                {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None},
                {"role": "tool", "tool_call_id": "c1", "content": "done"},
            ],
            tools=[TOOL],
            tool_choice="auto",
            response_format={"type": "json_object"},
            temperature=0,
            top_p=1,
            max_tokens=5,
            stop="x",
            seed=1,
            user="u",
            metadata={"k": "v"},
            extra_body={"top_k": 3},
        )
        assert (TextPart("look"), ImagePart("https://x/y.png", "low")) == r.messages[1].content
        assert (ToolCall("c1", "f", "{}"),) == r.messages[2].tool_calls
        assert "c1" == r.messages[3].tool_call_id
        assert ToolChoice("auto") == r.tool_choice
        assert ResponseFormat("json_object") == r.response_format
        assert ("x",) == r.stop
        assert {"top_k": 3} == r.extra_body

    def test_message_objects_and_dict_arguments(self) -> None:
        """Message objects are accepted, and dict tool arguments are encoded to JSON."""
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
        r = build_request(
            [Message(role="user", content="hi"), {"role": "assistant", "tool_calls": [call]}]
        )
        assert '{"a":1}' == r.messages[1].tool_calls[0].arguments
        assert "hi" == r.messages[0].text

    def test_named_tool_choice(self) -> None:
        """A named function choice must name one of the tools."""
        r = build_request(
            [USER], tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}}
        )
        assert ToolChoice("function", "f") == r.tool_choice


class TestInvalid:
    @pytest.mark.parametrize(
        ("messages", "expected"),
        [
            ([], [("messages", "must not be empty")]),
            ("hi", [("messages", "expected a list of messages, got str")]),
            (
                [{"role": "bot", "content": "x"}],
                [
                    (
                        "messages[0].role",
                        "unknown role 'bot'; expected one of ['assistant', 'developer', 'system', 'tool', 'user']",
                    )
                ],
            ),
            ([{"role": "user"}], [("messages[0].content", "a user message needs content")]),
            (
                [{"role": "assistant"}],
                [("messages[0].content", "an assistant message needs content or tool_calls")],
            ),
            (
                [{"role": "user", "content": "x", "colour": 1}],
                [("messages[0].colour", "unknown key")],
            ),
            (
                [USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}],
                [("messages[1].tool_call_id", "no earlier assistant tool call has id 'nope'")],
            ),
            (
                [{"role": "tool", "content": "x"}],
                [
                    (
                        "messages[0].tool_call_id",
                        "a tool message needs the id of the call it answers",
                    )
                ],
            ),
            (
                [{"role": "user", "content": "x", "tool_calls": [CALL]}],
                [("messages[0].tool_calls", "only assistant messages carry tool calls")],
            ),
            (
                [{"role": "user", "content": [{"type": "audio"}]}],
                [
                    (
                        "messages[0].content[0]",
                        "unknown content part type 'audio'; expected 'text' or 'image_url'",
                    )
                ],
            ),
            (
                [
                    {
                        "role": "system",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x"}}],
                    }
                ],
                [
                    (
                        "messages[0].content[0]",
                        "images are only allowed in user messages, not system",
                    )
                ],
            ),
            (
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}
                        ],
                    }
                ],
                [("messages[0].content[0].image_url", "expected an http(s) or data: URL")],
            ),
            (
                [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "", "function": {"name": "f", "arguments": 3}}],
                    }
                ],
                [
                    ("messages[0].tool_calls[0].id", "expected a non-empty string"),
                    ("messages[0].tool_calls[0].function.arguments", "expected a JSON string"),
                ],
            ),
            ([3], [("messages[0]", "expected a message mapping, got int")]),
        ],
    )
    def test_bad_messages(self, messages: Any, expected: list[tuple[str, str]]) -> None:
        """Each malformed message is reported with its path."""
        assert expected == errors(messages)

    def test_paths_count_invalid_messages_too(self) -> None:
        """A tool message after an invalid message is reported at its own index."""
        msgs = [{"role": "bot"}, {"role": "tool", "tool_call_id": "x", "content": "r"}]
        assert ("messages[1].tool_call_id", "no earlier assistant tool call has id 'x'") == errors(
            msgs
        )[-1]

    def test_tool_answered_twice(self) -> None:
        """A tool result for a call that was already answered is rejected."""
        msgs = [
            USER,
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": "a"},
            {"role": "tool", "tool_call_id": "c1", "content": "b"},
        ]
        assert [
            ("messages[3].tool_call_id", "no earlier assistant tool call has id 'c1'")
        ] == errors(msgs)

    @pytest.mark.parametrize(
        ("kw", "expected"),
        [
            ({"temperature": 3}, [("temperature", "must be between 0 and 2, got 3")]),
            ({"temperature": "hot"}, [("temperature", "expected a number, got 'hot'")]),
            ({"top_p": -0.1}, [("top_p", "must be between 0 and 1, got -0.1")]),
            ({"max_tokens": 0}, [("max_tokens", "expected a positive integer, got 0")]),
            ({"max_tokens": True}, [("max_tokens", "expected a positive integer, got True")]),
            ({"stop": [1]}, [("stop", "expected a string or a list of strings")]),
            ({"seed": 1.5}, [("seed", "expected an integer, got 1.5")]),
            ({"metadata": {"k": 1}}, [("metadata", "expected a mapping of strings to strings")]),
            ({"extra_body": []}, [("extra_body", "expected a mapping, got list")]),
            ({"tool_choice": "auto"}, [("tool_choice", "needs tools")]),
            (
                {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
                [("tool_choice", "names tool 'g', which is not in tools")],
            ),
            ({"tools": [TOOL, TOOL]}, [("tools[1].function.name", "duplicate tool name 'f'")]),
            (
                {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
                [("tools[0].function.name", "expected 1-64 letters, digits, '_' or '-'")],
            ),
            (
                {"tools": [{"name": "f"}]},
                [("tools[0]", "expected {'type': 'function', 'function': {'name', ...}}")],
            ),
            (
                {"response_format": {"type": "yaml"}},
                [("response_format.type", "expected 'text', 'json_object' or 'json_schema'")],
            ),
            (
                {"response_format": {"type": "json_schema"}},
                [("response_format.json_schema", "expected {'name', 'schema', 'strict'?}")],
            ),
        ],
    )
    def test_bad_parameters(self, kw: dict[str, Any], expected: list[tuple[str, str]]) -> None:
        """Each bad parameter is reported by name."""
        assert expected == errors([USER], **kw)

    def test_all_problems_together(self) -> None:
        """Problems in messages and parameters are reported in one error, and it is a ValueError."""
        with pytest.raises(
            ValueError, match=r"messages\[0\].role: unknown role .*temperature: must be between"
        ):
            build_request([{"role": "bot"}], temperature=9)


class TestOptions:
    def test_unknown_keyword_is_a_type_error(self) -> None:
        """An unknown keyword raises TypeError naming it, as a written-out signature would."""
        with pytest.raises(
            TypeError, match=r"^build_request\(\) got an unexpected keyword argument 'temprature'$"
        ):
            build_request([USER], temprature=0.2)  # type: ignore[call-arg]

    def test_routing_options_are_not_request_options(self) -> None:
        """build_request takes the request options only: a routing key such as model is unknown."""
        with pytest.raises(TypeError, match=r"unexpected keyword argument 'model'$"):
            build_request([USER], model="gpt-4o-mini")  # type: ignore[call-arg]

    def test_chat_options_are_the_request_options_plus_routing(self) -> None:
        """ChatOptions holds every request option plus the five routing ones, all optional."""
        routing = {"model", "policy", "caller", "request_id", "timeout"}
        assert RequestOptions.__optional_keys__ | routing == ChatOptions.__optional_keys__
        assert 17 == len(ChatOptions.__optional_keys__)
        assert frozenset() == ChatOptions.__required_keys__

    def test_a_typed_options_dict_is_accepted(self) -> None:
        """A dict typed RequestOptions unpacks into build_request like written-out keywords."""
        options: RequestOptions = {"temperature": 0.5, "stop": "END", "max_tokens": 3}
        r = build_request([USER], **options)
        assert (0.5, ("END",), 3) == (r.temperature, r.stop, r.max_tokens)


SURROGATE = "a\ud800b"
BAD_ARGUMENTS: list[tuple[str, dict[str, Any]]] = [
    ("messages[0].role", {"messages": [{"role": ["user"], "content": "hi"}]}),
    ("messages[0].role", {"messages": [{"role": {"x": 1}, "content": "hi"}]}),
    ("model", {"model": ["gpt-4o-mini"]}),
    ("model", {"model": {}}),
    ("policy.require", {"policy": {"require": None}}),
    ("policy.tags", {"policy": {"tags": None}}),
    ("policy.max_cost_usd", {"policy": {"max_cost_usd": float("nan")}}),
    ("policy", {"policy": ["cheap"]}),
    ("timeout", {"timeout": "5"}),
    ("timeout", {"timeout": float("nan")}),
    ("timeout", {"timeout": float("inf")}),
    ("timeout", {"timeout": -1}),
    ("timeout", {"timeout": 10**400}),
    ("extra_body", {"extra_body": {"x": {1, 2}}}),
    ("extra_body", {"extra_body": {"x": b"bytes"}}),
    ("extra_body", {"extra_body": {"x": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}}),
    ("extra_body", {"extra_body": {"x": float("nan")}}),
    ("extra_body", {"extra_body": {"x": SURROGATE}}),
    (
        "tools[0].function.parameters",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"a": {1}}}}]},
    ),
    (
        "response_format.json_schema.schema",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {"a": b""}},
            }
        },
    ),
    ("messages[0].content", {"messages": [{"role": "user", "content": SURROGATE}]}),
    (
        "messages[0].content[0].text",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]},
    ),
    ("messages[0].name", {"messages": [{"role": "user", "content": "x", "name": SURROGATE}]}),
    ("stop", {"stop": SURROGATE}),
    ("user", {"user": SURROGATE}),
    ("metadata", {"metadata": {"k": SURROGATE}}),
    ("caller", {"caller": ["a"]}),
    ("caller", {"caller": SURROGATE}),
    ("request_id", {"request_id": 5}),
    ("request_id", {"request_id": "idé"}),
    ("request_id", {"request_id": "a\r\nX-Injected: 1"}),
    ("request_id", {"request_id": "x" * 129}),
    ("max_tokens", {"max_tokens": 10**5000}),
    ("temperature", {"temperature": 10**400}),
    ("seed", {"seed": 2**64}),
]


class TestHostileArguments:
    @pytest.mark.anyio
    @pytest.mark.parametrize(("path", "kw"), BAD_ARGUMENTS, ids=[p for p, _ in BAD_ARGUMENTS])
    async def test_every_bad_argument_is_a_request_error_before_any_io(
        self, fake: FakeProvider, http_impl: str, path: str, kw: dict[str, Any]
    ) -> None:
        """A bad value of any argument is a RequestError naming it; nothing is sent."""
        kw = dict(kw)
        messages = kw.pop("messages", [USER])
        kw.setdefault("model", "gpt-4o-mini")
        async with Hub.from_config(config_for(fake, http_impl)) as hub:
            with pytest.raises(RequestError) as info:
                await hub.chat(messages, **kw)
            with pytest.raises(RequestError):
                hub.stream(messages, **kw)
        assert path in [p for p, _ in info.value.errors]
        assert [] == fake.requests
        str(info.value).encode()  # the message itself is printable

    @pytest.mark.anyio
    async def test_bad_request_ids_do_not_open_circuits(
        self, fake: FakeProvider, http_impl: str
    ) -> None:
        """Invalid request ids fail as RequestError, charging no model: healthy models stay closed."""
        cfg = config_for(fake, http_impl)
        cfg["failover"] = {"max_retries": 0, "breaker": {"failures": 2}}
        async with Hub.from_config(cfg) as hub:
            for _ in range(6):
                with pytest.raises(RequestError):
                    await hub.chat([USER], request_id="bad\nid")
            response = await hub.chat([USER], model="gpt-4o-mini", request_id="ok-1")
            models = hub.health()["models"]
        assert response.text
        assert all(m["circuit"] == "closed" for m in models.values())

    def test_request_id_of_printable_ascii_is_kept(self) -> None:
        """A valid request id (printable ASCII, no spaces, at most 128) is accepted as given."""
        from tokenhub._request import request_from

        request_from([USER], {"request_id": "req_01:abc/XYZ-" + "9" * 100, "timeout": 5})


def test_messages_of_non_ascii_text_are_fine() -> None:
    """Valid non-ASCII text (CJK, emoji) passes the Unicode check untouched."""
    r = build_request([{"role": "user", "content": "日本語 🎉"}], stop=["。"], user="ü")
    assert "日本語 🎉" == r.messages[0].content


def test_value_objects_are_checked_too() -> None:
    """Message, Tool and ResponseFormat objects get the same Unicode and JSON checks as dicts."""
    from tokenhub import Tool

    assert ["messages[0]", "tools[0].parameters", "response_format.schema"] == [
        p
        for p, _ in errors(
            [Message(role="user", content=SURROGATE)],
            tools=[Tool(name="f", parameters={"a": {1}})],
            tool_choice="auto",
            response_format=ResponseFormat(
                type="json_schema", name="n", schema={"x": float("nan")}
            ),
        )
    ]


def test_a_validated_schema_is_encoded_once() -> None:
    """The token estimate reuses the JSON text validation encoded for the same schema object."""
    from tokenhub._request import schema_json

    params = {"type": "object", "properties": {"q": {"type": "string", "description": "日本"}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": params}}
    r = build_request([USER], tools=[tool])
    assert schema_json(r.tools[0].parameters) is schema_json(params)
    assert '{"type":"object","properties":{"q":{"type":"string","description":"日本"}}}' == (
        schema_json(params)
    )
    assert '{"a":1}' == schema_json({"a": 1})  # never validated: encoded on the spot
