"""Image input normalisation for the region detectors: everything becomes a list of uint8 RGB arrays."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_CHANNELS = (1, 2, 3, 4)  # gray, gray+alpha, RGB, RGBA


def _array_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """One image array [H,W] or [H,W,C] of any supported dtype -> uint8 RGB [H,W,3]."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in _CHANNELS:
        raise ValueError(f"{name}: expected an image [H,W], [H,W,C] or a batch [B,H,W,C] with C in "
                         f"{_CHANNELS}, got shape {tuple(arr.shape)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: image has an empty side, shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        out = (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        f = arr.astype(np.float32, copy=False)
        if not np.isfinite(f).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        lo, hi = float(f.min()), float(f.max())
        if lo < -0.01 or hi > 1.01:  # small overshoot from resampling is tolerated and clipped
            raise ValueError(f"{name}: float images must hold values in 0..1 (ComfyUI IMAGE convention), "
                             f"got range {lo:.3g}..{hi:.3g}; divide 0..255 data by 255")
        out = (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"{name}: unsupported dtype {arr.dtype}; expected uint8, uint16, bool or float")
    c = out.shape[2]
    if c in (1, 2):  # gray (+alpha): the alpha channel is dropped, detectors see the colour only
        out = np.repeat(out[:, :, :1], 3, axis=2)
    elif c == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def _pil_to_uint8(img: Any) -> np.ndarray:
    if img.mode in ("RGB", "L"):
        arr = np.asarray(img)
    elif img.mode in ("I;16", "I;16B", "I;16L"):
        arr = np.asarray(img).astype(np.uint16)
    elif img.mode == "I":
        arr = np.asarray(img).astype(np.int64)
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    elif img.mode == "F":
        arr = np.asarray(img, np.float32)
    else:  # P, RGBA, LA, CMYK, YCbCr, 1: let PIL do the colour conversion
        arr = np.asarray(img.convert("RGB"))
    return arr


def load_image_file(path: str | Path) -> np.ndarray:
    """Reads an image file as uint8 RGB [H,W,3]; ValueError naming the file if it cannot be read."""
    from PIL import Image, ImageOps

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"image file {str(p)!r} does not exist")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            return _array_to_uint8(_pil_to_uint8(im), f"image file {str(p)!r}")
    except ValueError:
        raise
    except Exception as e:  # PIL raises several types for broken files
        raise ValueError(f"image file {str(p)!r} could not be read as an image: {e}") from e


def to_uint8_list(images: Any, name: str = "images") -> tuple[list[np.ndarray], Any]:
    """Normalises ``images`` to a list of uint8 RGB [H,W,3] arrays.

    Accepts ComfyUI IMAGE tensors [B,H,W,C] / [H,W,C] (float 0..1), numpy arrays of the same layouts
    (uint8, uint16, bool or float 0..1), 2-D grayscale arrays, PIL images, file paths, or a list/tuple
    of any of these. Channels: 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA); alpha is ignored.
    Returns the list and the torch device of a tensor input (None otherwise)."""
    device = None
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"{name}: empty list, expected at least one image")
        out: list[np.ndarray] = []
        for i, item in enumerate(images):
            if isinstance(item, (list, tuple)):
                raise ValueError(f"{name}[{i}]: nested lists are not supported")
            sub, dev = to_uint8_list(item, f"{name}[{i}]")
            device = device if device is not None else dev
            out.extend(sub)
        return out, device
    if isinstance(images, (str, Path)):
        return [load_image_file(images)], None
    try:
        import PIL.Image

        if isinstance(images, PIL.Image.Image):
            return [_array_to_uint8(_pil_to_uint8(images), name)], None
    except ImportError:  # pragma: no cover - pillow is a dependency
        pass
    try:
        import torch

        if isinstance(images, torch.Tensor):
            device = images.device
            t = images.detach()
            if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
                t = t.float()
            images = t.cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{name}: expected a ComfyUI IMAGE tensor [B,H,W,C], a numpy array, a PIL image, "
                         f"a file path or a list of these, got {type(images).__name__}")
    arr = images
    if arr.ndim == 4:
        if arr.shape[0] == 0:
            raise ValueError(f"{name}: empty batch, shape {tuple(arr.shape)}")
        return [_array_to_uint8(a, f"{name}[{i}]") for i, a in enumerate(arr)], device
    if arr.ndim == 3 and arr.shape[2] not in _CHANNELS:
        raise ValueError(f"{name}: a 3-D input must be one image [H,W,C] with C in {_CHANNELS}, got shape "
                         f"{tuple(arr.shape)}; a batch must be [B,H,W,C] (add a channel axis to gray batches)")
    if arr.ndim in (2, 3):
        return [_array_to_uint8(arr, name)], device
    raise ValueError(f"{name}: expected [B,H,W,C], [H,W,C] or [H,W], got shape {tuple(arr.shape)}")
