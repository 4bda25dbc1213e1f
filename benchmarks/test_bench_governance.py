"""What keys, limits, prices and the audit log cost a request, measured as the pipeline does the
work, against the governance issue's budget (point 7): the key check, the limit check and the
cost add within 20 µs a request.

    pytest benchmarks/test_bench_governance.py -q --benchmark-group-by=group,param:impl

The request path runs on the event loop; the shared-memory counters count on it (no thread),
the SQLite audit log has a thread of its own, and Redis is another process.  So the async groups
below time **the event loop thread's CPU** (``timer=time.thread_time``): what a request takes
from the loop, which is what bounds a worker's throughput.  The other side's work is measured
apart and put in ``extra_info`` (``thread_us_per_request``: redis-server's CPU per request, or the
SQLite audit writer thread's), with the wall time (``wall_us_per_request``: the latency a request
waits, round trips included).  Async rounds are 1,000 requests on one uvloop loop, so **ms per
round = µs per request**; sync groups time one call.

- ``governance-key``: ``KeyRing.find`` of a presented key on a ring of 101 keys (SHA-256 of the
  key, a dict lookup, ``hmac.compare_digest``): a hit and a miss; ``caller``: the app's
  ``Handlers.caller`` on a BlackSheep request (the ``Authorization`` header read, the lookup),
  1,000 a round; ``caller-open``: the same with no key configured (what every request pays
  without keys).
- ``governance-limits``: ``Limiter.admit`` then ``settle_soon`` (as the pipeline settles; the round drains them) with every limit set (requests and
  tokens per minute, a monthly budget, never reached), ``impl`` memory / shm / redis.
  ``test_bench_limiter.py`` has the wall time of the same, and 100 at a time.
- ``governance-limits-concurrent``: the same 1,000 requests 100 at a time (``asyncio.gather``),
  as a busy worker makes them: Redis has 100 scripts in flight.
- ``test_redis_round_trip_floor`` (in ``governance-limits``): one ``PING`` round trip a request on
  the same RESP client, the floor of any count shared through Redis: the summary reads the Redis
  limits against it (what a round trip costs the loop on this machine is itself over the budget).
- ``governance-cost``: ``Recorder.cost_of`` (``Pricing.cost``: the price found once and kept,
  then ``cost_micros``) for a model priced by the config, by the built-in table, by the
  provider's ``cost_per_1m_tokens``.
- ``governance-audit``: ``audit.record(audit_record(ex, entry))`` as the recorder calls it, then
  the round's ``flush()``: memory; shm (the audit log ``[storage] kind = "sqlite"`` opens:
  SQLite's, its writer thread's CPU per record in ``extra_info``, the commits included); redis
  (its writer is a task on the loop: its part is in the figure, redis-server's in ``extra_info``).
- ``governance-request``: all of it for one request, in order — ``Handlers.caller``, ``admit``,
  ``cost_of``, the audit record, ``settle_soon`` — then the round's audit flush, with the counters and
  the audit log the server opens for each ``[storage] kind`` (``server/backends.py``).
- ``governance-dispatch`` (and ``-paired``): the whole in-process request, ``Handlers.caller`` then
  ``Pipeline.dispatch`` of the short OpenAI body to an upstream client answering from memory
  (``test_bench_pipeline.py``'s harness, 100 dispatches a round, so **a round's ms × 10 = µs per
  request**), governance ``off`` (no key, no limit, no audit log) and on with each storage kind:
  a key with limits, ``[pricing]``, the audit log, the per-key metrics.  A turn of the loop
  follows each dispatch (``asyncio.sleep(0)``, in both), so each settling task runs as it would
  in a server, and the round waits for the last.  On this noisy 2-core machine two separate
  benchmarks differ by ±30 µs from run to run, so ``governance-dispatch-paired`` runs a round with
  governance off before each round with it on, on the same loop, and reports the median of the
  paired differences (``added_us_per_request``): what governance adds.

At the end the module prints its figures against the 20 µs budget (medians; a ratio, never an
assert: the machine's load moves them).  Redis is a real ``redis-server`` on this machine
(skipped without one); the SQLite and shared-memory files are in the test's tmp directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from blacksheep import Request
from test_bench_pipeline import (
    ANSWER,
    BATCH,
    BODY,
    COSTS,
    PROVIDERS,
    ROUTERS,
    InProcess,
    _exchange,
    _last_event,
    _metrics,
)

from fastroute.audit import AuditLog, MemoryAuditLog, RedisAuditLog, SqliteAuditLog
from fastroute.config import config_from_dict
from fastroute.formats import openai
from fastroute.governance.keys import Caller, KeyRing
from fastroute.governance.limiter import (
    Counters,
    Limiter,
    Limits,
    MemoryCounters,
    RedisCounters,
)
from fastroute.governance.shm_counters import ShmCounters
from fastroute.pipeline import Answer, Pipeline
from fastroute.pricing import Pricing
from fastroute.providers import build_providers
from fastroute.recording.events import EventBus
from fastroute.recording.recorder import Recorder, audit_record
from fastroute.routing import Router
from fastroute.routing.health import Health
from fastroute.routing.catalogue import Catalogue
from fastroute.routing.discovery import Discovery
from fastroute.server.app import Handlers
from fastroute.server.generation import Generation

N = 1000
#: the issue's budget for the key check, the limit check and the cost add, µs a request
BUDGET_US = 20.0
SECRET = "sk-fr-bench-" + "0123456789abcdef" * 2
WRONG = "sk-fr-bench-" + "fedcba9876543210" * 2
#: limits never reached: every request is counted and admitted
RATE = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12}
BUDGET = {"usd": 10**6, "period": "month"}
LIMITS = Limits(requests_per_minute=10**9, tokens_per_minute=10**12, budget_usd=10**6, budget_period="month")
#: what the harness's upstream answers (the short answer): 14 + 3 tokens
TOKENS = 17
PRICING = {"upstream-model": {"prompt_cost_per_million": 2.5, "completion_cost_per_million": 10.0,
                              "cached_prompt_cost_per_million": 1.25}}
#: the counters measured: memory, shm (what ``[storage] kind = "sqlite"`` counts in: a shared-memory
#: file), redis; the audit log is the kind's own (SQLite's for shm)
KINDS = ["memory", "shm", "redis"]


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _config(governed: bool) -> Any:
    """The pipeline harness's providers and 20 rules; governed: ``bench`` with limits and a budget
    and 100 more keys, all by digest (the first 100 are labelled in the metrics), and a ``[pricing]`` table."""
    data: dict[str, Any] = {"providers": PROVIDERS, "routers": ROUTERS}
    if governed:
        data["keys"] = [{"name": "bench", "key_sha256": _sha(SECRET), "rate_limit": RATE, "budget": BUDGET},
                        *({"name": f"team-{i:03d}", "key_sha256": _sha(f"sk-other-{i}")} for i in range(100))]
        data["pricing"] = PRICING
    return config_from_dict(data)


def _request(secret: str | None) -> Request:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"130")]
    if secret is not None:
        headers.append((b"authorization", f"Bearer {secret}".encode()))
    return Request("POST", b"/v1/chat/completions", headers)


def _handlers(cfg: Any, keys: KeyRing) -> Handlers:
    providers = build_providers(cfg, None)
    return _serving(cfg, Pipeline(cfg, providers, Router(cfg, providers)), keys, _metrics(cfg, providers))


def _serving(cfg: Any, pipeline: Pipeline, keys: KeyRing, metrics: Any) -> Handlers:
    """The app's handlers serving ``pipeline``, as the generation the server builds from ``cfg`` would."""
    providers = pipeline.providers
    generation = Generation(0, cfg, None, providers, pipeline.health, pipeline.router, pipeline,
                            Discovery(cfg, providers), Catalogue(cfg, providers))
    return Handlers(generation, keys, metrics)


async def _caller(handlers: Handlers, request: Request) -> Any:
    """``Handlers.caller``, awaited when it is a coroutine (the key store's lookup may read)."""
    found = handlers.caller(request)
    return await found if inspect.isawaitable(found) else found


def _pricing(cfg: Any) -> Pricing:
    return Pricing(cfg.pricing, {p.name: p.cost_per_1m_tokens for p in cfg.providers})


def _thread_cpu(name: str) -> float:
    """CPU seconds of the live threads called ``name`` (the audit log's writer)."""
    return sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident)) for t in threading.enumerate()
               if t.name == name and t.ident is not None)


def _process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ── fixtures ──────────────────────────────────────────────────────────────

class Side:
    """What does the counters' (redis-server) or the audit log's work off the loop: its CPU, read
    around a benchmark."""

    def __init__(self, read: Callable[[], float]) -> None:
        self.read = read
        self.start = read()

    def us_per(self, requests: int) -> float:
        return (self.read() - self.start) / max(1, requests) * 1e6


def _side(impl: str, redis: Any = None) -> Side | None:
    if impl == "redis":
        return Side(lambda: _process_cpu(redis.proc.pid))
    return None


@pytest.fixture(params=KINDS)
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


def _record(benchmark: Any, figures: dict[str, float], name: str, per_round: int,
            wall: list[float] | None = None, side: Side | None = None) -> float | None:
    """µs per request of a benchmark's median round, kept for the summary and in extra_info."""
    if benchmark.stats is None:  # --benchmark-disable: run once, nothing measured
        return None
    us = benchmark.stats.stats.median / per_round * 1e6
    done = per_round * len(benchmark.stats.stats.data)
    benchmark.extra_info["us_per_request"] = round(us, 2)
    benchmark.extra_info["of_budget"] = round(us / BUDGET_US, 3)
    figures[name] = us
    if wall:
        figures[name + " wall"] = benchmark.extra_info["wall_us_per_request"] = \
            round(sorted(wall)[len(wall) // 2] / per_round * 1e6, 2)
    if side is not None:
        warm = per_round  # the warm-up round ran on the other side too
        figures[name + " thread"] = benchmark.extra_info["thread_us_per_request"] = round(side.us_per(done + warm), 2)
    return us


# ── the key ───────────────────────────────────────────────────────────────

@pytest.mark.parametrize("impl", ["find-hit", "find-miss"])
def test_key_find(benchmark: Any, impl: str, figures: dict[str, float]) -> None:
    ring = KeyRing.from_config(_config(governed=True))
    benchmark.group = "governance-key"
    found = benchmark(ring.find, SECRET if impl == "find-hit" else WRONG)
    assert (found is not None and found.name == "bench") if impl == "find-hit" else found is None
    if benchmark.stats is not None:
        figures[f"key {impl}"] = benchmark.stats.stats.median * 1e6


@pytest.mark.benchmark(timer=time.thread_time)
@pytest.mark.parametrize("impl", ["caller", "caller-open"])
def test_key_caller(benchmark: Any, impl: str, loop: asyncio.AbstractEventLoop, figures: dict[str, float]) -> None:
    cfg = _config(governed=impl == "caller")
    handlers = _handlers(cfg, KeyRing.from_config(cfg))
    request = _request(SECRET)
    benchmark.group = "governance-key"

    async def calls() -> Any:
        for _ in range(N):
            found = await _caller(handlers, request)
        return found

    presented, key = benchmark.pedantic(lambda: loop.run_until_complete(calls()), rounds=30, warmup_rounds=1)
    assert presented == SECRET and (key.name == "bench" if impl == "caller" else key is None)
    _record(benchmark, figures, f"key {impl}", N)


# ── the limits ────────────────────────────────────────────────────────────

@pytest.mark.benchmark(timer=time.thread_time)
def test_limits(benchmark: Any, impl: str, counters: Counters, loop: asyncio.AbstractEventLoop,
                request: pytest.FixtureRequest, figures: dict[str, float]) -> None:
    limiter = Limiter(counters)
    benchmark.group = "governance-limits"
    wall: list[float] = []

    async def requests() -> int:
        started = time.perf_counter()
        admitted = 0
        for _ in range(N):
            verdict = await limiter.admit("bench", LIMITS)
            limiter.settle_soon("bench", LIMITS, TOKENS, 1_500)  # as the pipeline settles
            admitted += verdict.admitted
        await counters.drained()  # every add counted within the round
        wall.append(time.perf_counter() - started)
        return admitted

    side = _side(impl, request.getfixturevalue("redis_server") if impl == "redis" else None)
    rounds = 30 if impl == "memory" else 10
    assert benchmark.pedantic(lambda: loop.run_until_complete(requests()), rounds=rounds, warmup_rounds=1) == N
    _record(benchmark, figures, f"limits {impl}", N, wall[1:], side)


@pytest.mark.benchmark(timer=time.thread_time)
def test_limits_concurrent(benchmark: Any, impl: str, counters: Counters, loop: asyncio.AbstractEventLoop,
                           request: pytest.FixtureRequest, figures: dict[str, float]) -> None:
    """The same, 100 requests at a time (a busy worker): Redis has 100 scripts in flight."""
    limiter = Limiter(counters)
    benchmark.group = "governance-limits-concurrent"
    wall: list[float] = []

    async def one() -> bool:
        verdict = await limiter.admit("bench", LIMITS)
        limiter.settle_soon("bench", LIMITS, TOKENS, 1_500)  # as the pipeline settles
        return verdict.admitted

    async def requests() -> int:
        started = time.perf_counter()
        admitted = 0
        for _ in range(N // 100):
            admitted += sum(await asyncio.gather(*(one() for _ in range(100))))
        await counters.drained()
        wall.append(time.perf_counter() - started)
        return admitted

    side = _side(impl, request.getfixturevalue("redis_server") if impl == "redis" else None)
    rounds = 30 if impl == "memory" else 10
    assert benchmark.pedantic(lambda: loop.run_until_complete(requests()), rounds=rounds, warmup_rounds=1) == N
    _record(benchmark, figures, f"limits-100 {impl}", N, wall[1:], side)


@pytest.mark.benchmark(timer=time.thread_time)
def test_redis_round_trip_floor(benchmark: Any, loop: asyncio.AbstractEventLoop, redis_server: Any,
                                figures: dict[str, float]) -> None:
    """The floor of any count shared through Redis: one ``PING`` a request on fastroute's RESP client
    (a write, a wake-up, a read, one future), 1,000 one at a time.  ``limits redis`` is read against it."""
    from fastroute.governance.resp import RespClient

    client = RespClient(redis_server.url)
    benchmark.group = "governance-limits"

    async def pings() -> int:
        for _ in range(N):
            await client.execute("PING")
        return N

    try:
        assert benchmark.pedantic(lambda: loop.run_until_complete(pings()), rounds=10, warmup_rounds=1) == N
        _record(benchmark, figures, "redis floor", N)
    finally:
        loop.run_until_complete(client.close())


# ── the cost ──────────────────────────────────────────────────────────────

@pytest.mark.parametrize("impl", ["config", "table", "provider"])
def test_cost(benchmark: Any, impl: str, figures: dict[str, float]) -> None:
    cfg = _config(governed=True)
    recorder = Recorder(EventBus(), pricing=_pricing(cfg))
    ex = _exchange("short")
    ex.sent_model = {"config": "upstream-model", "table": "gpt-4o-mini", "provider": "made-up-model"}[impl]
    benchmark.group = "governance-cost"
    micros = benchmark(recorder.cost_of, ex)
    # 14 in, 3 out: at 2.5 / 10 USD per million; gpt-4o-mini's price in the table; the provider's 0
    assert (micros > 0) if impl == "table" else micros == {"config": 65, "provider": 0}[impl], micros
    if benchmark.stats is not None:
        figures[f"cost {impl}"] = benchmark.stats.stats.median * 1e6


# ── the audit record ──────────────────────────────────────────────────────

def _audit(kind: str, path: Path, request: pytest.FixtureRequest) -> AuditLog:
    """The audit log the server opens for ``[storage] kind`` (server/backends.py)."""
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        return RedisAuditLog(server.url, None, f"bench-gov-{os.getpid()}-{time.monotonic_ns()}:")
    return MemoryAuditLog() if kind == "memory" else SqliteAuditLog(path)  # shm: SQLite's


def _writer(kind: str, request: pytest.FixtureRequest) -> Side | None:
    """Where an audit log writes off the loop: SQLite's thread; Redis's server (its writer is a task
    on the loop, so its own part is in the loop's figure)."""
    if kind == "shm":
        return Side(lambda: _thread_cpu("fastroute-audit-writer"))
    return _side(kind, request.getfixturevalue("redis_server")) if kind == "redis" else None


@pytest.mark.benchmark(timer=time.thread_time)
@pytest.mark.parametrize("impl", KINDS)
def test_audit_record(benchmark: Any, impl: str, loop: asyncio.AbstractEventLoop, tmp_path: Path,
                      request: pytest.FixtureRequest, figures: dict[str, float]) -> None:
    """1,000 records, then the flush that writes them, in each round: what the loop spends on them
    (for Redis its writer task too), the writing off the loop in extra_info."""
    audit = _audit(impl, tmp_path / "audit.sqlite3", request)
    loop.run_until_complete(audit.start())
    ex = _exchange("short")
    ex.key_name, ex.cost_micros = "bench", 65
    entry = {"cost_micros": 65, "duration_ms": 3.2, "ttft_ms": None}
    writer = _writer(impl, request)
    benchmark.group = "governance-audit"

    async def records() -> None:
        for _ in range(N):
            audit.record(audit_record(ex, entry))
        await audit.flush()

    try:
        benchmark.pedantic(lambda: loop.run_until_complete(records()), rounds=30, warmup_rounds=1)
        _record(benchmark, figures, f"audit {impl}", N, side=writer)
        newest = loop.run_until_complete(audit.logs(key="bench", limit=1))
        assert newest and newest[0].cost_micros == 65 and newest[0].prompt_tokens == 14
        assert audit.dropped == 0
    finally:
        loop.run_until_complete(audit.close())


# ── all of it, for one request ────────────────────────────────────────────

@pytest.mark.benchmark(timer=time.thread_time)
def test_governance_request(benchmark: Any, impl: str, counters: Counters, loop: asyncio.AbstractEventLoop,
                            tmp_path: Path, request: pytest.FixtureRequest, figures: dict[str, float]) -> None:
    cfg = _config(governed=True)
    keys = KeyRing.from_config(cfg)
    handlers = _handlers(cfg, keys)
    limiter = Limiter(counters)
    audit = _audit(impl, tmp_path / "audit.sqlite3", request)
    loop.run_until_complete(audit.start())
    recorder = Recorder(EventBus(), pricing=_pricing(cfg), audit=audit)
    ex = _exchange("short")
    http = _request(SECRET)
    entry = {"duration_ms": 3.2, "ttft_ms": None}
    benchmark.group = "governance-request"
    wall: list[float] = []

    async def requests() -> int:
        started = time.perf_counter()
        admitted = 0
        for _ in range(N):
            _, key = await _caller(handlers, http)
            verdict = await limiter.admit(key.name, key.limits)
            ex.key_name = key.name
            micros = ex.cost_micros = entry["cost_micros"] = recorder.cost_of(ex)
            audit.record(audit_record(ex, entry))
            limiter.settle_soon(key.name, key.limits, TOKENS, micros)  # as the pipeline settles
            admitted += verdict.admitted
        await counters.drained()
        await audit.flush()  # the records written within the round (Redis: by a task on this loop)
        wall.append(time.perf_counter() - started)
        return admitted

    side = _side(impl, request.getfixturevalue("redis_server") if impl == "redis" else None)
    writer = Side(lambda: _thread_cpu("fastroute-audit-writer"))
    try:
        admitted = benchmark.pedantic(lambda: loop.run_until_complete(requests()),
                                      rounds=30 if impl == "memory" else 10, warmup_rounds=1)
        assert admitted == N and ex.cost_micros == 65
        us = _record(benchmark, figures, f"request {impl}", N, wall[1:], side)
        if us is not None and impl == "shm":
            figures[f"request {impl} audit-writer"] = benchmark.extra_info["audit_writer_us_per_request"] = \
                round(writer.us_per(N * (len(benchmark.stats.stats.data) + 1)), 2)
        assert audit.dropped == 0
    finally:
        loop.run_until_complete(audit.close())


# ── the whole request in process, governance off and on ────────────────────

class Dispatcher:
    """A pipeline as the server builds it for one ``governance`` (off, or on with a storage kind),
    and the batch of 100 requests a round runs through it."""

    def __init__(self, governance: str, loop: asyncio.AbstractEventLoop, tmp_path: Path,
                 request: pytest.FixtureRequest) -> None:
        self.governance, self.loop = governance, loop
        self.on = on = governance != "off"
        cfg = _config(governed=on)
        self.client = InProcess(ANSWER["short"])
        providers = build_providers(cfg, self.client)  # type: ignore[arg-type]
        health = Health(cfg.failover)
        self.counters: Counters | None = None
        self.audit: AuditLog | None = None
        where = tmp_path / governance
        where.mkdir()
        if governance == "memory":
            self.counters, self.audit = MemoryCounters(), MemoryAuditLog()
        elif governance == "shm":
            self.counters, self.audit = ShmCounters(where / "limits.shm"), SqliteAuditLog(where / "audit.sqlite3")
        elif governance == "redis":
            server = request.getfixturevalue("redis_server")
            self.counters = RedisCounters(server.url, None, f"bench-gov-{os.getpid()}-{time.monotonic_ns()}:")
            self.audit = _audit("redis", where, request)
        for part in (self.counters, self.audit):
            if part is not None:
                loop.run_until_complete(part.start())
        self.bus = EventBus()
        self.metrics = _metrics(cfg, providers)
        recorder = Recorder(self.bus, self.metrics, None, Pricing(cfg.pricing, COSTS, table={}), None, self.audit)
        self.pipeline = pipeline = Pipeline(
            cfg, providers, Router(cfg, providers, health.available, steady=health.steady), health, recorder,
            limiter=Limiter(self.counters) if self.counters is not None else None)
        self.metrics.follow_in_flight(lambda: pipeline.in_flight)
        self.handlers = _serving(cfg, pipeline, KeyRing.from_config(cfg), self.metrics)
        self.http = _request(SECRET if on else None)
        self.batches = 0
        #: loop-thread CPU and wall seconds of each batch, in order
        self.cpu: list[float] = []
        self.wall: list[float] = []

    def batch(self) -> Any:
        """One round: 100 ``Handlers.caller`` + ``Pipeline.dispatch``, one after another, with a turn
        of the loop after each (the settling task runs then, as in a server), all settled within it."""
        return self.loop.run_until_complete(self._batch())

    async def _batch(self) -> Any:
        self.batches += 1
        cpu, started = time.thread_time(), time.perf_counter()
        handlers, pipeline, http, body = self.handlers, self.pipeline, self.http, BODY["short"]
        for _ in range(BATCH):
            presented, key = await _caller(handlers, http)
            answer = await pipeline.dispatch(openai, body, presented, None, Caller(key, None))
            await asyncio.sleep(0)
        await pipeline.settled()
        if self.audit is not None:
            await self.audit.flush()  # the round's records written (Redis: by a task on this loop)
        self.cpu.append(time.thread_time() - cpu)
        self.wall.append(time.perf_counter() - started)
        return answer

    def check(self, answer: Any) -> None:
        assert isinstance(answer, Answer) and answer.status == 200 and answer.body == ANSWER["short"]
        assert self.client.calls == BATCH * self.batches and self.pipeline.in_flight == 0
        complete = _last_event(self.bus)
        assert complete["status"] == 200 and complete["key_name"] == ("bench" if self.on else None)
        text = self.metrics.render().decode()
        assert ('fastroute_key_tokens_total{direction="in",key="bench"}' in text) == self.on
        if self.on:
            assert complete["cost_micros"] == 65  # the [pricing] price, not the provider's
            assert self.counters is not None and not self.counters.degraded
            assert self.audit is not None
            logged = self.loop.run_until_complete(self.audit.logs(key="bench", limit=1000))
            assert len(logged) == min(1000, BATCH * self.batches)

    def close(self) -> None:
        for part in (self.audit, self.counters):
            if part is not None:
                self.loop.run_until_complete(part.close())


@pytest.fixture
def up_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTROUTE_BENCH_UP_KEY", "sk-bench-up-" + "0" * 32)


@pytest.mark.benchmark(timer=time.thread_time)
@pytest.mark.parametrize("impl", ["off", *KINDS])
def test_dispatch(benchmark: Any, impl: str, loop: asyncio.AbstractEventLoop, tmp_path: Path,
                  request: pytest.FixtureRequest, figures: dict[str, float], up_key: None) -> None:
    """One round: a :meth:`Dispatcher.batch`, governance ``impl``."""
    d = Dispatcher(impl, loop, tmp_path, request)
    benchmark.group = "governance-dispatch"
    side = _side(impl, request.getfixturevalue("redis_server") if impl == "redis" else None)
    try:
        answer = benchmark.pedantic(d.batch, rounds=30, iterations=1, warmup_rounds=1)
        d.check(answer)
        _record(benchmark, figures, f"dispatch {impl}", BATCH, d.wall[1:], side)
    finally:
        d.close()


@pytest.mark.benchmark(timer=time.thread_time)
@pytest.mark.parametrize("impl", KINDS)
def test_dispatch_paired(benchmark: Any, impl: str, loop: asyncio.AbstractEventLoop, tmp_path: Path,
                         request: pytest.FixtureRequest, figures: dict[str, float], up_key: None) -> None:
    """What governance adds, paired: before each round governed by ``impl`` (timed), a round with
    governance off runs on the same loop (in the setup, timed apart), so the two see the same
    moment of the machine; ``extra_info["added_us_per_request"]`` is the median of the 30 differences."""
    off, on = Dispatcher("off", loop, tmp_path, request), Dispatcher(impl, loop, tmp_path, request)
    benchmark.group = "governance-dispatch-paired"

    def before() -> None:  # pedantic takes what a setup returns as the arguments
        off.batch()

    try:
        answer = benchmark.pedantic(on.batch, setup=before, rounds=30, iterations=1, warmup_rounds=1)
        on.check(answer)
        off.check(off.batch())
        if benchmark.stats is not None:
            added = sorted((a - b) / BATCH * 1e6 for a, b in zip(on.cpu[1:], off.cpu[1:], strict=False))
            us = benchmark.extra_info["added_us_per_request"] = round(added[len(added) // 2], 2)
            figures[f"dispatch added {impl}"] = us
            figures[f"dispatch paired off {impl}"] = sorted(off.cpu[1:-1])[len(off.cpu[1:-1]) // 2] / BATCH * 1e6
            benchmark.extra_info["of_budget"] = round(us / BUDGET_US, 3)
    finally:
        off.close()
        on.close()


# ── the summary ───────────────────────────────────────────────────────────

def _summary(f: dict[str, float]) -> list[str]:
    def us(name: str) -> str:
        return f"{f[name]:6.2f}" if name in f else "     -"

    def side(name: str) -> str:
        parts = [f"wall {f[name + ' wall']:.1f}" if name + " wall" in f else "",
                 f"other side {f[name + ' thread']:.1f}" if name + " thread" in f else ""]
        return f"   ({', '.join(p for p in parts if p)})" if any(parts) else ""

    lines = ["", (f"governance on the request path against the {BUDGET_US:g} µs budget "
                  "(medians, µs per request of the event loop's CPU; wall and the other side's CPU in brackets):")]
    lines.append(f"  key: find hit {us('key find-hit')}, miss {us('key find-miss')}; Handlers.caller "
                 f"{us('key caller')} (no keys configured: {us('key caller-open')})")
    for kind in KINDS:
        lines.append(f"  limits admit + settle, {kind:<6} {us(f'limits {kind}')}{side(f'limits {kind}')}; "
                     f"100 at a time {us(f'limits-100 {kind}')}{side(f'limits-100 {kind}')}")
    if "redis floor" in f and "limits redis" in f:
        lines.append(f"  redis floor, one PING round trip a request: {us('redis floor')}; limits on redis = "
                     f"{f['limits redis'] / f['redis floor']:.2f} round trips' CPU (the budget is "
                     f"{BUDGET_US / f['redis floor']:.2f} of one)")
    lines.append(f"  cost: [pricing] {us('cost config')}, built-in table {us('cost table')}, "
                 f"provider's price {us('cost provider')}")
    lines.append("  audit record (and its flush): " + ", ".join(
        f"{kind} {us(f'audit {kind}')}" + (f" (off the loop {f[f'audit {kind} thread']:.1f})"
                                           if f"audit {kind} thread" in f else "") for kind in KINDS))
    for kind in KINDS:
        sums = []
        for how, limits in (("one at a time", f"limits {kind}"), ("100 at a time", f"limits-100 {kind}")):
            parts = ["key caller", limits, "cost config"]
            if all(p in f for p in parts):
                total = sum(f[p] for p in parts)
                sums.append(f"{how} {total:6.2f} = {total / BUDGET_US:.2f} of the budget")
        if sums:
            lines.append(f"  key + limits + cost, {kind:<6} " + "; ".join(sums))
    for kind in KINDS:
        name = f"request {kind}"
        if name in f:
            writer = f" + audit writer {f[name + ' audit-writer']:.1f}" if name + " audit-writer" in f else ""
            lines.append(f"  the whole governance work of a request, {kind:<6} {f[name]:6.2f}  = "
                         f"{f[name] / BUDGET_US:.2f} of the budget{side(name)}{writer}")
    for kind in KINDS:
        name = f"dispatch added {kind}"
        if name in f:
            lines.append(f"  governance on ({kind:<6}) adds to an in-process request, paired with one off: "
                         f"{f[name]:6.2f} = {f[name] / BUDGET_US:.2f} of the budget (off: {f[f'dispatch paired off {kind}']:.1f})")
    if "dispatch off" in f:
        lines.append(f"  in-process request (Handlers.caller + Pipeline.dispatch), governance off {f['dispatch off']:6.2f}"
                     f"{side('dispatch off')}")
        for kind in KINDS:
            name = f"dispatch {kind}"
            if name in f:
                more = f[name] - f["dispatch off"]
                lines.append(f"    on, {kind:<6} {f[name]:6.2f}  +{more:.2f} = {more / BUDGET_US:.2f} of the budget"
                             f"{side(name)}")
    return lines
