"""Issue 22, as a person would: open the index and a case page in headless Chromium, check that every image loads
and that no console error occurs, and take screenshots.

Opt-in: skipped unless /usr/bin/chromium exists (Debian: `apt-get install chromium`). Chromium is driven over the
DevTools protocol (aiohttp's websocket client, a core dependency). Screenshots go to the test's temporary folder,
and also to $RSUPER_SCREENSHOTS when set (docs/img for the docs).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.chromium,
              pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs /usr/bin/chromium (apt-get install chromium)")]


class DevTools:
    """One page target of a running Chromium over the DevTools protocol; collects console and load errors."""

    def __init__(self, ws):
        self.ws, self.next_id, self.errors, self.events = ws, 0, [], []

    async def call(self, method: str, session: str | None = None, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        await self.ws.send_str(json.dumps(msg))
        while True:
            reply = json.loads((await self.ws.receive(timeout=60)).data)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)

    def _event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        self.events.append(method)
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            self.errors.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            self.errors.append(f"load failed: {params.get('errorText')}")

    async def wait_for(self, method: str) -> None:
        while method not in self.events:
            self._event(json.loads((await self.ws.receive(timeout=60)).data))


async def _visit(port: int, pages: list[Path], shots: list[Path]) -> list[dict]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/version") as r:
            browser_ws = (await r.json())["webSocketDebuggerUrl"]
        async with http.ws_connect(browser_ws, max_msg_size=0) as ws:
            dt = DevTools(ws)
            target = (await dt.call("Target.createTarget", url="about:blank"))["targetId"]
            session = (await dt.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                await dt.call(f"{domain}.enable", session)
            await dt.call("Emulation.setDeviceMetricsOverride", session, width=1280, height=900, deviceScaleFactor=1,
                          mobile=False)
            out = []
            for page, shot in zip(pages, shots):
                dt.events.clear()
                await dt.call("Page.navigate", session, url=page.resolve().as_uri())
                await dt.wait_for("Page.loadEventFired")
                images = (await dt.call("Runtime.evaluate", session, returnByValue=True, expression=(
                    "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
                )))["result"]["value"]
                png = (await dt.call("Page.captureScreenshot", session, format="png"))["data"]
                shot.write_bytes(base64.b64decode(png))
                out.append({"page": page.name, "images": images, "errors": list(dt.errors)})
                dt.errors.clear()
            return out


def test_index_and_case_page_load_every_image_without_console_errors(pages, tmp_path):
    out, results, _ = pages
    top = results[0].audit.ct_id
    profile = tmp_path / "profile"  # a fresh profile: nothing cached or remembered from an earlier run
    proc = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--allow-file-access-from-files", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port in 60 s"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        shots = [tmp_path / "review_index.png", tmp_path / "review_case.png"]
        visits = asyncio.run(_visit(port, [out / "index.html", out / f"{top}.html"], shots))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    for v in visits:
        assert v["images"], f"{v['page']}: no image"
        assert all(ok for _, ok in v["images"]), f"{v['page']}: images not loaded: {v['images']}"
        assert v["errors"] == [], f"{v['page']}: {v['errors']}"
    assert len(visits[1]["images"]) == len(results[0].lesions) + len(results[0].pairs)
    for shot in shots:
        assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    if os.environ.get("RSUPER_SCREENSHOTS"):
        dest = Path(os.environ["RSUPER_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, dest / shot.name)
