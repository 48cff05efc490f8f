"""Per-file mask cache for training: one compressed .npz per (file, mtime, size, options)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .api import detect_regions
from .inputs import load_image_file, to_uint8_list

CACHE_VERSION = 1


class MaskCache:
    """Caches ``region_mask`` results per image file under ``directory``.

    The key hashes the file's absolute path, modification time and size, the image size the mask was
    computed at, every option, and the model folder (path and config mtime), so an edited image or
    a changed option never returns a stale mask. Entries are written atomically (safe with several
    data-loader workers or processes sharing the directory).

    ``cache.get(path)`` reads the image itself; ``cache.get(path, image)`` uses the already decoded
    image (which may be resized: its size is part of the key). Returns a [H,W] float32 tensor."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def key(self, path: str | os.PathLike, image_size: tuple[int, int] | None, **options) -> str:
        p = Path(path).expanduser().resolve()
        try:
            st = p.stat()
        except OSError as e:
            raise ValueError(f"path: cannot stat image file {str(p)!r}: {e}") from e
        opts = dict(options)
        model = opts.get("model")
        if model is not None and isinstance(model, (str, os.PathLike)):
            m = Path(model).expanduser().resolve()
            cfg = m / "config.json"
            opts["model"] = [str(m), cfg.stat().st_mtime_ns if cfg.is_file() else None]
        elif model is not None:  # a loaded detector: identify it by its class and folder
            opts["model"] = [type(model).__name__, str(getattr(model, "folder", ""))]
        blob = json.dumps({"v": CACHE_VERSION, "path": str(p), "mtime": st.st_mtime_ns, "size": st.st_size,
                           "image_size": list(image_size) if image_size else None, "options": opts},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:40]

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npz"

    def get_with_info(self, path, image=None, *, region: str = "face", backend: str = "auto", dilate: int = 0,
                      feather: float = 0, min_area: int = 0, model=None, **options) -> tuple[torch.Tensor, bool]:
        """(mask [H,W] float32, found) for one image file, computed once and then read from disk."""
        if image is None:
            arr = load_image_file(path)
        else:
            arrs, _ = to_uint8_list(image, "image")
            if len(arrs) != 1:
                raise ValueError(f"image: expected one image for {str(path)!r}, got a batch of {len(arrs)}")
            arr = arrs[0]
        opts = dict(region=region, backend=backend, dilate=dilate, feather=feather, min_area=min_area,
                    model=model, **options)
        key = self.key(path, arr.shape[:2], **opts)
        f = self._file(key)
        if f.is_file():
            try:
                with np.load(f, allow_pickle=False) as z:
                    mask = z["mask"].astype(np.float32) / (255.0 if z["mask"].dtype == np.uint8 else 1.0)
                    found = bool(z["found"])
                if mask.shape == arr.shape[:2]:
                    self.hits += 1
                    return torch.from_numpy(mask), found
            except (OSError, ValueError, KeyError, EOFError):  # a broken entry is recomputed
                pass
        self.misses += 1
        res = detect_regions(arr, region, backend, dilate, feather, min_area=min_area, model=model, **options)
        mask = res.masks[0].cpu().numpy()
        binary = np.isin(mask, (0.0, 1.0)).all()
        stored = mask.astype(np.uint8) * 255 if binary else mask.astype(np.float16)
        f.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=f.parent, suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, mask=stored, found=np.array(res.found[0]))
            os.replace(tmp, f)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return torch.from_numpy(mask), res.found[0]

    def get(self, path, image=None, **kwargs) -> torch.Tensor:
        """Mask [H,W] float32 for one image file; keyword arguments as in ``region_mask``."""
        return self.get_with_info(path, image, **kwargs)[0]

    def clear(self) -> int:
        """Deletes every cached mask; returns how many files were removed."""
        n = 0
        for f in self.directory.glob("*/*.npz"):
            f.unlink(missing_ok=True)
            n += 1
        return n
