"""Exporting and reloading trained ControlNets as one ``.safetensors`` file.

VMamba ControlNets go through ``gie_core.models.io`` (the format the ComfyUI loader and the
pipeline read). The conv-hint-encoder ablation is a plain diffusers ``ControlNetModel``; it is
written the same way (weights with diffusers key names, the config as JSON in the metadata) under
the format name ``diffusers-controlnet``, so one file rebuilds it too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

CONV_FORMAT = "diffusers-controlnet"


def save_controlnet(model, path: str | os.PathLike, extra_metadata: dict | None = None) -> Path:
    """Writes ``model`` to ``path`` atomically; returns the path."""
    from gie_core.models import VMambaControlNetModel
    from gie_core.models.io import model_config_dict, save_vmamba_controlnet

    if isinstance(model, VMambaControlNetModel):
        return save_vmamba_controlnet(model, path, extra_metadata)
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"format": CONV_FORMAT, "config": json.dumps(model_config_dict(model), sort_keys=True),
            **(extra_metadata or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_controlnet(path: str | os.PathLike, device=None, dtype=None):
    """Rebuilds a ControlNet written by :func:`save_controlnet` (VMamba or conv hint encoder)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ControlNet file {path}: not found")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != CONV_FORMAT:
        from gie_core.models.io import load_vmamba_controlnet

        return load_vmamba_controlnet(path, device=device, dtype=dtype)
    from diffusers import ControlNetModel
    from safetensors.torch import load_file

    model = ControlNetModel.from_config(json.loads(meta["config"]))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device=device, dtype=dtype).eval()
