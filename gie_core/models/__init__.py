"""The VMamba ControlNet of InstructGIE.

- :mod:`.ss2d` — SS2D (four-direction 2-D selective scan) and the VSS block.
- :mod:`.vmamba` — :class:`HintEncoderConfig`, :class:`VMambaHintEncoder`.
- :mod:`.hint_cache` — :class:`HintFeatureCache`, :class:`CachedHintEncoder` (ComfyUI hint-block adapter).
- :mod:`.controlnet` — :class:`VMambaControlNetModel` (a diffusers ``ControlNetModel``).
- :mod:`.io` — one-file save/load, config and state-dict splitting for loaders.

The diffusers-dependent names are imported on first use, so the encoder alone imports quickly.
"""
from __future__ import annotations

import importlib

from .hint_cache import CachedHintEncoder, HintFeatureCache
from .ss2d import SS2D, VSSBlock
from .vmamba import HintEncoderConfig, HintEncoderConfigError, VMambaHintEncoder

_LAZY = {
    "VMambaControlNetModel": ".controlnet",
    "save_vmamba_controlnet": ".io",
    "load_vmamba_controlnet": ".io",
    "read_vmamba_config": ".io",
    "split_vmamba_state_dict": ".io",
    "check_base_compatibility": ".io",
    "VMambaControlNetFileError": ".io",
    "CorruptFileError": ".io",
    "NotVMambaControlNetError": ".io",
    "IncompatibleBaseError": ".io",
    "StateDictMismatchError": ".io",
    "SD15_UNET_CONFIG": ".configs",
    "SDXL_UNET_CONFIG": ".configs",
    "base_family": ".configs",
}

__all__ = ["SS2D", "VSSBlock", "HintEncoderConfig", "HintEncoderConfigError", "VMambaHintEncoder",
           "HintFeatureCache", "CachedHintEncoder", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
