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
step by step. Loop bounds are constexpr (chunk length, number of chunks), which also keeps Triton's
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
    import triton
    import triton.language as tl

    @triton.jit
    def _chunk_end_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, end_ptr, sumd_ptr, L, NUM_D, DG,
                          N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr, CHUNK: tl.constexpr,
                          NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_k = tl.program_id(2)
        d_idx = pid_d * BD + tl.arange(0, BD)
        n_idx = tl.arange(0, NP)
        n_mask = n_idx < N
        groups = NUM_D // DG
        grp = (pid_d * BD) // DG
        A = tl.load(A_ptr + d_idx[:, None] * N + n_idx[None, :], mask=n_mask[None, :], other=0.0).to(ACC)
        row = (pid_b * NUM_D + d_idx).to(tl.int64) * L
        bc_row = ((pid_b * groups + grp) * N + n_idx).to(tl.int64) * L
        h = tl.zeros([BD, NP], dtype=ACC)
        sum_delta = tl.zeros([BD], dtype=ACC)
        t0 = pid_k * CHUNK
        for i in range(CHUNK):
            t = t0 + i
            live = (t + tl.zeros([BD], dtype=tl.int32)) < L  # tensor masks (the interpreter rejects bools)
            live_n = n_mask & ((t + tl.zeros([NP], dtype=tl.int32)) < L)
            dl = tl.load(delta_ptr + row + t, mask=live, other=0.0).to(ACC)
            uu = tl.load(u_ptr + row + t, mask=live, other=0.0).to(ACC)
            Bt = tl.load(B_ptr + bc_row + t, mask=live_n, other=0.0).to(ACC)
            h = tl.exp(dl[:, None] * A) * h + (dl * uu)[:, None] * Bt[None, :]
            sum_delta += dl
        tile = ((pid_b * NUM_CHUNKS + pid_k) * NUM_D + d_idx)[:, None] * N + n_idx[None, :]
        tl.store(end_ptr + tile, h, mask=n_mask[None, :])
        tl.store(sumd_ptr + (pid_b * NUM_CHUNKS + pid_k) * NUM_D + d_idx, sum_delta)

    @triton.jit
    def _carry_kernel(A_ptr, end_ptr, sumd_ptr, carry_ptr, last_ptr, NUM_D,
                      N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
                      NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        d_idx = pid_d * BD + tl.arange(0, BD)
        n_idx = tl.arange(0, NP)
        n_mask = n_idx < N
        A = tl.load(A_ptr + d_idx[:, None] * N + n_idx[None, :], mask=n_mask[None, :], other=0.0).to(ACC)
        state = tl.zeros([BD, NP], dtype=ACC)
        for k in range(NUM_CHUNKS):
            base = (pid_b * NUM_CHUNKS + k) * NUM_D + d_idx
            tile = base[:, None] * N + n_idx[None, :]
            tl.store(carry_ptr + tile, state, mask=n_mask[None, :])
            end = tl.load(end_ptr + tile, mask=n_mask[None, :], other=0.0)
            sd = tl.load(sumd_ptr + base)
            state = tl.exp(sd[:, None] * A) * state + end
        tl.store(last_ptr + (pid_b * NUM_D + d_idx)[:, None] * N + n_idx[None, :], state,
                 mask=n_mask[None, :])

    @triton.jit
    def _chunk_out_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, carry_ptr, y_ptr, L, NUM_D, DG,
                          N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr, CHUNK: tl.constexpr,
                          NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_k = tl.program_id(2)
        d_idx = pid_d * BD + tl.arange(0, BD)
        n_idx = tl.arange(0, NP)
        n_mask = n_idx < N
        groups = NUM_D // DG
        grp = (pid_d * BD) // DG
        A = tl.load(A_ptr + d_idx[:, None] * N + n_idx[None, :], mask=n_mask[None, :], other=0.0).to(ACC)
        row = (pid_b * NUM_D + d_idx).to(tl.int64) * L
        bc_row = ((pid_b * groups + grp) * N + n_idx).to(tl.int64) * L
        tile = ((pid_b * NUM_CHUNKS + pid_k) * NUM_D + d_idx)[:, None] * N + n_idx[None, :]
        h = tl.load(carry_ptr + tile, mask=n_mask[None, :], other=0.0)
        t0 = pid_k * CHUNK
        for i in range(CHUNK):
            t = t0 + i
            live = (t + tl.zeros([BD], dtype=tl.int32)) < L  # tensor masks (the interpreter rejects bools)
            live_n = n_mask & ((t + tl.zeros([NP], dtype=tl.int32)) < L)
            dl = tl.load(delta_ptr + row + t, mask=live, other=0.0).to(ACC)
            uu = tl.load(u_ptr + row + t, mask=live, other=0.0).to(ACC)
            Bt = tl.load(B_ptr + bc_row + t, mask=live_n, other=0.0).to(ACC)
            Ct = tl.load(C_ptr + bc_row + t, mask=live_n, other=0.0).to(ACC)
            h = tl.exp(dl[:, None] * A) * h + (dl * uu)[:, None] * Bt[None, :]
            y = tl.sum(h * Ct[None, :], axis=1)
            tl.store(y_ptr + row + t, y, mask=live)

    @triton.jit
    def _chunk_adj_kernel(delta_ptr, A_ptr, C_ptr, gy_ptr, first_ptr, L, NUM_D, DG,
                          N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr, CHUNK: tl.constexpr,
                          NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_k = tl.program_id(2)
        d_idx = pid_d * BD + tl.arange(0, BD)
        n_idx = tl.arange(0, NP)
        n_mask = n_idx < N
        groups = NUM_D // DG
        grp = (pid_d * BD) // DG
        A = tl.load(A_ptr + d_idx[:, None] * N + n_idx[None, :], mask=n_mask[None, :], other=0.0).to(ACC)
        row = (pid_b * NUM_D + d_idx).to(tl.int64) * L
        bc_row = ((pid_b * groups + grp) * N + n_idx).to(tl.int64) * L
        g_next = tl.zeros([BD, NP], dtype=ACC)  # decay_{t+1} · g_{t+1}
        t_end = pid_k * CHUNK + CHUNK - 1
        for i in range(CHUNK):
            t = t_end - i
            live = (t + tl.zeros([BD], dtype=tl.int32)) < L  # tensor masks (the interpreter rejects bools)
            live_n = n_mask & ((t + tl.zeros([NP], dtype=tl.int32)) < L)
            dl = tl.load(delta_ptr + row + t, mask=live, other=0.0).to(ACC)
            gy = tl.load(gy_ptr + row + t, mask=live, other=0.0).to(ACC)
            Ct = tl.load(C_ptr + bc_row + t, mask=live_n, other=0.0).to(ACC)
            g = gy[:, None] * Ct[None, :] + g_next
            g_next = tl.exp(dl[:, None] * A) * g
        tile = ((pid_b * NUM_CHUNKS + pid_k) * NUM_D + d_idx)[:, None] * N + n_idx[None, :]
        tl.store(first_ptr + tile, g_next, mask=n_mask[None, :])

    @triton.jit
    def _carry_rev_kernel(A_ptr, first_ptr, sumd_ptr, glast_ptr, incoming_ptr, NUM_D,
                          N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
                          NUM_CHUNKS: tl.constexpr, HAS_LAST: tl.constexpr, ACC: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        d_idx = pid_d * BD + tl.arange(0, BD)
        n_idx = tl.arange(0, NP)
        n_mask = n_idx < N
        A = tl.load(A_ptr + d_idx[:, None] * N + n_idx[None, :], mask=n_mask[None, :], other=0.0).to(ACC)
        if HAS_LAST:
            state = tl.load(glast_ptr + (pid_b * NUM_D + d_idx)[:, None] * N + n_idx[None, :],
                            mask=n_mask[None, :], other=0.0).to(ACC)
        else:
            state = tl.zeros([BD, NP], dtype=ACC)
        for kk in range(NUM_CHUNKS):
            k = NUM_CHUNKS - 1 - kk
            base = (pid_b * NUM_CHUNKS + k) * NUM_D + d_idx
            tile = base[:, None] * N + n_idx[None, :]
            tl.store(incoming_ptr + tile, state, mask=n_mask[None, :])
            first = tl.load(first_ptr + tile, mask=n_mask[None, :], other=0.0)
            sd = tl.load(sumd_ptr + base)
            state = first + tl.exp(sd[:, None] * A) * state

    @triton.jit
    def _chunk_grad_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, gy_ptr, carry_ptr, incoming_ptr,
                           scratch_ptr, du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, L, NUM_D, DG,
                           N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr, CHUNK: tl.constexpr,
                           NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_k = tl.program_id(2)
        num_blocks = tl.num_programs(1)
        d_idx = pid_d * BD + tl.arange(0, BD)
        n_idx = tl.arange(0, NP)
        n_mask = n_idx < N
        groups = NUM_D // DG
        grp = (pid_d * BD) // DG
        A = tl.load(A_ptr + d_idx[:, None] * N + n_idx[None, :], mask=n_mask[None, :], other=0.0).to(ACC)
        row = (pid_b * NUM_D + d_idx).to(tl.int64) * L
        bc_row = ((pid_b * groups + grp) * N + n_idx).to(tl.int64) * L
        part_row = ((pid_b * num_blocks + pid_d) * N + n_idx).to(tl.int64) * L  # dB/dC partial sums
        tile = ((pid_b * NUM_CHUNKS + pid_k) * NUM_D + d_idx)[:, None] * N + n_idx[None, :]
        h0 = tl.load(carry_ptr + tile, mask=n_mask[None, :], other=0.0)
        # this program's scratch: CHUNK tiles of (BD, NP) states
        scratch = scratch_ptr + ((pid_b * NUM_CHUNKS + pid_k) * (NUM_D // BD) + pid_d).to(tl.int64) * (CHUNK * BD * NP)
        local = tl.arange(0, BD)[:, None] * NP + n_idx[None, :]
        t0 = pid_k * CHUNK
        h = h0
        for i in range(CHUNK):
            t = t0 + i
            live = (t + tl.zeros([BD], dtype=tl.int32)) < L  # tensor masks (the interpreter rejects bools)
            live_n = n_mask & ((t + tl.zeros([NP], dtype=tl.int32)) < L)
            dl = tl.load(delta_ptr + row + t, mask=live, other=0.0).to(ACC)
            uu = tl.load(u_ptr + row + t, mask=live, other=0.0).to(ACC)
            gy = tl.load(gy_ptr + row + t, mask=live, other=0.0).to(ACC)
            Bt = tl.load(B_ptr + bc_row + t, mask=live_n, other=0.0).to(ACC)
            h = tl.exp(dl[:, None] * A) * h + (dl * uu)[:, None] * Bt[None, :]
            tl.store(scratch + i * (BD * NP) + local, h)
            tl.store(dC_ptr + part_row + t, tl.sum(gy[:, None] * h, axis=0), mask=live_n)
        tl.debug_barrier()
        g_next = tl.load(incoming_ptr + tile, mask=n_mask[None, :], other=0.0)
        dA_acc = tl.zeros([BD, NP], dtype=ACC)
        for i in range(CHUNK):
            j = CHUNK - 1 - i
            t = t0 + j
            live = (t + tl.zeros([BD], dtype=tl.int32)) < L  # tensor masks (the interpreter rejects bools)
            live_n = n_mask & ((t + tl.zeros([NP], dtype=tl.int32)) < L)
            dl = tl.load(delta_ptr + row + t, mask=live, other=0.0).to(ACC)
            uu = tl.load(u_ptr + row + t, mask=live, other=0.0).to(ACC)
            gy = tl.load(gy_ptr + row + t, mask=live, other=0.0).to(ACC)
            Bt = tl.load(B_ptr + bc_row + t, mask=live_n, other=0.0).to(ACC)
            Ct = tl.load(C_ptr + bc_row + t, mask=live_n, other=0.0).to(ACC)
            has_prev = (j + tl.zeros([BD, NP], dtype=tl.int32)) > 0  # else the chunk's entering state
            prev = tl.load(scratch + (j - 1) * (BD * NP) + local, mask=has_prev, other=0.0)
            prev = tl.where(has_prev, prev, h0)
            g = gy[:, None] * Ct[None, :] + g_next
            decay = tl.exp(dl[:, None] * A)
            dlog = g * decay * prev
            g_next = decay * g
            gB = tl.sum(g * Bt[None, :], axis=1)
            tl.store(ddelta_ptr + row + t, tl.sum(dlog * A, axis=1) + gB * uu, mask=live)
            tl.store(du_ptr + row + t, gB * dl, mask=live)
            tl.store(dB_ptr + part_row + t, tl.sum(g * (dl * uu)[:, None], axis=0), mask=live_n)
            dA_acc += dlog * dl[:, None]
        tl.store(dA_ptr + tile, dA_acc, mask=n_mask[None, :])

    return dict(triton=triton, tl=tl, chunk_end=_chunk_end_kernel, carry=_carry_kernel,
                chunk_out=_chunk_out_kernel, chunk_adj=_chunk_adj_kernel, carry_rev=_carry_rev_kernel,
                chunk_grad=_chunk_grad_kernel)


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
