"""vLLM's OpenAI-compatible server: OpenAI's wire format plus vLLM's own error shapes."""

from __future__ import annotations

from typing import ClassVar

from tokenhub.providers._types import Capabilities
from tokenhub.providers.openai import OpenAIProvider

__all__ = ["VLLMProvider"]


class VLLMProvider(OpenAIProvider):
    """The vLLM adapter (``kind: vllm``).

    ``base_url`` may be a list: requests go round-robin over the replicas.
    A key is sent only when configured (servers started with ``--api-key``);
    both of vLLM's error shapes and its context-length messages are classified,
    and ``reasoning_content``/``reasoning`` never mix into the answer text.
    """

    default_base_url: ClassVar[str] = "http://localhost:8000/v1"
    default_capabilities: ClassVar[Capabilities] = Capabilities(json_schema=True)
