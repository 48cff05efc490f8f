"""Fused Triton cross-scan / cross-merge for SS2D (the torch versions in reference.py are the
reference and the fallback).

cross_scan:  out[b, k, c, t] = x[b, c, p_k(t)] with p_0(t) = t, p_1(t) = (t mod H)·W + t div H,
             p_2(t) = p_0(HW-1-t), p_3(t) = p_1(HW-1-t): one read of x, four writes.
cross_merge: out[b, c, p] = Σ_k y[b, k, c, p_k^{-1}(p)]: four reads, one write (the adjoint).
Each is the other's backward, so both are differentiable.
"""
from __future__ import annotations

import functools

import torch


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def _cross_scan_kernel(x_ptr, out_ptr, CH, H, W, BLOCK: tl.constexpr):
        pid_bc = tl.program_id(0)
        pid_t = tl.program_id(1)
        HW = H * W
        b = pid_bc // CH
        c = pid_bc % CH
        t = pid_t * BLOCK + tl.arange(0, BLOCK)
        live = t < HW
        rt = HW - 1 - t
        src = x_ptr + pid_bc.to(tl.int64) * HW
        dst = out_ptr + ((b * 4) * CH + c).to(tl.int64) * HW
        plane = CH * HW
        tl.store(dst + t, tl.load(src + t, mask=live), mask=live)
        tl.store(dst + plane + t, tl.load(src + (t % H) * W + t // H, mask=live), mask=live)
        tl.store(dst + 2 * plane + t, tl.load(src + rt, mask=live), mask=live)
        tl.store(dst + 3 * plane + t, tl.load(src + (rt % H) * W + rt // H, mask=live), mask=live)

    @triton.jit
    def _cross_merge_kernel(y_ptr, out_ptr, CH, H, W, BLOCK: tl.constexpr):
        pid_bc = tl.program_id(0)
        pid_p = tl.program_id(1)
        HW = H * W
        b = pid_bc // CH
        c = pid_bc % CH
        p = pid_p * BLOCK + tl.arange(0, BLOCK)
        live = p < HW
        q = (p % W) * H + p // W  # the column-major step that visits pixel p
        src = y_ptr + ((b * 4) * CH + c).to(tl.int64) * HW
        plane = CH * HW
        acc = tl.load(src + p, mask=live, other=0.0)
        acc += tl.load(src + plane + q, mask=live, other=0.0)
        acc += tl.load(src + 2 * plane + (HW - 1 - p), mask=live, other=0.0)
        acc += tl.load(src + 3 * plane + (HW - 1 - q), mask=live, other=0.0)
        tl.store(out_ptr + pid_bc.to(tl.int64) * HW + p, acc, mask=live)

    return triton, _cross_scan_kernel, _cross_merge_kernel


_BLOCK = 1024


def _launch_scan(x: torch.Tensor) -> torch.Tensor:
    triton, scan_kernel, _ = _kernels()
    b, c, h, w = x.shape
    x = x.contiguous()
    out = torch.empty(b, 4, c, h * w, device=x.device, dtype=x.dtype)
    block = min(_BLOCK, triton.next_power_of_2(h * w))
    scan_kernel[(b * c, triton.cdiv(h * w, block))](x, out, c, h, w, BLOCK=block)
    return out


def _launch_merge(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    triton, _, merge_kernel = _kernels()
    b, _, c, _ = y.shape
    y = y.contiguous()
    out = torch.empty(b, c, h * w, device=y.device, dtype=y.dtype)
    block = min(_BLOCK, triton.next_power_of_2(h * w))
    merge_kernel[(b * c, triton.cdiv(h * w, block))](y, out, c, h, w, BLOCK=block)
    return out


class CrossScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.hw = x.shape[2:]
        return _launch_scan(x)

    @staticmethod
    def backward(ctx, grad):
        h, w = ctx.hw
        return _launch_merge(grad, h, w).view(grad.shape[0], grad.shape[2], h, w)


class CrossMergeTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, h, w):
        ctx.hw = (h, w)
        return _launch_merge(y, h, w)

    @staticmethod
    def backward(ctx, grad):
        h, w = ctx.hw
        return _launch_scan(grad.reshape(grad.shape[0], grad.shape[1], h, w)), None, None


def cross_scan_triton(x: torch.Tensor) -> torch.Tensor:
    """``(b, c, h, w)`` → ``(b, 4, c, h*w)`` with one fused kernel (differentiable)."""
    return CrossScanTriton.apply(x)


def cross_merge_triton(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(b, 4, c, h*w)`` → ``(b, c, h*w)`` with one fused kernel (differentiable)."""
    return CrossMergeTriton.apply(y, h, w)
