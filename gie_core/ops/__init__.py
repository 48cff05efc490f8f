"""Selective scan and SS2D cross-scan/merge with interchangeable backends.

Public interface (stable, see DESIGN.md):
    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto", *, check_finite=True)
    cross_scan(x) / cross_merge(y, h, w)
    available_backends(device)

Backends of ``selective_scan`` (all differentiable, all with mamba-ssm's ``selective_scan_fn``
semantics):
    "reference"  plain loop (ops/reference.py), any float dtype incl. float64; the ground truth.
    "cpu"        fast CPU scan: the fused numba kernel (ops/numba_scan.py) for CPU tensors when numba
                 imports, else (or on other devices) the pure-PyTorch chunked scan.
    "cpu_torch"  the pure-PyTorch chunked scan (ops/cpu.py) explicitly; runs on any device.
    "triton"     Triton kernels, forward and backward (ops/triton_scan.py); needs triton.
    "mamba_ssm"  mamba-ssm's CUDA kernel when it is installed (never required).
    "auto"       CUDA: mamba_ssm if importable, else triton if importable, else cpu;
                 other devices: cpu. The environment variable GIE_SCAN_BACKEND, when set, replaces
                 "auto" (an explicit ``backend=`` argument always wins).
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

from .checks import check_selective_scan_inputs
from .reference import cross_merge_reference, cross_scan_reference, selective_scan_reference

BACKENDS = ("reference", "cpu", "cpu_torch", "triton", "mamba_ssm")
ENV_BACKEND = "GIE_SCAN_BACKEND"


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _numba_scan_fn():
    """The fused numba scan or None when numba cannot be imported; imported lazily, once.

    Importing compiles nothing: each kernel is compiled on its first call (seconds) and cached on
    disk by numba, so later processes load the machine code.
    """
    try:
        from .numba_scan import selective_scan_numba
    except Exception:  # ImportError, or numba refusing this NumPy version
        return None
    return selective_scan_numba


def cpu_implementation(device="cpu") -> str:
    """What backend "cpu" runs on ``device``: "numba" (fused kernel, CPU tensors) or "torch"."""
    return "numba" if torch.device(device).type == "cpu" and _numba_scan_fn() is not None else "torch"


@functools.cache
def _mamba_ssm_fn():
    """mamba-ssm's ``selective_scan_fn`` or None; imported lazily, once (it needs CUDA to import)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a CUDA-extension load error on machines without CUDA
        return None
    return selective_scan_fn


def _triton_usable(device: torch.device) -> bool:
    if not _triton_importable():
        return False
    if device.type == "cuda":
        return True
    # On the CPU Triton only runs through its interpreter (tests, debugging).
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available_backends(device="cpu") -> list[str]:
    """Backends ``selective_scan`` can run on ``device`` here: always "reference", "cpu" and
    "cpu_torch"; "triton" on CUDA (or on CPU under TRITON_INTERPRET=1); "mamba_ssm" on CUDA when
    importable. (What "cpu" runs: :func:`cpu_implementation`.)"""
    device = torch.device(device)
    names = ["reference", "cpu", "cpu_torch"]
    if _triton_usable(device):
        names.append("triton")
    if device.type == "cuda" and _mamba_ssm_fn() is not None:
        names.append("mamba_ssm")
    return names


def resolve_backend(backend: str, device, dtype: torch.dtype | None = None) -> str:
    """The concrete backend ``selective_scan`` would use for ``backend`` on ``device``
    (``dtype``: the input dtype; mamba-ssm has no float64 kernel, so "auto" skips it then)."""
    if backend == "auto":
        backend = os.environ.get(ENV_BACKEND, "").strip() or "auto"
        if backend not in ("auto",) + BACKENDS:
            raise ValueError(f"{ENV_BACKEND} must be one of {('auto',) + BACKENDS}, got {backend!r}")
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"selective_scan: backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda":
            if dtype != torch.float64 and _mamba_ssm_fn() is not None:
                return "mamba_ssm"
            if _triton_importable():
                return "triton"
        return "cpu"
    if backend == "mamba_ssm":
        if device.type != "cuda":
            raise ValueError(f"selective_scan: backend 'mamba_ssm' needs CUDA tensors, got device {device}")
        if _mamba_ssm_fn() is None:
            raise ValueError("selective_scan: backend 'mamba_ssm' requested but mamba_ssm is not importable "
                             "(install the 'cuda' extra: pip install 'comfyui-instructgie[cuda]'); "
                             f"available here: {available_backends(device)}")
    if backend == "triton" and not _triton_usable(device):
        why = ("triton is not installed" if not _triton_importable()
               else "on the CPU it only runs under TRITON_INTERPRET=1")
        raise ValueError(f"selective_scan: backend 'triton' is unavailable on {device}: {why}; "
                         f"available here: {available_backends(device)}")
    return backend


def _check_finite(named: dict, what: str, hint: str = "", numba_check: bool = False) -> None:
    """Raise ValueError naming every tensor in ``named`` that holds NaN or inf.

    Cheap path: one plain sum per tensor and a single host sync; NaN and inf propagate into a sum,
    so finite sums prove finite tensors. Only a non-finite sum (a bad value, or a rare overflow of
    huge finite values) triggers the exact ``isfinite`` check of that tensor. With ``numba_check``
    (the numba "cpu" backend; contiguous float32/float64 CPU tensors) it is one exact serial numba
    pass per tensor instead, so no torch thread pool runs right before the numba kernel.
    """
    present = {k: t for k, t in named.items() if t is not None and t.numel()}
    if not present:
        return
    if numba_check and all(
            t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.is_contiguous()
            for t in present.values()):
        # numba's serial pass: torch ops here would leave torch's OpenMP workers spinning against
        # the numba kernel's threads that run next (see ops/numba_scan.py).
        from .numba_scan import all_finite
        bad = [k for k, t in present.items() if not all_finite(t)]
        if bad:
            raise ValueError(f"selective_scan: non-finite values (NaN or inf) in {what} {', '.join(bad)}{hint}; "
                             "pass check_finite=False to skip this check")
        return
    sums = torch.stack([t.sum().to(torch.float64) for t in present.values()])
    if bool(torch.isfinite(sums).all()):
        return
    bad = [k for k, t in present.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"selective_scan: non-finite values (NaN or inf) in {what} {', '.join(bad)}{hint}; "
                         "pass check_finite=False to skip this check")


def _run_mamba_ssm(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    fn = _mamba_ssm_fn()
    # mamba-ssm wants float32 A/D/delta_bias and a common dtype for u/delta/B/C.
    dtype = u.dtype
    out = fn(u.contiguous(), delta.to(dtype).contiguous(), A.float().contiguous(),
             B.to(dtype).contiguous(), C.to(dtype).contiguous(),
             None if D is None else D.float().contiguous(),
             None if z is None else z.to(dtype).contiguous(),
             None if delta_bias is None else delta_bias.float().contiguous(),
             delta_softplus, return_last_state)
    if return_last_state:
        y, last = out
        return y.to(dtype), last.to(dtype)
    return out.to(dtype)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto", *, check_finite=True):
    """Selective scan with mamba-ssm ``selective_scan_fn`` semantics.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t;  y_t = C_t·h_t + D u_t;  y *= silu(z) when z is given;
    Δ = softplus(delta + delta_bias) when ``delta_softplus`` else delta + delta_bias.

    Shapes: u, delta, z ``(b, d, l)``; A ``(d, n)``; B, C ``(b, n, l)`` or ``(b, g, n, l)`` (g groups
    of d/g channels); D, delta_bias ``(d,)``. Returns y ``(b, d, l)`` in u's dtype, and the last
    state ``(b, d, n)`` when ``return_last_state``. Half-precision inputs are computed in float32.

    ``backend``: "auto", "reference", "cpu", "cpu_torch", "triton" or "mamba_ssm" (see the module docstring;
    GIE_SCAN_BACKEND replaces "auto"). ``check_finite`` (default True) raises ValueError when an
    input or the output holds NaN/inf; it costs one cheap reduction and, on CUDA, one host sync.
    Bad shapes, non-float dtypes or mixed devices raise ValueError naming the argument.
    """
    check_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    name = resolve_backend(backend, u.device, u.dtype)
    numba_check = name == "cpu" and cpu_implementation(u.device) == "numba"
    if check_finite:
        _check_finite(named, "input", numba_check=numba_check)
    if name == "reference":
        out = selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                       return_last_state)
    elif name == "cpu" and cpu_implementation(u.device) == "numba":
        out = _numba_scan_fn()(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    elif name in ("cpu", "cpu_torch"):
        from .cpu import selective_scan_cpu
        out = selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    elif name == "triton":
        from .triton_scan import selective_scan_triton
        out = selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    return_last_state)
    else:
        out = _run_mamba_ssm(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if check_finite:
        outs = {"y": out[0], "last_state": out[1]} if return_last_state else {"y": out}
        _check_finite({k: v.detach() for k, v in outs.items()}, "the output",
                      " (overflow? A should be <= 0 and delta >= 0)", numba_check=numba_check)
    return out


def _cross_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "triton" if device.type == "cuda" and _triton_importable() else "torch"
    if backend not in ("torch", "triton"):
        raise ValueError(f"cross_scan/cross_merge: backend must be 'auto', 'torch' or 'triton', got {backend!r}")
    if backend == "triton" and not _triton_usable(device):
        raise ValueError(f"cross_scan/cross_merge: backend 'triton' is unavailable on {device} "
                         "(needs triton, and CUDA or TRITON_INTERPRET=1)")
    return backend


def cross_scan(x, *, backend="auto"):
    """``(b, c, h, w)`` → ``(b, 4, c, h*w)``: row-major, column-major, and both reversed.

    ``backend``: "auto" (fused Triton kernel on CUDA when triton is installed, else torch),
    "torch" or "triton". Differentiable; its backward is ``cross_merge``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"cross_scan: x must have shape (batch, channels, height, width), got {shape}")
    if _cross_backend(backend, x.device) == "triton":
        from .triton_cross import cross_scan_triton
        return cross_scan_triton(x)
    return cross_scan_reference(x)


def cross_merge(y, h, w, *, backend="auto"):
    """``(b, 4, c, h*w)`` → ``(b, c, h*w)``: un-permute each direction and sum (adjoint of cross_scan).

    ``backend`` as for ``cross_scan``.
    """
    if not isinstance(y, torch.Tensor) or y.dim() != 4 or y.shape[1] != 4 or y.shape[3] != h * w:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"cross_merge: y must have shape (batch, 4, channels, {h}*{w}={h * w}), got {shape}")
    if _cross_backend(backend, y.device) == "triton":
        from .triton_cross import cross_merge_triton
        return cross_merge_triton(y, h, w)
    return cross_merge_reference(y, h, w)


__all__ = ["selective_scan", "cross_scan", "cross_merge", "available_backends", "resolve_backend",
           "cpu_implementation", "BACKENDS", "ENV_BACKEND"]
