"""The one place the flow of a request is written.

    client dialect -> on_start -> classify -> pre_request -> route -> provider
                   -> post_response -> on_end -> answer in the client's dialect

A provider that fails before the first byte reaches the client (connect error,
timeout, 429, 5xx) is followed by the next in the rule's failover chain, with
jittered backoff, a bounded number of attempts and per-provider circuit
breakers; what was tried and why is kept on the exchange.  Failover decides by
the error's type (``retryable``, ``provider_answered``), never by its text.

Same dialect in and out: the client's body goes upstream with only the model
name changed, and the upstream's bytes come back untouched (the fast path);
usage and text are read on the side.  Otherwise the request is parsed into
the canonical model and the provider's answer rendered in the client's dialect.

Each exchange has one end, :meth:`Pipeline.end`, run exactly once whatever
happens.  A request travels as an :class:`Ask` (its state, instead of long
parameter lists); a streamed answer's end is owned by its :class:`Streamed`,
which releases the upstream, runs the post hooks and ends the exchange once,
from the stream's own ``finally`` or from :meth:`StreamAnswer.close`, which the
server awaits whether or not it ever read the stream, or, if nobody does either,
when the answer is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from random import getrandbits
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import orjson

from fastroute.canonical import ChatRequest, ChatResponse, ImagePart, StreamEvent, TextPart, Usage, own_call
from fastroute.config import Config
from fastroute.errors import RateLimited, RequestError, UpstreamError
from fastroute.headers import MAX_MODEL_CHARS, check_model_name, header_value
from fastroute.limits import StreamLineTooLong
from fastroute.plugins import MODIFIED, PluginContext, PluginSet, Stop
from fastroute.providers import Provider
from fastroute.providers.fit import fit
from fastroute.recording.events import EventBus
from fastroute.recording.recorder import Recorder
from fastroute.routing import Route, Router
from fastroute.routing.classifiers import build_classifiers, request_text, run_all
from fastroute.routing.health import Health

log = logging.getLogger("fastroute")

JSON = b"application/json"
#: status recorded when the client went away before the end (nginx's convention)
CLIENT_CLOSED = 499
EVENT_STREAM = b"text/event-stream"
#: how a refusal names the limit a key reached
LIMIT_WORDS = {"requests_per_minute": "limit of requests per minute", "tokens_per_minute": "limit of tokens per minute",
               "budget_usd": "budget"}
#: pieces of a stream's text gathered before they are merged (see :func:`compact`)
COMPACT_AT = 64


@dataclass(slots=True)
class Exchange:
    """Everything known about one request, filled in as it goes: what the log and the events hold.
    Never a key."""

    id: str
    dialect: str
    started: float
    ts_ms: int
    requested_model: str = ""
    stream: bool = False
    provider: str | None = None
    sent_model: str | None = None
    tags: list[str] = field(default_factory=list)
    status: int = 200
    error: str | None = None
    usage: Usage | None = None
    response_text: str = ""
    ttft_ms: float | None = None
    duration_ms: float | None = None
    #: the [[routers]] rule that matched (-1: forced by a plugin)
    rule: int | None = None
    #: every provider tried, in order: {provider, model, status, error}
    attempts: list[dict[str, Any]] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    response_tags: list[str] = field(default_factory=list)
    #: the request in canonical form, when it was parsed (for the log)
    request: Any = None
    #: hosted tools the provider could not run, left out of what it received
    omitted_tools: list[str] = field(default_factory=list)
    #: what the client dialect's state keeps of this exchange once answered (Responses), if anything
    kept: Any = None
    #: set by :meth:`Pipeline.end`: out of flight and recorded; ending it again does nothing
    ended: bool = False
    #: the name of the client's key ([[keys]]), when keys are required
    key_name: str | None = None
    #: the agent's session the request belongs to, when the client says
    session: str | None = None
    #: the key's limits this exchange was admitted under (its usage and cost are counted at the end)
    limits: Any = None
    #: what it cost, from its usage (set at its end; None: nothing prices it)
    cost_micros: int | None = None
    #: the key's limit that refused it (``governance.limiter.Verdict.limit``), when one did
    limited_by: str | None = None
    #: the exact cache's verdict (``fastroute.cache``: hit, miss, bypass); None: not looked at
    cache: str | None = None
    #: why the answer ended (``stop``, ``length``, ``tool_calls`` ...), when the upstream said
    stop_reason: str | None = None
    #: its spans (``telemetry.spans.Trace``) when [telemetry] is on; never recorded
    trace: Any = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


@dataclass(slots=True)
class Ask:
    """One request on its way through the stages.  It holds the client's key, so it is never
    recorded: the exchange is."""

    ex: Exchange
    dialect: ModuleType
    #: the client's JSON body; None once the request changed and must be rendered from ``request``
    body: Any
    client_key: str | None = None
    client_headers: dict[str, str] | None = None
    request: ChatRequest | None = None
    plugins: list[Any] = field(default_factory=list)
    ctx: PluginContext | None = None
    #: who sent it (governance.keys.Caller): the configured key and the session, when known
    caller: Any = None
    #: the client's ``Cache-Control`` header (read only when the exact cache is on)
    cache_control: bytes | None = None
    #: what the exact cache needs to keep the answer of a miss (``fastroute.cache.exact.Fill``)
    fill: Any = None


@dataclass(slots=True)
class Reached:
    """What one provider answered, before fastroute makes the client's answer of it: exactly one of
    ``raw`` (same dialect, bytes), ``response`` (translated) or ``upstream`` (a stream: the
    same-dialect reply, read through ``tap``, or the provider's events)."""

    provider: Provider
    request: ChatRequest | None = None
    raw: Any = None
    response: ChatResponse | None = None
    upstream: Any = None
    tap: Any = None


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]
    content_type: bytes = JSON


@dataclass(slots=True)
class StreamAnswer:
    status: int
    chunks: AsyncIterator[bytes]
    headers: list[tuple[bytes, bytes]]
    content_type: bytes = EVENT_STREAM
    #: what ends the exchange behind the stream (its :class:`Streamed`), if there is one
    on_close: Callable[[], Awaitable[None]] | None = None

    async def close(self) -> None:
        """End the stream whether or not ``chunks`` was ever iterated; idempotent.  The server awaits
        this once the response is over, however it ended."""
        try:
            await self.chunks.aclose()  # type: ignore[attr-defined]
        finally:
            if self.on_close is not None:
                await self.on_close()


class Streamed:
    """The end of one streamed exchange, run once: the upstream released, the post hooks run, the
    exchange ended.  The stream's generator runs it from its ``finally``; :meth:`close` runs it for a
    stream never started (whose ``finally`` never runs); :meth:`__del__` schedules it when nobody did
    either (the answer was dropped unread)."""

    __slots__ = ("pipeline", "ask", "provider", "upstream", "started", "over")

    def __init__(self, pipeline: Pipeline, ask: Ask, provider: Provider | None, upstream: Any) -> None:
        self.pipeline = pipeline
        self.ask = ask
        self.provider = provider
        #: what holds the upstream open: anything with ``aclose()``
        self.upstream = upstream
        self.started = False
        self.over = False

    async def close(self) -> None:
        """``StreamAnswer.on_close``: after the stream's generator was closed."""
        if self.over:  # the usual case: the generator's ``finally`` ended it
            return
        if not self.started:
            self._never_started()
        await self.end()

    def _never_started(self) -> None:
        ex = self.ask.ex
        if not ex.ended and ex.error is None:
            ex.status, ex.error = CLIENT_CLOSED, "client disconnected before the stream started"

    async def end(self) -> None:
        if self.over:
            return
        self.over = True
        ex = self.ask.ex
        try:
            try:
                await self.upstream.aclose()
            except Exception:  # the exchange still ends
                log.exception("closing the upstream of %s failed", ex.id)
            await self.pipeline._after_stream(self.ask)
        finally:
            self.pipeline.end(ex)

    def __del__(self) -> None:
        if self.over:
            return
        ex = self.ask.ex
        if not self.started:
            self._never_started()
        elif not ex.ended and ex.error is None:  # started, then dropped with no loop to close it
            ex.status, ex.error = CLIENT_CLOSED, "client disconnected"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop left to release the upstream on: record the end at least
            self.over = True
            self.pipeline.end(self.ask.ex)
            return
        self.pipeline._closing(loop.create_task(self.end()))


class Flight:
    """Requests in flight on every pipeline sharing it: after a reload the new pipeline shares its
    predecessor's, so the server's count (the events' ``in_flight``, the gauge) stays whole while
    the old pipeline's last requests finish."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class Pipeline:
    def __init__(self, config: Config, providers: dict[str, Provider], router: Router,
                 health: Health | None = None, recorder: Recorder | None = None,
                 states: dict[str, Any] | None = None, limiter: Any = None, cache: Any = None,
                 telemetry: Any = None, flight: Flight | None = None) -> None:
        self.config = config
        #: the exact cache (fastroute.cache.ExactCache); None: off
        self.cache = cache
        #: spans per request (telemetry.otel.Telemetry); None: [telemetry] is off and nothing is traced
        self.telemetry = telemetry
        #: rate limits and budgets per key (governance.limiter.Limiter); None: nothing is limited
        self.limiter = limiter
        #: per client dialect, the state it keeps across requests (Responses: responses_store.ResponsesStore)
        self.states = states or {}
        self.providers = providers
        self.router = router
        self.health = health or Health(config.failover)
        self.plugins = PluginSet(config)
        self.request_classifiers, self.response_classifiers = build_classifiers(config)
        self.recorder = recorder or Recorder(EventBus())
        #: this pipeline's requests in flight (a reload closes its upstream client once none is left)
        self.in_flight = 0
        #: every pipeline's of this server (see :class:`Flight`)
        self.flight = flight if flight is not None else Flight()
        #: the start of an upstream stream event may not pass this many bytes before its end arrives
        self.max_event_bytes = config.server.max_stream_line_bytes
        # the canonical parse is skipped on the fast path unless something needs to read the request
        self._always_parse = bool(self.plugins.enabled or self.request_classifiers or config.logging.enabled or any(
            p.config.capabilities or p.config.discover for p in providers.values()))
        #: ends of dropped streams, running (a task is referenced until it is done)
        self._ending: set[asyncio.Task[None]] = set()

    # entry and exit -------------------------------------------------------

    def new_exchange(self, dialect: ModuleType) -> Exchange:
        """Start an exchange; it is in flight until :meth:`end`."""
        self.in_flight += 1
        self.flight.n += 1
        return Exchange(id="req_%016x" % getrandbits(64), dialect=dialect.NAME, started=time.perf_counter(),
                        ts_ms=int(time.time() * 1000))

    def end(self, ex: Exchange) -> None:
        """The one exit of every exchange: out of flight, one log line, one ``complete`` event.
        Exactly once: a second call does nothing."""
        if ex.ended:
            return
        ex.ended = True
        self.in_flight -= 1
        self.flight.n -= 1
        ex.duration_ms = ex.elapsed_ms()
        try:
            ex.cost_micros = self.recorder.cost_of(ex)
            self.recorder.complete(ex, self.flight.n)
        except Exception:  # recording must never take an answer down with it
            log.exception("recording failed for %s", ex.id)
        if ex.limits is not None:
            self._settle(ex)

    def _settle(self, ex: Exchange) -> None:
        """Count the exchange's tokens and cost against its key's limits (a stream's at its end)."""
        usage = ex.usage
        tokens = usage.input_tokens + usage.output_tokens if usage is not None else 0
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop left (a dropped stream at exit): nothing can be counted now
            log.warning("request %s: its usage could not be counted against key %r's limits", ex.id, ex.key_name)
            return
        self.limiter.settle_soon(ex.key_name, ex.limits, tokens, ex.cost_micros or 0)

    async def settled(self) -> None:
        """Wait for the ends still running (streams dropped unread) and the usage being counted."""
        if self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)
        if self.limiter is not None:
            await self.limiter.counters.drained()

    def _closing(self, task: asyncio.Task[None]) -> None:
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def fail(self, ex: Exchange, dialect: ModuleType, err: RequestError) -> Answer:
        body = dialect.error_body(err)
        if not ex.ended:
            ex.status, ex.error = err.http_status, err.message
        self.end(ex)
        headers = self._headers(ex)
        if isinstance(err, RateLimited) and err.retry_after_s is not None:
            headers.append((b"retry-after", str(err.retry_after_s).encode()))
        return Answer(err.http_status, body, headers)

    async def dispatch(self, dialect: ModuleType, body: Any, client_key: str | None,
                       client_headers: dict[str, str] | None = None, caller: Any = None,
                       cache_control: bytes | None = None) -> Answer | StreamAnswer:
        ask = Ask(self.new_exchange(dialect), dialect, body, client_key, client_headers, caller=caller,
                  cache_control=cache_control)
        ex = ask.ex
        if self.telemetry is not None:
            ex.trace = self.telemetry.begin(ex, client_headers)
        if caller is not None:
            ex.key_name = caller.key.name if caller.key is not None else None
            ex.session = caller.session
        try:
            try:
                return await self._dispatch(ask)
            except RequestError as err:
                if ask.ctx is not None and ask.plugins:  # on_end sees every request that reached it, failed too
                    ask.ctx.error = err.message
                    await self._hooks("on_end", ask)
                if not ex.requested_model:  # the body was refused: still say what it asked for
                    ex.requested_model, ex.stream = asked_for(dialect, body)
                return self.fail(ex, dialect, err)
            except PluginFailed as exc:
                log.error("plugin %r failed in %s: %s", exc.plugin, exc.hook, exc.cause)
                return self.fail(ex, dialect, RequestError(f"plugin '{exc.plugin}' failed in {exc.hook}: {exc.cause}"))
            except Exception as exc:  # a bug: answer honestly, log it, keep serving
                log.exception("request %s failed inside fastroute", ex.id)
                return self.fail(ex, dialect, RequestError(f"internal error in fastroute: {type(exc).__name__}"))
        except BaseException as exc:  # cancelled (the client went away, the server stops), or a bug above
            if not ex.ended:
                if isinstance(exc, asyncio.CancelledError):
                    ex.status, ex.error = CLIENT_CLOSED, "client disconnected before the answer"
                else:
                    ex.status, ex.error = 500, f"internal error in fastroute: {type(exc).__name__}"
                self.end(ex)
            raise

    # stages ---------------------------------------------------------------

    async def _dispatch(self, ask: Ask) -> Answer | StreamAnswer:
        ex, dialect, body = ask.ex, ask.dialect, ask.body
        model, stream = dialect.check_request(body)
        ex.requested_model, ex.stream = check_model_name(model), stream
        key = ask.caller.key if ask.caller is not None else None
        if key is not None:
            key.require(model)
        if ex.session is None:
            ex.session = session_in(body)
        if key is not None and key.limits is not None and self.limiter is not None:
            await self._admit(ex, key)
        self.recorder.start(ex, self.flight.n)
        requested = body.pop("plugins", None) if "plugins" in body else None
        plugins = ask.plugins = self.plugins.for_request(requested)
        if "tier" in body and any(p.id == "pareto-router" for p, _ in plugins):
            tier = body.pop("tier")
            for p, settings in plugins:
                if p.id == "pareto-router":
                    settings.setdefault("tier", tier)
        ex.plugins = [p.id for p, _ in plugins]
        state = self.states.get(dialect.NAME)
        if state is not None:  # what earlier requests left (previous_response_id, item_reference)
            ex.kept = await state.prepare(body, ask.client_key)
        request = ask.request = ex.request = dialect.parse_request(body) if (self._always_parse or plugins) else None
        if request is not None:
            ask.ctx = PluginContext(request, {}, ex.tags)
            started = await self._hooks("on_start", ask)
            if started is STOPPED:
                return self._stopped(ask)
            ex.tags.extend(run_all(self.request_classifiers, request_text(request)))
            modified = await self._hooks("pre_request", ask)
            if modified is STOPPED:
                return self._stopped(ask)
            if modified or started:
                ask.body = None  # the request changed: it is rendered from the canonical model now
        self.recorder.classified(ex)
        route = self._route(model, ask)
        if self.cache is not None:
            return await self.cache.serve(self, ask, route)
        return await self._with_failover(ask, route)

    async def _admit(self, ex: Exchange, key: Any) -> None:
        """Count the request against its key's limits, or refuse it (429, ``Retry-After``)."""
        verdict = await self.limiter.admit(key.name, key.limits)
        if not verdict:
            ex.limited_by = verdict.limit
            what = LIMIT_WORDS.get(verdict.limit, verdict.limit)
            wait = f"; try again in {verdict.retry_after_s} s" if verdict.retry_after_s is not None else \
                "; it does not reset by itself"
            raise RateLimited(f"key {key.name!r} reached its {what}{wait}", retry_after_s=verdict.retry_after_s,
                              code=verdict.limit)
        ex.limits = key.limits

    async def _hooks(self, hook: str, ask: Ask) -> Any:
        """Run one hook of every plugin.  Returns STOPPED, True (something changed) or False.

        ``on_start`` / ``pre_request`` failures raise :class:`PluginFailed`; later hooks only log.
        """
        ctx = ask.ctx
        if ctx is None or not ask.plugins:
            return False
        changed = False
        for plugin, settings in ask.plugins:
            ctx.settings = settings
            try:
                result = await getattr(plugin, hook)(ctx)
            except Exception as exc:
                if hook in ("on_start", "pre_request"):
                    raise PluginFailed(plugin.id, hook, exc) from exc
                log.exception("plugin %r failed in %s; going on", plugin.id, hook)
                continue
            if isinstance(result, Stop):
                if hook in ("on_start", "pre_request"):
                    if ctx.response is None:
                        raise PluginFailed(plugin.id, hook, ValueError("stopped without an answer"))
                    return STOPPED
            elif result == MODIFIED:
                changed = True
        return changed

    def _stopped(self, ask: Ask) -> Answer | StreamAnswer:
        """A plugin answered before any provider: render its answer in the client's dialect."""
        ex, ctx = ask.ex, ask.ctx
        assert ctx is not None and ctx.response is not None
        response = ctx.response
        ex.provider, ex.sent_model = "plugin", response.model or ex.requested_model
        if ex.stream:
            ask.plugins, ask.ctx = [], None  # a plugin's own answer is not post-processed
            return self._streamed(ask, None, _replay(response), ctx.request)
        ex.usage, ex.response_text = response.usage, response.text()
        answer = Answer(200, self._rendered(ask, response, ctx.request), self._headers(ex))
        self.end(ex)
        return answer

    def _route(self, model: str, ask: Ask) -> Route:
        request, ctx = ask.request, ask.ctx
        needs = request_needs(request) if request is not None else ()
        if ctx is not None and ctx.forced_provider:
            if ctx.forced_provider not in self.providers:
                raise RequestError(f"a plugin forced provider {ctx.forced_provider!r}, which is not configured")
            route = Route(ctx.forced_provider, model, -1)
        else:
            route = self.router.route(model, ask.ex.tags, needs)
        ask.ex.rule = route.rule
        return route

    async def _with_failover(self, ask: Ask, route: Route) -> Answer | StreamAnswer:
        """Try the route's providers in turn; each attempt settles its breaker before the next step:
        a failure (retryable: the next provider may do better), a success (it answered, even with its own
        4xx), or released (refused before it was sent, cancelled, or a bug: no verdict)."""
        ex = ask.ex
        plan = [(route.provider, route.model), *route.fallbacks]
        limit = self.config.failover.max_attempts
        last: RequestError | None = None
        tried = 0
        trace = ex.trace
        for name, model in plan:
            if tried >= limit:
                break
            if tried and not self.health.available(name):
                ex.attempts.append({"provider": name, "model": model, "status": None,
                                    "error": "skipped: circuit breaker open"})
                continue
            if tried:
                await asyncio.sleep(self.health.backoff_s(tried))
            tried += 1
            provider = self.providers[name]
            ex.provider, ex.sent_model = name, model
            self.recorder.routed(ex)
            attempt: dict[str, Any] = {"provider": name, "model": model, "status": 200, "error": None}
            ex.attempts.append(attempt)
            self.health.begin(name)
            try:
                reaching = self._reach(ask, provider, model)
                reached = await (reaching if trace is None else trace.attempt(reaching, name, model))
            except RequestError as err:
                attempt.update(status=err.http_status, error=err.message)
                if err.retryable:
                    self.health.failure(name)
                    last = err
                    continue
                if err.provider_answered:
                    self.health.success(name)
                else:
                    self.health.release(name)
                raise
            except BaseException:
                self.health.release(name)
                raise
            self.health.success(name)
            return await self._answer(ask, reached)
        assert last is not None
        raise last

    async def _reach(self, ask: Ask, provider: Provider, model: str) -> Reached:
        """One attempt at one provider, up to its answer (a stream: its status).  Raises before anything
        reaches the client."""
        ex, dialect, body = ask.ex, ask.dialect, ask.body
        if body is not None and provider.passthrough_dialect == dialect.NAME:
            upstream_body, tap = dialect.passthrough(body, model, ex.stream, provider.name)
            if ex.stream:
                reply = await provider.stream_raw(upstream_body, ask.client_key, ask.client_headers)
                return Reached(provider, upstream=reply, tap=tap)
            return Reached(provider, raw=await provider.post_raw(upstream_body, ask.client_key, ask.client_headers))
        request = ask.request if ask.request is not None else dialect.parse_request(body)
        fitted = fit(request, provider, model)
        request = fitted.request
        request.model = model
        if fitted.omitted:
            ex.omitted_tools = fitted.omitted
            log.warning("request %s: provider %r cannot run the hosted tool(s) %s; left out of what it received",
                        ex.id, provider.name, ", ".join(fitted.omitted))
        if ex.stream:
            return Reached(provider, request, upstream=await provider.open_stream(request, ask.client_key))
        return Reached(provider, request, response=await provider.send(request, ask.client_key))

    async def _answer(self, ask: Ask, reached: Reached) -> Answer | StreamAnswer:
        """The client's answer from what the provider answered; the exchange ends with it (a stream's
        when the stream does)."""
        ex, dialect = ask.ex, ask.dialect
        if ask.fill is not None:  # the exact cache keeps what this answer turns out to be
            ask.fill.watch(reached)
        if reached.upstream is not None:
            return self._streamed(ask, reached.provider, reached.upstream, reached.request, reached.tap)
        if reached.raw is not None:
            out = reached.raw.body
            response = read_answer(dialect, out)  # read once, on the side: usage and text
            if response is None:  # still the client's, as it came; the log says what it was
                ex.error = f"provider '{reached.provider.name}' answered with a body fastroute cannot read"
            else:
                ex.usage = response.usage if response.usage.total_tokens else None
                ex.stop_reason = response.stop_reason
                if ask.ctx is not None and (ask.plugins or self.response_classifiers) and await self._after(ask, response):
                    out = dialect.render_response(response)
                ex.response_text = response.text()
            answer = Answer(200, out, self._headers(ex))
            self.end(ex)
            return answer
        request, response = reached.request, reached.response
        assert request is not None and response is not None
        names = request.flat_tool_names()
        for call in response.tool_calls if names else ():
            own_call(names, call)
        if response.usage.total_tokens == 0:
            response.usage = estimate_usage(request, response.text())
        if ask.ctx is None and self.response_classifiers:
            ask.ctx = PluginContext(request, {}, ex.tags)
        if ask.ctx is not None:
            await self._after(ask, response)
        ex.usage, ex.response_text, ex.stop_reason = response.usage, response.text(), response.stop_reason
        answer = Answer(200, self._rendered(ask, response, request), self._headers(ex))
        self.end(ex)
        return answer

    async def _after(self, ask: Ask, response: ChatResponse) -> bool:
        """Response classifiers, then post_response; True when a plugin changed the answer."""
        assert ask.ctx is not None
        ask.ex.response_tags = run_all(self.response_classifiers, response.text())
        ask.ctx.response = response
        changed = await self._hooks("post_response", ask)
        await self._hooks("on_end", ask)
        return bool(changed)

    def _rendered(self, ask: Ask, response: ChatResponse, request: ChatRequest) -> bytes:
        """The answer in the client's dialect; kept by the dialect's state when it keeps one."""
        out = ask.dialect.render_response(response, request)
        kept = ask.ex.kept
        if kept is not None and kept.keep:
            self.states[ask.dialect.NAME].keep(kept, orjson.loads(out))
        return out

    def _headers(self, ex: Exchange) -> list[tuple[bytes, bytes]]:
        """Transparency: who answered and why; all known before the first byte of a stream."""
        headers = [(b"x-router-provider", header_value(ex.provider or "")),
                   (b"x-router-model", header_value(ex.sent_model or "")),
                   (b"x-router-request-tags", header_value(",".join(ex.tags))),
                   (b"x-request-id", ex.id.encode())]
        if ex.response_tags:  # non-streamed answers only: a stream's headers leave before its end
            headers.append((b"x-router-response-tags", header_value(",".join(ex.response_tags))))
        if len(ex.attempts) > 1:
            headers.append((b"x-router-attempts", str(len(ex.attempts)).encode()))
        if ex.omitted_tools:
            headers.append((b"x-router-omitted-tools", header_value(",".join(ex.omitted_tools))))
        if ex.cache is not None:
            headers.append((b"x-router-cache", ex.cache.encode()))
        return headers

    # streams --------------------------------------------------------------

    def _streamed(self, ask: Ask, provider: Provider | None, upstream: Any, request: ChatRequest | None,
                  tap: Any = None) -> StreamAnswer:
        """A stream answer that owns ``upstream`` from here on: released however the stream ends, or
        here, if even the answer cannot be made."""
        st = Streamed(self, ask, provider, upstream)
        if ask.ex.trace is not None:
            ask.ex.trace.streaming()
        ask.body = ask.client_headers = None  # sent: the stream does not hold them for its whole life
        try:
            chunks = self._relay(st, tap) if tap is not None else self._render(st, request)
            dialect = ask.dialect
            return StreamAnswer(200, chunks, self._headers(ask.ex) + dialect.STREAM_HEADERS,
                                dialect.STREAM_CONTENT_TYPE, st.close)
        except BaseException:
            st.over = True  # ended below, as a failed answer
            self._closing(asyncio.ensure_future(upstream.aclose()))
            raise

    async def _relay(self, st: Streamed, tap: Any) -> AsyncIterator[bytes]:
        """Forward the upstream's chunks the moment they arrive; read them on the side."""
        st.started = True
        ex, dialect, reply, provider = st.ask.ex, st.ask.dialect, st.upstream, st.provider
        assert provider is not None
        stream_end, boundary, limit = dialect.STREAM_END, dialect.stream_boundary, self.max_event_bytes
        text = getattr(tap, "text_parts", [])
        held = b""  # the start of an event whose end has not arrived yet
        try:
            async for chunk in reply.chunks():
                if ex.ttft_ms is None:
                    ex.ttft_ms = ex.elapsed_ms()
                if held:
                    chunk, held = held + chunk, b""
                if not chunk.endswith(stream_end):
                    # Forward whole events only: a client can do nothing with half of one, and
                    # if the upstream dies mid-event the client must see an error, not broken JSON.
                    cut = boundary(chunk)
                    chunk, held = chunk[:cut], chunk[cut:]
                    if len(held) > limit:
                        yield self._stream_failed(st, event_too_long(provider, limit))
                        return
                    if not chunk:
                        continue
                out = tap.forward(chunk)
                if out:
                    yield out
                read_on_the_side(ex, tap, chunk)  # accounting, after the client has the bytes
                if len(text) >= COMPACT_AT:
                    compact(text)
            if held:  # the upstream ended cleanly on an unterminated event: it is the upstream's to give
                yield held
                read_on_the_side(ex, tap, held)
            end_on_the_side(ex, tap)  # a stream the upstream cut before its end is logged as such
        except UpstreamError as exc:
            yield self._stream_failed(st, provider.transport_error(exc))
        except (asyncio.CancelledError, GeneratorExit):
            # Gone once the stream's own end was sent (the client read [DONE] and hung up while the
            # upstream's last bytes were awaited): it got the whole answer, which is what is recorded.
            ended = getattr(tap, "ended", None)
            if ended is None or not ended():
                ex.status, ex.error = CLIENT_CLOSED, "client disconnected"
            raise
        except Exception as exc:  # a bug while relaying: the client sees an error, the log says what
            log.exception("stream %s failed inside fastroute", ex.id)
            yield self._stream_failed(st, RequestError(f"internal error in fastroute: {type(exc).__name__}"))
        finally:
            ex.usage, ex.response_text, ex.stop_reason = tap.usage, tap.text, getattr(tap, "stop_reason", None)
            if ex.error is None and tap.error is not None:
                ex.error = tap.error
            await st.end()

    async def _render(self, st: Streamed, request: Any) -> AsyncIterator[bytes]:
        """Render canonical stream events in the client's dialect; usage always ends the stream."""
        st.started = True
        ex, dialect, events = st.ask.ex, st.ask.dialect, st.upstream
        text: list[str] = []
        renderer = None
        try:
            renderer = dialect.StreamRenderer(request)
            names = request.flat_tool_names()
            async for ev in events:
                if ex.ttft_ms is None:
                    ex.ttft_ms = ex.elapsed_ms()
                if ev.kind == "text":
                    text.append(ev.text)
                    if len(text) >= COMPACT_AT:
                        compact(text)
                elif ev.kind == "tool_call" and names:
                    own_call(names, ev.tool_call)
                elif ev.kind == "usage":
                    ex.usage = ev.usage
                elif ev.kind == "stop":
                    ex.stop_reason = ev.stop_reason
                elif ev.kind == "error":
                    ex.status, ex.error = ev.error.http_status, ev.error.message
                    yield renderer.render(ev)
                    return  # an error ends the stream: no clean ending after it
                out = renderer.render(ev)
                if out:  # an empty chunk would end the response
                    yield out
            if ex.usage is None:  # the upstream gave none: count it, and say so
                ex.usage = estimate_usage(request, "".join(text))
                out = renderer.render(StreamEvent("usage", usage=ex.usage))
                if out:
                    yield out
            yield renderer.end()
        except RequestError as err:
            yield self._stream_failed(st, err)
        except (asyncio.CancelledError, GeneratorExit):
            ex.status, ex.error = CLIENT_CLOSED, "client disconnected"
            raise
        except Exception as exc:  # a bug while rendering: the client sees an error, the log says what
            log.exception("stream %s failed inside fastroute", ex.id)
            yield self._stream_failed(st, RequestError(f"internal error in fastroute: {type(exc).__name__}"))
        finally:
            ex.response_text = "".join(text)
            final = getattr(renderer, "final", None)
            if final is not None and ex.error is None and ex.kept is not None and ex.kept.keep:
                try:
                    self.states[dialect.NAME].keep(ex.kept, final)
                except Exception:
                    log.exception("keeping the answer of %s failed", ex.id)
            await st.end()

    def _stream_failed(self, st: Streamed, err: RequestError) -> bytes:
        """The error event that ends a stream, in the client's dialect; the exchange records why."""
        ex = st.ask.ex
        if isinstance(err, StreamLineTooLong):
            log.error("request %s: %s", ex.id, err.message)
        ex.status, ex.error = err.http_status, err.message
        return st.ask.dialect.render_stream_error(err)

    async def _after_stream(self, ask: Ask) -> None:
        """Post hooks on the assembled answer, once the stream is over (it can no longer change)."""
        ctx, ex = ask.ctx, ask.ex
        if ctx is None and not self.response_classifiers:
            return
        try:
            if ctx is None:
                ex.response_tags = run_all(self.response_classifiers, ex.response_text)
                return
            response = ChatResponse(id=ex.id, model=ex.sent_model or "", content=[TextPart(ex.response_text)],
                                    usage=ex.usage or Usage())
            ctx.error = ex.error
            await self._after(ask, response)
        except Exception:  # never let accounting break a finished stream
            log.exception("post-stream hooks failed for %s", ex.id)


STOPPED = object()


class PluginFailed(Exception):
    def __init__(self, plugin: str, hook: str, cause: BaseException) -> None:
        super().__init__(f"{plugin} in {hook}: {cause}")
        self.plugin, self.hook, self.cause = plugin, hook, cause


def read_answer(dialect: ModuleType, body: bytes) -> ChatResponse | None:
    """A passed-through answer in canonical form, or None when it is not the dialect's JSON
    (it still goes to the client as it came)."""
    try:
        return dialect.parse_response(body)
    except (ValueError, AttributeError, TypeError, KeyError):  # orjson's decode error is a ValueError
        return None


def event_too_long(provider: Provider, limit: int) -> StreamLineTooLong:
    return StreamLineTooLong(f"provider '{provider.name}' sent a stream event of over {limit:,} bytes without "
                             "ending it ([server] max_stream_line_bytes)", provider=provider.name)


def compact(parts: list[str]) -> None:
    """Keep a stream's text in few strings: a token's ``str`` costs ~50 bytes beyond its characters,
    and a stream holds its text until it ends.  The tail is merged while it is no shorter than the
    piece before it (a binary counter): O(log n) strings, O(n log n) characters copied; called once
    ``COMPACT_AT`` pieces have gathered, so most chunks pay one ``len``."""
    while len(parts) > 1 and len(parts[-1]) >= len(parts[-2]):
        last = parts.pop()
        parts[-1] += last


def read_on_the_side(ex: Exchange, tap: Any, chunk: bytes) -> None:
    """Account for a passed-through chunk; an event the tap cannot read still went to the client
    as it came (that is the fast path's promise), and the log says the upstream sent it."""
    try:
        tap.feed(chunk)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        if ex.error is None:
            ex.error = f"provider '{ex.provider}' sent a stream event fastroute cannot read ({type(exc).__name__})"


def end_on_the_side(ex: Exchange, tap: Any) -> None:
    """The upstream ended the stream: a tap that can tell (``finish``) says whether it was cut short."""
    finish = getattr(tap, "finish", None)
    if finish is None:
        return
    try:
        finish()
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        if ex.error is None:
            ex.error = f"provider '{ex.provider}' sent a stream event fastroute cannot read ({type(exc).__name__})"


def session_in(body: dict[str, Any]) -> str | None:
    """The session a body names: ``metadata.user_id`` (Claude Code's holds ``..._session_<uuid>``:
    the session part is taken), or the Responses ``prompt_cache_key`` Codex sets per session."""
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user:
        _, marker, session = user.rpartition("_session_")
        return (session if marker and session else user)[:256]
    key = body.get("prompt_cache_key")
    return key[:256] if isinstance(key, str) and key else None


def asked_for(dialect: ModuleType, body: Any) -> tuple[str, bool]:
    """The model and ``stream`` a body asked for, read loosely (for the record of a refused one)."""
    if not isinstance(body, dict):
        return "", False
    model, stream = body.get("model"), body.get("stream")
    return (model[:MAX_MODEL_CHARS] if isinstance(model, str) else "",
            stream if isinstance(stream, bool) else dialect.NAME == "ollama")  # Ollama streams by default


def request_needs(request: ChatRequest) -> frozenset[str]:
    """Capabilities a request needs from the model: ``vision`` for images, ``tools`` for tools."""
    needs = set()
    if request.tools:
        needs.add("tools")
    if any(isinstance(p, ImagePart) for m in request.messages for p in m.content):
        needs.add("vision")
    return frozenset(needs)


async def _replay(response: ChatResponse) -> AsyncIterator[StreamEvent]:
    """A finished answer as a stream of events (a plugin's answer to a streaming client)."""
    yield StreamEvent("start", id=response.id, model=response.model)
    if response.text():
        yield StreamEvent("text", text=response.text())
    for i, call in enumerate(response.tool_calls):
        yield StreamEvent("tool_call", index=i, tool_call=call)
    yield StreamEvent("stop", stop_reason=response.stop_reason)
    yield StreamEvent("usage", usage=response.usage)


def estimate_usage(request: Any, output: str) -> Usage:
    """A rough count (four characters a token) for upstreams that report none, marked as estimated."""
    chars = len(request.system or "")
    for m in request.messages:
        chars += sum(len(p.text) for p in m.content if hasattr(p, "text") and isinstance(p.text, str))
        chars += sum(len(c.arguments) + len(c.name) for c in m.tool_calls)
    return Usage(input_tokens=max(1, chars // 4), output_tokens=max(1, len(output) // 4) if output else 0,
                 estimated=True)
