"""Region masks for selective area matching and the Face-Region Mask node.

``region_mask(images, region="face", backend="auto", dilate=0, feather=0)`` -> ``[B,H,W]`` float
mask in 0..1. Backends: ``haar`` (offline default for faces: OpenCV's bundled Haar cascades, one
ellipse per face), ``mask2former`` (transformers Mask2Former from a local folder: person and any
label the model knows, ``"label:car"``), ``face_parsing`` (a face-parsing SegFormer from a local
folder: skin, hair, eyes, lips, ...). ``MaskCache`` caches masks per image file for training."""
from .api import BACKENDS, RegionResult, detect_regions, load_detector, region_mask
from .cache import MaskCache
from .spec import ALIASES, parse_region

__all__ = ["region_mask", "detect_regions", "load_detector", "RegionResult", "MaskCache", "BACKENDS",
           "ALIASES", "parse_region"]
