"""Cheap checks of model paths, and the settings a trained stack's folder records, without torch.

The loaders (``gie_core.loading``) need torch, diffusers and transformers, seconds of imports before
they can say that a path is missing or a file is cut short. These checks read only file names,
JSON and the safetensors header (8-byte length, JSON table of tensors and byte ranges), so a typo or
a truncated download is reported at once; the loaders run them first too.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFE_SUFFIXES = (".safetensors",)
VMAMBA_FORMAT = "instructgie-vmamba-controlnet"  # the safetensors metadata "format" of our ControlNets
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header

# What `instructgie edit` and `demo` use when neither the command line nor the model folder says.
DEFAULT_SETTINGS = {"tile": 256, "resize": "fit", "guidance": 7.5, "steps": 20, "unify": True}


class ModelLoadError(ValueError):
    """A model could not be loaded from the given path (the message says why)."""


def existing_path(path, what: str) -> Path:
    if path is None or str(path) == "":
        raise ModelLoadError(f"{what}: no path given")
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise ModelLoadError(f"{what}: {p} does not exist")
    return p


def safetensors_header(path, what: str) -> dict:
    """The JSON header of a ``.safetensors`` file, after checking that every tensor's bytes lie inside
    the file (a truncated download fails here). ``__metadata__`` is included as stored."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelLoadError(f"{what}: {p} is not a .safetensors file ({size} bytes, too short for a header)")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise ModelLoadError(f"{what}: {p} is not a readable .safetensors file (its header claims {n} "
                                     f"bytes in a {size}-byte file; truncated or not safetensors?)")
            raw = f.read(n)
    except OSError as e:
        raise ModelLoadError(f"{what}: cannot read {p} ({e.strerror or e})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelLoadError(f"{what}: {p} is not a readable .safetensors file (damaged header)") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{what}: {p} is not a readable .safetensors file (damaged header)")
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ModelLoadError(f"{what}: {p} is not a readable .safetensors file (tensor {name!r} has no byte range)")
        if not 0 <= offsets[0] <= offsets[1] <= data:
            raise ModelLoadError(f"{what}: {p} is truncated: tensor {name!r} needs bytes up to {offsets[1]} of its "
                                 f"data, the file holds {data}; download or copy it again")
    return header


def check_base_path(path, allow_pickle: bool = False) -> Path:
    """An SD base given as a diffusers folder or a single-file checkpoint, checked without loading it."""
    p = existing_path(path, "base")
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            if (p / "config.json").is_file():
                raise ModelLoadError(f"base: {p} holds a single model (config.json), not a diffusers pipeline "
                                     f"folder with model_index.json; is it a ControlNet? use --controlnet")
            raise ModelLoadError(f"base: {p} is not a diffusers folder (no model_index.json)")
        try:
            json.loads((p / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"base: {p}/model_index.json is not valid JSON ({e})") from None
        for sub in ("unet", "vae", "text_encoder", "scheduler"):
            if not (p / sub).is_dir():
                raise ModelLoadError(f"base: {p} has no {sub}/ subfolder")
        for sub in ("unet", "vae"):
            weights = sorted((p / sub).glob("*.safetensors"))
            for w in weights:
                safetensors_header(w, "base")
        return p
    suffix = p.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        meta = safetensors_header(p, "base").get("__metadata__") or {}
        if meta.get("format") == VMAMBA_FORMAT:
            raise ModelLoadError(f"base: {p} is an InstructGIE VMamba ControlNet; pass it as --controlnet, and "
                                 "the SD1.5 model as --base")
    elif suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelLoadError(f"base: {p} is a pickle file ({suffix}); pickle can run code, so it loads only "
                                 f"with --allow-pickle (allow_pickle=True), and then with torch.load("
                                 f"weights_only=True). Prefer a .safetensors file")
    else:
        raise ModelLoadError(f"base: {p} has an unknown format {suffix!r}; expected a diffusers folder or a "
                             f".safetensors file (or {', '.join(PICKLE_SUFFIXES)} with --allow-pickle)")
    return p


def check_controlnet_path(path) -> Path:
    """A VMamba ControlNet ``.safetensors`` (or a diffusers ControlNet folder), checked without loading."""
    p = existing_path(path, "controlnet")
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"controlnet: {p} is a folder without config.json")
        return p
    suffix = p.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ModelLoadError(f"controlnet: {p} is a pickle file; VMamba ControlNets are stored as one "
                             f".safetensors file with their config in its metadata")
    if suffix not in SAFE_SUFFIXES:
        raise ModelLoadError(f"controlnet: {p} has an unknown format {suffix!r}; expected .safetensors")
    meta = safetensors_header(p, "controlnet").get("__metadata__") or {}
    if meta.get("format") != VMAMBA_FORMAT:
        raise ModelLoadError(f"controlnet: {p} is not an InstructGIE VMamba ControlNet file (no "
                             f"format={VMAMBA_FORMAT!r} in its metadata)")
    return p


def trained_stack(folder) -> tuple[Path, Path]:
    """``(base folder, ControlNet)`` of a folder that ``instructgie-train`` wrote for a from-scratch
    stack: ``base/`` (a diffusers folder) and ``controlnet.safetensors`` (or a diffusers
    ``controlnet/`` folder for the conv-hint ablation)."""
    p = Path(folder)
    if not p.is_dir():
        raise ModelLoadError(f"model: {str(folder)!r} is not a folder (expected one with base/ and "
                             "controlnet.safetensors)")
    controlnet = p / "controlnet.safetensors"
    if not controlnet.is_file() and (p / "controlnet" / "config.json").is_file():
        controlnet = p / "controlnet"
    missing = [n for n, ok in (("base/model_index.json", (p / "base" / "model_index.json").is_file()),
                               ("controlnet.safetensors", controlnet.exists())) if not ok]
    if missing:
        raise ModelLoadError(f"model: {str(folder)!r} lacks {', '.join(missing)} (expected an instructgie-train "
                             "output folder of a from-scratch stack, or use --base and --controlnet)")
    return p / "base", controlnet


def training_config_for(controlnet) -> Path | None:
    """The ``train_config.json`` beside a ControlNet written by ``instructgie-train`` (its output folder
    holds both), or None."""
    cfg = Path(controlnet).parent / "train_config.json"
    return cfg if cfg.is_file() else None


def inference_settings(train_config) -> dict:
    """The sampling settings a trained model was trained and validated with, from its
    ``train_config.json``: ``tile``, ``resize`` and ``unify`` (its ``liu``) as in training;
    ``steps`` and ``guidance`` as its validation sampled (``validation_inference_steps``; guidance
    ``validation_guidance_scale`` when recorded, else 1.0, which the trainer validates with). Keys the
    file lacks are left out, so the caller's defaults apply."""
    path = Path(train_config)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"model: {path} is not a readable train_config.json ({e})") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"model: {path} is not a train_config.json (expected a JSON object)")
    out: dict = {}
    if isinstance(cfg.get("tile"), int):
        out["tile"] = cfg["tile"]
    if cfg.get("resize") in ("fit", "crop", "stretch"):
        out["resize"] = cfg["resize"]
    if isinstance(cfg.get("liu"), bool):
        out["unify"] = cfg["liu"]
    if isinstance(cfg.get("validation_inference_steps"), int):
        out["steps"] = cfg["validation_inference_steps"]
    guidance = cfg.get("validation_guidance_scale", 1.0)
    if isinstance(guidance, (int, float)) and not isinstance(guidance, bool):
        out["guidance"] = float(guidance)
    return out
