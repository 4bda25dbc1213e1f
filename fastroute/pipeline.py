"""The one place the flow of a request is written.

    client dialect -> on_start -> classify -> pre_request -> route -> provider
                   -> post_response -> on_end -> answer in the client's dialect

A provider that fails before the first byte reaches the client (connect error,
timeout, 429, 5xx) is followed by the next in the rule's failover chain, with
jittered backoff, a bounded number of attempts and per-provider circuit
breakers; what was tried and why is kept on the exchange.

Same dialect in and out: the client's body goes upstream with only the model
name changed, and the upstream's bytes come back untouched (the fast path);
usage and text are read on the side.  Otherwise the request is parsed into
the canonical model and the provider's answer rendered in the client's dialect.
Every exchange ends in :meth:`Pipeline.finish`, streamed or not, success or error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import orjson

from fastroute.canonical import ChatRequest, ChatResponse, ImagePart, StreamEvent, TextPart, Usage, own_call
from fastroute.config import Config
from fastroute.errors import ProviderStatusError, RequestError, UpstreamError, UpstreamTimeout
from fastroute.headers import MAX_MODEL_CHARS, check_model_name, header_value
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


@dataclass(slots=True)
class Exchange:
    """Everything known about one request, filled in as it goes."""

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

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


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


class Pipeline:
    def __init__(self, config: Config, providers: dict[str, Provider], router: Router,
                 health: Health | None = None, recorder: Recorder | None = None,
                 states: dict[str, Any] | None = None) -> None:
        self.config = config
        #: per client dialect, the state it keeps across requests (Responses: responses_store.ResponsesStore)
        self.states = states or {}
        self.providers = providers
        self.router = router
        self.health = health or Health(config.failover)
        self.plugins = PluginSet(config)
        self.request_classifiers, self.response_classifiers = build_classifiers(config)
        self.recorder = recorder or Recorder(EventBus())
        self.in_flight = 0
        # the canonical parse is skipped on the fast path unless something needs to read the request
        self._always_parse = bool(self.plugins.enabled or self.request_classifiers or config.logging.enabled or any(
            p.config.capabilities or p.config.discover for p in providers.values()))

    # entry ----------------------------------------------------------------

    def new_exchange(self, dialect: ModuleType) -> Exchange:
        """Start an exchange; it is in flight until :meth:`finish`."""
        self.in_flight += 1
        return Exchange(id="req_" + os.urandom(8).hex(), dialect=dialect.NAME, started=time.perf_counter(),
                        ts_ms=int(time.time() * 1000))

    async def dispatch(self, dialect: ModuleType, body: Any, client_key: str | None,
                       client_headers: dict[str, str] | None = None) -> Answer | StreamAnswer:
        ex = self.new_exchange(dialect)
        ctx: PluginContext | None = None
        plugins: list[Any] = []
        try:
            model, stream = dialect.check_request(body)
            ex.requested_model, ex.stream = check_model_name(model), stream
            self.recorder.start(ex, self.in_flight)
            requested = body.pop("plugins", None) if "plugins" in body else None
            plugins = self.plugins.for_request(requested)
            if "tier" in body and any(p.id == "pareto-router" for p, _ in plugins):
                tier = body.pop("tier")
                for p, settings in plugins:
                    if p.id == "pareto-router":
                        settings.setdefault("tier", tier)
            ex.plugins = [p.id for p, _ in plugins]
            state = self.states.get(dialect.NAME)
            if state is not None:  # what earlier requests left (previous_response_id, item_reference)
                ex.kept = await state.prepare(body, client_key)
            request = dialect.parse_request(body) if (self._always_parse or plugins) else None
            ex.request = request
            if request is not None:
                ctx = PluginContext(request, {}, ex.tags)
                started = await self._hooks("on_start", plugins, ctx)
                if started is STOPPED:
                    return self._stopped(ex, dialect, ctx)
                ex.tags.extend(run_all(self.request_classifiers, request_text(request)))
                modified = await self._hooks("pre_request", plugins, ctx)
                if modified is STOPPED:
                    return self._stopped(ex, dialect, ctx)
                if modified or started:
                    body = None  # the request changed: it is rendered from the canonical model now
            self.recorder.classified(ex)
            route = self._route(model, ex, request, ctx)
            answer = await self._with_failover(ex, dialect, route, body, request, stream, client_key, client_headers,
                                               plugins, ctx)
            return answer
        except RequestError as err:
            if ctx is not None and plugins:  # on_end sees every request that reached it, failed ones too
                ctx.error = err.message
                await self._hooks("on_end", plugins, ctx)
            if not ex.requested_model:  # the body was refused: still say what it asked for
                ex.requested_model, ex.stream = asked_for(dialect, body)
            return self.fail(ex, dialect, err)
        except PluginFailed as exc:
            log.error("plugin %r failed in %s: %s", exc.plugin, exc.hook, exc.cause)
            return self.fail(ex, dialect, RequestError(f"plugin '{exc.plugin}' failed in {exc.hook}: {exc.cause}"))
        except Exception as exc:  # a bug: answer honestly, log it, keep serving
            log.exception("request %s failed inside fastroute", ex.id)
            return self.fail(ex, dialect, RequestError(f"internal error in fastroute: {type(exc).__name__}"))

    # stages ---------------------------------------------------------------

    async def _hooks(self, hook: str, plugins: list[Any], ctx: PluginContext | None) -> Any:
        """Run one hook of every plugin.  Returns STOPPED, True (something changed) or False.

        ``on_start`` / ``pre_request`` failures raise :class:`PluginFailed`; later hooks only log.
        """
        if ctx is None or not plugins:
            return False
        changed = False
        for plugin, settings in plugins:
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

    def _stopped(self, ex: Exchange, dialect: ModuleType, ctx: PluginContext) -> Answer | StreamAnswer:
        """A plugin answered before any provider: render its answer in the client's dialect."""
        response = ctx.response
        assert response is not None
        ex.provider, ex.sent_model = "plugin", response.model or ex.requested_model
        headers = self._headers(ex)
        if ex.stream:
            return StreamAnswer(200, self._render(ex, dialect, ctx.request, _replay(response), [], None),
                                headers + dialect.STREAM_HEADERS, dialect.STREAM_CONTENT_TYPE)
        ex.usage, ex.response_text = response.usage, response.text()
        self.finish(ex)
        return Answer(200, self._rendered(ex, dialect, response, ctx.request), headers)

    def _route(self, model: str, ex: Exchange, request: ChatRequest | None, ctx: PluginContext | None) -> Route:
        needs = request_needs(request) if request is not None else ()
        if ctx is not None and ctx.forced_provider:
            if ctx.forced_provider not in self.providers:
                raise RequestError(f"a plugin forced provider {ctx.forced_provider!r}, which is not configured")
            route = Route(ctx.forced_provider, model, -1)
        else:
            route = self.router.route(model, ex.tags, needs)
        ex.rule = route.rule
        return route

    async def _with_failover(self, ex: Exchange, dialect: ModuleType, route: Route, body: Any,
                             request: ChatRequest | None, stream: bool, client_key: str | None,
                             client_headers: dict[str, str] | None, plugins: list[Any],
                             ctx: PluginContext | None) -> Answer | StreamAnswer:
        plan = [(route.provider, route.model), *route.fallbacks]
        limit = self.config.failover.max_attempts
        last: RequestError | None = None
        tried = 0
        for provider_name, model in plan:
            if tried >= limit:
                break
            if tried and not self.health.available(provider_name):
                ex.attempts.append({"provider": provider_name, "model": model, "status": None,
                                    "error": "skipped: circuit breaker open"})
                continue
            if tried:
                await asyncio.sleep(self.health.backoff_s(tried))
            tried += 1
            provider = self.providers[provider_name]
            ex.provider, ex.sent_model = provider_name, model
            self.recorder.routed(ex)
            self.health.begin(provider_name)
            attempt: dict[str, Any] = {"provider": provider_name, "model": model, "status": 200, "error": None}
            ex.attempts.append(attempt)
            verdict = False  # the breaker hears how the provider did, or is released
            try:
                answer = await self._call(ex, dialect, provider, model, body, request, stream, client_key,
                                          client_headers, plugins, ctx)
                self.health.success(provider_name)
                verdict = True
                return answer
            except RequestError as err:
                attempt.update(status=err.http_status, error=err.message)
                if err.retryable:
                    self.health.failure(provider_name)
                    verdict = True
                    last = err
                    continue
                if isinstance(err, ProviderStatusError):  # it answered, in its own words: it is up
                    self.health.success(provider_name)
                    verdict = True
                raise
            finally:
                if not verdict:  # refused before it was sent, cancelled, or a bug
                    self.health.release(provider_name)
        assert last is not None
        raise last

    async def _call(self, ex: Exchange, dialect: ModuleType, provider: Provider, model: str, body: Any,
                    request: ChatRequest | None, stream: bool, client_key: str | None,
                    client_headers: dict[str, str] | None, plugins: list[Any],
                    ctx: PluginContext | None) -> Answer | StreamAnswer:
        """One attempt at one provider.  Raises before anything reaches the client."""
        if body is not None and provider.passthrough_dialect == dialect.NAME:
            upstream_body, tap = dialect.passthrough(body, model, stream)
            if stream:
                reply = await provider.stream_raw(upstream_body, client_key, client_headers)
                return StreamAnswer(200, self._relay(ex, dialect, provider, reply, tap, plugins, ctx),
                                    self._headers(ex) + dialect.STREAM_HEADERS, dialect.STREAM_CONTENT_TYPE)
            reply = await provider.post_raw(upstream_body, client_key, client_headers)
            out = reply.body
            response = read_answer(dialect, reply.body)  # read once, on the side: usage and text
            if response is not None:
                ex.usage = response.usage if response.usage.total_tokens else None
                if ctx is not None and (plugins or self.response_classifiers):
                    if await self._after(ex, response, plugins, ctx):
                        out = dialect.render_response(response)
                ex.response_text = response.text()
            self.finish(ex)
            return Answer(200, out, self._headers(ex))
        if request is None:
            request = dialect.parse_request(body)
        fitted = fit(request, provider, model)
        request = fitted.request
        request.model = model
        if fitted.omitted:
            ex.omitted_tools = fitted.omitted
            log.warning("request %s: provider %r cannot run the hosted tool(s) %s; left out of what it received",
                        ex.id, provider.name, ", ".join(fitted.omitted))
        if stream:
            events = await provider.open_stream(request, client_key)
            return StreamAnswer(200, self._render(ex, dialect, request, events, plugins, ctx),
                                self._headers(ex) + dialect.STREAM_HEADERS, dialect.STREAM_CONTENT_TYPE)
        response = await provider.send(request, client_key)
        names = request.flat_tool_names()
        for call in response.tool_calls if names else ():
            own_call(names, call)
        if response.usage.total_tokens == 0:
            response.usage = estimate_usage(request, response.text())
        if ctx is not None or self.response_classifiers:
            await self._after(ex, response, plugins, ctx or PluginContext(request, {}, ex.tags))
        ex.usage, ex.response_text = response.usage, response.text()
        self.finish(ex)
        return Answer(200, self._rendered(ex, dialect, response, request), self._headers(ex))

    async def _after(self, ex: Exchange, response: ChatResponse, plugins: list[Any], ctx: PluginContext) -> bool:
        """Response classifiers, then post_response; True when a plugin changed the answer."""
        ex.response_tags = run_all(self.response_classifiers, response.text())
        ctx.response = response
        changed = await self._hooks("post_response", plugins, ctx)
        await self._hooks("on_end", plugins, ctx)
        return bool(changed)

    def _rendered(self, ex: Exchange, dialect: ModuleType, response: ChatResponse, request: ChatRequest) -> bytes:
        """The answer in the client's dialect; kept by the dialect's state when it keeps one."""
        out = dialect.render_response(response, request)
        if ex.kept is not None and ex.kept.keep:
            self.states[dialect.NAME].keep(ex.kept, orjson.loads(out))
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
        return headers

    def fail(self, ex: Exchange, dialect: ModuleType, err: RequestError) -> Answer:
        ex.status, ex.error = err.http_status, err.message
        self.finish(ex)
        return Answer(err.http_status, dialect.error_body(err), self._headers(ex))

    def finish(self, ex: Exchange) -> None:
        """The one exit of every exchange."""
        self.in_flight -= 1
        ex.duration_ms = ex.elapsed_ms()
        try:
            self.recorder.complete(ex, self.in_flight)
        except Exception:  # recording must never take an answer down with it
            log.exception("recording failed for %s", ex.id)

    # streams --------------------------------------------------------------

    async def _relay(self, ex: Exchange, dialect: ModuleType, provider: Provider, reply: Any,
                     tap: Any, plugins: list[Any], ctx: PluginContext | None) -> AsyncIterator[bytes]:
        """Forward the upstream's chunks the moment they arrive; read them on the side."""
        held = b""  # the start of an event whose end has not arrived yet
        try:
            async for chunk in reply.chunks():
                if ex.ttft_ms is None:
                    ex.ttft_ms = ex.elapsed_ms()
                if held:
                    chunk, held = held + chunk, b""
                if not chunk.endswith(dialect.STREAM_END):
                    # Forward whole events only: a client can do nothing with half of one, and
                    # if the upstream dies mid-event the client must see an error, not broken JSON.
                    cut = dialect.stream_boundary(chunk)
                    chunk, held = chunk[:cut], chunk[cut:]
                    if not chunk:
                        continue
                out = tap.forward(chunk)
                if out:
                    yield out
                read_on_the_side(ex, tap, chunk)  # accounting, after the client has the bytes
            if held:  # the upstream ended cleanly on an unterminated event: it is the upstream's to give
                yield held
                read_on_the_side(ex, tap, held)
        except (UpstreamError, UpstreamTimeout) as exc:
            err = provider.transport_error(exc)
            ex.status, ex.error = err.http_status, err.message
            yield dialect.render_stream_error(err)
        except (asyncio.CancelledError, GeneratorExit):
            ex.status, ex.error = CLIENT_CLOSED, "client disconnected"
            raise
        finally:
            await reply.aclose()
            ex.usage, ex.response_text = tap.usage, tap.text
            if ex.error is None and tap.error is not None:
                ex.error = tap.error
            await self._after_stream(ex, plugins, ctx)
            self.finish(ex)

    async def _render(self, ex: Exchange, dialect: ModuleType, request: Any, events: Any,
                      plugins: list[Any], ctx: PluginContext | None) -> AsyncIterator[bytes]:
        """Render canonical stream events in the client's dialect; usage always ends the stream."""
        renderer = dialect.StreamRenderer(request)
        text: list[str] = []
        names = request.flat_tool_names()
        try:
            async for ev in events:
                if ex.ttft_ms is None:
                    ex.ttft_ms = ex.elapsed_ms()
                if ev.kind == "text":
                    text.append(ev.text)
                elif ev.kind == "tool_call" and names:
                    own_call(names, ev.tool_call)
                elif ev.kind == "usage":
                    ex.usage = ev.usage
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
            ex.status, ex.error = err.http_status, err.message
            yield dialect.render_stream_error(err)
        except (asyncio.CancelledError, GeneratorExit):
            ex.status, ex.error = CLIENT_CLOSED, "client disconnected"
            raise
        except Exception as exc:  # a bug while rendering: the client sees an error, the log says what
            log.exception("stream %s failed inside fastroute", ex.id)
            err = RequestError(f"internal error in fastroute: {type(exc).__name__}")
            ex.status, ex.error = err.http_status, err.message
            yield dialect.render_stream_error(err)
        finally:
            await events.aclose()
            final = getattr(renderer, "final", None)
            if final is not None and ex.error is None and ex.kept is not None and ex.kept.keep:
                self.states[dialect.NAME].keep(ex.kept, final)
            ex.response_text = "".join(text)
            await self._after_stream(ex, plugins, ctx)
            self.finish(ex)

    async def _after_stream(self, ex: Exchange, plugins: list[Any], ctx: PluginContext | None) -> None:
        """Post hooks on the assembled answer, once the stream is over (it can no longer change)."""
        if ctx is None and not self.response_classifiers:
            return
        try:
            response = ChatResponse(id=ex.id, model=ex.sent_model or "", content=[TextPart(ex.response_text)],
                                    usage=ex.usage or Usage())
            if ctx is None:
                ex.response_tags = run_all(self.response_classifiers, ex.response_text)
            else:
                ctx.error = ex.error
                await self._after(ex, response, plugins, ctx)
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


def read_on_the_side(ex: Exchange, tap: Any, chunk: bytes) -> None:
    """Account for a passed-through chunk; an event the tap cannot read still went to the client
    as it came (that is the fast path's promise), and the log says the upstream sent it."""
    try:
        tap.feed(chunk)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        if ex.error is None:
            ex.error = f"provider '{ex.provider}' sent a stream event fastroute cannot read ({type(exc).__name__})"


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
