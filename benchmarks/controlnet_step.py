"""Sampling cost of the VMamba ControlNet against diffusers' conv ControlNet on the same UNet.

One process, one UNet, one pipeline class (diffusers' ``StableDiffusionControlNetPipeline``), one
scheduler (DDIM), classifier-free guidance, ``--steps`` denoising steps at a ``--size`` grid:

* baseline  — ``ControlNetModel.from_unet(unet)`` (diffusers' conv hint block, run at every step);
* vmamba    — ``VMambaControlNetModel.from_unet(unet)`` with hint caching (encoded once per run);
* nocache   — the same VMamba ControlNet with caching switched off (encoded at every step, both
  CFG halves).

Printed: seconds per run (median of ``--repeats``, runs interleaved so machine load hits all three
alike) and the ratios vmamba/baseline (target ≤ 1.05) and nocache/baseline, both in wall-clock time
and in this process's CPU time (user+system, all threads): on a shared machine the CPU-time ratio is
the steadier one, since waiting for a core does not count.

Model choice: the text encoder and VAE are gie_core.tiny's (they run once per sampling run and are
the same for all three, so they only dilute the ratio); the UNet is "moderate" by default —
SD1.5's layout (3 cross-attention levels + 1 plain level, 2 layers per block) at 1/5 of its widths
(64-128-256-256), so that a 20-step run at a 512×512 grid (64×64 latent) takes a minute or two on a
CPU while the hint encoder keeps its real size (default HintEncoderConfig: SS2D at 64×64 tokens,
d_inner 96). A smaller UNet makes the ratio stricter (the encoder's share grows); ``--unet sd15``
uses the real SD1.5 UNet shape (random weights; slow on CPU).

    .venv/bin/python benchmarks/controlnet_step.py                  # 512 grid, 20 steps, moderate UNet
    .venv/bin/python benchmarks/controlnet_step.py --size 256 --unet tiny --repeats 3  # quick, stricter
    .venv/bin/python benchmarks/controlnet_step.py --threads 0   # all cores (a dedicated machine)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODERATE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(64, 128, 256, 256), layers_per_block=2, norm_num_groups=32,
    cross_attention_dim=32, attention_head_dim=8,
)


def build_unet(kind: str):
    from diffusers import UNet2DConditionModel

    from gie_core.models import SD15_UNET_CONFIG
    from gie_core.tiny import make_tiny_unet

    torch.manual_seed(0)
    if kind == "tiny":
        return make_tiny_unet(seed=0)
    if kind == "moderate":
        return UNet2DConditionModel(**MODERATE_UNET)
    return UNet2DConditionModel(**{**SD15_UNET_CONFIG, "cross_attention_dim": 32})


def make_pipe(unet, controlnet, parts):
    from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=unet,
        controlnet=controlnet, scheduler=DDIMScheduler.from_config(parts["scheduler"].config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def resolve(ops) -> str:
    """Which selective-scan backend "auto" uses here (for the printout)."""
    try:
        return ops.resolve_backend("auto", torch.device("cpu"))
    except Exception:  # older gie_core.ops without resolve_backend
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="grid size in pixels (multiple of 64)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per variant (median reported)")
    ap.add_argument("--unet", choices=("moderate", "tiny", "sd15"), default="moderate")
    # One thread by default: on a shared machine OpenMP worker threads spin while they wait for a core,
    # which makes both wall and CPU time swing several-fold between identical runs.
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import ControlNetModel

    from gie_core.models import VMambaControlNetModel
    from gie_core.tiny import make_tiny_sd_components

    parts = make_tiny_sd_components(seed=0)
    unet = build_unet(args.unet).eval()
    conv_cn = ControlNetModel.from_unet(unet).eval()
    vmamba_cn = VMambaControlNetModel.from_unet(unet).eval()
    # Trained-looking zero convs, so the control path does real arithmetic in both models.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for cn in (conv_cn, vmamba_cn):
            for p in cn.controlnet_cond_embedding.conv_out.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    pipes = {"baseline": make_pipe(unet, conv_cn, parts), "vmamba": make_pipe(unet, vmamba_cn, parts)}
    hint = torch.rand(1, 3, args.size, args.size, generator=g)
    call = dict(prompt="make it look like winter", image=hint, num_inference_steps=args.steps,
                guidance_scale=7.5, height=args.size, width=args.size, output_type="np")

    encoded_rows = []  # rows through the hint encoder's stem = real encodes
    vmamba_cn.hint_encoder.stem.register_forward_hook(lambda m, i, o: encoded_rows.append(i[0].shape[0]))
    rows_per_run = {}

    def run(variant: str) -> tuple[float, float]:
        pipe = pipes["baseline" if variant == "baseline" else "vmamba"]
        vmamba_cn.hint_caching = variant != "nocache"
        vmamba_cn.clear_hint_cache()  # each run starts cold: the cached run pays for its one encode
        encoded_rows.clear()
        w0, c0 = time.perf_counter(), time.process_time()
        pipe(**call, generator=torch.Generator().manual_seed(0))
        elapsed = time.perf_counter() - w0, time.process_time() - c0
        rows_per_run[variant] = sum(encoded_rows)
        return elapsed

    import gie_core.ops as ops

    n_unet = sum(p.numel() for p in unet.parameters()) / 1e6
    n_hint = sum(p.numel() for p in vmamba_cn.hint_encoder.parameters()) / 1e6
    print(f"grid {args.size}x{args.size} (latent {args.size // 8}x{args.size // 8}), {args.steps} steps, CFG, "
          f"UNet '{args.unet}' {n_unet:.1f}M params, VMamba hint encoder {n_hint:.2f}M params, "
          f"scan backend 'auto' = {resolve(ops)}, torch threads {torch.get_num_threads()}")
    with torch.no_grad():
        vmamba_cn.hint_encoder.encode(hint)  # warm-up
        t0 = time.process_time()
        vmamba_cn.hint_encoder.encode(hint)
        t_enc = time.process_time() - t0
    print(f"one hint encode (batch 1): {t_enc * 1e3:.0f} ms CPU")

    for v in ("baseline", "vmamba"):  # warm-up (allocator, kernels); short
        pipes["baseline" if v == "baseline" else "vmamba"](**{**call, "num_inference_steps": 1})
    times = {"baseline": [], "vmamba": [], "nocache": []}
    for r in range(args.repeats):
        for v in times:
            times[v].append(run(v))
            print(f"  run {r + 1} {v:8s} wall {times[v][-1][0]:7.2f} s   cpu {times[v][-1][1]:7.2f} s", flush=True)
    print(f"hint-encoder rows encoded per run: cached {rows_per_run['vmamba']}, "
          f"uncached {rows_per_run['nocache']} (CFG doubles the batch)")
    for i, clock in enumerate(("wall-clock", "CPU")):
        med = {v: statistics.median(t[i] for t in ts) for v, ts in times.items()}
        print(f"{clock} median seconds: conv ControlNet {med['baseline']:.2f}, VMamba cached {med['vmamba']:.2f}, "
              f"VMamba uncached {med['nocache']:.2f}")
        print(f"  {clock} ratio VMamba/conv ControlNet, caching on : {med['vmamba'] / med['baseline']:.3f}"
              f"  (target <= 1.05)")
        print(f"  {clock} ratio VMamba/conv ControlNet, caching off: {med['nocache'] / med['baseline']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
