"""Screenshots of the shipped workflows in ComfyUI's real frontend, for the docs and the Templates panel.

    bash scripts/comfyui_screenshots.sh [--steps N] [--only NAME]

(the .sh prepares ComfyUI, Chromium's driver and then runs this). Not part of CI. It starts the real
ComfyUI 0.8 (``$COMFYUI_PATH`` with ``$COMFYUI_PYTHON``) on 127.0.0.1 with the SD1.5-shaped stand-in
models of the tests, drops each ``example_workflows/*.json`` onto the canvas in headless Chromium
(scripts/comfyui_screenshots.mjs) and writes:

- ``example_workflows/NAME.png``: the workflow as dropped (1920x960, 256 colours), carrying the
  workflow and its API twin in its metadata like ComfyUI's Save Image, so dropping the picture
  onto ComfyUI loads the workflow;
- ``example_workflows/NAME.jpg``: the Templates card thumbnail (the graph, square, 512 px);
- ``docs/images/NAME_after_run.png``: the same after a run from the page (the tests' small version:
  64-px tiles, ``--steps`` steps; the stand-in models have random weights, so the outputs are noise;
  the point is where they show);
- ``docs/images/comfyui_templates.png``: the Templates panel opened on this pack.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]
import comfyui_harness as harness  # noqa: E402

DOCS = ROOT / "docs" / "images"
THUMB = 512


def quantized(path: Path, width: int | None = None) -> Image.Image:
    img = Image.open(path).convert("RGB")
    if width and img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    return img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def thumbnail(shot: Path, ui: dict, view: dict) -> Image.Image:
    """The groups' area of the screenshot, padded to a square, THUMB px."""
    img = Image.open(shot).convert("RGB")
    s, (ox, oy) = view["scale"], view["offset"]
    boxes = [g["bounding"] for g in ui["groups"]]
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    margin = 12
    crop = img.crop((max(0, int((x0 + ox) * s) - margin), max(0, int((y0 + oy) * s) - margin),
                     min(img.width, int((x1 + ox) * s) + margin), min(img.height, int((y1 + oy) * s) + margin)))
    side = max(crop.size)
    background = crop.getpixel((1, 1))  # the canvas just outside the groups
    square = Image.new("RGB", (side, side), background)
    square.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
    return square.resize((THUMB, THUMB), Image.LANCZOS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1, help="sampling steps of the run before the after-run shots")
    parser.add_argument("--only", action="append", help="a workflow name (repeatable); default: all")
    parser.add_argument("--rebuild-workflows", action="store_true",
                        help="first regenerate example_workflows/*.json with scripts/build_workflows.py")
    parser.add_argument("--playwright", default=os.environ.get("PLAYWRIGHT_DIR"),
                        help="folder whose node_modules holds playwright-core (set by the .sh)")
    args = parser.parse_args(argv)
    if not os.environ.get("COMFYUI_PATH") or not os.environ.get("COMFYUI_PYTHON"):
        parser.error("COMFYUI_PATH and COMFYUI_PYTHON must be set: run scripts/comfyui_screenshots.sh")
    if not args.playwright or not (Path(args.playwright) / "node_modules" / "playwright-core").is_dir():
        parser.error("--playwright must name a folder with node_modules/playwright-core: run scripts/comfyui_screenshots.sh")
    names = args.only or harness.WORKFLOWS
    comfy_path, python = Path(os.environ["COMFYUI_PATH"]), os.environ["COMFYUI_PYTHON"]
    models = harness.stand_in_models(python, comfy_path)
    DOCS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="instructgie-shots-") as tmp:
        tmp = Path(tmp)
        run, shots = tmp / "run", tmp / "shots"
        shots.mkdir()
        harness.prepare_run_dir(run, models)
        # A first visit opens the template browser over the canvas; a returning user's does not.
        (run / "user" / "default").mkdir(parents=True)
        (run / "user" / "default" / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
        for name in names:
            (tmp / f"{name}.small.json").write_text(json.dumps(harness.small_prompt(harness.api_workflow(name), steps=args.steps)))
        # ES modules resolve packages next to the script: run a copy beside node_modules.
        driver = Path(args.playwright) / "comfyui_screenshots.mjs"
        shutil.copy(ROOT / "scripts" / "comfyui_screenshots.mjs", driver)
        with harness.running_server(comfy_path, python, run) as server:
            if args.rebuild_workflows:
                import build_workflows

                build_workflows.main(["--server", server.url])
            r = subprocess.run(["node", str(driver), server.url, str(harness.UI_DIR), str(tmp), str(shots), ",".join(names)],
                               capture_output=True, text=True, timeout=3600)
            if r.returncode:
                print(r.stdout[-3000:], r.stderr[-5000:], file=sys.stderr)
                return 1
            write_pictures(names, shots, r.stdout)
            # The Templates panel, now that the thumbnails exist.
            t = subprocess.run(["node", str(driver), server.url, "templates", str(shots)],
                               capture_output=True, text=True, timeout=600)
        if t.returncode:
            print(t.stdout[-3000:], t.stderr[-5000:], file=sys.stderr)
            return 1
        quantized(shots / "templates.png", 1280).save(DOCS / "comfyui_templates.png", optimize=True)
        print("wrote docs/images/comfyui_templates.png")
    return 0


def write_pictures(names: list[str], shots: Path, stdout: str) -> None:
    """The screenshots into the repo: PNGs with the workflow, thumbnails, after-run pictures."""
    views = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            views[Path(d["file"]).name] = d
    for name in names:
        ui, api = harness.ui_workflow(name), harness.api_workflow(name)
        meta = PngInfo()
        meta.add_text("workflow", json.dumps(ui))
        meta.add_text("prompt", json.dumps(api))
        out = harness.UI_DIR / f"{name}.png"
        quantized(shots / f"{name}.png").save(out, pnginfo=meta, optimize=True)
        thumbnail(shots / f"{name}.png", ui, views[f"{name}.png"]).save(harness.UI_DIR / f"{name}.jpg", quality=85)
        print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size // 1024} KB) and {name}.jpg")
        after = shots / f"{name}.after_run.png"
        if after.exists():
            quantized(after, 1280).save(DOCS / f"{name}_after_run.png", optimize=True)
            print(f"wrote docs/images/{name}_after_run.png")


if __name__ == "__main__":
    sys.exit(main())
