"""Training-step cost of ESM and SAM relative to a plain ControlNet step, same size, same run.

Every configuration steps on one fixed batch (forward, backward, AdamW) with the same timesteps;
steps are timed (wall clock on a GPU, process CPU time on CPU, so that other load on the
machine does not count) interleaved across configurations in one process, peak memory in a fresh process
per configuration. Peak memory is the CUDA allocator's peak on a GPU and, on CPU, the growth of
the peak resident set during the steps. Ratios are against the plain step (no ESM, no SAM) of this
run. Goal: ESM+SAM <= 1.3x with gradient checkpointing. The device is accelerate's default (the
GPU when there is one).

    python benchmarks/train_step.py                       # tiny SD stack, tile 128
    python benchmarks/train_step.py --tile 256 --base-model /models/sd15 --clip-model /models/clip \
        --hint-config '' --batch-size 4 --mixed-precision bf16
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "plain": dict(esm=False, sam=False),
    "+SAM": dict(esm=False, sam=True),
    "+ESM (VAE decode)": dict(esm=True, sam=False, esm_decode="vae"),
    "+ESM (latent approx.)": dict(esm=True, sam=False, esm_decode="latent"),
    "+ESM+SAM (VAE decode)": dict(esm=True, sam=True, esm_decode="vae"),
    "+ESM+SAM (latent approx.)": dict(esm=True, sam=True, esm_decode="latent"),
}


def _make_trainer(name: str, overrides: dict, args: dict, tmp: str):
    from trainer.config import make_config
    from trainer.train import Trainer

    cfg = make_config(
        data=f"synthetic:pairs=3,size={args['tile']},families=face+recolour+flip", tile=args["tile"],
        base_model=args["base_model"], clip_model=args["clip_model"], esm_embedder=args["esm_embedder"], batch_size=args["batch_size"],
        gradient_checkpointing=not args["no_checkpointing"], mixed_precision=args["mixed_precision"],
        hint_encoder_config=args["hint_config"], esm_max_timestep=args["esm_max_timestep"], liu=False,
        val_fraction=0.0, verify="header", validate_every=0, progress=False, output_dir=f"{tmp}/{len(name)}{abs(hash(name))}",
        **overrides)
    tr = Trainer(cfg).setup()
    return tr, tr.collate([tr.train_set[i] for i in range(cfg.batch_size)])


def _timesteps(i: int, b: int):
    import torch

    # The same spread of timesteps for every configuration (ESM runs on the share below its threshold).
    return (torch.arange(i * b, (i + 1) * b) * 397) % 1000


def _one_step(tr, batch, i):
    import torch

    from trainer.train import step_generator

    dev = tr.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0, c0 = time.perf_counter(), time.process_time()
    loss = tr.compute_losses(batch, step_generator(0, i), timesteps=_timesteps(i, batch["grid"].shape[0]))["total"]
    tr.acc.backward(loss)
    tr.optimizer.step()
    tr.optimizer.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return time.perf_counter() - t0
    # On CPU the process's CPU time: what the step costs, whatever else loads the machine.
    return time.process_time() - c0


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss() -> int | None:
    """Resets the kernel's peak-RSS mark (Linux: clear_refs 5); returns the current RSS, or None."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _memory_worker(name: str, overrides: dict, args: dict, queue):
    """Peak memory of a few steps of one configuration, alone in its process."""
    import torch

    torch.set_num_threads(args["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        tr, batch = _make_trainer(name, overrides, args, tmp)
        _one_step(tr, batch, 0)  # first step: lazy allocations (optimizer state) happen here
        if tr.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(tr.device)
        else:
            base = _reset_peak_rss()
        for i in range(1, 3):
            _one_step(tr, batch, i)
        if tr.device.type == "cuda":
            queue.put(torch.cuda.max_memory_allocated(tr.device))
        else:  # growth of the resident set over what was live before the steps
            queue.put(_peak_rss() - base if base is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-model", default="tiny")
    ap.add_argument("--clip-model", default="", help="local CLIP folder for ESM (empty: --esm-embedder decides)")
    ap.add_argument("--esm-embedder", default="auto", help="auto | clip | colour (auto: colour for the tiny base)")
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--esm-max-timestep", type=int, default=400,
                    help="ESM runs only on samples below it (about 40%% of them at 400)")
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--hint-config", default='{"dims": [16, 32], "depths": [0, 1]}',
                    help="VMamba hint encoder overrides (JSON); '' for the default SD1.5 encoder")
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of {list(CONFIGS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: cleanest CPU-time figures)")
    args = vars(ap.parse_args(argv))
    import torch

    torch.set_num_threads(args["threads"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = [n for n in CONFIGS if not args["only"] or n in args["only"] or n == "plain"]
    # Time: all configurations in one process, interleaved round by round, so that load from other
    # processes on the machine hits them alike; the median step per configuration counts.
    times = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {n: _make_trainer(n, CONFIGS[n], args, tmp) for n in names}
        for i in range(args["warmup"] + args["steps"]):
            for n in names:
                dt = _one_step(*trainers[n], i)
                if i >= args["warmup"]:
                    times[n].append(dt)
        device = str(next(iter(trainers.values()))[0].device)
        del trainers
    # Memory: each configuration alone in a fresh process.
    ctx = mp.get_context("spawn")
    rows = []
    for n in names:
        q = ctx.Queue()
        p = ctx.Process(target=_memory_worker, args=(n, CONFIGS[n], args, q))
        p.start()
        peak = q.get()
        p.join()
        rows.append({"name": n, "step_s": statistics.median(times[n]), "peak_bytes": peak, "device": device})
    base = rows[0]
    print(f"\ntrain step cost vs plain ControlNet step ({base['device']}, tile {args['tile']}, batch {args['batch_size']}, "
          f"checkpointing {'off' if args['no_checkpointing'] else 'on'}, base {args['base_model']}):")
    mem = "peak memory (MiB)" if device.startswith("cuda") else "peak RSS growth in steps (MiB)"
    unit = "step (ms)" if device.startswith("cuda") else "step (CPU ms)"
    print(f"| configuration | {unit} | time ratio | {mem} | memory ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['step_s'] * 1000:.1f} | {r['step_s'] / base['step_s']:.2f}x | "
              f"{r['peak_bytes'] / 2**20:.0f} | {r['peak_bytes'] / base['peak_bytes']:.2f}x |")
    print(json.dumps({"args": args, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
