"""Triton selective scan, forward and backward (the ``"triton"`` backend).

Same two-level chunked scheme as the CPU backend, one program per (batch, channel block, chunk):
  forward   1. ``_chunk_end_kernel``   each chunk from a zero state → its end state and ΣΔ
            2. ``_carry_kernel``       one pass over the chunks → the state entering each chunk
            3. ``_chunk_out_kernel``   each chunk again from its entering state → y
  backward  1.+2. as above (recomputation; the Function saves only its inputs)
            4. ``_chunk_adj_kernel``   adjoint of each chunk from zero → what leaves its first step
            5. ``_carry_rev_kernel``   one reverse pass → the adjoint entering each chunk's end
            6. ``_chunk_grad_kernel``  states of the chunk forward (kept in a scratch buffer), then
                                       the adjoint backward with every gradient piece per step
A program keeps a ``(channels, d_state)`` tile of the state in registers and walks its chunk
step by step. The kernels live in ops/triton_scan_kernels.py (they need triton to import); this
module plans the launches and wraps them in an autograd Function. Loop bounds are constexpr (chunk length, number of chunks), which also keeps Triton's
interpreter happy with NumPy ≥ 2.4 (it fails on ``range(<runtime value>)``).

Triton is imported lazily: importing gie_core never needs it. On the CPU it only runs under
``TRITON_INTERPRET=1`` (tests).
"""
from __future__ import annotations

import functools

import torch

from ._extras import scan_with_extras


@functools.cache
def _kernels():
    """The kernels (ops/triton_scan_kernels.py) by role, and ``tl``; imported on first use."""
    import triton.language as tl

    from . import triton_scan_kernels as k

    return dict(tl=tl, chunk_end=k.chunk_end_kernel, carry=k.carry_kernel, chunk_out=k.chunk_out_kernel,
                chunk_adj=k.chunk_adj_kernel, carry_rev=k.carry_rev_kernel, chunk_grad=k.chunk_grad_kernel)


def _plan(u, A, B, chunk):
    """Launch geometry: (b, d, l, n, g, channels per block, padded d_state, chunk, n_chunks)."""
    b, d, l = u.shape
    n = A.shape[1]
    g = B.shape[1]
    dg = d // g
    n_pad = max(2, 1 << (n - 1).bit_length())
    block = max(16, 256 // n_pad) if u.is_cuda else 8
    while dg % block:  # a block never straddles two groups of B/C
        block //= 2
    if chunk is None:
        chunk = 64 if u.is_cuda else 16
    chunk = max(1, min(chunk, l))
    return b, d, l, n, g, block, n_pad, chunk, -(-l // chunk)


def _acc(kern, dtype):
    return kern["tl"].float64 if dtype == torch.float64 else kern["tl"].float32


def _num_warps(block, n_pad):
    return 4 if block * n_pad >= 512 else 2


def _forward_carries(kern, u, delta, A, B, plan):
    b, d, l, n, g, block, n_pad, chunk, n_chunks = plan
    acc = _acc(kern, u.dtype)
    end = torch.empty(b, n_chunks, d, n, device=u.device, dtype=u.dtype)
    sumd = torch.empty(b, n_chunks, d, device=u.device, dtype=u.dtype)
    carry = torch.empty_like(end)
    last = torch.empty(b, d, n, device=u.device, dtype=u.dtype)
    warps = _num_warps(block, n_pad)
    kern["chunk_end"][(b, d // block, n_chunks)](
        u, delta, A, B, end, sumd, l, d, d // g, N=n, NP=n_pad, BD=block, CHUNK=chunk,
        NUM_CHUNKS=n_chunks, ACC=acc, num_warps=warps)
    kern["carry"][(b, d // block)](
        A, end, sumd, carry, last, d, N=n, NP=n_pad, BD=block, NUM_CHUNKS=n_chunks, ACC=acc,
        num_warps=warps)
    return carry, sumd, last


def triton_scan_forward(u, delta, A, B, C, chunk=None):
    """Core scan (no autograd): y ``(b, d, l)`` and last state ``(b, d, n)``; B, C ``(b, g, n, l)``."""
    if u.shape[-1] == 0:  # nothing to scan (a zero-size grid cannot launch)
        return torch.zeros_like(u), u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    kern = _kernels()
    plan = _plan(u, A, B, chunk)
    b, d, l, n, g, block, n_pad, chunk, n_chunks = plan
    carry, _, last = _forward_carries(kern, u, delta, A, B, plan)
    y = torch.empty_like(u)
    kern["chunk_out"][(b, d // block, n_chunks)](
        u, delta, A, B, C, carry, y, l, d, d // g, N=n, NP=n_pad, BD=block, CHUNK=chunk,
        NUM_CHUNKS=n_chunks, ACC=_acc(kern, u.dtype), num_warps=_num_warps(block, n_pad))
    return y, last


def triton_scan_backward(u, delta, A, B, C, grad_y, grad_last, chunk=None):
    """Gradients (du, dΔ, dA, dB, dC) by recomputation and the chunked adjoint scan."""
    if u.shape[-1] == 0:
        return (torch.zeros_like(u), torch.zeros_like(delta), torch.zeros_like(A), torch.zeros_like(B),
                torch.zeros_like(C))
    kern = _kernels()
    plan = _plan(u, A, B, chunk)
    b, d, l, n, g, block, n_pad, chunk, n_chunks = plan
    acc = _acc(kern, u.dtype)
    warps = _num_warps(block, n_pad)
    blocks = d // block
    carry, sumd, _ = _forward_carries(kern, u, delta, A, B, plan)
    if grad_y is None:
        grad_y = torch.zeros_like(u)
    grad_y = grad_y.to(u.dtype).contiguous()
    first = torch.empty_like(carry)
    kern["chunk_adj"][(b, blocks, n_chunks)](
        delta, A, C, grad_y, first, l, d, d // g, N=n, NP=n_pad, BD=block, CHUNK=chunk,
        NUM_CHUNKS=n_chunks, ACC=acc, num_warps=warps)
    incoming = torch.empty_like(carry)
    has_last = grad_last is not None
    glast = grad_last.to(u.dtype).contiguous() if has_last else carry  # dummy pointer when absent
    kern["carry_rev"][(b, blocks)](
        A, first, sumd, glast, incoming, d, N=n, NP=n_pad, BD=block, NUM_CHUNKS=n_chunks,
        HAS_LAST=has_last, ACC=acc, num_warps=warps)
    del first
    scratch = torch.empty(b * n_chunks * blocks * chunk * block * n_pad, device=u.device, dtype=u.dtype)
    du = torch.empty_like(u)
    ddelta = torch.empty_like(u)
    dA_part = torch.empty_like(carry)
    dB_part = torch.empty(b, blocks, n, l, device=u.device, dtype=u.dtype)
    dC_part = torch.empty_like(dB_part)
    kern["chunk_grad"][(b, blocks, n_chunks)](
        u, delta, A, B, C, grad_y, carry, incoming, scratch, du, ddelta, dA_part, dB_part, dC_part,
        l, d, d // g, N=n, NP=n_pad, BD=block, CHUNK=chunk, NUM_CHUNKS=n_chunks, ACC=acc,
        num_warps=warps)
    dA = dA_part.sum((0, 1))
    dB = dB_part.view(b, g, blocks // g, n, l).sum(2)
    dC = dC_part.view(b, g, blocks // g, n, l).sum(2)
    return du, ddelta, dA, dB, dC


class SelectiveScanTriton(torch.autograd.Function):
    """Core scan (u, Δ, A, B, C) → (y, last_state) on Triton kernels; saves only its inputs."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        ctx.chunk = chunk
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(u, delta, A, B, C)
        return triton_scan_forward(u, delta, A, B, C, chunk)

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, delta, A, B, C = ctx.saved_tensors
        grads = triton_scan_backward(u, delta, A, B, C, grad_y, grad_last, ctx.chunk)
        return (*grads, None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, chunk: int | None = None):
    """``selective_scan`` semantics on the Triton kernels (inputs assumed validated)."""
    def core(u_, delta_, A_, B_, C_):
        return SelectiveScanTriton.apply(u_, delta_, A_, B_, C_, chunk)

    return scan_with_extras(core, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                            return_last_state)
