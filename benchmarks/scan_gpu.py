"""GPU selective-scan benchmark: Triton (and mamba-ssm when installed) vs the reference loop, and
the Triton forward as a fraction of the memory-bandwidth bound. Needs CUDA; takes ~1 minute.

Usage (compiled Triton, not the interpreter):
    TRITON_INTERPRET=0 .venv/bin/python benchmarks/scan_gpu.py
    TRITON_INTERPRET=0 .venv/bin/python benchmarks/scan_gpu.py --length 16384 --ref-len 16384

The reference loop launches ~8 kernels per step, so by default it is timed at --ref-len steps and
scaled linearly to --length; such rows are labelled "extrapolated". Bandwidth bound: the bytes
the core scan must move at least (read u, Δ, B, C; write y) divided by --peak-gbps (H200: 4800).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gie_core import ops  # noqa: E402


def cuda_ms(fn, repeats: int, warmup: int = 2) -> float:
    """Median of ``repeats`` timings with CUDA events (synchronised)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def make_inputs(b, d, l, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, l, generator=gen)
    dt = 0.1 * torch.randn(b, d, l, generator=gen)
    bias = torch.log(torch.expm1(torch.empty(d).uniform_(1e-3, 0.1, generator=gen)))
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B = torch.randn(b, n, l, generator=gen)
    C = torch.randn(b, n, l, generator=gen)
    D = torch.ones(d)
    return [t.cuda() for t in (u, dt, A, B, C, D, bias)]


def scan_fn(backend, leaves, grad, gy, **kw):
    tensors = [t.detach().clone().requires_grad_(grad) for t in leaves]

    def fn():
        y = ops.selective_scan(tensors[0], tensors[1], tensors[2], tensors[3], tensors[4], D=tensors[5],
                               delta_bias=tensors[6], delta_softplus=True, backend=backend,
                               check_finite=False, **kw)
        if grad:
            y.backward(gy)
    return fn if grad else torch.no_grad()(fn)


def guarded(label, fn):
    try:
        return fn()
    except Exception as exc:  # keep going: one failing row must not hide the others
        print(f"  {label}: FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc(limit=3)
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--length", type=int, default=16384)
    p.add_argument("--ref-len", type=int, default=2048,
                   help="steps the reference loop is timed at (scaled linearly to --length)")
    p.add_argument("--states", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--peak-gbps", type=float, default=4800.0, help="GPU memory bandwidth (H200: 4800)")
    p.add_argument("--chunks", type=int, nargs="*", default=[128, 256],
                   help="extra Triton chunk lengths to try for the forward (d_state 16 only)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("scan_gpu.py needs CUDA; nothing to do.")
        return 1
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("TRITON_INTERPRET=1 is set: Triton would run interpreted. Re-run with TRITON_INTERPRET=0.")
        return 1
    b, d, L = args.batch, args.dim, args.length
    has_triton = importlib.util.find_spec("triton") is not None
    backends = [x for x in ops.available_backends("cuda") if x not in ("reference",)]
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"triton {__import__('triton').__version__ if has_triton else 'absent'}, "
          f"backends {ops.available_backends('cuda')}")
    print(f"(b, d, L) = ({b}, {d}, {L}), float32, D + delta_bias + softplus; median of {args.repeats}")
    rows = []
    for n in args.states:
        leaves = make_inputs(b, d, L, n)
        gy = torch.randn(b, d, L, device="cuda")
        # reference at ref_len steps, scaled to L
        rl = min(args.ref_len, L)
        ref_leaves = [t[..., :rl].contiguous() if t.dim() == 3 else t for t in leaves]
        ref_gy = gy[..., :rl].contiguous()
        scale = L / rl
        label = "reference" + ("" if rl == L else f" (timed at L={rl}, extrapolated x{scale:g})")
        fwd = guarded(label, lambda: cuda_ms(scan_fn("reference", ref_leaves, False, ref_gy), 2, 1) * scale)
        fb = guarded(label, lambda: cuda_ms(scan_fn("reference", ref_leaves, True, ref_gy), 1, 1) * scale)
        rows.append((n, label, fwd, fb))
        print(f"  d_state={n:2d} {label}: fwd {fwd} ms, fwd+bwd {fb} ms", flush=True)
        for name in backends:
            fwd = guarded(name, lambda: cuda_ms(scan_fn(name, leaves, False, gy), args.repeats))
            fb = guarded(name, lambda: cuda_ms(scan_fn(name, leaves, True, gy), max(3, args.repeats // 2)))
            rows.append((n, name, fwd, fb))
            print(f"  d_state={n:2d} {name}: fwd {fwd} ms, fwd+bwd {fb} ms", flush=True)

        # Bandwidth: the core Triton forward alone on prepared Δ (the part a fused kernel would be).
        if has_triton:
            from gie_core.ops.triton_scan import triton_scan_forward
            u, dt, A, B, C, _, bias = leaves
            delta = F.softplus(dt + bias[:, None]).contiguous()
            Bg, Cg = B.unsqueeze(1).contiguous(), C.unsqueeze(1).contiguous()
            bytes_moved = 4 * (3 * b * d * L + 2 * b * n * L)  # read u, Δ, B, C; write y (float32)
            for chunk in [None] + (args.chunks if n == 16 else []):
                ms = guarded(f"triton core chunk={chunk}",
                             lambda: cuda_ms(lambda: triton_scan_forward(u, delta, A, Bg, Cg, chunk), args.repeats))
                if ms:
                    gbps = bytes_moved / (ms * 1e-3) / 1e9
                    rows.append((n, f"triton core fwd (chunk={chunk or 'default'})", ms, None))
                    print(f"  d_state={n:2d} triton core forward, chunk={chunk or 'default'}: {ms:.3f} ms, "
                          f"{bytes_moved / 1e6:.1f} MB -> {gbps:.0f} GB/s = "
                          f"{100 * gbps / args.peak_gbps:.1f}% of {args.peak_gbps:g} GB/s", flush=True)

    print()
    hdr = f"{'d_state':>7}  {'backend':<52} {'fwd ms':>9} {'vs ref':>8} {'fwd+bwd ms':>11} {'vs ref':>8}"
    print(hdr)
    print("-" * len(hdr))
    ref = {}
    for n, name, fwd, fb in rows:
        if name.startswith("reference"):
            ref[n] = (fwd, fb)
        rf, rb = ref.get(n, (None, None))

        def fmt(v, w):
            return f"{v:{w}.3f}" if v else " " * (w - 1) + "-"

        def ratio(base, v):
            return f"{base / v:7.1f}x" if base and v else "       -"
        print(f"{n:>7}  {name:<52} {fmt(fwd, 9)} {ratio(rf, fwd)} {fmt(fb, 11)} {ratio(rb, fb)}")

    # cross-scan / cross-merge: fused Triton vs torch, both directions
    if has_triton:
        x = torch.randn(8, 192, 128, 128, device="cuda")
        ys = torch.randn(8, 4, 192, 128 * 128, device="cuda")
        nbytes = x.numel() * 4 * 5  # one read + four writes (scan) / four reads + one write (merge)
        print()
        for label, fn in [
            ("cross_scan torch", lambda: ops.cross_scan(x, backend="torch")),
            ("cross_scan triton", lambda: ops.cross_scan(x, backend="triton")),
            ("cross_merge torch", lambda: ops.cross_merge(ys, 128, 128, backend="torch")),
            ("cross_merge triton", lambda: ops.cross_merge(ys, 128, 128, backend="triton")),
        ]:
            ms = guarded(label, lambda: cuda_ms(fn, args.repeats))
            if ms:
                gbps = nbytes / (ms * 1e-3) / 1e9
                print(f"  {label:<20} (8, 192, 128, 128): {ms:.3f} ms, {gbps:.0f} GB/s = "
                      f"{100 * gbps / args.peak_gbps:.1f}% of peak")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
