"""CPU selective-scan benchmark: each backend vs the reference loop and vs mambapy's parallel scan.

Rows: "reference" (the loop), "cpu" (the fused numba kernel when numba imports, else the PyTorch
scan; the header says which), "cpu_torch" (the pure-PyTorch chunked scan), "mambapy".

Usage:
    .venv/bin/python benchmarks/scan.py                 # (4, 96, 4096) at d_state 1 and 16
    .venv/bin/python benchmarks/scan.py --length 1024 --states 16 --repeats 5

Shapes follow SS2D: batch·4 directions = 4, d = 96 channels, L = 4096 (a 64×64 feature map).
Inputs are VMamba-like: A = -(1..n), Δ = softplus(dt + bias) with small dt, D = 1.
Every figure is the best of ``--repeats`` runs (the reference: 3 forward, 2 forward+backward)
measured in this process; ratios are
baseline_ms / backend_ms, so > 1 means the backend is faster. One untimed warm-up call per row
(for "cpu" that includes numba's compile, or its load from numba's on-disk cache).
mambapy (a published pure-PyTorch Blelloch scan) gets its native (B, L, D) layout prepared
outside the timed region and Δ already softplus'd, so its figures are, if anything, flattering.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gie_core import ops  # noqa: E402

CLOCK = time.perf_counter


def best_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times) * 1e3


def make_inputs(b, d, l, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, l, generator=gen)
    dt = 0.1 * torch.randn(b, d, l, generator=gen)
    dt_bias = torch.log(torch.expm1(torch.empty(d).uniform_(1e-3, 0.1, generator=gen)))  # inverse softplus
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B = torch.randn(b, n, l, generator=gen)
    C = torch.randn(b, n, l, generator=gen)
    D = torch.ones(d)
    return u, dt, A, B, C, D, dt_bias


def mambapy_scan():
    try:
        from mambapy.mamba import MambaBlock
    except ImportError:
        return None
    # MambaBlock.selective_scan does not use self: (x, Δ, A, B, C, D) in (B, L, ED) layout.
    return lambda *args: MambaBlock.selective_scan(None, *args)


def bench_state_size(args, n, table):
    b, d, l = args.batch, args.dim, args.length
    u, dt, A, B, C, D, bias = make_inputs(b, d, l, n)
    leaves = [u, dt, A, B, C, D, bias]

    def scan_call(backend, grad):
        tensors = [t.clone().requires_grad_(grad) for t in leaves]
        def fn():
            y = ops.selective_scan(tensors[0], tensors[1], tensors[2], tensors[3], tensors[4],
                                   D=tensors[5], delta_bias=tensors[6], delta_softplus=True,
                                   backend=backend)
            if grad:
                y.backward(gy)
        return fn

    gy = torch.randn(b, d, l)
    rows = {}
    backends = [name for name in ops.available_backends("cpu") if name != "triton"]
    for name in backends:
        # The reference loop is dispatch-bound and swings with machine load: best of 3 (fwd) / 2.
        reps = 3 if name == "reference" else args.repeats
        fwd = best_ms(lambda: torch.no_grad()(scan_call(name, False))(), reps)
        fb = best_ms(scan_call(name, True), 2 if name == "reference" else max(2, reps // 2))
        rows[name] = (fwd, fb)
        print(f"  measured {name:9s} d_state={n:2d}: fwd {fwd:9.2f} ms, fwd+bwd {fb:9.2f} ms", flush=True)

    mp = mambapy_scan()
    if mp is not None:
        delta = F.softplus(dt + bias[:, None])
        xs = [t.transpose(1, 2).contiguous() for t in (u, delta, B, C)]  # (B, L, ·)
        mp_leaves = [xs[0], xs[1], A, xs[2], xs[3], D]
        gy_t = gy.transpose(1, 2).contiguous()

        def mp_call(grad):
            tensors = [t.clone().requires_grad_(grad) for t in mp_leaves]
            def fn():
                y = mp(*tensors)
                if grad:
                    y.backward(gy_t)
            return fn

        fwd = best_ms(lambda: torch.no_grad()(mp_call(False))(), args.repeats)
        fb = best_ms(mp_call(True), max(2, args.repeats // 2))
        rows["mambapy"] = (fwd, fb)
        print(f"  measured {'mambapy':9s} d_state={n:2d}: fwd {fwd:9.2f} ms, fwd+bwd {fb:9.2f} ms", flush=True)
    table[n] = rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="batch × 4 directions (default 4)")
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--states", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--clock", choices=["wall", "process"], default="wall",
                   help="wall time (default) or this process's CPU time; on a shared, oversubscribed "
                        "machine use --threads 1 --clock process: time spent descheduled is not counted")
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"selective scan, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.clock} clock, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, "
          f"(b, d, l) = ({args.batch}, {args.dim}, {args.length}), D + delta_bias + softplus, float32; "
          f"'cpu' runs the {ops.cpu_implementation('cpu')} implementation")
    table = {}
    for n in args.states:
        bench_state_size(args, n, table)

    print()
    hdr = (f"{'d_state':>7} {'backend':>10} {'fwd ms':>9} {'vs ref':>8} {'vs mambapy':>10} "
           f"{'fwd+bwd ms':>11} {'vs ref':>8} {'vs mambapy':>10}")
    print(hdr)
    print("-" * len(hdr))
    for n, rows in table.items():
        ref = rows.get("reference")
        mp = rows.get("mambapy")
        for name, (fwd, fb) in rows.items():
            def ratio(base, value):
                return f"{base / value:7.1f}x" if base else "      -"
            print(f"{n:>7} {name:>10} {fwd:9.2f} {ratio(ref and ref[0], fwd):>8} "
                  f"{ratio(mp and mp[0], fwd):>10} {fb:11.2f} {ratio(ref and ref[1], fb):>8} "
                  f"{ratio(mp and mp[1], fb):>10}")
    print("\nratio = baseline time / backend time (higher is faster); targets for 'cpu': fwd ≥15x vs ref "
          "and ≥10x vs mambapy at d_state=16, ≥3x vs mambapy at d_state=1, fwd+bwd ≥5x vs ref.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
