"""Turn OpenAI-style inputs into a validated :class:`ChatRequest`, before any I/O.

Hand-written rather than structured with cattrs: this runs on every request, and
every mistake must name its path (``messages[2].tool_call_id``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from tokenhub._models import (
    ChatRequest,
    ContentPart,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from tokenhub.errors import RequestError

if TYPE_CHECKING:
    from typing import Unpack

__all__ = [
    "CHAT_KEYS",
    "ChatOptions",
    "RequestOptions",
    "build_request",
    "request_from",
    "unexpected_keyword",
]


class RequestOptions(TypedDict, total=False):
    """The keyword options that shape the request itself, as in OpenAI's Chat Completions API.

    Options left out, or given as ``None``, are not sent.
    """

    tools: Sequence[Mapping[str, Any] | Tool] | None
    """Functions the model may call: ``{"type": "function", "function": {"name", ...}}`` each,
    with ``name`` (1-64 letters, digits, ``_`` or ``-``; unique), an optional ``description``,
    ``parameters`` (a JSON Schema object) and ``strict``."""
    tool_choice: str | Mapping[str, Any] | None
    """``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", "function": {"name"}}``;
    anything but ``"none"`` needs ``tools``, and a named function must be one of them."""
    parallel_tool_calls: bool | None
    """Whether the model may call several tools in one turn."""
    response_format: Mapping[str, Any] | None
    """Structured output: ``{"type": "text"}``, ``{"type": "json_object"}`` or
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``."""
    temperature: float | None
    """Sampling temperature, 0-2."""
    top_p: float | None
    """Nucleus sampling, 0-1."""
    max_tokens: int | None
    """The output limit, at least 1; it must fit the model's output limit and context window."""
    stop: str | Sequence[str] | None
    """A stop sequence or a list of them."""
    seed: int | None
    """A sampling seed, where the provider supports one."""
    user: str | None
    """An end-user id for the provider's abuse monitoring."""
    metadata: Mapping[str, str] | None
    """Your own string labels: kept by tokenhub (adapters see them) and never sent upstream."""
    extra_body: Mapping[str, Any] | None
    """Merged as is into the provider's request body, last: it can add or override any field."""


class ChatOptions(RequestOptions, total=False):
    """The keyword options of :meth:`Hub.chat`, :meth:`Hub.stream` and :meth:`Hub.explain`.

    The request options of OpenAI's Chat Completions API (``tools`` to ``extra_body``),
    plus the routing options (``model`` to ``timeout``), which are never sent upstream.
    All are optional. A dict typed ``ChatOptions`` can be passed as ``**options``::

        options: ChatOptions = {"model": "gpt-4o-mini", "temperature": 0.2}
        response = await hub.chat(messages, **options)
    """

    model: str | None
    """A model or alias name from the config, tried first, then its fallbacks; without it the
    routing policy ranks every model. An unknown name raises
    :class:`~tokenhub.errors.ModelNotFoundError`."""
    policy: Mapping[str, Any] | None
    """Keys of the config's ``routing`` policy to override for this request, such as
    ``{"mode": "cheap"}`` or ``{"tags": ["eu"]}``."""
    caller: str | None
    """Who is asking (a user, a tenant): for caller-sticky aliases, budgets and the request log."""
    request_id: str | None
    """Your id for the request, sent upstream as ``X-Request-ID``; generated when not given.
    It also seeds exploration and request-sticky aliases."""
    timeout: float | None
    """Seconds for the whole call, failover included (config ``failover.timeout`` by default)."""


_REQUEST_KEYS = RequestOptions.__optional_keys__
#: Every key of :class:`ChatOptions`, to reject unknown keywords with one set operation.
CHAT_KEYS = ChatOptions.__optional_keys__

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
# Keys that appear when a response message is fed back as history; ignored when empty.
_ECHOED_KEYS = frozenset({"refusal", "annotations", "audio", "function_call", "reasoning_content"})
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _type_name(v: object) -> str:
    return type(v).__name__


class _Errors:
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, reason: str) -> None:
        self.items.append((path, reason))


def build_request(messages: Any, **options: Unpack[RequestOptions]) -> ChatRequest:
    """Validate OpenAI-style arguments; raise one :class:`RequestError` listing every problem.

    An unknown keyword raises :class:`TypeError`, as for a written-out signature.
    """
    if not _REQUEST_KEYS.issuperset(options):
        raise unexpected_keyword("build_request", options, _REQUEST_KEYS)
    return request_from(messages, options)


def unexpected_keyword(
    qualname: str, options: Mapping[str, object], known: frozenset[str]
) -> TypeError:
    """The error Python raises for an unknown keyword, naming the first one of ``options``."""
    key = next(k for k in options if k not in known)
    return TypeError(f"{qualname}() got an unexpected keyword argument {key!r}")


def request_from(messages: Any, options: Mapping[str, Any]) -> ChatRequest:
    """:func:`build_request` for options already checked; keys other than its own are ignored.

    Values are read as ``Any``: callers' annotations are promises, this checks them.
    """
    get = options.get
    tools, tool_choice = get("tools"), get("tool_choice")
    parallel_tool_calls, response_format = get("parallel_tool_calls"), get("response_format")
    temperature, top_p, max_tokens = get("temperature"), get("top_p"), get("max_tokens")
    stop, seed, user = get("stop"), get("seed"), get("user")
    metadata, extra_body = get("metadata"), get("extra_body")
    err = _Errors()
    msgs = _messages(messages, err)
    tool_objs = _tools(tools, err)
    choice = _tool_choice(tool_choice, tool_objs, err)
    fmt = _response_format(response_format, err)
    _number("temperature", temperature, 0.0, 2.0, err)
    _number("top_p", top_p, 0.0, 1.0, err)
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        err.add("max_tokens", f"expected a positive integer, got {max_tokens!r}")
    stops = _stop(stop, err)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        err.add("seed", f"expected an integer, got {seed!r}")
    if user is not None and not isinstance(user, str):
        err.add("user", f"expected a string, got {_type_name(user)}")
    if metadata is not None and (
        not isinstance(metadata, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        err.add("metadata", "expected a mapping of strings to strings")
    if extra_body is not None and not isinstance(extra_body, Mapping):
        err.add("extra_body", f"expected a mapping, got {_type_name(extra_body)}")
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        err.add("parallel_tool_calls", "expected a boolean")
    if err.items:
        raise RequestError(err.items)
    return ChatRequest(
        messages=msgs,
        tools=tool_objs,
        tool_choice=choice,
        parallel_tool_calls=parallel_tool_calls,
        response_format=fmt,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stops,
        seed=seed,
        user=user,
        metadata=dict(metadata) if metadata is not None else None,
        extra_body=dict(extra_body) if extra_body is not None else None,
    )


def _number(name: str, v: object, lo: float, hi: float, err: _Errors) -> None:
    if v is None:
        return
    if not isinstance(v, int | float) or isinstance(v, bool) or math.isnan(v):
        err.add(name, f"expected a number, got {v!r}")
    elif not lo <= v <= hi:
        err.add(name, f"must be between {lo:g} and {hi:g}, got {v!r}")


def _stop(stop: object, err: _Errors) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, Sequence) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    err.add("stop", "expected a string or a list of strings")
    return ()


def _messages(messages: object, err: _Errors) -> tuple[Message, ...]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        err.add("messages", f"expected a list of messages, got {_type_name(messages)}")
        return ()
    if not messages:
        err.add("messages", "must not be empty")
        return ()
    out: list[tuple[int, Message]] = []
    for i, m in enumerate(messages):
        msg = m if isinstance(m, Message) else _message(f"messages[{i}]", m, err)
        if msg is not None:
            out.append((i, msg))
    _check_tool_results(out, err)
    return tuple(m for _, m in out)


def _check_tool_results(msgs: list[tuple[int, Message]], err: _Errors) -> None:
    """Every tool message must answer a call made by an earlier assistant message."""
    open_calls: set[str] = set()
    for i, m in msgs:
        if m.role == "assistant":
            open_calls.update(tc.id for tc in m.tool_calls)
        elif m.role == "tool":
            if m.tool_call_id not in open_calls:
                err.add(
                    f"messages[{i}].tool_call_id",
                    f"no earlier assistant tool call has id {m.tool_call_id!r}",
                )
            else:
                open_calls.discard(m.tool_call_id)


def _message(path: str, m: object, err: _Errors) -> Message | None:
    if not isinstance(m, Mapping):
        err.add(path, f"expected a message mapping, got {_type_name(m)}")
        return None
    before = len(err.items)
    for k, v in m.items():
        if k not in _MESSAGE_KEYS and not (k in _ECHOED_KEYS and not v):
            err.add(f"{path}.{k}", "unknown key")
    role = m.get("role")
    if role not in _ROLES:
        err.add(f"{path}.role", f"unknown role {role!r}; expected one of {sorted(_ROLES)}")
        return None
    content = _content(f"{path}.content", m.get("content"), role, err)
    name = m.get("name")
    if name is not None and not isinstance(name, str):
        err.add(f"{path}.name", "expected a string")
    tool_calls: tuple[ToolCall, ...] = ()
    if m.get("tool_calls"):
        if role != "assistant":
            err.add(f"{path}.tool_calls", "only assistant messages carry tool calls")
        else:
            tool_calls = _tool_calls(f"{path}.tool_calls", m["tool_calls"], err)
    tool_call_id = m.get("tool_call_id")
    if role == "tool":
        if not isinstance(tool_call_id, str) or not tool_call_id:
            err.add(f"{path}.tool_call_id", "a tool message needs the id of the call it answers")
    elif tool_call_id is not None:
        err.add(f"{path}.tool_call_id", "only tool messages carry a tool_call_id")
    if content is None and role != "assistant":
        err.add(f"{path}.content", f"a {role} message needs content")
    elif content is None and not m.get("tool_calls"):
        err.add(f"{path}.content", "an assistant message needs content or tool_calls")
    if len(err.items) != before:
        return None
    return Message(
        role=role,
        content=content,
        name=name,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
    )


def _content(path: str, c: object, role: str, err: _Errors) -> str | tuple[ContentPart, ...] | None:
    if c is None or isinstance(c, str):
        return c
    if not isinstance(c, Sequence):
        err.add(path, f"expected a string or a list of content parts, got {_type_name(c)}")
        return None
    parts: list[ContentPart] = []
    for i, p in enumerate(c):
        ppath = f"{path}[{i}]"
        if isinstance(p, TextPart | ImagePart):
            parts.append(p)
            continue
        kind = p.get("type") if isinstance(p, Mapping) else None
        if kind == "text" and isinstance(p, Mapping):
            text = p.get("text")
            if isinstance(text, str):
                parts.append(TextPart(text))
            else:
                err.add(f"{ppath}.text", "expected a string")
        elif kind == "image_url" and isinstance(p, Mapping):
            if role != "user":
                err.add(ppath, f"images are only allowed in user messages, not {role}")
                continue
            image = p.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            detail = image.get("detail") if isinstance(image, Mapping) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
                err.add(f"{ppath}.image_url", "expected an http(s) or data: URL")
            else:
                parts.append(ImagePart(url=url, detail=detail))
        else:
            err.add(ppath, f"unknown content part type {kind!r}; expected 'text' or 'image_url'")
    return tuple(parts)


def _tool_calls(path: str, calls: object, err: _Errors) -> tuple[ToolCall, ...]:
    if not isinstance(calls, Sequence):
        err.add(path, "expected a list of tool calls")
        return ()
    out: list[ToolCall] = []
    for i, tc in enumerate(calls):
        p = f"{path}[{i}]"
        if isinstance(tc, ToolCall):
            out.append(tc)
            continue
        fn = tc.get("function") if isinstance(tc, Mapping) else None
        if not isinstance(tc, Mapping) or not isinstance(fn, Mapping):
            err.add(p, "expected {'id', 'type': 'function', 'function': {'name', 'arguments'}}")
            continue
        call_id, name, args = tc.get("id"), fn.get("name"), fn.get("arguments", "")
        if not isinstance(call_id, str) or not call_id:
            err.add(f"{p}.id", "expected a non-empty string")
        if not isinstance(name, str) or not name:
            err.add(f"{p}.function.name", "expected a non-empty string")
        if isinstance(args, Mapping):
            args = json.dumps(args, separators=(",", ":"))
        if not isinstance(args, str):
            err.add(f"{p}.function.arguments", "expected a JSON string")
        if isinstance(call_id, str) and isinstance(name, str) and isinstance(args, str):
            out.append(ToolCall(id=call_id, name=name, arguments=args))
    return tuple(out)


def _tools(tools: object, err: _Errors) -> tuple[Tool, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, Sequence):
        err.add("tools", "expected a list of tools")
        return ()
    out: list[Tool] = []
    seen: set[str] = set()
    for i, t in enumerate(tools):
        p = f"tools[{i}]"
        if isinstance(t, Tool):
            tool: Tool | None = t
        else:
            fn = t.get("function") if isinstance(t, Mapping) else None
            if (
                not isinstance(t, Mapping)
                or t.get("type") != "function"
                or not isinstance(fn, Mapping)
            ):
                err.add(p, "expected {'type': 'function', 'function': {'name', ...}}")
                continue
            tool = _tool(p + ".function", fn, err)
        if tool is None:
            continue
        if tool.name in seen:
            err.add(f"{p}.function.name", f"duplicate tool name {tool.name!r}")
        seen.add(tool.name)
        out.append(tool)
    return tuple(out)


def _tool(p: str, fn: Mapping[str, Any], err: _Errors) -> Tool | None:
    name, desc = fn.get("name"), fn.get("description")
    params, strict = fn.get("parameters", {}), fn.get("strict")
    ok = True
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        err.add(f"{p}.name", "expected 1-64 letters, digits, '_' or '-'")
        ok = False
    if desc is not None and not isinstance(desc, str):
        err.add(f"{p}.description", "expected a string")
        ok = False
    if not isinstance(params, Mapping):
        err.add(f"{p}.parameters", "expected a JSON Schema object")
        ok = False
    if strict is not None and not isinstance(strict, bool):
        err.add(f"{p}.strict", "expected a boolean")
        ok = False
    if not ok:
        return None
    return Tool(name=name, description=desc, parameters=params, strict=strict)  # type: ignore[arg-type]


def _tool_choice(choice: object, tools: tuple[Tool, ...], err: _Errors) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, ToolChoice):
        result = choice
    elif choice in ("auto", "none", "required"):
        result = ToolChoice(mode=choice)
    elif (
        isinstance(choice, Mapping)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), Mapping)
        and isinstance(choice["function"].get("name"), str)
    ):
        result = ToolChoice(mode="function", name=choice["function"]["name"])
    else:
        err.add(
            "tool_choice",
            "expected 'auto', 'none', 'required' or {'type': 'function', 'function': {'name'}}",
        )
        return None
    if result.mode != "none" and not tools:
        err.add("tool_choice", "needs tools")
    if result.mode == "function" and result.name not in {t.name for t in tools}:
        err.add("tool_choice", f"names tool {result.name!r}, which is not in tools")
    return result


def _response_format(fmt: object, err: _Errors) -> ResponseFormat | None:
    if fmt is None:
        return None
    if isinstance(fmt, ResponseFormat):
        return fmt
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    if kind == "json_schema" and isinstance(fmt, Mapping):
        spec = fmt.get("json_schema")
        if (
            isinstance(spec, Mapping)
            and isinstance(spec.get("name"), str)
            and isinstance(spec.get("schema", {}), Mapping)
        ):
            return ResponseFormat(
                type="json_schema",
                name=spec["name"],
                schema=spec.get("schema"),
                strict=spec.get("strict"),
            )
        err.add("response_format.json_schema", "expected {'name', 'schema', 'strict'?}")
        return None
    err.add("response_format.type", "expected 'text', 'json_object' or 'json_schema'")
    return None
