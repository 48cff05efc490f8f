"""instructgie-eval's generation: several queries per pipeline call against one query per call.

Plans the same items the eval would (synthetic data, round-robin over the edits, a wrong-example
run per query), then runs ``trainer.evaluate.generate`` on them with ``--batch-size 1`` and with
each size given, the configurations interleaved ``--repeats`` times, and prints the process CPU time
per edited query (both runs of an item count) and its ratio to one query per call. CPU time, not
wall time: other load on a shared machine does not count.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_generation.py                  # bundled model
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_generation.py --model runs/demo_full --sizes 8 16 32
"""
from __future__ import annotations

import argparse
import os
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="NAME=PATH or PATH as --model of instructgie-eval "
                                                       "(default: the bundled model)")
    ap.add_argument("--data", default="synthetic:pairs=12,size=64,start_index=100000", help="evaluation pairs")
    ap.add_argument("--n-per-split", type=int, default=24, help="queries per split (default: 24)")
    ap.add_argument("--steps", type=int, default=10, help="denoising steps (default: 10)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16], help="batch sizes to compare with 1")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repetitions (default: 2)")
    args = ap.parse_args(argv)
    os.environ.setdefault("GIE_SCAN_BACKEND", "cpu_torch")  # as instructgie-eval does on CPU
    from trainer import evaluate as ev

    spec = ev.model_from_arg(args.model)
    pipe = ev.load_pipeline_for(spec)
    pipe.set_progress_bar_config(disable=True)
    jobs = ev.plan_jobs(ev.edit_groups(ev.load_eval_records(args.data)), args.n_per_split, spec.k)
    edits = sum(2 if j.wrong_group else 1 for j in jobs)
    ev.generate(pipe, spec, jobs[:2], ev.Scorer(), steps=1, progress=False)  # warm-up
    sizes = [1, *[s for s in args.sizes if s != 1]]
    cpu = {s: [] for s in sizes}
    for _ in range(args.repeats):
        for s in sizes:
            t = time.process_time()
            ev.generate(pipe, spec, jobs, ev.Scorer(), steps=args.steps, batch_size=s, progress=False)
            cpu[s].append((time.process_time() - t) / edits)
    base = min(cpu[1])
    print(f"{len(jobs)} queries, {edits} edits of {args.steps} steps, model {spec.name}, tile {spec.tile}")
    print("| batch size | CPU ms per edit | speed-up vs 1 |\n|---|---|---|")
    for s in sizes:
        print(f"| {s} | {1000 * min(cpu[s]):.0f} | {base / min(cpu[s]):.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
