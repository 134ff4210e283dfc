"""Runtime state shared by replicas through Redis: a local view plus one background thread.

:class:`RedisState` implements :class:`tokenhub._runtime.StateBackend`. Every read,
and the first effect of every write, is the in-memory :class:`RuntimeState` it holds
(the *local view*), so the request path never waits on Redis. What a write changes
that other replicas should know (a cooldown, a circuit opening or closing, a
credential, an allowance) becomes an event on a bounded in-memory queue; counters of
latency and failures are summed in memory. A daemon thread running its own asyncio
event loop with ``redis.asyncio`` publishes the events, adds the counters to per-model
hashes every ``flush_interval``, folds what other replicas publish into the local view,
takes the half-open probe lease, and re-reads the snapshot hashes as a backstop.

Merge rules (docs/fleet.md draws them): a cooldown only extends (the later end wins);
an opened circuit is adopted when it ends later than the local one, keeping the higher
open count; a close is adopted by a circuit opened before it; credential events apply
in the order of a per-provider version the server increments; allowances: the latest
wins. Times cross processes as wall-clock deadlines and are converted on receipt.

When Redis is unreachable the replica carries on with its local view (nothing waits on
Redis), logs that once on ``tokenhub.state``, retries with capped, jittered back-off,
and on its return publishes what it queued and re-reads the snapshot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from tokenhub._redact import get_logger
from tokenhub._runtime import Block
from tokenhub.routing._leases import Leases
from tokenhub.routing._state import RuntimeState

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

    from tokenhub._secret import Secret
    from tokenhub._settings import BreakerSettings, LearnedTimeouts

__all__ = ["RedisState", "redact_url"]

_log = get_logger("tokenhub.state")
_failover = get_logger("tokenhub.failover")

_HEADERS = (
    "x-ratelimit-remaining-requests",
    "anthropic-ratelimit-requests-remaining",
    "x-ratelimit-remaining-tokens",
    "anthropic-ratelimit-tokens-remaining",
)

#: Store the event in a snapshot hash unless the field holds a later one (by ARGV[3]; a tie
#: goes to the newer) and publish it, in one step; with ARGV[4] == "1" first number it with
#: the provider's version (credentials).
_MERGE = """
local ev = cjson.decode(ARGV[2])
if ARGV[4] == '1' then ev['v'] = redis.call('HINCRBY', KEYS[3], ev['p'], 1) end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local old = cjson.decode(cur)[ARGV[3]]
  if type(old) == 'number' and old > ev[ARGV[3]] then return 0 end
end
local out = cjson.encode(ev)
redis.call('HSET', KEYS[1], ARGV[1], out)
redis.call('PUBLISH', KEYS[2], out)
return 1
"""

#: Snapshot hash, field and ordering key of each event kind.
_ORDER = {"cool": ("cool", "u"), "open": ("circ", "a"), "close": ("circ", "a"), "lim": ("lim", "a")}
_STATS = ("ls", "ln", "f", "n")  # latency sum (ms), latency count, failures, attempts


def redact_url(url: str) -> str:
    """``url`` with its password (and user name) replaced by ``***``, for messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "redis://***"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _View(RuntimeState):
    """The local view, plus the merges that other replicas' events apply to it."""

    def to_local(self, wall_time: float, wall_now: float) -> float:
        return self.clock() + (wall_time - wall_now)

    def adopt_cooldown(self, model: str, until: float) -> None:
        s = self._get(model)
        s.not_before = max(s.not_before, until)

    def adopt_open(self, model: str, until: float, opens: int) -> bool:
        b = self._get(model).breaker
        if b.state == "open" and b.until >= until:
            b.opens = max(b.opens, opens)
            return False
        now = self.clock()
        b.state, b.until, b.opens = "open", until, max(b.opens, opens)
        b.opened_at, b.next_probe, b.probing = now, now + b.settings.probe_interval, False
        return True

    def adopt_close(self, model: str, at: float) -> bool:
        s = self._stats.get(model)
        if s is None or s.breaker.state == "closed" or s.breaker.opened_at >= at:
            return False
        b = s.breaker
        b.state, b.opens, b.probing = "closed", 0, False
        return True

    def adopt_disable(self, provider: str, model: str | None, reason: str, until: float) -> None:
        if model is None:
            self._credentials[provider] = (until, reason)
            self._forget_models(provider)
        else:
            self._model_credentials[provider, model] = (until, reason)

    def adopt_remaining(self, model: str, kind: str, value: int) -> None:
        self._remaining[model, kind] = value

    def fold(
        self, model: str, latency_sum: float, latencies: float, failures: float, n: float
    ) -> None:
        """Fold other replicas' counts in as if their samples, averaged, had been seen here."""
        s = self._get(model)
        keep = 1.0 - self._alpha
        if latencies >= 1:
            mean = latency_sum / latencies
            w = 1.0 - keep**latencies
            s.latency_ms = (
                mean if s.latency_ms is None else s.latency_ms + w * (mean - s.latency_ms)
            )
        if n >= 1:
            rate = min(1.0, max(0.0, failures / n))
            w = 1.0 - keep**n
            s.failure = rate if s.failure is None else s.failure + w * (rate - s.failure)

    def circuits(self) -> list[tuple[str, Any]]:
        items = list(self._stats.items())  # one C call: atomic while requests add models
        return [(m, s.breaker) for m, s in items if s.breaker.state != "closed"]

    def breaker_of(self, model: str) -> Any:
        s = self._stats.get(model)
        return None if s is None else s.breaker


class RedisState:
    """The shared :class:`~tokenhub._runtime.StateBackend`: a local view kept in step through Redis.

    ``url`` is a :class:`~tokenhub._secret.Secret` (it may carry a password);
    ``prefix`` namespaces every key and the channel, so fleets can share a server.
    The background thread starts here and stops with :meth:`close`.
    """

    def __init__(
        self,
        url: Secret,
        *,
        prefix: str = "tokenhub:",
        breaker: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        queue: int = 10_000,
        flush_interval: float = 1.0,
        snapshot_interval: float = 5.0,
        timeout: float = 0.25,
        lease: float = 10.0,
        limits: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self._url = url
        self.name = redact_url(url.reveal())
        self.prefix = prefix
        self.origin = os.urandom(8).hex()
        self._wall = wall
        self._timeout = timeout
        self._flush_interval = flush_interval
        self._snapshot_interval = snapshot_interval
        self._lease_ms = max(1, int(lease * 1000))
        local = self.local = _View(breaker=breaker, clock=clock)
        # Reads go straight to the local view: no wrapper on the request path.
        self.blocked: Callable[[str, str], Block | None] = local.blocked
        self.latency_ms: Callable[[str], float | None] = local.latency_ms
        self.failure_rate: Callable[[str], float | None] = local.failure_rate
        self.output_tokens: Callable[[], float | None] = local.output_tokens
        self.not_before: Callable[[str], float] = local.not_before
        self.acquire: Callable[[str], bool] = local.acquire
        self.probe_due: Callable[[str], bool] = local.probe_due
        self.force_probe: Callable[[str], None] = local.force_probe
        self.ttft_p95_ms: Callable[[str], float | None] = local.ttft_p95_ms
        self.first_token_limit: Callable[[str], float | None] = local.first_token_limit
        self.stall_limit: Callable[[str], float | None] = local.stall_limit
        self.remaining: Callable[[], dict[tuple[str, str], int]] = local.remaining
        #: Client-side request limits per provider: (rpm, lease), taken from Redis in leases.
        self._leases = Leases(limits, prefix=prefix, wall=wall, clock=clock) if limits else None
        self._provider_of: dict[str, str] = {}  # a limited provider's models, as routed
        if self._leases is not None:
            self.blocked = self._blocked_limited
            self.acquire = self._acquire_limited
            self.not_before = self._not_before_limited
            self.force_probe = self._force_probe_limited
        self._events: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(
            maxlen=queue
        )
        self.dropped = 0  # events dropped because the queue was full
        self._counts: dict[str, list[float]] = {}  # model -> latency sum, count, failures, n
        self._limits: set[str] = set()  # models whose allowances changed
        self._versions: dict[str, float] = {}  # credential field -> version applied
        self._enabled_at: dict[str, float] = {}  # provider -> version of its last enable
        self._held: dict[str, float] = {}  # models whose probe another replica owns -> until
        self._decided: dict[str, float] = {}  # model -> opened_at of the period leased for
        self.connected = False
        self._down = False
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._script: Any = None
        self._session_task: asyncio.Future[None] | None = None
        #: Held by merges from other replicas and by the few local calls that iterate the
        #: view's tables (credentials, the snapshot); never by a routing read.
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tokenhub-state", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"RedisState({self.name!r}, prefix={self.prefix!r})"

    # --- the protocol's writes: the local view first, then an event ------------------------

    @property
    def breaker_settings(self) -> BreakerSettings:
        """The breaker settings of models first seen from now on."""
        return self.local.breaker_settings

    @breaker_settings.setter
    def breaker_settings(self, value: BreakerSettings) -> None:
        self.local.breaker_settings = value

    def snapshot(self) -> dict[str, Any]:
        """Health as plain data (the local view's, which holds the fleet's news)."""
        with self._lock:
            return self.local.snapshot()

    def declare_timeouts(
        self, settings: LearnedTimeouts, models: Mapping[str, tuple[float | None, bool]]
    ) -> None:
        """How to learn limits, and each model's prior (local: quantiles are not additive)."""
        self.local.declare_timeouts(settings, models)

    def record_success(
        self,
        model: str,
        *,
        latency_ms: float,
        output_tokens: int | None,
        ttft_ms: float | None = None,
        gap_ms: float | None = None,
        thinking: bool = False,
    ) -> None:
        """Feed a successful attempt here, and count it for the fleet."""
        c = self._counts.get(model)
        if c is None:
            c = self._counts[model] = [0.0, 0.0, 0.0, 0.0]
        c[0] += latency_ms
        c[1] += 1
        c[3] += 1
        b = self.local.breaker_of(model)
        before = "closed" if b is None else b.state
        self.local.record_success(
            model,
            latency_ms=latency_ms,
            output_tokens=output_tokens,
            ttft_ms=ttft_ms,
            gap_ms=gap_ms,
            thinking=thinking,
        )
        if before != "closed":
            self._closed_if(model)

    def record_failure(self, model: str) -> None:
        """Feed a failure here, count it for the fleet, and broadcast an opening."""
        c = self._counts.get(model)
        if c is None:
            c = self._counts[model] = [0.0, 0.0, 0.0, 0.0]
        c[2] += 1
        c[3] += 1
        b = self.local.breaker_of(model)
        opens = -1 if b is None else b.opens
        self.local.record_failure(model)
        b = self.local.breaker_of(model)
        if b is not None and b.state == "open" and b.opens != opens:
            now = self.local.clock()
            wall = self._wall()
            self._put("open", {"m": model, "u": wall + (b.until - now), "n": b.opens, "a": wall})

    def probe_done(self, model: str, *, ok: bool) -> None:
        """Record a ride-along probe's outcome; a close is broadcast."""
        self.local.probe_done(model, ok=ok)
        if ok:
            self._closed_if(model)

    def release(self, model: str) -> None:
        """Give back a half-open probe (and its fleet lease)."""
        self.local.release(model)
        self._put("unlease", {"m": model}, wake=False)

    def _closed_if(self, model: str) -> None:
        b = self.local.breaker_of(model)
        if b is not None and b.state == "closed":
            self._put("close", {"m": model, "a": self._wall()})

    def cool_down(self, model: str, seconds: float) -> None:
        """Block ``model`` here at once, and fleet-wide (extend-only)."""
        before = self.local.not_before(model)
        self.local.cool_down(model, seconds)
        after = self.local.not_before(model)
        if after > before:
            self._put("cool", {"m": model, "u": self._wall() + (after - self.local.clock())})

    def disable_credential(
        self, provider: str, reason: str, seconds: float | None = None, *, model: str | None = None
    ) -> None:
        """Take ``provider``'s key out of rotation here and fleet-wide."""
        with self._lock:
            self.local.disable_credential(provider, reason, seconds, model=model)
            wide = self.local.blocked("", provider)
        scope = None if wide is not None and wide.kind == "credential" else model
        until = None if seconds is None else self._wall() + seconds
        self._put("cred", {"p": provider, "m": scope, "r": reason, "u": until})

    def enable_credential(self, provider: str) -> None:
        """Put ``provider``'s key back into rotation here and fleet-wide."""
        with self._lock:
            self.local.enable_credential(provider)
        self._put("cred", {"p": provider, "m": None, "r": None, "u": 0, "e": True})

    def observe_limits(self, model: str, headers: Mapping[str, str]) -> None:
        """Remember the allowances here; share them with the next flush (latest wins)."""
        self.local.observe_limits(model, headers)
        if headers and any(h in headers for h in _HEADERS):
            self._limits.add(model)

    # --- client-side request limits (only with ``limits``) ------------------------------------

    def _blocked_limited(self, model: str, provider: str) -> Block | None:
        block = self.local.blocked(model, provider)
        leases = self._leases
        if block is not None or leases is None or provider not in leases:
            return block
        self._provider_of[model] = provider
        until = leases.wait(provider)
        return None if until == 0.0 else Block("rate_limited", until, leases.reason(provider))

    def _acquire_limited(self, model: str) -> bool:
        provider, leases = self._provider_of.get(model), self._leases
        if provider is None or leases is None:
            return self.local.acquire(model)
        if not leases.take(provider):
            self._wake()
            return False
        if leases.low(provider):
            self._wake()  # the next lease, before this one runs out
        if self.local.acquire(model):
            return True
        leases.refund(provider)
        return False

    def _force_probe_limited(self, model: str) -> None:
        provider, leases = self._provider_of.get(model), self._leases
        if provider is not None and leases is not None:
            leases.borrow(provider)  # sent although out of allowance: counted against the fleet
            self._wake()
        self.local.force_probe(model)

    def _not_before_limited(self, model: str) -> float:
        provider, leases = self._provider_of.get(model), self._leases
        not_before = self.local.not_before(model)
        if provider is None or leases is None:
            return not_before
        return max(not_before, leases.wait(provider))

    def _wake(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(wakeup.set)

    def _put(self, kind: str, event: dict[str, Any], *, wake: bool = True) -> None:
        events = self._events
        if len(events) == events.maxlen:
            self.dropped += 1
        events.append((kind, event))
        if wake:
            self._wake()

    # --- lifecycle ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The backend as plain data: where (no password), connected, events dropped."""
        return {
            "backend": "redis",
            "url": self.name,
            "prefix": self.prefix,
            "connected": self.connected,
            "queued": len(self._events),
            "dropped": self.dropped,
        }

    def close(self, timeout: float = 2.0) -> None:
        """Publish what is queued (bounded by ``timeout``) and stop the background thread."""
        self._stop.set()
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wakeup.set)
                if not self.connected:  # a connect or command still waiting: nothing to publish
                    loop.call_soon_threadsafe(self._cancel_session)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _cancel_session(self) -> None:
        if self._session_task is not None:
            self._session_task.cancel()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        failures = 0
        first = True
        while not self._stop.is_set():
            client = self._client()
            self._session_task = asyncio.ensure_future(self._session(client, first=first))
            try:
                await self._session_task
                first = False
                failures = 0
            except asyncio.CancelledError:
                if not self._stop.is_set():
                    raise
            except Exception as exc:  # noqa: BLE001 - any failure of the shared part is survived
                failures += 1
                self._lost(exc)
            finally:
                self.connected = False
                if self._leases is not None:
                    self._leases.offline = True
                self._release_holds()  # without Redis, each replica probes on its own
                with contextlib.suppress(Exception):
                    await client.aclose()
            if self._stop.is_set():
                break
            # Full jitter, capped: a fleet that lost its Redis does not come back in lockstep.
            delay = random.uniform(0, min(2.0, 0.05 * 2**failures))  # noqa: S311 - not crypto
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)
            self._wakeup.clear()

    def _client(self) -> Redis:
        from redis.asyncio import Redis  # noqa: PLC0415 - the optional extra, loaded here
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        return Redis.from_url(
            self._url.reveal(),
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),  # no client retries: the loop backs off instead
            health_check_interval=0,
        )

    def _lost(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            _log.warning(
                "shared state at %s unreachable (%s); carrying on with this replica's state",
                self.name,
                type(exc).__name__,
                extra={"state_url": self.name},
            )

    async def _session(self, client: Redis, *, first: bool) -> None:
        await client.ping()
        self._script = client.register_script(_MERGE)
        pubsub = client.pubsub()
        await pubsub.subscribe(self.prefix + "events")
        await self._drain(client)
        await self._load(client)
        # Counts are told apart per session: what this replica added, and the others' totals.
        mine: dict[str, list[float]] = {}
        others: dict[str, tuple[float, ...]] = {}
        await self._flush(client, mine, others, fold=first)
        if self._leases is not None:
            self._leases.offline = False
            await self._leases.refill(client)
        self.connected = True
        if self._down:
            self._down = False
            _log.info("shared state at %s reachable again; rejoined", self.name)
        else:
            _log.debug("shared state at %s connected", self.name)
        listener = asyncio.ensure_future(self._listen(pubsub))
        try:
            await self._work(client, listener, mine, others)
        finally:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _work(
        self,
        client: Redis,
        listener: asyncio.Future[None],
        mine: dict[str, list[float]],
        others: dict[str, tuple[float, ...]],
    ) -> None:
        assert self._wakeup is not None  # noqa: S101 - set before any session
        tick = 0.05
        next_flush = next_load = time.monotonic()
        next_flush += self._flush_interval
        next_load += self._snapshot_interval
        while True:
            if listener.done():
                listener.result()  # raises what ended it
                raise ConnectionError("subscription ended")
            await self._drain(client)
            if self._stop.is_set():
                await self._flush(client, mine, others, fold=False)
                return
            await self._lease(client)
            if self._leases is not None:
                await self._leases.refill(client)
            now = time.monotonic()
            if now >= next_flush:
                await self._flush(client, mine, others, fold=True)
                next_flush = now + self._flush_interval
            if now >= next_load:
                await self._load(client)
                next_load = now + self._snapshot_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), tick)
            self._wakeup.clear()

    async def _drain(self, client: Redis) -> None:
        """Publish queued events, oldest first; an event stays queued until it was sent."""
        events = self._events
        while events:
            kind, event = events[0]
            await self._send(client, kind, event)
            if events and events[0][1] is event:
                events.popleft()

    async def _send(self, client: Redis, kind: str, event: dict[str, Any]) -> None:
        p = self.prefix
        if kind == "unlease":
            key = f"{p}probe:{event['m']}"
            if await client.get(key) == self.origin.encode():
                await client.delete(key)
            return
        event["o"], event["k"] = self.origin, kind
        if kind == "cred":
            field = event["p"] if event["m"] is None else f"{event['p']}\x00{event['m']}"
            keys, order, number = [f"{p}cred", f"{p}events", f"{p}credver"], "v", "1"
        else:
            table, order = _ORDER[kind]
            field = event["m"] if kind != "lim" else f"{event['m']}\x00{event['t']}"
            keys, number = [f"{p}{table}", f"{p}events", f"{p}{table}"], "0"
        from redis.exceptions import ResponseError  # noqa: PLC0415

        try:
            await self._script(
                keys=keys, args=[field, json.dumps(event, allow_nan=False), order, number]
            )
        except (ValueError, ResponseError):  # an event no replica could read: dropped, counted
            self.dropped += 1

    async def _listen(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message.get("type") == "message":
                with self._lock, contextlib.suppress(ValueError, KeyError, TypeError):
                    self._apply(json.loads(message["data"]))

    def _apply(self, event: dict[str, Any]) -> None:
        """Fold another replica's event into the local view (own events are skipped)."""
        kind, local, wall = event["k"], self.local, self._wall()
        if event.get("o") == self.origin and kind != "cred":  # credentials: in version order
            return
        if kind == "cool":
            local.adopt_cooldown(event["m"], local.to_local(float(event["u"]), wall))
        elif kind == "open":
            model = event["m"]
            if local.adopt_open(model, local.to_local(float(event["u"]), wall), int(event["n"])):
                self._held.pop(model, None)
                _failover.debug(
                    "circuit of %s opened by another replica", model, extra={"model": model}
                )
        elif kind == "close":
            model = event["m"]
            if local.adopt_close(model, local.to_local(float(event["a"]), wall)):
                self._held.pop(model, None)
                _failover.debug(
                    "circuit of %s closed by another replica", model, extra={"model": model}
                )
        elif kind == "cred":
            self._apply_credential(event, wall)
        elif kind == "lim":
            local.adopt_remaining(event["m"], event["t"], int(event["v"]))

    def _apply_credential(self, event: dict[str, Any], wall: float) -> None:
        provider, model, version = event["p"], event["m"], float(event["v"])
        field = provider if model is None else f"{provider}\x00{model}"
        if version <= max(self._versions.get(field, 0.0), self._enabled_at.get(provider, 0.0)):
            return
        self._versions[field] = version
        if event.get("e"):
            self._enabled_at[provider] = version
            self.local.enable_credential(provider)
            return
        until = math.inf if event["u"] is None else self.local.to_local(float(event["u"]), wall)
        self.local.adopt_disable(provider, model, str(event["r"]), until)

    async def _load(self, client: Redis) -> None:
        """Re-read the snapshot hashes: the backstop for a missed message, and the catch-up."""
        p = self.prefix
        async with client.pipeline(transaction=False) as pipe:
            for table in ("cool", "circ", "lim", "cred"):
                pipe.hgetall(f"{p}{table}")
            results = await pipe.execute()
        cred = [json.loads(v) for v in results[3].values()]
        for raw in (*results[0].values(), *results[1].values(), *results[2].values()):
            with self._lock, contextlib.suppress(ValueError, KeyError, TypeError):
                self._apply(json.loads(raw))
        for event in sorted(cred, key=lambda e: float(e.get("v", 0))):
            with self._lock, contextlib.suppress(ValueError, KeyError, TypeError):
                self._apply(event)

    async def _flush(
        self,
        client: Redis,
        mine: dict[str, list[float]],
        others: dict[str, tuple[float, ...]],
        *,
        fold: bool,
    ) -> None:
        """Add this replica's counts to the fleet's, read the totals, fold in the others' news."""
        p = self.prefix
        counts, self._counts = self._counts, {}
        limits, self._limits = self._limits, set()
        wall = self._wall()
        for (model, kind), value in (self.local.remaining() if limits else {}).items():
            if model in limits:
                self._put("lim", {"m": model, "t": kind, "v": value, "a": wall}, wake=False)
        async with client.pipeline(transaction=True) as pipe:
            for model, c in list(counts.items()):  # a request may still add to it
                key = f"{p}stats:{model}"
                pipe.hincrbyfloat(key, "ls", c[0])
                for name, count in zip(_STATS[1:], c[1:], strict=True):
                    pipe.hincrby(key, name, int(count))
                pipe.sadd(f"{p}models", model)
                acc = mine.setdefault(model, [0.0, 0.0, 0.0, 0.0])
                for i, amount in enumerate(c):
                    acc[i] += amount
            pipe.smembers(f"{p}models")
            known = (await pipe.execute())[-1]
        models = sorted({m.decode() for m in known})
        async with client.pipeline(transaction=False) as pipe:
            for model in models:
                pipe.hmget(f"{p}stats:{model}", *_STATS)
            totals = await pipe.execute()
        for model, values in zip(models, totals, strict=True):
            fleet = tuple(float(v) if v is not None else 0.0 for v in values)
            own = mine.get(model, (0.0, 0.0, 0.0, 0.0))
            now = tuple(f - o for f, o in zip(fleet, own, strict=True))
            before = others.get(model)
            others[model] = now
            if before is None:
                if fold and now[3] >= 1:
                    with self._lock:
                        self.local.fold(model, *now)
                continue
            delta = tuple(a - b for a, b in zip(now, before, strict=True))
            if delta[3] >= 1 and min(delta) >= -1e-6:
                with self._lock:
                    self.local.fold(model, *delta)

    def _release_holds(self) -> None:
        for model in list(self._held):
            b = self.local.breaker_of(model)
            if b is not None and b.state == "open":
                b.probing = False
        self._held.clear()
        self._decided.clear()

    async def _lease(self, client: Redis) -> None:
        """One half-open probe per circuit, fleet-wide: the first replica to SET NX owns it."""
        now = self.local.clock()
        for model, until in list(self._held.items()):
            b = self.local.breaker_of(model)
            gone = not await client.exists(f"{self.prefix}probe:{model}")  # released, or lapsed
            if b is None or gone or now >= until or b.state == "closed":
                del self._held[model]
                if b is not None and b.state != "closed":
                    b.probing = False  # the owner went quiet: try again
                    self._decided.pop(model, None)
        for model, b in self.local.circuits():
            if b.state != "open" or b.until - now > 0.25 or model in self._held:
                continue
            if self._decided.get(model) == b.opened_at:
                continue
            self._decided[model] = b.opened_at
            key = f"{self.prefix}probe:{model}"
            if await client.set(key, self.origin, nx=True, px=self._lease_ms):
                continue
            if await client.get(key) == self.origin.encode():
                continue
            left = await client.pttl(key)
            if b.state == "open" and not b.probing:
                b.probing = True  # another replica probes: wait for its outcome
                self._held[model] = now + max(0.05, left / 1000 if left > 0 else 0.05)
