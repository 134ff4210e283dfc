"""The provider contract, and the built-in OpenAI, Anthropic and vLLM adapters.

Write your own adapter by implementing :class:`Provider` and registering a
factory (usually the class) in the ``tokenhub.providers`` entry-point group,
exactly as the built-in adapters are registered, or pass an instance to
:meth:`tokenhub.Hub.add_provider`.
"""

from __future__ import annotations

from tokenhub.providers._types import Call as Call
from tokenhub.providers._types import Capabilities as Capabilities
from tokenhub.providers._types import Classification as Classification
from tokenhub.providers._types import Provider as Provider
from tokenhub.providers._types import ProviderSettings as ProviderSettings

__all__ = ["Call", "Capabilities", "Classification", "Provider", "ProviderSettings"]
