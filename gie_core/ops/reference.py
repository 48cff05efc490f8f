"""Plain references for the selective scan and the SS2D cross-scan.

These are the ground truth every fast backend is tested against: a step-by-step loop, any
floating dtype (float64 included), differentiable through autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_selective_scan_inputs


def expand_groups(BC: torch.Tensor, dim: int) -> torch.Tensor:
    """``(b, n, l)`` → ``(b, 1, n, l)``; ``(b, g, n, l)`` → ``(b, dim, n, l)`` by repeating each group."""
    if BC.dim() == 3:
        return BC.unsqueeze(1)
    g = BC.shape[1]
    return BC.repeat_interleave(dim // g, dim=1)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    """mamba-ssm ``selective_scan_fn`` semantics, as a loop over the sequence.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t ;  y_t = C_t · h_t + D u_t ;  y *= silu(z) if z.
    Computes in at least float32 (float64 stays float64) and returns u's dtype.
    """
    b, d, l, n, _ = check_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    cdt = torch.promote_types(dtype_in, torch.float32)
    u_, delta_ = u.to(cdt), delta.to(cdt)
    if delta_bias is not None:
        delta_ = delta_ + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta_ = F.softplus(delta_)
    A_ = A.to(cdt)
    B_ = expand_groups(B.to(cdt), d)  # (b, 1 or d, n, l)
    C_ = expand_groups(C.to(cdt), d)
    x = u_.new_zeros(b, d, n)
    ys = []
    # unbind, not indexing: the backward of x[..., t] materialises a full-size zero gradient per
    # step, which made autograd through this loop quadratic in l (18 s at l=1024).
    steps = zip(delta_.unbind(-1), u_.unbind(-1), B_.unbind(-1), C_.unbind(-1))
    for delta_t, u_t, B_t, C_t in steps:
        dA = torch.exp(delta_t[:, :, None] * A_)                        # (b, d, n)
        dBu = (delta_t * u_t)[:, :, None] * B_t                         # (b, d, n)
        x = dA * x + dBu
        ys.append((x * C_t).sum(-1))                                    # (b, d)
    y = torch.stack(ys, dim=-1) if l else u_.new_zeros(b, d, 0)
    if D is not None:
        y = y + u_ * D.to(cdt)[:, None]
    if z is not None:
        y = y * F.silu(z.to(cdt))
    y = y.to(dtype_in)
    return (y, x.to(dtype_in)) if return_last_state else y


def cross_scan_reference(x: torch.Tensor) -> torch.Tensor:
    """``(b, c, h, w)`` → ``(b, 4, c, h*w)``: row-major, column-major, and both reversed."""
    if x.dim() != 4:
        raise ValueError(f"cross_scan: x must have shape (batch, channels, height, width), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    row = x.flatten(2)
    col = x.transpose(2, 3).flatten(2)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def cross_merge_reference(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(b, 4, c, h*w)`` → ``(b, c, h*w)``: un-permute each direction and sum (adjoint of cross_scan)."""
    if y.dim() != 4 or y.shape[1] != 4 or y.shape[3] != h * w:
        raise ValueError(f"cross_merge: y must have shape (batch, 4, channels, {h}*{w}={h * w}), got {tuple(y.shape)}")
    b, _, c, _ = y.shape
    row = y[:, 0] + y[:, 2].flip(-1)
    col = y[:, 1] + y[:, 3].flip(-1)
    col = col.view(b, c, w, h).transpose(2, 3).reshape(b, c, h * w)
    return row + col
