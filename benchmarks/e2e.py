"""End to end: what fastroute adds over calling the upstream directly, in the same run.

    python benchmarks/e2e.py [--requests N] [--quick] [--json out.json]

Three kinds of process, all on 127.0.0.1, all in their own process groups:

- a zero-latency OpenAI upstream stub (raw ``asyncio.Protocol`` HTTP/1.1 on
  uvloop, keep-alive; a fixed ``chat.completion`` for JSON calls, and for
  ``"stream": true`` ten ``chat.completion.chunk`` events, a usage chunk and
  ``data: [DONE]``, chunked, one write per event like a real upstream);
- for each upstream client fastroute can use (aiohttp, httpx), a real
  ``python -m fastroute serve`` routing to the stub, stopped with SIGTERM;
- a load generator (aiohttp client, keep-alive), a fresh process per case, that
  sends the same requests to the stub directly and then through fastroute, at
  concurrency 1 and 32, non-streamed and streamed, after a discarded warm-up.

Reported per upstream client x mode x concurrency: latency p50/p99 direct and
through fastroute, the latency fastroute adds, requests per second both ways,
and fastroute's CPU time per request (utime + stime of the fastroute process
tree from /proc, read by the load generator around the measured requests only):
on a small, noisy machine that is the steadiest figure.  For streams the time
to the first body byte is reported too.

Every child is killed on exit, on an error and on Ctrl-C; children also die if
this script is killed outright (``PR_SET_PDEATHSIG``), and the stub stops by
itself after ``--max-seconds`` plus a margin.  Python >= 3.11, Linux (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
MODEL = "bench-model"
CLIENTS = ("lean", "aiohttp", "httpx")

# ── the zero-latency upstream ─────────────────────────────────────────────

def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


COMPLETION = _dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the stub."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
})
STREAM_TOKENS = 10


def stream_events() -> list[bytes]:
    """The SSE events of the stub's stream: STREAM_TOKENS chunks, a usage chunk, [DONE]."""
    events = []
    for i in range(STREAM_TOKENS):
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": f" tok{i}"} if i == 0
                              else {"content": f" tok{i}"}, "logprobs": None,
                              "finish_reason": "stop" if i == STREAM_TOKENS - 1 else None}]}
        events.append(b"data: " + _dumps(chunk) + b"\n\n")
    usage = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
             "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": STREAM_TOKENS,
                                      "total_tokens": 9 + STREAM_TOKENS}}
    events.append(b"data: " + _dumps(usage) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def stub_writes(per_event: bool) -> tuple[bytes, list[bytes]]:
    """(the JSON answer, the stream answer as a list of transport writes)."""
    json_answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                   % len(COMPLETION)) + COMPLETION
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n" \
           b"transfer-encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in stream_events()]
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


def stub_main(port: int, per_event: bool, lifetime_s: float, parent: int) -> None:
    json_answer, stream_answer = stub_writes(per_event)

    class Stub(asyncio.Protocol):
        __slots__ = ("t", "buf")

        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.buf = bytearray()
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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

    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
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


# ── CPU time from /proc ───────────────────────────────────────────────────

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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
        fields = raw[raw.rindex(b")") + 2:].split()
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    return table


def tree_pids(pid: int, table: dict[int, tuple[int, float]] | None = None) -> list[int]:
    table = _proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in table:
            out.append(p)
        todo.extend(children.get(p, ()))
    return out


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (granian's workers are child processes)."""
    table = _proc_table()
    return sum(table[p][1] for p in tree_pids(pid, table))


# ── the load generator (its own process) ──────────────────────────────────

def _request_body(stream: bool) -> bytes:
    return _dumps({"model": MODEL, "messages": [{"role": "system", "content": "You are terse."},
                                                 {"role": "user", "content": "Say hello."}],
                   "max_tokens": 16, "stream": stream})


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    import resource

    import aiohttp

    url, stream, conc = spec["url"], spec["stream"], spec["concurrency"]
    body = _request_body(stream)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    watch: dict[str, int] = spec.get("watch", {})
    latencies: list[float] = []
    ttfbs: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + spec["cap_s"]
    perf = time.perf_counter

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:

        async def one(record: bool) -> None:
            t0 = perf()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    first = await resp.content.readany()
                    t1 = perf()
                    rest = await resp.content.read()
                    t2 = perf()
                    status = resp.status
            except Exception as exc:  # counted, not fatal: the report says how many
                if len(errors) < 1000:
                    errors.append(f"{type(exc).__name__}: {exc}")
                return
            full = first + rest
            if status != 200:
                ok = False
            elif stream:
                ok = full.endswith(b"data: [DONE]\n\n") and full.count(b"chat.completion.chunk") >= STREAM_TOKENS
            else:
                ok = b'"chat.completion"' in full
            if not ok:
                errors.append(f"HTTP {status}: {full[:200]!r}")
                return
            if record:
                ttfbs.append(t1 - t0)
                latencies.append(t2 - t0)

        async def phase(n: int, record: bool) -> int:
            remaining = n

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0 and perf() < deadline:
                    remaining -= 1
                    await one(record)

            await asyncio.gather(*(worker() for _ in range(conc)))
            return n - remaining

        warmed = await phase(spec["warmup"], False)
        await asyncio.sleep(0.05)  # let the servers settle before the CPU reading
        cpu0 = {name: tree_cpu_seconds(pid) for name, pid in watch.items()}
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        start = perf()
        sent = await phase(spec["count"], True)
        elapsed = perf() - start
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(0.05)  # the servers' last bookkeeping after the last answer
        cpu1 = {name: tree_cpu_seconds(pid) for name, pid in watch.items()}
    return {
        "latencies": latencies, "ttfbs": ttfbs, "elapsed": elapsed, "sent": sent, "warmup": warmed,
        "errors": len(errors), "error_samples": sorted(set(errors))[:5],
        "capped": perf() >= deadline,
        "cpu_s": {name: cpu1[name] - cpu0[name] for name in watch},
        "loadgen_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
    }


def load_main(spec: dict[str, Any]) -> None:
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(_load(spec))
    finally:
        loop.close()
    sys.stdout.write(json.dumps(result))


# ── the conductor ─────────────────────────────────────────────────────────

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the conductor dies, whatever kills it (Linux)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Children:
    """Every child process, each in its own process group, all killed by :meth:`kill_all`."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, preexec_fn=_die_with_parent, **kw)
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
    import urllib.error
    import urllib.request

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


def run_load(children: Children, spec: dict[str, Any]) -> dict[str, Any]:
    proc = children.popen([sys.executable, str(HERE), "--_load", json.dumps(spec)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=spec["cap_s"] + 60)
    except subprocess.TimeoutExpired:
        children.stop(proc, 1)
        raise RuntimeError(f"the load generator did not finish: {spec}") from None
    children.stop(proc, 1)
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}):\n{err}")
    return json.loads(out)


def pct_ms(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in ms."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))
    return ordered[k] * 1000.0


def summarize(r: dict[str, Any], server: str | None) -> dict[str, Any]:
    n = len(r["latencies"])
    s = {
        "requests": n, "warmup": r["warmup"], "errors": r["errors"], "capped": r["capped"],
        "elapsed_s": r["elapsed"], "rps": n / r["elapsed"] if r["elapsed"] > 0 else float("nan"),
        "p50_ms": pct_ms(r["latencies"], 0.50), "p99_ms": pct_ms(r["latencies"], 0.99),
        "ttfb_p50_ms": pct_ms(r["ttfbs"], 0.50), "ttfb_p99_ms": pct_ms(r["ttfbs"], 0.99),
        "loadgen_cpu_ms_per_req": r["loadgen_cpu_s"] * 1000.0 / max(1, r["sent"]),
        "stub_cpu_ms_per_req": r["cpu_s"].get("stub", float("nan")) * 1000.0 / max(1, r["sent"]),
        "error_samples": r["error_samples"],
    }
    if server:
        s["server_cpu_ms_per_req"] = r["cpu_s"][server] * 1000.0 / max(1, r["sent"])
    return s


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
    for dist in ("fastroute", "granian", "blacksheep", "aiohttp", "httpx", "uvloop", "orjson"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    info["versions"] = versions
    return info


def write_config(path: Path, client: str, stub_port: int) -> None:
    path.write_text(f"""
[server]
upstream_client = "{client}"
workers = 1
shutdown_grace_s = 5.0

[[providers]]
name = "stub"
format = "openai"
base_url = "http://127.0.0.1:{stub_port}/v1"

[[routers]]
type = "prefix"
model_prefix = "bench"
provider = "stub"
""")


def _fmt(v: float, width: int = 7, prec: int = 3) -> str:
    return f"{v:>{width}.{prec}f}" if v == v else f"{'-':>{width}}"


def print_report(info: dict[str, Any], settings: dict[str, Any], cases: list[dict[str, Any]],
                 servers: dict[str, dict[str, Any]]) -> None:
    print()
    print(f"fastroute end-to-end ({settings['run']} run): {info['python']}, {info['cpu_count']} CPUs "
          f"({info['cpus_usable']} usable), {info.get('cpu_model', '?')}, load avg before "
          f"{' '.join(f'{x:.2f}' for x in info['loadavg'] or ())}")
    v = info["versions"]
    print("  " + ", ".join(f"{k} {v[k]}" for k in v if v[k]))
    for client, s in servers.items():
        print(f"  [{client}] {s.get('banner', '?')}")
    print(f"  requests per case: {settings['n1']} at c=1, {settings['n32']} at c=32 (after {settings['warmup']} "
          f"warm-up); stub stream: {STREAM_TOKENS} events + usage + [DONE], "
          f"{'one write per event' if settings['per_event'] else 'one write'}")
    print("  latency in ms (p50/p99); added = through - direct; ratio = rps through / rps direct;")
    print("  cpu = fastroute's CPU ms per request (all its processes), stub = the stub's, same requests")
    print()
    header = (f"{'client':<7} {'mode':<6} {'c':>2} {'metric':<6} | {'direct p50/p99':>15} | "
              f"{'through p50/p99':>15} | {'ADDED p50/p99':>15} | {'rps dir':>7} {'rps thru':>8} {'ratio':>5} | "
              f"{'cpu/req':>7} {'stub':>5} {'err':>3}")
    print(header)
    print("-" * len(header))
    last_client = None
    for c in cases:
        if last_client is not None and c["client"] != last_client:
            print("-" * len(header))
        last_client = c["client"]
        d, t = c["direct"], c["through"]
        metrics = [("ttfb", "ttfb_"), ("total", "")] if c["stream"] else [("total", "")]
        for metric, key in metrics:
            dp50, dp99 = d[f"{key}p50_ms"], d[f"{key}p99_ms"]
            tp50, tp99 = t[f"{key}p50_ms"], t[f"{key}p99_ms"]
            tail = ""
            if metric == "total":
                ratio = t["rps"] / d["rps"] if d["rps"] else float("nan")
                tail = (f"{d['rps']:>7.0f} {t['rps']:>8.0f} {ratio:>5.2f} | "
                        f"{_fmt(t['server_cpu_ms_per_req'])} {_fmt(t['stub_cpu_ms_per_req'], 5, 3)} "
                        f"{d['errors'] + t['errors']:>3}")
            else:
                tail = f"{'':>7} {'':>8} {'':>5} | {'':>7} {'':>5} {'':>3}"
            print(f"{c['client']:<7} {'stream' if c['stream'] else 'json':<6} {c['concurrency']:>2} {metric:<6} | "
                  f"{_fmt(dp50)}/{_fmt(dp99, 7)} | {_fmt(tp50)}/{_fmt(tp99, 7)} | "
                  f"{_fmt(tp50 - dp50)}/{_fmt(tp99 - dp99, 7)} | {tail}")
    print()
    for client, s in servers.items():
        if "stop_s" in s:
            print(f"  [{client}] SIGTERM -> exit {s['returncode']} in {s['stop_s']:.2f} s")
    lg = [c["through"]["loadgen_cpu_ms_per_req"] for c in cases]
    if lg:
        print(f"  load generator CPU per request: {min(lg):.3f}-{max(lg):.3f} ms")
    for c in cases:
        for side in ("direct", "through"):
            s = c[side]
            if s["errors"] or s["capped"]:
                print(f"  WARNING {c['client']} {'stream' if c['stream'] else 'json'} c={c['concurrency']} {side}: "
                      f"{s['errors']} errors{' (time cap hit)' if s['capped'] else ''} {s['error_samples'][:2]}")


def _raise_exit(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000,
                    help="measured requests per case at concurrency 32 (a quarter of it at concurrency 1)")
    ap.add_argument("--warmup", type=int, default=200, help="discarded requests before each case")
    ap.add_argument("--quick", action="store_true", help="few requests: a smoke run (seconds)")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="upstream clients to measure (comma-separated)")
    ap.add_argument("--concurrency", default="1,32", help="concurrency levels (comma-separated)")
    ap.add_argument("--stub-writes", choices=("event", "one"), default="event",
                    help="the stub sends a stream one write per event (like an LLM) or in one write")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="overall time cap; cases not started by then are skipped (default 280, quick 90)")
    ap.add_argument("--json", metavar="PATH", help="write the raw figures (and every latency) here")
    ap.add_argument("--_stub", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--_load", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._stub:
        port, per_event, lifetime, parent = args._stub
        stub_main(int(port), per_event == "1", float(lifetime), int(parent))
        return 0
    if args._load:
        load_main(json.loads(args._load))
        return 0

    n32 = 200 if args.quick else args.requests
    n1 = 50 if args.quick else max(1, args.requests // 4)
    warm = min(args.warmup, 50) if args.quick else args.warmup
    cap_total = args.max_seconds or (90.0 if args.quick else 280.0)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    settings = {"run": "quick" if args.quick else "full", "n1": n1, "n32": n32, "warmup": warm,
                "per_event": args.stub_writes == "event", "max_seconds": cap_total, "clients": clients,
                "concurrency": levels}
    info = machine_info()
    started = time.monotonic()
    children = Children()
    cases: list[dict[str, Any]] = []
    servers: dict[str, dict[str, Any]] = {}
    raw: list[dict[str, Any]] = []
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="fastroute-e2e-") as tmp_name:
            tmp = Path(tmp_name)
            stub_port = free_port()
            stub = children.popen([sys.executable, str(HERE), "--_stub", str(stub_port),
                                   "1" if settings["per_event"] else "0", str(cap_total + 120), str(os.getpid())],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_healthy(f"http://127.0.0.1:{stub_port}/health", stub, None)
            direct_url = f"http://127.0.0.1:{stub_port}/v1/chat/completions"
            for client in clients:
                if time.monotonic() - started > cap_total:
                    print(f"time cap reached: {client} skipped", file=sys.stderr)
                    break
                port = free_port()
                conf = tmp / f"{client}.toml"
                write_config(conf, client, stub_port)
                log = tmp / f"{client}.log"
                with open(log, "wb") as log_file:
                    router = children.popen(
                        [sys.executable, "-m", "fastroute", "serve", str(conf), "--port", str(port)],
                        stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                wait_healthy(f"http://127.0.0.1:{port}/health", router, log)
                text = log.read_text(errors="replace")
                servers[client] = {"banner": text.splitlines()[0] if text else "",
                                   "processes": len(tree_pids(router.pid))}
                through_url = f"http://127.0.0.1:{port}/v1/chat/completions"
                print(f"[{client}] fastroute pid {router.pid}, {servers[client]['processes']} processes; "
                      f"{servers[client]['banner']}", file=sys.stderr)
                try:
                    for stream in (False, True):
                        for conc in levels:
                            left = cap_total - (time.monotonic() - started)
                            if left < 5:
                                print("time cap reached: remaining cases skipped", file=sys.stderr)
                                break
                            count = n1 if conc == 1 else n32
                            base = {"stream": stream, "concurrency": conc, "count": count, "warmup": warm,
                                    "cap_s": max(5.0, min(120.0, left / 2))}
                            d = run_load(children, {**base, "url": direct_url, "watch": {"stub": stub.pid}})
                            t = run_load(children, {**base, "url": through_url,
                                                    "watch": {"stub": stub.pid, "fastroute": router.pid}})
                            case = {"client": client, "stream": stream, "concurrency": conc,
                                    "direct": summarize(d, None), "through": summarize(t, "fastroute")}
                            case["added_p50_ms"] = case["through"]["p50_ms"] - case["direct"]["p50_ms"]
                            case["added_p99_ms"] = case["through"]["p99_ms"] - case["direct"]["p99_ms"]
                            cases.append(case)
                            raw.append({"client": client, "stream": stream, "concurrency": conc,
                                        "direct_latencies_ms": [round(x * 1000, 4) for x in d["latencies"]],
                                        "direct_ttfb_ms": [round(x * 1000, 4) for x in d["ttfbs"]],
                                        "through_latencies_ms": [round(x * 1000, 4) for x in t["latencies"]],
                                        "through_ttfb_ms": [round(x * 1000, 4) for x in t["ttfbs"]]})
                            print(f"[{client}] {'stream' if stream else 'json'} c={conc}: direct p50 "
                                  f"{case['direct']['p50_ms']:.3f} ms, through p50 {case['through']['p50_ms']:.3f} ms, "
                                  f"cpu {case['through']['server_cpu_ms_per_req']:.3f} ms/req", file=sys.stderr)
                finally:
                    code, took = children.stop(router)
                    servers[client].update(returncode=code, stop_s=took)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping every child process", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        children.kill_all()

    if cases:
        print_report(info, settings, cases, servers)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "settings": settings, "servers": servers,
                                               "cases": cases, "raw": raw,
                                               "wall_s": time.monotonic() - started}, indent=1))
    print(f"\n(wall time {time.monotonic() - started:.0f} s)")
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
