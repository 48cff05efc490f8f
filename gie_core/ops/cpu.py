"""Pure-PyTorch selective scan: the ``"cpu_torch"`` backend, and what ``"cpu"`` runs where numba is
not importable or the tensors are not on the CPU (it runs on any torch device). The fused numba
kernel (ops/numba_scan.py) is 3-4x faster on the CPU.

How it works (a two-level chunked scan):
  The sequence is cut into K chunks of T ≈ sqrt(l) steps, laid out chunk-major as
  ``(K, T, batch, groups, dim/groups, d_state)`` (one 2-D transpose in, one out), so step t of
  *all* chunks is one slab of K contiguous rows. A Python loop over the T steps runs the
  recurrence ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t`` on every chunk at once (one ``addcmul_``
  per step); a serial loop over the chunks on small contiguous tensors carries the state from
  chunk to chunk (chunk decay = exp(A ΣΔ)); a second loop over the steps adds each chunk's entering
  state times the running product of the decays; y = Σ_n C h is a batched matmul. Only ``exp(Δ A)``
  is ever exponentiated (≤ 1 whenever Δ ≥ 0 and A ≤ 0) and the running products multiply numbers
  ≤ 1, so nothing overflows the way ``exp(S)·exp(−S)`` log-space tricks do, and no ``-inf`` fill
  can turn into a NaN gradient. Every op is a whole slab or tensor: each op is a parallel region
  and costs a thread hand-off, so the op count is kept near 2T + K + 20.

  The autograd Function saves only its inputs; backward recomputes the states and runs the
  adjoint recurrence ``g_t = C_t gy_t + exp(Δ_{t+1} A) g_{t+1}`` with the same chunked machinery,
  so memory held between forward and backward is the size of the inputs, not ``(b, d, n, l)``.

Delta bias / softplus, the skip term ``D u`` and the ``silu(z)`` gate are cheap ``(b, d, l)``
elementwise ops left to ordinary autograd around the Function.
"""
from __future__ import annotations

import math
import mmap

import torch
import torch.nn.functional as F

from ._extras import scan_with_extras


def default_chunk(length: int) -> int:
    """Steps per chunk, ~sqrt(length): T big per-step ops and K small per-chunk ops."""
    if length <= 8:
        return max(length, 1)
    return min(128, max(4, 1 << int(round(math.log2(math.sqrt(length))))))


class _Layout:
    """Moves ``(..., l)`` tensors into the chunked ``(n_chunks, chunk, ...)`` layout and back.

    Chunk-major with the channels innermost: one 2-D transpose, and step t of every chunk is a
    slab of n_chunks contiguous rows.
    """

    def __init__(self, length: int, chunk: int):
        self.length = length
        self.chunk = chunk
        self.n_chunks = max(1, -(-length // chunk))
        self.pad = self.n_chunks * chunk - length

    def to_chunks(self, t: torch.Tensor) -> torch.Tensor:
        if self.pad:
            t = F.pad(t, (0, self.pad))  # zero Δ ⇒ decay 1 and no input: padding carries the state unchanged
        lead = t.shape[:-1]
        return t.reshape(-1, t.shape[-1]).t().contiguous().view(self.n_chunks, self.chunk, *lead)

    def from_chunks(self, t: torch.Tensor) -> torch.Tensor:
        lead = t.shape[2:]
        t = t.reshape(self.n_chunks * self.chunk, -1).t().contiguous().view(*lead, -1)
        return t[..., : self.length] if self.pad else t


def _big_empty(shape, like: torch.Tensor) -> torch.Tensor:
    """Uninitialised buffer; large CPU buffers are backed by transparent huge pages.

    Why: on Linux with THP in ``madvise`` mode, first-touch page faults of a fresh 100 MB tensor cost
    more than the whole scan (measured ~25 ms vs ~4 ms with huge pages). torch only requests huge
    pages when THP_MEM_ALLOC_ENABLE=1 was set before it started, so we ask for them ourselves.
    """
    numel = math.prod(shape)
    nbytes = numel * like.element_size()
    if like.device.type != "cpu" or nbytes < (8 << 20) or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buf.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError, AttributeError):
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return torch.frombuffer(buf, dtype=like.dtype, count=numel).view(shape)


def _chunked_inputs(u, delta, A, B, C, layout: _Layout):
    """Chunked copies: per-channel ``(K, T, b, g, dg, 1)``, per-state ``(K, T, b, g, 1, n)``."""
    b, d, _ = u.shape
    g, n = B.shape[1], A.shape[1]
    dg = d // g
    T, K = layout.chunk, layout.n_chunks
    dT = layout.to_chunks(delta).view(K, T, b, g, dg, 1)
    uT = layout.to_chunks(u).view(K, T, b, g, dg, 1)
    BT = layout.to_chunks(B).view(K, T, b, g, 1, n)
    CT = layout.to_chunks(C).view(K, T, b, g, 1, n)
    AT = A.view(g, dg, n)
    return dT, uT, BT, CT, AT


def _local_states(dT, duT, BT, AT):
    """Decays exp(ΔA) and in-chunk states from zero, ``(K, T, b, g, dg, n)`` each.

    Whole-tensor ops wherever possible: every op is one parallel region, and each region costs a
    thread hand-off (milliseconds when the cores are oversubscribed), so the only per-step ops
    are the ``addcmul_`` of the recurrence itself (step t of all chunks at once).
    """
    K, T, b, g, dg, _ = dT.shape
    n = AT.shape[2]
    shape = (K, T, b, g, dg, n)
    decay = _big_empty(shape, dT)
    torch.mul(dT, AT, out=decay)
    decay.exp_()
    h = _big_empty(shape, dT)
    torch.mul(duT, BT, out=h)
    for t in range(1, T):
        h[:, t].addcmul_(decay[:, t], h[:, t - 1])
    return decay, h


def _chunk_carries(chunk_decay, chunk_end):
    """States entering each chunk ``(K, b, g, dg, n)`` and the final state ``(b, g, dg, n)``.

    A serial loop over the chunks: each step is one small contiguous ``addcmul`` (usually below
    torch's parallel grain, so no thread hand-off).
    """
    carry = torch.empty_like(chunk_end)
    carry[0] = 0
    for k in range(1, chunk_end.shape[0]):
        torch.addcmul(chunk_end[k - 1], chunk_decay[k - 1], carry[k - 1], out=carry[k])
    last = torch.addcmul(chunk_end[-1], chunk_decay[-1], carry[-1])
    return carry, last


def scan_forward(u, delta, A, B, C, chunk: int | None = None):
    """Core scan without autograd: ``y[b,d,l] = Σ_n C h`` and the last state ``(b, d, n)``.

    Inputs must already share one floating dtype; B and C are ``(b, g, n, l)``; ``delta`` is the
    final Δ (bias and softplus applied).
    """
    b, d, l = u.shape
    n = A.shape[1]
    layout = _Layout(l, chunk or default_chunk(l))
    T, K = layout.chunk, layout.n_chunks
    dT, uT, BT, CT, AT = _chunked_inputs(u, delta, A, B, C, layout)
    decay, h = _local_states(dT, dT * uT, BT, AT)
    chunk_decay = torch.exp(dT.sum(1) * AT)  # Π over a chunk of exp(Δ_t A) = exp(A ΣΔ)
    carry, last = _chunk_carries(chunk_decay, h[:, -1])
    if K > 1:  # each chunk's entering state, decayed to every step: carry · Π_{r≤t} decay_r
        running = carry
        for t in range(T):
            running = running * decay[:, t]
            h[:, t].add_(running)
    del decay
    if n == 1:
        yT = torch.mul(h.squeeze(5), CT.squeeze(5))
    else:  # Σ_n h C as batched (dg × n)·(n × 1) products: one pass, no temporary (BLAS)
        yT = torch.matmul(h, CT.transpose(-1, -2))  # (K, T, b, g, dg, 1)
    del h
    y = layout.from_chunks(yT.reshape(K, T, b, d))
    return y, last.reshape(b, d, n)


def scan_backward(u, delta, A, B, C, grad_y, grad_last, chunk: int | None = None):
    """Gradients of the core scan for (u, delta, A, B, C) by recomputation and the adjoint scan."""
    b, d, l = u.shape
    g, n = B.shape[1], A.shape[1]
    dg = d // g
    layout = _Layout(l, chunk or default_chunk(l))
    T, K = layout.chunk, layout.n_chunks
    dT, uT, BT, CT, AT = _chunked_inputs(u, delta, A, B, C, layout)
    duT = dT * uT
    decay, h = _local_states(dT, duT, BT, AT)
    chunk_decay = torch.exp(dT.sum(1) * AT)  # Π over a chunk of exp(Δ_t A) = exp(A ΣΔ)
    carry, _ = _chunk_carries(chunk_decay, h[:, -1])
    if K > 1:  # full states: add carry · Π_{r≤t} decay_r
        running = carry
        for t in range(T):
            running = running * decay[:, t]
            h[:, t].add_(running)
    gyT = layout.to_chunks(grad_y).view(K, T, b, g, dg, 1)

    # Adjoint g_t = dL/dh_t = C_t gy_t + decay_{t+1} g_{t+1}: first inside each chunk from zero ...
    adj = _big_empty(h.shape, h)
    torch.mul(CT, gyT, out=adj)
    for t in range(T - 2, -1, -1):
        adj[:, t].addcmul_(decay[:, t + 1], adj[:, t + 1])
    # ... then what reaches each chunk's end from later chunks (and from the last-state gradient):
    # incoming_{k-1} = decay_{0,k} g_{0,k} = decay_{0,k} g^local_{0,k} + Π_chunk(decay) incoming_k,
    # starting from incoming_{K-1} = grad_last; it reaches step t of chunk k as Π_{r>t} decay_r.
    if K > 1 or grad_last is not None:
        first_step = decay[:, 0] * adj[:, 0]  # (K, b, g, dg, n)
        incoming = torch.empty_like(first_step)
        if grad_last is not None:
            incoming[K - 1] = grad_last.reshape(b, g, dg, n)
        else:
            incoming[K - 1] = 0
        for k in range(K - 1, 0, -1):
            torch.addcmul(first_step[k], chunk_decay[k], incoming[k], out=incoming[k - 1])
        del first_step
        running = incoming  # reaches step t as incoming · Π_{r>t} decay_r
        for t in range(T - 1, -1, -1):
            adj[:, t].add_(running)
            if t:
                running = running * decay[:, t]
        del incoming, running
    work = _big_empty(h.shape, h)

    # dlog_t = dL/d(Δ_t A) = g_t ⊙ decay_t ⊙ h_{t-1}, built in the decay buffer.
    dlog = decay.mul_(adj)
    dlog[:, 1:].mul_(h[:, :-1])
    dlog[:, 0].mul_(carry)
    del carry
    d_delta = torch.mul(dlog, AT, out=work).sum(5, keepdim=True)  # (K,T,b,g,dg,1)
    dA = torch.mul(dlog, dT, out=work).sum((0, 1, 2)).reshape(d, n)
    del dlog, decay
    del work
    # Σ_n g B, Σ_dg g Δu, Σ_dg h gy as batched small matrix products (BLAS, no temporaries)
    gB_sum = torch.matmul(adj, BT.transpose(-1, -2))  # (K,T,b,g,dg,1)
    dB = torch.matmul(duT.transpose(-1, -2), adj)  # (K,T,b,g,1,n)
    del adj
    dC = torch.matmul(gyT.transpose(-1, -2), h)
    del h
    du = gB_sum * dT
    d_delta.addcmul_(gB_sum, uT)

    def back(t, shape):
        return layout.from_chunks(t.reshape((K, T) + shape))

    return (back(du, (b, d)), back(d_delta, (b, d)), dA,
            back(dB, (b, g, n)), back(dC, (b, g, n)))


# Big buffers are (b, d, n, l) each, four of them in backward; batches whose state would exceed
# this many elements are scanned in slices of the batch, one after the other.
MAX_STATE_ELEMENTS = 1 << 26  # 256 MiB per float32 buffer


def _batch_slices(u, A):
    b, d, l = u.shape
    per_item = d * A.shape[1] * l
    step = max(1, MAX_STATE_ELEMENTS // max(per_item, 1))
    return [slice(i, min(i + step, b)) for i in range(0, b, step)]


def _scan_forward_sliced(u, delta, A, B, C, chunk):
    slices = _batch_slices(u, A)
    if len(slices) == 1:
        return scan_forward(u, delta, A, B, C, chunk)
    outs = [scan_forward(u[s], delta[s], A, B[s], C[s], chunk) for s in slices]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def _scan_backward_sliced(u, delta, A, B, C, grad_y, grad_last, chunk):
    slices = _batch_slices(u, A)
    if len(slices) == 1:
        return scan_backward(u, delta, A, B, C, grad_y, grad_last, chunk)
    parts = [scan_backward(u[s], delta[s], A, B[s], C[s], grad_y[s],
                           None if grad_last is None else grad_last[s], chunk) for s in slices]
    du, d_delta, dA, dB, dC = zip(*parts)
    return torch.cat(du), torch.cat(d_delta), sum(dA), torch.cat(dB), torch.cat(dC)


class SelectiveScanCPU(torch.autograd.Function):
    """Core scan (u, Δ, A, B, C) → (y, last_state) that saves only its inputs."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        ctx.chunk = chunk
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(u, delta, A, B, C)
        y, last = _scan_forward_sliced(u, delta, A, B, C, chunk)
        return y, last

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, delta, A, B, C = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(u)
        du, d_delta, dA, dB, dC = _scan_backward_sliced(u, delta, A, B, C, grad_y.contiguous(),
                                                        grad_last, ctx.chunk)
        return du, d_delta, dA, dB, dC, None


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, chunk: int | None = None):
    """``selective_scan`` semantics on the fast pure-PyTorch path (inputs assumed validated).

    Computes in float32 (float64 stays float64) and returns u's dtype; ``chunk`` overrides the
    steps per chunk (tests use it to force many chunks on short sequences).
    """
    def core(u_, delta_, A_, B_, C_):
        return SelectiveScanCPU.apply(u_, delta_, A_, B_, C_, chunk)

    return scan_with_extras(core, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                            return_last_state)
