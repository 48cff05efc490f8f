"""Training losses: the latent diffusion loss on the target cell, editing-shift matching (ESM) and
selective area matching (SAM).

``L = L_ldm + λ_esm · L_esm + λ_sam · L_sam``

- ``L_ldm``: MSE between the UNet's prediction and the diffusion target (noise, v or x0, whatever
  the scheduler's ``prediction_type`` says), weighted 1 on the target cell and ``outside_weight``
  (default 0) on the known cells.
- ``L_esm = 1 − cos(E(x̂0_target) − E(query_before), mean_i[E(ex_after_i) − E(ex_before_i)])`` with
  E a frozen image embedder (``trainer.embedders``: CLIP, or colour statistics for tiny stacks)
  and x̂0 the clean latent implied by the prediction at the sampled timestep. x̂0 and the known
  cells it is compared with go through the same decode (the VAE, or one per-batch linear
  latent→RGB fit, the low-memory mode), so the shift carries no decoder blur. Only samples with
  ``t < max_timestep`` count: at high noise x̂0 is a blur and its shift is noise.
- ``L_sam``: the same MSE as ``L_ldm``, weighted by the detail-region mask (faces) of the target,
  so errors there cost extra.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .embedders import CLIPImageEmbedder  # noqa: F401  (re-exported: trainer.evaluate imports it from here)


# --------------------------------------------------------------------------- diffusion helpers
def _alpha_bar(scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    a = scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float32)[timesteps.long()]
    return a.view(-1, *([1] * (like.ndim - 1)))


def diffusion_target(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, scheduler) -> torch.Tensor:
    """What the UNet must predict, by the scheduler's ``prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"scheduler prediction_type {kind!r}: expected epsilon, v_prediction or sample")


def predicted_x0(noisy: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor, scheduler) -> torch.Tensor:
    """The clean latent implied by the model output at ``timesteps`` (differentiable)."""
    a = _alpha_bar(scheduler, timesteps, noisy)
    x, out = noisy.float(), model_output.float()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (x - (1 - a).sqrt() * out) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * out
    if kind == "sample":
        return out
    raise ValueError(f"scheduler prediction_type {kind!r}: expected epsilon, v_prediction or sample")


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Σ w·(pred − target)² / (C · Σ w)`` over the batch; ``weight`` is ``[B,1,h,w]`` or ``[B,h,w]``.

    Returns 0 (still attached to the graph) when the weights sum to zero."""
    if weight.ndim == pred.ndim - 1:
        weight = weight[:, None]
    if weight.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"weight: expected spatial size {tuple(pred.shape[-2:])}, got {tuple(weight.shape)}")
    w = weight.to(torch.float32)
    err = (pred.float() - target.float()).pow(2) * w
    denom = w.sum() * pred.shape[1] / w.shape[1]
    return err.sum() / denom.clamp_min(1e-8)


def to_latent_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """``[B,H,W]`` pixel mask → ``[B,1,H/f,W/f]`` (area average, so partly covered latents count partly)."""
    return F.avg_pool2d(mask[:, None].float(), factor) if factor > 1 else mask[:, None].float()


def ldm_loss(pred, target, target_mask_latent, outside_weight: float = 0.0) -> torch.Tensor:
    """Diffusion MSE on the target cell (weight 1) and elsewhere (``outside_weight``)."""
    w = target_mask_latent + outside_weight * (1 - target_mask_latent)
    return masked_mse(pred, target, w)


def sam_loss(pred, target, region_mask_latent) -> torch.Tensor:
    """Selective area matching: diffusion MSE weighted by the detail-region mask (0 without regions)."""
    return masked_mse(pred, target, region_mask_latent)


# --------------------------------------------------------------------------- ESM
def esm_loss(pred_emb: torch.Tensor, query_before_emb: torch.Tensor, ex_after_emb: torch.Tensor,
             ex_before_emb: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``1 − cos(shift_pred, shift_example)`` averaged over samples with weight (default all 1).

    ``pred_emb``, ``query_before_emb``: ``[B,D]``; ``ex_*_emb``: ``[B,D]`` or ``[B,K,D]`` (the
    example shift is the mean over the K examples). Returns 0 when no sample has weight."""
    shift_pred = pred_emb.float() - query_before_emb.float()
    shift_ex = ex_after_emb.float() - ex_before_emb.float()
    if shift_ex.ndim == 3:
        shift_ex = shift_ex.mean(1)
    loss = 1 - F.cosine_similarity(shift_pred, shift_ex, dim=-1, eps=1e-6)
    if weight is None:
        return loss.mean()
    w = weight.float()
    return (loss * w).sum() / w.sum().clamp_min(1e-8)


def fit_latent_to_rgb(latents: torch.Tensor, images: torch.Tensor,
                      all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares linear map from latent channels to RGB at latent resolution.

    ``latents`` ``[B,C,h,w]``, ``images`` ``[B,3,H,W]`` in 0..1 (area-averaged to ``h×w``). Returns
    ``(W [3,C], b [3])``. Fitted per batch on the clean grid, it is the low-memory stand-in for the
    VAE decoder (the same idea as ComfyUI's latent previews, without hard-coded factors).
    ``all_reduce_sum``: sums a tensor over processes, so that every process fits the same map on
    the global batch (its normal equations are sums over pixels)."""
    with torch.no_grad():
        img = F.adaptive_avg_pool2d(images.float(), latents.shape[-2:])
        x = latents.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        y = img.permute(0, 2, 3, 1).reshape(-1, 3)
        # float64: the solve amplifies rounding in the normal equations by their condition number,
        # and processes summing partial equations must land on the same map as one process.
        x1 = torch.cat([x, torch.ones_like(x[:, :1])], 1).double()
        normal = torch.cat([x1.T @ x1, x1.T @ y.double()], 1)  # [C+1, C+1+3]
        if all_reduce_sum is not None:
            normal = all_reduce_sum(normal)
        xtx, xty = normal[:, :x1.shape[1]], normal[:, x1.shape[1]:]
        # Small ridge term: a handful of latents may be nearly collinear.
        sol = torch.linalg.solve(xtx + 1e-4 * torch.eye(x1.shape[1], device=x1.device, dtype=xtx.dtype), xty)
        sol = sol.float()  # [C+1, 3]
    return sol[:-1].T.contiguous(), sol[-1].contiguous()


def latent_to_rgb(latents: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Applies a :func:`fit_latent_to_rgb` map: ``[B,C,h,w]`` → ``[B,3,h,w]`` clamped to 0..1."""
    return (torch.einsum("bchw,rc->brhw", latents.float(), weight) + bias.view(1, 3, 1, 1)).clamp(0, 1)
