"""Provider kinds: the ``tokenhub.providers`` entry-point group, loaded only on demand."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from tokenhub.providers._types import Provider, ProviderSettings

__all__ = ["GROUP", "find_kind", "kinds_for"]

GROUP = "tokenhub.providers"

# The built-in adapters, declared exactly as in pyproject.toml's entry points, so that
# they resolve without scanning installed distributions (and from a source checkout).
_BUILTIN = {
    ep.name: ep
    for ep in (
        EntryPoint("openai", "tokenhub.providers.openai:OpenAIProvider", GROUP),
        EntryPoint("anthropic", "tokenhub.providers.anthropic:AnthropicProvider", GROUP),
        EntryPoint("vllm", "tokenhub.providers.vllm:VLLMProvider", GROUP),
    )
}


@cache
def _installed() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _entry_point(kind: str) -> EntryPoint | None:
    return _BUILTIN.get(kind) or _installed().get(kind)


def find_kind(kind: str) -> Callable[[ProviderSettings], Provider] | None:
    """Load the factory registered for ``kind``, or ``None`` if no such kind is installed."""
    ep = _entry_point(kind)
    return None if ep is None else ep.load()


def kinds_for(config: object) -> frozenset[str]:
    """Return the kinds to check ``config`` against; installed ones are scanned only if needed."""
    builtin = frozenset(_BUILTIN)
    section = config.get("providers") if isinstance(config, Mapping) else None
    if isinstance(section, Mapping) and any(
        isinstance(p, Mapping) and isinstance(p.get("kind"), str) and p["kind"] not in builtin
        for p in section.values()
    ):
        return builtin | frozenset(_installed())
    return builtin
