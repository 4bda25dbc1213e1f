"""The performance issue's targets, measured in one run: fastroute against the stack's ceiling.

    python benchmarks/e2e.py [--seconds 10] [--quick] [--concurrency 1,16] [--clients lean]
                             [--workers 1] [--no-pin] [--direct] [--governance] [--json out.json]

Processes, all on 127.0.0.1, each in its own process group:

- a zero-latency OpenAI upstream stub (raw ``asyncio.Protocol`` HTTP/1.1 on uvloop, keep-alive):
  a fixed ``chat.completion`` for JSON calls, and for ``"stream": true`` 20 content
  ``chat.completion.chunk`` events, a usage chunk and ``data: [DONE]``, chunked, one transport
  write per event like a real upstream (``--stub-writes one``: the whole stream in one write);
- the stack's ceiling, ``benchmarks/ceiling_app.py`` under Granian as fastroute runs it (ASGI,
  uvloop, ``--workers`` workers, no access log): BlackSheep answering the stub's ``chat.completion``
  bytes (and, for a stream, the stub's 22 events from memory, one send each), then a bare ASGI app
  (no framework) answering the JSON, as a second reference;
- fastroute's full pipeline, ``python -m fastroute serve`` once per ``--clients`` upstream client
  (default ``lean``): a 50-tag keyword classifier, the JSONL request log, the audit log (SQLite, as
  by default), the dashboard, metrics, one openai-format provider (the stub) behind a prefix router;
  with ``--governance`` also a client key (``[[keys]]``, by its digest) with a rate limit and a
  budget it never reaches (counted in limits.shm beside the state), a ``[pricing]`` price for the
  stub's model, so every request is looked up by key, admitted, priced, settled and audited
  (the load generator sends the key either way); the run checks on ``/metrics`` that every
  request was counted against the key and none refused;
- a load generator, a fresh process per case: a closed loop of one keep-alive connection per
  concurrent worker, raw ``asyncio.Protocol`` on uvloop with ``httptools.HttpResponseParser``, the
  request bytes built once, the next request sent from the callback that completes the answer (no
  task or future per request); latency and time to the first body byte per request; every answer is
  checked (200; ``"chat.completion"`` in a JSON answer;
  a stream has >= 20 ``chat.completion.chunk`` and ends with ``data: [DONE]``), errors are counted
  and sampled.  Its own CPU per request is reported: it must stay well below the server's.

Cases: the ceiling, JSON and streamed; the bare app, JSON; fastroute, JSON and streamed; each at
every ``--concurrency`` level (default 1 and 16); with ``--direct`` the stub alone as well, for
context.  Each case runs ``--seconds`` (10; ``--quick``: 2, the whole run under a minute on the
2-core development machine) after a discarded warm-up (1 s; quick 0.5 s).

Pinning: when there are more usable CPUs than server workers,
the server under test (its whole process tree) runs alone on the last usable CPU(s)
(``sched_setaffinity`` before exec; Granian's workers inherit it), the stub and the load generator
on the others.  ``--no-pin`` turns it off; the report says what ran where.  Over each window
/proc/stat says how much of the server's CPU, and of the load side's, went to anything but our
processes ("other", the hypervisor's steal included): work of someone else on the machine, which
makes that case's figures, and the targets from it, noisy (flagged above 5%).

Reported per case: requests per second, latency p50/p99 (and the time to the first body byte for
streams), the server's CPU time per request (utime + stime growth of its whole process tree, from
/proc, read around the measured window only; also its processes' main threads alone, i.e. Python),
the load generator's, errors.  Memory of each server (RSS summed over its process tree from
/proc/<pid>/status, PSS from smaps_rollup, and its largest worker's RSS): idle (after start-up, one
request and 1 s) and after its load.  Then the issue's targets, computed from the same run:
fastroute JSON c=16 req/s >= 0.6x the ceiling's; fastroute JSON c=1 p50 <= the ceiling's + 0.15 ms;
fastroute streams c=16 req/s >= 0.5x the ceiling's JSON; fastroute's idle worker RSS <= 60 MB and
its idle tree <= the ceiling's + 15 MB (and, as context, fastroute's streams against the ceiling's).
``--json PATH`` writes every figure.

Every child is killed on exit, on an error and on Ctrl-C; children also die if this script is
killed outright (``PR_SET_PDEATHSIG``), and the stub stops by itself after the run's planned
length plus a margin.  Python >= 3.11, Linux (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
from ceiling_app import (
    CHAT_PATH,
    COMPLETION,
    MODEL,
    STREAM_EVENTS,
    STREAM_TOKENS,
    dumps,
)

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
CLIENTS = ("lean", "aiohttp", "httpx")
KEYWORD_TAGS = 50
#: the key every client request carries (``--governance``: the one key fastroute accepts)
CLIENT_KEY = "sk-bench"
#: a case is noisy when other work took more than this share of the server's CPU(s)
NOISY = 0.05

# ── the zero-latency upstream ─────────────────────────────────────────────


def stub_writes(per_event: bool) -> tuple[bytes, list[bytes]]:
    """(the JSON answer, the stream answer as a list of transport writes)."""
    json_answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                   % len(COMPLETION)) + COMPLETION
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n" \
           b"transfer-encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in STREAM_EVENTS]
    chunks[0] = head + chunks[0]
    chunks[-1] += b"0\r\n\r\n"
    return json_answer, chunks if per_event else [b"".join(chunks)]


HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nnot found"
BAD = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


def _parse_chunked(buf: bytearray, start: int) -> tuple[int, bytes] | None:
    """(end offset, body) of a chunked body starting at ``start``; None while incomplete."""
    parts, pos = [], start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # no trailers expected: the empty line ends it
            return None if end < 0 else (end + 4, b"".join(parts))
        if len(buf) < eol + 2 + size + 2:
            return None
        parts.append(bytes(buf[eol + 2:eol + 2 + size]))
        pos = eol + 2 + size + 2


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def stub_main(port: int, per_event: bool, lifetime_s: float, parent: int) -> None:
    json_answer, stream_answer = stub_writes(per_event)

    class Stub(asyncio.Protocol):
        __slots__ = ("buf", "t")

        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.buf = bytearray()
            _nodelay(transport)

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > 65536:
                        self.t.write(BAD)
                        self.t.close()
                    return
                head = bytes(buf[:end]).lower()
                start = end + 4
                if b"\r\ntransfer-encoding:" in head and b"chunked" in head:
                    parsed = _parse_chunked(buf, start)
                    if parsed is None:
                        return
                    consumed, body = parsed
                else:
                    length = 0
                    i = head.find(b"\r\ncontent-length:")
                    if i >= 0:
                        j = head.find(b"\r\n", i + 2)
                        length = int(head[i + 17:j if j > 0 else None])
                    consumed = start + length
                    if len(buf) < consumed:
                        return
                    body = bytes(buf[start:consumed])
                del buf[:consumed]
                line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
                method, _, rest = line.partition(b" ")
                path = rest.partition(b" ")[0]
                if method == b"post" and path.endswith(b"/chat/completions"):
                    if b'"stream":true' in body or b'"stream": true' in body:
                        for w in stream_answer:
                            self.t.write(w)
                    else:
                        self.t.write(json_answer)
                elif method == b"get" and path == b"/health":
                    self.t.write(HEALTH)
                else:
                    self.t.write(NOT_FOUND)
                if b"\r\nconnection: close" in head:
                    self.t.close()
                    return

    loop = _new_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(Stub, "127.0.0.1", port, backlog=4096))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)

    def watchdog() -> None:  # stop by ourselves: orphaned, or past our lifetime
        if os.getppid() != parent or time.monotonic() > deadline:
            loop.stop()
        else:
            loop.call_later(1.0, watchdog)

    deadline = time.monotonic() + lifetime_s
    loop.call_later(1.0, watchdog)
    try:
        loop.run_forever()
    finally:
        server.close()


def _nodelay(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ── CPU time and memory from /proc ────────────────────────────────────────

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_of(stat: bytes) -> float:
    """utime + stime, in seconds, from a /proc .../stat line."""
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, utime + stime in seconds) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        table[int(entry)] = (int(raw[raw.rindex(b")") + 2:].split()[1]), _cpu_of(raw))
    return table


def tree_pids(pid: int, table: dict[int, tuple[int, float]] | None = None) -> list[int]:
    """A process and all its descendants (Granian's workers are child processes), the root first."""
    table = _proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        if p in table:
            out.append(p)
        todo.extend(sorted(children.get(p, ())))
    return out


def tree_cpu(pid: int) -> tuple[float, float]:
    """(utime + stime of the process tree, of its processes' main threads only), in seconds."""
    table = _proc_table()
    total = main = 0.0
    for p in tree_pids(pid, table):
        total += table[p][1]
        try:
            with open(f"/proc/{p}/task/{p}/stat", "rb") as f:
                main += _cpu_of(f.read())
        except OSError:
            pass
    return total, main


def cpu_stat() -> dict[int, tuple[float, float]]:
    """cpu number -> (busy, all) seconds since boot, from /proc/stat.  Busy is what processes and
    the hypervisor took (user, nice, system, steal): interrupt time is left out, as it is of a
    process's utime + stime, so that busy minus our processes' CPU is other work."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
            busy = user + nice + system + steal
            out[int(name[3:])] = (busy / TICKS, (busy + idle + iowait + irq + softirq) / TICKS)
    return out


def _status_kb(pid: int, path: str, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def tree_memory(pid: int) -> dict[str, Any]:
    """RSS and PSS of a process tree, and the RSS of its largest process but the root (a worker)."""
    pids = tree_pids(pid)
    rss = [_status_kb(p, "status", "VmRSS:") or 0 for p in pids]
    pss = [kb for kb in (_status_kb(p, "smaps_rollup", "Pss:") for p in pids) if kb is not None]
    return {"processes": len(pids), "tree_rss_mb": sum(rss) / 1024,
            "tree_pss_mb": sum(pss) / 1024 if len(pss) == len(pids) else None,
            "worker_rss_mb": max(rss[1:] or rss) / 1024}


# ── the load generator (its own process) ──────────────────────────────────

perf = time.perf_counter


def request_body(stream: bool) -> bytes:
    return dumps({"model": MODEL, "messages": [{"role": "system", "content": "You are terse."},
                                                {"role": "user", "content": "Say hello."}],
                  "max_tokens": 16, "stream": stream})


def request_bytes(host: str, port: int, stream: bool) -> bytes:
    body = request_body(stream)
    return (f"POST {CHAT_PATH} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"accept: {'text/event-stream' if stream else 'application/json'}\r\n"
            f"authorization: Bearer {CLIENT_KEY}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, its answer parsed by httptools.

    It runs its share of the closed loop in callbacks, with no task or future per request: the
    answer's last byte hands it to :meth:`Load.answered`, which sends the next request at once."""

    def __init__(self, load: Load, slot: int) -> None:
        self.load, self.slot = load, slot
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.body: list[bytes] = []
        self.sent_at = self.first_byte = 0.0
        self.busy = self.timed_out = self.retired = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        _nodelay(transport)

    def send(self, request: bytes) -> None:
        self.body = []
        self.first_byte = 0.0
        self.busy = True
        self.sent_at = perf()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.drop(f"HttpParserError: {exc}", self.busy)

    def on_body(self, body: bytes) -> None:
        if not self.body:
            self.first_byte = perf()
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.busy = False
        self.load.answered(self, perf())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            why = "TimeoutError: no answer in time" if self.timed_out else \
                f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection mid-answer"
            self.drop(why, True)
        else:
            self.drop(None, False)

    def drop(self, error: str | None, active: bool) -> None:
        """Done with this connection; ``active``: it is in a running phase, so a new one takes over."""
        if self.retired:
            return
        self.retired = True
        self.transport.abort()
        self.load.dropped(self, error, active)

    def abort_if_late(self, now: float, timeout: float) -> None:
        if self.busy and now - self.sent_at > timeout:
            self.timed_out = True
            self.transport.abort()


def pct_ms(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted seconds, in ms."""
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, math.ceil(round(q * len(ordered), 6)) - 1))
    return ordered[k] * 1000.0


class Load:
    """A closed loop: ``concurrency`` connections, each with one request in flight, for a warm-up then a window."""

    TIMEOUT_S = 10.0

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host, self.port, self.stream = spec["host"], spec["port"], spec["stream"]
        self.request = request_bytes(self.host, self.port, self.stream)
        self.conns: list[Connection | None] = [None] * spec["concurrency"]
        self.tasks: set[asyncio.Task[None]] = set()
        self.until = 0.0
        self.running = 0  # connections still looping in this phase
        self.phase_done: asyncio.Future[None] | None = None
        self.recording = False
        self.latencies: list[float] = []
        self.ttfbs: list[float] = []
        self.answered_n = 0  # in the window, errors included: the server's CPU is divided by it
        self.errors = 0
        self.samples: set[str] = set()

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.add(what[:200])

    def check(self, status: int, body: bytes) -> str | None:
        """What is wrong with an answer, or None."""
        if status != 200:
            return f"HTTP {status}: {body[:150]!r}"
        if self.stream:
            if not body.endswith(b"data: [DONE]\n\n") or body.count(b"chat.completion.chunk") < STREAM_TOKENS:
                return f"bad stream ({len(body)} bytes): {body[-150:]!r}"
        elif b'"chat.completion"' not in body:
            return f"bad JSON: {body[:150]!r}"
        return None

    def answered(self, conn: Connection, now: float) -> None:
        self.answered_n += self.recording
        problem = self.check(conn.parser.get_status_code(), b"".join(conn.body))
        if problem:
            self.error(problem)
        elif self.recording:
            self.latencies.append(now - conn.sent_at)
            self.ttfbs.append(conn.first_byte - conn.sent_at)
        if conn.parser.should_keep_alive():
            self.proceed(conn)
        else:
            conn.drop(None, True)

    def proceed(self, conn: Connection) -> None:
        """The connection's next request, or its end of the phase."""
        if perf() < self.until:
            conn.send(self.request)
        else:
            self.finish()

    def finish(self) -> None:
        """One connection fewer looping in this phase: the phase ends with the last."""
        self.running -= 1
        if self.running == 0 and self.phase_done is not None and not self.phase_done.done():
            self.phase_done.set_result(None)

    def dropped(self, conn: Connection, error: str | None, active: bool) -> None:
        if error is not None:
            self.answered_n += self.recording
            self.error(error)
        if active:
            self.spawn(self.replace(conn.slot))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def replace(self, slot: int) -> None:
        """A new connection in ``slot``, which goes on with the phase (errors while connecting count)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, conn = await loop.create_connection(lambda: Connection(self, slot), self.host, self.port)
                break
            except OSError as exc:
                self.error(f"{type(exc).__name__}: {exc}")
                if perf() >= self.until:
                    self.conns[slot] = None
                    self.finish()
                    return
                await asyncio.sleep(0.01)
        self.conns[slot] = conn
        self.proceed(conn)

    async def phase(self, seconds: float) -> float:
        self.phase_done = asyncio.get_running_loop().create_future()
        self.running = len(self.conns)
        start = perf()
        self.until = start + seconds
        for slot, conn in enumerate(self.conns):
            if conn is None or conn.retired:
                self.spawn(self.replace(slot))
            else:
                self.proceed(conn)
        await self.phase_done
        return perf() - start

    async def watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = perf()
            for conn in self.conns:
                if conn is not None:
                    conn.abort_if_late(now, self.TIMEOUT_S)

    async def run(self) -> dict[str, Any]:
        import resource

        watch: dict[str, int] = self.spec["watch"]
        guard = asyncio.get_running_loop().create_task(self.watchdog())
        try:
            await self.phase(self.spec["warmup_s"])
            await asyncio.sleep(0.05)  # let the servers settle before the CPU reading
            cpu0 = {name: tree_cpu(pid) for name, pid in watch.items()}
            stat0 = cpu_stat()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            self.recording = True
            elapsed = await self.phase(self.spec["seconds"])
            self.recording = False
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            await asyncio.sleep(0.05)  # the servers' last bookkeeping after the last answer
            stat1 = cpu_stat()
            cpu1 = {name: tree_cpu(pid) for name, pid in watch.items()}
        finally:
            guard.cancel()
            for conn in self.conns:
                if conn is not None:
                    conn.retired = True
                    conn.transport.close()
        return {"requests": len(self.latencies), "answered": self.answered_n, "errors": self.errors,
                "error_samples": sorted(self.samples), "elapsed_s": elapsed, **self.percentiles(),
                **{f"{name}_cpu_s": cpu1[name][0] - cpu0[name][0] for name in watch},
                **{f"{name}_main_s": cpu1[name][1] - cpu0[name][1] for name in watch},
                "loadgen_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
                "loadgen_user_s": ru1.ru_utime - ru0.ru_utime,
                "cpu_busy_s": {n: stat1[n][0] - stat0[n][0] for n in stat1 if n in stat0},
                "cpu_total_s": {n: stat1[n][1] - stat0[n][1] for n in stat1 if n in stat0}}

    def percentiles(self) -> dict[str, float]:
        lat, ttfb = sorted(self.latencies), sorted(self.ttfbs)
        return {"p50_ms": pct_ms(lat, 0.50), "p99_ms": pct_ms(lat, 0.99),
                "ttfb_p50_ms": pct_ms(ttfb, 0.50), "ttfb_p99_ms": pct_ms(ttfb, 0.99)}


def load_main(spec: dict[str, Any]) -> None:
    loop = _new_loop()
    try:
        result = loop.run_until_complete(Load(spec).run())
    finally:
        loop.close()
    sys.stdout.write(json.dumps(result))


# ── child processes ───────────────────────────────────────────────────────

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_setup(cpus: list[int] | None) -> None:
    """In the child before exec: SIGTERM when the conductor dies (Linux), and its CPUs if pinned."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such safety net
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if cpus:
        os.sched_setaffinity(0, cpus)


class Children:
    """Every child process, each in its own process group, all killed by :meth:`kill_all`."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def popen(self, cmd: list[str], cpus: list[int] | None = None, **kw: Any) -> subprocess.Popen:
        """Start ``cmd`` in its own session; on ``cpus`` (its descendants too) when given."""
        proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True,
                                preexec_fn=lambda: _child_setup(cpus), **kw)  # noqa: PLW1509 (no threads here)
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, proc: subprocess.Popen, timeout: float = 15.0) -> tuple[int | None, float]:
        """SIGTERM the process, wait, then SIGKILL its whole group (workers included)."""
        t0 = time.monotonic()
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        took = time.monotonic() - t0
        self.kill_group(proc)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode, took

    def kill_all(self) -> None:
        for proc in reversed(self.procs):
            self.kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self.kill_group(proc)  # workers left behind, if any
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()


def wait_healthy(url: str, proc: subprocess.Popen, log: Path | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited with {proc.returncode}\n{text}")
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    text = log.read_text(errors="replace") if log else ""
    raise RuntimeError(f"{url} did not answer within {timeout:g} s\n{text}")


@dataclass
class Pinning:
    """Which CPUs the server under test gets, and which the stub and the load generator get."""

    server: list[int] | None
    others: list[int] | None
    note: str

    @classmethod
    def plan(cls, workers: int, enabled: bool) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled:
            return cls(None, None, "none (--no-pin): every process on any CPU")
        if len(cpus) <= workers:
            return cls(None, None, f"none: {len(cpus)} usable CPU(s), not more than the server's "
                                   f"{workers} worker(s); every process on any CPU")
        server, others = cpus[-workers:], cpus[:-workers]
        return cls(server, others, f"server under test (its whole process tree) alone on CPU "
                                   f"{_cpu_list(server)}; stub and load generator on CPU {_cpu_list(others)}")


def _cpu_list(cpus: list[int]) -> str:
    return ",".join(map(str, cpus))


@dataclass
class Server:
    """A server under test: how to start it, its process, what was measured of it outside the cases."""

    name: str
    cmd: list[str]
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, children: Children, cpus: list[int] | None) -> None:
        with open(self.log, "wb") as out:
            self.proc = children.popen(self.cmd, cpus, stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_healthy(self.url("/health"), self.proc, self.log)
        lines = self.log.read_text(errors="replace").splitlines()
        self.info["banner"] = next((line for line in lines if "fastroute" in line), " ".join(self.cmd[2:]))

    def settle(self) -> None:
        """One request, a second's rest, then the idle memory reading."""
        req = urllib.request.Request(self.url(CHAT_PATH), data=request_body(False), method="POST",
                                     headers={"content-type": "application/json",
                                              "authorization": f"Bearer {CLIENT_KEY}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
        time.sleep(1.0)
        self.info["idle"] = tree_memory(self.pid)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, children: Children) -> None:
        if self.proc is not None:
            self.info["after"] = tree_memory(self.pid)
            self.info["returncode"], self.info["stop_s"] = children.stop(self.proc)


def governed(metrics_url: str) -> dict[str, float]:
    """What ``/metrics`` says the key was charged for: its tokens (every request's, if each was
    counted against it), its cost, the refusals (none expected), and all tokens for comparison."""
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()

    def total(metric: str, **labels: str) -> float:
        out = 0.0
        for found, value in re.findall(rf"^{metric}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
            have = dict(re.findall(r'(\w+)="([^"]*)"', found))
            if all(have.get(k) == v for k, v in labels.items()):
                out += float(value)
        return out

    return {"key_tokens_in": total("fastroute_key_tokens_total", key="bench", direction="in"),
            "tokens_in": total("fastroute_tokens_total", direction="in"),
            "cost_usd": total("fastroute_cost_usd_total", key="bench"),
            "refused": total("fastroute_rate_limited_total")}


def granian_cmd(target: str, port: int, workers: int) -> list[str]:
    """The ceiling apps under Granian with fastroute's settings (fastroute/server/runner.py)."""
    return [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--workers", str(workers),
            "--no-access-log", "--factory", "--host", "127.0.0.1", "--port", str(port),
            f"benchmarks.ceiling_app:{target}"]


def keyword_tags() -> dict[str, list[str]]:
    """KEYWORD_TAGS tags of three phrases each; one ("greeting") matches the benchmark's prompt."""
    tags = {"greeting": ["hello", "good morning", "hi there"]}
    for i in range(KEYWORD_TAGS - 1):
        tags[f"topic{i:02d}"] = [f"{word} {i}" for word in ("alpha", "stack trace", "how do i")]
    return tags


def governance_config() -> str:
    """``--governance``: the one key clients must send (by its digest), with every limit set and
    none ever reached, and a price for the stub's model, so each request is counted and priced."""
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    return f"""
[[keys]]
name = "bench"
key_sha256 = "{digest}"
rate_limit = {{ requests_per_minute = 1000000000, tokens_per_minute = 1000000000000 }}
budget = {{ usd = 1000000.0, period = "month" }}

[pricing."{MODEL}"]
prompt_cost_per_million = 2.5
completion_cost_per_million = 10.0
"""


def write_config(path: Path, tmp: Path, client: str, stub_port: int, workers: int, governance: bool = False) -> None:
    """fastroute as a user runs it: keyword classifier, request log, audit log, dashboard, metrics, one
    provider; ``governance``: a key with limits and a budget, and a price (:func:`governance_config`)."""
    tags = "\n".join(f"{name} = {json.dumps(phrases)}" for name, phrases in keyword_tags().items())
    path.write_text(f"""
[server]
upstream_client = "{client}"
workers = {workers}
dashboard = true
shutdown_grace_s = 5.0

[logging]
enabled = true
path = {json.dumps(str(tmp / f"{client}-requests.jsonl"))}

[storage]
path = {json.dumps(str(tmp / f"{client}-state.sqlite3"))}

[audit]
path = {json.dumps(str(tmp / f"{client}-audit.sqlite3"))}

[classifiers.keyword]
enabled = true

[classifiers.keyword.tags]
{tags}

[[providers]]
name = "stub"
format = "openai"
base_url = "http://127.0.0.1:{stub_port}/v1"

[[routers]]
type = "prefix"
model_prefix = "bench"
provider = "stub"
""" + (governance_config() if governance else ""))


def machine_info() -> dict[str, Any]:
    from importlib import metadata

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("fastroute", "granian", "blacksheep", "aiohttp", "httpx", "httptools", "uvloop", "orjson"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    info["versions"] = versions
    return info


# ── the run ───────────────────────────────────────────────────────────────

class Bench:
    """The whole run: the stub, each server in turn with its cases, and every figure."""

    def __init__(self, args: argparse.Namespace, children: Children, tmp: Path) -> None:
        self.children, self.tmp = children, tmp
        self.seconds = 2.0 if args.quick else args.seconds
        self.warmup = 0.5 if args.quick else args.warmup
        self.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
        self.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
        self.workers, self.direct = args.workers, args.direct
        self.governance = args.governance
        self.per_event = args.stub_writes == "event"
        self.pin = Pinning.plan(args.workers, not args.no_pin)
        self.settings = {"run": "quick" if args.quick else "full", "seconds": self.seconds, "warmup_s": self.warmup,
                         "concurrency": self.levels, "clients": self.clients, "workers": self.workers,
                         "stub_writes": args.stub_writes, "stream_tokens": STREAM_TOKENS,
                         "keyword_tags": KEYWORD_TAGS, "governance": self.governance, "pinning": self.pin.note}
        self.cases: list[dict[str, Any]] = []
        self.servers: dict[str, dict[str, Any]] = {}
        self.stub: subprocess.Popen | None = None
        self.stub_port = 0

    def planned_seconds(self) -> float:
        """A generous bound on the run's length: the stub's lifetime cap."""
        servers = 2 + len(self.clients) + (1 if self.direct else 0)
        return servers * (30 + 2 * len(self.levels) * (self.warmup + self.seconds + 5))

    def start_stub(self) -> None:
        self.stub_port = free_port()
        self.stub = self.children.popen(
            [sys.executable, str(HERE), "--_stub", str(self.stub_port), "1" if self.per_event else "0",
             str(self.planned_seconds() + 120), str(os.getpid())],
            self.pin.others, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy(f"http://127.0.0.1:{self.stub_port}/health", self.stub, None)

    def ceiling(self, name: str, target: str) -> Server:
        port = free_port()
        return Server(name, granian_cmd(target, port, self.workers), port, self.tmp / f"{target}.log")

    def fastroute(self, client: str) -> Server:
        conf, port = self.tmp / f"{client}.toml", free_port()
        write_config(conf, self.tmp, client, self.stub_port, self.workers, self.governance)
        cmd = [sys.executable, "-m", "fastroute", "serve", str(conf), "--port", str(port), "--workers", str(self.workers)]
        return Server(f"fastroute/{client}", cmd, port, self.tmp / f"{client}.log")

    def run(self) -> None:
        self.start_stub()
        self.bench(self.ceiling("ceiling", "blacksheep_app"), (False, True))
        self.bench(self.ceiling("bare-asgi", "bare_app"), (False,))
        for client in self.clients:
            self.bench(self.fastroute(client), (False, True))
        if self.direct:
            assert self.stub is not None
            for stream in (False, True):
                for conc in self.levels:
                    self.case("stub (direct)", self.stub_port, self.stub.pid, stream, conc)

    def bench(self, server: Server, modes: tuple[bool, ...]) -> None:
        """Start a server, read its idle memory, run its cases, read its memory again, stop it."""
        self.servers[server.name] = server.info
        try:
            server.start(self.children, self.pin.server)
            server.info["processes"] = len(tree_pids(server.pid))
            print(f"[{server.name}] pid {server.pid}, {server.info['processes']} processes; "
                  f"{server.info['banner']}", file=sys.stderr)
            server.settle()
            for stream in modes:
                for conc in self.levels:
                    self.case(server.name, server.port, server.pid, stream, conc)
            if self.governance and server.name.startswith("fastroute/"):
                server.info["governance"] = governed(server.url("/metrics"))
        finally:
            server.stop(self.children)

    def case(self, name: str, port: int, pid: int, stream: bool, conc: int) -> None:
        assert self.stub is not None
        spec = {"host": "127.0.0.1", "port": port, "stream": stream, "concurrency": conc,
                "warmup_s": self.warmup, "seconds": self.seconds, "watch": {"server": pid, "stub": self.stub.pid}}
        result = per_request(run_load(self.children, spec, self.pin.others), self.pin)
        case = {"server": name, "mode": "stream" if stream else "json", "concurrency": conc, **result}
        self.cases.append(case)
        print(f"[{name}] {case['mode']} c={conc}: {case['rps']:.0f} req/s, p50 {case['p50_ms']:.3f} ms, "
              f"server {case['server_cpu_us']:.0f} us/req, load generator {case['loadgen_cpu_us']:.0f} us/req, "
              f"{case['errors']} errors", file=sys.stderr)

    def find(self, server: str, mode: str, conc: int) -> dict[str, Any] | None:
        return next((c for c in self.cases if (c["server"], c["mode"], c["concurrency"]) == (server, mode, conc)),
                    None)

    def targets(self) -> list[dict[str, Any]]:
        """The performance issue's targets, each with its measured value, whether it is met, and
        whether a case it is computed from had other work on the server's CPU (``noisy``)."""
        out: list[dict[str, Any]] = []
        ceiling = {conc: self.find("ceiling", "json", conc) for conc in (1, 16)}
        ceiling_stream = self.find("ceiling", "stream", 16)
        ceil_mem = self.servers.get("ceiling", {}).get("idle")
        for client in self.clients:
            name = f"fastroute/{client}"
            rows = [
                ("JSON c=16 req/s / ceiling JSON c=16 req/s", self.find(name, "json", 16), ceiling[16],
                 lambda a, b: a["rps"] / b["rps"], ">= 0.6", lambda v: v >= 0.6, "x"),
                ("JSON c=1 p50 - ceiling JSON c=1 p50", self.find(name, "json", 1), ceiling[1],
                 lambda a, b: a["p50_ms"] - b["p50_ms"], "<= 0.15 ms", lambda v: v <= 0.15, " ms"),
                ("stream c=16 req/s / ceiling JSON c=16 req/s", self.find(name, "stream", 16), ceiling[16],
                 lambda a, b: a["rps"] / b["rps"], ">= 0.5", lambda v: v >= 0.5, "x"),
                ("stream c=16 req/s / ceiling stream c=16 req/s", self.find(name, "stream", 16), ceiling_stream,
                 lambda a, b: a["rps"] / b["rps"], None, None, "x"),
            ]
            mem = self.servers.get(name, {}).get("idle")
            if mem:
                rows.append((f"idle RSS, its worker (tree {mem['tree_rss_mb']:.1f} MB)", mem, mem,
                             lambda a, _: a["worker_rss_mb"], "<= 60 MB", lambda v: v <= 60, " MB"))
            if mem and ceil_mem:
                limit = ceil_mem["tree_rss_mb"] + 15
                rows.append((f"idle RSS, whole tree (ceiling's {ceil_mem['tree_rss_mb']:.1f} MB)", mem, ceil_mem,
                             lambda a, _: a["tree_rss_mb"], f"<= {limit:.1f} MB (ceiling + 15)",
                             lambda v, limit=limit: v <= limit, " MB"))
            for what, mine, ref, measure, goal, test, unit in rows:
                value = measure(mine, ref) if mine and ref else None
                noisy = any(is_noisy(c) for c in (mine, ref) if c)
                out.append({"target": f"{name} {what}", "value": value, "unit": unit, "goal": goal,
                            "met": None if value is None or test is None else test(value), "noisy": noisy})
        return out


def per_request(r: dict[str, Any], pin: Pinning) -> dict[str, Any]:
    """The load generator's raw readings turned into rates: req/s, CPU us per answered request, and
    when pinned, how much of each side's CPUs other work took (``foreign``: the server's CPUs busy
    with anything but the server; ``load_foreign``: the others, with anything but the load
    generator and the stub), which makes the case's figures unreliable; and ``load_busy``."""
    us = 1e6 / max(1, r["answered"])
    out = {**r, "rps": r["requests"] / r["elapsed_s"], "server_cpu_us": r["server_cpu_s"] * us,
           "server_main_us": r["server_main_s"] * us, "stub_cpu_us": r["stub_cpu_s"] * us,
           "loadgen_cpu_us": r["loadgen_cpu_s"] * us, "foreign": None, "load_foreign": None, "load_busy": None}
    if pin.server and pin.others:
        def share(cpus: list[int]) -> tuple[float, float]:
            return (sum(r["cpu_busy_s"].get(str(n), 0.0) for n in cpus),
                    sum(r["cpu_total_s"].get(str(n), 0.0) for n in cpus) or float("nan"))
        (busy, total), (load_busy, load_total) = share(pin.server), share(pin.others)
        ours = r["loadgen_cpu_s"] + r["stub_cpu_s"]
        out["foreign"] = max(0.0, busy - r["server_cpu_s"]) / total
        out["load_foreign"] = max(0.0, load_busy - ours) / load_total
        out["load_busy"] = load_busy / load_total
    return out


def is_noisy(case: dict[str, Any]) -> bool:
    return (case.get("foreign") or 0) > NOISY or (case.get("load_foreign") or 0) > NOISY


def run_load(children: Children, spec: dict[str, Any], cpus: list[int] | None) -> dict[str, Any]:
    proc = children.popen([sys.executable, str(HERE), "--_load", json.dumps(spec)], cpus,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=spec["warmup_s"] + spec["seconds"] + 60)
    except subprocess.TimeoutExpired:
        children.stop(proc, 1)
        raise RuntimeError(f"the load generator did not finish: {spec}") from None
    children.stop(proc, 1)
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}):\n{err}")
    return json.loads(out)


# ── the report ────────────────────────────────────────────────────────────

def _f(v: float | None, width: int, prec: int) -> str:
    return f"{'-':>{width}}" if v is None or math.isnan(v) else f"{v:>{width}.{prec}f}"


def _pct(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.0%}"


def print_header(info: dict[str, Any], bench: Bench) -> None:
    s = bench.settings
    print(f"\nfastroute against the stack's ceiling ({s['run']} run, {s['seconds']:g} s a case after "
          f"{s['warmup_s']:g} s warm-up, {bench.workers} worker(s))")
    print(f"  machine: {info.get('cpu_model', '?')}, {info['cpu_count']} CPUs ({info['cpus_usable']} usable), "
          f"{info['python']}, load avg before {' '.join(f'{x:.2f}' for x in info['loadavg'] or ())}")
    v = info["versions"]
    print("  " + ", ".join(f"{k} {v[k]}" for k in v if v[k]))
    print(f"  pinning: {bench.pin.note}")
    for name, srv in bench.servers.items():
        print(f"  [{name}] {srv.get('processes', '?')} processes: {srv.get('banner', '?')}")
    print(f"  stub stream: {STREAM_TOKENS} content chunks + usage + [DONE], "
          f"{'one write per event' if bench.per_event else 'one write'}; fastroute: {KEYWORD_TAGS}-tag keyword "
          f"classifier, JSONL request log, SQLite audit log, dashboard, metrics")
    if bench.governance:
        print("  governance (--governance): every request sends the key 'bench' ([[keys]] by digest), admitted "
              "under a rate limit and a monthly budget it never reaches (counted in limits.shm), priced by [pricing]")


def print_cases(cases: list[dict[str, Any]]) -> None:
    print("\n  cpu = the server's CPU us per request (its whole process tree); py = its processes' main threads")
    print("  (Python); loadgen = the load generator's own CPU us per request; latency in ms; other = how")
    print("  much of the server's CPU / of the load side's CPU other work on the machine took in the window")
    header = (f"  {'server':<17} {'mode':<6} {'c':>3} | {'req/s':>7} {'p50':>7} {'p99':>7} {'ttfb50':>7} | "
              f"{'cpu':>5} {'py':>5} {'loadgen':>7} | {'other':>9} {'errors':>6}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for c in cases:
        ttfb = c["ttfb_p50_ms"] if c["mode"] == "stream" else None
        print(f"  {c['server']:<17} {c['mode']:<6} {c['concurrency']:>3} | {c['rps']:>7.0f} {_f(c['p50_ms'], 7, 3)} "
              f"{_f(c['p99_ms'], 7, 3)} {_f(ttfb, 7, 3)} | {_f(c['server_cpu_us'], 5, 0)} "
              f"{_f(c['server_main_us'], 5, 0)} {_f(c['loadgen_cpu_us'], 7, 0)} | {_pct(c['foreign']) + '/' + _pct(c['load_foreign']):>9} "
              f"{c['errors']:>6}")


def print_memory(servers: dict[str, dict[str, Any]]) -> None:
    print("\n  memory, MB (RSS summed over the process tree, PSS likewise, the largest worker's RSS):")
    print(f"  {'server':<17} | {'idle: tree RSS':>14} {'PSS':>6} {'worker':>6} | {'after load: tree RSS':>20} "
          f"{'PSS':>6} {'worker':>6}")
    for name, srv in servers.items():
        idle, after = srv.get("idle"), srv.get("after")
        if not idle:
            continue
        row = f"  {name:<17} | {idle['tree_rss_mb']:>14.1f} {_f(idle['tree_pss_mb'], 6, 1)} {idle['worker_rss_mb']:>6.1f}"
        if after:
            row += f" | {after['tree_rss_mb']:>20.1f} {_f(after['tree_pss_mb'], 6, 1)} {after['worker_rss_mb']:>6.1f}"
        print(row)


def print_targets(targets: list[dict[str, Any]]) -> None:
    print("\n  targets (from this run):")
    for t in targets:
        verdict = "n/a (not measured)" if t["met"] is None else "met" if t["met"] else "NOT met"
        goal = f"(target {t['goal']}): {verdict}" if t["goal"] else "(context: no target)"
        value = "-" if t["value"] is None else f"{t['value']:.3f}{t['unit']}" if t["unit"] != " MB" \
            else f"{t['value']:.1f} MB"
        noisy = "  [noisy: other work on the machine]" if t["noisy"] else ""
        print(f"  {t['target']:<70} {value:>10}  {goal}{noisy}")


def print_checks(bench: Bench) -> None:
    for name, srv in bench.servers.items():
        if "stop_s" in srv:
            print(f"  [{name}] SIGTERM -> exit {srv['returncode']} in {srv['stop_s']:.2f} s")
        g = srv.get("governance")
        if g:
            every = g["key_tokens_in"] == g["tokens_in"] > 0 and not g["refused"]
            print(f"  [{name}] governance: key 'bench' charged {g['key_tokens_in']:.0f} input tokens of "
                  f"{g['tokens_in']:.0f}, ${g['cost_usd']:.6f}, {g['refused']:.0f} refused"
                  + ("" if every and g["cost_usd"] > 0 else "  WARNING: not every request was governed"))
    shares = [c["loadgen_cpu_us"] / c["server_cpu_us"] for c in bench.cases if c["server_cpu_us"] > 0]
    if shares:
        lg = [c["loadgen_cpu_us"] for c in bench.cases]
        print(f"  load generator CPU per request: {min(lg):.0f}-{max(lg):.0f} us, at most {max(shares):.0%} of "
              f"the server's")
    if bench.pin.others and bench.cases:
        busy = max(c["load_busy"] for c in bench.cases)
        print(f"  CPU {_cpu_list(bench.pin.others)} (load generator, stub, anything else) at most {busy:.0%} busy")
        if bench.direct:
            print(f"  stub (direct): the stub ran on CPU {_cpu_list(bench.pin.others)} with the load generator")
    noisy = [c for c in bench.cases if is_noisy(c)]
    if noisy:
        print(f"  WARNING other work on the machine took over {NOISY:.0%} of the server's or the load side's CPU "
              f"in {len(noisy)} case(s): their figures are noisy")
    for c in bench.cases:
        if c["errors"]:
            print(f"  WARNING {c['server']} {c['mode']} c={c['concurrency']}: {c['errors']} errors "
                  f"{c['error_samples'][:2]}")


def print_report(info: dict[str, Any], bench: Bench, targets: list[dict[str, Any]]) -> None:
    print_header(info, bench)
    print_cases(bench.cases)
    print_memory(bench.servers)
    print_targets(targets)
    print()
    print_checks(bench)


# ── main ──────────────────────────────────────────────────────────────────

def _raise_exit(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per case (default 10)")
    ap.add_argument("--warmup", type=float, default=1.0, help="discarded warm-up seconds before each case")
    ap.add_argument("--quick", action="store_true", help="2 s a case after 0.5 s warm-up: the whole run in < 1 min")
    ap.add_argument("--clients", default="lean", help=f"fastroute upstream clients to measure, of {','.join(CLIENTS)}")
    ap.add_argument("--concurrency", default="1,16", help="concurrency levels (comma-separated)")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (fastroute and the ceiling)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the server and the load to separate CPUs")
    ap.add_argument("--direct", action="store_true", help="also load the stub directly, for context")
    ap.add_argument("--governance", action="store_true",
                    help="fastroute with a client key ([[keys]]) with a rate limit and a budget, and [pricing]")
    ap.add_argument("--stub-writes", choices=("event", "one"), default="event",
                    help="the stub sends a stream one write per event (like an LLM) or in one write")
    ap.add_argument("--json", metavar="PATH", help="write every figure here")
    ap.add_argument("--_stub", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--_load", help=argparse.SUPPRESS)
    args = ap.parse_args()
    unknown = set(args.clients.split(",")) - set(CLIENTS)
    if unknown:
        ap.error(f"unknown client(s): {', '.join(sorted(unknown))}")
    return args


def main() -> int:
    args = parse_args()
    if args._stub:
        port, per_event, lifetime, parent = args._stub
        stub_main(int(port), per_event == "1", float(lifetime), int(parent))
        return 0
    if args._load:
        load_main(json.loads(args._load))
        return 0

    info = machine_info()
    started = time.monotonic()
    children = Children()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="fastroute-e2e-") as tmp:
        bench = Bench(args, children, Path(tmp))
        try:
            bench.run()
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping every child process", file=sys.stderr)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            children.kill_all()

    targets = bench.targets()
    if bench.cases:
        print_report(info, bench, targets)
    wall = time.monotonic() - started
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "settings": bench.settings, "servers": bench.servers,
                                               "cases": bench.cases, "targets": targets, "wall_s": wall}, indent=1))
    print(f"\n(wall time {wall:.0f} s)")
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
