"""`instructgie demo` while another program keeps every CPU busy: automatic threads vs one thread.

Starts its own load (one busy-looping process per CPU this process may use, at this process's
priority), then runs the real command, ``python -m gie_core.cli demo``, as a new process each time:

    single   GIE_THREADS=1: the baseline the bar is measured against
    auto     no thread setting at all (gie_core.runtime chooses): the default a user gets
    all      GIE_THREADS=<CPUs>: torch's own default before gie_core chose threads (context;
             --skip-all leaves it out, it is the slow one)

The thread variables of the calling shell (OMP_NUM_THREADS, GIE_THREADS, MKL_NUM_THREADS) are removed
from the children, so the "auto" row is what a user's plain command gets. Runs are interleaved
(single, auto, all, single, ...); prints each run's wall time (the whole command: imports, model
load, sampling) and the ratios of the medians to "single". The bar: auto / single <= 2.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/demo_under_load.py
    .venv/bin/python benchmarks/demo_under_load.py --cases 9 --repeats 3    # the whole demo
    .venv/bin/python benchmarks/demo_under_load.py --no-load                 # the same without load
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "GIE_THREADS", "MKL_NUM_THREADS")


def _spin() -> None:  # the load: pure Python, never sleeps
    x = 0
    while True:
        x = (x + 1) % 1_000_003


def run_demo(cases: list[str], steps: int, threads: str | None, out: Path) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if threads is not None:
        env["GIE_THREADS"] = threads
    cmd = [sys.executable, "-m", "gie_core.cli", "demo", "--out", str(out), "--steps", str(steps),
           "--device", "cpu", *[a for c in cases for a in ("--case", c)]]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads((out / "results.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=3, help="how many bundled cases each run edits (default 3 of the 10)")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps per case (default 20, the demo's)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs of each variant (default 1)")
    ap.add_argument("--load", type=int, default=None, help="busy processes (default: one per available CPU)")
    ap.add_argument("--no-load", action="store_true", help="measure without the busy processes")
    ap.add_argument("--skip-all", action="store_true", help="leave out the all-CPUs row (torch's old default)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from gie_core._cli.demo import _load_manifest
    from gie_core.runtime import available_cpus

    cpus = available_cpus()
    cases = [c["name"] for c in _load_manifest()][:args.cases]
    variants = {"single": "1", "auto": None}
    if not args.skip_all:
        variants["all"] = str(cpus)
    n_load = 0 if args.no_load else (args.load if args.load is not None else cpus)
    print(f"instructgie demo, {len(cases)} case(s) x {args.steps} steps, {cpus} CPUs available, "
          f"{n_load} busy process(es) started by this script, load average before {os.getloadavg()[0]:.1f}")
    load = [mp.Process(target=_spin, daemon=True) for _ in range(n_load)]
    for p in load:
        p.start()
    times: dict[str, list[float]] = {k: [] for k in variants}
    used: dict[str, int | None] = {}
    try:
        time.sleep(1.0 if load else 0.0)  # let the load reach the CPUs before the first sample
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                for name, threads in variants.items():
                    wall, record = run_demo(cases, args.steps, threads, Path(tmp) / f"{name}{r}")
                    times[name].append(wall)
                    used[name] = record.get("threads")
                    print(f"  {name:<6} run {r + 1}: {wall:7.1f} s  (torch threads {used[name]})", flush=True)
    finally:
        for p in load:
            p.terminate()
        for p in load:
            p.join()
    base = statistics.median(times["single"])
    print(f"{'variant':<8}{'threads':>8}{'median s':>10}{'/ single':>10}")
    for name in variants:
        med = statistics.median(times[name])
        print(f"{name:<8}{used[name]!s:>8}{med:>10.1f}{med / base:>10.2f}")
    ratio = statistics.median(times["auto"]) / base
    print(f"auto / single = {ratio:.2f} (bar: <= 2.00) -> {'met' if ratio <= 2.0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
