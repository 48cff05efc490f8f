"""The visual prompt: example pairs and the query laid out as one grid image.

A grid of square cells, two columns ``[before | after]``, one row per example pair and the query
row last. The query's *after* cell is the **target**: the model generates it. ``build`` returns a
:class:`VisualPrompt` holding

- ``grid``        ``[B, Hg, Wg, 3]`` float32 in 0..1, the full grid (the target cell holds the
  ground truth when ``target=`` is given, else the blank value);
- ``hint``        the grid with the target cell blanked (the ControlNet input);
- ``target_mask`` ``[B, Hg, Wg]`` float32, 1 on the target cell, 0 elsewhere;
- ``layout``      a :class:`GridLayout` with the cell boxes, the per-query resize records and
  ``crop()`` / ``crop_latent()`` / ``crop_mask()`` to cut the edit back out. It converts to and from
  a JSON-able dict (``to_dict`` / ``from_dict``) so it can travel between nodes or processes.

Images are ComfyUI-style float tensors ``[B,H,W,C]`` or ``[H,W,C]`` in 0..1; PIL images and numpy
arrays (uint8, uint16, float, bool) are accepted too. Grayscale is repeated to RGB; an alpha channel
is composited on ``background`` (white by default); 16-bit input is scaled by 1/65535.

Every image is fitted into a ``tile x tile`` cell by one of three resize modes:

- ``"fit"``     keep the aspect, scale the longer side to the tile, pad the rest (``pad_value``);
                the padding is recorded so ``crop`` returns the edit at the query's own aspect;
- ``"crop"``    keep the aspect, take the centred square of side ``min(H, W)`` and scale it;
- ``"stretch"`` scale both sides to the tile, ignoring the aspect.

``crop(image, original_size=True)`` also undoes the scaling: ``fit`` and ``stretch`` give back the
query's original ``H x W``; ``crop`` gives the centred square at its original pixel size (the parts
outside it were never shown to the model).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import control_input

RESIZE_MODES = ("fit", "crop", "stretch")
MAX_EXAMPLES = 4
COLUMNS = control_input.GRID_COLUMNS  # before | after
TILE_MULTIPLE = 8  # whole latent pixels per cell at SD's VAE factor 8 (SD1.5 work uses 256 or 512)

__all__ = [
    "build",
    "VisualPrompt",
    "GridLayout",
    "QueryPlacement",
    "to_image_tensor",
    "RESIZE_MODES",
    "MAX_EXAMPLES",
]


# --------------------------------------------------------------------------------------------------
# Input normalisation
# --------------------------------------------------------------------------------------------------
def _composite_channels(x: torch.Tensor, background: tuple[float, float, float], name: str) -> torch.Tensor:
    """[B,H,W,C] with C in 1..4 -> [B,H,W,3], alpha composited on ``background``."""
    c = x.shape[-1]
    if c == 1:
        return x.expand(*x.shape[:-1], 3).contiguous()
    if c == 3:
        return x
    bg = torch.tensor(background, dtype=x.dtype, device=x.device)
    if c == 2:  # gray + alpha
        rgb, alpha = x[..., :1].expand(*x.shape[:-1], 3), x[..., 1:2]
    elif c == 4:
        rgb, alpha = x[..., :3], x[..., 3:4]
    else:
        raise ValueError(f"{name}: expected 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels "
                         f"in the last dimension, got {c} (shape {tuple(x.shape)})")
    return rgb * alpha + bg * (1.0 - alpha)


def _pil_to_array(img, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.float64) / 65535.0
    if mode == "I":  # 32-bit int mode: PIL's mode for 16-bit grayscale PNGs
        arr = np.asarray(img, dtype=np.float64)
        return arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)
    if mode == "F":
        return np.asarray(img, dtype=np.float64)
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    if mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = mode in ("PA", "La", "RGBa") or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    return np.asarray(img, dtype=np.float64) / 255.0


def to_image_tensor(image: Any, name: str = "image",
                    background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Normalise one image or batch to a float32 ``[B,H,W,3]`` tensor in 0..1.

    Accepts a torch tensor ``[B,H,W,C]``, ``[H,W,C]`` or ``[H,W]`` (float in 0..1, or uint8 /
    uint16 integers), a numpy array of the same layouts (uint8, uint16, bool or float in 0..1), a
    PIL image (any mode; 16-bit modes scaled by 1/65535) or a list of PIL images of one size.
    ``C`` may be 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA); alpha is composited on
    ``background``. ``name`` is used in error messages.
    """
    try:
        from PIL import Image as _PILImage
    except ImportError:  # pragma: no cover - pillow is a dependency
        _PILImage = None
    device = None
    if _PILImage is not None and isinstance(image, _PILImage.Image):
        arr = _pil_to_array(image, name)
        x = torch.from_numpy(arr).to(torch.float32)
    elif isinstance(image, (list, tuple)) and image and _PILImage is not None and all(
            isinstance(i, _PILImage.Image) for i in image):
        parts = [to_image_tensor(i, name, background) for i in image]
        if len({p.shape for p in parts}) != 1:
            raise ValueError(f"{name}: a list of PIL images must share one size, got "
                             f"{[tuple(p.shape[1:3]) for p in parts]}")
        return torch.cat(parts, 0)
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.dtype == np.bool_:
            arr = arr.astype(np.float32)
        elif arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        elif np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32)
        else:
            raise ValueError(f"{name}: numpy images must be uint8, uint16, bool or float in 0..1, "
                             f"got dtype {arr.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(arr))
    elif isinstance(image, torch.Tensor):
        device = image.device
        if image.dtype == torch.uint8:
            x = image.to(torch.float32) / 255.0
        elif image.dtype == getattr(torch, "uint16", None):
            x = image.to(torch.int32).to(torch.float32) / 65535.0
        elif image.dtype == torch.bool:
            x = image.to(torch.float32)
        elif image.is_floating_point():
            x = image.detach().to(torch.float32)
        else:
            raise ValueError(f"{name}: image tensors must be float in 0..1, uint8 or uint16, "
                             f"got dtype {image.dtype}")
    else:
        raise ValueError(f"{name}: expected an image (torch tensor [B,H,W,C], numpy array or PIL "
                         f"image), got {type(image).__name__}")

    if x.ndim == 2:
        x = x[None, :, :, None]
    elif x.ndim == 3:
        x = x[None]
    elif x.ndim != 4:
        raise ValueError(f"{name}: expected [B,H,W,C], [H,W,C] or [H,W], got shape {tuple(x.shape)}")
    if x.shape[-1] not in (1, 2, 3, 4):
        hint = " (channels-first? ComfyUI images are channels-last [B,H,W,C])" if x.shape[1] in (1, 3, 4) else ""
        raise ValueError(f"{name}: expected 1-4 channels in the last dimension, got shape "
                         f"{tuple(x.shape)}{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name}: empty image, shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(f"{name}: float images must lie in 0..1, got values in [{lo:.4g}, {hi:.4g}]"
                         + (" (a 0..255 image? divide by 255)" if hi > 2 else ""))
    x = x.clamp(0.0, 1.0)
    x = _composite_channels(x, background, name)
    if device is not None:
        x = x.to(device)
    return x.contiguous()


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``[B,H,W,C]`` to ``size=(h, w)``: antialiased bicubic, clamped to 0..1."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    y = F.interpolate(x.permute(0, 3, 1, 2), size=size, mode="bicubic", antialias=True,
                      align_corners=False)
    return y.clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()


def _check_tile(tile: Any) -> int:
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise ValueError(f"tile: expected a positive integer multiple of {TILE_MULTIPLE}, got {tile!r}")
    tile = int(tile)
    if tile <= 0 or tile % TILE_MULTIPLE:
        raise ValueError(f"tile: expected a positive multiple of {TILE_MULTIPLE} (whole latent pixels per "
                         f"cell), got {tile}; e.g. 256 or 512 for SD1.5")
    return tile


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------
Box = tuple[int, int, int, int]  # (top, left, height, width) in pixels


@dataclass(frozen=True)
class QueryPlacement:
    """How one query image was put into its ``tile x tile`` cell.

    ``original_size``: the query's ``(H, W)``; ``source_box``: the part of the original that was
    used, ``(top, left, h, w)`` in original pixels (all of it for ``fit``/``stretch``, the centred
    square for ``crop``); ``content_box``: where that part lies inside the cell, ``(top, left, h, w)``
    in cell pixels (smaller than the cell only in ``fit`` mode, the rest is padding).
    """

    original_size: tuple[int, int]
    source_box: Box
    content_box: Box
    tile: int

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): cell pixels per original pixel."""
        return (self.content_box[2] / self.source_box[2], self.content_box[3] / self.source_box[3])

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding inside the cell, in cell pixels."""
        t, l, h, w = self.content_box
        return (t, self.tile - t - h, l, self.tile - l - w)


def _placement(h: int, w: int, tile: int, mode: str) -> QueryPlacement:
    if mode == "fit":
        s = tile / max(h, w)
        ch, cw = max(1, min(tile, round(h * s))), max(1, min(tile, round(w * s)))
        p = QueryPlacement((h, w), (0, 0, h, w), ((tile - ch) // 2, (tile - cw) // 2, ch, cw), tile)
    elif mode == "crop":
        side = min(h, w)
        p = QueryPlacement((h, w), ((h - side) // 2, (w - side) // 2, side, side), (0, 0, tile, tile), tile)
    elif mode == "stretch":
        p = QueryPlacement((h, w), (0, 0, h, w), (0, 0, tile, tile), tile)
    else:
        raise ValueError(f"resize: expected one of {RESIZE_MODES}, got {mode!r}")
    return p


def _place(x: torch.Tensor, tile: int, mode: str, pad_value: float) -> tuple[torch.Tensor, QueryPlacement]:
    """Fit ``[B,H,W,3]`` into ``[B,tile,tile,3]`` by ``mode``; return the cell and its placement."""
    p = _placement(int(x.shape[1]), int(x.shape[2]), tile, mode)
    st, sl, sh, sw = p.source_box
    ct, cl, ch, cw = p.content_box
    content = _resize(x[:, st:st + sh, sl:sl + sw], (ch, cw))
    if (ch, cw) == (tile, tile):
        return content, p
    cell = torch.full((x.shape[0], tile, tile, x.shape[3]), float(pad_value), dtype=x.dtype, device=x.device)
    cell[:, ct:ct + ch, cl:cl + cw] = content
    return cell, p


@dataclass
class GridLayout:
    """Geometry of a visual prompt: cell boxes, resize mode and per-query placements.

    Cells are named ``example{i}_before`` / ``example{i}_after`` (``i`` from 0), ``query`` and
    ``target``; boxes are ``(top, left, height, width)`` in grid pixels.
    """

    tile: int
    num_examples: int
    resize: str
    placements: list[QueryPlacement]
    pad_value: float = 0.5
    blank_value: float = 0.0
    rows: int = field(init=False)
    cols: int = field(init=False, default=COLUMNS)

    def __post_init__(self):
        self.rows = self.num_examples + 1
        self.cols = COLUMNS

    # ---- geometry ----
    @property
    def grid_size(self) -> tuple[int, int]:
        """(Hg, Wg) in pixels."""
        return (self.rows * self.tile, self.cols * self.tile)

    @property
    def batch_size(self) -> int:
        return len(self.placements)

    def cell_box(self, row: int, col: int) -> Box:
        """Box of the cell at ``(row, col)``; the query row is ``rows - 1``."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise ValueError(f"cell ({row}, {col}) is outside the {self.rows}x{self.cols} grid")
        return (row * self.tile, col * self.tile, self.tile, self.tile)

    @property
    def cells(self) -> dict[str, Box]:
        """All cell boxes by name."""
        out = {}
        for i in range(self.num_examples):
            out[f"example{i}_before"] = self.cell_box(i, 0)
            out[f"example{i}_after"] = self.cell_box(i, 1)
        out["query"] = self.cell_box(self.rows - 1, 0)
        out["target"] = self.cell_box(self.rows - 1, 1)
        return out

    @property
    def target_box(self) -> Box:
        return self.cell_box(self.rows - 1, 1)

    @property
    def query_box(self) -> Box:
        return self.cell_box(self.rows - 1, 0)

    def target_mask(self, batch: int | None = None, factor: int = 1, device=None) -> torch.Tensor:
        """``[B, Hg/factor, Wg/factor]`` float mask, 1 on the target cell (``factor=8`` for latents)."""
        factor = self._check_factor(factor)
        b = self.batch_size if batch is None else batch
        hg, wg = self.grid_size
        m = torch.zeros((b, hg // factor, wg // factor), dtype=torch.float32, device=device)
        t, l, h, w = (v // factor for v in self.target_box)
        m[:, t:t + h, l:l + w] = 1.0
        return m

    # ---- cutting out ----
    def _check_factor(self, factor: int) -> int:
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor <= 0 \
                or self.tile % int(factor):
            raise ValueError(f"factor: expected a positive integer dividing the tile ({self.tile}), got {factor!r}")
        return int(factor)

    def _placements_for(self, batch: int) -> list[QueryPlacement]:
        if len(self.placements) == batch:
            return self.placements
        if len(self.placements) == 1:
            return self.placements * batch
        raise ValueError(f"image: batch of {batch} does not match the layout's {len(self.placements)} queries")

    def _check_grid_image(self, image: torch.Tensor, name: str, channels_last: bool, factor: int = 1):
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"{name}: expected a torch tensor, got {type(image).__name__}")
        hg, wg = (s // factor for s in self.grid_size)
        hw = tuple(image.shape[1:3]) if channels_last else tuple(image.shape[-2:])
        if hw != (hg, wg):
            layout = "[B,H,W,C]" if channels_last else "[B,C,H,W]"
            raise ValueError(f"{name}: expected a grid of {hg}x{wg} ({layout}), got shape {tuple(image.shape)}")

    def cell(self, image: torch.Tensor, name: str = "target") -> torch.Tensor:
        """The whole cell ``name`` of a ``[B,Hg,Wg,C]`` grid image, ``[B,tile,tile,C]``."""
        if image.ndim == 3:
            image = image[None]
        self._check_grid_image(image, "image", True)
        if name not in self.cells:
            raise ValueError(f"name: expected one of {list(self.cells)}, got {name!r}")
        t, l, h, w = self.cells[name]
        return image[:, t:t + h, l:l + w]

    def crop_each(self, image: torch.Tensor, original_size: bool = False, cell: str = "target") -> list[torch.Tensor]:
        """Like :meth:`crop` but returns a list of ``[1,h,w,C]``, one per query (sizes may differ)."""
        if isinstance(image, torch.Tensor) and image.ndim == 3:
            image = image[None]
        cells = self.cell(image, cell)
        out = []
        for i, p in enumerate(self._placements_for(cells.shape[0])):
            t, l, h, w = p.content_box
            c = cells[i:i + 1, t:t + h, l:l + w]
            if original_size:
                c = _resize(c, p.source_box[2:]) if c.is_floating_point() else c
            out.append(c)
        return out

    def crop(self, image: torch.Tensor, original_size: bool = False, cell: str = "target") -> torch.Tensor:
        """Cut the edit out of a ``[B,Hg,Wg,C]`` (or ``[Hg,Wg,C]``) grid image.

        Returns ``[B,h,w,C]``: the target cell without its ``fit`` padding, i.e. at the query's own
        aspect ratio. With ``original_size=True`` it is also resized back to the query's original
        pixel size (the centred square's size in ``crop`` mode). ``cell="query"`` cuts the query
        cell the same way. When the queries had different sizes use :meth:`crop_each`.
        """
        parts = self.crop_each(image, original_size, cell)
        if len({tuple(p.shape) for p in parts}) != 1:
            raise ValueError("crop: the queries had different sizes, so their crops differ in size; "
                             "use layout.crop_each() for a list")
        return torch.cat(parts, 0)

    def crop_latent(self, latent: torch.Tensor, factor: int = 8, cell: str = "target") -> torch.Tensor:
        """The whole cell ``cell`` of a channels-first ``[B,C,Hg/factor,Wg/factor]`` tensor (a latent).

        The whole cell is returned (padding included) because ``fit`` padding need not fall on the
        latent grid; combine with :meth:`content_mask` ``(factor=...)`` to weight the content only.
        """
        factor = self._check_factor(factor)
        if latent.ndim == 3:
            latent = latent[None]
        self._check_grid_image(latent, "latent", False, factor)
        if cell not in self.cells:
            raise ValueError(f"cell: expected one of {list(self.cells)}, got {cell!r}")
        t, l, h, w = (v // factor for v in self.cells[cell])
        return latent[..., t:t + h, l:l + w]

    def crop_mask(self, mask: torch.Tensor, factor: int = 1, cell: str = "target") -> torch.Tensor:
        """The whole cell ``cell`` of a ``[B,Hg/factor,Wg/factor]`` mask, ``[B,tile/f,tile/f]``."""
        if mask.ndim == 2:
            mask = mask[None]
        return self.crop_latent(mask[:, None], factor=factor, cell=cell)[:, 0]

    def content_mask(self, factor: int = 1, device=None) -> torch.Tensor:
        """``[B, tile/factor, tile/factor]`` float mask of each query's content inside its cell
        (0 on ``fit`` padding); fractional at the borders when the padding is not on the factor grid."""
        factor = self._check_factor(factor)
        masks = []
        for p in self.placements:
            m = torch.zeros((1, 1, self.tile, self.tile), dtype=torch.float32, device=device)
            t, l, h, w = p.content_box
            m[..., t:t + h, l:l + w] = 1.0
            masks.append(F.avg_pool2d(m, factor) if factor > 1 else m)
        return torch.cat(masks, 0)[:, 0]

    # ---- serialisation ----
    def to_dict(self) -> dict:
        """A JSON-able dict; :meth:`from_dict` rebuilds the layout."""
        return {
            "version": 1,
            "tile": self.tile,
            "num_examples": self.num_examples,
            "rows": self.rows,
            "cols": self.cols,
            "resize": self.resize,
            "pad_value": float(self.pad_value),
            "blank_value": float(self.blank_value),
            "cells": {k: list(v) for k, v in self.cells.items()},
            "placements": [
                {"original_size": list(p.original_size), "source_box": list(p.source_box),
                 "content_box": list(p.content_box), "scale": list(p.scale), "padding": list(p.padding)}
                for p in self.placements
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> GridLayout:
        """Rebuild a layout from :meth:`to_dict`'s output (e.g. after ``json.loads``)."""
        try:
            tile = _check_tile(d["tile"])
            placements = []
            for p in d["placements"]:
                placements.append(QueryPlacement(tuple(int(v) for v in p["original_size"]),
                                                 tuple(int(v) for v in p["source_box"]),
                                                 tuple(int(v) for v in p["content_box"]), tile))
            return cls(tile=tile, num_examples=int(d["num_examples"]), resize=str(d["resize"]),
                       placements=placements, pad_value=float(d.get("pad_value", 0.5)),
                       blank_value=float(d.get("blank_value", 0.0)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"layout dict: missing or malformed field ({e})") from None


@dataclass
class VisualPrompt:
    """A built visual prompt; see the module docstring."""

    grid: torch.Tensor         # [B,Hg,Wg,3] float32 0..1
    hint: torch.Tensor         # [B,Hg,Wg,3] grid with the target cell blanked
    target_mask: torch.Tensor  # [B,Hg,Wg] 1 on the target cell
    layout: GridLayout

    @property
    def batch_size(self) -> int:
        return int(self.grid.shape[0])

    def control_image(self, target_channel: bool = False, fill: str = "blank") -> torch.Tensor:
        """The ControlNet input channels-first, ``[B,3 or 4,Hg,Wg]`` in 0..1 (built by
        :func:`gie_core.control_input.build`; ``target_channel`` adds the target mask as a 4th
        channel, ``fill`` puts the query into the target cell)."""
        return control_input.build(self.hint.permute(0, 3, 1, 2).contiguous(), self.target_mask,
                                   target_channel=target_channel, fill=fill)

    def control_image_for(self, controlnet) -> torch.Tensor:
        """:meth:`control_image` as ``controlnet``'s config asks (:func:`control_input.spec_for`)."""
        spec = control_input.spec_for(controlnet)
        return self.control_image(spec.target_channel, spec.fill)

    def to(self, *args, **kwargs) -> VisualPrompt:
        """Move the tensors (like ``torch.Tensor.to``); the layout is shared."""
        return VisualPrompt(self.grid.to(*args, **kwargs), self.hint.to(*args, **kwargs),
                            self.target_mask.to(*args, **kwargs), self.layout)


# --------------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------------
def _as_pairs(examples: Any) -> list[tuple[Any, Any]]:
    if isinstance(examples, (torch.Tensor, np.ndarray)) or not isinstance(examples, Sequence) \
            or isinstance(examples, (str, bytes)):
        raise ValueError("examples: expected a sequence of (before, after) image pairs, e.g. "
                         "[(before, after)]")
    pairs = list(examples)
    if not 1 <= len(pairs) <= MAX_EXAMPLES:
        raise ValueError(f"examples: expected 1 to {MAX_EXAMPLES} (before, after) pairs, got {len(pairs)}")
    for i, p in enumerate(pairs):
        if isinstance(p, dict) and {"before", "after"} <= set(p):
            pairs[i] = (p["before"], p["after"])
        elif isinstance(p, (list, tuple)) and len(p) == 2:
            pairs[i] = (p[0], p[1])
        else:
            raise ValueError(f"examples[{i}]: expected a (before, after) pair, got {type(p).__name__}"
                             + (f" of length {len(p)}" if isinstance(p, (list, tuple)) else ""))
    return pairs


def _broadcast(x: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    raise ValueError(f"{name}: batch of {x.shape[0]} does not match the {batch} queries "
                     f"(use a batch of 1 to share it, or one per query)")


def build(examples: Sequence, query: Any, tile: int = 256, resize: str = "fit", *,
          target: Any = None, pad_value: float = 0.5, blank_value: float = 0.0,
          background: tuple[float, float, float] = (1.0, 1.0, 1.0), device=None) -> VisualPrompt:
    """Lay example pairs and queries out as a visual prompt grid.

    Args:
        examples: 1 to 4 ``(before, after)`` pairs (tuples, lists or ``{"before", "after"}`` dicts).
            Each image has batch 1 (shared by every query) or one per query.
        query: the image(s) to edit, ``[B,H,W,C]`` (or any accepted image form), or a list of
            images of possibly different sizes (one query each) -> a batch of ``B`` grids.
        tile: cell side in pixels, a positive multiple of 64 (256 -> 512x512 grid for one pair).
        resize: ``"fit"`` (pad, default), ``"crop"`` (centred square) or ``"stretch"``.
        target: optional ground-truth *after* image(s) of the query (training): the grid then holds
            it in the target cell, while ``hint`` still blanks that cell.
        pad_value: gray level of ``fit`` padding (0..1).
        blank_value: gray level of the blanked target cell in ``hint`` (and ``grid`` without target).
        background: RGB in 0..1 that alpha channels are composited on.
        device: where the output tensors live (default: the query tensor's device, else CPU).
    """
    tile = _check_tile(tile)
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize: expected one of {RESIZE_MODES}, got {resize!r}")
    for nm, v in (("pad_value", pad_value), ("blank_value", blank_value)):
        if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{nm}: expected a number in 0..1, got {v!r}")
    if len(background) != 3 or not all(0.0 <= float(c) <= 1.0 for c in background):
        raise ValueError(f"background: expected an RGB triple in 0..1, got {background!r}")
    background = tuple(float(c) for c in background)
    pairs = _as_pairs(examples)

    # Queries: one tensor batch, or a list of single images of any sizes.
    if isinstance(query, (list, tuple)):
        if not query:
            raise ValueError("query: expected at least one image")
        qs = [to_image_tensor(q, f"query[{i}]", background) for i, q in enumerate(query)]
    else:
        qs = [to_image_tensor(query, "query", background)]
    if device is None:
        device = qs[0].device
    qs = [q.to(device) for q in qs]
    q_cells, placements = [], []
    for q in qs:
        cell, p = _place(q, tile, resize, pad_value)
        q_cells.append(cell)
        placements.extend([p] * q.shape[0])
    query_cells = torch.cat(q_cells, 0)
    batch = query_cells.shape[0]

    layout = GridLayout(tile=tile, num_examples=len(pairs), resize=resize, placements=placements,
                        pad_value=float(pad_value), blank_value=float(blank_value))
    hg, wg = layout.grid_size
    grid = torch.empty((batch, hg, wg, 3), dtype=torch.float32, device=device)

    def put(box: Box, cells: torch.Tensor):
        t, l, h, w = box
        grid[:, t:t + h, l:l + w] = cells

    for i, (before, after) in enumerate(pairs):
        for col, (img, side) in enumerate(((before, "before"), (after, "after"))):
            x = to_image_tensor(img, f"examples[{i}].{side}", background).to(device)
            x = _broadcast(x, batch, f"examples[{i}].{side}")
            put(layout.cell_box(i, col), _place(x, tile, resize, pad_value)[0])
    put(layout.query_box, query_cells)

    if target is not None:
        if isinstance(target, (list, tuple)):
            if len(target) != len(qs):
                raise ValueError(f"target: expected one image per query ({len(qs)}), got {len(target)}")
            ts = [to_image_tensor(t, f"target[{i}]", background).to(device) for i, t in enumerate(target)]
        else:
            ts = [to_image_tensor(target, "target", background).to(device)]
        t_cells = torch.cat([_place(t, tile, resize, pad_value)[0] for t in ts], 0)
        put(layout.target_box, _broadcast(t_cells, batch, "target"))
    else:
        put(layout.target_box, torch.full((batch, tile, tile, 3), float(blank_value), device=device))

    target_mask = layout.target_mask(batch, device=device)
    hint = grid.clone()
    t, l, h, w = layout.target_box
    hint[:, t:t + h, l:l + w] = float(blank_value)
    return VisualPrompt(grid=grid, hint=hint, target_mask=target_mask, layout=layout)
