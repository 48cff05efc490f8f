"""The ControlNet input, built in one place: hint + optional target-mask channel + target fill.

The pipeline, the trainer and the ComfyUI nodes all hand a ControlNet the same thing, built here
from the visual prompt's hint (the grid with the target cell blanked). What a ControlNet wants is
read from its config by :func:`spec_for`:

- ``target_channel``: a 4th channel marking the target cell (``use_target_channel`` in a VMamba
  encoder's config, ``conditioning_channels == 4`` in a plain one);
- ``fill``: what the caller puts into the blank target cell — ``"blank"`` (the paper) or
  ``"query"`` (a copy of the query cell). A VMamba hint encoder records its fill in its own config
  and applies :func:`fill_target` itself, so a stock ComfyUI *Apply ControlNet* that passes the
  plain hint still gets the right input; a plain ControlNet records ``hint_target_fill`` and the
  caller fills for it.

Only the grid's geometry is needed (square cells in two columns, the query in the last row's
first cell, the target beside it), so this module sits below both the prompt layer
(``gie_core.visual_prompt``) and the models, and imports only torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: Columns of a visual-prompt grid: before | after.
GRID_COLUMNS = 2
#: What the target cell of a hint can hold.
TARGET_FILLS = ("blank", "query")


def grid_cell(hint: torch.Tensor) -> int:
    """The cell side of a channels-first ``[B, C, H, W]`` grid hint; ValueError if it is not one."""
    if not isinstance(hint, torch.Tensor) or hint.dim() != 4:
        raise ValueError(f"hint: expected a [batch, channels, height, width] tensor, got "
                         f"{getattr(hint, 'shape', type(hint).__name__)}")
    h, w = hint.shape[-2:]
    tile = w // GRID_COLUMNS
    if tile == 0 or w % GRID_COLUMNS or h % tile:
        raise ValueError(f"hint: expected a grid of square cells in {GRID_COLUMNS} columns, got {h}×{w}")
    return tile


def fill_target(hint: torch.Tensor, fill: str = "query") -> torch.Tensor:
    """``hint`` ``[B,C,Hg,Wg]`` with the target cell's first three channels replaced by the query
    cell's (``fill="query"``); ``fill="blank"`` returns ``hint`` itself."""
    if fill not in TARGET_FILLS:
        raise ValueError(f"target fill: expected one of {TARGET_FILLS}, got {fill!r}")
    if fill == "blank":
        return hint
    tile = grid_cell(hint)
    out = hint.clone()
    top = hint.shape[-2] - tile
    out[:, :3, top:, tile:] = hint[:, :3, top:, :tile]
    return out


@dataclass(frozen=True)
class ControlInputSpec:
    """What a ControlNet expects on top of the plain hint (see the module docstring)."""

    target_channel: bool = False
    fill: str = "blank"


def spec_for(controlnet) -> ControlInputSpec:
    """The input spec of a diffusers ControlNet (ours or a plain one), from its config."""
    cfg = controlnet.config
    hint_cfg = getattr(cfg, "hint_encoder_config", None)
    if hint_cfg is not None:  # VMambaControlNetModel: the encoder fills its own target cell
        return ControlInputSpec(bool(dict(hint_cfg).get("use_target_channel", False)), "blank")
    flag = getattr(cfg, "use_target_channel", None)
    channel = bool(flag) if flag is not None else int(getattr(cfg, "conditioning_channels", 3)) == 4
    return ControlInputSpec(channel, getattr(cfg, "hint_target_fill", "blank"))


def build(hint: torch.Tensor, target_mask: torch.Tensor | None = None, *, target_channel: bool = False,
          fill: str = "blank") -> torch.Tensor:
    """The ControlNet input ``[B, 3 or 4, Hg, Wg]`` from a channels-first hint ``[B, 3, Hg, Wg]``
    and, for ``target_channel``, the target mask ``[B or 1, Hg, Wg]`` as a 4th channel."""
    grid_cell(hint)
    x = hint
    if target_channel:
        if target_mask is None:
            raise ValueError("target_mask: this ControlNet takes the target mask as a 4th hint channel; got none")
        if target_mask.dim() != 3 or tuple(target_mask.shape[-2:]) != tuple(hint.shape[-2:]):
            raise ValueError(f"target_mask: expected [batch, {hint.shape[-2]}, {hint.shape[-1]}], got "
                             f"{tuple(target_mask.shape)}")
        m = target_mask[:, None].to(hint).expand(hint.shape[0], 1, *hint.shape[-2:])
        x = torch.cat([hint, m], dim=1)
    return fill_target(x, fill)


def for_controlnet(controlnet, hint: torch.Tensor, target_mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`build` with what ``controlnet``'s config asks for."""
    spec = spec_for(controlnet)
    return build(hint, target_mask, target_channel=spec.target_channel, fill=spec.fill)
