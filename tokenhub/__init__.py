"""tokenhub: an embeddable LLM router.

Configure a :class:`Hub` from a plain dict; it sends OpenAI-style chat requests
to OpenAI, Anthropic, vLLM or any OpenAI-compatible server and returns typed
responses. Errors live in :mod:`tokenhub.errors`, the adapter contract in
:mod:`tokenhub.providers`, and a fake provider for tests in :mod:`tokenhub.testing`.
"""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from tokenhub._clock import Clock as Clock
from tokenhub._hub import ChatStream as ChatStream
from tokenhub._hub import Hub as Hub
from tokenhub._logs import enable_json_logs as enable_json_logs
from tokenhub._models import ChatResponse as ChatResponse
from tokenhub._models import Chunk as Chunk
from tokenhub._models import Message as Message
from tokenhub._models import RouteTrace as RouteTrace
from tokenhub._models import Tool as Tool
from tokenhub._models import ToolCall as ToolCall
from tokenhub._models import ToolCallDelta as ToolCallDelta
from tokenhub._models import Usage as Usage
from tokenhub._request import ChatOptions as ChatOptions
from tokenhub._secret import Secret as Secret
from tokenhub._sync import SyncChatStream as SyncChatStream
from tokenhub._sync import SyncHub as SyncHub
from tokenhub._version import __version__ as __version__
from tokenhub.errors import TokenhubError as TokenhubError

if _TYPE_CHECKING:
    from tokenhub._vault import Vault as Vault


# A library logs, the application decides where to: silence by default (no lastResort output).
_logging.getLogger("tokenhub").addHandler(_logging.NullHandler())

__all__ = [
    "ChatOptions",
    "ChatResponse",
    "ChatStream",
    "Chunk",
    "Clock",
    "Hub",
    "Message",
    "RouteTrace",
    "Secret",
    "SyncChatStream",
    "SyncHub",
    "TokenhubError",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "Vault",
    "__version__",
    "enable_json_logs",
]


def __getattr__(name: str) -> _Any:
    # The vault pulls in PyNaCl: load it on first use, not with `import tokenhub`.
    if name == "Vault":
        from tokenhub._vault import Vault  # noqa: PLC0415

        return Vault
    raise AttributeError(f"module 'tokenhub' has no attribute {name!r}")
