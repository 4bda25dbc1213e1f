"""The fixtures several benchmark modules use; each is made once for each module that asks for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support import free_port, new_loop, running

if TYPE_CHECKING:
    from fastroute.governance.limiter import Counters

E2E = Path(__file__).resolve().with_name("e2e.py")


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The module's event loop (uvloop when installed, as fastroute's workers): the benchmarks
    drive it with ``run_until_complete``."""
    made = new_loop()
    try:
        yield made
    finally:
        made.run_until_complete(made.shutdown_asyncgens())
        made.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Any]:
    """A real ``redis-server`` (no password) in its own process on a free port; ``.url`` is its
    database 0.  Skips the benchmark without one (fails with FASTROUTE_REQUIRE_REDIS)."""
    # imported here: ``tests`` is importable only when pytest runs from the project's root
    from tests.redis_server import RedisServer

    server = RedisServer(free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def counters(impl: str, request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop,
             tmp_path: Path) -> Iterator[Counters]:
    """The rate-limit counters of kind ``impl`` (memory, shm, redis: the module's parameter),
    started on the module's loop; at the end they must not have fallen back to counting locally."""
    from fastroute.governance.limiter import MemoryCounters, RedisCounters

    if impl == "redis":
        server = request.getfixturevalue("redis_server")
        made: Counters = RedisCounters(server.url, None, f"bench-{os.getpid()}-{time.monotonic_ns()}:")
    elif impl == "shm":
        from fastroute.governance.shm_counters import ShmCounters

        made = ShmCounters(tmp_path / "limits.shm")
    elif impl == "memory":
        made = MemoryCounters()
    else:
        raise ValueError(f"no counters of kind {impl!r} (memory, shm, redis)")
    loop.run_until_complete(made.start())
    yield made
    assert not made.degraded  # measured against the backend, not the local fallback
    loop.run_until_complete(made.close())


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    """The URL of ``e2e.py``'s zero-latency upstream stub, run in its own process (it also stops by
    itself after 10 minutes, or when this process goes)."""
    port = free_port()
    with running([sys.executable, str(E2E), "--_stub", str(port), "1", "600", str(os.getpid())], port,
                 health="/health"):
        yield f"http://127.0.0.1:{port}/v1/chat/completions"


@pytest.fixture(scope="module")
def clients(loop: asyncio.AbstractEventLoop) -> Iterator[dict[str, Any]]:
    """The upstream clients a module makes, by name, closed at its end."""
    made: dict[str, Any] = {}
    yield made
    for client in made.values():
        loop.run_until_complete(client.aclose())


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, float]]:
    """Figures by name, filled by a module's benchmarks; at its end, the lines of its own
    ``_summary(figures)`` are printed (the budget, the ratios)."""
    found: dict[str, float] = {}
    yield found
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if found and reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            for line in request.module._summary(found):
                reporter.write_line(line)
