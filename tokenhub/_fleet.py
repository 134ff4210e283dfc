"""The runtime-state backend a config asks for: in memory, or shared by replicas through Redis."""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tokenhub._redact import register
from tokenhub._schema import redis_url_problem
from tokenhub._secret import Secret
from tokenhub.errors import ConfigError
from tokenhub.routing._state import RuntimeState

if TYPE_CHECKING:
    from tokenhub._clock import Clock
    from tokenhub._runtime import StateBackend
    from tokenhub._schema import HubConfig

__all__ = ["state_backend"]


def state_backend(config: HubConfig, clock: Clock) -> StateBackend:
    """In memory, or shared through Redis when ``state.redis`` is set (its thread starts here).

    Raises :class:`~tokenhub.errors.ConfigError` naming ``state.redis`` when the
    URL's variable is unset or malformed, or the ``redis`` extra is not installed.
    """
    state = config.state
    if state.redis is None:
        return RuntimeState(breaker=config.failover.breaker, clock=clock.monotonic)
    given, where = state.redis, "state.redis"
    if isinstance(given, Secret):
        url: Secret = given
    else:
        where = "state.redis.env"
        value = os.environ.get(given.env)
        if not value:
            raise ConfigError([(where, f"{given.env} is not set")])
        if problem := redis_url_problem(value):
            raise ConfigError([(where, problem)])
        if password := urlsplit(value).password:
            register(Secret(password))  # scrubbed from any message from now on
        url = Secret(value)
    if importlib.util.find_spec("redis") is None:
        raise ConfigError([(where, "needs the redis extra: pip install 'tokenhub[redis]'")])
    from tokenhub.routing._redis_state import RedisState  # noqa: PLC0415 - the optional extra

    return RedisState(
        url,
        prefix=state.prefix,
        breaker=config.failover.breaker,
        clock=clock.monotonic,
        wall=clock.wall,
        queue=state.queue,
        flush_interval=state.flush_interval,
        snapshot_interval=state.snapshot_interval,
        timeout=state.timeout,
        limits={
            name: (limit.rpm, limit.lease or max(1, limit.rpm // 20))
            for name, limit in state.limits.items()
        },
    )
