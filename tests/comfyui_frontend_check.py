"""Drive ComfyUI's real frontend in headless Chromium (over the DevTools protocol) for test_comfyui.py.

    python comfyui_frontend_check.py SERVER CHROMIUM UI_DIR SMALL_DIR NAME[,NAME...]

Runs with ComfyUI's Python (it needs aiohttp, which ComfyUI has). For each workflow it drops the UI
file and then its PNG onto the page the way a user's drag-and-drop does (``app.handleFile``), waits
for the Load Image previews, and prints one line per state, ``RESULT {json}``, with what the
frontend made of it: ``graphToPrompt``'s output, every node's position, size and the size the
frontend needs for it (``computeSize``), the groups and the view. Then it queues the small prompt
given in ``SMALL_DIR/NAME.small.json`` (if present) under the page's own client id, so the outputs
appear on the canvas as after a user's run, and reports the same again ("after_run").
Chromium listens on 127.0.0.1 only.
"""
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import aiohttp

MEASURE = """(() => {
  const g = app.graph, ds = app.canvas.ds;
  const nodes = g.nodes.map(n => ({id: n.id, type: n.type, title: n.title, pos: [...n.pos], size: [...n.size],
    needs: [...n.computeSize()], collapsed: !!(n.flags && n.flags.collapsed),
    images: (n.imgs || []).filter(i => i.complete && i.naturalWidth > 0).length}));
  const groups = (g.groups || g._groups || []).map(gr => ({title: gr.title, bounding: [...(gr.boundingRect || gr._bounding)]}));
  return JSON.stringify({nodes, groups, view: {scale: ds.scale, offset: [...ds.offset]},
                         canvas: [app.canvas.canvas.clientWidth, app.canvas.canvas.clientHeight],
                         title_height: LiteGraph.NODE_TITLE_HEIGHT});
})()"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main(server, chromium, ui_dir, small_dir, names):
    port = free_port()
    profile = tempfile.mkdtemp()
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--disable-quic", "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--window-size=1920,960",
                             f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
                             f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page = None
        for _ in range(240):
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
                page = next(t for t in targets if t["type"] == "page")
                break
            except Exception:
                await asyncio.sleep(0.5)
        if page is None:
            raise RuntimeError("Chromium's DevTools endpoint did not come up")
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            counter = 0

            async def call(method, **params):
                nonlocal counter
                counter += 1
                mine = counter
                await ws.send_json({"id": mine, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json()
                    if msg.get("id") == mine:
                        if "error" in msg:
                            raise RuntimeError(msg["error"])
                        return msg["result"]

            async def js(expr):
                r = await call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
                if "exceptionDetails" in r:
                    raise RuntimeError(json.dumps(r["exceptionDetails"])[:2000])
                return r["result"].get("value")

            async def wait_for(expr, timeout, what):
                end = time.time() + timeout
                while not await js(expr):
                    if time.time() > end:
                        raise RuntimeError(f"timed out waiting for {what}")
                    await asyncio.sleep(0.5)

            async def drop(path, mime):
                b64 = base64.b64encode(open(path, "rb").read()).decode()
                name = os.path.basename(path)
                await js(f"""(async () => {{
                    const b = Uint8Array.from(atob("{b64}"), c => c.charCodeAt(0));
                    await app.handleFile(new File([b], "{name}", {{type: "{mime}"}})); }})()""")
                await asyncio.sleep(0.5)
                # Every Load Image shows its picture (the frontend sizes the node for it then).
                await wait_for("app.graph.nodes.filter(n => n.type === 'LoadImage').every("
                               "n => (n.imgs || []).some(i => i.complete && i.naturalWidth > 0))", 300, "the image previews")
                await asyncio.sleep(1.0)  # a few frames, so any resize has happened

            async def report(name, kind):
                state = json.loads(await js(MEASURE))
                state["prompt"] = json.loads(await js(
                    "(async () => JSON.stringify((await app.graphToPrompt()).output))()"))
                print("RESULT " + json.dumps({"name": name, "kind": kind, **state}), flush=True)

            await call("Page.enable")
            await call("Emulation.setDeviceMetricsOverride", width=1920, height=960, deviceScaleFactor=1, mobile=False)
            await call("Page.navigate", url=server)
            await wait_for("!!(window.app && window.app.graph && window.LiteGraph && window.app.api)", 240, "the frontend")
            await asyncio.sleep(3)
            for name in names:
                await drop(os.path.join(ui_dir, name + ".json"), "application/json")
                await report(name, "json")
                small = os.path.join(small_dir, name + ".small.json")
                if os.path.exists(small):
                    prompt = json.load(open(small))
                    client_id = await js("app.api.clientId")
                    async with session.post(server + "/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                        body = await r.json()
                        if r.status != 200:
                            raise RuntimeError(f"{name}: POST /prompt gave {r.status}: {body}")
                    pid = body["prompt_id"]
                    end = time.time() + 1800  # the first run loads the models: minutes on a busy 2-core machine
                    while True:
                        async with session.get(f"{server}/history/{pid}") as r:
                            h = await r.json()
                        if pid in h and h[pid].get("status", {}).get("completed"):
                            break
                        if time.time() > end or (pid in h and h[pid].get("status", {}).get("status_str") == "error"):
                            raise RuntimeError(f"{name}: the run did not succeed: {json.dumps(h)[:2000]}")
                        await asyncio.sleep(1)
                    outputs = [k for k, v in h[pid]["outputs"].items() if v.get("images")]
                    await wait_for("[" + ",".join(outputs) + "].every(id => (app.graph.getNodeById(id).imgs || [])"
                                   ".some(i => i.complete && i.naturalWidth > 0))", 300, "the output previews")
                    await asyncio.sleep(1.0)
                    await report(name, "after_run")
                await drop(os.path.join(ui_dir, name + ".png"), "image/png")
                await report(name, "png")
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    server, chromium, ui_dir, small_dir, names = sys.argv[1:6]
    asyncio.run(main(server.rstrip("/"), chromium, ui_dir, small_dir, names.split(",")))
