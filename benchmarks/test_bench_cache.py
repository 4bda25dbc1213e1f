"""The exact cache ([cache]): what a key costs, a lookup hit against a miss, and a dispatch served from
the cache against one that calls the (in-process) upstream.

    pytest benchmarks/test_bench_cache.py --benchmark-group-by=group

- ``cache-key``: ``parse_request`` is not in it (the pipeline has the canonical request, or parses it
  once for the cache); ``request_digest`` + ``entry_key`` of the short and the agent body
  (~75 KB: 20 tools, 30 messages), as OpenAI parses them.
- ``cache-lookup``: ``MemoryStore.get_now`` of a key held (and moved to the front) and of one not
  held, in a store of 1000 entries.
- ``cache-dispatch``: 100 ``Pipeline.dispatch`` calls of the same OpenAI request to an OpenAI provider
  answering from memory (benchmarks/test_bench_pipeline.py's ``InProcess``): ``off`` (no cache),
  ``miss`` (cache on, every request another key: the lookup, the parse, the key and the keeping are
  paid on top of the upstream call), ``hit`` (cache on, the same request: no upstream call).

The figures to read are the ratios within a group (``extra_info``), never an absolute time: the
machine is shared.  No time is asserted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from benchmarks.test_bench_pipeline import (
    ANSWER, BATCH, BODY, COSTS, PROVIDERS, ROUTERS, SIZES, InProcess, _metrics, up_key,  # noqa: F401
)
from fastroute.cache import ExactCache
from fastroute.cache.key import entry_key, request_digest
from fastroute.cache.memory import MemoryStore
from fastroute.config import config_from_dict
from fastroute.formats import openai
from fastroute.pipeline import Answer, Pipeline
from fastroute.pricing import Pricing
from fastroute.providers import build_providers
from fastroute.recording.events import EventBus
from fastroute.recording.recorder import Recorder
from fastroute.routing import Router
from fastroute.routing.health import Health


@pytest.mark.parametrize("size", SIZES)
def test_key(benchmark, size: str) -> None:  # type: ignore[no-untyped-def]
    request = openai.parse_request(orjson.loads(orjson.dumps(BODY[size])))
    benchmark.group = "cache-key"

    def key() -> str:
        return entry_key(request_digest(request, openai.HINTS), "up", "upstream-model")

    assert len(benchmark(key)) == 32


@pytest.mark.parametrize("found", ["hit", "miss"])
def test_lookup(benchmark, found: str) -> None:  # type: ignore[no-untyped-def]
    store = MemoryStore(max_entries=1000, max_bytes=64 << 20, ttl_s=300)
    for i in range(1000):
        store.put(f"{i:032x}", b"x" * 500)
    key = f"{500:032x}" if found == "hit" else "f" * 32
    benchmark.group = "cache-lookup"
    value = benchmark(store.get_now, key)
    assert (value is not None) is (found == "hit")


@pytest.mark.parametrize("mode", ["off", "miss", "hit"])
def test_dispatch(benchmark, mode: str, loop: asyncio.AbstractEventLoop, up_key: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    data: dict[str, Any] = {"providers": PROVIDERS, "routers": ROUTERS,
                            "cache": {"enabled": mode != "off"}}
    cfg = config_from_dict(data)
    client = InProcess(ANSWER["short"])
    providers = build_providers(cfg, client)  # type: ignore[arg-type]
    health = Health(cfg.failover)
    recorder = Recorder(EventBus(), _metrics(cfg, providers), None, Pricing(providers=COSTS, table={}))
    cache = ExactCache(cfg.cache, MemoryStore(cfg.cache.max_entries, cfg.cache.max_bytes, cfg.cache.ttl_s)) \
        if mode != "off" else None
    pipeline = Pipeline(cfg, providers, Router(cfg, providers, health.available, steady=health.steady),
                        health, recorder, cache=cache)
    body = BODY["short"]
    n = 0

    async def batch() -> Any:
        nonlocal n
        for _ in range(BATCH):
            n += 1
            b = body if mode != "miss" else {**body, "seed": n}  # another key every time
            answer = await pipeline.dispatch(openai, dict(b), None)
        return answer

    benchmark.group = "cache-dispatch"
    loop.run_until_complete(batch())  # warm: the hit's entry is kept
    calls = client.calls
    answer = benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=20, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:
        benchmark.extra_info["us_per_request"] = round(benchmark.stats.stats.median / BATCH * 1e6, 1)
    assert isinstance(answer, Answer) and answer.status == 200
    assert orjson.loads(answer.body)["choices"][0]["message"]["content"]
    if mode == "hit":
        assert client.calls == calls and dict(answer.headers)[b"x-router-cache"] == b"hit"
    else:
        assert client.calls > calls
