"""Image embedders for editing-shift matching (ESM): ``[B,3,H,W]`` in 0..1 → ``[B,D]``, frozen,
differentiable with respect to the image.

ESM compares *shifts* of embeddings (after − before), so an embedder is only useful if an edit
moves it and leaving the image alone does not. Two are offered:

- :class:`CLIPImageEmbedder` — CLIP's vision tower from a local transformers folder (the paper's
  choice; ViT-L/14 for SD1.5).
- :class:`ColourStatsEmbedder` — a fixed, parameter-free description of an image: per-channel
  mean and standard deviation, the colour correlations, the mean gradient magnitude per channel
  (sharpness) and a small mean-free thumbnail (layout). For tiny stacks trained from scratch,
  where no pretrained CLIP exists at their scale: every block moves under the edits of the
  synthetic data (inversion, recolouring, grayscale, blur, flips, moves, ...) and nothing in it is
  random, so a flat ESM curve means the model, not the embedder.

A randomly initialised CLIP is *not* an ESM embedder: its features hardly move with an edit (the
ESM loss of a run that used one stayed at ~0.5 throughout). ``make_random_tiny_clip`` exists for
plumbing tests of the CLIP loader and for evaluation smoke tests only.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EMBEDDERS = ("auto", "clip", "colour")


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected [B,3,H,W] in 0..1, got shape {tuple(images.shape)}")


class CLIPImageEmbedder(nn.Module):
    """Frozen CLIP image encoder: ``[B,3,H,W]`` in 0..1 → projected embeddings ``[B,D]``.

    Gradients flow to the input (ESM needs them), never into the weights."""

    def __init__(self, model: nn.Module, image_size: int | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.image_size = int(image_size or model.config.image_size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_folder(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> CLIPImageEmbedder:
        """Loads a local transformers CLIP vision model folder (CLIPVisionModelWithProjection or a
        full CLIPModel folder, whose vision half is used)."""
        from transformers import CLIPModel, CLIPVisionModelWithProjection

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"CLIP model {path}: expected a local transformers model folder with config.json")
        cfg = (path / "config.json").read_text()
        if '"CLIPModel"' in cfg:
            full = CLIPModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
            model = CLIPVisionModelWithProjection(full.config.vision_config).to(dtype)
            model.vision_model.load_state_dict(full.vision_model.state_dict())
            model.visual_projection.load_state_dict(full.visual_projection.state_dict())
        else:
            model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
        return cls(model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        x = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bicubic",
                          align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        dtype = next(self.model.parameters()).dtype
        return self.model(pixel_values=x.to(dtype)).image_embeds.float()


class ColourStatsEmbedder(nn.Module):
    """Parameter-free image statistics, each block scaled to unit weight per block:

    - colour: per-channel mean (3) and standard deviation (3),
    - co-variation of the channel pairs RG, RB, GB over the mean variance (3): grayscale, sepia
      and tints change it,
    - sharpness: mean gradient magnitude per channel (3): blur, pixelate and outlines change it,
    - layout: a ``thumb``×``thumb`` area-averaged thumbnail minus its channel means (3·thumb²):
      flips, rotations, moved and added objects change it.

    Each block is divided by √(its size), so a 48-value thumbnail does not outvote the 3 means in
    the cosine of ESM. Everything is differentiable (square roots have an ε floor)."""

    def __init__(self, thumb: int = 4, eps: float = 1e-6):
        super().__init__()
        if thumb < 1:
            raise ValueError(f"thumb: expected >= 1, got {thumb}")
        self.thumb, self.eps = int(thumb), float(eps)

    @property
    def dim(self) -> int:
        return 12 + 3 * self.thumb ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        x = images.to(torch.promote_types(images.dtype, torch.float32))  # float64 stays (gradcheck)
        b = x.shape[0]
        flat = x.flatten(2)  # [B,3,N]
        mean = flat.mean(-1)
        centred = flat - mean[..., None]
        cov = centred @ centred.transpose(1, 2) / flat.shape[-1]  # [B,3,3]
        var = cov.diagonal(dim1=1, dim2=2)
        std = (var + self.eps).sqrt()
        # Covariances over the mean variance, not per-channel correlations: a nearly constant channel
        # (solid colours are common) would make its correlations jump at the slightest change. The
        # floor (a standard deviation of 0.01) does the same for nearly constant images.
        i, j = torch.triu_indices(3, 3, offset=1)
        covar = cov[:, i, j] / (var.mean(1, keepdim=True) + 1e-4)
        dx = x[..., :, 1:] - x[..., :, :-1]
        dy = x[..., 1:, :] - x[..., :-1, :]
        sharp = (dx.pow(2) + self.eps).sqrt().mean((-2, -1)) + (dy.pow(2) + self.eps).sqrt().mean((-2, -1))
        thumb = F.adaptive_avg_pool2d(x, self.thumb) - mean[..., None, None]
        blocks = [mean, std, covar, sharp, thumb.reshape(b, -1)]
        return torch.cat([blk / blk.shape[1] ** 0.5 for blk in blocks], 1)


def make_random_tiny_clip(seed: int = 0):
    """A *randomly initialised* tiny CLIP vision model: for tests of the CLIP loading path and for
    evaluation plumbing. Not an ESM embedder (see the module docstring)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8, projection_dim=32))


def resolve_esm_embedder(embedder: str, clip_model: str, base_model: str) -> str:
    """``auto`` → ``clip`` when a CLIP folder is given, ``colour`` for a ``tiny`` base, else an error
    (an SD1.5 run must not fall back to colour statistics without being told)."""
    if embedder not in EMBEDDERS:
        raise ValueError(f"esm_embedder={embedder!r}: expected one of {', '.join(EMBEDDERS)}")
    if clip_model == "tiny":
        raise ValueError("clip_model='tiny' (a randomly initialised CLIP) is no ESM embedder any more: "
                         "its features do not follow edits. Use --esm-embedder colour for tiny stacks, "
                         "a local CLIP folder (--clip-model PATH) for SD1.5, or --no-esm")
    if embedder == "auto":
        if clip_model:
            return "clip"
        if base_model == "tiny":
            return "colour"
        raise ValueError("ESM is on but no CLIP model is given: pass a local CLIP vision model folder "
                         "(--clip-model PATH), --esm-embedder colour (colour statistics), or --no-esm")
    if embedder == "clip" and not clip_model:
        raise ValueError("esm_embedder=clip needs --clip-model PATH (a local transformers CLIP folder)")
    return embedder


def load_esm_embedder(embedder: str, clip_model: str = "", base_model: str = "",
                      colour_thumb: int = 4) -> nn.Module:
    """The frozen ESM embedder the options name (see :func:`resolve_esm_embedder`)."""
    kind = resolve_esm_embedder(embedder, clip_model, base_model)
    if kind == "clip":
        return CLIPImageEmbedder.from_folder(clip_model)
    return ColourStatsEmbedder(colour_thumb)
