"""Memory per open stream: what fastroute holds for each stream it relays, against the upstream's own.

    python benchmarks/open_streams.py [--streams 200] [--rounds 2] [--json out.json]

Two processes besides this one, on 127.0.0.1: the tests' aiohttp upstream stub
(``stub-slow``: a chunk every 50 ms for a minute) and a real ``fastroute serve``
(one worker) routing to it.  For each round, this script opens N streams, first
directly to the stub, then through fastroute, lets them flow for a few seconds,
reads the resident memory (VmRSS, from /proc) of each process tree, closes
them, and reads it again.  Reported per open stream:

- fastroute: (RSS with N streams open - RSS idle) / N, over its whole tree;
- the stub, direct: the same for the upstream itself (an aiohttp server) —
  the reference from the same run;
- after closing: what is left above idle.  Round 2 against round 1 shows
  whether anything accumulates (Python keeps freed memory in its allocator,
  so "left" after round 1 is expected; growth after round 2 would be a leak).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import tree_pids  # noqa: E402  (the process-tree walk, one place)

FLOW_S = 3.0  # how long the open streams run before memory is read


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its descendants, in KB."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def start_stub() -> tuple[subprocess.Popen[str], int]:
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from tests.stub_upstream import StubUpstream\n"
            "s = StubUpstream().start(); print(s.port, flush=True); time.sleep(3600)") % str(ROOT)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def start_fastroute(stub_port: int, conf: Path) -> tuple[subprocess.Popen[str], str]:
    conf.write_text(f'[server]\nshutdown_grace_s = 2\n\n[[providers]]\nname = "stub"\nformat = "openai"\n'
                    f'base_url = "http://127.0.0.1:{stub_port}/v1"\n\n'
                    '[[routers]]\ntype = "prefix"\nmodel_prefix = ""\nprovider = "stub"\n')
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fastroute", "serve", str(conf), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("fastroute did not start")


async def hold_streams(url: str, n: int, measure: Any) -> dict[str, Any]:
    """Open ``n`` streams to ``url``, let them flow, call ``measure()``, close them; chunks seen per stream."""
    body = {"model": "stub-slow", "stream": True, "messages": [{"role": "user", "content": "hold"}]}
    chunks = [0] * n
    started = asyncio.Event()
    opened = 0

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal opened
        async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
            resp.raise_for_status()
            async for _ in resp.content.iter_any():
                if chunks[i] == 0:
                    opened += 1
                    if opened == n:
                        started.set()
                chunks[i] += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(one(i, session)) for i in range(n)]
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.sleep(FLOW_S)
        figures = measure()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    figures["streams_with_data"] = sum(1 for c in chunks if c > 1)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    stub, stub_port = start_stub()
    conf = Path(tempfile.mkdtemp(prefix="fastroute-mem-")) / "c.toml"
    router, router_url = start_fastroute(stub_port, conf)
    stub_url = f"http://127.0.0.1:{stub_port}"
    results: list[dict[str, Any]] = []
    try:
        for _ in range(20):  # warm up both paths
            for url in (stub_url, router_url):
                httpx.post(f"{url}/v1/chat/completions", json={"model": "warm", "messages": [
                    {"role": "user", "content": "hi"}], "stream": True}, timeout=10)
        time.sleep(1.0)
        for rnd in range(1, args.rounds + 1):
            for label, url in (("direct", stub_url), ("through fastroute", router_url)):
                idle = {"fastroute": rss_kb(router.pid), "stub": rss_kb(stub.pid)}
                held = asyncio.run(hold_streams(url, args.streams, lambda: {
                    "open": {"fastroute": rss_kb(router.pid), "stub": rss_kb(stub.pid)}}))
                time.sleep(1.5)  # the closes reach both processes
                after = {"fastroute": rss_kb(router.pid), "stub": rss_kb(stub.pid)}
                results.append({"round": rnd, "path": label, "streams": args.streams, "idle_kb": idle,
                                "open_kb": held["open"], "after_kb": after,
                                "streams_with_data": held["streams_with_data"]})
    finally:
        for proc in (router, stub):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(10)
    n = args.streams
    print(f"\nmemory per open stream, {n} streams held {FLOW_S:g} s, each a chunk every 50 ms (RSS from /proc)")
    print(f"{'round':>5} {'path':<18} {'fastroute KB/stream':>20} {'stub KB/stream':>15} "
          f"{'fastroute left MB':>18} {'streams flowing':>16}")
    for r in results:
        fr = (r["open_kb"]["fastroute"] - r["idle_kb"]["fastroute"]) / n
        st = (r["open_kb"]["stub"] - r["idle_kb"]["stub"]) / n
        left = (r["after_kb"]["fastroute"] - r["idle_kb"]["fastroute"]) / 1024
        shown_fr = f"{fr:20.1f}" if r["path"] != "direct" else f"{'-':>20}"
        shown_left = f"{left:18.2f}" if r["path"] != "direct" else f"{'-':>18}"
        print(f"{r['round']:>5} {r['path']:<18} {shown_fr} {st:15.1f} {shown_left} "
              f"{r['streams_with_data']:>7}/{n}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
