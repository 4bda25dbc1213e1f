"""``build_app(config)``: the BlackSheep application.  Nothing happens at import."""

from __future__ import annotations

import asyncio
from importlib import resources
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import orjson
from blacksheep import Application, Content, Request, Response
from blacksheep.exceptions import MessageAborted

from fastroute.config import Config, require_env
from fastroute.errors import BadRequest, ClientClosed, NotFound, PayloadTooLarge, RequestError, Unauthorized
from fastroute.governance.keys import Caller, Key, KeyRing, client_key
from fastroute.governance.limiter import Limiter
from fastroute.formats import anthropic as anthropic_dialect
from fastroute.formats import ollama as ollama_dialect
from fastroute.formats import openai as openai_dialect
from fastroute.formats import responses as responses_dialect
from fastroute.limits import HeadersTooLarge, check_depth, check_headers, drain, undecodable_depth
from fastroute.pipeline import StreamAnswer
from fastroute.server.streaming import to_response
from fastroute.recording.console import ConsoleLog
from fastroute.recording.events import EventBus
from fastroute.recording.log import RequestLog
from fastroute.recording.metrics import Metrics
from fastroute.recording.redis_relay import RedisRelay
from fastroute.recording.relay import ENV_DIR as RELAY_DIR
from fastroute.recording.relay import EventRelay
from fastroute.server import model_lists
from fastroute.server.base_urls import explain_miss
from fastroute.recording.scope import KeyScope
from fastroute.server.admin import AdminAPI
from fastroute.server.admin_keys import AdminKeys
from fastroute.server.backends import open_audit, open_counters, open_key_store
from fastroute.cache import open_cache
from fastroute.server.key_holder import KeyHolderAPI
from fastroute.server.count_tokens import CountTokens
from fastroute.server.responses_api import ResponsesAPI
from fastroute.server.generation import Generation, Lasting, build_generation
from fastroute.server.reload import Origin, Reloader, Reloading
from fastroute.server.stopping import StopWatch
from fastroute.providers.anthropic import BETA_QUERY
from fastroute.pipeline import request_needs
from fastroute.routing.catalogue import Listed
from fastroute.routing.classifiers import request_text, run_all
from fastroute.routing.rules import describe_rule
from fastroute.responses_store import ResponsesStore
from fastroute.storage import open_store
from fastroute.telemetry import open_telemetry

log = logging.getLogger("fastroute")

DIALECTS = {"openai": openai_dialect, "anthropic": anthropic_dialect, "responses": responses_dialect,
            "ollama": ollama_dialect}

KEEPALIVE_S = 15.0

#: client headers that may travel to a provider of the client's own dialect
FORWARDED_HEADERS = (b"anthropic-version", b"anthropic-beta")
#: and, with [telemetry] on, the client's trace context (continued by the request's span, never forwarded)
TRACE_HEADERS = (b"traceparent", b"tracestate")


class Handlers:
    """The routes.  One instance per application, serving from one generation at a time."""

    def __init__(self, generation: Generation, keys: KeyRing, metrics: Metrics) -> None:
        self.recorder_metrics = metrics
        #: the client keys accepted ([[keys]] and [server] api_key_env); none: anyone may call
        self.keys = keys
        #: the admin API (set once it is built): its token sees every event
        self.admin: AdminAPI | None = None
        #: bound to Granian's buffer at the start (fastroute.limits): kept until a restart
        self.max_header_bytes = generation.config.server.max_header_bytes
        self.use(generation)

    def use(self, generation: Generation) -> None:
        """Serve from ``generation`` (at startup, and after each reload).  A request reads the pipeline
        once, at its start, and keeps it to its end."""
        config = self.config = generation.config
        self.pipeline = generation.pipeline
        #: the models a client can ask for (``GET /v1/models``, ``GET /api/tags``)
        self.catalogue = generation.catalogue
        self.session_headers = tuple(h.lower().encode("latin-1") for h in config.audit.session_headers)
        self.max_body = config.server.max_body_bytes
        self.max_json_depth = config.server.max_json_depth
        #: the most of a refused body read and dropped, keeping the connection (see read_json)
        self.max_drain = 2 * self.max_body
        self.forwarded_headers = FORWARDED_HEADERS + (TRACE_HEADERS if config.telemetry.enabled else ())
        self.recorder_metrics.label_only(generation.catalogue)  # a name a client made up is no label

    async def read_json(self, request: Request) -> Any:
        """The request's JSON body (see :meth:`_read_json`); a client that leaves before its body
        arrived is a :class:`ClientClosed`, recorded like any other refusal."""
        try:
            return await self._read_json(request)
        except MessageAborted:
            raise ClientClosed("the client closed the connection before its request body arrived") from None

    async def _read_json(self, request: Request) -> Any:
        """The request's JSON body, within the limits of ``[server]`` (headers, body size, nesting),
        each passed limit a RequestError the caller answers in the client's dialect.

        A body refused for its size or for the headers before it is still read to its end (and
        dropped), up to ``max_drain`` bytes, so the client's next request on the connection finds
        it open: Granian closes a connection whose request body was left unread, after an answer
        that did not say so, and the client's next request on it fails."""
        refused: RequestError | None = None
        scope = request.scope
        if scope is not None:  # Granian cuts heads beyond twice the limit itself (fastroute.limits)
            try:
                check_headers(scope["headers"], self.max_header_bytes)
            except HeadersTooLarge as err:
                refused = err
        length = request.get_first_header(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if refused is None and declared is not None and declared > self.max_body:
            refused = PayloadTooLarge(f"request body of {declared} bytes is over the limit of {self.max_body} "
                                      "bytes ([server] max_body_bytes)")
        if refused is not None:
            if declared is None or declared <= self.max_drain:
                await drain(request.stream(), self.max_drain)
            raise refused
        raw = await self._body(request)
        if not raw:
            raise BadRequest("the request body is empty; expected a JSON object")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:  # deeper than orjson goes (1024 levels) is said as such
            raise (undecodable_depth(exc, self.max_json_depth)
                   or BadRequest(f"the request body is not valid JSON: {exc}")) from None
        check_depth(body, self.max_json_depth, len(raw))
        return body

    async def caller_json(self, request: Request) -> tuple[str | None, Key | None, Any]:
        """The client's key as presented, the configured key it is (None when no key is required),
        and the JSON body.  A refused key still has its body read and dropped (up to
        ``max_drain``): an unread body makes Granian close the connection behind the answer,
        and the client's next request on it fails."""
        try:
            presented, caller = await self.caller(request)
        except RequestError:
            await self.drop_body(request)
            raise
        return presented, caller, await self.read_json(request)

    async def _body(self, request: Request) -> bytes:
        """The whole body, within ``max_body_bytes``: read from the ASGI ``receive`` itself (BlackSheep's
        ``stream()`` wraps it in two async generators per message)."""
        receive = getattr(request.content, "receive", None)
        if receive is None:
            return await request.read() or b""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise MessageAborted()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                if message.get("more_body"):  # the rest, read and dropped (drop_body says why)
                    await drain(request.stream(), self.max_drain - size)
                raise PayloadTooLarge(f"request body is over the limit of {self.max_body} bytes "
                                      "([server] max_body_bytes)")
            parts.append(chunk)
            if not message.get("more_body"):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    async def drop_body(self, request: Request) -> None:
        """Read and drop a request's body that nothing will read (see :meth:`caller_json`)."""
        if request.get_first_header(b"content-length") in (None, b"0") and \
                request.get_first_header(b"transfer-encoding") is None:
            return
        try:
            await drain(request.stream(), self.max_drain)
        except Exception:  # the client went away meanwhile: nothing to keep open
            return

    async def check_key(self, request: Request) -> str | None:
        """The key the client presented; Unauthorized when keys are required and it is none of them."""
        return (await self.caller(request))[0]

    async def caller(self, request: Request) -> tuple[str | None, Key | None]:
        presented = client_key(request)
        keys = self.keys
        if not keys.required:
            return presented, None
        found = await keys.lookup(presented)
        if found is None:
            problem = "missing API key" if presented is None else "invalid API key"
            if not keys.names():
                problem += " (none exists yet: the admin API makes them, e.g. `fastroute keys create NAME`)"
            raise Unauthorized(f"{problem} for this fastroute server")
        return presented, found

    def session_of(self, request: Request) -> str | None:
        """The agent's session, from the first ``[audit] session_headers`` header the request has."""
        for name in self.session_headers:
            value = request.get_first_header(name)
            if value:
                return value.decode("latin-1")[:256]
        return None

    def chat(self, dialect: ModuleType) -> Callable[[Request], Awaitable[Response]]:
        """The handler of one dialect's chat endpoint."""

        async def handle(request: Request) -> Response:
            try:
                key, caller, body = await self.caller_json(request)
            except RequestError as err:
                return to_response(self.pipeline.fail(self.pipeline.new_exchange(dialect), dialect, err))
            forwarded = {name.decode(): value.decode("latin-1") for name in self.forwarded_headers
                         if (value := request.get_first_header(name)) is not None}
            if request.query.get("beta") == ["true"]:  # the Anthropic SDK's beta marker goes on with the body
                forwarded[BETA_QUERY] = "true"
            receive = getattr(request.content, "receive", None)
            who = Caller(caller, self.session_of(request))
            control = request.get_first_header(b"cache-control") if self.pipeline.cache is not None else None
            return to_response(await self.pipeline.dispatch(dialect, body, key, forwarded, who, control), receive)

        handle.__name__ = f"{dialect.NAME}_chat"
        return handle

    async def metrics(self, request: Request) -> Response:
        return Response(200, None, Content(self.recorder_metrics.content_type.encode(), self.recorder_metrics.render()))

    async def dashboard(self, request: Request) -> Response:
        if not self.config.server.dashboard:
            return error_response(NotFound("the dashboard is off: set [server] dashboard = true"))
        page = resources.files("fastroute").joinpath("static/dashboard.html").read_bytes()
        return Response(200, [(b"cache-control", b"no-cache")], Content(b"text/html; charset=utf-8", page))

    async def events(self, request: Request) -> Response:
        """``GET /dashboard/events``: the event feed as SSE, recent history first, keep-alive every 15 s.
        A client key sees its own requests (:mod:`fastroute.recording.scope`); the admin token, all."""
        scope: KeyScope | None = None
        if self.admin is None or not self.admin.is_admin(request):
            try:
                _, key = await self.caller(request)
            except RequestError as err:
                return error_response(err)
            if key is not None:
                scope = KeyScope(key.name)
        bus = self.pipeline.recorder.events
        receive = getattr(request.content, "receive", None)

        async def feed() -> AsyncIterator[bytes]:
            sub, history = bus.subscribe()
            seen = scope.allows if scope is not None else None
            try:
                yield b": fastroute events\n\n" + b"".join(b"data: " + e + b"\n\n" for e in history
                                                            if seen is None or seen(e))
                while not sub.dropped:
                    try:
                        data = await asyncio.wait_for(sub.get(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if not data:
                        return  # the server is stopping
                    if seen is None or seen(data):
                        yield b"data: " + data + b"\n\n"
            finally:
                sub.close()

        answer = StreamAnswer(200, feed(), [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")])
        return to_response(answer, receive)

    async def health(self, request: Request) -> Response:
        return Response(200, None, Content(b"text/plain; charset=utf-8", b"ok"))

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: OpenAI's list, or Anthropic's when the request carries ``anthropic-version``."""
        dialect = _models_dialect(request)
        try:
            _, key = await self.caller(request)
            if dialect is anthropic_dialect:
                return _json(200, model_lists.anthropic_list(self._served(key), request.query))
        except RequestError as err:
            return error_response(err, dialect)
        return _json(200, model_lists.openai_list(self._served(key)))

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{id}``: one model, in OpenAI's shape or Anthropic's; 404 when none serves it."""
        dialect = _models_dialect(request)
        name = request.route_values.get("model_id", "")
        try:
            _, key = await self.caller(request)
            found = self.catalogue.find(name) if name else None
            if found is None or key is not None and not key.allows(found.id):
                raise NotFound(f"model '{name}' is not served here: GET /v1/models lists what is",
                               param="model", code="model_not_found")
        except RequestError as err:
            return error_response(err, dialect)
        draw = model_lists.anthropic_model if dialect is anthropic_dialect else model_lists.openai_model
        return _json(200, draw(found))

    async def explain_route(self, request: Request) -> Response:
        """``POST /v1/route``: which rule would serve this body, and why each earlier one would not.
        No provider is called and no plugin runs.  ``?dialect=anthropic|responses|ollama`` for other shapes."""
        dialect = DIALECTS.get(request.query.get("dialect", ["openai"])[0])
        if dialect is None:
            return error_response(BadRequest(f"unknown dialect; one of {', '.join(DIALECTS)}"))
        try:
            _, key, body = await self.caller_json(request)
            model, _ = dialect.check_request(body)
            if key is not None:
                key.require(model)
            body.pop("plugins", None)
            canonical = dialect.parse_request(body)
            pipeline = self.pipeline
            tags = run_all(pipeline.request_classifiers, request_text(canonical))
            needs = sorted(request_needs(canonical))
            verdicts = pipeline.router.explain(model, tags, needs)
        except RequestError as err:
            return error_response(err, dialect)
        matched = next((v for v in verdicts if v.route is not None), None)
        rules = [{"index": v.index, "type": v.type, "rule": describe_rule(pipeline.router.rules[v.index]),
                  "matched": v.route is not None, **({"reason": v.reason} if v.route is None else {})}
                 for v in verdicts]
        route = None
        if matched is not None and matched.route is not None:
            r = matched.route
            route = {"provider": r.provider, "model": r.model, "rule": r.rule,
                     "fallbacks": [{"provider": p, "model": m} for p, m in r.fallbacks]}
        return _json(200, {"model": model, "tags": tags, "needs": needs, "route": route, "rules": rules,
                           "error": None if route else f"no provider configured for model '{model}'"})

    # Ollama's model endpoints, so tools built for Ollama can list and inspect what fastroute serves

    def _served(self, key: Key | None) -> list[Listed]:
        """What the catalogue lists; for a key, the models it may use."""
        models = self.catalogue.models()
        return models if key is None else [m for m in models if key.allows(m.id)]

    async def ollama_tags(self, request: Request) -> Response:
        try:
            _, key = await self.caller(request)
        except RequestError as err:
            return error_response(err, ollama_dialect)
        return _json(200, model_lists.ollama_tags(self._served(key)))

    async def ollama_show(self, request: Request) -> Response:
        try:
            _, key, body = await self.caller_json(request)
            model = body.get("model") or body.get("name") if isinstance(body, dict) else None
            if not isinstance(model, str) or not model:
                raise BadRequest("model is required")
            if key is not None:
                key.require(model)
            route = self.pipeline.router.route(model)
        except RequestError as err:
            status = 404 if err.code == "model_not_found" else err.http_status
            return Response(status, None, Content(b"application/json", ollama_dialect.error_body(err)))
        caps = self.pipeline.providers[route.provider].capabilities(route.model)
        # what discovery or the config says; when nobody said, what routing assumes of a chat model
        capabilities = ["completion", *sorted(caps)] if caps is not None else ["completion", "tools"]
        return _json(200, {"modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
                           "details": {"format": "", "family": route.provider, "parameter_size": "",
                                       "quantization_level": ""},
                           "model_info": {}, "capabilities": capabilities,
                           "modified_at": "1970-01-01T00:00:00Z"})

    async def ollama_version(self, request: Request) -> Response:
        return _json(200, {"version": ollama_dialect.VERSION})

    async def not_found(self, request: Request) -> Response:
        """404 in the dialect the path belongs to; when the path is an endpoint behind a wrong
        base URL (``/v1`` twice, or missing), the message says which base URL to use."""
        at = f"{request.scheme}://{request.host}"
        anthropic_client = request.get_first_header(b"anthropic-version") is not None
        name, message = explain_miss(request.method, request.path, at, anthropic_client)
        console = self.pipeline.recorder.console
        if console is not None:
            console.note_miss(404, name, request.method, request.path, message)
        await self.drop_body(request)
        return error_response(NotFound(message), DIALECTS[name])


def _models_dialect(request: Request) -> ModuleType:
    """Anthropic's SDK sends ``anthropic-version`` on every call; OpenAI's never does."""
    return anthropic_dialect if request.get_first_header(b"anthropic-version") is not None else openai_dialect


def error_response(err: RequestError, dialect: ModuleType = openai_dialect) -> Response:
    return Response(err.http_status, None, Content(b"application/json", dialect.error_body(err)))


def _json(status: int, payload: Any) -> Response:
    return Response(status, None, Content(b"application/json", orjson.dumps(payload)))


def _route(method: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """BlackSheep marks its handlers, which a bound method cannot carry: wrap it.

    The wrapper's annotations are the classes themselves, not the strings this module's
    ``from __future__ import annotations`` makes of them: BlackSheep keeps a handler that
    takes ``request`` and is annotated to return a ``Response`` as it is, and wraps any other
    in two more coroutines per request (``ensure_response``)."""

    async def handler(request: Request) -> Response:
        return await method(request)

    handler.__name__ = method.__name__
    handler.__annotations__ = {"request": Request, "return": Response}
    return handler


def event_relay(config: Config, bus: EventBus) -> EventRelay | RedisRelay | None:
    """How this worker's events reach the other viewers: Redis when configured (any number of
    instances), else the other workers on this machine (``--workers N``), else nobody."""
    events = config.events
    if events.redis_url:
        password = os.environ.get(events.redis_password_env) if events.redis_password_env else None
        return RedisRelay(bus, events.redis_url, events.channel, password)
    if os.environ.get(RELAY_DIR):
        return EventRelay(bus, os.environ[RELAY_DIR])
    return None


def secret_envs(config: Config) -> list[str]:
    """The variables whose values no printed line may hold: every key the config names."""
    return [name for name in (config.server.api_key_env, config.events.redis_password_env,
                              config.storage.redis_password_env, *(p.api_key_env for p in config.providers),
                              *(k.key_env for k in config.keys))
            if name]


def build_app(config: Config, stop_watch: StopWatch | None = None, reloading: Reloading | None = None) -> Application:
    """The application for one worker.  Sockets and clients open on startup, not here.

    What lives as long as the worker (:class:`~fastroute.server.generation.Lasting`) is built
    here; what a config makes of it (:class:`~fastroute.server.generation.Generation`) by
    :func:`~fastroute.server.generation.build_generation`, as each reload does again.
    ``stop_watch`` (from the runner) says when the server starts stopping: the event feeds end
    then, so the graceful stop waits only for real requests.  ``reloading`` (from the runner):
    where the config came from and the server's shared reload board; none: nothing to reload."""
    require_env(config)
    reloading = reloading or Reloading(Origin(None), None, {}, 0)
    key_store = open_key_store(config)
    keys = KeyRing.from_config(config, store=key_store)
    bus = EventBus()
    metrics = Metrics()
    request_log = RequestLog(config.logging.path) if config.logging.enabled else None
    console = ConsoleLog(config.server.access_log, secret_envs(config)).start()
    audit = open_audit(config)
    store = open_store(config.storage) if config.responses.store else None
    responses_state = ResponsesStore(store, config.responses.store, config.responses.ttl_s,
                                     config.responses.max_bytes, keyed=keys.required,
                                     max_history_bytes=config.server.max_body_bytes)
    keys.on_change.append(lambda ring: setattr(responses_state, "keyed", ring.required))
    counters = open_counters(config, keys)
    telemetry = open_telemetry(config, {p.name: p.format for p in config.providers})
    if telemetry is not None:
        telemetry.metrics = metrics
    lasting = Lasting(bus, metrics, request_log, console, audit, keys, {responses_dialect.NAME: responses_state},
                      limiter=Limiter(counters) if counters is not None else None, cache=open_cache(config),
                      telemetry=telemetry)
    generation = build_generation(config, lasting, reloading.number)
    relay = event_relay(config, bus)
    handlers = Handlers(generation, keys, metrics)
    metrics.follow_in_flight(lambda: lasting.flight.n)
    reloader = Reloader(handlers, lasting, generation, reloading.raw, reloading.origin, reloading.board)

    app = Application(show_error_details=False)
    openai_chat = handlers.chat(openai_dialect)
    app.router.add_post("/v1/chat/completions", _route(openai_chat))
    app.router.add_post("/chat/completions", _route(openai_chat))
    app.router.add_post("/v1/messages", _route(handlers.chat(anthropic_dialect)))
    app.router.add_post("/v1/messages/count_tokens", _route(CountTokens(handlers).count_tokens))
    app.router.add_post("/v1/responses", _route(handlers.chat(responses_dialect)))
    responses_api = ResponsesAPI(handlers, responses_state)
    app.router.add_get("/v1/responses/{response_id}", _route(responses_api.get))
    app.router.add_delete("/v1/responses/{response_id}", _route(responses_api.delete))
    app.router.add_get("/v1/responses/{response_id}/input_items", _route(responses_api.input_items))
    app.router.add_post("/api/chat", _route(handlers.chat(ollama_dialect)))
    app.router.add_get("/api/tags", _route(handlers.ollama_tags))
    app.router.add_post("/api/show", _route(handlers.ollama_show))
    app.router.add_get("/api/version", _route(handlers.ollama_version))
    app.router.add_post("/v1/route", _route(handlers.explain_route))
    admin = handlers.admin = AdminAPI(config, audit, AdminKeys(keys, key_store), handlers, reloader)
    app.router.add_post("/v1/admin/reload", _route(admin.reload))
    app.router.add_get("/v1/admin/logs", _route(admin.logs))
    app.router.add_get("/v1/admin/usage", _route(admin.usage))
    app.router.add_post("/v1/admin/keys", _route(admin.create_key))
    app.router.add_get("/v1/admin/keys", _route(admin.list_keys))
    app.router.add_get("/v1/admin/keys/{name}", _route(admin.get_key))
    app.router.add_patch("/v1/admin/keys/{name}", _route(admin.update_key))
    app.router.add_delete("/v1/admin/keys/{name}", _route(admin.delete_key))
    holder = KeyHolderAPI(handlers, audit, lasting.limiter)
    reloader.on_swap.append(lambda _: setattr(holder, "limiter", lasting.limiter))  # a reload may open it
    app.router.add_get("/v1/usage", _route(holder.usage))
    app.router.add_get("/v1/budget", _route(holder.budget))
    app.router.add_get("/health", _route(handlers.health))
    app.router.add_get("/metrics", _route(handlers.metrics))
    app.router.add_get("/dashboard", _route(handlers.dashboard))
    app.router.add_get("/dashboard/events", _route(handlers.events))
    app.router.add_get("/v1/models", _route(handlers.models))
    app.router.add_get("/v1/models/{path:model_id}", _route(handlers.model))
    app.router.fallback = _route(handlers.not_found)

    if stop_watch is not None:
        stop_watch.callbacks.append(bus.close_all)

    async def on_start(application: Application) -> None:
        if relay is not None:
            relay.start()
        if store is not None:
            await store.start()
        if audit is not None:
            await audit.start()
        if counters is not None:
            await counters.start()
        if lasting.cache is not None:
            await lasting.cache.start()
        if key_store is not None:
            await key_store.start()
            await keys.reload()
        await generation.start()
        await reloader.start()

    async def on_stop(application: Application) -> None:
        bus.close_all()
        await reloader.stop()
        generations = reloader.generations()
        for each in generations:
            await each.close()
        if relay is not None:
            await relay.stop()
        if request_log is not None:
            request_log.close()  # everything answered is in the log after a clean stop
        console.close()
        if store is not None:
            await store.close()  # every queued write is in the store after a clean stop
        if audit is not None:
            await audit.close()  # every request answered is in the audit log after a clean stop
        for counting in ([counters] if counters is not None else []) + reloader.opened:
            for each in generations:
                await each.pipeline.settled()  # the last answers' usage counted
            await counting.close()
        if key_store is not None:
            await key_store.close()
        if lasting.cache is not None:
            await lasting.cache.close()
        if telemetry is not None:
            for each in generations:
                await each.pipeline.settled()
            await asyncio.to_thread(telemetry.shutdown)  # every span and count recorded is exported

    app.on_start += on_start
    app.on_stop += on_stop
    return app
