"""SS2D (2-D selective scan) and the VSS block, after VMamba (Liu et al., 2024).

Variant
-------
The default is VMamba's released v2 variant ``v05_noz``: no z gate, no bias on the depthwise conv,
``d_state = 1`` and ``ssm_ratio = 1`` (VMamba's v2 tiny/small/base checkpoints use it). Why: the hint
encoder runs on the whole visual-prompt grid (64×64 tokens at a 512 grid), the scan dominates its cost
and is linear in ``d_state``; VMamba reports v05_noz as accurate as the original at a fraction of the
scan work, and without the gate the block is simpler to fuse. The original ``v0`` (z gate with SiLU,
conv bias, ``d_state = 16``, ``ssm_ratio = 2``) is available with ``variant="v0"``.

Data flow (channels-last in and out, as VMamba's v2 blocks)::

    x (B,H,W,C) → in_proj → [x | z] → depthwise conv 3×3 → SiLU → cross_scan → (B,4,D,L)
      → per-direction x_proj (4, R+2N, D) → Δ_raw (R), B (N), C (N)
      → per-direction dt_proj (4, D, R) → Δ
      → selective_scan(u, Δ, A, B, C, D, delta_bias=dt bias, delta_softplus=True)
         with u = (B, 4·D, L) and B, C grouped per direction (B, 4, N, L)
      → cross_merge → LayerNorm (out-norm) → [· SiLU(z)] → out_proj → (B,H,W,C)

Initialisation follows VMamba's ``mamba_init`` ("v0" init, used by every released variant):
``A_logs = log(1..N)`` per channel and direction, ``Ds = 1``, dt_proj weight uniform in
``±R^-0.5``, dt bias = inverse softplus of a log-uniform sample in ``[1e-3, 0.1]``,
``R = ceil(C / 16)`` with C the block's model width.

The scan directions are those of :func:`gie_core.ops.cross_scan`: 0 row-major, 1 column-major
(token t reads pixel (t mod H, t div H)), 2 and 3 the reverses of 0 and 1 — VMamba's order.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gie_core.ops import cross_merge, cross_scan, selective_scan

SS2D_VARIANTS = ("v05_noz", "v0")
#: Per-variant defaults taken from VMamba's configs.
VARIANT_DEFAULTS = {
    "v05_noz": dict(d_state=1, ssm_ratio=1.0, conv_bias=False, gate=False),
    "v0": dict(d_state=16, ssm_ratio=2.0, conv_bias=True, gate=True),
}
NUM_DIRECTIONS = 4


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x such that softplus(x) = y, for y > 0 (written as VMamba does, stable for small y)."""
    return y + torch.log(-torch.expm1(-y))


def sample_dt_bias(d_inner: int, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Δ bias so that softplus(bias) is log-uniform in [dt_min, dt_max] (Mamba's dt init)."""
    u = torch.rand(d_inner, generator=generator)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return inverse_softplus(dt)


class SS2D(nn.Module):
    """Four-direction 2-D selective scan over a channels-last feature map ``(B, H, W, C)``.

    Args:
        dim: model width C (input and output channels).
        variant: ``"v05_noz"`` (default, VMamba v2) or ``"v0"`` (original SS2D); sets the defaults below.
        d_state: SSM state size N (variant default: 1 or 16).
        ssm_ratio: inner width D = int(ssm_ratio · C) (variant default: 1 or 2).
        dt_rank: rank R of the Δ projection; default ``ceil(C / 16)``.
        d_conv: depthwise conv kernel size (3).
        conv_bias / gate: override the variant's conv bias and z gate.
        scan_backend: passed to :func:`gie_core.ops.selective_scan` (``"auto"`` picks the fastest).
        check_finite: let the scan check its inputs and output for NaN/inf (debugging; off by
            default: the check waits for the GPU on every call, and this is the hot path — the
            trainer checks its loss and the hint encoder its input). Also settable later as
            ``module.check_finite``.
    """

    def __init__(self, dim: int, variant: str = "v05_noz", d_state: int | None = None,
                 ssm_ratio: float | None = None, dt_rank: int | None = None, d_conv: int = 3,
                 conv_bias: bool | None = None, gate: bool | None = None, dt_min: float = 1e-3,
                 dt_max: float = 0.1, scan_backend: str = "auto", check_finite: bool = False):
        super().__init__()
        if variant not in VARIANT_DEFAULTS:
            raise ValueError(f"SS2D: variant must be one of {SS2D_VARIANTS}, got {variant!r}")
        defaults = VARIANT_DEFAULTS[variant]
        self.variant = variant
        self.dim = int(dim)
        self.d_state = int(defaults["d_state"] if d_state is None else d_state)
        ratio = defaults["ssm_ratio"] if ssm_ratio is None else ssm_ratio
        self.d_inner = int(ratio * self.dim)
        self.dt_rank = int(math.ceil(self.dim / 16) if dt_rank is None else dt_rank)
        self.gate = bool(defaults["gate"] if gate is None else gate)
        conv_bias = bool(defaults["conv_bias"] if conv_bias is None else conv_bias)
        self.scan_backend = scan_backend
        self.check_finite = bool(check_finite)
        if min(self.dim, self.d_state, self.d_inner, self.dt_rank) < 1:
            raise ValueError(f"SS2D: dim, d_state, d_inner and dt_rank must be >= 1, got dim={self.dim}, "
                             f"d_state={self.d_state}, d_inner={self.d_inner}, dt_rank={self.dt_rank}")
        if d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(f"SS2D: d_conv must be a positive odd kernel size, got {d_conv}")

        K, D, N, R = NUM_DIRECTIONS, self.d_inner, self.d_state, self.dt_rank
        self.in_proj = nn.Linear(self.dim, D * (2 if self.gate else 1), bias=False)
        self.conv2d = nn.Conv2d(D, D, kernel_size=d_conv, padding=d_conv // 2, groups=D, bias=conv_bias)
        # Per-direction projections, stacked as VMamba stores them.
        bound = D ** -0.5  # nn.Linear's default init for a (R+2N, D) weight
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, D).uniform_(-bound, bound))
        dt_std = R ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(K, D, R).uniform_(-dt_std, dt_std))
        self.dt_projs_bias = nn.Parameter(torch.stack([sample_dt_bias(D, dt_min, dt_max) for _ in range(K)]))
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(K * D, 1)  # (K·D, N): 1..N per row
        self.A_logs = nn.Parameter(torch.log(A))
        self.Ds = nn.Parameter(torch.ones(K * D))
        self.out_norm = nn.LayerNorm(D)
        self.out_proj = nn.Linear(D, self.dim, bias=False)

    def extra_repr(self) -> str:
        return (f"variant={self.variant}, dim={self.dim}, d_inner={self.d_inner}, d_state={self.d_state}, "
                f"dt_rank={self.dt_rank}, gate={self.gate}, scan_backend={self.scan_backend!r}")

    def scan_core(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-first ``(B, D, H, W)`` → out-normed channels-last ``(B, H, W, D)``."""
        b, d, h, w = x.shape
        K, N, R, L = NUM_DIRECTIONS, self.d_state, self.dt_rank, h * w
        xs = cross_scan(x)                                                     # (B, K, D, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight.to(xs.dtype))
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight.to(xs.dtype))
        y = selective_scan(
            xs.reshape(b, K * d, L),
            dts.reshape(b, K * d, L),
            -torch.exp(self.A_logs.float()),
            Bs.contiguous(),                                                   # (B, K, N, L): one group per direction
            Cs.contiguous(),
            D=self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(),
            delta_softplus=True,
            backend=self.scan_backend,
            check_finite=self.check_finite,
        )
        y = cross_merge(y.reshape(b, K, d, L), h, w)                          # (B, D, L)
        y = y.transpose(1, 2).reshape(b, h, w, d)
        return self.out_norm(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"SS2D: x must have shape (batch, height, width, {self.dim}), got {tuple(x.shape)}")
        x = self.in_proj(x)
        z = None
        if self.gate:
            x, z = x.chunk(2, dim=-1)
        x = x.permute(0, 3, 1, 2).contiguous()
        x = F.silu(self.conv2d(x))
        y = self.scan_core(x)
        if z is not None:
            y = y * F.silu(z)
        return self.out_proj(y)


class MLP(nn.Module):
    """Channels-last two-layer MLP with GELU (VMamba's ``Mlp``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class VSSBlock(nn.Module):
    """VMamba's visual state-space block on channels-last ``(B, H, W, C)``:
    ``x + SS2D(LN(x))``, then ``x + MLP(LN(x))`` when ``mlp_ratio > 0`` (pre-norm, as VMamba v2).
    ``mixer`` replaces SS2D by another channels-last token mixer (the encoder's conv ablation)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, mixer: nn.Module | None = None, **ss2d_kwargs):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.op = mixer if mixer is not None else SS2D(dim, **ss2d_kwargs)
        if mlp_ratio < 0:
            raise ValueError(f"VSSBlock: mlp_ratio must be >= 0, got {mlp_ratio}")
        self.mlp = None
        if mlp_ratio > 0:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.op(self.norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x
