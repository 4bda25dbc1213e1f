"""What the pipeline calls: :meth:`ExactCache.serve` between routing and the provider.

Decisions (README ``[cache]`` says them for users):

- Only deterministic-enough requests are cached: ``temperature`` at most ``max_temperature``
  (unset: ``cache_unset_temperature``), no tools unless ``tools = true`` (hosted tools count),
  one answer (``n`` unset or 1).  The others carry no ``X-Router-Cache`` header.
- ``Cache-Control: no-cache`` from the client: no lookup, the fresh answer is kept;
  ``no-store``: neither.  Both answer ``X-Router-Cache: bypass``; a lookup answers ``hit`` or ``miss``.
- The key is the route's (provider, sent model) and the canonical request (:mod:`.key`); the
  answer is kept under who answered it (a fallback's answer under the fallback).  Entries are
  shared by every client key -- it is the same answer to the same request -- except for a provider
  called with the client's own key (``forward_client_key``), whose entries are the key's own.
- Only whole answers are kept: HTTP 200, no error on the exchange, a stop reason that is not
  ``error``/``pause``, a stream that ended cleanly.
- A hit calls no provider and runs no plugin hook after routing (the kept answer is the one the
  plugins already shaped); it counts against the key's requests per minute (it was admitted
  before routing), spends no tokens and costs 0 (``usage`` is None on its record, ``cache: "hit"``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastroute.cache.entry import Collector, Entry, decode, encode, events_of, keepable
from fastroute.cache.key import entry_key, owner_of, request_digest
from fastroute.errors import RequestError

if TYPE_CHECKING:
    from fastroute.config import CacheConfig, Config
    from fastroute.pipeline import Answer, Ask, Pipeline, Reached, StreamAnswer
    from fastroute.routing import Route

log = logging.getLogger("fastroute.cache")

HIT, MISS, BYPASS = "hit", "miss", "bypass"
#: the status of an exchange whose client went away (pipeline.CLIENT_CLOSED)
CLIENT_CLOSED = 499


def directives(header: bytes | None) -> frozenset[str]:
    """The client's ``Cache-Control`` directives, lower case, without their values."""
    if not header:
        return frozenset()
    return frozenset(d.split("=", 1)[0].strip().lower() for d in header.decode("latin-1").split(","))


class ExactCache:
    def __init__(self, config: CacheConfig, store: Any) -> None:
        self.config = config
        #: MemoryStore or RedisStore: ``await get(key)``, ``put(key, value)``
        self.store = store

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    def eligible(self, request: Any) -> bool:
        c = self.config
        t = request.temperature
        if not (c.cache_unset_temperature if t is None else t <= c.max_temperature):
            return False
        if (request.tools or request.hosted_tools) and not c.tools:
            return False
        return request.n is None or request.n <= 1

    def _key(self, pipeline: Pipeline, ask: Ask, digest: bytes, provider: str, model: str) -> str:
        p = pipeline.providers.get(provider)
        forwards = p is not None and p.config.forward_client_key
        return entry_key(digest, provider, model, owner_of(ask.client_key) if forwards else None)

    async def serve(self, pipeline: Pipeline, ask: Ask, route: Route) -> Answer | StreamAnswer:
        """The answer from the cache, or from the providers (then kept, when it may be)."""
        ex, dialect = ask.ex, ask.dialect
        request = ask.request
        if request is None:  # the fast path, with nothing else reading the request: read it here
            request = ask.request = dialect.parse_request(ask.body)
        if not self.eligible(request):
            return await pipeline._with_failover(ask, route)
        control = directives(ask.cache_control)
        if "no-store" in control:
            ex.cache = BYPASS
            return await pipeline._with_failover(ask, route)
        try:
            digest = request_digest(request, getattr(dialect, "HINTS", frozenset()), ask.client_headers)
        except TypeError:  # something in it is not JSON: not cached
            return await pipeline._with_failover(ask, route)
        if "no-cache" in control:
            ex.cache = BYPASS
        else:
            value = await self.store.get(self._key(pipeline, ask, digest, route.provider, route.model))
            entry = decode(value) if value is not None else None
            if entry is not None:
                return self._hit(pipeline, ask, route, entry)
            ex.cache = MISS
        fill = ask.fill = Fill()
        answer = await pipeline._with_failover(ask, route)
        if ex.stream:
            closing = answer.on_close  # type: ignore[union-attr]

            async def on_close() -> None:
                try:
                    if closing is not None:
                        await closing()
                finally:
                    self._keep_stream(pipeline, ask, digest, fill)

            answer.on_close = on_close  # type: ignore[union-attr]
        elif answer.status == 200 and ex.error is None:
            response = fill.response
            raw = None
            if response is None and fill.raw:  # same dialect: the client got the upstream's bytes
                raw = answer.body  # type: ignore[union-attr]
                parse = getattr(dialect, "parse_response", None)
                response = _parsed(parse, raw) if parse is not None else None
            if response is not None and keepable(response) and not ex.omitted_tools:
                self._put(pipeline, ask, digest, Entry(response, raw, dialect.NAME if raw else None))
        return answer

    def _keep_stream(self, pipeline: Pipeline, ask: Ask, digest: bytes, fill: Fill) -> None:
        ex = ask.ex
        collector = fill.collector
        if collector is None or ex.status != 200 or ex.error is not None or ex.omitted_tools:
            return
        response = collector.response(ex.usage)
        if response is not None and keepable(response):
            self._put(pipeline, ask, digest, Entry(response))

    def _put(self, pipeline: Pipeline, ask: Ask, digest: bytes, entry: Entry) -> None:
        ex = ask.ex
        try:
            self.store.put(self._key(pipeline, ask, digest, ex.provider or "", ex.sent_model or ""), encode(entry))
        except Exception:  # keeping an answer never fails one
            log.exception("cache: keeping the answer of %s failed", ex.id)

    # hits -----------------------------------------------------------------

    def _hit(self, pipeline: Pipeline, ask: Ask, route: Route, entry: Entry) -> Answer | StreamAnswer:
        from fastroute.pipeline import Answer, StreamAnswer

        ex, dialect, request = ask.ex, ask.dialect, ask.request
        ex.cache = HIT
        ex.provider, ex.sent_model = route.provider, route.model
        pipeline.recorder.routed(ex)
        response = entry.response
        ex.response_text = response.text()
        if not ex.stream:
            if entry.raw is not None and entry.raw_dialect == dialect.NAME:
                body = entry.raw
            else:
                body = pipeline._rendered(ask, response, request)  # type: ignore[arg-type]
            answer = Answer(200, body, pipeline._headers(ex))
            pipeline.end(ex)
            return answer
        ask.body = ask.client_headers = None

        async def on_close() -> None:  # a stream never started ends here (a started one, in its finally)
            if not ex.ended:
                ex.status, ex.error = CLIENT_CLOSED, "client disconnected before the stream started"
                pipeline.end(ex)

        return StreamAnswer(200, _replay(pipeline, ask, response), pipeline._headers(ex) + dialect.STREAM_HEADERS,
                            dialect.STREAM_CONTENT_TYPE, on_close)


class Fill:
    """What a miss needs to keep its answer: set by the pipeline's ``_answer`` (:meth:`watch`)."""

    __slots__ = ("collector", "response", "raw")

    def __init__(self) -> None:
        self.collector: Collector | None = None
        self.response: Any = None
        self.raw = False

    def watch(self, reached: Reached) -> None:
        if reached.upstream is not None:
            collector = self.collector = Collector()
            if reached.tap is not None:  # the fast path: its tap decodes the events anyway
                reached.tap.tee(collector.add)
            else:
                reached.upstream = CollectedEvents(reached.upstream, collector)
        elif reached.response is not None:
            self.response = reached.response  # the post_response hooks change it in place
        else:
            self.raw = True


class CollectedEvents:
    """A provider's event stream (``providers.base.EventStream``), each event also handed to a collector."""

    __slots__ = ("_upstream", "_collector", "_events")

    def __init__(self, upstream: Any, collector: Collector) -> None:
        self._upstream = upstream
        self._collector = collector
        self._events: Any = None

    def __aiter__(self) -> AsyncIterator[Any]:
        self._events = self._collect()
        return self._events

    async def _collect(self) -> AsyncIterator[Any]:
        add = self._collector.add
        async for ev in self._upstream:
            add(ev)
            yield ev

    async def aclose(self) -> None:
        try:
            if self._events is not None:
                await self._events.aclose()
        finally:
            await self._upstream.aclose()


async def _replay(pipeline: Pipeline, ask: Ask, response: Any) -> AsyncIterator[bytes]:
    """A kept answer as a stream in the client's dialect; the exchange ends with it."""
    ex, dialect = ask.ex, ask.dialect
    renderer = None
    try:
        renderer = dialect.StreamRenderer(ask.request)
        for ev in events_of(response):
            out = renderer.render(ev)
            if ex.ttft_ms is None:
                ex.ttft_ms = ex.elapsed_ms()
            if out:
                yield out
        yield renderer.end()
        final = getattr(renderer, "final", None)
        kept = ex.kept
        if final is not None and kept is not None and kept.keep:
            pipeline.states[dialect.NAME].keep(kept, final)
    except (asyncio.CancelledError, GeneratorExit):
        ex.status, ex.error = CLIENT_CLOSED, "client disconnected"
        raise
    except Exception as exc:  # a bug while rendering: the client sees an error, the log says what
        log.exception("cached stream %s failed inside fastroute", ex.id)
        err = RequestError(f"internal error in fastroute: {type(exc).__name__}")
        ex.status, ex.error = err.http_status, err.message
        yield dialect.render_stream_error(err)
    finally:
        pipeline.end(ex)


def _parsed(parse: Any, body: bytes) -> Any:
    try:
        return parse(body)
    except (ValueError, AttributeError, TypeError, KeyError):
        return None


def open_cache(config: Config) -> ExactCache | None:
    """The cache ``[cache]`` describes; None when it is off.  Nothing is opened until ``start()``."""
    c = config.cache
    if not c.enabled:
        return None
    if cache_kind(config) == "redis":
        from fastroute.cache.redis import RedisStore

        s = config.storage
        assert s.redis_url is not None  # the config's validation requires it
        return ExactCache(c, RedisStore(s.redis_url, s.redis_password_env, s.key_prefix, c.ttl_s, c.max_bytes))
    from fastroute.cache.memory import MemoryStore

    return ExactCache(c, MemoryStore(c.max_entries, c.max_bytes, c.ttl_s))


def cache_kind(config: Config) -> str:
    """``[cache] kind``, else what ``[storage] kind`` implies: redis for redis, memory otherwise
    (an SQLite cache would cost a file read on every lookup; the workers of one machine each keep
    their own in memory, and Redis shares one)."""
    kind = config.cache.kind
    if kind is not None:
        return kind
    return "redis" if config.storage.kind == "redis" else "memory"
