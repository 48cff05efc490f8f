"""SS2D and the VSS block: direction conventions, VMamba's initialisation, an independent
per-direction re-implementation of the scan, and gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from gie_core.models.ss2d import SS2D, VSSBlock
from gie_core.ops import cross_merge, cross_scan
from gie_core.ops.reference import selective_scan_reference


def direction_index(k: int, h: int, w: int) -> torch.Tensor:
    """Row-major pixel index read by token t of direction k, from DESIGN.md's formulas."""
    t = torch.arange(h * w)
    if k in (0, 2):
        p = t
    else:
        p = (t % h) * w + t // h  # column-major: p1(t) = (t mod H)·W + t div H
    return p.flip(0) if k >= 2 else p


def test_cross_scan_directions_match_design():
    h, w = 3, 5  # non-square so row- and column-major differ
    x = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
    xs = cross_scan(x)
    for k in range(4):
        assert torch.equal(xs[0, k, 0], direction_index(k, h, w).double()), k


def test_cross_merge_is_adjoint_of_cross_scan():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64, generator=g)
    y = torch.randn(2, 4, 3, 24, dtype=torch.float64, generator=g)
    lhs = (cross_scan(x) * y).sum()
    rhs = (x.flatten(2) * cross_merge(y, 4, 6)).sum()
    assert torch.allclose(lhs, rhs)


@pytest.mark.parametrize("dim", [16, 40, 96])
def test_v05_noz_structure_and_init(dim):
    torch.manual_seed(0)
    m = SS2D(dim)
    R = math.ceil(dim / 16)
    assert (m.d_state, m.d_inner, m.dt_rank, m.gate) == (1, dim, R, False)
    assert m.conv2d.bias is None and m.conv2d.groups == m.d_inner
    assert m.in_proj.out_features == m.d_inner  # no z half
    assert m.x_proj_weight.shape == (4, R + 2 * m.d_state, m.d_inner)
    assert m.dt_projs_weight.shape == (4, m.d_inner, R)
    assert m.dt_projs_bias.shape == (4, m.d_inner)
    assert torch.equal(m.Ds, torch.ones(4 * m.d_inner))
    assert m.dt_projs_weight.abs().max() <= R ** -0.5
    dt = F.softplus(m.dt_projs_bias.double())
    assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 0.1 * (1 + 1e-6)
    # log-uniform: log dt spread over the interval, not clustered at one end
    logs = dt.log()
    assert logs.min() < math.log(1e-3) + 1.5 and logs.max() > math.log(0.1) - 1.5


def test_v0_structure_and_init():
    m = SS2D(32, variant="v0")
    assert (m.d_state, m.d_inner, m.gate) == (16, 64, True)
    assert m.conv2d.bias is not None
    assert m.in_proj.out_features == 2 * m.d_inner
    expected_A = torch.log(torch.arange(1, 17, dtype=torch.float32)).expand(4 * 64, 16)
    assert torch.allclose(m.A_logs, expected_A)
    with pytest.raises(ValueError, match="variant"):
        SS2D(32, variant="v3")


def independent_scan_core(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D's core written per direction with explicit index gathers and ungrouped B/C."""
    b, d, h, w = x.shape
    N, R = m.d_state, m.dt_rank
    flat = x.flatten(2)
    out = torch.zeros_like(flat)
    for k in range(4):
        idx = direction_index(k, h, w)
        u = flat[:, :, idx]                                            # (b, d, L) in scan order
        proj = torch.einsum("bdl,cd->bcl", u, m.x_proj_weight[k].double())
        dt_raw, Bk, Ck = proj[:, :R], proj[:, R:R + N], proj[:, R + N:]
        delta = torch.einsum("brl,dr->bdl", dt_raw, m.dt_projs_weight[k].double())
        rows = slice(k * d, (k + 1) * d)
        y = selective_scan_reference(u, delta, -m.A_logs[rows].double().exp(), Bk, Ck, m.Ds[rows].double(),
                                     delta_bias=m.dt_projs_bias[k].double(), delta_softplus=True)
        out[:, :, idx] += y                                            # scatter back to pixel order
    y = out.transpose(1, 2).reshape(b, h, w, d)
    return F.layer_norm(y, (d,), m.out_norm.weight.double(), m.out_norm.bias.double(), m.out_norm.eps)


@pytest.mark.parametrize("variant,d_state", [("v05_noz", 1), ("v0", 4)])
def test_scan_core_matches_independent_per_direction_scan(variant, d_state):
    torch.manual_seed(1)
    m = SS2D(24, variant=variant, d_state=d_state, scan_backend="reference").double()
    with torch.no_grad():  # move A and Ds off their init so per-direction mix-ups would show
        m.A_logs.add_(torch.randn_like(m.A_logs) * 0.3)
        m.Ds.add_(torch.randn_like(m.Ds))
    x = torch.randn(2, m.d_inner, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(m.scan_core(x), independent_scan_core(m, x))


@pytest.mark.parametrize("variant", ["v05_noz", "v0"])
def test_vss_block_gradients_reach_every_parameter(variant):
    torch.manual_seed(2)
    blk = VSSBlock(16, mlp_ratio=2.0, variant=variant, d_state=2, scan_backend="reference")
    x = torch.randn(2, 4, 6, 16, requires_grad=True)
    y = blk(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for name, p in blk.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    if variant == "v0":  # the z half of in_proj feeds the gate
        assert blk.op.in_proj.weight.grad[blk.op.d_inner:].abs().sum() > 0


def test_ss2d_gradcheck_float64():
    torch.manual_seed(3)
    m = SS2D(8, variant="v0", d_state=2, ssm_ratio=1.0, scan_backend="reference").double()
    x = torch.randn(1, 2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-5)


def test_ss2d_rejects_wrong_input_shape():
    m = SS2D(8)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 8\)"):
        m(torch.randn(1, 8, 4, 4))
