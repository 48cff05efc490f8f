"""Selective scan backends against the float64 loop reference; cross-scan/merge; bad input.

Every case draws fresh random inputs; expected values come from the independent float64 loop in
gie_core/ops/reference.py (forward) and from autograd through it (gradients).
"""
from __future__ import annotations

import zlib

import pytest
import torch

from gie_core import ops
from gie_core.ops.cpu import selective_scan_cpu
from gie_core.ops.reference import selective_scan_reference

try:
    from gie_core.ops import numba_scan
except ImportError:  # numba is a core dependency, but the pure-PyTorch fallback must work without it
    numba_scan = None
needs_numba = pytest.mark.skipif(numba_scan is None, reason="numba is not installed")

ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(b, d, l, n, *, groups=None, with_D=True, with_z=True, with_bias=True,
                delta_range=(0.0, 1.0), dtype=torch.float64, seed=0):
    """Random scan inputs; A ≤ 0 like a trained Mamba; delta uniform in ``delta_range``."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    lo, hi = delta_range
    bc_shape = (b, n, l) if groups is None else (b, groups, n, l)
    return {
        "u": rnd(b, d, l),
        "delta": lo + (hi - lo) * torch.rand(b, d, l, generator=gen, dtype=dtype),
        "A": -torch.rand(d, n, generator=gen, dtype=dtype) * 4 - 0.05,
        "B": rnd(*bc_shape),
        "C": rnd(*bc_shape),
        "D": rnd(d) if with_D else None,
        "z": rnd(b, d, l) if with_z else None,
        "delta_bias": 0.3 * rnd(d) if with_bias else None,
    }


def run(fn, inputs, softplus, last, **kw):
    return fn(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], D=inputs["D"],
              z=inputs["z"], delta_bias=inputs["delta_bias"], delta_softplus=softplus,
              return_last_state=last, **kw)


# (b, d, l, n, groups, D, z, bias, softplus, last, delta range, chunk for the cpu backend)
CASES = {
    "length1": (2, 3, 1, 1, None, False, False, False, False, True, (0.0, 1.0), None),
    "odd_n16_all": (2, 4, 37, 16, None, True, True, True, True, True, (-1.0, 1.0), 8),
    "groups_many_chunks": (2, 6, 129, 4, 3, True, True, True, True, True, (0.0, 0.5), 16),
    "large_delta": (1, 4, 50, 16, None, True, False, False, False, True, (5.0, 20.0), 8),
    "tiny_delta": (1, 4, 50, 2, 2, False, True, False, False, False, (1e-6, 1e-5), 8),
    "default_chunk_300": (1, 3, 300, 1, None, True, True, True, True, True, (0.0, 0.3), None),
    "no_extras_n16": (2, 2, 70, 16, None, False, False, False, False, False, (0.0, 2.0), None),
    "softplus_extremes": (1, 4, 45, 4, None, True, True, True, True, True, (-25.0, 25.0), 8),
    # d_state 1 runs a 4-channel kernel: 6 channels = one full and one partial block, 3 groups
    "n1_groups_partial_block": (2, 6, 77, 1, 3, True, True, True, True, True, (0.0, 1.0), None),
}

# The two fast CPU implementations: "cpu" runs the fused numba kernel when numba imports,
# "cpu_torch" (and "cpu" without numba) the pure-PyTorch chunked scan.
IMPLS = {
    "cpu_torch": lambda *a, chunk=None, **kw: selective_scan_cpu(*a, chunk=chunk, **kw),
    "numba": lambda *a, chunk=None, **kw: numba_scan.selective_scan_numba(*a, **kw),
}
IMPL_PARAMS = [pytest.param("cpu_torch"), pytest.param("numba", marks=needs_numba)]


def reference64(inputs, softplus, last):
    inputs64 = {k: None if v is None else v.detach().double().requires_grad_() for k, v in inputs.items()}
    out = run(selective_scan_reference, inputs64, softplus, last)
    return inputs64, out


def assert_close_scaled(actual, expected, rtol, name):
    """Relative to the tensor's scale, so tiny entries of a large output don't fail on rounding."""
    expected = expected.to(actual.dtype) if actual.dtype == torch.float64 else expected.float()
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.to(expected.dtype) - expected).abs().max()
    assert err <= rtol * scale, f"{name}: max error {err.item():.3e} > {rtol} × scale {scale.item():.3e}"


@pytest.mark.parametrize("impl", IMPL_PARAMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(CASES))
def test_cpu_backends_match_reference_values_and_gradients(case, dtype, impl):
    b, d, l, n, g, with_D, with_z, with_bias, softplus, last, drange, chunk = CASES[case]
    # A stable seed: hash() of a str changes with every process (PYTHONHASHSEED), which made these
    # inputs, and so the rounding errors checked below, differ from run to run.
    seed = zlib.crc32(f"{case}/{dtype}".encode()) % 10_000
    inputs = make_inputs(b, d, l, n, groups=g, with_D=with_D, with_z=with_z, with_bias=with_bias,
                         delta_range=drange, dtype=dtype, seed=seed)
    inputs = {k: None if v is None else v.requires_grad_() for k, v in inputs.items()}
    inputs64, ref = reference64(inputs, softplus, last)
    out = run(IMPLS[impl], inputs, softplus, last, chunk=chunk)
    ref_y, ref_s = ref if last else (ref, None)
    y, s = out if last else (out, None)
    assert y.dtype == dtype and y.shape == (b, d, l)
    rtol = 1e-10 if dtype == torch.float64 else 2e-5
    assert_close_scaled(y, ref_y, rtol, "y")
    if last:
        assert s.shape == (b, d, n)
        assert_close_scaled(s, ref_s, rtol, "last_state")

    gen = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(b, d, l, generator=gen, dtype=torch.float64)
    loss_ref = (ref_y * gy).sum()
    loss = (y * gy.to(dtype)).sum()
    if last:
        gs = torch.randn(b, d, n, generator=gen, dtype=torch.float64)
        loss_ref = loss_ref + (ref_s * gs).sum()
        loss = loss + (s * gs.to(dtype)).sum()
    names = [k for k in ARG_NAMES if inputs[k] is not None]
    grads_ref = torch.autograd.grad(loss_ref, [inputs64[k] for k in names])
    grads = torch.autograd.grad(loss, [inputs[k] for k in names])
    # float64: softplus_extremes (deltas of ±25 through exp) loses a few more digits to cancellation;
    # one random draw measured 1.2e-9 relative on ddelta.
    grad_rtol = (1e-8 if case == "softplus_extremes" else 1e-9) if dtype == torch.float64 else 2e-4
    for name, g_ref, g_out in zip(names, grads_ref, grads):
        assert g_out.shape == inputs[name].shape
        assert_close_scaled(g_out, g_ref, grad_rtol, f"d{name}")


@pytest.mark.parametrize("impl", IMPL_PARAMS)
def test_cpu_backends_gradcheck_float64_all_inputs(impl):
    inputs = make_inputs(1, 4, 7, 3, groups=2, delta_range=(0.0, 0.8), seed=3)
    names = list(ARG_NAMES)
    tensors = tuple(inputs[k].requires_grad_() for k in names)

    def f(*args):
        kw = dict(zip(names, args))
        y, s = run(IMPLS[impl], kw, True, True, chunk=3)  # cpu_torch: 3 chunks, one padded
        return y, s

    assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_cpu_backend_slices_big_batches_without_changing_results(monkeypatch):
    """Batches whose state would be too big are scanned slice by slice (forced here)."""
    import gie_core.ops.cpu as cpu_mod

    monkeypatch.setattr(cpu_mod, "MAX_STATE_ELEMENTS", 1)  # one batch item per slice
    inputs = make_inputs(3, 4, 19, 3, groups=2, seed=9)
    inputs = {k: v.requires_grad_() for k, v in inputs.items()}
    inputs64, (ref_y, ref_s) = reference64(inputs, True, True)
    y, s = run(selective_scan_cpu, inputs, True, True, chunk=5)
    assert_close_scaled(y, ref_y, 1e-10, "y")
    assert_close_scaled(s, ref_s, 1e-10, "last_state")
    names = list(ARG_NAMES)
    grads = torch.autograd.grad((y.sum() + (s * s).sum()), [inputs[k] for k in names])
    grads_ref = torch.autograd.grad((ref_y.sum() + (ref_s * ref_s).sum()), [inputs64[k] for k in names])
    for name, g_out, g_ref in zip(names, grads, grads_ref):
        assert_close_scaled(g_out, g_ref, 1e-9, f"d{name}")


@needs_numba
def test_numba_backward_channel_slices_give_the_same_gradients(monkeypatch):
    """Backward splits each (batch, group) into channel slices with private dB/dC buffers (their
    number depends on the thread count); force uneven slices: 5 channels as 3 + 2."""
    monkeypatch.setattr(numba_scan, "_channel_slices", lambda b, g, dg: 2)
    inputs = {k: v.requires_grad_() for k, v in make_inputs(2, 5, 23, 3, seed=11).items()}
    inputs64, (ref_y, ref_s) = reference64(inputs, True, True)
    y, s = run(numba_scan.selective_scan_numba, inputs, True, True)
    names = list(ARG_NAMES)
    grads = torch.autograd.grad(y.sum() + (s * s).sum(), [inputs[k] for k in names])
    grads_ref = torch.autograd.grad(ref_y.sum() + (ref_s * ref_s).sum(), [inputs64[k] for k in names])
    for name, g_out, g_ref in zip(names, grads, grads_ref):
        assert_close_scaled(g_out, g_ref, 1e-9, f"d{name}")


@needs_numba
def test_numba_kernels_use_the_workqueue_thread_pool(monkeypatch):
    """numba's OpenMP layer next to torch's OpenMP makes later torch ops spin-wait (100x slower
    sums were measured), so the kernels run on numba's workqueue pool unless the user chose a layer."""
    import os

    import numba

    inputs = make_inputs(1, 2, 9, 2, seed=6, dtype=torch.float32)
    run(numba_scan.selective_scan_numba, inputs, True, False)
    expected = os.environ.get("NUMBA_THREADING_LAYER") or "workqueue"
    assert numba.threading_layer() == expected


@needs_numba
def test_numba_float32_exp_and_softplus_match_float64():
    """The kernels' own float32 exp / log1p (vectorisable polynomials) against NumPy in float64."""
    import numpy as np
    from numba import njit

    @njit
    def exp_and_softplus(x):
        e = np.empty_like(x)
        sp = np.empty_like(x)
        for i in range(x.size):
            e[i] = numba_scan.fast_exp(x[i])
            sp[i] = numba_scan._softplus(x[i])
        return e, sp

    x = np.concatenate([np.linspace(-90, 88, 20001), np.linspace(-1e-3, 1e-3, 2001)]).astype(np.float32)
    e, sp = exp_and_softplus(x)
    x64 = x.astype(np.float64)
    e64, sp64 = np.exp(x64), np.logaddexp(0.0, x64)
    ok = e64 > 1e-37  # below that float32 is denormal: the kernel flushes exp(x < -87.3) to 0
    assert np.all(np.abs(e[ok] - e64[ok]) <= 4e-7 * e64[ok])
    assert np.all(np.abs(e[~ok] - e64[~ok]) <= 1.2e-37)
    assert np.all(np.abs(sp - sp64) <= 4e-7 * sp64 + 1.2e-37)  # softplus(x) ≈ exp(x) far left
    big = exp_and_softplus(np.array([89.0, -100.0], dtype=np.float32))[0]
    assert np.isinf(big[0]) and big[1] == 0.0  # overflow stays visible to the finite check


@pytest.mark.parametrize("impl", IMPL_PARAMS)
def test_half_precision_inputs_compute_in_float32_and_return_input_dtype(impl):
    inputs = make_inputs(1, 4, 33, 4, seed=5, dtype=torch.float32)
    half = {k: v.to(torch.bfloat16) for k, v in inputs.items()}
    y = run(IMPLS[impl], half, True, False)
    assert y.dtype == torch.bfloat16
    _, ref = reference64(half, True, False)
    assert_close_scaled(y.float(), ref.float(), 1e-2, "y(bf16)")


def test_dispatch_runs_each_available_backend_and_auto_is_cpu_on_cpu(monkeypatch):
    monkeypatch.delenv(ops.ENV_BACKEND, raising=False)
    inputs = make_inputs(1, 3, 20, 4, seed=7)
    expected = run(selective_scan_reference, inputs, True, False)
    assert ops.resolve_backend("auto", "cpu") == "cpu"
    assert ops.cpu_implementation("cpu") == ("torch" if numba_scan is None else "numba")
    assert {"reference", "cpu", "cpu_torch"} <= set(ops.available_backends("cpu"))
    for name in ops.available_backends("cpu"):
        if name == "triton":  # exercised in tests/test_ops_triton.py (interpreter is slow)
            continue
        y = run(ops.selective_scan, inputs, True, False, backend=name)
        assert_close_scaled(y, expected, 1e-10, name)


@pytest.mark.parametrize("backend", ["reference", "cpu", "cpu_torch"])
def test_length_zero_gives_empty_output_and_zero_gradients(backend):
    inputs = {k: v.requires_grad_() for k, v in make_inputs(1, 2, 0, 3, seed=0).items()}
    y, s = run(ops.selective_scan, inputs, True, True, backend=backend)
    assert y.shape == (1, 2, 0) and s.shape == (1, 2, 3) and not s.abs().any()
    (y.sum() + s.sum()).backward()
    assert inputs["A"].grad is None or not inputs["A"].grad.abs().any()


def test_cpu_backend_falls_back_to_pure_pytorch_without_numba(monkeypatch):
    """Where numba cannot be imported, backend "cpu" runs the chunked PyTorch scan (ops/cpu.py)."""
    import gie_core.ops.cpu as cpu_mod

    calls = []
    real = cpu_mod.selective_scan_cpu
    monkeypatch.setattr(ops, "_numba_scan_fn", lambda: None)
    monkeypatch.setattr(cpu_mod, "selective_scan_cpu", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    assert ops.cpu_implementation("cpu") == "torch"
    inputs = {k: v.requires_grad_() for k, v in make_inputs(1, 3, 17, 2, seed=4).items()}
    inputs64, ref = reference64(inputs, True, False)
    y = run(ops.selective_scan, inputs, True, False, backend="cpu")
    assert calls, "backend 'cpu' did not run the PyTorch scan"
    assert_close_scaled(y, ref, 1e-10, "y")
    (g_u,), (g_ref,) = torch.autograd.grad(y.sum(), [inputs["u"]]), torch.autograd.grad(ref.sum(), [inputs64["u"]])
    assert_close_scaled(g_u, g_ref, 1e-9, "du")


def test_env_var_replaces_auto_but_not_an_explicit_backend(monkeypatch):
    monkeypatch.setenv(ops.ENV_BACKEND, "reference")
    assert ops.resolve_backend("auto", "cpu") == "reference"
    assert ops.resolve_backend("cpu", "cpu") == "cpu"
    monkeypatch.setenv(ops.ENV_BACKEND, "fastest")
    with pytest.raises(ValueError, match=ops.ENV_BACKEND):
        ops.resolve_backend("auto", "cpu")


def test_unavailable_backends_give_clear_errors():
    inputs = make_inputs(1, 2, 5, 2, seed=1)
    with pytest.raises(ValueError, match="backend must be one of"):
        run(ops.selective_scan, inputs, False, False, backend="cuda")
    with pytest.raises(ValueError, match="mamba_ssm"):
        run(ops.selective_scan, inputs, False, False, backend="mamba_ssm")


def _bad(**changes):
    inputs = make_inputs(2, 4, 6, 3, seed=2, dtype=torch.float32)
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize("changes, pattern", [
    (dict(u=torch.randn(2, 4)), r"u must have shape \(batch, dim, length\)"),
    (dict(delta=torch.randn(2, 4, 5)), r"delta must have shape \(2, 4, 6\)"),
    (dict(A=torch.randn(3, 3)), r"A must have shape \(4, d_state\)"),
    (dict(B=torch.randn(2, 3, 5)), r"B must have shape \(2, 3, 6\)"),
    (dict(C=torch.randn(2, 3, 3, 6)), r"C must have shape \(2, groups, 3, 6\) with groups dividing dim=4"),
    (dict(D=torch.randn(5)), r"D must have shape \(4,\)"),
    (dict(z=torch.randn(2, 4, 7)), r"z must have shape \(2, 4, 6\)"),
    (dict(delta_bias=torch.randn(4, 1)), r"delta_bias must have shape \(4,\)"),
    (dict(u=torch.ones(2, 4, 6, dtype=torch.int64)), r"u must be a floating-point tensor"),
    (dict(B=torch.randn(2, 3, 6, device="meta")), r"one device"),
])
def test_bad_input_raises_value_error_naming_the_argument(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        run(ops.selective_scan, _bad(**changes), False, False, backend="cpu")


@pytest.mark.parametrize("name", ["u", "delta", "B", "delta_bias"])
def test_non_finite_input_is_reported_by_name(name):
    inputs = _bad()
    bad = inputs[name].clone()
    bad.view(-1)[1] = float("nan")
    inputs[name] = bad
    with pytest.raises(ValueError, match=rf"non-finite .* input {name}"):
        run(ops.selective_scan, inputs, True, False, backend="cpu")
    y = run(ops.selective_scan, inputs, True, False, backend="cpu", check_finite=False)
    assert not torch.isfinite(y).all()  # opting out really skips the check


def test_non_finite_output_is_reported():
    inputs = _bad(A=torch.full((4, 3), 50.0), delta=torch.full((2, 4, 6), 10.0))  # exp(+500) overflows
    with pytest.raises(ValueError, match="non-finite .* output"):
        run(ops.selective_scan, inputs, False, False, backend="cpu")


# ---- cross_scan / cross_merge -------------------------------------------------------------------

def test_cross_scan_orders_match_index_formulas():
    b, c, h, w = 2, 3, 4, 5
    x = torch.randn(b, c, h, w)
    xs = ops.cross_scan(x)
    assert xs.shape == (b, 4, c, h * w)
    flat = x.flatten(2)
    t = torch.arange(h * w)
    col_index = (t % h) * w + t // h  # DESIGN.md: p1(t) = (t mod H)·W + t div H
    torch.testing.assert_close(xs[:, 0], flat)
    torch.testing.assert_close(xs[:, 1], flat[..., col_index])
    torch.testing.assert_close(xs[:, 2], flat[..., t.flip(0)])
    torch.testing.assert_close(xs[:, 3], flat[..., col_index.flip(0)])


@pytest.mark.parametrize("hw", [(4, 5), (1, 7), (6, 1), (3, 3)])
def test_cross_merge_is_the_adjoint_of_cross_scan(hw):
    h, w = hw
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    y = torch.randn(2, 4, 3, h * w, dtype=torch.float64)
    lhs = (ops.cross_scan(x) * y).sum()
    rhs = (x.flatten(2) * ops.cross_merge(y, h, w)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_cross_scan_merge_bad_input():
    with pytest.raises(ValueError, match="cross_scan: x must have shape"):
        ops.cross_scan(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="cross_merge: y must have shape"):
        ops.cross_merge(torch.randn(1, 4, 2, 11), 3, 4)
