"""The Hub: the one entry object.

Its parts are built in :mod:`tokenhub._assemble`, its streams live in
:mod:`tokenhub._stream`, and requests run in the failover engine.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from functools import partial
from typing import TYPE_CHECKING, Any, Self

from tokenhub._clock import SystemClock
from tokenhub._redact import get_logger
from tokenhub._request import CHAT_KEYS, request_from, unexpected_keyword
from tokenhub._stream import ChatStream
from tokenhub.errors import HubClosedError, ModelNotFoundError, StoreError
from tokenhub.routing._estimate import make_counter
from tokenhub.routing._router import Router

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType
    from typing import Unpack

    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from tokenhub._admin import Admin
    from tokenhub._assemble import Source
    from tokenhub._clock import Clock
    from tokenhub._config import HubConfig
    from tokenhub._control import Change
    from tokenhub._http import HttpClient, HttpSettings
    from tokenhub._ledger import Background, Ledger, RequestLog
    from tokenhub._models import ChatRequest, ChatResponse, Message
    from tokenhub._request import ChatOptions
    from tokenhub._runtime import StateBackend
    from tokenhub._storage import StoreBackend
    from tokenhub._vault import Vault
    from tokenhub.providers import Capabilities, Provider
    from tokenhub.routing import RouteTrace

__all__ = ["ChatStream", "Hub"]

log = get_logger("tokenhub.hub")


def _new_request_id() -> str:
    return os.urandom(12).hex()


class Hub:
    """Routes chat requests to configured models and providers.

    Build one with :meth:`from_config` and use it as an async context manager::

        async with Hub.from_config(config) as hub:
            r = await hub.chat([{"role": "user", "content": "Hello"}], model="gpt-4o-mini")

    With ``model=`` naming a model or an alias, that model is tried first and the
    policy's fallbacks after it; without it, the routing policy ranks every model.
    A Hub is safe to share between tasks; it holds one connection pool per provider.
    """

    def __init__(
        self,
        config: HubConfig,
        providers: Mapping[str, Provider],
        *,
        clock: Clock | None = None,
        request_ids: Callable[[], str] = _new_request_id,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        store: StoreBackend | None = None,
        vault: Vault | None = None,
    ) -> None:
        from tokenhub._telemetry import Telemetry  # noqa: PLC0415 - OpenTelemetry loads with a Hub

        self._clock = clock = clock or SystemClock()
        self._store = store
        self._vault = vault
        self._request_ids = request_ids
        from tokenhub._fleet import state_backend  # noqa: PLC0415 - Redis only when configured

        self._state: StateBackend = state_backend(config, clock)
        self._telemetry = Telemetry(
            self._state, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        # Set by from_config when there is a store: what it holds, and how to follow it.
        self._source: Source | None = None
        self._retired: list[Provider] = []
        self._logs: RequestLog | None = None
        self._ledger: Ledger | None = None
        self._second: StoreBackend | None = None  # for budget writes that wait for the lock
        self._closed = threading.Event()  # set by aclose(); streams in flight read it too
        self._background: Background | None = None
        if store is not None:
            from tokenhub._ledger import Background  # noqa: PLC0415

            self._background = Background()
        if store is not None and config.store is not None and config.store.logs.enabled:
            from tokenhub._ledger import RequestLog  # noqa: PLC0415

            logs = config.store.logs
            self._logs = RequestLog(
                store,
                busy_timeout=config.store.busy_timeout,
                buffer=logs.buffer,
                retention_days=logs.retention_days,
                on_drop=partial(self._telemetry.log_drops.add, 1),
            )
        self._install(config, providers)

    def _install(self, config: HubConfig, providers: Mapping[str, Provider]) -> None:
        """Switch to ``config``; requests in flight keep the objects they already hold."""
        from tokenhub._assemble import routing_table  # noqa: PLC0415 - loaded with the first Hub
        from tokenhub.routing._engine import Engine  # noqa: PLC0415

        old = getattr(self, "_providers", {})
        self._retired.extend(p for name, p in old.items() if providers.get(name) is not p)
        self._config = config
        self._providers: dict[str, Provider] = dict(providers)
        self._state.breaker_settings = config.failover.breaker  # for models seen from now on
        engine = getattr(self, "_engine", None)
        table, infos = routing_table(config, self._providers)
        if engine is None or engine.settings != config.failover:
            self._engine = Engine(
                config.failover, self._state, self._clock, table, telemetry=self._telemetry
            )
        else:  # same settings: the same retry budget, over the new table
            self._engine = engine.using(table)
        if self._store is not None:
            from tokenhub._ledger import Budgets, Ledger  # noqa: PLC0415

            if config.budgets and self._second is None:
                self._second = self._store.sibling()
            budgets = (
                Budgets(self._store, config.budgets, wall=self._clock.wall, waiting=self._waiting)
                if config.budgets
                else None
            )
            content = config.store is not None and config.store.logs.content
            self._ledger = (
                Ledger(
                    self._logs,
                    budgets,
                    content=content,
                    timeout=config.failover.timeout,
                    background=self._background,
                )
                if self._logs is not None or budgets is not None
                else None
            )
        self._engine.billing = self._ledger
        self._router = Router(
            infos,
            config.routing,
            config.aliases,
            self._state,
            make_counter(config.tokenizer),
            providers=self._providers,
        )

    def _waiting(self) -> StoreBackend:
        """The second connection, for budget writes that wait for the lock (in threads)."""
        assert self._second is not None  # opened with the first budget  # noqa: S101
        return self._second

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        providers: Mapping[str, Provider] | None = None,
        http: Callable[[HttpSettings], HttpClient] | None = None,
        clock: Clock | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        store: str | os.PathLike[str] | None = None,
    ) -> Hub:
        """Build a Hub from a plain dict. No network I/O happens here.

        ``providers`` adds ready-made :class:`~tokenhub.providers.Provider`
        instances that models may name; ``http`` builds the HTTP client of every
        built-in provider from its :class:`~tokenhub.http.HttpSettings` (proxies,
        custom TLS, a mock transport in tests), in place of its ``http`` entry; ``clock``
        supplies time, sleeps and random draws (:class:`tokenhub.testing.FakeClock`
        makes failover tests instant). ``tracer_provider`` and ``meter_provider``
        replace OpenTelemetry's global providers for this Hub's spans and metrics.
        ``store`` is the path of the SQLite store (it overrides ``store.path``);
        with a store, providers may take their keys from its vault.

        Raises :class:`~tokenhub.errors.ConfigError` listing every problem.
        """
        from tokenhub._assemble import assemble  # noqa: PLC0415 - cattrs, first use

        clock = clock or SystemClock()
        if store is not None:
            config = {**config, "store": {**config.get("store", {}), "path": os.fspath(store)}}
        parts = assemble(config, providers=providers or {}, http=http, clock=clock)
        try:
            hub = cls(
                parts.config,
                parts.providers,
                clock=clock,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                store=parts.store,
                vault=parts.vault,
            )
        except BaseException:
            parts.close()
            raise
        hub._source = parts.source
        return hub

    @classmethod
    def from_store(cls, path: str | os.PathLike[str], **kwargs: Any) -> Hub:
        """Build a Hub whose whole config comes from the store at ``path``.

        Takes the keyword arguments of :meth:`from_config`; equivalent to
        ``Hub.from_config({}, store=path, ...)`` except that the file must exist.
        """
        if not os.path.exists(path):  # noqa: PTH110 - a typo must not create an empty store
            raise StoreError(f"no store at {os.fspath(path)!r}")
        return cls.from_config({}, store=path, **kwargs)

    @property
    def store(self) -> StoreBackend:
        """The Hub's store, SQLite or PostgreSQL (``export_config()``); see :doc:`store`."""
        if self._store is None:
            raise StoreError("this Hub has no store; set 'store.path'")
        return self._store

    @property
    def admin(self) -> Admin:
        """Runtime changes to providers, models, aliases and policies, persisted in the store."""
        from tokenhub._admin import Admin  # noqa: PLC0415

        self.store  # noqa: B018 - raises StoreError without a store
        return Admin(self._change, self._stored_config)

    async def usage(
        self,
        *,
        since: float | dt.datetime | dt.timedelta | None = None,
        group_by: str = "model",
    ) -> list[dict[str, Any]]:
        """Requests, errors, tokens and cost from the request log, grouped by one column.

        ``group_by`` is ``model``, ``provider``, ``caller``, ``alias`` or ``day``;
        ``since`` a UNIX time, a datetime, or a timedelta back from now. It reads
        the request log (rows exist only with ``store.logs.enabled``); rows still
        queued are written first.
        """
        import anyio.to_thread  # noqa: PLC0415

        from tokenhub._ledger import usage  # noqa: PLC0415

        self._check_open()
        store = self.store
        if isinstance(since, dt.timedelta):
            since = self._clock.wall() - since.total_seconds()
        elif isinstance(since, dt.datetime):
            since = since.timestamp()
        if self._logs is not None:
            await anyio.to_thread.run_sync(self._logs.flush)
        return await anyio.to_thread.run_sync(lambda: usage(store, since=since, group_by=group_by))

    def _stored_config(self) -> dict[str, Any]:
        return self._source.shared if self._source is not None else {}

    async def _change(self, changes: Sequence[Change], action: str) -> None:
        """Validate against the latest stored config, persist, and apply an admin change."""
        self._check_open()
        if self._source is None:  # pragma: no cover - Admin needs a store
            raise StoreError("this Hub has no store")
        self._install(*await self._source.change(changes, action, (self._config, self._providers)))

    def _sync(self, source: Source) -> None:
        """Follow changes other processes made to the store (at most every ``sync_interval``)."""
        built = source.poll((self._config, self._providers))
        if built is not None:
            self._install(*built)

    @property
    def vault(self) -> Vault:
        """The credential vault in this Hub's store (see :doc:`vault`)."""
        if self._vault is None:
            raise StoreError("this Hub has no store; set 'store.path' to use the vault")
        return self._vault

    @property
    def models(self) -> tuple[str, ...]:
        """The configured model names."""
        return tuple(self._config.models)

    def capabilities(self, model: str) -> Capabilities:
        """Describe what ``model`` can do.

        A model's configured ``capabilities`` list replaces its adapter's
        defaults; its ``context_window`` sets ``max_context``.
        """
        from tokenhub._assemble import capabilities_of  # noqa: PLC0415

        d = self._engine.deployments.get(model)
        if d is None:
            raise ModelNotFoundError(model, self.models)
        return capabilities_of(d.provider, d.upstream, self._config.models[model])

    def add_provider(self, name: str, provider: Provider) -> None:
        """Register ``provider`` under ``name``, replacing a provider of that name.

        Models configured with ``"provider": name`` use it from the next request on.
        """
        from tokenhub._assemble import routing_table  # noqa: PLC0415

        self._providers[name] = provider
        table, infos = routing_table(self._config, self._providers)
        self._engine = self._engine.using(table)
        for key, d in table.items():
            if d.provider_name == name:
                self._router.models[key] = infos[key]

    def health(self) -> dict[str, Any]:
        """Return a snapshot of runtime health, as plain data.

        Per model: its circuit, cooldown, latency and failure rate; per provider:
        any credential taken out of rotation. With shared state (``state.redis``),
        ``"state"`` says where it is (no password), whether it is connected, and
        the events queued and dropped.
        """
        health = self._state.snapshot()
        status = getattr(self._state, "status", None)  # a shared backend: where, and how it is
        if status is not None:
            health["state"] = status()
        return health

    def enable_credential(self, provider: str) -> None:
        """Put ``provider``'s key back into rotation after an auth or quota failure."""
        self._state.enable_credential(provider)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every provider's connections, lock the vault and close the store.

        From the start of ``aclose`` on, requests raise
        :class:`~tokenhub.errors.HubClosedError` before any I/O; a stream still
        being read ends with :class:`~tokenhub.errors.StreamInterrupted` (or
        ``HubClosedError`` before its first chunk). Bookkeeping already under way is
        finished first. Closing again does nothing.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        import anyio  # noqa: PLC0415
        import anyio.to_thread  # noqa: PLC0415

        with anyio.CancelScope(shield=True):
            try:
                await self._engine.detached.aclose()  # probes still out: no verdict
                for provider in (*self._providers.values(), *self._retired):
                    await provider.aclose()
                if self._background is not None:  # settlements waiting for the lock
                    await anyio.to_thread.run_sync(self._background.drain)
                if self._logs is not None:
                    await anyio.to_thread.run_sync(self._logs.close)  # writes every queued row
            finally:
                close = getattr(self._state, "close", None)  # a shared state's thread
                if close is not None:
                    await anyio.to_thread.run_sync(close)
                if self._vault is not None:
                    self._vault.lock()
                if self._source is not None:
                    self._source.close()
                if self._second is not None:
                    self._second.close()
                if self._store is not None:
                    self._store.close()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise HubClosedError

    def _plan(
        self,
        method: str,
        messages: Sequence[Mapping[str, Any] | Message],
        options: ChatOptions,
        *,
        stream: bool = False,
        peek: bool = False,
    ) -> tuple[ChatRequest, RouteTrace]:
        """Validate a call's messages and options and rank its candidates."""
        if not CHAT_KEYS.issuperset(options):
            raise unexpected_keyword(f"Hub.{method}", options, CHAT_KEYS)
        if self._closed.is_set():
            raise HubClosedError
        if self._source is not None:
            self._sync(self._source)
        request = request_from(messages, options)
        request_id = options.get("request_id") or self._request_ids()
        policy = self._router.policy_for(options.get("policy"))
        trace = self._router.plan(
            request,
            model=options.get("model"),
            policy=policy,
            caller=options.get("caller"),
            request_id=request_id,
            stream=stream,
            peek=peek,
        )
        return request, trace

    def explain(
        self,
        messages: Sequence[Mapping[str, Any] | Message],
        **options: Unpack[ChatOptions],
    ) -> RouteTrace:
        """Return the route :meth:`chat` would take for these arguments, sending nothing.

        Takes the same options as :meth:`chat` (:class:`~tokenhub.ChatOptions`).
        The candidates are in the order the Hub would try them: for the same
        ``request_id`` when exploration or a request-sticky alias is involved,
        and for the next request of a round-robin alias (``random`` aliases
        cannot be predicted). Runtime state (open circuits, cooldowns) is as now.
        """
        return self._plan("explain", messages, options, peek=True)[1]

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any] | Message],
        **options: Unpack[ChatOptions],
    ) -> ChatResponse:
        """Send a chat request and return the whole answer.

        The keyword options are the keys of :class:`~tokenhub.ChatOptions`, each
        documented there: ``model``, ``policy``, ``caller``, ``request_id`` and
        ``timeout`` steer routing; ``tools``, ``tool_choice``,
        ``parallel_tool_calls``, ``response_format``, ``temperature``, ``top_p``,
        ``max_tokens``, ``stop``, ``seed``, ``user``, ``metadata`` and
        ``extra_body`` follow OpenAI's Chat Completions API. An unknown keyword
        raises :class:`TypeError`.

        ``model`` names a model or an alias (tried first, then the policy's
        fallbacks); without it the routing ``policy`` (config ``routing``
        overridden by this argument's keys) ranks every model. ``caller`` names
        who is asking (user, tenant), for sticky aliases. ``extra_body`` is merged
        into the provider's request body as is. ``request_id`` is generated when
        not given and sent upstream as ``X-Request-ID``.

        When a candidate fails for a reason another model may not share (rate
        limit, overload, outage, timeout, auth or quota, context size, a request
        its adapter cannot express), the next candidate is tried; on the last
        one, overloads, transient and connection errors and rate limits are
        retried with backoff (see the failover docs). ``timeout`` bounds the
        whole call (config ``failover.timeout`` by default). ``response.trace``
        lists every attempt.

        Raises :class:`~tokenhub.errors.RequestError`,
        :class:`~tokenhub.errors.ModelNotFoundError` or
        :class:`~tokenhub.errors.NoRouteError` before any I/O, and the last
        candidate's :class:`~tokenhub.errors.ProviderError` when all fail.
        """
        caller, timeout = options.get("caller"), options.get("timeout")
        request, trace = self._plan("chat", messages, options)
        from tokenhub.routing._engine import chat  # noqa: PLC0415 - loaded with the first Hub

        if self._ledger is None:
            return await chat(self._engine, request, trace, timeout)
        entry = self._ledger.entry(
            request, trace, caller, self._clock, stream=False, timeout=timeout
        )
        await entry.admit()
        response = error = None
        try:
            response = await chat(self._engine, request, trace, timeout)
        except BaseException as exc:
            error = exc
            raise
        finally:
            final = response.trace if response is not None else getattr(error, "trace", None)
            await entry.close(final or trace, response, error)
        return response

    def stream(
        self,
        messages: Sequence[Mapping[str, Any] | Message],
        **options: Unpack[ChatOptions],
    ) -> ChatStream:
        """Start a streaming chat request; iterate the result for its chunks.

        Takes the same options as :meth:`chat` (:class:`~tokenhub.ChatOptions`).
        The request is validated and routed here, before any I/O; it is sent when
        iteration starts. A candidate that fails before its first chunk is replaced
        by the next one, invisibly; once a chunk has been delivered the stream is
        committed to that model. After the stream ends, :attr:`ChatStream.response`
        holds the whole answer. Use ``async with`` to release the connection early::

            async with hub.stream(messages, model="claude-haiku") as stream:
                async for chunk in stream:
                    print(chunk.text, end="")
        """
        caller, timeout = options.get("caller"), options.get("timeout")
        request, trace = self._plan("stream", messages, options, stream=True)
        return ChatStream(
            self._engine,
            request,
            trace,
            timeout,
            ledger=self._ledger,
            caller=caller,
            clock=self._clock,
            closed=self._closed,
        )
