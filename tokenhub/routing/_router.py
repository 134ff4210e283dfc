"""The router: from a request and a policy to an ordered list of candidates and its trace."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenhub._models import RouteTrace
from tokenhub.errors import ModelNotFoundError, NoRouteError
from tokenhub.routing._estimate import estimate_prompt_tokens
from tokenhub.routing._policy import Features, infer_capabilities, rank

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from tokenhub._models import ChatRequest
    from tokenhub._runtime import StateBackend
    from tokenhub.routing._policy import Alias, ModelInfo, Policy

__all__ = ["Router"]

_STREAMING = frozenset({"streaming"})


class Router:
    """Chooses and orders the models for each request; pure apart from round-robin turns."""

    def __init__(
        self,
        models: Mapping[str, ModelInfo],
        policy: Policy,
        aliases: Mapping[str, Alias],
        state: StateBackend,
        count: Callable[[str], float],
        *,
        providers: Iterable[str] = (),
    ) -> None:
        self.models = dict(models)
        self.policy = policy
        self.aliases = dict(aliases)
        self.state = state
        self.count = count
        self._turns = dict.fromkeys(aliases, 0)
        self._provider_names = {m.provider for m in models.values()} | set(providers)

    def policy_for(self, override: Mapping[str, Any] | None) -> Policy:
        """The configured policy with a request's overrides applied (validated)."""
        if override is None:
            return self.policy
        from tokenhub.routing._checks import policy_override  # noqa: PLC0415 - cattrs, first use

        return policy_override(self.policy, override, set(self.models), self._provider_names)

    def plan(
        self,
        request: ChatRequest,
        *,
        model: str | None,
        policy: Policy,
        caller: str | None,
        request_id: str,
        stream: bool = False,
        peek: bool = False,
    ) -> RouteTrace:
        """Rank the candidates for ``request``; raise :class:`NoRouteError` if none fits.

        ``peek`` leaves round-robin aliases where they are (for explain()).
        """
        alias = None
        pinned = None
        if model is None:
            pool = list(self.models.values())
        else:
            if model in self.models:
                pinned = model
                names = [model, *policy.fallbacks]
            elif model in self.aliases:
                spec = self.aliases[model]
                alias = model
                turn = self._turns[model]
                if not peek:
                    self._turns[model] = turn + 1
                pinned = spec.pick(request_id=request_id, caller=caller, turn=turn)
                names = [pinned, *spec.fallbacks, *policy.fallbacks]
            else:
                raise ModelNotFoundError(model, (*self.models, *self.aliases))
            pool = [self.models[n] for n in dict.fromkeys(names)]
        features = Features(
            capabilities=infer_capabilities(request)
            | policy.require
            | (_STREAMING if stream else frozenset()),
            prompt_tokens=estimate_prompt_tokens(request, self.count),
            max_tokens=request.max_tokens,
        )
        candidates, excluded = rank(
            pool, features, policy, self.state, ordered=model is not None, seed=request_id
        )
        if not candidates:
            raise NoRouteError([(e.model, e.reason) for e in excluded], request_id=request_id)
        return RouteTrace(
            request_id=request_id,
            mode="custom" if policy.weights is not None else policy.mode,
            prompt_tokens=features.prompt_tokens,
            candidates=tuple(candidates),
            excluded=tuple(excluded),
            alias=alias,
            pinned=pinned,
        )
