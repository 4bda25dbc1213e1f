"""The dashboard in a real headless browser (Debian's chromium), driven over the DevTools protocol:
the page loads, requests go through fastroute, and the rows and figures change."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests import spend
from tests.conftest import PROVIDER_KEY, FastrouteProcess
from tests.stub_upstream import StubUpstream

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _need_browser() -> None:
    if BROWSER is None:
        if os.environ.get("FASTROUTE_REQUIRE_BROWSER"):
            pytest.fail("chromium is required (FASTROUTE_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("no chromium on this machine (.ci/run installs Debian's)")


class Browser:
    """A headless chromium and one page of it, over the DevTools protocol."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="fastroute-chromium-")
        self.proc = subprocess.Popen(
            [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.ws_base = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()  # type: ignore[union-attr]
            if "DevTools listening on" in line:
                self.ws_base = line.split("ws://", 1)[1].split("/", 1)[0]
                break
        if self.ws_base is None:
            self.close()
            raise RuntimeError("chromium did not start")
        threading.Thread(target=lambda: self.proc.stderr.read(), daemon=True).start()  # type: ignore[union-attr]

    def page_ws(self) -> str:
        for target in httpx.get(f"http://{self.ws_base}/json/list").json():
            if target.get("type") == "page":
                return target["webSocketDebuggerUrl"]
        raise RuntimeError("no page")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params: Any) -> Any:
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg.get("result")

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def until(self, expression: str, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"never true in the page: {expression}")

    async def until_equal(self, expression: str, expected: Any, timeout: float = 15.0) -> None:
        """Wait until ``expression`` is ``expected``; if it never is, fail showing what it was."""
        deadline = time.monotonic() + timeout
        while (value := await self.js(expression)) != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert value == expected


def drive(proc: FastrouteProcess, steps: Any) -> None:
    """Run ``steps(page)`` in a fresh headless chromium, then stop the browser and fastroute."""
    try:
        browser = Browser()
    except BaseException:
        proc.stop()
        raise

    async def run() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(browser.page_ws(), max_msg_size=0) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await steps(page)

    try:
        asyncio.run(run())
    finally:
        browser.close()
        proc.stop()


def test_dashboard_shows_requests_live(stub: StubUpstream, tmp_path: Path) -> None:
    _need_browser()
    conf = tmp_path / "c.toml"
    conf.write_text(f"""
[server]
dashboard = true
[[providers]]
name = "echo"
format = "echo"
cost_per_1m_tokens = 3.0
[[providers]]
name = "stub"
format = "openai"
base_url = "{stub.base_url}"
[[routers]]
type = "prefix"
model_prefix = "stub-"
provider = "stub"
[[routers]]
type = "prefix"
model_prefix = ""
provider = "echo"
""")
    proc = FastrouteProcess([str(conf)], env={"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY}).start()

    def send(model: str, stream: bool = False) -> None:
        httpx.post(f"{proc.url}/v1/chat/completions", timeout=30,
                   json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi there"}]})

    async def scenario(page: Page) -> None:
        await page.call("Page.navigate", url=f"{proc.url}/dashboard")
        await page.until("document.getElementById('conn').textContent === 'live'")
        assert await page.js("document.querySelectorAll('#requests tbody tr').length") == 0
        # a slow stream is visibly in flight, then done
        slow = threading.Thread(target=send, args=("stub-paced", True))
        slow.start()
        await page.until("[...document.querySelectorAll('#requests tbody tr.running')].length === 1")
        slow.join()
        await page.until("document.querySelectorAll('#requests tbody tr.ok').length === 1")
        for _ in range(3):
            await asyncio.to_thread(send, "echo")
        await asyncio.to_thread(send, "stub-error-500")
        await page.until("document.querySelectorAll('#requests tbody tr').length === 5")
        assert await page.js("document.querySelectorAll('#requests tbody tr.error').length") == 1
        route = await page.js("document.querySelector('#requests tbody tr td.route').textContent")
        assert "→" in route
        # the figures are drawn a moment after the rows (at most every 100 ms)
        await page.until_equal("document.getElementById('summary').textContent", "5 requests, 1 errors")
        echo = await page.js(
            "[...document.querySelector('#stats tr[data-key=\"echo / echo\"]').children].map(td => td.textContent)")
        assert echo[1] == "3" and echo[2] == "0" and float(echo[3]) >= 0 and float(echo[7]) > 0
        stub_row = await page.js(
            "[...document.querySelector('#stats tr[data-key=\"stub / stub-error-500\"]').children]"
            ".map(td => td.textContent)")
        assert stub_row[1] == "1" and stub_row[2] == "1"
        # a new viewer sees the recent history, not an empty page
        await page.call("Page.reload")
        await page.until("document.querySelectorAll('#requests tbody tr').length === 5")

    drive(proc, scenario)


def test_dashboard_asks_for_the_server_key(tmp_path: Path) -> None:
    _need_browser()
    conf = tmp_path / "k.toml"
    conf.write_text('[server]\ndashboard = true\napi_key_env = "FR_TEST_SERVER_KEY"\n'
                    '[[providers]]\nname = "echo"\nformat = "echo"\n'
                    '[[routers]]\ntype = "prefix"\nmodel_prefix = ""\nprovider = "echo"\n')
    proc = FastrouteProcess([str(conf)], env={"FR_TEST_SERVER_KEY": "let-me-in"}).start()

    def send(content: str) -> None:
        resp = httpx.post(f"{proc.url}/v1/chat/completions", timeout=30, headers={"authorization": "Bearer let-me-in"},
                          json={"model": "echo", "messages": [{"role": "user", "content": content}]})
        assert resp.status_code == 200

    async def scenario(page: Page) -> None:
        await asyncio.to_thread(send, "before the page")
        await page.call("Page.navigate", url=f"{proc.url}/dashboard")
        # no key: the page says so and offers a form, and shows nothing of the feed
        await page.until("document.getElementById('conn').textContent === 'this server needs its API key'")
        assert await page.js("getComputedStyle(document.getElementById('keyform')).display") == "flex"
        assert await page.js("document.querySelectorAll('#requests tbody tr').length") == 0
        # a wrong key is refused, and said so
        await page.js("document.getElementById('key').value = 'nope';"
                      "document.getElementById('keyform').requestSubmit()")
        await page.until("document.getElementById('conn').textContent === 'wrong key'")
        # the right one: live, with the history, then new requests
        await page.js("document.getElementById('key').value = 'let-me-in';"
                      "document.getElementById('keyform').requestSubmit()")
        await page.until("document.getElementById('conn').textContent === 'live'")
        assert await page.js("getComputedStyle(document.getElementById('keyform')).display") == "none"
        await page.until("document.querySelectorAll('#requests tbody tr.ok').length === 1")
        await asyncio.to_thread(send, "after the key")
        await page.until("document.querySelectorAll('#requests tbody tr.ok').length === 2")
        # the key can come in the fragment, which no server sees; the page then drops it from the address
        await page.js("sessionStorage.clear()")  # forget the typed key first
        await page.call("Page.navigate", url="about:blank")
        await page.call("Page.navigate", url=f"{proc.url}/dashboard#key=let-me-in")
        await page.until("document.getElementById('conn').textContent === 'live'")
        assert await page.js("location.hash") == ""
        await page.until("document.querySelectorAll('#requests tbody tr.ok').length === 2")

    drive(proc, scenario)


# ── cost and tokens by key and by session, the charts, the layout at 1280 px ──────────────────────

LONG_MODEL = "stub-" + "m" * 150
LONG_SESSION = "s" * 200


PANEL_ROWS = "[...document.querySelectorAll('#{} tbody tr')].map(tr => [...tr.children].map(td => td.textContent))"
FITS = """(() => {
  const doc = document.documentElement;
  const over = [...document.querySelectorAll('section')].filter(s => s.scrollWidth > s.clientWidth)
    .map(s => s.querySelector('h2').textContent + ' ' + s.scrollWidth + '>' + s.clientWidth);
  if (doc.scrollWidth > doc.clientWidth) over.push('page ' + doc.scrollWidth + '>' + doc.clientWidth);
  return over;
})()"""


def feed_durations(url: str, key: str | None, n: int) -> list[float]:
    """The duration of each of the first ``n`` requests, read from the event feed itself."""
    durations: list[float] = []
    with httpx.stream("GET", f"{url}/dashboard/events", headers={"authorization": f"Bearer {key}"} if key else {},
                      timeout=30) as resp:
        buffer = b""
        for chunk in resp.iter_raw():
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for ev in events:
                if ev.startswith(b"data: ") and (data := json.loads(ev[6:]))["type"] == "complete":
                    durations.append(data["duration_ms"])
                    if len(durations) == n:
                        return durations
    raise AssertionError(f"the feed ended after {len(durations)} requests")


def test_dashboard_cost_by_key_and_session_charts_and_width(stub: StubUpstream, tmp_path: Path) -> None:
    """Two keys, sessions, priced models: the by-key and by-session panels sum exactly what was sent, the
    charts draw the requests, their latency and cost, and at 1280 px no panel needs a horizontal scrollbar."""
    _need_browser()
    conf = tmp_path / "c.toml"
    conf.write_text(spend.config(stub))
    proc = FastrouteProcess([str(conf)], env=spend.ENV).start()
    send = spend.Sender(proc.url)
    sent = send.sent

    def first_requests() -> None:
        send("alice", "sess-one", "stub-alpha", "one two three")
        send("alice", "sess-one", "stub-beta", "hello", header="x-claude-code-session-id")
        send("alice", None, "stub-alpha", "a b")
        send("bob", "sess-two", "stub-beta", "x y z w")
        send("bob", "sess-two", "stub-error-500", "boom")  # no usage, no cost: a request all the same
        send("bob", LONG_SESSION, LONG_MODEL, "long names")  # unpriced: the provider's 0

    async def scenario(page: Page) -> None:
        await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        await page.call("Page.navigate", url=f"{proc.url}/dashboard#key={spend.ADMIN}")
        await page.until("document.getElementById('conn').textContent === 'live'")
        # nothing yet: empty charts, sixty empty intervals, panels that say so
        await page.until("document.getElementById('chart-requests').dataset.values !== undefined")
        assert await page.js("document.getElementById('chart-requests').dataset.values") == ",".join(["0"] * 60)
        assert await page.js("document.querySelectorAll('#charts svg rect, #charts svg path').length") == 0
        assert await page.js(PANEL_ROWS.format("by-key")) == [["no requests yet"]]

        await asyncio.to_thread(first_requests)
        await page.until(f"document.querySelectorAll('#requests tbody tr.ok, #requests tbody tr.error').length === {len(sent)}")
        await page.until("document.querySelectorAll('#by-session tbody tr').length === 4")  # one, two, none, long
        # at 1280 px the page and each panel fit: long names are cut, not widening anything
        assert await page.js(FITS) == []
        cut = await page.js(f"(() => {{ const td = document.querySelector('#by-session tr[data-key=\"{LONG_SESSION}\"] td');"
                            " return [td.title, td.scrollWidth > td.clientWidth]; })()")
        assert cut == [LONG_SESSION, True]

        for i in range(1, 10):  # more sessions than the panel has rows: the smallest are summed as "others"
            await asyncio.to_thread(send, "alice", f"extra-{i:02d}", "stub-beta", "e" * i)
        n = len(sent)
        await page.until(f"document.querySelectorAll('#requests tbody tr.ok, #requests tbody tr.error').length === {n}")
        by_key, by_session = send.rows("key_name"), send.rows("session")
        assert by_session[-1][0] == "others (5)" and len(by_session) == spend.GROUP_ROWS + 1
        assert ["—", "1", spend.usd(spend.cost_micros("stub-alpha", 5, 3, 2)), "5", "3", "2"] in by_session  # "—": none
        await page.until_equal(PANEL_ROWS.format("by-key"), by_key)
        await page.until_equal(PANEL_ROWS.format("by-session"), by_session)
        assert await page.js("document.querySelector('#by-session tr.none') !== null")
        assert await page.js("document.querySelector('#by-session tr.others').dataset.key") is None
        assert await page.js(FITS) == []

        # the charts: every request counted once in some interval, the errors apart, the cost to the micro-dollar
        total = send.cost()
        chart = await page.js("(() => { const d = id => document.getElementById(id).dataset;"
                              " return [d('chart-requests').values, d('chart-requests').errors, d('chart-cost').values,"
                              " d('chart-latency').p50, d('chart-latency').p95]; })()")
        counts, errors, costs = ([int(v) for v in s.split(",")] for s in chart[:3])
        p50, p95 = ([float(v) if v else None for v in s.split(",")] for s in chart[3:])
        assert len(counts) == len(errors) == len(costs) == len(p50) == 60
        assert sum(counts) == n and sum(errors) == 1 and sum(costs) == total
        durations = await asyncio.to_thread(feed_durations, proc.url, spend.ADMIN, n)
        for count, low, high in zip(counts, p50, p95, strict=True):
            assert (low is None) == (high is None) == (count == 0)
            if count:  # within the interval's own fastest and slowest request
                assert min(durations) <= low <= high <= max(durations)
        busy = sum(1 for c in counts if c)
        assert await page.js("document.querySelectorAll('#chart-requests rect').length") == busy + sum(1 for e in errors if e)
        assert await page.js("document.querySelectorAll('#chart-latency circle').length") == 2 * busy
        assert await page.js("document.querySelector('#chart-latency path').getAttribute('d').startsWith('M ')")
        assert await page.js("document.querySelectorAll('#chart-cost rect').length") == sum(1 for c in costs if c) > 0

        shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (tmp_path / "dashboard-1280.png").write_bytes(base64.b64decode(shot["data"]))
        # a new viewer gets the history: the same figures, each request counted once
        await page.call("Page.reload")
        await page.until_equal(PANEL_ROWS.format("by-session"), by_session)
        assert await page.js(PANEL_ROWS.format("by-key")) == by_key

    drive(proc, scenario)


CHART = """(() => { const d = document.getElementById('chart-requests').dataset, l = document.getElementById('chart-latency').dataset;
  return [d.values.split(',').map(Number), l.p50.split(','), l.p95.split(','),
          document.getElementById('interval').textContent]; })()"""


def test_dashboard_charts_with_one_and_with_thousands_of_requests(tmp_path: Path) -> None:
    """One request is one interval whose p50 and p95 are its own duration; a thousand keep the charts at
    sixty intervals; hours of them widen the intervals, nothing lost within the window."""
    _need_browser()
    conf = tmp_path / "c.toml"
    conf.write_text('[server]\ndashboard = true\n[[providers]]\nname = "echo"\nformat = "echo"\n'
                    '[[routers]]\ntype = "prefix"\nmodel_prefix = ""\nprovider = "echo"\n')
    proc = FastrouteProcess([str(conf)]).start()
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}

    def many(n: int) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(n):
                assert client.post(f"{proc.url}/v1/chat/completions", json=body).status_code == 200

    async def scenario(page: Page) -> None:
        await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        await page.call("Page.navigate", url=f"{proc.url}/dashboard")
        await page.until("document.getElementById('conn').textContent === 'live'")
        await asyncio.to_thread(httpx.post, f"{proc.url}/v1/chat/completions", json=body, timeout=30)
        await page.until("document.getElementById('chart-requests').dataset.values.split(',').map(Number)"
                         ".reduce((a, b) => a + b) === 1")
        counts, p50, p95, interval = await page.js(CHART)
        assert interval == "· per 1 s, 60 intervals" and sorted(counts)[-2:] == [0, 1]
        slot = counts.index(1)
        [duration] = await asyncio.to_thread(feed_durations, proc.url, None, 1)
        assert float(p50[slot]) == float(p95[slot]) == duration  # one request: its own duration, exactly
        assert [v for i, v in enumerate(p50 + p95) if i % 60 != slot] == [""] * 118

        await asyncio.to_thread(many, 1000)
        await page.until("document.getElementById('chart-requests').dataset.values.split(',').map(Number)"
                         ".reduce((a, b) => a + b) === 1001", timeout=60)
        counts, p50, p95, _ = await page.js(CHART)
        assert len(counts) == 60 and all(p50[i] and float(p50[i]) <= float(p95[i]) for i, c in enumerate(counts) if c)
        assert await page.js("document.querySelectorAll('#chart-requests rect').length") == sum(1 for c in counts if c)
        # the figures redraw at most every 100 ms, after the chart: wait for them, do not read them at once
        await page.until("document.querySelector('#stats tr[data-key=\"echo / echo\"] td.num').textContent === '1001'")
        assert await page.js("document.querySelectorAll('#requests tbody tr').length") == 300  # the list is bounded
        assert await page.js(FITS) == []

        # hours of requests, as a feed replays them: the intervals widen until they hold them all
        await page.js("""(() => { const now = Date.now();
          for (let i = 0; i < 3000; i++) apply({type: 'complete', id: 'old-' + i, ts_ms: now - 3 * 3600e3 + i * 3600,
                                                status: 200, duration_ms: 5 + i % 7, provider: 'echo', requested_model: 'echo'});
        })()""")
        await page.until("document.getElementById('interval').textContent === '· per 10 min, 60 intervals'")
        await page.until("document.getElementById('chart-requests').dataset.values.split(',').map(Number)"
                         ".reduce((a, b) => a + b) === 4001")
        await page.until("document.querySelector('#stats tr[data-key=\"echo / echo\"] td.num').textContent === '4001'")
        shot = await page.call("Page.captureScreenshot", format="png")
        (tmp_path / "dashboard-hours.png").write_bytes(base64.b64decode(shot["data"]))

        # sessions are whatever clients send: past 1000 names the smallest are folded into "others", the sums kept
        await page.js("""(() => { const now = Date.now();
          for (let i = 0; i < 1500; i++) apply({type: 'complete', id: 'sess-' + i, ts_ms: now, status: 200, duration_ms: 1,
                                                session: 's' + String(i).padStart(4, '0'), cost_micros: i, provider: 'x',
                                                usage: {input_tokens: 1, output_tokens: 2, cached_input_tokens: 0}});
        })()""")
        # others: s0000 .. s1491 (1 µ$ each per number, 1 + 2 tokens) and the 4001 without a session (1001 real
        # ones of 1 + 1 tokens at $0, 3000 without usage)
        others = ["others (1493)", str(1492 + 4001), spend.usd(sum(range(1492))), str(1492 + 1001),
                  str(1492 * 2 + 1001), "0"]
        await page.until_equal("[...document.querySelector('#by-session tr.others').children].map(td => td.textContent)",
                               others)
        assert await page.js("bySession.names.size") <= 1000
        top = await page.js(PANEL_ROWS.format("by-session"))
        assert [row[0] for row in top[:8]] == [f"s{i:04d}" for i in range(1499, 1491, -1)]

    drive(proc, scenario)
