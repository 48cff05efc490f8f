"""CUDA checks of the compiled Triton kernels and of mamba-ssm against the float64 reference.

Skipped without CUDA. Run on a GPU machine with compiled (not interpreted) Triton:
    TRITON_INTERPRET=0 .venv/bin/python -m pytest tests/test_ops_cuda.py -q
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from test_ops import ARG_NAMES, assert_close_scaled, make_inputs, reference64, run

from gie_core import ops
from gie_core.ops.reference import cross_merge_reference, cross_scan_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
needs_compiled_triton = pytest.mark.skipif(
    not HAS_TRITON or INTERPRETED,
    reason="needs triton with TRITON_INTERPRET unset/0 (compiled kernels; the interpreter is too slow "
           "for these lengths)")

# (b, d, l, n, groups, D, z, bias, softplus, last, delta range, input dtype)
CASES = {
    "L4096_n16_all_extras": (2, 32, 4096, 16, None, True, True, True, True, True, (-3.0, 0.5), torch.float32),
    "L777_n1_groups_bf16": (2, 64, 777, 1, 4, True, True, True, True, False, (-2.0, 1.0), torch.bfloat16),
    "L1_n4": (1, 16, 1, 4, None, True, False, False, False, True, (0.0, 1.0), torch.float32),
    "L300_large_delta": (1, 16, 300, 16, None, False, False, False, False, True, (5.0, 20.0), torch.float32),
}


def _check_backend(backend, case):
    b, d, l, n, g, with_D, with_z, with_bias, softplus, last, drange, dtype = CASES[case]
    seed = sum(map(ord, case))
    inputs = make_inputs(b, d, l, n, groups=g, with_D=with_D, with_z=with_z, with_bias=with_bias,
                         delta_range=drange, dtype=torch.float32, seed=seed)
    inputs = {k: None if v is None else v.cuda().to(dtype).requires_grad_() for k, v in inputs.items()}
    inputs64, ref = reference64(inputs, softplus, last)
    out = run(ops.selective_scan, inputs, softplus, last, backend=backend)
    ref_y, ref_s = ref if last else (ref, None)
    y, s = out if last else (out, None)
    assert y.dtype == dtype and y.device.type == "cuda"
    rtol = 2e-2 if dtype == torch.bfloat16 else 5e-5  # bf16 output rounding dominates
    assert_close_scaled(y.float(), ref_y, rtol, f"{backend} y")
    if last:
        assert_close_scaled(s.float(), ref_s, rtol, f"{backend} last_state")
    gen = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(b, d, l, generator=gen, dtype=torch.float64).cuda()
    loss_ref, loss = (ref_y * gy).sum(), (y.float() * gy.float()).sum()
    if last:
        gs = torch.randn(b, d, n, generator=gen, dtype=torch.float64).cuda()
        loss_ref, loss = loss_ref + (ref_s * gs).sum(), loss + (s.float() * gs.float()).sum()
    names = [k for k in ARG_NAMES if inputs[k] is not None]
    grads_ref = torch.autograd.grad(loss_ref, [inputs64[k] for k in names])
    grads = torch.autograd.grad(loss, [inputs[k] for k in names])
    grad_rtol = 3e-2 if dtype == torch.bfloat16 else 5e-4
    for name, g_ref, g_out in zip(names, grads_ref, grads):
        assert_close_scaled(g_out.float(), g_ref, grad_rtol, f"{backend} d{name}")


@needs_compiled_triton
@pytest.mark.parametrize("case", list(CASES))
def test_triton_on_cuda_matches_reference(case):
    _check_backend("triton", case)


@pytest.mark.parametrize("case", ["L4096_n16_all_extras", "L777_n1_groups_bf16"])
def test_cpu_backend_runs_on_cuda_too(case):
    """The pure-PyTorch backend has no CPU-only assumptions (it is the CUDA fallback)."""
    _check_backend("cpu", case)


@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None, reason="mamba_ssm is not installed")
@pytest.mark.parametrize("case", ["L4096_n16_all_extras", "L1_n4", "L300_large_delta"])
def test_mamba_ssm_on_cuda_matches_reference(case):
    assert "mamba_ssm" in ops.available_backends("cuda")
    _check_backend("mamba_ssm", case)


def test_auto_on_cuda_picks_a_gpu_backend(monkeypatch):
    monkeypatch.delenv(ops.ENV_BACKEND, raising=False)
    expected = ("mamba_ssm" if "mamba_ssm" in ops.available_backends("cuda")
                else "triton" if HAS_TRITON else "cpu")
    assert ops.resolve_backend("auto", "cuda") == expected


@needs_compiled_triton
@pytest.mark.parametrize("shape", [(2, 96, 64, 64), (1, 8, 7, 13)])
def test_triton_cross_scan_merge_on_cuda(shape):
    b, c, h, w = shape
    x = torch.randn(shape, device="cuda", requires_grad=True)
    ys = torch.randn(b, 4, c, h * w, device="cuda", requires_grad=True)
    out = ops.cross_scan(x, backend="triton")
    torch.testing.assert_close(out, cross_scan_reference(x), rtol=0, atol=0)
    merged = ops.cross_merge(ys, h, w, backend="triton")
    torch.testing.assert_close(merged, cross_merge_reference(ys, h, w))
    gx, = torch.autograd.grad(out, x, ys)
    torch.testing.assert_close(gx.flatten(2), cross_merge_reference(ys, h, w))
    assert ops.cross_scan(x).shape == out.shape  # auto path on CUDA
