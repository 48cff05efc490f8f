"""Mask post-processing shared by all backends: minimum region size, dilation/erosion, feathering."""
from __future__ import annotations

import math

import cv2
import numpy as np


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drops 8-connected components of a boolean mask smaller than ``min_area`` pixels."""
    if min_area <= 1 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilates a boolean mask by ``pixels`` (a disc of that radius); negative values erode."""
    if pixels == 0 or not mask.any():
        return mask
    r = abs(int(pixels))
    if r >= math.hypot(*mask.shape[:2]):
        # A disc this wide centred on any pixel covers the whole image: the answer is known, and
        # OpenCV would take minutes with a kernel of (2r+1)^2 pixels.
        return np.full_like(mask, True if pixels > 0 else bool(mask.all()), dtype=bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    m = mask.astype(np.uint8)
    if pixels > 0:
        return cv2.dilate(m, kernel).astype(bool)
    # Erode with a border of ones so regions touching the image edge are not eaten from outside.
    return cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)


def feather_mask(mask: np.ndarray, width: float) -> np.ndarray:
    """Soft edge of total ``width`` pixels centred on the region boundary, as float32 in 0..1.

    The value is ``clip(0.5 + d / width, 0, 1)`` with ``d`` the signed Euclidean distance to the
    boundary (positive inside), so the 0.5 level stays where the hard edge was, pixels deeper than
    width/2 inside are 1 and pixels farther than width/2 outside are 0. Use ``dilate`` first to
    keep the whole region at full weight."""
    hard = mask.astype(np.float32)
    if width <= 0 or not mask.any() or mask.all():
        return hard
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)  # to the nearest outside px
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    signed = np.where(mask, inside - 0.5, 0.5 - outside)
    return np.clip(0.5 + signed / float(width), 0.0, 1.0).astype(np.float32)


def finish(mask: np.ndarray, *, min_area: int = 0, dilate: int = 0, feather: float = 0) -> tuple[np.ndarray, bool]:
    """min-area filter -> found flag -> dilate/erode -> feather. Returns (float32 mask, found)."""
    mask = remove_small_regions(mask.astype(bool), int(min_area))
    found = bool(mask.any())
    mask = grow(mask, int(dilate))
    return feather_mask(mask, float(feather)), found
