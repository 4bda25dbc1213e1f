"""End to end: what fastroute adds over calling the upstream directly, in the same run.

    python benchmarks/e2e.py [--quick] [--json out.json]

Starts a zero-latency OpenAI-dialect upstream stub (raw asyncio on uvloop, its
own process), then, for each upstream client fastroute can use (aiohttp, httpx),
a real ``fastroute serve`` process routing to it.  A load generator in another
process sends the same requests to the stub directly and through fastroute, at
concurrency 1 and 32, non-streamed and streamed, and reports latency p50/p99,
the latency fastroute adds, requests per second, and fastroute's CPU time per
request (from /proc, the steadiest figure on a shared machine).  Everything
runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ── the zero-latency upstream ─────────────────────────────────────────────

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the stub."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
}, separators=(",", ":")).encode()


def _stream_body() -> bytes:
    events = []
    for i in range(10):
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench",
                 "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "logprobs": None, "finish_reason": None}]}
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    events.append(b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",'
                  b'"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":10,"total_tokens":19}}\n\n')
    events.append(b"data: [DONE]\n\n")
    # chunked transfer encoding, one HTTP chunk per event, like a real upstream
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def run_stub(port: int) -> None:
    json_response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                     % len(COMPLETION)) + COMPLETION
    stream_response = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                       + _stream_body())

    class Stub(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.buf = b""
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                head_end = self.buf.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                head = self.buf[:head_end].lower()
                length = 0
                i = head.find(b"content-length:")
                if i >= 0:
                    length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
                total = head_end + 4 + length
                if len(self.buf) < total:
                    return
                body = self.buf[head_end + 4:total]
                self.buf = self.buf[total:]
                if head.startswith(b"get /health"):
                    self.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                elif b'"stream":true' in body.replace(b" ", b""):
                    self.t.write(stream_response)
                else:
                    self.t.write(json_response)

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(Stub, "127.0.0.1", port, backlog=1024))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    server.close()


# ── the load generator ────────────────────────────────────────────────────

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello."}]}


async def _load(url: str, stream: bool, concurrency: int, count: int, warmup: int, cap_s: float) -> dict:
    import aiohttp

    body = json.dumps({**BODY, "stream": stream}).encode()
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    ttfbs: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(record: bool) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                first = await resp.content.readany()
                t1 = time.perf_counter()
                rest = await resp.read() if not resp.content.at_eof() else b""
                t2 = time.perf_counter()
                if resp.status != 200 or (stream and not (first + rest).endswith(b"[DONE]\n\n")):
                    errors += 1
            if record:
                ttfbs.append(t1 - t0)
                latencies.append(t2 - t0)

        async def worker(n: int, record: bool, deadline: float) -> None:
            for _ in range(n):
                if time.perf_counter() > deadline:
                    return
                await one(record)

        deadline = time.perf_counter() + cap_s
        await asyncio.gather(*(worker(warmup // concurrency + 1, False, deadline) for _ in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(count // concurrency, True, deadline) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"latencies": latencies, "ttfbs": ttfbs, "elapsed": elapsed, "errors": errors}


def run_load(args: list[str]) -> None:
    url, stream, concurrency, count, warmup, cap = args
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_load(url, stream == "1", int(concurrency), int(count), int(warmup), float(cap)))
    print(json.dumps(result))


# ── the conductor ─────────────────────────────────────────────────────────

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        ppid = int(fields[1])
        children.setdefault(ppid, []).append(int(entry))
        stats[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def load(url: str, stream: bool, concurrency: int, count: int, warmup: int, cap: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--load", url, "1" if stream else "0", str(concurrency),
                          str(count), str(warmup), str(cap)], capture_output=True, text=True, timeout=cap + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--stub":
        run_stub(int(sys.argv[2]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        run_load(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few requests: a smoke run")
    ap.add_argument("--requests", type=int, default=2000, help="requests per case at concurrency 32")
    ap.add_argument("--clients", default="aiohttp,httpx", help="upstream clients to measure")
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()
    n32 = 200 if args.quick else args.requests
    n1 = max(50, n32 // 4)
    warm = 50 if args.quick else 300
    cap = 120.0

    procs: list[subprocess.Popen] = []
    rows: list[dict] = []
    try:
        stub_port = free_port()
        stub = start([sys.executable, __file__, "--stub", str(stub_port)])
        procs.append(stub)
        wait_healthy(f"http://127.0.0.1:{stub_port}/health", stub)
        direct_url = f"http://127.0.0.1:{stub_port}/v1/chat/completions"
        with tempfile.TemporaryDirectory() as tmp:
            for client in args.clients.split(","):
                port = free_port()
                conf = Path(tmp) / f"{client}.toml"
                conf.write_text(f'[server]\nupstream_client = "{client}"\n'
                                f'[[providers]]\nname = "stub"\nformat = "openai"\n'
                                f'base_url = "http://127.0.0.1:{stub_port}/v1"\n'
                                f'[[routers]]\ntype = "prefix"\nmodel_prefix = ""\nprovider = "stub"\n')
                router = start([sys.executable, "-m", "fastroute", "serve", str(conf), "--port", str(port)])
                procs.append(router)
                wait_healthy(f"http://127.0.0.1:{port}/health", router)
                through_url = f"http://127.0.0.1:{port}/v1/chat/completions"
                for stream in (False, True):
                    for conc, count in ((1, n1), (32, n32)):
                        direct = load(direct_url, stream, conc, count, warm, cap)
                        cpu0 = tree_cpu_seconds(router.pid)
                        through = load(through_url, stream, conc, count, warm, cap)
                        cpu1 = tree_cpu_seconds(router.pid)
                        done = len(through["latencies"])
                        rows.append({
                            "client": client, "stream": stream, "concurrency": conc, "requests": done,
                            "direct_p50_ms": pct(direct["latencies"], 0.5), "direct_p99_ms": pct(direct["latencies"], 0.99),
                            "through_p50_ms": pct(through["latencies"], 0.5),
                            "through_p99_ms": pct(through["latencies"], 0.99),
                            "through_ttfb_p50_ms": pct(through["ttfbs"], 0.5),
                            "direct_rps": len(direct["latencies"]) / direct["elapsed"],
                            "through_rps": done / through["elapsed"],
                            # warm-up requests ran between the two readings too
                            "cpu_ms_per_request": (cpu1 - cpu0) * 1000.0 / (done + warm // conc * conc + conc),
                            "errors": direct["errors"] + through["errors"],
                        })
                stop(router)
    finally:
        for p in procs:
            stop(p)

    print(f"\nfastroute end-to-end: {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} cores, {'quick' if args.quick else 'full'} run")
    header = (f"{'client':<8} {'mode':<7} {'conc':>4} {'direct p50/p99 ms':>18} {'through p50/p99 ms':>19} "
              f"{'added p50/p99 ms':>17} {'rps direct':>10} {'rps thru':>9} {'ratio':>6} {'cpu ms/req':>10} {'err':>4}")
    print(header)
    print("-" * len(header))
    for r in rows:
        added50 = r["through_p50_ms"] - r["direct_p50_ms"]
        added99 = r["through_p99_ms"] - r["direct_p99_ms"]
        print(f"{r['client']:<8} {'stream' if r['stream'] else 'json':<7} {r['concurrency']:>4} "
              f"{r['direct_p50_ms']:>8.3f}/{r['direct_p99_ms']:<9.3f} {r['through_p50_ms']:>8.3f}/{r['through_p99_ms']:<10.3f} "
              f"{added50:>7.3f}/{added99:<9.3f} {r['direct_rps']:>10.0f} {r['through_rps']:>9.0f} "
              f"{r['through_rps'] / r['direct_rps']:>6.2f} {r['cpu_ms_per_request']:>10.3f} {r['errors']:>4}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
