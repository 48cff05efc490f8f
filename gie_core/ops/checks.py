"""Input validation for the selective-scan family: clear errors that name the argument."""
from __future__ import annotations

import torch


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_selective_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    """Validate shapes, dtypes and devices; return (batch, dim, length, d_state, groups).

    B and C are either ``(b, n, l)`` (shared over channels) or ``(b, g, n, l)`` (g groups of channels).
    """
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for name, t in named.items():
        if t is not None and not isinstance(t, torch.Tensor):
            raise ValueError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must have shape (batch, dim, length), got {_shape(u)}")
    b, d, l = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must have shape {_shape(u)} like u, got {_shape(delta)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: A must have shape ({d}, d_state), got {_shape(A)}")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported; pass a real A of shape (dim, d_state)")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            if t.shape != (b, n, l):
                raise ValueError(f"selective_scan: {name} must have shape ({b}, {n}, {l}) or "
                                 f"({b}, groups, {n}, {l}), got {_shape(t)}")
        elif t.dim() == 4:
            if t.shape[0] != b or t.shape[2:] != (n, l) or t.shape[1] < 1 or d % t.shape[1]:
                raise ValueError(f"selective_scan: {name} must have shape ({b}, groups, {n}, {l}) with "
                                 f"groups dividing dim={d}, got {_shape(t)}")
        else:
            raise ValueError(f"selective_scan: {name} must have 3 or 4 dims, got {_shape(t)}")
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"selective_scan: B and C must have the same number of groups, got "
                         f"{B.shape[1]} and {C.shape[1]}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (d,):
            raise ValueError(f"selective_scan: {name} must have shape ({d},), got {_shape(t)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: z must have shape {_shape(u)} like u, got {_shape(z)}")
    devices = {t.device for t in named.values() if t is not None}
    if len(devices) > 1:
        raise ValueError("selective_scan: all inputs must be on one device, got "
                         + ", ".join(f"{k}={v.device}" for k, v in named.items() if v is not None))
    for name, t in named.items():
        if t is not None and not t.is_floating_point():
            raise ValueError(f"selective_scan: {name} must be a floating-point tensor, got {t.dtype}")
    groups = B.shape[1] if B.dim() == 4 else (C.shape[1] if C.dim() == 4 else 1)
    return b, d, l, n, groups


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise if ``t`` holds NaN or inf: reported, never propagated silently."""
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).sum().item()
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
