"""Routing: policies, token estimation, scoring and the route trace.

Policies are plain dicts in the config (``"routing": {...}``) or per request
(``policy={...}``); what comes back is a :class:`RouteTrace` on every response
and from :meth:`tokenhub.Hub.explain`.
"""

from __future__ import annotations

from tokenhub.routing._policy import MODES as MODES
from tokenhub.routing._policy import Policy as Policy
from tokenhub.routing._policy import Weights as Weights
from tokenhub.routing._trace import Attempt as Attempt
from tokenhub.routing._trace import Candidate as Candidate
from tokenhub.routing._trace import Exclusion as Exclusion
from tokenhub.routing._trace import RouteTrace as RouteTrace

__all__ = ["MODES", "Attempt", "Candidate", "Exclusion", "Policy", "RouteTrace", "Weights"]
