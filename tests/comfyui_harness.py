"""A real ComfyUI for tests/test_comfyui.py and scripts/comfyui_screenshots.py: which Python runs it,
SD1.5-shaped stand-in models with random weights, and a server on 127.0.0.1.

No ComfyUI import here: ComfyUI runs in its own Python (``COMFYUI_PYTHON``), in a subprocess.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UI_DIR = REPO / "example_workflows"        # what ComfyUI lists under Templates (UI format + thumbnails)
API_DIR = REPO / "api_workflows"           # their API-format twins, for POST /prompt
INPUT_DIR = UI_DIR / "input"               # the example images the workflows load
WORKFLOWS = sorted(p.name[: -len("_api.json")] for p in API_DIR.glob("*_api.json"))
CKPT_NAME = "v1-5-pruned-emaonly-fp16.safetensors"  # the names the shipped workflows use
CN_NAME = "instructgie_vmamba_sd15.safetensors"
PACK_DIR_NAME = "ComfyUI-InstructGIE"

# What ComfyUI 0.8 imports before it serves anything (comfy/sd.py pulls torchvision in).
PROBE = "import comfyui_version, torch, torchvision, aiohttp, yaml, safetensors; print(comfyui_version.__version__)"


def api_workflow(name: str) -> dict:
    return json.loads((API_DIR / f"{name}_api.json").read_text())


def ui_workflow(name: str) -> dict:
    return json.loads((UI_DIR / f"{name}.json").read_text())


def small_prompt(prompt: dict, tile: int = 64, steps: int = 1) -> dict:
    """An API prompt with 64-px tiles and one step (the crop node follows the tile): the same wiring,
    a few seconds on a CPU instead of minutes."""
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


def comfyui_python(path: Path) -> list[str]:
    """Candidate interpreters for ComfyUI at ``path``: $COMFYUI_PYTHON, else its venv, else this one."""
    if os.environ.get("COMFYUI_PYTHON"):
        return [os.environ["COMFYUI_PYTHON"]]
    venv = path / "venv" / "bin" / "python"
    return [str(venv)] if venv.exists() else [sys.executable]


def probe(python: str, path: Path) -> tuple[str | None, str]:
    """(ComfyUI's version, "") when ``python`` can start ComfyUI at ``path``, else (None, why)."""
    try:
        r = subprocess.run([python, "-c", PROBE], cwd=path, capture_output=True, text=True, timeout=300)
    except OSError as e:
        return None, str(e)
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return None, last
    return r.stdout.strip(), ""


def linked_pack(path: Path) -> Path | None:
    """The folder in ``path/custom_nodes`` that is this repository (a link or the clone itself)."""
    custom = path / "custom_nodes"
    if not custom.is_dir():
        return None
    return next((p for p in custom.iterdir() if p.resolve() == REPO), None)


# --------------------------------------------------------------------------------------------------
# Stand-in models: full SD1.5 shapes (ComfyUI's model detection needs them), random weights
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
    import torch
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


def stand_in_models(python: str, comfy_path: Path, log=print) -> dict:
    """The checkpoint (built with ComfyUI's own classes) and the VMamba ControlNet (gie_core), cached in
    ``$INSTRUCTGIE_TEST_CACHE`` (default ~/.cache/instructgie/comfyui-tests) under a hash of this code."""
    key = hashlib.sha256((CHECKPOINT_SCRIPT + inspect.getsource(build_controlnet)).encode()).hexdigest()[:12]
    root = os.environ.get("INSTRUCTGIE_TEST_CACHE", Path.home() / ".cache" / "instructgie" / "comfyui-tests")
    cache = Path(root) / key
    cache.mkdir(parents=True, exist_ok=True)
    ckpt, cn = cache / CKPT_NAME, cache / CN_NAME
    if not ckpt.exists():
        t = time.time()
        script = cache / "make_checkpoint.py"
        script.write_text(CHECKPOINT_SCRIPT)
        r = subprocess.run([python, str(script), str(ckpt)], cwd=comfy_path, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"building the stand-in checkpoint failed:\n{r.stderr[-3000:]}")
        log(f"built {ckpt.name} with ComfyUI's classes in {time.time() - t:.0f} s")
    if not cn.exists():
        t = time.time()
        build_controlnet(cn)
        log(f"built {cn.name} with gie_core in {time.time() - t:.0f} s")
    return {"checkpoint": ckpt, "controlnet": cn}


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------
class Server:
    def __init__(self, url: str, log: Path, run: Path):
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

    def log_text(self) -> str:
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_run_dir(run: Path, models: dict) -> None:
    """Model, input, output, temp and user folders for one server (the example images in input/)."""
    for sub in ("checkpoints", "instructgie", "controlnet"):
        (run / "models" / sub).mkdir(parents=True, exist_ok=True)
    os.symlink(models["checkpoint"], run / "models" / "checkpoints" / CKPT_NAME)
    os.symlink(models["controlnet"], run / "models" / "instructgie" / CN_NAME)
    for sub in ("input", "output", "temp", "user"):
        (run / sub).mkdir(exist_ok=True)
    for png in INPUT_DIR.glob("*.png"):
        shutil.copy(png, run / "input" / png.name)
    (run / "extra_model_paths.yaml").write_text(
        f"instructgie_tests:\n    base_path: {run / 'models'}\n    checkpoints: checkpoints\n"
        f"    controlnet: controlnet\n    instructgie: instructgie\n")


@contextlib.contextmanager
def running_server(comfy_path: Path, python: str, run: Path, timeout: float = 300):
    """ComfyUI's main.py with --cpu on a free port of 127.0.0.1 (never another address)."""
    port = free_port()
    log = run / "server.log"
    cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--extra-model-paths-config", str(run / "extra_model_paths.yaml"),
           "--input-directory", str(run / "input"), "--output-directory", str(run / "output"),
           "--temp-directory", str(run / "temp"), "--user-directory", str(run / "user"),
           "--preview-method", "latent2rgb", "--disable-auto-launch"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=comfy_path, stdout=f, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", log, run)
    try:
        end = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                srv.get("/object_info/InstructGIESampler")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() > end:
                    raise RuntimeError(f"ComfyUI did not start in {timeout:.0f} s:\n{log.read_text()[-3000:]}") from None
                time.sleep(1.0)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
