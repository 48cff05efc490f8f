"""The Triton kernels of the ``"triton"`` selective-scan backend (launched by ops/triton_scan.py, which
describes the scheme). Importing this module needs triton; triton_scan imports it on first use.

Every kernel is one program per (batch, block of BD channels[, chunk]) holding a ``(BD, NP)`` tile of
the state (NP = d_state padded to a power of two, masked by ``n_mask``). The shared pieces are small
``@triton.jit`` helpers, which Triton inlines: the tile's indices and A, the row offsets of the
``(b, d, l)`` inputs and of the ``(b, g, n, l)`` B/C, the offsets of a chunk's state tile, the
per-step masks and loads, and the recurrence ``h = exp(Δ A) h + Δ u B``.
"""
from __future__ import annotations

import triton
import triton.language as tl

# ------------------------------------------------------------------------------------------------
# shared pieces (inlined by Triton)
# ------------------------------------------------------------------------------------------------


@triton.jit
def _tile(A_ptr, pid_d, N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr, ACC: tl.constexpr):
    """This program's channels and states, the state mask, and its ``(BD, NP)`` slice of A."""
    d_idx = pid_d * BD + tl.arange(0, BD)
    n_idx = tl.arange(0, NP)
    n_mask = n_idx < N
    A = tl.load(A_ptr + d_idx[:, None] * N + n_idx[None, :], mask=n_mask[None, :], other=0.0).to(ACC)
    return d_idx, n_idx, n_mask, A


@triton.jit
def _rows(pid_b, pid_d, d_idx, n_idx, L, NUM_D, DG, N: tl.constexpr, BD: tl.constexpr):
    """Offsets of step 0 in u/Δ/y (per channel) and in B/C (per state, of this block's group)."""
    groups = NUM_D // DG
    grp = (pid_d * BD) // DG
    row = (pid_b * NUM_D + d_idx).to(tl.int64) * L
    bc_row = ((pid_b * groups + grp) * N + n_idx).to(tl.int64) * L
    return row, bc_row


@triton.jit
def _chunk_base(pid_b, k, d_idx, NUM_D, NUM_CHUNKS: tl.constexpr):
    """Offsets of chunk ``k``'s per-channel values (ΣΔ) in ``(b, chunks, d)`` buffers."""
    return (pid_b * NUM_CHUNKS + k) * NUM_D + d_idx


@triton.jit
def _state_tile(base, n_idx, N: tl.constexpr):
    """Offsets of a ``(BD, NP)`` state tile in ``(..., d, n)`` buffers, from per-channel offsets."""
    return base[:, None] * N + n_idx[None, :]


@triton.jit
def _step_masks(t, L, n_mask, BD: tl.constexpr, NP: tl.constexpr):
    # tensor masks: the interpreter rejects plain bools
    live = (t + tl.zeros([BD], dtype=tl.int32)) < L
    live_n = n_mask & ((t + tl.zeros([NP], dtype=tl.int32)) < L)
    return live, live_n


@triton.jit
def _load(ptr, row, t, mask, ACC: tl.constexpr):
    return tl.load(ptr + row + t, mask=mask, other=0.0).to(ACC)


@triton.jit
def _step_inputs(u_ptr, delta_ptr, B_ptr, row, bc_row, t, live, live_n, ACC: tl.constexpr):
    """Δ, u and B of step ``t`` (zeros past the end)."""
    dl = _load(delta_ptr, row, t, live, ACC)
    uu = _load(u_ptr, row, t, live, ACC)
    Bt = _load(B_ptr, bc_row, t, live_n, ACC)
    return dl, uu, Bt


@triton.jit
def _advance(h, dl, uu, A, Bt):
    """One step of the recurrence: h = exp(Δ·A)·h + Δ·u·B."""
    return tl.exp(dl[:, None] * A) * h + (dl * uu)[:, None] * Bt[None, :]


# ------------------------------------------------------------------------------------------------
# forward: chunk ends, carries, outputs
# ------------------------------------------------------------------------------------------------


@triton.jit
def chunk_end_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, end_ptr, sumd_ptr, L, NUM_D, DG,
                     N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr, CHUNK: tl.constexpr,
                     NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
    """Each chunk from a zero state: its end state and ΣΔ."""
    pid_b, pid_d, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    d_idx, n_idx, n_mask, A = _tile(A_ptr, pid_d, N, NP, BD, ACC)
    row, bc_row = _rows(pid_b, pid_d, d_idx, n_idx, L, NUM_D, DG, N, BD)
    h = tl.zeros([BD, NP], dtype=ACC)
    sum_delta = tl.zeros([BD], dtype=ACC)
    t0 = pid_k * CHUNK
    for i in range(CHUNK):
        t = t0 + i
        live, live_n = _step_masks(t, L, n_mask, BD, NP)
        dl, uu, Bt = _step_inputs(u_ptr, delta_ptr, B_ptr, row, bc_row, t, live, live_n, ACC)
        h = _advance(h, dl, uu, A, Bt)
        sum_delta += dl
    base = _chunk_base(pid_b, pid_k, d_idx, NUM_D, NUM_CHUNKS)
    tl.store(end_ptr + _state_tile(base, n_idx, N), h, mask=n_mask[None, :])
    tl.store(sumd_ptr + base, sum_delta)


@triton.jit
def carry_kernel(A_ptr, end_ptr, sumd_ptr, carry_ptr, last_ptr, NUM_D,
                 N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
                 NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
    """One pass over the chunks: the state entering each chunk, and the last state."""
    pid_b, pid_d = tl.program_id(0), tl.program_id(1)
    d_idx, n_idx, n_mask, A = _tile(A_ptr, pid_d, N, NP, BD, ACC)
    state = tl.zeros([BD, NP], dtype=ACC)
    for k in range(NUM_CHUNKS):
        base = _chunk_base(pid_b, k, d_idx, NUM_D, NUM_CHUNKS)
        tile = _state_tile(base, n_idx, N)
        tl.store(carry_ptr + tile, state, mask=n_mask[None, :])
        end = tl.load(end_ptr + tile, mask=n_mask[None, :], other=0.0)
        sd = tl.load(sumd_ptr + base)
        state = tl.exp(sd[:, None] * A) * state + end
    tl.store(last_ptr + _state_tile(pid_b * NUM_D + d_idx, n_idx, N), state, mask=n_mask[None, :])


@triton.jit
def chunk_out_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, carry_ptr, y_ptr, L, NUM_D, DG,
                     N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr, CHUNK: tl.constexpr,
                     NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
    """Each chunk again from its entering state: y."""
    pid_b, pid_d, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    d_idx, n_idx, n_mask, A = _tile(A_ptr, pid_d, N, NP, BD, ACC)
    row, bc_row = _rows(pid_b, pid_d, d_idx, n_idx, L, NUM_D, DG, N, BD)
    tile = _state_tile(_chunk_base(pid_b, pid_k, d_idx, NUM_D, NUM_CHUNKS), n_idx, N)
    h = tl.load(carry_ptr + tile, mask=n_mask[None, :], other=0.0)
    t0 = pid_k * CHUNK
    for i in range(CHUNK):
        t = t0 + i
        live, live_n = _step_masks(t, L, n_mask, BD, NP)
        dl, uu, Bt = _step_inputs(u_ptr, delta_ptr, B_ptr, row, bc_row, t, live, live_n, ACC)
        Ct = _load(C_ptr, bc_row, t, live_n, ACC)
        h = _advance(h, dl, uu, A, Bt)
        y = tl.sum(h * Ct[None, :], axis=1)
        tl.store(y_ptr + row + t, y, mask=live)


# ------------------------------------------------------------------------------------------------
# backward: chunk adjoints, reverse carries, gradients
# ------------------------------------------------------------------------------------------------


@triton.jit
def chunk_adj_kernel(delta_ptr, A_ptr, C_ptr, gy_ptr, first_ptr, L, NUM_D, DG,
                     N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr, CHUNK: tl.constexpr,
                     NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
    """The adjoint of each chunk from zero: what leaves its first step."""
    pid_b, pid_d, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    d_idx, n_idx, n_mask, A = _tile(A_ptr, pid_d, N, NP, BD, ACC)
    row, bc_row = _rows(pid_b, pid_d, d_idx, n_idx, L, NUM_D, DG, N, BD)
    g_next = tl.zeros([BD, NP], dtype=ACC)  # decay_{t+1} · g_{t+1}
    t_end = pid_k * CHUNK + CHUNK - 1
    for i in range(CHUNK):
        t = t_end - i
        live, live_n = _step_masks(t, L, n_mask, BD, NP)
        dl = _load(delta_ptr, row, t, live, ACC)
        gy = _load(gy_ptr, row, t, live, ACC)
        Ct = _load(C_ptr, bc_row, t, live_n, ACC)
        g = gy[:, None] * Ct[None, :] + g_next
        g_next = tl.exp(dl[:, None] * A) * g
    tile = _state_tile(_chunk_base(pid_b, pid_k, d_idx, NUM_D, NUM_CHUNKS), n_idx, N)
    tl.store(first_ptr + tile, g_next, mask=n_mask[None, :])


@triton.jit
def carry_rev_kernel(A_ptr, first_ptr, sumd_ptr, glast_ptr, incoming_ptr, NUM_D,
                     N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
                     NUM_CHUNKS: tl.constexpr, HAS_LAST: tl.constexpr, ACC: tl.constexpr):
    """One reverse pass over the chunks: the adjoint entering each chunk's end."""
    pid_b, pid_d = tl.program_id(0), tl.program_id(1)
    d_idx, n_idx, n_mask, A = _tile(A_ptr, pid_d, N, NP, BD, ACC)
    if HAS_LAST:
        state = tl.load(glast_ptr + _state_tile(pid_b * NUM_D + d_idx, n_idx, N),
                        mask=n_mask[None, :], other=0.0).to(ACC)
    else:
        state = tl.zeros([BD, NP], dtype=ACC)
    for kk in range(NUM_CHUNKS):
        k = NUM_CHUNKS - 1 - kk
        base = _chunk_base(pid_b, k, d_idx, NUM_D, NUM_CHUNKS)
        tile = _state_tile(base, n_idx, N)
        tl.store(incoming_ptr + tile, state, mask=n_mask[None, :])
        first = tl.load(first_ptr + tile, mask=n_mask[None, :], other=0.0)
        sd = tl.load(sumd_ptr + base)
        state = first + tl.exp(sd[:, None] * A) * state


@triton.jit
def chunk_grad_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, gy_ptr, carry_ptr, incoming_ptr,
                      scratch_ptr, du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, L, NUM_D, DG,
                      N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr, CHUNK: tl.constexpr,
                      NUM_CHUNKS: tl.constexpr, ACC: tl.constexpr):
    """The chunk's states forward (kept in a scratch buffer), then the adjoint backward with every
    gradient piece per step; dB/dC as partial sums per channel block."""
    pid_b, pid_d, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    num_blocks = tl.num_programs(1)
    d_idx, n_idx, n_mask, A = _tile(A_ptr, pid_d, N, NP, BD, ACC)
    row, bc_row = _rows(pid_b, pid_d, d_idx, n_idx, L, NUM_D, DG, N, BD)
    part_row = ((pid_b * num_blocks + pid_d) * N + n_idx).to(tl.int64) * L  # dB/dC partial sums
    tile = _state_tile(_chunk_base(pid_b, pid_k, d_idx, NUM_D, NUM_CHUNKS), n_idx, N)
    h0 = tl.load(carry_ptr + tile, mask=n_mask[None, :], other=0.0)
    # this program's scratch: CHUNK tiles of (BD, NP) states
    scratch = scratch_ptr + ((pid_b * NUM_CHUNKS + pid_k) * (NUM_D // BD) + pid_d).to(tl.int64) * (CHUNK * BD * NP)
    local = tl.arange(0, BD)[:, None] * NP + n_idx[None, :]
    t0 = pid_k * CHUNK
    h = h0
    for i in range(CHUNK):
        t = t0 + i
        live, live_n = _step_masks(t, L, n_mask, BD, NP)
        dl, uu, Bt = _step_inputs(u_ptr, delta_ptr, B_ptr, row, bc_row, t, live, live_n, ACC)
        gy = _load(gy_ptr, row, t, live, ACC)
        h = _advance(h, dl, uu, A, Bt)
        tl.store(scratch + i * (BD * NP) + local, h)
        tl.store(dC_ptr + part_row + t, tl.sum(gy[:, None] * h, axis=0), mask=live_n)
    tl.debug_barrier()
    g_next = tl.load(incoming_ptr + tile, mask=n_mask[None, :], other=0.0)
    dA_acc = tl.zeros([BD, NP], dtype=ACC)
    for i in range(CHUNK):
        j = CHUNK - 1 - i
        t = t0 + j
        live, live_n = _step_masks(t, L, n_mask, BD, NP)
        dl, uu, Bt = _step_inputs(u_ptr, delta_ptr, B_ptr, row, bc_row, t, live, live_n, ACC)
        gy = _load(gy_ptr, row, t, live, ACC)
        Ct = _load(C_ptr, bc_row, t, live_n, ACC)
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
