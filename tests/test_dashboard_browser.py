"""The dashboard in a real headless browser (Debian's chromium), driven over the DevTools protocol:
the page loads, requests go through fastroute, and the rows and figures change."""

from __future__ import annotations

import asyncio
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


def drive(proc: FastrouteProcess, steps: Any) -> None:
    """Run ``steps(page)`` in a fresh headless chromium, then stop the browser and fastroute."""
    try:
        browser = Browser()
    except BaseException:
        proc.stop()
        raise

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(browser.page_ws(), max_msg_size=0) as ws:
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
        echo = await page.until(
            "(() => { const r = document.querySelector('#stats tr[data-key=\"echo / echo\"]');"
            " return r && [...r.children].map(td => td.textContent); })()")
        assert echo[1] == "3" and echo[2] == "0" and float(echo[3]) >= 0 and float(echo[7]) > 0
        stub_row = await page.js(
            "[...document.querySelector('#stats tr[data-key=\"stub / stub-error-500\"]').children]"
            ".map(td => td.textContent)")
        assert stub_row[1] == "1" and stub_row[2] == "1"
        summary = await page.js("document.getElementById('summary').textContent")
        assert summary == "5 requests, 1 errors"
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
