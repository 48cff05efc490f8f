"""`instructgie demo`: InstructGIE editing bundled images with the bundled tiny model, offline."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gie_core._cli.common import (
    BUNDLED_MODEL,
    add_threads_argument,
    apply_threads,
    check_out_dir,
    describe_settings,
    resolve_settings,
)

HELP = "edit bundled example images with the bundled tiny model (offline; a CPU is enough)"
DESCRIPTION = """Shows InstructGIE at work without downloading anything: a tiny but complete model
(text encoder, autoencoder, UNet and VMamba ControlNet, trained from scratch by `instructgie-train
--preset demo_default` on synthetic pictures) edits bundled query images the way bundled example
pairs (before -> after) show, guided by an instruction.

Some edits are of kinds the model was trained on; others (sepia, outline, pixelate) it never saw
in training and must pick up from the example pair alone.

Writes into --out: <case>_edit.png for every case, sheet.png (one row per case: example before |
example after | query | edit | ground truth, labelled) and results.json (instructions, seeds and,
with torchmetrics installed, the PSNR of each edit against the ground truth).

--model DIR uses another trained stack: a folder holding base/ (a diffusers SD folder) and
controlnet.safetensors (or a diffusers controlnet/ folder) — e.g. an instructgie-train output
folder of a tiny preset. Its train_config.json gives the cell size, resize mode, steps, guidance and
whether instructions are unified, as the model was trained and validated (options given here win).

On a CPU the number of torch threads is chosen from the model's size and the CPUs idle now (a small
model runs on one thread: handing its small operations to a second thread costs more than it saves,
and far more when other programs keep the CPUs busy); --threads or $GIE_THREADS set it.

examples:
  instructgie demo
  instructgie demo --out demo_out --steps 30 --seed 1
  instructgie demo --model runs/demo_full --case flip_h --case sepia
"""

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_MODEL = BUNDLED_MODEL
DEMO_INPUTS = ASSETS / "demo"
COLUMNS = ("example before", "example after", "query", "edit", "ground truth")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="instructgie-demo", metavar="DIR",
                   help="output folder (default: ./instructgie-demo)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="denoising steps per edit (default: the model's train_config.json, else 20)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed; case i uses seed+i (default: 0)")
    p.add_argument("--guidance", type=float, default=None, metavar="X",
                   help="classifier-free guidance scale; 1 = off (default: the model's train_config.json, "
                        "else 7.5; trained stacks say 1, as they are validated)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 … (default: auto)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="a trained stack: a folder with base/ and controlnet.safetensors (default: the bundled model)")
    p.add_argument("--case", action="append", default=None, metavar="NAME",
                   help="run only this bundled case (repeatable; default: all); see --list")
    p.add_argument("--list", action="store_true", help="list the bundled cases and exit")
    add_threads_argument(p)


def _load_manifest() -> list[dict]:
    import json

    from gie_core.cli import CLIError

    path = DEMO_INPUTS / "manifest.json"
    if not path.is_file():
        raise CLIError(f"the bundled demo inputs are missing ({path}); reinstall the package")
    return json.loads(path.read_text())["cases"]


def _model_files(folder: Path) -> tuple[Path, Path, Path | None]:
    """(base folder, controlnet file or folder, train_config.json or None) of a trained stack."""
    from gie_core.cli import CLIError
    from gie_core.model_files import ModelLoadError, check_controlnet_path, trained_stack, training_config_for

    try:
        base, controlnet = trained_stack(folder)
        check_controlnet_path(controlnet)
    except ModelLoadError as e:
        if folder == DEFAULT_MODEL:
            raise CLIError(f"the bundled demo model is not installed or damaged ({e}); train one with "
                           "`instructgie-train --preset demo_default` and pass --model runs/demo_full") from None
        raise CLIError(str(e).replace("model: ", "--model: ", 1)) from None
    return base, controlnet, training_config_for(controlnet)


def _check_args(args) -> None:
    from gie_core.cli import CLIError

    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps: expected at least 1, got {args.steps}")
    if args.guidance is not None and args.guidance < 0:
        raise CLIError(f"--guidance: expected a number >= 0, got {args.guidance}")


def _psnr(edit, truth):
    try:
        from torchmetrics.functional.image import peak_signal_noise_ratio
    except ImportError:  # torchmetrics comes with the [train] extra; the demo works without it
        return None
    return round(float(peak_signal_noise_ratio(edit[None].permute(0, 3, 1, 2), truth[None].permute(0, 3, 1, 2),
                                               data_range=1.0)), 2)


def make_sheet(rows: list[dict], cell: int = 128, columns: tuple[str, ...] = COLUMNS):
    """One labelled PNG: a header with the column names, then per case a caption line (blue when
    ``row["seen"]``, else red) and the cells, by default example before | example after | query |
    edit | ground truth (``[H,W,3]`` tensors in 0..1)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    pad, header, caption = 6, 18, 16
    width = pad + len(columns) * (cell + pad)
    height = header + len(rows) * (caption + cell + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        draw.text((pad + j * (cell + pad) + 2, 4), name, fill=(0, 0, 0), font=font)
    y = header
    for row in rows:
        draw.text((pad + 2, y + 2), row["caption"], fill=(40, 40, 160) if row["seen"] else (170, 40, 40), font=font)
        y += caption
        for j, img in enumerate(row["cells"]):
            arr = (img.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            tile = Image.fromarray(arr).resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (pad + j * (cell + pad), y))
        y += cell + pad
    return sheet


def run(args: argparse.Namespace) -> int:
    from gie_core.cli import CLIError

    _check_args(args)
    cases = _load_manifest()
    if args.list:
        for c in cases:
            print(f"{c['name']:<20} {'seen' if c['seen'] else 'UNSEEN':<7} {c['instruction']}")
        return 0
    if args.case:
        known = {c["name"] for c in cases}
        unknown = [n for n in args.case if n not in known]
        if unknown:
            raise CLIError(f"--case {unknown[0]!r}: not a bundled case; expected one of {', '.join(sorted(known))}")
        cases = [c for c in cases if c["name"] in args.case]
    model_dir = Path(args.model) if args.model else DEFAULT_MODEL
    base, controlnet, train_config = _model_files(model_dir)
    settings = resolve_settings(args, train_config)
    out = check_out_dir(args.out)
    print(f"instructgie demo: {describe_settings(settings)}", file=sys.stderr)

    import os

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not os.environ.get("GIE_SCAN_BACKEND"):
        # The demo's scans are tiny (16-32 channels, 128 tokens): the plain PyTorch scan is as fast
        # here, while the fused numba kernel compiles on first use (60-100 s of CPU measured), more
        # than the whole demo. GIE_SCAN_BACKEND set by the user still wins; restored when done.
        os.environ["GIE_SCAN_BACKEND"] = "cpu_torch"
        try:
            return _run_cases(args, cases, model_dir, base, controlnet, settings, out, device)
        finally:
            del os.environ["GIE_SCAN_BACKEND"]
    return _run_cases(args, cases, model_dir, base, controlnet, settings, out, device)


def _run_cases(args, cases, model_dir, base, controlnet, settings, out, device) -> int:
    import json

    from PIL import Image
    from tqdm import tqdm

    from gie_core.cli import CLIError
    from gie_core.loading import ModelLoadError, load_pipeline
    from gie_core.runtime import unet_work
    from gie_core.visual_prompt import to_image_tensor

    def image(name):
        return to_image_tensor(Image.open(DEMO_INPUTS / name).convert("RGB"))[0]

    try:
        pipe = load_pipeline(str(base), str(controlnet), device=device, dtype="fp32", scheduler="ddim")
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from None
    pipe.set_progress_bar_config(disable=True)
    tile, resize, unify = settings["tile"], settings["resize"], settings["unify"]
    steps, guidance = settings["steps"], settings["guidance"]
    work = unet_work(pipe.unet.config, pipe.vae_scale_factor, 2 * tile, 2 * tile) * (2 if guidance > 1 else 1)
    threads = apply_threads(args, device, work)

    bar = tqdm(total=len(cases) * steps, desc="demo", unit="step")
    rows, record = [], {"model": str(model_dir), "steps": steps, "guidance": guidance, "tile": tile,
                        "resize": resize, "device": device, "threads": threads, "cases": []}

    def tick(pipe_, step, t, kwargs):
        bar.update(1)
        return {}

    try:
        for i, case in enumerate(cases):
            bar.set_postfix(case=case["name"])
            ex_before, ex_after = (image(n) for n in case["examples"][0])
            query, truth = image(case["query"]), image(case["ground_truth"])
            try:
                result = pipe.edit([(ex_before, ex_after)], query[None], case["instruction"], tile=tile,
                                   resize=resize, num_inference_steps=steps, guidance_scale=guidance,
                                   seed=args.seed + i, unify=unify, original_size=True, callback_on_step_end=tick)
            except ValueError as e:
                raise CLIError(f"case {case['name']}: {e}") from None
            edit = result.edits[0].float().cpu()
            edit_path = out / f"{case['name']}_edit.png"
            Image.fromarray((edit.clamp(0, 1).numpy() * 255 + 0.5).astype("uint8")).save(edit_path)
            psnr = _psnr(edit, truth)
            tag = "seen" if case["seen"] else "unseen"
            rows.append({"seen": case["seen"], "cells": [ex_before, ex_after, query, edit, truth],
                         "caption": f"{case['family']} ({tag}): \"{case['instruction']}\""
                                    + (f"  PSNR {psnr:.1f} dB" if psnr is not None else "")})
            record["cases"].append({"name": case["name"], "family": case["family"], "seen": case["seen"],
                                    "instruction": case["instruction"], "instruction_used": result.instruction,
                                    "seed": result.seeds[0], "edit": str(edit_path), "psnr_db": psnr})
    finally:
        bar.close()
    sheet_path = out / "sheet.png"
    make_sheet(rows).save(sheet_path)
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    for c in record["cases"]:
        extra = f"  PSNR {c['psnr_db']:.1f} dB" if c["psnr_db"] is not None else ""
        print(f"{c['name']:<20} {'seen' if c['seen'] else 'unseen':<7}{extra}  -> {c['edit']}")
    print(f"sheet: {sheet_path}")
    return 0
