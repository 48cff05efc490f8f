"""Exporting and reloading trained ControlNets.

A VMamba ControlNet is written as one ``.safetensors`` file through ``gie_core.models.io`` (the
format the ComfyUI loader and ``gie_core.loading`` read). The conv-hint-encoder ablation is a
plain diffusers ``ControlNetModel``, written as a diffusers ControlNet folder (the same name without
``.safetensors``), which ``gie_core.loading.load_controlnet``, diffusers and ComfyUI all read.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def save_controlnet(model, path: str | os.PathLike, extra_metadata: dict | None = None,
                    instruction_bank=None) -> Path:
    """Writes ``model`` atomically; returns the file (VMamba) or folder (conv) written.
    ``instruction_bank``: the unified training instructions, recorded in the file's metadata
    (VMamba) or as ``instruction_bank.json`` in the folder (conv), for inference to snap onto."""
    from gie_core.models import VMambaControlNetModel
    from gie_core.models.io import save_vmamba_controlnet

    from .checkpoint import share_like_umask

    path = Path(path)
    if isinstance(model, VMambaControlNetModel):
        out = save_vmamba_controlnet(model, path, extra_metadata, instruction_bank=instruction_bank)
        share_like_umask(out)  # safetensors writes 0600
        return out
    folder = path.with_suffix("") if path.suffix == ".safetensors" else path
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if instruction_bank is not None:
        from gie_core.instruction.bank import write_bank_file

        write_bank_file(tmp, instruction_bank)
    share_like_umask(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def load_controlnet(path: str | os.PathLike, unet=None):
    """Reloads what :func:`save_controlnet` wrote (via ``gie_core.loading.load_controlnet``)."""
    from gie_core.loading import load_controlnet as _load

    return _load(path, unet=unet)
