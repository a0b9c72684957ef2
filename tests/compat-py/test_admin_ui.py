"""The admin web UI in a real browser: headless Chromium (Debian package `chromium`) driven
over the DevTools protocol with the `websockets` client the suite already has. Logs in,
reads the status page, publishes from the actions page to a subscribed SDK client, follows a
channel in the live tail, and is refused with a wrong password. A screenshot of the status
page is kept as a test artifact (target/artifacts/admin-ui.png)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import requests
import websockets

from conftest import ADMIN_PASSWORD
from harness import WAIT_S, Pool, async_test

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "target" / "artifacts"
# CI installs it (.ci/run); elsewhere a machine without it skips this file.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="needs the Debian chromium package"
)


class Browser:
    """One headless Chromium with its own profile, stopped by PID; `page` is its tab."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rotor-chromium-"))
        self.proc = subprocess.Popen(
            [
                CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                "--remote-debugging-port=0", f"--user-data-dir={self.dir}", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.ws = None
        self.next_id = 0
        # Chromium prints "DevTools listening on ws://127.0.0.1:PORT/…" once it listens; the
        # reader keeps draining stderr afterwards so Chromium never blocks on a full pipe.
        self.listening = threading.Event()
        self.devtools_port = 0

        def read_stderr() -> None:
            for line in self.proc.stderr:
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                if found and not self.listening.is_set():
                    self.devtools_port = int(found.group(1))
                    self.listening.set()
            self.listening.set()  # EOF: Chromium exited.

        threading.Thread(target=read_stderr, name="chromium-stderr", daemon=True).start()

    async def open(self) -> None:
        ready = await asyncio.to_thread(self.listening.wait, 30)
        assert ready and self.devtools_port, "chromium did not open its DevTools port"
        port = self.devtools_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=WAIT_S) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = await websockets.connect(page["webSocketDebuggerUrl"], max_size=None)
        await self.call("Page.enable")

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        mine = self.next_id
        await self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT_S))
            if msg.get("id") == mine:
                assert "error" not in msg, msg
                return msg["result"]

    async def eval(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    async def until(self, expression: str, what: str):
        """Polls `expression` in the page until it is truthy (bounded)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            value = await self.eval(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.until("document.readyState === 'complete' && !!document.getElementById('nav')", "the page")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


async def log_in(b: Browser, password: str) -> None:
    await b.until("!document.getElementById('login').hidden", "the login form")
    await b.eval(
        f"document.getElementById('password').value = {json.dumps(password)};"
        "document.getElementById('login-button').click(); true"
    )


@async_test
async def test_admin_ui_in_a_browser(admin_server):
    channel = f"chat:admin{uuid.uuid4().hex[:8]}"
    browser = Browser()
    try:
        await browser.open()
        async with Pool(admin_server) as pool:
            reader = await pool.connect(f"reader{uuid.uuid4().hex[:6]}")
            sub = await pool.subscribed(reader, channel)
            await browser.goto(admin_server.http_url + "/")

            # A wrong password is refused and no session starts.
            await log_in(browser, "not the password")
            await browser.until("!document.getElementById('login-error').hidden", "the refusal")
            assert await browser.eval("document.getElementById('nav').hidden") is True

            await log_in(browser, ADMIN_PASSWORD)
            await browser.until("!document.getElementById('status').hidden", "the status page")
            cells = await browser.until(
                "(() => { const r = document.querySelector('#nodes tr');"
                " return r && [...r.cells].map(c => c.textContent); })()",
                "a node row",
            )
            assert cells[3] == "1", f"status lists one client: {cells}"
            # The charts fill from live samples before the screenshot is taken.
            await browser.until("Number(document.getElementById('chart-messages').dataset.samples) >= 2", "chart samples")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = await browser.call("Page.captureScreenshot", format="png")
            (ARTIFACTS / "admin-ui.png").write_bytes(base64.b64decode(shot["data"]))

            # The live tail follows the channel over its own WebSocket.
            await browser.eval("document.querySelector('nav button[data-view=tail]').click(); true")
            await browser.eval(
                f"document.getElementById('tail-channel').value = {json.dumps(channel)};"
                "document.getElementById('tail-start').click(); true"
            )
            await browser.until("document.getElementById('tail-state').textContent.startsWith('following')", "the tail")

            # Publish from the actions page: the SDK client and the tail both get it.
            await browser.eval("document.querySelector('nav button[data-view=actions]').click(); true")
            params = {"channel": channel, "data": {"from": "admin ui"}}
            await browser.eval(
                "const m = document.getElementById('method'); m.value = 'publish';"
                "m.dispatchEvent(new Event('change'));"
                f"document.getElementById('params').value = {json.dumps(json.dumps(params))};"
                "document.getElementById('run').click(); true"
            )
            result = await browser.until("document.getElementById('result').textContent", "the API reply")
            assert "result" in json.loads(result), result
            (pub,) = await sub.rec.wait("publication")
            assert pub.pub.data == {"from": "admin ui"}
            await browser.eval("document.querySelector('nav button[data-view=tail]').click(); true")
            line = await browser.until("document.querySelector('#tail-log li')?.textContent", "the tailed publication")
            assert '{"from":"admin ui"}' in line
    finally:
        await browser.close()


def test_admin_api_needs_a_session(admin_server):
    session = requests.Session()
    session.trust_env = False
    url = admin_server.http_url
    assert session.post(f"{url}/admin/api", json={"method": "info", "params": {}}).status_code == 401
    assert session.post(f"{url}/admin/auth", data={"password": "wrong"}).status_code == 400
    token = session.post(f"{url}/admin/auth", files={"password": (None, ADMIN_PASSWORD)}).json()["token"]
    r = session.post(f"{url}/admin/api", json={"method": "info", "params": {}}, headers={"Authorization": f"token {token}"})
    assert r.status_code == 200 and r.json()["result"]["nodes"], r.text
    init = session.get(f"{url}/admin/init", headers={"Authorization": f"token {token}"}).json()
    assert init == {"authenticated": True, "edition": "oss", "insecure": False}
    assert session.get(f"{url}/admin/init").json()["authenticated"] is False
