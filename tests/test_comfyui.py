"""The pack inside a real ComfyUI (v0.8+), started as a server on 127.0.0.1 with ``--cpu``.

``scripts/test.sh`` (hence CI) prepares one with ``scripts/comfyui_env.sh``: a temporary copy of
ComfyUI 0.8.0 with this repo in its custom_nodes and its own Python. By hand, either source that
script or set ``COMFYUI_PATH`` (a ComfyUI checkout with this repo linked into custom_nodes) and
``COMFYUI_PYTHON`` (its interpreter; default ``$COMFYUI_PATH/venv/bin/python``, else this one).
Without a usable ComfyUI the module is skipped with one line saying why; with
``INSTRUCTGIE_REQUIRE_COMFYUI=1`` (set by comfyui_env.sh) it fails instead.
Models: SD1.5-shaped stand-ins with random weights (tests/comfyui_harness.py), cached between runs.
Sampling is kept small (64-px tiles, 1-2 steps) because the point is the wiring, not the picture.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path

import comfyui_harness as harness
import pytest
import torch
from comfyui_harness import CN_NAME, REPO, WORKFLOWS, api_workflow, small_prompt, ui_workflow

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

REQUIRED = os.environ.get("INSTRUCTGIE_REQUIRE_COMFYUI") == "1"
OUR_NODES = {"InstructGIEVMambaControlNetLoader": "InstructGIE VMamba ControlNet Loader",
             "InstructGIEVisualPromptConcatenate": "InstructGIE Visual Prompt Concatenate",
             "InstructGIEInstructionUnifier": "InstructGIE Instruction Unifier",
             "InstructGIEFaceRegionMask": "InstructGIE Face-Region Mask",
             "InstructGIESampler": "InstructGIE Sampler"}
EDIT, STOCK, FACES = "instructgie_edit_by_example", "instructgie_edit_with_stock_nodes", "instructgie_face_region_mask"
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # virtual nodes: never part of a prompt


def unavailable(reason: str):
    """Skip, or fail where ComfyUI was prepared on purpose (CI)."""
    if REQUIRED:
        pytest.fail(f"{reason} (INSTRUCTGIE_REQUIRE_COMFYUI=1: ComfyUI was prepared, so these tests must run)",
                    pytrace=False)
    pytest.skip(reason)


def find_comfyui() -> tuple[dict | None, str]:
    """The ComfyUI to test against, or None and one line saying what is missing."""
    raw = os.environ.get("COMFYUI_PATH")
    if not raw:
        return None, ("COMFYUI_PATH is not set: run `source scripts/comfyui_env.sh` (or point COMFYUI_PATH at a "
                      "ComfyUI 0.8 checkout) to run the ComfyUI tests")
    path = Path(raw)
    if not (path / "main.py").is_file() or not (path / "nodes.py").is_file():
        return None, f"COMFYUI_PATH={raw} is not a ComfyUI checkout (no main.py / nodes.py)"
    tried = []
    for python in harness.comfyui_python(path):
        version, why = harness.probe(python, path)
        if version:
            break
        tried.append(f"{python}: {why}")
    else:
        return None, (f"COMFYUI_PATH={raw} is set but no Python that can start ComfyUI was given "
                      f"({'; '.join(tried)}); set COMFYUI_PYTHON to ComfyUI's own Python, or run "
                      f"`source scripts/comfyui_env.sh`")
    if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) < (0, 8):
        return None, f"ComfyUI {version} at {raw} is older than the v0.8 these tests target"
    pack = harness.linked_pack(path)
    if pack is None:
        return None, (f"this repo is not in {path / 'custom_nodes'} "
                      f"(ln -s {REPO} {path}/custom_nodes/{harness.PACK_DIR_NAME})")
    return {"path": path, "python": python, "pack": pack, "version": version}, ""


COMFY, WHY_NOT = find_comfyui()
if COMFY is None:
    if REQUIRED:
        pytest.fail(f"{WHY_NOT} (INSTRUCTGIE_REQUIRE_COMFYUI=1)", pytrace=False)
    pytest.skip(WHY_NOT, allow_module_level=True)


@pytest.fixture(scope="module")
def comfy():
    print(f"\nComfyUI {COMFY['version']} at {COMFY['path']}, python {COMFY['python']}, pack at {COMFY['pack']}")
    return COMFY


@pytest.fixture(scope="module")
def models(comfy):
    return harness.stand_in_models(comfy["python"], comfy["path"])


@pytest.fixture(scope="module")
def server(comfy, models, tmp_path_factory):
    run = tmp_path_factory.mktemp("comfyui_run")
    harness.prepare_run_dir(run, models)
    # A safetensors file that is not an InstructGIE ControlNet, in the controlnet folder.
    from safetensors.torch import save_file
    save_file({"zero_convs.0.0.weight": torch.zeros(4, 4, 1, 1)}, str(run / "models" / "controlnet" / "not_instructgie.safetensors"))
    with harness.running_server(comfy["path"], comfy["python"], run) as srv:
        yield srv


def _outputs(server, entry, node_id):
    """The images a node saved, fetched through ComfyUI's /view endpoint."""
    from PIL import Image

    out = []
    for im in entry["outputs"][node_id]["images"]:
        query = urllib.parse.urlencode({k: im[k] for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=60) as r:
            out.append(Image.open(io.BytesIO(r.read())).convert("RGB"))
    return out


def pack_log_problems(log: str, pack: Path) -> list[str]:
    """What ComfyUI's log says went wrong with this pack, and only this pack (ComfyUI's own nodes may
    fail to import, e.g. its audio nodes without torchaudio): its import line marked IMPORT FAILED,
    a 'Cannot import' of it, or a traceback through its files."""
    ours = {str(pack), str(pack.resolve())}
    problems = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if any(p in line for p in ours) and ("IMPORT FAILED" in line or "Cannot import" in line):
            problems.append(line.strip())
        if line.startswith("Traceback (most recent call last):"):
            block = [line]
            for nxt in lines[i + 1:]:
                block.append(nxt)
                if not nxt.startswith(" "):
                    break
            if any(p in b for b in block for p in ours):
                problems.append("\n".join(block))
    return problems


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
        folder_paths.models_dir = os.path.join({str(tmp_path)!r}, "models")  # empty: see what the pack creates
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
        out["model_folder"] = os.path.isdir(os.path.join({str(tmp_path)!r}, "models", "instructgie"))
        print("RESULT " + json.dumps(out))
    '''))
    r = subprocess.run([comfy["python"], str(script)], cwd=comfy["path"], capture_output=True, text=True, timeout=900)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, (r.stdout[-2000:], r.stderr[-4000:])
    res = json.loads(line[len("RESULT "):])
    print("\nin-process ComfyUI:", json.dumps(res, indent=1))
    assert res["loaded"] is True
    assert res["model_folder"] is True  # models/instructgie, as docs/comfyui.md promises
    assert res["nodes"] == sorted(OUR_NODES)
    assert res["controlnet_class"] == "comfy.controlnet.ControlNet"
    assert res["hint_block"] == "VMambaHintBlock"
    assert res["hint_changes_output"] > 0
    assert res["rows_reused_second_step"] == 2  # both rows of the batch came from the cache
    assert "not an InstructGIE VMamba ControlNet" in res["plain_error"] and "Load ControlNet Model" in res["plain_error"]
    assert "SDXL" in res["sdxl_error"] and "SD1.x" in res["sdxl_error"] and "checkpoint" in res["sdxl_error"]
    assert "SDXL" in res["sdxl_stock_error"] and "SD1.5 checkpoint" in res["sdxl_stock_error"]


def test_server_imports_the_pack_and_lists_the_nodes(server, comfy):
    log = server.log_text()
    pack_line = re.search(rf"^\s*[\d.]+ seconds: {re.escape(str(comfy['pack']))}\s*$", log, re.M)
    assert pack_line, f"no import line for {comfy['pack']} in ComfyUI's log:\n{log[-3000:]}"
    assert pack_log_problems(log, comfy["pack"]) == []
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


def test_pack_log_problems_sees_only_the_pack():
    """The log filter itself: ComfyUI's own failures are ignored, the pack's are found."""
    pack = Path("/x/custom_nodes/ComfyUI-InstructGIE")
    theirs = ("Traceback (most recent call last):\n  File \"/x/comfy_extras/nodes_audio.py\", line 1\n"
              "ModuleNotFoundError: No module named 'torchaudio'\nIMPORT FAILED: nodes_audio.py\n"
              "   0.1 seconds: /x/custom_nodes/ComfyUI-InstructGIE\n")
    assert pack_log_problems(theirs, pack) == []
    ours = ("Traceback (most recent call last):\n  File \"/x/custom_nodes/ComfyUI-InstructGIE/nodes/loader.py\"\n"
            "ImportError: boom\nCannot import /x/custom_nodes/ComfyUI-InstructGIE module for custom nodes: boom\n"
            "   0.0 seconds (IMPORT FAILED): /x/custom_nodes/ComfyUI-InstructGIE\n")
    assert len(pack_log_problems(ours, pack)) == 3


def test_templates_list_the_ui_workflows_with_thumbnails(server, comfy):
    """Templates -> Extensions: ComfyUI lists the pack's example_workflows/*.json (only those) and
    serves each with its .jpg thumbnail, the URLs the frontend uses for the cards."""
    from PIL import Image

    templates = server.get("/workflow_templates")
    module = comfy["pack"].name
    assert sorted(templates.get(module, [])) == WORKFLOWS, templates
    for name in WORKFLOWS:
        base = f"{server.url}/api/workflow_templates/{urllib.parse.quote(module)}/{name}"
        with urllib.request.urlopen(base + ".json", timeout=60) as r:
            ui = json.load(r)
        assert ui == ui_workflow(name) and ui["nodes"] and ui["version"]  # a UI workflow, loadable
        with urllib.request.urlopen(base + ".jpg", timeout=60) as r:
            thumb = Image.open(io.BytesIO(r.read()))
        assert thumb.format == "JPEG" and min(thumb.size) >= 200


def _ui_to_api(ui: dict, info: dict) -> dict:
    """What the frontend's graphToPrompt makes of a UI workflow (widgets by input order, links)."""
    links = {l[0]: l for l in ui["links"]}
    out = {}
    for n in ui["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
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
        out[str(n["id"])] = {"class_type": n["type"], "inputs": inputs, "_meta": {"title": n["title"]}}
    return out


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_encodes_the_api_twin(server, name):
    assert _ui_to_api(ui_workflow(name), server.get("/object_info")) == api_workflow(name)


def _rects(state: dict) -> dict:
    """Node rectangles [x0, y0, x1, y1] in canvas units, title bar included."""
    th = state["title_height"]
    return {n["id"]: (n["pos"][0], n["pos"][1] - th, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in state["nodes"]}


def _check_frontend_layout(state: dict, saved: dict) -> None:
    """What the frontend shows matches the saved layout: no node grown or needing more room, no two
    nodes overlapping, the saved view applied and every node on screen."""
    saved_nodes = {n["id"]: n for n in saved["nodes"]}
    where = f"{state['name']} ({state['kind']})"
    for n in state["nodes"]:
        s = saved_nodes[n["id"]]
        assert not n["collapsed"]
        assert abs(n["size"][0] - s["size"][0]) <= 1 and abs(n["size"][1] - s["size"][1]) <= 1, \
            f"{where}: the frontend resized '{n['title']}' from {s['size']} to {n['size']}"
        assert n["needs"][0] <= n["size"][0] + 1 and n["needs"][1] <= n["size"][1] + 1, \
            f"{where}: '{n['title']}' needs {n['needs']} but has {n['size']}"
    rects = _rects(state)
    titles = {n["id"]: n["title"] for n in state["nodes"]}
    ids = sorted(rects)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            ra, rb = rects[a], rects[b]
            assert ra[2] <= rb[0] or rb[2] <= ra[0] or ra[3] <= rb[1] or rb[3] <= ra[1], \
                f"{where}: '{titles[a]}' {ra} overlaps '{titles[b]}' {rb}"
    view = saved["extra"]["ds"]
    assert state["view"]["scale"] == pytest.approx(view["scale"])
    assert state["view"]["offset"] == pytest.approx(view["offset"])
    scale, (ox, oy) = state["view"]["scale"], state["view"]["offset"]
    width, height = state["canvas"]
    for nid, (x0, y0, x1, y1) in rects.items():
        sx0, sy0, sx1, sy1 = (x0 + ox) * scale, (y0 + oy) * scale, (x1 + ox) * scale, (y1 + oy) * scale
        assert 0 <= sx0 and 0 <= sy0 and sx1 <= width and sy1 <= height, \
            f"{where}: '{titles[nid]}' is off screen at {width}x{height}: {(sx0, sy0, sx1, sy1)}"


def test_real_frontend_shows_the_workflows_as_laid_out(server, comfy, tmp_path):
    """ComfyUI's own frontend in headless Chromium: each UI file and each PNG, dropped as a user drops
    them (app.handleFile), gives the API twin through graphToPrompt; once the Load Image previews are
    shown, and again after a run has put images on the output nodes, no node has grown, needs more
    room than saved or overlaps another, and the saved view shows every node."""
    chromium = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
    if chromium is None:
        unavailable("no Chromium on PATH (apt-get install chromium) to drive ComfyUI's frontend")
    for name in WORKFLOWS:
        (tmp_path / f"{name}.small.json").write_text(json.dumps(small_prompt(api_workflow(name))))
    script = Path(__file__).with_name("comfyui_frontend_check.py")
    r = subprocess.run([comfy["python"], str(script), server.url, chromium, str(harness.UI_DIR), str(tmp_path),
                        ",".join(WORKFLOWS)], capture_output=True, text=True, timeout=3600)
    results = [json.loads(ln[len("RESULT "):]) for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and len(results) == 3 * len(WORKFLOWS), (r.stdout[-2000:], r.stderr[-3000:])
    for res in results:
        name, kind = res["name"], res["kind"]
        grown = [n["title"] for n in res["nodes"] if n["images"]]
        print(f"frontend {kind:9s} {name}: graphToPrompt == API twin: {res['prompt'] == api_workflow(name)}; "
              f"{len(res['nodes'])} nodes at scale {res['view']['scale']}, images on {grown}")
        assert res["prompt"] == api_workflow(name)
        if kind != "png":
            _check_frontend_layout(res, ui_workflow(name))
        if kind == "after_run":  # every node that saves or previews images shows them
            shown = {n["id"] for n in res["nodes"] if n["images"]}
            outputs = {int(k) for k, v in api_workflow(name).items() if v["class_type"] in ("SaveImage", "PreviewImage")}
            assert outputs <= shown


def test_interrupt_mid_sampling_and_every_workflow_validates(server):
    """A long run is interrupted after its first step; meanwhile ComfyUI's POST /prompt validates
    every shipped workflow unchanged (they are queued, then taken off the queue)."""
    long = small_prompt(api_workflow(EDIT), tile=64, steps=40)
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
    for name in WORKFLOWS:
        status, body = server.post("/prompt", {"prompt": api_workflow(name)})
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


def test_edit_workflow_end_to_end(server, comfy, tmp_path):
    """Queued as the browser does (websocket client): progress and latent previews stream back."""
    import numpy as np
    from PIL import Image

    from gie_core.visual_prompt import build

    t = time.time()
    (tmp_path / "prompt.json").write_text(json.dumps(small_prompt(api_workflow(EDIT), steps=2)))
    r = subprocess.run([comfy["python"], str(Path(__file__).with_name("comfyui_ws_client.py")), server.url,
                        str(tmp_path / "prompt.json")], capture_output=True, text=True, timeout=1200)
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
    print(f"edit workflow: edit {edit.size}, grid {grid.size}, face mask {faces.size} in {time.time() - t:.0f} s")
    inputs = harness.INPUT_DIR
    assert edit.size == Image.open(inputs / "instructgie_query.png").size  # cropped back to the query's own size
    assert grid.size == (128, 128) and faces.size == edit.size
    # The known cells are the inputs' (built here independently of ComfyUI); the target is generated.
    ins = [torch.from_numpy(np.array(Image.open(inputs / f).convert("RGB"))).float()[None] / 255
           for f in ("instructgie_example_before.png", "instructgie_example_after.png", "instructgie_query.png")]
    vp = build([(ins[0], ins[1])], ins[2], tile=64, resize="fit")
    got = torch.from_numpy(np.array(grid)).float() / 255
    known = vp.target_mask[0] == 0
    assert (got[known] - vp.grid[0][known]).abs().max() <= 1.5 / 255
    assert (got[~known] - vp.hint[0][~known]).abs().mean() > 0.02  # not the blank cell any more


def test_stock_nodes_workflow_end_to_end(server):
    t = time.time()
    entry = server.run_prompt(small_prompt(api_workflow(STOCK)))
    assert entry["status"]["status_str"] == "success", entry["status"]
    (edit,) = _outputs(server, entry, "15")
    print(f"stock-node workflow: edit {edit.size} in {time.time() - t:.0f} s")
    assert edit.size == (64, 64)  # the target cell, cropped by ImageCrop


def test_faces_workflow_end_to_end(server):
    entry = server.run_prompt(api_workflow(FACES))
    assert entry["status"]["status_str"] == "success", entry["status"]
    (mask,) = _outputs(server, entry, "4")
    (cut,) = _outputs(server, entry, "7")
    print(f"faces workflow: mask {mask.size}, cut-out {cut.size}")
    assert mask.size == cut.size == (256, 256)
    assert float(torch.tensor(list(mask.convert("L").getdata())).float().mean()) > 1  # a face was found


def test_every_shipped_workflow_is_run_here():
    """The end-to-end tests above cover every API twin; a new workflow needs one too."""
    assert WORKFLOWS == sorted([EDIT, STOCK, FACES])
