"""Frozen value types: the request envelope, responses, stream chunks, usage and the route trace."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = [
    "Attempt",
    "Candidate",
    "ChatRequest",
    "ChatResponse",
    "Chunk",
    "Exclusion",
    "ImagePart",
    "Message",
    "ResponseFormat",
    "RouteTrace",
    "Splice",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@attrs.frozen
class TextPart:
    """A text content part."""

    text: str


@attrs.frozen
class ImagePart:
    """An image content part: an ``https:`` URL or a ``data:`` URL with base64 data."""

    url: str
    detail: str | None = None


ContentPart = TextPart | ImagePart


@attrs.frozen
class ToolCall:
    """A tool call made by the assistant; ``arguments`` is the JSON-encoded string."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        """Decode ``arguments`` (raises :class:`ValueError` if the model wrote invalid JSON)."""
        return json.loads(self.arguments) if self.arguments else {}


@attrs.frozen
class Message:
    """One chat message in OpenAI's vocabulary."""

    role: Role
    content: str | tuple[ContentPart, ...] | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The message's text, with text parts joined."""
        c = self.content
        if c is None:
            return ""
        if isinstance(c, str):
            return c
        return "".join(p.text for p in c if isinstance(p, TextPart))


@attrs.frozen
class Tool:
    """A function the model may call; ``parameters`` is a JSON Schema."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = attrs.field(factory=dict)
    strict: bool | None = None


@attrs.frozen
class ToolChoice:
    """``auto``, ``none``, ``required``, or ``function`` with a ``name``."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


@attrs.frozen
class ResponseFormat:
    """``text``, ``json_object`` or ``json_schema`` (with ``name``, ``schema`` and ``strict``)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool | None = None


@attrs.frozen
class ChatRequest:
    """A validated chat request, independent of any provider."""

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    user: str | None = None
    metadata: Mapping[str, str] | None = None
    extra_body: Mapping[str, Any] | None = None


@attrs.frozen
class Usage:
    """Token counts, normalised across providers.

    ``input_tokens`` counts every input token, including cache reads
    (``cached_input_tokens``) and cache writes (``cache_write_input_tokens``);
    ``output_tokens`` includes ``reasoning_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@attrs.frozen
class ChatResponse:
    """The answer to a chat request.

    ``model`` and ``provider`` name the configured model and provider that
    actually answered; ``upstream_model`` is the model the provider reported.
    ``cost_usd`` is ``None`` when the model has no pricing or no usage was reported.
    ``trace`` says why that model was chosen and lists every attempt.
    """

    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    usage: Usage | None
    cost_usd: float | None
    model: str
    provider: str
    upstream_model: str
    request_id: str
    response_id: str | None = None
    upstream_request_id: str | None = None
    created: int = 0
    reasoning: str = ""
    refusal: str | None = None
    trace: RouteTrace | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def unverified(self) -> bool:
        """Whether part of the text was written by a model asked to continue a broken stream.

        Only with ``continue_streams: "instruct"``: such a continuation cannot be
        checked against what was already delivered (see :class:`Splice`).
        """
        return self.trace is not None and any(s.method == "instruct" for s in self.trace.splices)

    def to_openai(self) -> dict[str, Any]:
        """Return the response as an OpenAI ``chat.completion`` dict."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.text if self.text or not self.tool_calls else None,
            "refusal": self.refusal,
        }
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": tc.arguments},
                }
                for tc in self.tool_calls
            ]
        out: dict[str, Any] = {
            "id": self.response_id or f"chatcmpl-{self.request_id}",
            "object": "chat.completion",
            "created": self.created,
            "model": self.upstream_model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self.finish_reason,
                    "logprobs": None,
                }
            ],
        }
        if self.usage is not None:
            out["usage"] = _usage_to_openai(self.usage)
        return out


@attrs.frozen
class ToolCallDelta:
    """A fragment of a streamed tool call; fragments with the same ``index`` concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen
class Chunk:
    """One piece of a streamed answer.

    The last chunk carries ``finish_reason``, and ``usage`` when the provider reported it.
    """

    model: str
    provider: str
    request_id: str
    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    reasoning: str = ""
    response_id: str | None = None
    upstream_model: str = ""
    created: int = 0

    def to_openai(self) -> dict[str, Any]:
        """Return the chunk as an OpenAI ``chat.completion.chunk`` dict."""
        delta: dict[str, Any] = {}
        if self.text:
            delta["content"] = self.text
        if self.tool_calls:
            delta["tool_calls"] = [_tool_delta_to_openai(d) for d in self.tool_calls]
        out: dict[str, Any] = {
            "id": self.response_id or f"chatcmpl-{self.request_id}",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.upstream_model or self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": self.finish_reason}],
        }
        if self.usage is not None:
            out["usage"] = _usage_to_openai(self.usage)
        return out


def _tool_delta_to_openai(d: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": d.index, "function": {"arguments": d.arguments}}
    if d.id is not None:
        out["id"] = d.id
        out["type"] = "function"
    if d.name is not None:
        out["function"]["name"] = d.name
    return out


def _usage_to_openai(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
    }
    if u.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out


# -- the route trace ------------------------------------------------------------

COMPONENTS = ("cost", "latency", "quality", "reliability", "weight")
_SHORT = {"reliability": "reliab."}


@attrs.frozen
class Candidate:
    """A model that passed every constraint, with its score.

    ``components`` maps each criterion (``cost``, ``latency``, ``quality``,
    ``reliability``, ``weight``) to its normalised utility in [0, 1], 1 being
    best; ``score`` is their weighted sum (higher is better).
    """

    model: str
    provider: str
    score: float
    components: tuple[tuple[str, float], ...]
    estimated_cost_usd: float | None
    output_tokens: int
    latency_ms: float | None
    note: str | None = None


@attrs.frozen
class Exclusion:
    """A model left out by a constraint, and why."""

    model: str
    reason: str


@attrs.frozen
class Attempt:
    """One attempt to get an answer from a candidate.

    ``outcome`` is ``ok``, the error class of the failure, ``credential`` (the
    key could not be resolved), ``unsupported`` (the adapter cannot express
    the request), or ``cancelled``/``hedge_cancelled`` for an attempt abandoned
    by the caller or by a won hedge; ``diverged`` for a stream rescue whose new
    answer differed from what was delivered (dropped; its usage is estimated);
    ``probe_failed``, ``probe_lost`` and ``lost_to_probe`` for a ride-along probe
    of an open circuit that failed, lost its race (it ran on detached, and its
    verdict and cost came after the request), or won it. ``wait_s`` is the
    time waited (backoff or rate-limit hint) before it; ``usage`` and
    ``cost_usd`` are what a failed attempt was billed, when known (a stream cut
    after some output).
    """

    model: str
    provider: str
    outcome: str
    latency_ms: float
    status: int | None = None
    message: str | None = None
    wait_s: float = 0.0
    usage: Usage | None = None
    cost_usd: float | None = None


@attrs.frozen
class Splice:
    """Where a broken stream was rescued: who broke, who finished it, and how.

    ``offset`` is the length of the text delivered before the break and
    ``tool_calls`` the number of tool calls begun; ``method`` is ``prefill``
    (the delivered text sent as the start of the answer), ``regenerate`` (a
    new answer that began with exactly what was delivered, its repeated start
    dropped) or ``instruct`` (a model asked to continue: unverified).
    """

    broken: str
    model: str
    method: Literal["prefill", "regenerate", "instruct"]
    offset: int
    tool_calls: int = 0


@attrs.frozen
class RouteTrace:
    """Why the Hub chose what it chose: candidates in the order tried, exclusions, attempts."""

    request_id: str
    mode: str
    prompt_tokens: int
    candidates: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...] = ()
    alias: str | None = None
    pinned: str | None = None
    attempts: tuple[Attempt, ...] = ()
    splices: tuple[Splice, ...] = ()

    def with_attempts(self, attempts: tuple[Attempt, ...]) -> RouteTrace:
        """A copy with ``attempts`` (the hot path's cheaper ``attrs.evolve``)."""
        return RouteTrace(
            request_id=self.request_id,
            mode=self.mode,
            prompt_tokens=self.prompt_tokens,
            candidates=self.candidates,
            excluded=self.excluded,
            alias=self.alias,
            pinned=self.pinned,
            attempts=attempts,
            splices=self.splices,
        )

    @property
    def chosen(self) -> str | None:
        """The model that answered (or the first candidate, before any attempt)."""
        for a in reversed(self.attempts):
            if a.outcome == "ok":
                return a.model
        return self.candidates[0].model if self.candidates and not self.attempts else None

    def to_dict(self) -> dict[str, Any]:
        """Return the trace as plain JSON-ready data."""
        out = attrs.asdict(self, recurse=True)
        for c in out["candidates"]:
            c["components"] = dict(c["components"])
        return out

    def __str__(self) -> str:
        head = f"route {self.request_id} mode={self.mode} prompt≈{self.prompt_tokens} tokens"
        if self.alias:
            head += f" alias={self.alias}"
        if self.pinned:
            head += f" pinned={self.pinned}"
        lines = [head]
        name_w = max([len(c.model) for c in self.candidates] + [5])
        prov_w = max([len(c.provider) for c in self.candidates] + [8])
        lines.append(
            f"  #  {'model':<{name_w}}  {'provider':<{prov_w}}  score  "
            + "  ".join(f"{_SHORT.get(k, k):>7}" for k in COMPONENTS)
            + "      est. $"
        )
        for i, c in enumerate(self.candidates, 1):
            cost = "       ?" if c.estimated_cost_usd is None else f"{c.estimated_cost_usd:>8.6f}"
            comps = dict(c.components)
            lines.append(
                f"  {i:<2} {c.model:<{name_w}}  {c.provider:<{prov_w}}  {c.score:.3f}  "
                + "  ".join(f"{comps.get(k, 0.0):>7.3f}" for k in COMPONENTS)
                + f"  {cost}"
            )
        if self.excluded:
            lines.append("  excluded:")
            lines.extend(f"    {e.model}: {e.reason}" for e in self.excluded)
        if self.attempts:
            lines.append("  attempts:")
            for i, a in enumerate(self.attempts, 1):
                status = f" {a.status}" if a.status is not None else ""
                lines.append(
                    f"    {i}. {a.model} via {a.provider}: {a.outcome}{status} "
                    f"in {a.latency_ms:.0f} ms"
                )
        return "\n".join(lines)
