"""A configured model resolved against its provider: what the engine needs to send to it.

The Hub builds one table of these per installed config and hands it to the
engine, which never looks back into the Hub; a request keeps the table it
started with while a new config is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from tokenhub._settings import Pricing
    from tokenhub.providers import Provider

__all__ = ["Deployment"]


@attrs.frozen
class Deployment:
    """One model as the engine sends to it: names, the adapter and the facts failover uses.

    ``name`` is the configured model name, ``upstream`` the id sent on the wire.
    ``kind`` is the provider kind (``gen_ai.provider.name``; the provider's name
    for an instance passed in). ``read_timeout`` is the HTTP read timeout that
    bounds each wait for a chunk, known only for adapters on tokenhub's HTTP
    layer (``None`` otherwise, and the engine guards each chunk itself).
    ``ttft_ms`` (the expected time to first chunk, before traffic says) and
    ``thinking`` (it thinks before answering) feed the learned timeouts.
    """

    name: str
    upstream: str
    provider_name: str
    provider: Provider = attrs.field(repr=False)
    kind: str
    base_url: str | None = None
    context_window: int | None = None
    prefill: bool = False
    read_timeout: float | None = None
    max_output_tokens: int | None = None
    pricing: Pricing | None = None
    ttft_ms: float | None = None
    thinking: bool = False
