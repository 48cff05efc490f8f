"""``region_mask`` / ``detect_regions``: one entry point over the region backends."""
from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .inputs import to_uint8_list
from .postprocess import finish
from .spec import parse_region, unknown_parts

BACKENDS = ("haar", "mask2former", "face_parsing")
_BACKEND_ALIASES = {"auto": "auto", "haar": "haar", "opencv": "haar", "cascade": "haar",
                    "mask2former": "mask2former", "face_parsing": "face_parsing", "faceparsing": "face_parsing",
                    "face-parsing": "face_parsing", "segformer": "face_parsing"}


@dataclass
class RegionResult:
    """Masks plus what was found. ``masks``: [B,H,W] float32 in 0..1; ``found[i]``: whether image i
    had any region (after ``min_area``); ``boxes``: face boxes (x, y, w, h) per image for the Haar
    backend, else None."""

    masks: torch.Tensor
    found: list[bool]
    backend: str
    region: str
    boxes: list[list[tuple[float, float, float, float]]] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"RegionResult(masks={tuple(self.masks.shape)}, found={self.found}, num_empty={self.num_empty}, "
                f"backend={self.backend!r}, region={self.region!r})")

    @property
    def num_empty(self) -> int:
        """How many images had no region (their masks are all zero)."""
        return sum(1 for f in self.found if not f)


_detectors: dict[tuple, Any] = {}
_lock = threading.Lock()


def _normalise_backend(backend: str) -> str:
    key = str(backend).strip().lower()
    if key not in _BACKEND_ALIASES:
        raise ValueError(f"backend: expected one of auto, {', '.join(BACKENDS)}, got {backend!r}")
    return _BACKEND_ALIASES[key]


def load_detector(backend: str = "auto", model: str | Path | Any = None, region: str = "face", **options):
    """The detector object for ``backend`` (cached per backend, model folder and options).

    ``model``: a local folder (Mask2Former or face-parsing SegFormer; its config.json decides the
    backend under "auto") or an already loaded detector, returned as is. Without a model, "auto"
    means the offline Haar face detector, which handles ``region="face"`` only.
    ``options`` go to the detector: Haar: detect_size, scale_factor, min_neighbors, min_face, profile;
    learned backends: device, batch_size, dtype; face_parsing also face_crops (parse square crops around
    Haar-found faces, default True) and crop_context (crop side / face box side, default 2.2)."""
    if model is not None and hasattr(model, "detect") and hasattr(model, "check_region"):
        return model
    backend = _normalise_backend(backend)
    if backend == "auto":
        if model is not None:
            from .segmentation import backend_for_folder

            backend = backend_for_folder(model)
        elif all(p in ("face", "faces") for p in parse_region(region)):
            backend = "haar"
        elif unknown_parts(parse_region(region)):
            bad = unknown_parts(parse_region(region))
            raise ValueError(f"region {'+'.join(bad)!r} is unknown: expected face, hair, skin, eyes, brows, lips, "
                             "ears, person or another face-parsing label, a combination like 'face+hair', or "
                             "'label:<name>' for a label of your Mask2Former model (with model=<folder>)")
        else:
            raise ValueError(f"region {region!r} needs a model folder: pass model=<path> to a Mask2Former folder "
                             "(person, label:<name>) or a face-parsing SegFormer folder (hair, skin, eyes, ...); "
                             "without one only region='face' works (offline Haar cascade)")
    if backend == "haar" and model is not None:
        raise ValueError("model: the 'haar' backend uses OpenCV's bundled cascades and takes no model folder")
    if backend != "haar" and model is None:
        raise ValueError(f"model: backend {backend!r} needs model=<local folder> (no weights are downloaded)")
    folder = None if model is None else Path(model).expanduser().resolve()
    stamp = None
    if folder is not None and (folder / "config.json").is_file():
        stamp = (folder / "config.json").stat().st_mtime_ns
    key = (backend, str(folder), stamp, tuple(sorted((k, str(v)) for k, v in options.items())))
    with _lock:
        det = _detectors.get(key)
        if det is None:
            if backend == "haar":
                from .haar import HaarFaceDetector as cls
            elif backend == "mask2former":
                from .segmentation import Mask2FormerDetector as cls
            else:
                from .segmentation import FaceParsingDetector as cls
            args = () if backend == "haar" else (folder,)
            try:
                inspect.signature(cls).bind(*args, **options)
            except TypeError as e:
                raise ValueError(f"options {sorted(options)}: not all apply to the {backend!r} backend ({e}); see "
                                 "gie_core.regions.load_detector for each backend's options") from None
            det = cls(*args, **options)
            if len(_detectors) >= 4:  # bound memory: learned detectors hold whole models
                _detectors.pop(next(iter(_detectors)))
            _detectors[key] = det
    return det


def _check_options(dilate, feather, min_area) -> None:
    for name, v in (("dilate", dilate), ("feather", feather), ("min_area", min_area)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise ValueError(f"{name}: expected a number of pixels, got {v!r}")
    if feather < 0:
        raise ValueError(f"feather: expected >= 0 pixels, got {feather}")
    if min_area < 0:
        raise ValueError(f"min_area: expected >= 0 pixels, got {min_area}")


def detect_regions(images, region: str = "face", backend: str = "auto", dilate: int = 0, feather: float = 0,
                   *, min_area: int = 0, model=None, **options) -> RegionResult:
    """Like :func:`region_mask` but returns a :class:`RegionResult` (masks, found flags, num_empty)."""
    _check_options(dilate, feather, min_area)
    parts = parse_region(region)
    arrays, device = to_uint8_list(images, "images")
    h, w = arrays[0].shape[:2]
    for i, a in enumerate(arrays):
        if a.shape[:2] != (h, w):
            raise ValueError(f"images: all images must share one size for a [B,H,W] mask, image 0 is {h}x{w} "
                             f"and image {i} is {a.shape[0]}x{a.shape[1]}; call once per size")
    det = load_detector(backend, model, region=region, **options)
    raw, boxes = det.detect(arrays, parts)
    masks, found = [], []
    for m in raw:
        soft, f = finish(m, min_area=int(min_area), dilate=int(round(dilate)), feather=float(feather))
        masks.append(soft)
        found.append(f)
    out = torch.from_numpy(np.stack(masks)).to(torch.float32)
    if device is not None and device.type != "cpu":
        out = out.to(device)
    return RegionResult(out, found, det.name, "+".join(parts), boxes)


def region_mask(images, region: str = "face", backend: str = "auto", dilate: int = 0, feather: float = 0,
                *, min_area: int = 0, model=None, return_info: bool = False, **options):
    """Masks of detail-critical regions (faces first) as a ComfyUI MASK ``[B,H,W]`` float32 in 0..1.

    Args:
        images: ComfyUI IMAGE ``[B,H,W,C]`` / ``[H,W,C]`` floats in 0..1, numpy (uint8 or float 0..1,
            gray/RGB/RGBA), PIL images, file paths, or a list of these (one size).
        region: ``"face"``, ``"hair"``, ``"skin"``, ``"person"``, ``"label:<model label>"``, or a
            combination ``"face+hair"``. Which names work depends on the backend's labels.
        backend: ``"auto"`` (Haar for faces without a model; else from the model folder), ``"haar"``,
            ``"mask2former"``, ``"face_parsing"``.
        dilate: grow (positive) or shrink (negative) regions by this many pixels.
        feather: width in pixels of a linear soft edge centred on the region boundary.
        min_area: drop connected regions smaller than this many pixels (before dilation).
        model: local model folder for the learned backends, or a detector from :func:`load_detector`.
        return_info: also return the :class:`RegionResult` (found flags, ``num_empty``, boxes).
        **options: detector options, see :func:`load_detector`.

    Images where nothing is found get an all-zero mask (never an error). The result is on the
    input tensor's device (CPU otherwise)."""
    res = detect_regions(images, region, backend, dilate, feather, min_area=min_area, model=model, **options)
    return (res.masks, res) if return_info else res.masks
