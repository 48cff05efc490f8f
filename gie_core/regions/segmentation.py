"""Learned region backends loaded from local transformers folders (never from a hub):
Mask2Former (universal segmentation: person, car, ... — the paper's detector) and a face-parsing
SegFormer (pixel-accurate skin, hair, eyes, lips, ...)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .spec import resolve_labels

log = logging.getLogger(__name__)

MODEL_TYPES = {"mask2former": "mask2former", "segformer": "face_parsing"}


def read_model_type(folder: str | Path) -> str:
    """``model_type`` from a transformers folder's config.json; ValueError naming the folder if absent."""
    p = Path(folder)
    cfg = p / "config.json"
    if not p.is_dir():
        raise ValueError(f"model: {str(p)!r} is not a folder (expected a local transformers model folder "
                         "with config.json, model.safetensors and preprocessor_config.json)")
    if not cfg.is_file():
        raise ValueError(f"model: {str(p)!r} has no config.json")
    try:
        return str(json.loads(cfg.read_text()).get("model_type", ""))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"model: {str(cfg)!r} is not valid JSON: {e}") from e


def backend_for_folder(folder: str | Path) -> str:
    """'mask2former' or 'face_parsing' for a model folder, from its config's model_type."""
    mt = read_model_type(folder)
    if mt not in MODEL_TYPES:
        raise ValueError(f"model: {str(folder)!r} holds a {mt or 'unknown'!r} model; region masks support "
                         f"{', '.join(sorted(MODEL_TYPES))} folders")
    return MODEL_TYPES[mt]


def _processor(kind: str, folder: Path):
    """The PIL-based image processor (transformers 5 wants torchvision for the default one)."""
    import transformers

    names = {"mask2former": ("Mask2FormerImageProcessorPil", "Mask2FormerImageProcessor"),
             "segformer": ("SegformerImageProcessorPil", "SegformerImageProcessor")}[kind]
    if not (folder / "preprocessor_config.json").is_file():
        raise ValueError(f"model: {str(folder)!r} has no preprocessor_config.json (save the image processor "
                         "next to the model: processor.save_pretrained(folder))")
    for n in names:
        cls = getattr(transformers, n, None)
        if cls is not None:
            return cls.from_pretrained(str(folder), local_files_only=True)
    raise RuntimeError(f"transformers {transformers.__version__} has no {names[-1]}")


def _pick_device(device):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _SegmentationDetector:
    """Shared part: local loading, label resolution, batched semantic segmentation."""

    name = ""
    _model_type = ""

    def __init__(self, model: str | Path, device=None, batch_size: int = 4, dtype=None):
        import torch

        folder = Path(model)
        mt = read_model_type(folder)
        if mt != self._model_type:
            raise ValueError(f"model: {str(folder)!r} holds a {mt!r} model, backend {self.name!r} needs a "
                             f"{self._model_type!r} folder")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.folder, self.batch_size = folder, int(batch_size)
        self.device = _pick_device(device)
        self.processor = _processor(self._model_type, folder)
        self.model = self._load_model(folder).to(self.device, dtype or torch.float32).eval()
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}

    @property
    def labels(self) -> list[str]:
        return [self.id2label[k] for k in sorted(self.id2label)]

    def check_region(self, parts: list[str]) -> set[int]:
        return resolve_labels(parts, self.id2label, f"the {self.name} model at {str(self.folder)!r}")

    def _forward(self, pixel_values):
        return self.model(pixel_values=pixel_values)

    def label_maps(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per-pixel label id maps [H,W] at each image's own size."""
        import torch

        maps: list[np.ndarray] = []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i:i + self.batch_size]
            inputs = self.processor(images=chunk, return_tensors="pt")
            pv = inputs["pixel_values"].to(self.device, next(self.model.parameters()).dtype)
            with torch.inference_mode():
                out = self._forward(pv)
            out = self._to_float(out)
            seg = self.processor.post_process_semantic_segmentation(out, target_sizes=[im.shape[:2] for im in chunk])
            maps.extend(s.cpu().numpy() for s in seg)
        return maps

    @staticmethod
    def _to_float(out):
        for k, v in list(out.items()):
            if hasattr(v, "dtype") and v.is_floating_point():
                out[k] = v.float()
        return out

    def detect(self, images: list[np.ndarray], parts: list[str]) -> tuple[list[np.ndarray], None]:
        ids = np.array(sorted(self.check_region(parts)))
        return [np.isin(m, ids) for m in self.label_maps(images)], None


class Mask2FormerDetector(_SegmentationDetector):
    """transformers ``Mask2FormerForUniversalSegmentation`` from a local folder; semantic inference
    (the processor's ``post_process_semantic_segmentation``); any label in ``config.id2label``."""

    name = "mask2former"
    _model_type = "mask2former"

    def _load_model(self, folder: Path):
        from transformers import Mask2FormerForUniversalSegmentation

        return Mask2FormerForUniversalSegmentation.from_pretrained(str(folder), local_files_only=True)

    def _forward(self, pixel_values):
        # output_hidden_states=True: transformers 5.x iterates the decoder's intermediate states
        # unconditionally and fails on configs with use_auxiliary_loss=False otherwise.
        return self.model(pixel_values=pixel_values, output_hidden_states=True)


def face_crop_box(box, shape, context: float) -> tuple[int, int, int, int]:
    """Square crop (x0, y0, x1, y1) around a face box, ``context`` times its side, clipped to the image."""
    x, y, w, h = box
    cx, cy = x + 0.5 * w, y + 0.55 * h  # cascade boxes sit a little high on the face
    half = 0.5 * context * max(w, h)
    H, W = shape[:2]
    x0, y0 = max(0, int(round(cx - half))), max(0, int(round(cy - half)))
    x1, y1 = min(W, int(round(cx + half))), min(H, int(round(cy + half)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


class FaceParsingDetector(_SegmentationDetector):
    """transformers ``SegformerForSemanticSegmentation`` face parser from a local folder (CelebAMask-HQ
    style labels: skin, nose, l_eye, ..., hair, neck); 'face' = skin + eyes/brows/nose/mouth/lips.

    Face parsers are trained on face-centred crops (CelebAMask-HQ), so by default (``face_crops=True``)
    faces are first found with the Haar cascade, each is parsed in a square crop of ``crop_context``
    times its box side, and the crop's masks are pasted back; an image where the cascade finds no face
    is parsed whole (a close-up the cascade missed still gets a mask). ``face_crops=False`` always
    parses whole images."""

    name = "face_parsing"
    _model_type = "segformer"

    def __init__(self, model, device=None, batch_size: int = 4, dtype=None, face_crops: bool = True,
                 crop_context: float = 2.2):
        if crop_context < 1.0:
            raise ValueError(f"crop_context: expected >= 1 (times the face box side), got {crop_context}")
        super().__init__(model, device=device, batch_size=batch_size, dtype=dtype)
        self.face_crops, self.crop_context = bool(face_crops), float(crop_context)

    def _load_model(self, folder: Path):
        from transformers import SegformerForSemanticSegmentation

        return SegformerForSemanticSegmentation.from_pretrained(str(folder), local_files_only=True)

    def detect(self, images: list[np.ndarray], parts: list[str]) -> tuple[list[np.ndarray], list | None]:
        ids = np.array(sorted(self.check_region(parts)))
        if not self.face_crops:
            return [np.isin(m, ids) for m in self.label_maps(images)], None
        from .api import load_detector

        faces = load_detector("haar")
        boxes = [faces.boxes(img) for img in images]
        crops, where = [], []  # where: (image index, crop box or None for the whole image)
        for i, (img, bxs) in enumerate(zip(images, boxes)):
            if not bxs:
                crops.append(img)
                where.append((i, None))
            for b in bxs:
                x0, y0, x1, y1 = face_crop_box(b, img.shape, self.crop_context)
                crops.append(img[y0:y1, x0:x1])
                where.append((i, (x0, y0, x1, y1)))
        masks = [np.zeros(img.shape[:2], bool) for img in images]
        for (i, box), label_map in zip(where, self.label_maps(crops)):
            hit = np.isin(label_map, ids)
            if box is None:
                masks[i] = hit
            else:
                x0, y0, x1, y1 = box
                masks[i][y0:y1, x0:x1] |= hit
        return masks, boxes
