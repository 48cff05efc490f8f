"""The module that takes the place of ComfyUI's ``cldm.ControlNet.input_hint_block``.

ComfyUI calls ``input_hint_block(hint, emb, context)`` at every step; this wraps the VMamba hint
encoder with its feature cache (``gie_core.models.CachedHintEncoder``) and adds what a ComfyUI user
needs on top: clear errors when the ControlNet meets the wrong base model (an SDXL model gives
2048-wide text features, SD1.5 768) or the wrong hint, and device/dtype handling so the encoder
runs where its weights are, in float32 (the selective scan is not safe in half precision), whatever
ComfyUI's model management chose for the rest of the ControlNet. No ComfyUI import here.
"""
from __future__ import annotations

import torch

from gie_core.models import CachedHintEncoder, VMambaHintEncoder


class VMambaHintBlock(CachedHintEncoder):
    """``forward(hint, emb, context) -> [B, C, H/8, W/8]`` features for ``cldm.ControlNet``.

    Args:
        encoder: a ``gie_core.models.VMambaHintEncoder``.
        context_dim: the text-feature width the ControlNet was made for (768 for SD1.5).
        base: a short name of that base model, for messages (``"sd1"``...).
    """

    encoder: VMambaHintEncoder
    # The unified instructions the model was trained on (set by the loader; None: an older file).
    instruction_bank: list[str] | None = None

    def __init__(self, encoder, context_dim: int | None = None, base: str = "unknown"):
        super().__init__(encoder)
        self.context_dim = context_dim
        self.base = base

    @property
    def in_channels(self) -> int:
        return int(self.encoder.config.total_in_channels)

    @property
    def uses_target_channel(self) -> bool:
        return bool(self.encoder.config.use_target_channel)

    def check_context(self, context) -> None:
        """Raise a ValueError when the model's text features do not fit this ControlNet."""
        if self.context_dim is None or not isinstance(context, torch.Tensor) or context.ndim < 2:
            return
        got = int(context.shape[-1])
        if got != self.context_dim:
            names = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}
            raise ValueError(
                f"VMamba ControlNet: this ControlNet was made for {names.get(self.context_dim, self.base)} "
                f"(text features {self.context_dim} wide) but the model gives {got}-wide text features "
                f"({names.get(got, 'another base model')}). Load a checkpoint of the ControlNet's base model "
                f"(e.g. an SD1.5 checkpoint for an SD1.5 ControlNet).")

    def forward(self, hint, emb=None, context=None):
        self.check_context(context)
        if not isinstance(hint, torch.Tensor) or hint.ndim != 4:
            raise ValueError(f"VMamba ControlNet: expected a hint image batch [B, C, H, W], got "
                             f"{getattr(hint, 'shape', type(hint).__name__)}")
        if hint.shape[1] != self.in_channels:
            if self.uses_target_channel and hint.shape[1] == self.in_channels - 1:
                raise ValueError("VMamba ControlNet: this ControlNet takes the hint plus the target mask as a "
                                 "4th channel; use the InstructGIE Sampler, which adds it.")
            raise ValueError(f"VMamba ControlNet: the hint image has {hint.shape[1]} channels, this ControlNet "
                             f"expects {self.in_channels} (connect Visual Prompt Concatenate's 'hint').")
        weight = next(self.encoder.parameters())
        x = hint.to(device=weight.device, dtype=weight.dtype)
        y = super().forward(x)
        return y.to(device=hint.device, dtype=hint.dtype)
