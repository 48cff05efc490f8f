"""`instructgie edit`: edit query images the way example pairs show, from local model files."""
from __future__ import annotations

import argparse

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

examples:
  instructgie edit --example cat.png cat_winter.png --query dog.png \\
      --instruction "make it winter" --base ./sd15 --controlnet instructgie.safetensors
  instructgie edit --example a.png a2.png --example b.png b2.png --query q1.jpg --query q2.jpg \\
      --instruction "turn it into a watercolor" --base v1-5-pruned-emaonly.safetensors \\
      --controlnet instructgie.safetensors --steps 30 --seed 42 --scheduler dpmpp_2m --out results/
"""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inputs")
    g.add_argument("--example", action="append", nargs=2, metavar=("BEFORE", "AFTER"), required=True,
                   help="an example pair: the image before and after the edit (1 to 4 pairs)")
    g.add_argument("--query", action="append", required=True, metavar="IMAGE",
                   help="image to edit (repeat for several; a folder means all images in it)")
    g.add_argument("--instruction", required=True, metavar="TEXT", help='the edit in words, e.g. "make it winter"')
    g.add_argument("--negative", default=None, metavar="TEXT", help="negative prompt (what to avoid)")
    g.add_argument("--no-unify", action="store_true",
                   help="use the instruction as written (default: normalise it as during training)")

    g = p.add_argument_group("models")
    g.add_argument("--base", required=True, metavar="PATH",
                   help="SD1.5: a diffusers folder or a single-file checkpoint (.safetensors)")
    g.add_argument("--controlnet", required=True, metavar="PATH", help="the VMamba ControlNet .safetensors")
    g.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="CLIP tokenizer folder (vocab.json + merges.txt) for single-file checkpoints")
    g.add_argument("--allow-pickle", action="store_true",
                   help="allow a .ckpt/.pt base checkpoint (loaded with weights_only=True); prefer .safetensors")

    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, metavar="N", default=20, help="denoising steps (default: 20)")
    g.add_argument("--guidance", type=float, metavar="X", default=7.5, help="classifier-free guidance scale (default: 7.5)")
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
    g.add_argument("--tile", type=int, metavar="PX", default=256,
                   help="grid cell size in pixels, a multiple of 64 (default: 256 -> 512x512 for one pair)")
    g.add_argument("--resize", choices=("fit", "crop", "stretch"), default="fit",
                   help="how images go into cells: fit (pad, keep aspect; default), crop (centre square), stretch")
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
    return tuple(v / 255.0 for v in parts)


def _read_image(path, what: str):
    from pathlib import Path

    from PIL import Image, ImageOps, UnidentifiedImageError

    from gie_core.cli import CLIError

    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} {str(path)!r} does not exist")
    if p.is_dir():
        raise CLIError(f"{what} {str(path)!r} is a folder, expected an image file")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise CLIError(f"{what} {str(path)!r} is not a readable image ({e.__class__.__name__})") from None
    return ImageOps.exif_transpose(img)


def _queries(items: list[str]):
    from pathlib import Path

    from gie_core.cli import CLIError

    files = []
    for s in items:
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CLIError(f"--query folder {s!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        else:
            files.append(p)
    return files


def _check_args(args) -> None:
    from gie_core.cli import CLIError

    if not 1 <= len(args.example) <= 4:
        raise CLIError(f"--example: give 1 to 4 pairs, got {len(args.example)}")
    if args.steps < 1:
        raise CLIError(f"--steps: expected at least 1, got {args.steps}")
    if args.guidance < 0:
        raise CLIError(f"--guidance: expected a number >= 0, got {args.guidance}")
    if args.strength < 0:
        raise CLIError(f"--strength: expected a number >= 0, got {args.strength}")
    if not 0 <= args.control_start < args.control_end <= 1:
        raise CLIError(f"--control-start/--control-end: expected 0 <= start < end <= 1, got "
                       f"{args.control_start} and {args.control_end}")
    if args.tile <= 0 or args.tile % 64:
        raise CLIError(f"--tile: expected a positive multiple of 64 (e.g. 256 or 512), got {args.tile}")
    if not args.instruction.strip():
        raise CLIError("--instruction: empty text")


def _to_png(image, path) -> None:
    import numpy as np
    from PIL import Image

    arr = (image.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)


def run(args: argparse.Namespace) -> int:
    import json
    import random
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from gie_core.cli import CLIError

    _check_args(args)
    background = _background(args.background)
    # Read every input before loading models: a typo should not cost a model load.
    examples = [(_read_image(b, "--example BEFORE"), _read_image(a, "--example AFTER")) for b, a in args.example]
    query_files = _queries(args.query)
    queries = [_read_image(q, "--query") for q in query_files]

    from gie_core.loading import ModelLoadError, load_pipeline
    from gie_core.pipeline import make_scheduler

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        from diffusers import DDIMScheduler

        make_scheduler(args.scheduler, DDIMScheduler().config)  # a bad name fails before the load
    except ValueError as e:
        raise CLIError(str(e)) from None
    try:
        pipe = load_pipeline(args.base, args.controlnet, device=device, dtype=args.dtype,
                             cpu_offload=args.cpu_offload, allow_pickle=args.allow_pickle,
                             tokenizer=args.tokenizer, scheduler=args.scheduler)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from None

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    used_stems: set[str] = set()
    record = {"instruction": args.instruction, "examples": [list(map(str, e)) for e in args.example],
              "base": str(args.base), "controlnet": str(args.controlnet), "steps": args.steps,
              "guidance": args.guidance, "negative": args.negative, "strength": args.strength,
              "control_start": args.control_start, "control_end": args.control_end,
              "scheduler": args.scheduler, "tile": args.tile, "resize": args.resize,
              "unify": not args.no_unify, "device": device, "dtype": args.dtype, "outputs": []}
    pipe.set_progress_bar_config(leave=False, disable=len(queries) > 1)
    bar = tqdm(list(zip(query_files, queries)), desc="editing", unit="image", disable=len(queries) == 1)
    for i, (qfile, qimg) in enumerate(bar):
        try:
            result = pipe.edit(examples, qimg, args.instruction, tile=args.tile, resize=args.resize,
                               background=background, original_size=not args.cell_size,
                               num_inference_steps=args.steps, guidance_scale=args.guidance,
                               negative_prompt=args.negative, control_strength=args.strength,
                               control_start=args.control_start, control_end=args.control_end,
                               seed=seed + i, unify=not args.no_unify)
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
