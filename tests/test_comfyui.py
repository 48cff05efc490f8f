"""The pack inside a real ComfyUI (v0.8+): run with ``COMFYUI_PATH=/path/to/ComfyUI pytest -m comfyui``.

``COMFYUI_PYTHON`` names ComfyUI's interpreter (default: ``$COMFYUI_PATH/venv/bin/python`` if it
exists, else this one). The pack must be linked or cloned into ``$COMFYUI_PATH/custom_nodes``.
A server is started on 127.0.0.1 with ``--cpu`` and temporary model/input/output folders. Models:
an SD1.5-architecture checkpoint with random weights built with ComfyUI's own classes, and a VMamba
ControlNet built with gie_core and saved with gie_core.models.io (cached between runs in
``$INSTRUCTGIE_TEST_CACHE``, default ~/.cache/instructgie/comfyui-tests). Sampling is kept tiny
(64-px tiles, 1 step) because the point is the wiring, not the picture.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
CKPT_NAME = "v1-5-pruned-emaonly-fp16.safetensors"  # the names the shipped workflows use
CN_NAME = "instructgie_vmamba_sd15.safetensors"
OUR_NODES = {"InstructGIEVMambaControlNetLoader": "VMamba ControlNet Loader",
             "InstructGIEVisualPromptConcatenate": "Visual Prompt Concatenate",
             "InstructGIEInstructionUnifier": "Instruction Unifier",
             "InstructGIEFaceRegionMask": "Face-Region Mask",
             "InstructGIESampler": "InstructGIE Sampler"}


def _comfyui_path() -> Path:
    raw = os.environ.get("COMFYUI_PATH")
    if not raw:
        pytest.skip("COMFYUI_PATH is not set: point it at a ComfyUI checkout (v0.8+) to run the ComfyUI tests")
    path = Path(raw)
    if not (path / "main.py").is_file() or not (path / "nodes.py").is_file():
        pytest.skip(f"COMFYUI_PATH={raw} is not a ComfyUI checkout (no main.py / nodes.py)")
    return path


def _comfyui_python(path: Path) -> str:
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    venv = path / "venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@pytest.fixture(scope="module")
def comfy():
    path = _comfyui_path()
    python = _comfyui_python(path)
    version = subprocess.run([python, "-c", "import comfyui_version; print(comfyui_version.__version__)"],
                             cwd=path, capture_output=True, text=True)
    if version.returncode:
        pytest.skip(f"cannot run ComfyUI's python {python}: {version.stderr.strip()[-300:]}")
    v = version.stdout.strip()
    if tuple(int(x) for x in re.findall(r"\d+", v)[:2]) < (0, 8):
        pytest.skip(f"ComfyUI {v} is older than the v0.8 these tests target")
    pack = next((p for p in (path / "custom_nodes").iterdir() if p.resolve() == REPO), None)
    if pack is None:
        pytest.skip(f"this repo is not linked into {path / 'custom_nodes'} (ln -s {REPO} {path}/custom_nodes/ComfyUI-InstructGIE)")
    print(f"\nComfyUI {v} at {path}, python {python}, pack at {pack}")
    return {"path": path, "python": python, "pack": pack, "version": v}


# --------------------------------------------------------------------------------------------------
# Models: built once, cached
# --------------------------------------------------------------------------------------------------
CHECKPOINT_SCRIPT = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, os.getcwd())
    out = sys.argv[1]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import torch
    import comfy.sd, comfy.supported_models, comfy.utils
    from comfy.ldm.models.autoencoder import AutoencoderKL

    torch.manual_seed(0)

    def fill(module, scale=0.5):  # ComfyUI's layers skip initialisation: give every weight a value
        with torch.no_grad():
            for name, p in module.named_parameters():
                if p.ndim == 0:
                    p.fill_(1.0)
                elif p.ndim == 1:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)  # norms: identity
                else:
                    p.normal_(0.0, scale * p[0].numel() ** -0.5)

    unet_config = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
                   "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
                   "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
                   "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
                   "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                   "use_temporal_attention": False, "use_temporal_resblock": False}
    model_config = comfy.supported_models.SD15(unet_config)
    model = model_config.get_model({})
    fill(model.diffusion_model)
    clip = comfy.sd.CLIP(model_config.clip_target(), embedding_directory=None)
    fill(clip.cond_stage_model)
    vae = AutoencoderKL(ddconfig={"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                                  "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                  "attn_resolutions": [], "dropout": 0.0}, embed_dim=4)
    fill(vae)
    sd = model.state_dict_for_saving(clip.get_sd(), vae.state_dict())
    comfy.utils.save_torch_file({k: v.detach().half().contiguous() for k, v in sd.items()}, out + ".tmp")
    os.replace(out + ".tmp", out)
    print("wrote", out, len(sd), "tensors")
''')


def build_controlnet(path: Path) -> None:
    """A full-size SD1.5 VMamba ControlNet with random weights (non-zero zero-convs, so it acts)."""
    import inspect

    from diffusers import ControlNetModel

    from gie_core.models import SD15_UNET_CONFIG, VMambaControlNetModel, VMambaHintEncoder, save_vmamba_controlnet

    keys = inspect.signature(ControlNetModel.__init__).parameters
    with torch.device("meta"):
        cn = VMambaControlNetModel(**{k: v for k, v in SD15_UNET_CONFIG.items() if k in keys})
    cn.to_empty(device="cpu")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in cn.named_parameters():
            if p.ndim == 0:
                p.fill_(1.0)
            elif p.ndim == 1:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.normal_(0.0, 0.5 * p[0].numel() ** -0.5, generator=g)
        torch.manual_seed(2)
        encoder = VMambaHintEncoder(cn.hint_encoder.config)  # the encoder's own initialisation
        encoder.conv_out.weight.normal_(0.0, 0.02)
        cn.controlnet_cond_embedding = encoder
    save_vmamba_controlnet(cn.half(), path)


@pytest.fixture(scope="module")
def models(comfy):
    key = hashlib.sha256((CHECKPOINT_SCRIPT + inspect_source(build_controlnet)).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("INSTRUCTGIE_TEST_CACHE", Path.home() / ".cache" / "instructgie" / "comfyui-tests")) / key
    cache.mkdir(parents=True, exist_ok=True)
    ckpt, cn = cache / CKPT_NAME, cache / CN_NAME
    if not ckpt.exists():
        t = time.time()
        script = cache / "make_checkpoint.py"
        script.write_text(CHECKPOINT_SCRIPT)
        r = subprocess.run([comfy["python"], str(script), str(ckpt)], cwd=comfy["path"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        print(f"built {ckpt.name} with ComfyUI's classes in {time.time() - t:.0f} s")
    if not cn.exists():
        t = time.time()
        build_controlnet(cn)
        print(f"built {cn.name} with gie_core in {time.time() - t:.0f} s")
    return {"checkpoint": ckpt, "controlnet": cn}


def inspect_source(fn) -> str:
    import inspect

    return inspect.getsource(fn)


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------
class Server:
    def __init__(self, url, log, run):
        self.url, self.log, self.run = url, log, run

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.load(r)

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def log_text(self):
        return self.log.read_text(errors="replace")

    def wait(self, prompt_id, timeout=900):
        """History entry of a finished prompt (success, error or interrupted)."""
        end = time.time() + timeout
        while time.time() < end:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("status_str") in ("success", "error"):
                return h[prompt_id]
            time.sleep(1.0)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; log tail:\n{self.log_text()[-3000:]}")

    def run_prompt(self, prompt, timeout=900):
        status, body = self.post("/prompt", {"prompt": prompt})
        assert status == 200, body
        return self.wait(body["prompt_id"], timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(comfy, models, tmp_path_factory):
    run = tmp_path_factory.mktemp("comfyui_run")
    for sub in ("checkpoints", "instructgie", "controlnet"):
        (run / "models" / sub).mkdir(parents=True)
    os.symlink(models["checkpoint"], run / "models" / "checkpoints" / CKPT_NAME)
    os.symlink(models["controlnet"], run / "models" / "instructgie" / CN_NAME)
    # A safetensors file that is not an InstructGIE ControlNet, in the controlnet folder.
    from safetensors.torch import save_file
    save_file({"zero_convs.0.0.weight": torch.zeros(4, 4, 1, 1)}, str(run / "models" / "controlnet" / "not_instructgie.safetensors"))
    for sub in ("input", "output", "temp", "user"):
        (run / sub).mkdir()
    for png in (WORKFLOWS / "example_inputs").glob("*.png"):
        shutil.copy(png, run / "input" / png.name)
    (run / "extra_model_paths.yaml").write_text(
        f"instructgie_tests:\n    base_path: {run / 'models'}\n    checkpoints: checkpoints\n"
        f"    controlnet: controlnet\n    instructgie: instructgie\n")
    port = _free_port()
    log = run / "server.log"
    cmd = [comfy["python"], "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--extra-model-paths-config", str(run / "extra_model_paths.yaml"),
           "--input-directory", str(run / "input"), "--output-directory", str(run / "output"),
           "--temp-directory", str(run / "temp"), "--user-directory", str(run / "user"),
           "--preview-method", "latent2rgb", "--disable-auto-launch"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=comfy["path"], stdout=f, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", log, run)
    try:
        end = time.time() + 300
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"ComfyUI exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                srv.get("/object_info/InstructGIESampler")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() > end:
                    raise AssertionError(f"ComfyUI did not start in 300 s:\n{log.read_text()[-3000:]}") from None
                time.sleep(1.0)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _small(prompt: dict, tile=64, steps=1) -> dict:
    """The workflow with 64-px tiles and one step (the crop node follows the tile)."""
    p = json.loads(json.dumps(prompt))
    for node in p.values():
        inputs, cls = node["inputs"], node["class_type"]
        if cls == "InstructGIEVisualPromptConcatenate":
            inputs["tile"] = tile
        if cls in ("InstructGIESampler", "KSampler"):
            inputs["steps"] = steps
        if cls == "ImageCrop":
            inputs.update(width=tile, height=tile, x=tile, y=tile)
    return p


def _api(name):
    return json.loads((WORKFLOWS / f"{name}_api.json").read_text())


def _outputs(server, entry, node_id):
    """The images a node saved, fetched through ComfyUI's /view endpoint."""
    import io
    import urllib.parse

    from PIL import Image

    out = []
    for im in entry["outputs"][node_id]["images"]:
        query = urllib.parse.urlencode({k: im[k] for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=60) as r:
            out.append(Image.open(io.BytesIO(r.read())).convert("RGB"))
    return out


# --------------------------------------------------------------------------------------------------
# Tests (module order matters only for speed: the first sampling run loads the models)
# --------------------------------------------------------------------------------------------------
def test_comfyui_loader_imports_the_pack_and_sdxl_is_refused(comfy, models, tmp_path):
    """ComfyUI's own loader (nodes.load_custom_node) imports the pack; in that process the loader node
    gives a real ControlNet whose hint block is the VMamba module; a SDXL model is refused clearly."""
    script = tmp_path / "inproc.py"
    script.write_text(textwrap.dedent(f'''
        import asyncio, json, os, sys
        sys.path.insert(0, os.getcwd())
        sys.argv = [sys.argv[0], "--cpu"]
        import comfy.options
        comfy.options.enable_args_parsing()
        import torch
        import folder_paths, nodes
        out = {{}}
        out["loaded"] = asyncio.run(nodes.load_custom_node({str(comfy["pack"])!r}))
        out["nodes"] = sorted(k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("InstructGIE"))
        import gie_core
        out["gie_core_file"] = gie_core.__file__
        folder_paths.add_model_folder_path("instructgie", {str(Path(models["controlnet"]).parent)!r})
        M = nodes.NODE_CLASS_MAPPINGS
        (cnet,) = M["InstructGIEVMambaControlNetLoader"]().load({CN_NAME!r})
        import comfy.controlnet
        block = cnet.control_model.input_hint_block
        out["controlnet_class"] = type(cnet).__module__ + "." + type(cnet).__name__
        out["hint_block"] = type(block).__name__
        # The hint matters, and its features are reused across steps.
        cldm = cnet.control_model
        x = torch.randn(2, 4, 8, 8); t = torch.tensor([500.0, 500.0]); ctx = torch.randn(2, 77, 768)
        with torch.inference_mode():
            h1, h2 = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
            a = cldm(x=x, hint=h1, timesteps=t, context=ctx)["output"][0]
            reused0 = block.hint_cache.rows_reused
            b = cldm(x=x, hint=h1.clone(), timesteps=t * 0.5, context=ctx)["output"][0]
            c = cldm(x=x, hint=h2, timesteps=t, context=ctx)["output"][0]
        out["hint_changes_output"] = float((a - c).abs().max())
        # Stock Apply ControlNet + KSampler with a SDXL model: the hint block sees 2048-wide text features.
        try:
            with torch.inference_mode():
                cldm(x=x, hint=h1, timesteps=t, context=torch.randn(2, 77, 2048))
            out["sdxl_stock_error"] = None
        except ValueError as e:
            out["sdxl_stock_error"] = str(e)
        out["rows_reused_second_step"] = block.hint_cache.rows_reused - reused0
        # A file that is not an InstructGIE ControlNet.
        from safetensors.torch import save_file
        bad = os.path.join({str(tmp_path)!r}, "plain.safetensors")
        save_file({{"zero_convs.0.0.weight": torch.zeros(4, 4, 1, 1)}}, bad)
        folder_paths.add_model_folder_path("controlnet", {str(tmp_path)!r})
        try:
            M["InstructGIEVMambaControlNetLoader"]().load("plain.safetensors")
            out["plain_error"] = None
        except ValueError as e:
            out["plain_error"] = str(e)
        # A SDXL model (ComfyUI's own SDXL class, weights on the meta device: only its config is read).
        import comfy.supported_models, comfy.model_patcher
        sdxl_config = {{"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
            "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
            "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
            "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
            "use_temporal_attention": False, "use_temporal_resblock": False}}
        mc = comfy.supported_models.SDXL(sdxl_config)
        sdxl = comfy.model_patcher.ModelPatcher(mc.get_model({{}}, device="meta"), torch.device("cpu"), torch.device("cpu"))
        img = torch.rand(1, 64, 64, 3)
        grid, hint, mask, layout = M["InstructGIEVisualPromptConcatenate"]().concatenate(img, img, img, 64, "fit")
        try:
            M["InstructGIESampler"]().sample(sdxl, [], [], cnet, None, grid, hint, mask, layout, 0, 1, 7.0,
                                             "euler", "normal")
            out["sdxl_error"] = None
        except ValueError as e:
            out["sdxl_error"] = str(e)
        print("RESULT " + json.dumps(out))
    '''))
    r = subprocess.run([comfy["python"], str(script)], cwd=comfy["path"], capture_output=True, text=True, timeout=900)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, (r.stdout[-2000:], r.stderr[-4000:])
    res = json.loads(line[len("RESULT "):])
    print("\nin-process ComfyUI:", json.dumps(res, indent=1))
    assert res["loaded"] is True
    assert res["nodes"] == sorted(OUR_NODES)
    assert res["controlnet_class"] == "comfy.controlnet.ControlNet"
    assert res["hint_block"] == "VMambaHintBlock"
    assert res["hint_changes_output"] > 0
    assert res["rows_reused_second_step"] == 2  # both rows of the batch came from the cache
    assert "not an InstructGIE VMamba ControlNet" in res["plain_error"] and "Load ControlNet Model" in res["plain_error"]
    assert "SDXL" in res["sdxl_error"] and "SD1.x" in res["sdxl_error"] and "checkpoint" in res["sdxl_error"]
    assert "SDXL" in res["sdxl_stock_error"] and "SD1.5 checkpoint" in res["sdxl_stock_error"]


def test_server_imports_the_pack_and_lists_the_nodes(server):
    log = server.log_text()
    assert re.search(r"seconds: .*ComfyUI-InstructGIE", log), log[-3000:]
    assert "IMPORT FAILED" not in log and "Traceback" not in log, log[-3000:]
    info = server.get("/object_info")
    for name, display in OUR_NODES.items():
        node = info[name]
        assert node["display_name"] == display and node["category"] == "InstructGIE"
        for group in ("required", "optional"):
            for inp, spec in node["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"
    sampler, ksampler = info["InstructGIESampler"]["input"]["required"], info["KSampler"]["input"]["required"]
    assert sampler["sampler_name"][0] == ksampler["sampler_name"][0]
    assert sampler["scheduler"][0] == ksampler["scheduler"][0]
    assert info["InstructGIEVMambaControlNetLoader"]["input"]["required"]["control_net_name"][0] == \
        [CN_NAME, "not_instructgie.safetensors"]


def _ui_to_api(ui: dict, info: dict) -> dict:
    """What the frontend's graphToPrompt makes of a UI workflow (widgets by input order, links)."""
    links = {l[0]: l for l in ui["links"]}
    out = {}
    for n in ui["nodes"]:
        d = info[n["type"]]
        inputs = {}
        for i in n["inputs"]:
            if i.get("link") is not None:
                l = links[i["link"]]
                inputs[i["name"]] = [str(l[1]), l[2]]
        values = list(n["widgets_values"])
        for group in ("required", "optional"):
            specs = d["input"].get(group, {})
            for name in d["input_order"].get(group, []):
                spec = specs[name]
                if isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                    inputs[name] = values.pop(0)
                    opts = spec[1] if len(spec) > 1 else {}
                    if opts.get("control_after_generate"):
                        assert values.pop(0) in ("fixed", "randomize", "increment", "decrement")
                    if opts.get("image_upload"):
                        values.pop(0)
        assert values == [], f"{n['type']}: unused widget values {values}"
        out[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return out


@pytest.mark.parametrize("name", ["instructgie_basic", "instructgie_stock_nodes", "instructgie_faces"])
def test_ui_workflow_and_png_encode_the_api_twin(server, name):
    from PIL import Image

    info = server.get("/object_info")
    api = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in _api(name).items()}
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert _ui_to_api(ui, info) == api
    png = Image.open(WORKFLOWS / f"{name}.png")
    assert json.loads(png.info["workflow"]) == ui  # dropping the PNG on ComfyUI loads this graph
    assert json.loads(png.info["prompt"]) == _api(name)


FRONTEND_SCRIPT = '"""Load each UI workflow and PNG into ComfyUI\'s real frontend (headless Chromium, CDP) and print\nwhat the frontend\'s graphToPrompt makes of it, as JSON lines: RESULT {name, kind, prompt}."""\nimport asyncio, base64, json, os, subprocess, sys, tempfile, time, urllib.request\nimport aiohttp\n\nserver, chromium, workflows = sys.argv[1], sys.argv[2], sys.argv[3]\nport = int(sys.argv[4]) if len(sys.argv) > 4 else 9333\n\nasync def main():\n    profile = tempfile.mkdtemp()\n    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",\n                             f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",\n                             f"--user-data-dir={profile}", "about:blank"],\n                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n    try:\n        for _ in range(120):\n            try:\n                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))\n                page = next(t for t in targets if t["type"] == "page")\n                break\n            except Exception:\n                await asyncio.sleep(0.5)\n        async with aiohttp.ClientSession() as s:\n            async with s.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:\n                n = 0\n                async def call(method, **params):\n                    nonlocal n\n                    n += 1\n                    my = n\n                    await ws.send_json({"id": my, "method": method, "params": params})\n                    while True:\n                        msg = await ws.receive_json()\n                        if msg.get("id") == my:\n                            if "error" in msg:\n                                raise RuntimeError(msg["error"])\n                            return msg["result"]\n                async def js(expr):\n                    r = await call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)\n                    if "exceptionDetails" in r:\n                        raise RuntimeError(json.dumps(r["exceptionDetails"])[:2000])\n                    return r["result"].get("value")\n                await call("Page.enable")\n                await call("Page.navigate", url=server)\n                end = time.time() + 240\n                while not await js("!!(window.app && window.app.graph && window.app.graph.nodes !== undefined && window.LiteGraph)"):\n                    if time.time() > end:\n                        raise RuntimeError("frontend did not come up")\n                    await asyncio.sleep(1)\n                await asyncio.sleep(3)\n                for name in ("instructgie_basic", "instructgie_stock_nodes", "instructgie_faces"):\n                    ui = open(os.path.join(workflows, name + ".json")).read()\n                    out = await js(f"(async () => {{ await app.loadGraphData({ui}); const p = await app.graphToPrompt(); return JSON.stringify(p.output); }})()")\n                    print("RESULT " + json.dumps({"name": name, "kind": "json", "prompt": json.loads(out)}), flush=True)\n                    b64 = base64.b64encode(open(os.path.join(workflows, name + ".png"), "rb").read()).decode()\n                    await js("(async () => { await app.loadGraphData({nodes: [], links: [], version: 0.4}); })()")\n                    out = await js(f"""(async () => {{\n                        const b = Uint8Array.from(atob("{b64}"), c => c.charCodeAt(0));\n                        await app.handleFile(new File([b], "{name}.png", {{type: "image/png"}}));\n                        await new Promise(r => setTimeout(r, 500));\n                        const p = await app.graphToPrompt(); return JSON.stringify(p.output); }})()""")\n                    print("RESULT " + json.dumps({"name": name, "kind": "png", "prompt": json.loads(out)}), flush=True)\n    finally:\n        proc.terminate()\n        proc.wait(20)\n\nasyncio.run(main())\n'


def test_real_frontend_loads_workflows_and_pngs_as_their_api_twins(server, comfy, tmp_path):
    """ComfyUI's own frontend, in headless Chromium: load each UI file (app.loadGraphData) and drop
    each PNG (app.handleFile, the drag-and-drop path); graphToPrompt must give the API twin."""
    chromium = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
    if chromium is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium) to drive ComfyUI's frontend")
    script = tmp_path / "frontend_check.py"
    script.write_text(FRONTEND_SCRIPT)
    r = subprocess.run([comfy["python"], str(script), server.url, chromium, str(WORKFLOWS), str(_free_port())],
                       capture_output=True, text=True, timeout=900)
    results = [json.loads(ln[len("RESULT "):]) for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and len(results) == 6, (r.stdout[-2000:], r.stderr[-3000:])
    for res in results:
        print(f"frontend {res['kind']:4s} {res['name']}: graphToPrompt == API twin: {res['prompt'] == _api(res['name'])}")
        assert res["prompt"] == _api(res["name"])


def test_interrupt_mid_sampling_and_every_workflow_validates(server):
    """A long run is interrupted after its first step; meanwhile ComfyUI's POST /prompt validates
    every shipped workflow unchanged (they are queued, then taken off the queue)."""
    long = _small(_api("instructgie_basic"), tile=64, steps=40)
    status, body = server.post("/prompt", {"prompt": long})
    assert status == 200, body
    long_id = body["prompt_id"]
    end = time.time() + 900
    while not re.search(r"\b1/40 \[", server.log_text()):
        assert time.time() < end, server.log_text()[-3000:]
        h = server.get(f"/history/{long_id}")
        assert long_id not in h, f"the long run ended early: {json.dumps(h)[:2000]}"
        time.sleep(0.5)
    queued = []
    for name in ("instructgie_basic", "instructgie_stock_nodes", "instructgie_faces"):
        status, body = server.post("/prompt", {"prompt": _api(name)})
        print(f"POST /prompt {name}_api.json -> {status} node_errors={body.get('node_errors')}")
        assert status == 200 and body["node_errors"] == {}, body
        queued.append(body["prompt_id"])
    assert server.post("/queue", {"delete": queued})[0] == 200
    assert server.post("/interrupt", {})[0] == 200
    entry = server.wait(long_id, timeout=600)
    kinds = [m[0] for m in entry["status"]["messages"]]
    print("interrupted run:", entry["status"]["status_str"], kinds)
    assert "execution_interrupted" in kinds
    assert not re.search(r"\b40/40 \[", server.log_text()), "sampling ran to the end despite the interrupt"
    queue = server.get("/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []


WS_SCRIPT = '"""Queue a prompt as a websocket client and record what ComfyUI streams back (progress, previews)."""\nimport asyncio, json, sys, uuid\nimport aiohttp\n\nserver, prompt_path = sys.argv[1], sys.argv[2]\n\n\nasync def main():\n    cid = uuid.uuid4().hex\n    prompt = json.load(open(prompt_path))\n    out = {"progress": [], "binary_frames": 0, "types": []}\n    async with aiohttp.ClientSession() as s:\n        async with s.ws_connect(server.replace("http", "ws", 1) + "/ws?clientId=" + cid, max_msg_size=0) as ws:\n            async with s.post(server + "/prompt", json={"prompt": prompt, "client_id": cid}) as r:\n                body = await r.json()\n                assert r.status == 200, body\n            out["prompt_id"] = pid = body["prompt_id"]\n            while True:\n                msg = await asyncio.wait_for(ws.receive(), timeout=900)\n                if msg.type == aiohttp.WSMsgType.BINARY:\n                    out["binary_frames"] += 1\n                    continue\n                if msg.type != aiohttp.WSMsgType.TEXT:\n                    break\n                m = json.loads(msg.data)\n                out["types"].append(m["type"])\n                d = m.get("data", {})\n                if m["type"] == "progress":\n                    out["progress"].append([d.get("value"), d.get("max"), d.get("node")])\n                if m["type"] in ("execution_success", "execution_error", "execution_interrupted") and d.get("prompt_id") == pid:\n                    break\n    print("RESULT " + json.dumps(out))\n\n\nasyncio.run(main())\n'


def test_basic_workflow_end_to_end(server, comfy, tmp_path):
    """Queued as the browser does (websocket client): progress and latent previews stream back."""
    import numpy as np

    from gie_core.visual_prompt import build

    t = time.time()
    (tmp_path / "prompt.json").write_text(json.dumps(_small(_api("instructgie_basic"), steps=2)))
    (tmp_path / "ws.py").write_text(WS_SCRIPT)
    r = subprocess.run([comfy["python"], str(tmp_path / "ws.py"), server.url, str(tmp_path / "prompt.json")],
                       capture_output=True, text=True, timeout=1200)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, (r.stdout[-2000:], r.stderr[-3000:])
    stream = json.loads(line[len("RESULT "):])
    sampler_steps = [p for p in stream["progress"] if p[2] == "9"]
    print(f"websocket: sampler progress {sampler_steps}, {stream['binary_frames']} binary preview frames")
    assert [p[:2] for p in sampler_steps] == [[1, 2], [2, 2]]  # ComfyUI's progress bar, from our node
    assert stream["binary_frames"] >= 2  # a latent preview per step
    entry = server.wait(stream["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    (edit,) = _outputs(server, entry, "10")
    (grid,) = _outputs(server, entry, "11")
    (faces,) = _outputs(server, entry, "14")
    print(f"basic workflow: edit {edit.size}, grid {grid.size}, face mask {faces.size} in {time.time() - t:.0f} s")
    query = (WORKFLOWS / "example_inputs" / "instructgie_query.png")
    from PIL import Image

    assert edit.size == Image.open(query).size  # cropped back to the query's own size
    assert grid.size == (128, 128) and faces.size == edit.size
    # The known cells are the inputs' (built here independently of ComfyUI); the target is generated.
    ins = [torch.from_numpy(np.array(Image.open(WORKFLOWS / "example_inputs" / f).convert("RGB"))).float()[None] / 255
           for f in ("instructgie_example_before.png", "instructgie_example_after.png", "instructgie_query.png")]
    vp = build([(ins[0], ins[1])], ins[2], tile=64, resize="fit")
    got = torch.from_numpy(np.array(grid)).float() / 255
    known = vp.target_mask[0] == 0
    assert (got[known] - vp.grid[0][known]).abs().max() <= 1.5 / 255
    assert (got[~known] - vp.hint[0][~known]).abs().mean() > 0.02  # not the blank cell any more


def test_stock_nodes_workflow_end_to_end(server):
    t = time.time()
    entry = server.run_prompt(_small(_api("instructgie_stock_nodes")))
    assert entry["status"]["status_str"] == "success", entry["status"]
    (edit,) = _outputs(server, entry, "15")
    print(f"stock-node workflow: edit {edit.size} in {time.time() - t:.0f} s")
    assert edit.size == (64, 64)  # the target cell, cropped by ImageCrop


def test_faces_workflow_end_to_end(server):
    entry = server.run_prompt(_api("instructgie_faces"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    (mask,) = _outputs(server, entry, "4")
    (cut,) = _outputs(server, entry, "7")
    print(f"faces workflow: mask {mask.size}, cut-out {cut.size}")
    assert mask.size == cut.size == (256, 256)
