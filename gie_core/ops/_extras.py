"""The cheap ``(b, d, l)`` parts shared by the fast backends, left to ordinary autograd.

A backend's core is ``core(u, Δ, A, B, C) -> (y, last_state)`` on contiguous tensors of one
float dtype with B, C as ``(b, g, n, l)``; this wraps it with delta_bias, softplus, the skip term
``D u`` and the ``silu(z)`` gate, and the dtype policy (half precision computed in float32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def scan_with_extras(core, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                     return_last_state=False):
    """``selective_scan`` semantics around a backend ``core`` (inputs assumed validated)."""
    dtype_in = u.dtype
    cdt = torch.promote_types(dtype_in, torch.float32)
    u_ = u.to(cdt).contiguous()
    delta_ = delta.to(cdt)
    if delta_bias is not None:
        delta_ = delta_ + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta_ = F.softplus(delta_)
    delta_ = delta_.contiguous()
    B_ = (B.unsqueeze(1) if B.dim() == 3 else B).to(cdt)
    C_ = (C.unsqueeze(1) if C.dim() == 3 else C).to(cdt)
    if B_.shape[1] != C_.shape[1]:  # one shared (b, n, l), the other grouped: share by expanding
        g = max(B_.shape[1], C_.shape[1])
        B_ = B_.expand(-1, g, -1, -1)
        C_ = C_.expand(-1, g, -1, -1)
    y, last = core(u_, delta_, A.to(cdt).contiguous(), B_.contiguous(), C_.contiguous())
    if D is not None:
        y = y + u_ * D.to(cdt)[:, None]
    if z is not None:
        y = y * F.silu(z.to(cdt))
    y = y.to(dtype_in)
    return (y, last.to(dtype_in)) if return_last_state else y
