"""Turn OpenAI-style inputs into a validated :class:`ChatRequest`, before any I/O.

Hand-written rather than structured with cattrs: this runs on every request, and
every mistake must name its path (``messages[2].tool_call_id``).
"""

from __future__ import annotations

import json
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
from tokenhub._redact import describe, quote, safe_name, truncate
from tokenhub.errors import RequestError

if TYPE_CHECKING:
    from typing import Unpack

__all__ = [
    "CHAT_KEYS",
    "MAX_SECONDS",
    "ChatOptions",
    "RequestOptions",
    "build_request",
    "request_from",
    "schema_json",
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
# Sent as a header: printable ASCII without spaces, so no request can smuggle a CR/LF.
_REQUEST_ID = re.compile(r"[!-~]{1,128}")
#: The longest duration tokenhub accepts, in a request or a config (about 11.6 days): beyond it
#: timers of the OS and SQLite's busy timeout (milliseconds in a C int) overflow or wrap.
MAX_SECONDS = 1_000_000
_MAX_TOKENS = 2**53
_INT64 = 2**63
# What the request body must be, checked before any I/O: strict JSON (no NaN), valid Unicode.
_strict_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_json_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SURROGATE = "not valid Unicode (a lone surrogate)"


def _type_name(v: object) -> str:
    return type(v).__name__


def _bad_text(s: str) -> bool:
    """Whether ``s`` cannot be encoded as UTF-8 (a lone surrogate); O(1) for ASCII text."""
    if s.isascii():
        return False
    try:
        s.encode()
    except UnicodeEncodeError:
        return True
    return False


# The JSON text of the schemas validated last, by identity: the router estimates a request's
# tokens right after validating it (no await between), so each schema is encoded once for both.
_ENCODED: dict[int, tuple[object, str]] = {}
_ENCODED_MAX = 64


def _json(path: str, v: object, err: _Errors, *, keep: bool = False) -> None:
    """Check that ``v`` encodes as strict JSON in valid UTF-8 (what the adapters send)."""
    try:
        text = _strict_json(v)
    except (TypeError, ValueError, RecursionError) as exc:
        # The encoder's messages name types and limits, never values.
        err.add(path, f"must be JSON-encodable ({truncate(str(exc), 100)})")
        return
    if _bad_text(text):
        err.add(path, _SURROGATE)
    elif keep:
        if len(_ENCODED) >= _ENCODED_MAX:
            _ENCODED.clear()
        _ENCODED[id(v)] = (v, text)


def schema_json(schema: Mapping[str, Any]) -> str:
    """The compact JSON text of a tool's ``parameters`` or a ``json_schema``, encoded once.

    Validation keeps the text it encoded; this returns it when ``schema`` is the very object
    validated (else it encodes again), so the token estimate does not encode the schema twice.
    """
    hit = _ENCODED.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    return _json_text(schema)


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

    Values are read as ``Any``: callers' annotations are promises, this checks them. The
    routing options of :class:`ChatOptions` (``model`` to ``timeout``) are checked too when
    given, so that every bad argument is a :class:`RequestError` before any I/O.
    """
    get = options.get
    tools, tool_choice = get("tools"), get("tool_choice")
    parallel_tool_calls, response_format = get("parallel_tool_calls"), get("response_format")
    temperature, top_p, max_tokens = get("temperature"), get("top_p"), get("max_tokens")
    stop, seed, user = get("stop"), get("seed"), get("user")
    metadata, extra_body = get("metadata"), get("extra_body")
    err = _Errors()
    if not _REQUEST_KEYS.issuperset(options):
        _routing_options(options, err)
    msgs = _messages(messages, err)
    tool_objs = _tools(tools, err)
    choice = _tool_choice(tool_choice, tool_objs, err)
    fmt = _response_format(response_format, err)
    _number("temperature", temperature, 0.0, 2.0, err)
    _number("top_p", top_p, 0.0, 1.0, err)
    if max_tokens is not None and (
        not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or not 1 <= max_tokens <= _MAX_TOKENS
    ):
        err.add("max_tokens", f"expected a positive integer, got {quote(max_tokens)}")
    stops = _stop(stop, err)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        err.add("seed", f"expected an integer, got {quote(seed)}")
    elif seed is not None and not -_INT64 <= seed < _INT64:
        err.add("seed", "must fit in 64 bits")
    if user is not None and not isinstance(user, str):
        err.add("user", f"expected a string, got {_type_name(user)}")
    elif user is not None and _bad_text(user):
        err.add("user", _SURROGATE)
    if metadata is not None and (
        not isinstance(metadata, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        err.add("metadata", "expected a mapping of strings to strings")
    elif metadata is not None and any(_bad_text(k) or _bad_text(v) for k, v in metadata.items()):
        err.add("metadata", _SURROGATE)
    if extra_body is not None and not isinstance(extra_body, Mapping):
        err.add("extra_body", f"expected a mapping, got {_type_name(extra_body)}")
    elif extra_body:
        _json("extra_body", extra_body, err)
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


def _routing_options(options: Mapping[str, Any], err: _Errors) -> None:
    """The options of :class:`ChatOptions` that steer routing; never sent upstream as given."""
    get = options.get
    model, policy, caller = get("model"), get("policy"), get("caller")
    request_id, timeout = get("request_id"), get("timeout")
    if model is not None and not isinstance(model, str):
        err.add("model", f"expected a model or alias name, got {describe(model)}")
    if policy is not None and not isinstance(policy, Mapping):
        err.add("policy", f"expected a mapping, got {describe(policy)}")
    if caller is not None and (not isinstance(caller, str) or _bad_text(caller)):
        err.add("caller", f"expected a string, got {describe(caller)}")
    if request_id is not None and (
        not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id)
    ):
        err.add("request_id", "expected 1-128 printable ASCII characters, without spaces")
    if timeout is not None and (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not 0 < timeout <= MAX_SECONDS  # NaN fails too
    ):
        err.add("timeout", f"expected seconds, above 0 and at most {MAX_SECONDS:,}")


def _number(name: str, v: object, lo: float, hi: float, err: _Errors) -> None:
    if v is None:
        return
    if not isinstance(v, int | float) or isinstance(v, bool) or v != v:  # noqa: PLR0124 - NaN
        err.add(name, f"expected a number, got {quote(v)}")
    elif not lo <= v <= hi:
        err.add(name, f"must be between {lo:g} and {hi:g}, got {quote(v)}")


def _stop(stop: object, err: _Errors) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = (stop,)
    if isinstance(stop, Sequence) and all(isinstance(s, str) for s in stop):
        if any(_bad_text(s) for s in stop):
            err.add("stop", _SURROGATE)
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
        if isinstance(m, Message):
            msg: Message | None = m
            _check_text_of(f"messages[{i}]", m, err)
        else:
            msg = _message(f"messages[{i}]", m, err)
        if msg is not None:
            out.append((i, msg))
    _check_tool_results(out, err)
    return tuple(m for _, m in out)


def _check_text_of(path: str, m: Message, err: _Errors) -> None:
    """A :class:`Message` built by the caller: its text must be valid Unicode too."""
    texts: list[object] = [m.name, m.tool_call_id]  # objects: attrs does not check types
    if isinstance(m.content, str):
        texts.append(m.content)
    elif m.content:
        texts.extend(p.text if isinstance(p, TextPart) else p.url for p in m.content)
    texts.extend(t for tc in m.tool_calls for t in (tc.id, tc.name, tc.arguments))
    if any(_bad_text(t) for t in texts if isinstance(t, str)):
        err.add(path, _SURROGATE)


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
                    f"no earlier assistant tool call has id {quote(m.tool_call_id)}",
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
            err.add(f"{path}.{safe_name(k)}", "unknown key")
    role = m.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        what = f"unknown role {quote(role)}" if isinstance(role, str) else "expected a role name"
        err.add(f"{path}.role", f"{what}; expected one of {sorted(_ROLES)}")
        return None
    content = _content(f"{path}.content", m.get("content"), role, err)
    name = m.get("name")
    if name is not None and not isinstance(name, str):
        err.add(f"{path}.name", "expected a string")
    elif name is not None and _bad_text(name):
        err.add(f"{path}.name", _SURROGATE)
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
        elif _bad_text(tool_call_id):
            err.add(f"{path}.tool_call_id", _SURROGATE)
    elif tool_call_id is not None:
        err.add(f"{path}.tool_call_id", "only tool messages carry a tool_call_id")
    if content is None and role != "assistant":
        err.add(f"{path}.content", f"a {role} message needs content")
    elif content is None and not m.get("tool_calls"):
        err.add(f"{path}.content", "an assistant message needs content or tool_calls")
    if len(err.items) != before:
        return None
    return Message(
        role=role,  # type: ignore[arg-type]  # one of _ROLES, checked above
        content=content,
        name=name,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
    )


def _content(path: str, c: object, role: str, err: _Errors) -> str | tuple[ContentPart, ...] | None:
    if c is None:
        return c
    if isinstance(c, str):
        if _bad_text(c):
            err.add(path, _SURROGATE)
        return c
    if not isinstance(c, Sequence):
        err.add(path, f"expected a string or a list of content parts, got {_type_name(c)}")
        return None
    parts: list[ContentPart] = []
    for i, p in enumerate(c):
        ppath = f"{path}[{i}]"
        if isinstance(p, TextPart | ImagePart):
            if isinstance(p, TextPart) and _bad_text(p.text):
                err.add(f"{ppath}.text", _SURROGATE)
            parts.append(p)
            continue
        kind = p.get("type") if isinstance(p, Mapping) else None
        if kind == "text" and isinstance(p, Mapping):
            text = p.get("text")
            if not isinstance(text, str):
                err.add(f"{ppath}.text", "expected a string")
            elif _bad_text(text):
                err.add(f"{ppath}.text", _SURROGATE)
            else:
                parts.append(TextPart(text))
        elif kind == "image_url" and isinstance(p, Mapping):
            if role != "user":
                err.add(ppath, f"images are only allowed in user messages, not {role}")
                continue
            image = p.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            detail = image.get("detail") if isinstance(image, Mapping) else None
            if (
                not isinstance(url, str)
                or not url.startswith(("http://", "https://", "data:"))
                or _bad_text(url)
            ):
                err.add(f"{ppath}.image_url", "expected an http(s) or data: URL")
            elif detail is not None and (not isinstance(detail, str) or _bad_text(detail)):
                err.add(f"{ppath}.image_url.detail", "expected a string")
            else:
                parts.append(ImagePart(url=url, detail=detail))
        else:
            err.add(
                ppath, f"unknown content part type {quote(kind)}; expected 'text' or 'image_url'"
            )
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
        if not isinstance(call_id, str) or not call_id or _bad_text(call_id):
            err.add(f"{p}.id", "expected a non-empty string")
        if not isinstance(name, str) or not name or _bad_text(name):
            err.add(f"{p}.function.name", "expected a non-empty string")
        if isinstance(args, Mapping):
            try:
                args = _strict_json(args)
            except (TypeError, ValueError, RecursionError):
                args = None
        if not isinstance(args, str) or _bad_text(args):
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
            if t.parameters:
                _json(f"{p}.parameters", t.parameters, err, keep=True)
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
            err.add(f"{p}.function.name", f"duplicate tool name {quote(tool.name)}")
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
    if desc is not None and (not isinstance(desc, str) or _bad_text(desc)):
        err.add(f"{p}.description", "expected a string")
        ok = False
    if not isinstance(params, Mapping):
        err.add(f"{p}.parameters", "expected a JSON Schema object")
        ok = False
    elif params:
        before = len(err.items)
        _json(f"{p}.parameters", params, err, keep=True)
        ok = ok and len(err.items) == before
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
        err.add("tool_choice", f"names tool {quote(result.name)}, which is not in tools")
    return result


def _response_format(fmt: object, err: _Errors) -> ResponseFormat | None:
    if fmt is None:
        return None
    if isinstance(fmt, ResponseFormat):
        if fmt.schema:
            _json("response_format.schema", fmt.schema, err, keep=True)
        return fmt
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    if kind == "json_schema" and isinstance(fmt, Mapping):
        spec = fmt.get("json_schema")
        if (
            isinstance(spec, Mapping)
            and isinstance(spec.get("name"), str)
            and not _bad_text(spec["name"])
            and isinstance(spec.get("schema", {}), Mapping)
            and isinstance(spec.get("strict", False), bool | None)
        ):
            if spec.get("schema"):
                before = len(err.items)
                _json("response_format.json_schema.schema", spec["schema"], err, keep=True)
                if len(err.items) != before:
                    return None
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
