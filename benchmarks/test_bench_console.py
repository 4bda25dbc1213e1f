"""The console line's cost: the recorder's ``complete`` (called at the end of every exchange)
without a console, with one that prints failures only (the default: a success queues
nothing), and with ``--access-log`` (every exchange queues its line); and the writer
thread's cost per line, off the request path.  The recorder runs without metrics here
(their ~15 us would bury the difference); the event bus and the log entry are in.

    pytest benchmarks/test_bench_console.py --benchmark-group-by=group
"""

from __future__ import annotations

import io
import time

import pytest

from fastroute.canonical import Usage
from fastroute.pipeline import Exchange
from fastroute.recording.console import ConsoleLog
from fastroute.recording.events import EventBus
from fastroute.pricing import Pricing
from fastroute.recording.recorder import Recorder


class NullOut(io.TextIOBase):
    """A stdout that takes everything and keeps nothing (the write syscall is not measured here)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)


def _exchange(status: int = 200, error: str | None = None) -> Exchange:
    ex = Exchange(id="req_0123456789abcdef", dialect="openai", started=time.perf_counter(),
                  ts_ms=int(time.time() * 1000), requested_model="stub-model", provider="stub",
                  sent_model="stub-model", status=status, error=error, usage=Usage(12, 34), duration_ms=3.2,
                  response_text="stub: hello")
    return ex


@pytest.mark.parametrize("console", ["none", "failures-only", "access-log"])
def test_complete(benchmark, console: str) -> None:  # type: ignore[no-untyped-def]
    """A successful exchange.  With the access log its line is queued, and the writer thread runs
    as in a server (draining every 0.1 s, competing for the GIL), so its share is in the figure."""
    benchmark.group = "recorder-complete"
    out = NullOut()
    line = None if console == "none" else ConsoleLog(access=console == "access-log", out=out)
    if line is not None:
        line.start()
    recorder = Recorder(EventBus(), None, None, Pricing(providers={"stub": 1.0}, table={}), line)
    try:
        benchmark(recorder.complete, _exchange(), 0)
    finally:
        if line is not None:
            line.close()
    assert bool(out.lines) == (console == "access-log")  # a success has a line only with the access log


def test_complete_failed(benchmark) -> None:  # type: ignore[no-untyped-def]
    """A failed exchange, with the default console (a line for each failure), writer running."""
    benchmark.group = "recorder-complete"
    out = NullOut()
    line = ConsoleLog(access=False, out=out).start()
    recorder = Recorder(EventBus(), None, None, Pricing(providers={"stub": 1.0}, table={}), line)
    try:
        benchmark(recorder.complete, _exchange(502, "provider 'stub' failed: HTTP 500: boom"), 0)
    finally:
        line.close()
    assert out.lines


def test_writer_per_1000_lines(benchmark) -> None:  # type: ignore[no-untyped-def]
    """The writer thread's work for 1000 queued lines: format, scrub, write (to a null stdout)."""
    benchmark.group = "console-writer"
    line = ConsoleLog(access=True, secret_envs=["FASTROUTE_BENCH_KEY"], out=NullOut())
    entry = Recorder(EventBus()).entry(_exchange())

    def fill() -> None:
        for _ in range(1000):
            line.note(entry)

    benchmark.pedantic(line.flush, setup=fill, rounds=200)
    assert not line._pending
