"""Training steps of an SD1.5-shaped stack on this machine: what one step costs at the real scale.

Builds SD1.5's UNet, VAE and text encoder from the configs shipped in ``gie_core/configs/sd15``
with *random* weights (the cost of a step does not depend on the values), the VMamba ControlNet
from that UNet, and for ESM a CLIP ViT-L/14-shaped vision tower (random too: cost only). Then the
real :class:`trainer.train.Trainer` runs real steps — forward, backward, AdamW — on 256-px tiles
(a 512×512 grid), with gradient checkpointing and bf16 autocast, one configuration per fresh
process (so each peak memory is its own):

- ``plain``: LDM loss only; ``+SAM``; ``+ESM`` (VAE decode, and the latent map); ``+ESM+SAM``.
  ESM is measured where it applies (every sample's timestep below the threshold); the estimate
  below scales its extra cost by the share of timesteps it applies to (``--esm-share``).

Prints, per configuration: CPU seconds per step (process CPU time: other load on a shared machine
does not count), the ratio to ``plain``, the FLOPs of one step (torch's FlopCounterMode: matmuls,
convolutions, attention; forward, backward and checkpoint recomputation), peak resident memory,
and the ESM and SAM shares of the step. Then GPU-hours per preset from the measured FLOPs at an
assumed sustained throughput (``--gpu-tflops``, ``--mfu``): estimates, not GPU measurements.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/train_step_sd15.py --steps 2

Memory: ~10-14 GB per configuration process (one at a time). Check ``free -g`` first.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "plain": dict(esm=False, sam=False),
    "+SAM": dict(esm=False, sam=True),
    "+ESM (VAE decode)": dict(esm=True, sam=False, esm_decode="vae"),
    "+ESM (latent map)": dict(esm=True, sam=False, esm_decode="latent"),
    "+ESM+SAM (VAE decode)": dict(esm=True, sam=True, esm_decode="vae"),
}
# Samples per run of each preset as shipped (max_steps x batch_size x gradient_accumulation_steps, one
# process); GPU-hours scale with samples, so N processes at the same steps cost N times as much.
PRESETS = {"sd15": dict(samples=20000 * 4 * 4, esm_decode="vae"),
           "sd15_lowmem": dict(samples=20000 * 1 * 16, esm_decode="latent")}


def _sd15_components(seed: int = 0):
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from gie_core.tiny import make_tiny_tokenizer
    from trainer.train import SDComponents

    cfg = ROOT / "gie_core" / "configs" / "sd15"
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae"))
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder"))
    sched = DDPMScheduler.from_config(DDPMScheduler.load_config(cfg / "scheduler"))
    # The tiny tokenizer's ids all lie inside CLIP's vocabulary; the text's content does not matter here.
    return SDComponents(unet, vae, text, make_tiny_tokenizer(), sched)


def _clip_vit_l14():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from trainer.embedders import CLIPImageEmbedder

    return CLIPImageEmbedder(CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=768)))


def _rss() -> tuple[int, int]:
    """(current, peak) resident set in bytes (Linux /proc)."""
    cur = peak = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cur, peak


def _worker(name: str, overrides: dict, args: dict, queue) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(args["threads"])
    import trainer.train as train_module
    from trainer.config import make_config

    train_module.load_base = lambda cfg: _sd15_components()
    train_module.load_esm_embedder = lambda *a, **kw: _clip_vit_l14()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(
            data=f"synthetic:pairs=2,size={args['tile']},families=face+recolour", tile=args["tile"],
            base_model="sd15-shaped (random weights)", clip_model="clip-vit-l14-shaped (random weights)",
            esm_embedder="clip", batch_size=args["batch_size"], gradient_checkpointing=True,
            mixed_precision=args["mixed_precision"], esm_max_timestep=1000, liu=False, val_fraction=0.0,
            verify="header", dedupe="none", validate_every=0, checkpoint_every=0, progress=False,
            output_dir=f"{tmp}/run", **overrides)
        started = time.perf_counter()
        tr = train_module.Trainer(cfg).setup()
        setup_s = time.perf_counter() - started
        batch = tr.collate([tr.train_set[i] for i in range(cfg.batch_size)])
        t = torch.full((cfg.batch_size,), args["timestep"], dtype=torch.long)

        def step(i):
            c0, w0 = time.process_time(), time.perf_counter()
            loss = tr.compute_losses(batch, train_module.step_generator(0, i), timesteps=t)["total"]
            tr.acc.backward(loss)
            tr.optimizer.step()
            tr.optimizer.zero_grad(set_to_none=True)
            return time.process_time() - c0, time.perf_counter() - w0

        with FlopCounterMode(display=False) as counter:  # the warm-up step: lazy allocations happen here
            step(0)
        flops = counter.get_total_flops()
        before, _ = _rss()
        Path("/proc/self/clear_refs").write_text("5")  # restart the peak mark at the current RSS
        times = [step(i) for i in range(1, args["steps"] + 1)]
        _, peak = _rss()
        params = sum(p.numel() for p in tr.acc.unwrap_model(tr.wrapped["controlnet"]).parameters())
    queue.put({"name": name, "cpu_s": statistics.median(c for c, _ in times),
               "wall_s": statistics.median(w for _, w in times), "flops": flops, "peak_rss": peak,
               "rss_before_steps": before, "setup_s": setup_s, "controlnet_params": params})


def gpu_hours(flops_per_sample: float, samples: int, tflops: float, mfu: float) -> float:
    return flops_per_sample * samples / (tflops * 1e12 * mfu) / 3600


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per configuration (after one warm-up)")
    ap.add_argument("--timestep", type=int, default=200, help="the batch's timestep (below ESM's threshold)")
    ap.add_argument("--mixed-precision", default="bf16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of {list(CONFIGS)} ('plain' always runs)")
    ap.add_argument("--esm-share", type=float, default=0.4,
                    help="share of samples ESM applies to in training (esm_max_timestep 400 of 1000)")
    ap.add_argument("--gpu-tflops", type=float, nargs=2, action="append", metavar=("NAME", "TFLOPS"),
                    help="a GPU's dense bf16 peak (default: A100 312, H100 989)")
    ap.add_argument("--mfu", type=float, default=0.35, help="assumed share of that peak a training step sustains")
    args = vars(ap.parse_args(argv))
    gpus = [(n, float(v)) for n, v in args["gpu_tflops"]] if args["gpu_tflops"] else [("A100", 312.0), ("H100", 989.0)]
    names = [n for n in CONFIGS if not args["only"] or n in args["only"] or n == "plain"]
    ctx = mp.get_context("spawn")
    rows = {}
    for n in names:  # one fresh process per configuration, one at a time (memory)
        q = ctx.Queue()
        p = ctx.Process(target=_worker, args=(n, CONFIGS[n], args, q))
        p.start()
        while True:
            try:
                rows[n] = q.get(timeout=5)
                break
            except queue.Empty:
                if not p.is_alive():
                    print(f"{n}: the worker process died (exit code {p.exitcode}; out of memory?)", file=sys.stderr)
                    return 1
        p.join()
        r = rows[n]
        print(f"{n}: {r['cpu_s']:.1f} CPU s/step, {r['flops'] / 1e12:.2f} TFLOP/step, "
              f"peak RSS {r['peak_rss'] / 2**30:.1f} GiB", flush=True)
    base = rows["plain"]
    print(f"\nSD1.5-shaped training step (random weights; tile {args['tile']} -> {2 * args['tile']}-px grid, "
          f"batch {args['batch_size']}, gradient checkpointing, {args['mixed_precision']} autocast, "
          f"{args['threads']} CPU thread(s), ESM on every sample at t={args['timestep']}; "
          f"ControlNet {base['controlnet_params'] / 1e6:.0f} M trained parameters):")
    print("| configuration | CPU s/step | time ratio | TFLOP/step | share of the step | peak RSS (GiB) |")
    print("|---|---|---|---|---|---|")
    for n, r in rows.items():
        share = 1 - base["cpu_s"] / r["cpu_s"]  # of this configuration's step: what it adds to plain
        print(f"| {n} | {r['cpu_s']:.1f} | {r['cpu_s'] / base['cpu_s']:.2f}x | {r['flops'] / 1e12:.2f} | "
              f"{'-' if n == 'plain' else f'{share:.0%}'} | {r['peak_rss'] / 2**30:.1f} |")
    print(f"\nEstimated GPU-hours per preset run (samples = max_steps x batch x accumulation of one process; "
          f"FLOPs measured above, ESM on {args['esm_share']:.0%} of samples, SAM on all; "
          f"{args['mfu']:.0%} of bf16 peak sustained):")
    head = " | ".join(f"{g} GPU-hours" for g, _ in gpus)
    print(f"| preset | samples | TFLOP/sample | {head} |\n|---|---|---|" + "---|" * len(gpus))
    estimates = {}
    for preset, spec in PRESETS.items():
        esm = rows.get("+ESM (VAE decode)" if spec["esm_decode"] == "vae" else "+ESM (latent map)")
        if "+SAM" in rows:
            sam_extra = rows["+SAM"]["flops"] - base["flops"]
        elif "+ESM+SAM (VAE decode)" in rows and "+ESM (VAE decode)" in rows:
            sam_extra = rows["+ESM+SAM (VAE decode)"]["flops"] - rows["+ESM (VAE decode)"]["flops"]
        else:
            continue
        if esm is None:
            continue
        per_step = base["flops"] + args["esm_share"] * (esm["flops"] - base["flops"]) + sam_extra
        per_sample = per_step / args["batch_size"]
        hours = [gpu_hours(per_sample, spec["samples"], tf, args["mfu"]) for _, tf in gpus]
        estimates[preset] = dict(samples=spec["samples"], tflop_per_sample=per_sample / 1e12, gpu_hours=hours)
        print(f"| {preset} | {spec['samples']:,} | {per_sample / 1e12:.2f} | " + " | ".join(f"{h:.0f}" for h in hours) + " |")
    print(json.dumps({"args": args, "results": rows, "estimates": estimates}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
