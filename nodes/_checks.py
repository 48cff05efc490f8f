"""Input checks shared by the nodes: ComfyUI-shaped tensors in, errors a ComfyUI user can act on.

ComfyUI shows an exception's message in the node's error box, so every message names the node's
input (as the user sees it on the node) and says what was expected. No ComfyUI import here.
"""
from __future__ import annotations

import math

import torch

#: Smallest side accepted for an image or mask: below this nothing meaningful can be edited or
#: detected, and a 1x1 input is almost always a wiring mistake (e.g. an empty mask turned image).
MIN_SIDE = 8


class NodeInputError(ValueError):
    """Bad input to an InstructGIE node; the message names the node and the input."""


def fail(node: str, message: str) -> NodeInputError:
    return NodeInputError(f"{node}: {message}")


def check_image(x, node: str, name: str, min_side: int = MIN_SIDE) -> torch.Tensor:
    """An IMAGE as ComfyUI gives it: float tensor ``[B,H,W,C]``, C in 1..4, finite, in 0..1."""
    if not isinstance(x, torch.Tensor):
        raise fail(node, f"'{name}' must be an IMAGE tensor [batch, height, width, channels], "
                         f"got {type(x).__name__}")
    if x.ndim == 3 and x.shape[-1] in (1, 3, 4):
        x = x[None]
    if x.ndim != 4:
        raise fail(node, f"'{name}' must be an IMAGE [batch, height, width, channels], got a tensor "
                         f"of shape {tuple(x.shape)}")
    b, h, w, c = x.shape
    if c not in (1, 3, 4):
        hint = " (it looks channels-first; ComfyUI images are channels-last)" if h in (1, 3, 4) else ""
        raise fail(node, f"'{name}' must have 1, 3 or 4 channels in the last dimension, got shape "
                         f"{tuple(x.shape)}{hint}")
    if b == 0:
        raise fail(node, f"'{name}' is an empty batch (shape {tuple(x.shape)})")
    if h < min_side or w < min_side:
        raise fail(node, f"'{name}' is {h}x{w} pixels; at least {min_side}x{min_side} is needed "
                         f"(is a mask or a 1x1 placeholder connected here?)")
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        raise fail(node, f"'{name}' must be a float image in 0..1, got dtype {x.dtype}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if not torch.isfinite(x).all():
        raise fail(node, f"'{name}' contains NaN or infinite values; check the node that made it")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise fail(node, f"'{name}' must hold values in 0..1, got [{lo:.3g}, {hi:.3g}]")
    return x


def check_mask(m, node: str, name: str, size: tuple[int, int] | None = None,
               batch: int | None = None) -> torch.Tensor:
    """A MASK as ComfyUI gives it: float ``[B,H,W]`` (``[H,W]`` accepted), finite, in 0..1."""
    if not isinstance(m, torch.Tensor):
        raise fail(node, f"'{name}' must be a MASK tensor [batch, height, width], got {type(m).__name__}")
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 4 and m.shape[1] == 1:  # [B,1,H,W] as some nodes leave it
        m = m[:, 0]
    if m.ndim != 3:
        raise fail(node, f"'{name}' must be a MASK [batch, height, width], got shape {tuple(m.shape)}")
    if m.shape[0] == 0 or m.shape[1] == 0 or m.shape[2] == 0:
        raise fail(node, f"'{name}' is empty (shape {tuple(m.shape)})")
    if not (m.is_floating_point() or m.dtype == torch.bool):
        raise fail(node, f"'{name}' must be a float mask in 0..1, got dtype {m.dtype}")
    m = m.float()
    if not torch.isfinite(m).all():
        raise fail(node, f"'{name}' contains NaN or infinite values")
    if float(m.min()) < -1e-3 or float(m.max()) > 1 + 1e-3:
        raise fail(node, f"'{name}' must hold values in 0..1, got [{float(m.min()):.3g}, {float(m.max()):.3g}]")
    if size is not None and tuple(m.shape[1:]) != tuple(size):
        raise fail(node, f"'{name}' is {m.shape[1]}x{m.shape[2]} but the image is {size[0]}x{size[1]}; "
                         f"connect the mask made for this grid (Visual Prompt Concatenate's target_mask)")
    if batch is not None and m.shape[0] not in (1, batch):
        raise fail(node, f"'{name}' has a batch of {m.shape[0]} but the image has {batch}; use a "
                         f"batch of 1 or one mask per image")
    return m.clamp(0.0, 1.0)


def check_int(v, node: str, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise fail(node, f"'{name}' must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise fail(node, f"'{name}' must be in {lo}..{hi}, got {v}")
    return v


def check_float(v, node: str, name: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise fail(node, f"'{name}' must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise fail(node, f"'{name}' must be a finite number, got {v}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise fail(node, f"'{name}' must be in {lo}..{hi}, got {v}")
    return v


def check_choice(v, node: str, name: str, choices) -> str:
    choices = tuple(choices)
    if not isinstance(v, str) or v not in choices:
        raise fail(node, f"'{name}' must be one of {list(choices)}, got {v!r}")
    return v


def check_finite_output(x: torch.Tensor, node: str, what: str) -> torch.Tensor:
    """Never hand NaN downstream silently."""
    if not torch.isfinite(x).all():
        raise fail(node, f"the {what} came out with NaN or infinite values; the inputs or the model "
                         f"weights are broken (try float32 / another VAE)")
    return x
