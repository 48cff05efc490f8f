"""`instructgie edit`: edit query images the way example pairs show, from local model files."""
from __future__ import annotations

import argparse
import sys

from gie_core._cli.common import (
    BUNDLED_MODEL,
    add_threads_argument,
    apply_threads,
    check_out_dir,
    check_text,
    describe_settings,
    image_files,
    read_image,
    resolve_settings,
)

HELP = "edit images the way example pairs (before -> after) show, guided by an instruction"
DESCRIPTION = """Edits each --query image the way the --example pairs (before -> after) show, guided by
--instruction, with Stable Diffusion 1.5 (--base) and an InstructGIE VMamba ControlNet (--controlnet).
Everything is read from local files; nothing is downloaded.

The examples and the query are laid out as one grid (the visual prompt): one row per example pair,
the query row last, [before | after] columns. The query's "after" cell is generated; the other cells
are kept. With --tile 256 and one example pair the grid is 512x512, SD1.5's native size.

Writes <query>_edit.png for every query into --out (by default at the query's original size), and
run.json with the settings and seeds needed to reproduce the run.

--base is a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/) or a
single-file SD1.5 checkpoint (.safetensors; .ckpt only with --allow-pickle). A single file carries no
tokenizer: it comes from --tokenizer, $GIE_CLIP_TOKENIZER or the openai-clip package.

--model DIR replaces --base and --controlnet with a folder that instructgie-train wrote for a
from-scratch stack (base/ and controlnet.safetensors); `--model bundled` is the small model the demo
uses. The cell size, resize mode, guidance and steps a model was trained and validated with are read
from the train_config.json beside its ControlNet, for every one of those options not given here.

examples:
  instructgie edit --model bundled --example before.png after.png --query photo.png \\
      --instruction "make it sepia"
  instructgie edit --example cat.png cat_winter.png --query dog.png \\
      --instruction "make it winter" --base ./sd15 --controlnet instructgie.safetensors
  instructgie edit --example a.png a2.png --example b.png b2.png --query q1.jpg --query q2.jpg \\
      --instruction "turn it into a watercolor" --base v1-5-pruned-emaonly.safetensors \\
      --controlnet instructgie.safetensors --steps 30 --seed 42 --scheduler dpmpp_2m --out results/
"""

def add_arguments(p: argparse.ArgumentParser) -> None:
    from gie_core.instruction import MAX_CHARS

    g = p.add_argument_group("inputs")
    g.add_argument("--example", action="append", nargs=2, metavar=("BEFORE", "AFTER"), required=True,
                   help="an example pair: the image before and after the edit (1 to 4 pairs)")
    g.add_argument("--query", action="append", required=True, metavar="IMAGE",
                   help="image to edit (repeat for several; a folder means all images in it)")
    g.add_argument("--instruction", required=True, metavar="TEXT", help='the edit in words, e.g. "make it winter"')
    g.add_argument("--negative", default=None, metavar="TEXT", help="negative prompt (what to avoid)")
    g.add_argument("--no-unify", action="store_true",
                   help="use the instruction as written (default: normalise it as during training)")
    g.add_argument("--truncate", action="store_true",
                   help=f"cut an instruction longer than {MAX_CHARS} characters at a word boundary "
                        "instead of failing")

    g = p.add_argument_group("models")
    g.add_argument("--model", default=None, metavar="DIR",
                   help="a trained stack instead of --base/--controlnet: an instructgie-train output folder with "
                        "base/ and controlnet.safetensors, or 'bundled' for the demo's small model")
    g.add_argument("--base", default=None, metavar="PATH",
                   help="SD1.5: a diffusers folder or a single-file checkpoint (.safetensors)")
    g.add_argument("--controlnet", default=None, metavar="PATH", help="the VMamba ControlNet .safetensors")
    g.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="CLIP tokenizer folder (vocab.json + merges.txt) for single-file checkpoints")
    g.add_argument("--allow-pickle", action="store_true",
                   help="allow a .ckpt/.pt base checkpoint (loaded with weights_only=True); prefer .safetensors")

    from_model = "default: the model's train_config.json, else"
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, metavar="N", default=None, help=f"denoising steps ({from_model} 20)")
    g.add_argument("--guidance", type=float, metavar="X", default=None,
                   help=f"classifier-free guidance scale; 1 = off ({from_model} 7.5)")
    g.add_argument("--strength", "--control-strength", dest="strength", type=float, metavar="X", default=1.0,
                   help="ControlNet strength: scale of its residuals (default: 1.0)")
    g.add_argument("--control-start", type=float, metavar="F", default=0.0,
                   help="fraction of the steps after which the ControlNet starts acting (default: 0)")
    g.add_argument("--control-end", type=float, metavar="F", default=1.0,
                   help="fraction of the steps after which it stops (default: 1)")
    g.add_argument("--seed", type=int, metavar="N", default=None,
                   help="random seed; query i uses seed+i (default: random, written to run.json)")
    g.add_argument("--scheduler", default="ddim", metavar="NAME",
                   help="ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc, pndm, lms, heun, … or a "
                        "diffusers scheduler class name (default: ddim)")

    g = p.add_argument_group("layout")
    g.add_argument("--tile", type=int, metavar="PX", default=None,
                   help=f"grid cell size in pixels, a multiple of 64 ({from_model} 256 -> 512x512 for one pair)")
    g.add_argument("--resize", choices=("fit", "crop", "stretch"), default=None,
                   help="how images go into cells: fit (pad, keep aspect), crop (centre square), stretch "
                        f"({from_model} fit)")
    g.add_argument("--background", default="white", metavar="COLOR",
                   help="colour that transparent pixels are put on: white, black, gray or R,G,B in 0..255")

    g = p.add_argument_group("output and device")
    g.add_argument("--out", default="edits", metavar="DIR", help="output folder (default: ./edits)")
    g.add_argument("--cell-size", action="store_true",
                   help="write edits at the cell's resolution instead of the query's original size")
    g.add_argument("--save-grid", action="store_true", help="also write the whole generated grid")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 … (default: auto)")
    g.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                   help="weights precision (default: auto = fp16 on CUDA, fp32 on CPU)")
    g.add_argument("--cpu-offload", action="store_true",
                   help="CUDA only: keep models in CPU memory, move each to the GPU while it runs")
    add_threads_argument(g)


def _background(text: str) -> tuple[float, float, float]:
    from gie_core.cli import CLIError

    names = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5), "grey": (0.5, 0.5, 0.5)}
    if text.lower() in names:
        return names[text.lower()]
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or not all(0 <= v <= 255 for v in parts):
        raise CLIError(f"--background: expected white, black, gray or R,G,B in 0..255, got {text!r}")
    return (parts[0] / 255.0, parts[1] / 255.0, parts[2] / 255.0)


def _models(args):
    """(base, controlnet, train_config.json or None) from --model or --base/--controlnet, checked on
    disk before anything heavy is imported."""
    from pathlib import Path

    from gie_core.cli import CLIError
    from gie_core.model_files import (
        ModelLoadError,
        check_base_path,
        check_controlnet_path,
        trained_stack,
        training_config_for,
    )

    try:
        if args.model is not None:
            if args.base is not None or args.controlnet is not None:
                raise CLIError("--model replaces --base and --controlnet; give either --model or both of those")
            folder = Path(args.model)
            if args.model == "bundled" and not folder.exists():
                folder = BUNDLED_MODEL
            base, controlnet = trained_stack(folder)
        else:
            missing = [n for n, v in (("--base", args.base), ("--controlnet", args.controlnet)) if v is None]
            if missing:
                raise CLIError(f"{' and '.join(missing)}: required (or --model DIR for a trained stack's folder)")
            base, controlnet = args.base, args.controlnet
        check_controlnet_path(controlnet)
        check_base_path(base, args.allow_pickle)
    except ModelLoadError as e:
        raise CLIError(str(e)) from None
    return base, controlnet, training_config_for(controlnet)


def _check_args(args) -> None:
    from gie_core.cli import CLIError

    if not 1 <= len(args.example) <= 4:
        raise CLIError(f"--example: give 1 to 4 pairs, got {len(args.example)}")
    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps: expected at least 1, got {args.steps}")
    if args.guidance is not None and args.guidance < 0:
        raise CLIError(f"--guidance: expected a number >= 0, got {args.guidance}")
    if args.strength < 0:
        raise CLIError(f"--strength: expected a number >= 0, got {args.strength}")
    if not 0 <= args.control_start < args.control_end <= 1:
        raise CLIError(f"--control-start/--control-end: expected 0 <= start < end <= 1, got "
                       f"{args.control_start} and {args.control_end}")
    if args.tile is not None and (args.tile <= 0 or args.tile % 64):
        raise CLIError(f"--tile: expected a positive multiple of 64 (e.g. 256 or 512), got {args.tile}")


def _instruction(args, unify: bool) -> str:
    """The instruction, checked before any model loads: UTF-8, not empty, not over the length limit
    (cut with --truncate), and unifiable when unification is on."""
    from gie_core.cli import CLIError
    from gie_core.instruction import MAX_CHARS, InstructionError, check_instruction

    text = check_text(args.instruction, "--instruction")
    if not text.strip():
        raise CLIError("--instruction: empty text")
    if len(text) > MAX_CHARS and not args.truncate:
        raise CLIError(f"--instruction: {len(text)} characters, more than the {MAX_CHARS} allowed; "
                       "shorten it, or pass --truncate to cut it at a word boundary")
    text = check_instruction(text, truncate=True, name="--instruction")
    if unify:
        from gie_core.instruction import unify as unify_text

        try:
            unify_text(text)
        except InstructionError as e:
            raise CLIError(str(e)) from None
    return text


def _to_png(image, path) -> None:
    import numpy as np
    from PIL import Image

    arr = (image.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)


def run(args: argparse.Namespace) -> int:
    import json
    import random

    from gie_core.cli import CLIError

    # Everything that can be checked without torch is checked first: a typo should not cost a model load.
    _check_args(args)
    background = _background(args.background)
    base, controlnet, train_config = _models(args)
    settings = resolve_settings(args, train_config)
    instruction = _instruction(args, settings["unify"])
    examples = [(read_image(b, "--example BEFORE"), read_image(a, "--example AFTER")) for b, a in args.example]
    query_files = image_files(args.query, "--query")
    queries = [read_image(q, "--query") for q in query_files]
    out_dir = check_out_dir(args.out)
    print(f"instructgie edit: {describe_settings(settings)}", file=sys.stderr)

    import torch
    from tqdm import tqdm

    from gie_core.loading import ModelLoadError, load_pipeline
    from gie_core.pipeline import make_scheduler
    from gie_core.runtime import unet_work

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        from diffusers import DDIMScheduler

        make_scheduler(args.scheduler, DDIMScheduler().config)  # a bad name fails before the load
    except ValueError as e:
        raise CLIError(str(e)) from None
    try:
        pipe = load_pipeline(str(base), str(controlnet), device=device, dtype=args.dtype,
                             cpu_offload=args.cpu_offload, allow_pickle=args.allow_pickle,
                             tokenizer=args.tokenizer, scheduler=args.scheduler)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from None
    tile = settings["tile"]
    grid_w, grid_h = 2 * tile, (len(examples) + 1) * tile
    work = unet_work(pipe.unet.config, pipe.vae_scale_factor, grid_h, grid_w) * (2 if settings["guidance"] > 1 else 1)
    threads = apply_threads(args, device, work)

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    used_stems: set[str] = set()
    record = {"instruction": instruction, "examples": [list(map(str, e)) for e in args.example],
              "base": str(base), "controlnet": str(controlnet), "settings_from": settings["source"],
              "steps": settings["steps"], "guidance": settings["guidance"], "negative": args.negative,
              "strength": args.strength, "control_start": args.control_start, "control_end": args.control_end,
              "scheduler": args.scheduler, "tile": tile, "resize": settings["resize"],
              "unify": settings["unify"], "device": device, "dtype": args.dtype, "threads": threads, "outputs": []}
    pipe.set_progress_bar_config(leave=False, disable=len(queries) > 1)
    bar = tqdm(list(zip(query_files, queries)), desc="editing", unit="image", disable=len(queries) == 1)
    for i, (qfile, qimg) in enumerate(bar):
        try:
            result = pipe.edit(examples, qimg, instruction, tile=tile, resize=settings["resize"],
                               background=background, original_size=not args.cell_size,
                               num_inference_steps=settings["steps"], guidance_scale=settings["guidance"],
                               negative_prompt=args.negative, control_strength=args.strength,
                               control_start=args.control_start, control_end=args.control_end,
                               seed=seed + i, unify=settings["unify"])
        except ValueError as e:
            raise CLIError(f"{qfile}: {e}") from None
        stem = qfile.stem
        n = 1
        while stem in used_stems:
            n += 1
            stem = f"{qfile.stem}_{n}"
        used_stems.add(stem)
        edit_path = out_dir / f"{stem}_edit.png"
        _to_png(result.edits[0], edit_path)
        entry = {"query": str(qfile), "edit": str(edit_path), "seed": result.seeds[0],
                 "instruction_used": result.instruction}
        if args.save_grid:
            grid_path = out_dir / f"{stem}_grid.png"
            _to_png(result.grids[0], grid_path)
            entry["grid"] = str(grid_path)
        entry["layout"] = result.prompt.layout.to_dict()
        record["outputs"].append(entry)
        print(edit_path)
    (out_dir / "run.json").write_text(json.dumps(record, indent=2))
    return 0
