"""Queue a prompt as the browser does (a websocket client) and record what ComfyUI streams back.

    python comfyui_ws_client.py SERVER PROMPT_JSON

Runs with ComfyUI's Python (aiohttp); prints ``RESULT {json}`` with the progress messages, the
number of binary frames (latent previews) and the message types seen until the prompt finished.
"""
import asyncio
import json
import sys
import uuid

import aiohttp


async def main(server, prompt_path):
    cid = uuid.uuid4().hex
    prompt = json.load(open(prompt_path))
    out = {"progress": [], "binary_frames": 0, "types": []}
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(server.replace("http", "ws", 1) + "/ws?clientId=" + cid, max_msg_size=0) as ws:
            async with s.post(server + "/prompt", json={"prompt": prompt, "client_id": cid}) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"POST /prompt gave {r.status}: {body}")
            out["prompt_id"] = pid = body["prompt_id"]
            while True:
                msg = await asyncio.wait_for(ws.receive(), timeout=900)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    out["binary_frames"] += 1
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                m = json.loads(msg.data)
                out["types"].append(m["type"])
                d = m.get("data", {})
                if m["type"] == "progress":
                    out["progress"].append([d.get("value"), d.get("max"), d.get("node")])
                if m["type"] in ("execution_success", "execution_error", "execution_interrupted") \
                        and d.get("prompt_id") == pid:
                    break
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
