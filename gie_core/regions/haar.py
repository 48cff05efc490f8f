"""Offline face detector: OpenCV's Haar cascades (shipped inside opencv-python), boxes -> ellipses."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

# Measured on scikit-image's photographs: the "default" frontal cascade fires on coins, the moon and
# retina scans; "alt2" found the astronaut's face and nothing on 15 faceless images.
FRONTAL_CASCADE = "haarcascade_frontalface_alt2.xml"
PROFILE_CASCADE = "haarcascade_profileface.xml"


def _cascade_dir() -> Path:
    data = getattr(cv2, "data", None)
    if data is None or not hasattr(cv2, "CascadeClassifier"):
        raise ImportError(
            f"OpenCV {cv2.__version__} has no CascadeClassifier or cascade data (OpenCV 5 moved them to "
            "opencv-contrib); install opencv-python-headless<5")
    return Path(data.haarcascades)


def _load(name: str):
    path = _cascade_dir() / name
    clf = cv2.CascadeClassifier(str(path))
    if clf.empty():
        raise RuntimeError(f"could not load the Haar cascade {str(path)!r}")
    return clf


def face_ellipse(box: tuple[float, float, float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(centre, half-axes) of the face ellipse for a cascade box (x, y, w, h).

    Cascade boxes run from the eyebrows/forehead to just below the mouth; the ellipse is moved down
    and made taller so it reaches from the forehead to the chin, and a little wider for the cheeks."""
    x, y, w, h = box
    return (x + 0.5 * w, y + 0.58 * h), (0.52 * w, 0.68 * h)


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1e-6, min(a[2] * a[3], b[2] * b[3]))


class HaarFaceDetector:
    """Finds faces with OpenCV's frontal (and optionally profile) Haar cascades.

    Args:
        detect_size: images whose longer side exceeds this are downscaled for detection. 320 keeps
            512-px images above 20 images/s on two cores; faces smaller than about
            ``min_face / detect_size`` (6 %) of the longer side are then missed — raise it for
            small faces in large photos.
        scale_factor, min_neighbors: ``detectMultiScale`` parameters of the frontal cascade.
        min_face: smallest face side in pixels at detection scale.
        profile: also run the profile cascade on the image and its mirror (about 4x slower).
    """

    name = "haar"
    regions = ("face", "faces")

    def __init__(self, detect_size: int = 320, scale_factor: float = 1.15, min_neighbors: int = 4,
                 min_face: int = 20, profile: bool = False):
        if detect_size < 64:
            raise ValueError(f"detect_size: expected at least 64 pixels, got {detect_size}")
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor: expected > 1, got {scale_factor}")
        self.detect_size, self.scale_factor = int(detect_size), float(scale_factor)
        self.min_neighbors, self.min_face, self.profile = int(min_neighbors), int(min_face), bool(profile)
        self._frontal = _load(FRONTAL_CASCADE)
        self._profile = _load(PROFILE_CASCADE) if profile else None
        # CascadeClassifier keeps scratch buffers: one detection at a time per (cached, shared) detector.
        self._lock = threading.Lock()

    def check_region(self, parts: list[str]) -> None:
        bad = [p for p in parts if p not in self.regions]
        if bad:
            raise ValueError(
                f"region {'+'.join(bad)!r}: the 'haar' backend finds faces only; for hair, skin or face parts "
                "use backend='face_parsing' with model=<face-parsing SegFormer folder>, for 'person' or "
                "'label:<name>' use backend='mask2former' with model=<Mask2Former folder>")

    def boxes(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Face boxes (x, y, w, h) in the image's pixel coordinates, largest first."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        scale = min(1.0, self.detect_size / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        size = (self.min_face, self.min_face)
        with self._lock:
            return self._detect_gray(gray, size, scale)

    def _detect_gray(self, gray, size, scale):
        found = [tuple(map(float, b)) for b in
                 self._frontal.detectMultiScale(gray, self.scale_factor, self.min_neighbors, minSize=size)]
        if self._profile is not None:
            gw = gray.shape[1]
            # Profile cascades are less precise: demand more agreeing neighbours.
            for flip in (False, True):
                g = cv2.flip(gray, 1) if flip else gray
                for x, y, bw, bh in self._profile.detectMultiScale(g, self.scale_factor, self.min_neighbors + 2,
                                                                   minSize=size):
                    found.append((float(gw - x - bw) if flip else float(x), float(y), float(bw), float(bh)))
        found.sort(key=lambda b: -b[2] * b[3])
        kept: list[tuple[float, float, float, float]] = []
        for b in found:  # frontal and profile hits on one face: keep the larger box
            if all(_overlap(b, k) < 0.5 for k in kept):
                kept.append(b)
        return [(x / scale, y / scale, bw / scale, bh / scale) for x, y, bw, bh in kept]

    def detect(self, images: list[np.ndarray], parts: list[str]) -> tuple[list[np.ndarray], list]:
        """Boolean face masks (one filled ellipse per face) and the boxes behind them."""
        self.check_region(parts)
        masks, all_boxes = [], []
        for img in images:
            boxes = self.boxes(img)
            m = np.zeros(img.shape[:2], np.uint8)
            for b in boxes:
                (cx, cy), (ax, ay) = face_ellipse(b)
                cv2.ellipse(m, (round(cx), round(cy)), (max(1, round(ax)), max(1, round(ay))), 0, 0, 360, 1, -1)
            masks.append(m.astype(bool))
            all_boxes.append(boxes)
        return masks, all_boxes
