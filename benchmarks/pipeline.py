"""InstructGIEPipeline vs diffusers' StableDiffusionControlNetInpaintPipeline: the same edit.

Both pipelines share one UNet, VAE, text encoder and one conv ControlNet (diffusers'
``ControlNetModel.from_unet``); both run the same number of DDIM steps with CFG on the same grid,
mask, hint and seed. Ours is timed end to end through ``edit()`` (visual prompt build, sampling,
crop); the baseline gets the prepared grid / mask / hint tensors. Prints the median wall time of each
and the ratio ours / diffusers (target <= 1.05). With ``--vmamba`` a third row times our pipeline
with a VMamba ControlNet (hint features computed once per run).

    .venv/bin/python benchmarks/pipeline.py                      # tiny models, 256x256 grid, CPU
    .venv/bin/python benchmarks/pipeline.py --size sd15 --device cuda --dtype fp16 --vmamba
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def build_components(size: str, seed: int = 0) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from gie_core import tiny
    from gie_core.loading import CONFIG_DIR, load_tokenizer

    if size == "tiny":
        parts = tiny.make_tiny_sd_components(seed)
    else:  # random weights in SD1.5's shapes, from the shipped configs (nothing downloaded)
        d = CONFIG_DIR / "sd15"
        torch.manual_seed(seed)
        parts = dict(
            unet=UNet2DConditionModel.from_config(json.loads((d / "unet" / "config.json").read_text())),
            vae=AutoencoderKL.from_config(json.loads((d / "vae" / "config.json").read_text())),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(str(d / "text_encoder"))),
            tokenizer=load_tokenizer(),
            scheduler=None,
        )
    parts["scheduler"] = DDIMScheduler.from_config(tiny.sd15_scheduler_config())
    return parts


def timed(fn, sync):
    """(wall seconds, process CPU seconds). On CPU the process time is steadier on a shared machine:
    other processes' load does not count (with one thread it equals the compute time)."""
    sync()
    t, c = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "sd15"), default="tiny", help="model shapes (random weights)")
    ap.add_argument("--tile", type=int, default=128, help="cell size: 128 -> 256x256 grid, 256 -> 512x512")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per pipeline")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (e.g. 1 on a busy machine: less sensitive to other load)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--vmamba", action="store_true", help="also time our pipeline with a VMamba ControlNet")
    args = ap.parse_args(argv)

    from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline

    from gie_core import visual_prompt
    from gie_core.loading import resolve_dtype
    from gie_core.pipeline import InstructGIEPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    parts = build_components(args.size)
    torch.manual_seed(1)
    conv_cn = ControlNetModel.from_unet(parts["unet"])
    for m in (parts["unet"], parts["vae"], parts["text_encoder"], conv_cn):
        m.to(device=device, dtype=None if dtype == torch.float32 else dtype)  # (no-op casts warn)
    ours = InstructGIEPipeline(controlnet=conv_cn, **parts)
    theirs = StableDiffusionControlNetInpaintPipeline(controlnet=conv_cn, safety_checker=None, feature_extractor=None,
                                                      requires_safety_checker=False, **parts)
    for p in (ours, theirs):
        p.set_progress_bar_config(disable=True)

    g = torch.Generator().manual_seed(0)
    examples = [(torch.rand(1, 300, 400, 3, generator=g), torch.rand(1, 300, 400, 3, generator=g))]
    query = torch.rand(1, 300, 400, 3, generator=g)
    text = "make it winter"
    vp = visual_prompt.build(examples, query, tile=args.tile)
    hg, wg = vp.layout.grid_size
    grid, mask, hint = vp.grid.permute(0, 3, 1, 2), vp.target_mask[:, None], vp.control_image()
    common = dict(num_inference_steps=args.steps, guidance_scale=7.5)

    def run_ours(pipe=ours):
        return pipe.edit(examples, query, text, tile=args.tile, seed=0, unify=False, **common)

    def run_theirs():
        return theirs(prompt=[text], image=grid, mask_image=mask, control_image=hint, height=hg, width=wg,
                      strength=1.0, generator=[torch.Generator().manual_seed(0)], output_type="pt",
                      controlnet_conditioning_scale=1.0, **common)

    rows = {"InstructGIEPipeline (conv ControlNet)": run_ours, "diffusers ControlNetInpaint (conv)": run_theirs}
    if args.vmamba:
        from gie_core.models import VMambaControlNetModel

        vm = VMambaControlNetModel.from_unet(parts["unet"]).to(device=device, dtype=dtype)
        vm_pipe = InstructGIEPipeline(controlnet=vm, **parts)
        vm_pipe.set_progress_bar_config(disable=True)
        rows["InstructGIEPipeline (VMamba ControlNet)"] = lambda: run_ours(vm_pipe)

    if args.threads:  # set here: importing/building some backends (numba) can change torch's thread count
        torch.set_num_threads(args.threads)
    for fn in rows.values():  # warm-up (allocator, kernels, caches)
        fn()
    times = {name: [] for name in rows}
    cpu = {name: [] for name in rows}
    for _ in range(args.repeats):  # interleaved, so machine load drifts affect both alike
        for name, fn in rows.items():
            wall, proc = timed(fn, sync)
            times[name].append(wall)
            cpu[name].append(proc)
    # min: the run least disturbed by other load (the compute is identical each time); median for context
    best = {name: min(t) for name, t in times.items()}
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.steps}-step edit, {hg}x{wg} grid, {args.size} models, {device.type} {args.dtype}, "
          f"{torch.get_num_threads()} CPU threads, {args.repeats} interleaved runs each")
    for name in rows:
        print(f"  {name:42s} min {best[name]:8.3f} s  median {med[name]:8.3f} s   "
              f"runs: {', '.join(f'{x:.3f}' for x in times[name])}")
    ours_name, base_name = "InstructGIEPipeline (conv ControlNet)", "diffusers ControlNetInpaint (conv)"
    print(f"ratio InstructGIEPipeline / diffusers = {best[ours_name] / best[base_name]:.3f} by min, "
          f"{med[ours_name] / med[base_name]:.3f} by median (target <= 1.05)")
    if device.type == "cpu":
        cmed = {name: statistics.median(t) for name, t in cpu.items()}
        print(f"  process CPU time, median: ours {cmed[ours_name]:.3f} s, diffusers {cmed[base_name]:.3f} s, "
              f"ratio {cmed[ours_name] / cmed[base_name]:.3f}")
    if args.vmamba:
        vm_name = "InstructGIEPipeline (VMamba ControlNet)"
        print(f"ratio VMamba / conv ControlNet (ours) = {best[vm_name] / best[ours_name]:.3f} by min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
