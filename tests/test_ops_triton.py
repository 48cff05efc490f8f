"""Triton selective scan and cross-scan/merge kernels against the references.

On a machine without CUDA they run through Triton's interpreter (TRITON_INTERPRET=1, set by
scripts/test.sh), so shapes are small: every program runs as NumPy on the CPU.
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from test_ops import ARG_NAMES, assert_close_scaled, make_inputs, reference64, run

from gie_core import ops
from gie_core.ops.reference import cross_merge_reference, cross_scan_reference, selective_scan_reference

pytestmark = [
    pytest.mark.slow,  # the interpreter runs every program as NumPy: minutes on a CPU
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
    pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                       reason="no CUDA and TRITON_INTERPRET is not 1 (scripts/test.sh sets it)"),
]

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def scan_triton(*args, **kw):
    from gie_core.ops.triton_scan import selective_scan_triton
    return selective_scan_triton(*args, **kw)


# (b, d, l, n, groups, D, z, bias, softplus, last, delta range, chunk, dtype)
CASES = {
    "odd_all_extras_3chunks": (1, 8, 37, 3, None, True, True, True, True, True, (-1.0, 1.0), 16, torch.float64),
    "groups_n16_large_delta": (2, 8, 20, 16, 2, True, False, False, False, True, (3.0, 12.0), 8, torch.float64),
    "length1": (1, 4, 1, 1, None, False, False, False, False, True, (0.0, 1.0), None, torch.float64),
    "float32_tiny_delta": (1, 8, 24, 4, None, True, True, False, True, False, (1e-6, 1e-5), None, torch.float32),
}


@pytest.mark.parametrize("case", list(CASES))
def test_triton_scan_matches_reference_values_and_gradients(case):
    b, d, l, n, g, with_D, with_z, with_bias, softplus, last, drange, chunk, dtype = CASES[case]
    seed = sum(map(ord, case))
    inputs = make_inputs(b, d, l, n, groups=g, with_D=with_D, with_z=with_z, with_bias=with_bias,
                         delta_range=drange, dtype=dtype, seed=seed)
    inputs = {k: None if v is None else v.to(DEVICE).requires_grad_() for k, v in inputs.items()}
    inputs64, ref = reference64(inputs, softplus, last)
    out = run(scan_triton, inputs, softplus, last, chunk=chunk)
    ref_y, ref_s = ref if last else (ref, None)
    y, s = out if last else (out, None)
    rtol = 1e-10 if dtype == torch.float64 else 2e-5
    assert y.dtype == dtype and y.shape == (b, d, l)
    assert_close_scaled(y, ref_y, rtol, "y")
    if last:
        assert_close_scaled(s, ref_s, rtol, "last_state")

    gen = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(b, d, l, generator=gen, dtype=torch.float64).to(DEVICE)
    loss_ref, loss = (ref_y * gy).sum(), (y * gy.to(dtype)).sum()
    if last:
        gs = torch.randn(b, d, n, generator=gen, dtype=torch.float64).to(DEVICE)
        loss_ref, loss = loss_ref + (ref_s * gs).sum(), loss + (s * gs.to(dtype)).sum()
    names = [k for k in ARG_NAMES if inputs[k] is not None]
    grads_ref = torch.autograd.grad(loss_ref, [inputs64[k] for k in names])
    grads = torch.autograd.grad(loss, [inputs[k] for k in names])
    grad_rtol = 1e-9 if dtype == torch.float64 else 2e-4
    for name, g_ref, g_out in zip(names, grads_ref, grads):
        assert_close_scaled(g_out, g_ref, grad_rtol, f"d{name}")


def test_last_state_gradient_alone_flows_back():
    """Only the last state is used: y's gradient is None inside the Function."""
    inputs = make_inputs(1, 4, 10, 2, with_D=False, with_z=False, with_bias=False, seed=11)
    inputs = {k: None if v is None else v.to(DEVICE).requires_grad_() for k, v in inputs.items()}
    inputs64, (_, s_ref) = reference64(inputs, False, True)
    _, s = run(scan_triton, inputs, False, True, chunk=4)
    names = ["u", "delta", "A", "B"]
    g_ref = torch.autograd.grad(s_ref.sum(), [inputs64[k] for k in names])
    g = torch.autograd.grad(s.sum(), [inputs[k] for k in names])
    for name, a, e in zip(names, g, g_ref):
        assert_close_scaled(a, e, 1e-10, f"d{name}")


def test_dispatch_selects_triton_by_name():
    inputs = make_inputs(1, 4, 9, 2, seed=4)
    inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
    assert "triton" in ops.available_backends(DEVICE)
    y = run(ops.selective_scan, inputs, True, False, backend="triton")
    assert_close_scaled(y, run(selective_scan_reference, inputs, True, False), 1e-10, "y")


@pytest.mark.parametrize("hw", [(3, 5), (1, 6), (7, 2)])
def test_triton_cross_scan_and_merge_match_torch_with_gradients(hw):
    h, w = hw
    x = torch.randn(2, 3, h, w, dtype=torch.float64, device=DEVICE, requires_grad=True)
    ys = torch.randn(2, 4, 3, h * w, dtype=torch.float64, device=DEVICE, requires_grad=True)
    out = ops.cross_scan(x, backend="triton")
    torch.testing.assert_close(out, cross_scan_reference(x), rtol=0, atol=0)
    merged = ops.cross_merge(ys, h, w, backend="triton")
    torch.testing.assert_close(merged, cross_merge_reference(ys, h, w))
    # gradients: each kernel's backward is the other kernel; compare with autograd through torch
    g_out = torch.randn_like(out)
    g_merged = torch.randn_like(merged)
    gx, = torch.autograd.grad(out, x, g_out)
    gx_ref, = torch.autograd.grad(cross_scan_reference(x), x, g_out)
    gy, = torch.autograd.grad(merged, ys, g_merged)
    gy_ref, = torch.autograd.grad(cross_merge_reference(ys, h, w), ys, g_merged)
    torch.testing.assert_close(gx, gx_ref)
    torch.testing.assert_close(gy, gy_ref)
    # and the adjoint identity holds for the kernels themselves
    torch.testing.assert_close((out * ys).sum(), (x.flatten(2) * merged).sum())


_AOT_SCRIPT = r"""
import sys
import triton
import triton.language as tl
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as exc:
    print("SKIP", exc); sys.exit(0)
from gie_core.ops import triton_cross, triton_scan
scan = triton_scan._kernels()
_, cross_scan_kernel, cross_merge_kernel = triton_cross._kernels()
constants = dict(N=16, NP=16, BD=16, CHUNK=64, NUM_CHUNKS=4, ACC=tl.float32, HAS_LAST=True, BLOCK=1024)
kernels = [scan[k] for k in ("chunk_end", "carry", "chunk_out", "chunk_adj", "carry_rev", "chunk_grad")]
for fn in kernels + [cross_scan_kernel, cross_merge_kernel]:
    signature, constexprs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            constexprs[(i,)] = constants[name]
        else:
            signature[name] = "*fp32" if name.endswith("_ptr") else "i32"
    try:
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", 90, 32))
    except FileNotFoundError as exc:  # no ptxas bundled
        print("SKIP", exc); sys.exit(0)
    assert ".entry" in compiled.asm["ptx"], fn.arg_names
    print("compiled", fn.arg_names[0], len(compiled.asm["ptx"]))
print("ALL OK")
"""


def test_kernels_compile_for_a_real_gpu_target():
    """Ahead-of-time compile every kernel to PTX for sm_90 (H100/H200) in a subprocess with the
    interpreter off: catches what the interpreter accepts but the compiler rejects, no GPU needed."""
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], env=env, cwd=root, capture_output=True,
                          text=True, timeout=300)
    if proc.stdout.startswith("SKIP"):
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0 and "ALL OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]
