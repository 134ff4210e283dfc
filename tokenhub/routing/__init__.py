"""Routing: policies, token estimation, scoring and the route trace.

Policies are plain dicts in the config (``"routing": {...}``) or per request
(``policy={...}``); what comes back is a :class:`RouteTrace` on every response
and from :meth:`tokenhub.Hub.explain`.
"""

from __future__ import annotations

from tokenhub._models import Attempt as Attempt
from tokenhub._models import Candidate as Candidate
from tokenhub._models import Exclusion as Exclusion
from tokenhub._models import RouteTrace as RouteTrace
from tokenhub.routing._policy import MODES as MODES
from tokenhub.routing._policy import Policy as Policy
from tokenhub.routing._policy import Weights as Weights

__all__ = ["MODES", "Attempt", "Candidate", "Exclusion", "Policy", "RouteTrace", "Weights"]
