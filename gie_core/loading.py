"""Load the editing pipeline's models from local paths only (never from a hub).

- Base model (SD1.5): a diffusers folder (``model_index.json`` + subfolders) or a single-file
  checkpoint (``.safetensors``; ``.ckpt``/``.pt``/``.pth``/``.bin`` only with ``allow_pickle=True``,
  then read with ``torch.load(weights_only=True)``). A single file carries no configs: they come from
  ``gie_core/configs/sd15`` (shipped), and the tokenizer from, in order, the ``tokenizer`` argument
  (a folder with ``vocab.json`` + ``merges.txt`` or ``tokenizer.json``, or a diffusers SD folder),
  the ``GIE_CLIP_TOKENIZER`` environment variable, or CLIP's BPE file shipped inside the
  ``openai-clip`` package (a dependency).
- ControlNet: a VMamba ControlNet ``.safetensors`` (``gie_core.models.io``), or a diffusers
  ControlNet folder (``config.json`` + weights), e.g. a plain conv ControlNet for comparisons.

Every failure is a :class:`ModelLoadError` (a ``ValueError``) naming the path and what was
expected: missing files, wrong formats, and models that do not fit together (e.g. a ControlNet
whose cross-attention width differs from the UNet's).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch

from .model_files import (
    PICKLE_SUFFIXES,
    SAFE_SUFFIXES,
    ModelLoadError,
    check_base_path,
    check_controlnet_path,
)
from .model_files import existing_path as _existing

CONFIG_DIR = Path(__file__).with_name("configs")
SD15_CONFIG_DIR = CONFIG_DIR / "sd15"
TOKENIZER_ENV = "GIE_CLIP_TOKENIZER"
CLIP_VOCAB_SIZE = 49408

__all__ = ["ModelLoadError", "load_base", "load_controlnet", "load_pipeline", "load_tokenizer",
           "load_checkpoint_state_dict", "check_compatible", "resolve_dtype", "CONFIG_DIR"]


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------
def resolve_dtype(dtype: Any, device: Any = "cpu") -> torch.dtype:
    """``"fp32"``/``"fp16"``/``"bf16"``/``"auto"``/a ``torch.dtype`` -> ``torch.dtype``.

    ``auto`` is fp16 on CUDA and fp32 elsewhere; fp16 on the CPU is refused (slow and often NaN)."""
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16}
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dtype is None or dtype == "auto":
        return torch.float16 if dev.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        out = dtype
    elif isinstance(dtype, str) and dtype.lower() in names:
        out = names[dtype.lower()]
    else:
        raise ValueError(f"dtype: expected one of auto, fp32, fp16, bf16, got {dtype!r}")
    if out == torch.float16 and dev.type == "cpu":
        raise ValueError("dtype: fp16 is for CUDA devices; use fp32 (or bf16) on the CPU")
    return out


def load_checkpoint_state_dict(path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a single-file checkpoint into a flat state dict, safely.

    ``.safetensors`` always; pickle formats (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) only with
    ``allow_pickle=True``, and then with ``torch.load(weights_only=True)`` (no code execution)."""
    p = _existing(path, "checkpoint")
    if p.is_dir():
        raise ModelLoadError(f"checkpoint: {p} is a folder, expected a file")
    suffix = p.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"checkpoint: {p} is not a readable .safetensors file ({e})") from None
    elif suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelLoadError(f"checkpoint: {p} is a pickle file ({suffix}); pickle can run code, so it "
                                 f"loads only with allow_pickle=True (CLI: --allow-pickle), and then with "
                                 f"torch.load(weights_only=True). Prefer a .safetensors file")
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError and friends: report, never retry unsafely
            raise ModelLoadError(f"checkpoint: {p} could not be loaded with weights_only=True ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
    else:
        raise ModelLoadError(f"checkpoint: {p} has an unknown format {suffix!r}; expected .safetensors "
                             f"(or {', '.join(PICKLE_SUFFIXES)} with allow_pickle)")
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(f"checkpoint: {p} does not hold a state dict of tensors")
    return sd


# --------------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------------
def _clip_bpe_from_package() -> Path | None:
    """CLIP's BPE merges shipped in the ``openai-clip`` package (``clip/bpe_simple_vocab_16e6.txt.gz``).

    Located without importing ``clip`` (its ``__init__`` imports torchvision)."""
    spec = importlib.util.find_spec("clip")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        f = Path(loc) / "bpe_simple_vocab_16e6.txt.gz"
        if f.is_file():
            return f
    return None


def _tokenizer_from_bpe(bpe_file: Path):
    """CLIP's tokenizer rebuilt from its BPE merges, as CLIP's own ``SimpleTokenizer`` does
    (bytes, bytes+``</w>``, the first 48894 merges, then the two special tokens: 49408 tokens)."""
    from transformers import CLIPTokenizer

    from .tiny import _bytes_to_unicode

    with gzip.open(bpe_file, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]  # CLIP SimpleTokenizer slice
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != CLIP_VOCAB_SIZE:
        raise ModelLoadError(f"tokenizer: {bpe_file} does not look like CLIP's BPE file "
                             f"({len(tokens)} tokens instead of {CLIP_VOCAB_SIZE})")
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=77)


def load_tokenizer(path=None):
    """SD1.5's CLIP tokenizer from a local source.

    ``path``: a folder with ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``), a diffusers SD
    folder (its ``tokenizer/``), or CLIP's ``bpe_simple_vocab_16e6.txt(.gz)``. Without a path:
    ``$GIE_CLIP_TOKENIZER``, then the BPE file of the ``openai-clip`` package."""
    from transformers import CLIPTokenizer

    if path is None:
        path = os.environ.get(TOKENIZER_ENV) or None
    if path is None:
        bpe = _clip_bpe_from_package()
        if bpe is None:
            raise ModelLoadError("tokenizer: a single-file checkpoint has no tokenizer and none was found; "
                                 "install openai-clip (pip install openai-clip, it ships CLIP's vocabulary) "
                                 f"or pass --tokenizer / ${TOKENIZER_ENV} with a folder holding vocab.json "
                                 "and merges.txt (e.g. a diffusers SD1.5 folder's tokenizer/, or ComfyUI's "
                                 "comfy/sd1_tokenizer)")
        return _tokenizer_from_bpe(bpe)
    p = _existing(path, "tokenizer")
    if p.is_file():
        if p.name.startswith("bpe_simple_vocab"):
            if p.suffix == ".gz":
                return _tokenizer_from_bpe(p)
            raise ModelLoadError(f"tokenizer: gzip {p} first (CLIP ships it as .txt.gz)")
        raise ModelLoadError(f"tokenizer: {p} is a file; expected a folder with vocab.json and merges.txt")
    if (p / "tokenizer").is_dir() and not (p / "vocab.json").exists():
        p = p / "tokenizer"
    if not ((p / "vocab.json").is_file() and (p / "merges.txt").is_file()) and not (p / "tokenizer.json").is_file():
        raise ModelLoadError(f"tokenizer: {p} has neither vocab.json + merges.txt nor tokenizer.json")
    try:
        return CLIPTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as e:
        raise ModelLoadError(f"tokenizer: {p} could not be loaded as a CLIP tokenizer ({e})") from None


# --------------------------------------------------------------------------------------------------
# base model
# --------------------------------------------------------------------------------------------------
def _check_no_meta(model, what: str, path) -> None:
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise ModelLoadError(f"base: {path}: the {what} weights are incomplete ({len(left)} tensors missing, "
                             f"e.g. {left[0]}); is this an SD1.x checkpoint?")


def _load_single_file(p: Path, dtype, allow_pickle: bool, tokenizer, config_dir) -> dict:
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel

    config_dir = Path(config_dir) if config_dir is not None else SD15_CONFIG_DIR
    if not (config_dir / "unet" / "config.json").is_file():
        raise ModelLoadError(f"base: config folder {config_dir} has no unet/config.json")
    checkpoint = load_checkpoint_state_dict(p, allow_pickle=allow_pickle)
    unet_cfg = json.loads((config_dir / "unet" / "config.json").read_text())
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    if not any(k.startswith("model.diffusion_model.") for k in checkpoint):
        raise ModelLoadError(f"base: {p} is not a Stable Diffusion checkpoint (no model.diffusion_model.* "
                             f"weights); for a ControlNet use --controlnet")
    if key in checkpoint and checkpoint[key].shape[1] != unet_cfg["cross_attention_dim"]:
        raise ModelLoadError(f"base: {p} has cross-attention width {checkpoint[key].shape[1]}, SD1.x has "
                             f"{unet_cfg['cross_attention_dim']} (SD2/SDXL checkpoints are not supported)")
    if not any(k.startswith("cond_stage_model.transformer.") for k in checkpoint):
        raise ModelLoadError(f"base: {p} has no CLIP text encoder (cond_stage_model.transformer.*); "
                             f"SD1.x checkpoints carry one")
    common = dict(config=str(config_dir), local_files_only=True, torch_dtype=dtype)
    try:
        unet = UNet2DConditionModel.from_single_file(checkpoint, subfolder="unet", **common)
        vae = AutoencoderKL.from_single_file(checkpoint, subfolder="vae", **common)
        text_encoder = create_diffusers_clip_model_from_ldm(
            CLIPTextModel, checkpoint, subfolder="text_encoder", config=str(config_dir),
            torch_dtype=dtype, local_files_only=True)
    except (ValueError, KeyError, RuntimeError) as e:
        raise ModelLoadError(f"base: {p} does not match the SD1.5 layout in {config_dir} "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    for what, m in (("UNet", unet), ("VAE", vae), ("text encoder", text_encoder)):
        _check_no_meta(m, what, p)
    sched_cfg = config_dir / "scheduler" / "scheduler_config.json"
    scheduler = PNDMScheduler.from_config(json.loads(sched_cfg.read_text())) if sched_cfg.is_file() else PNDMScheduler()
    if tokenizer is None and (config_dir / "tokenizer").is_dir():
        tokenizer = config_dir / "tokenizer"
    tok = tokenizer if hasattr(tokenizer, "encode") else load_tokenizer(tokenizer)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tok, scheduler=scheduler)


def _load_folder(p: Path, dtype, tokenizer) -> dict:
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
    from transformers import CLIPTextModel

    if not (p / "model_index.json").is_file():
        if (p / "config.json").is_file():
            raise ModelLoadError(f"base: {p} holds a single model (config.json), not a diffusers pipeline "
                                 f"folder with model_index.json; is it a ControlNet? use --controlnet")
        raise ModelLoadError(f"base: {p} is not a diffusers folder (no model_index.json)")
    for sub in ("unet", "vae", "text_encoder", "scheduler"):
        if not (p / sub).is_dir():
            raise ModelLoadError(f"base: {p} has no {sub}/ subfolder")
    import diffusers

    try:
        index = json.loads((p / "model_index.json").read_text())
        sched_cls = getattr(diffusers, index.get("scheduler", [None, "PNDMScheduler"])[1], None)
        if not (isinstance(sched_cls, type) and issubclass(sched_cls, SchedulerMixin)):
            sched_cls = diffusers.PNDMScheduler
        unet = UNet2DConditionModel.from_pretrained(str(p), subfolder="unet", torch_dtype=dtype, local_files_only=True)
        vae = AutoencoderKL.from_pretrained(str(p), subfolder="vae", torch_dtype=dtype, local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(str(p / "text_encoder"), dtype=dtype, local_files_only=True)
        scheduler = sched_cls.from_pretrained(str(p), subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"base: {p} could not be loaded ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if tokenizer is None:
        tokenizer = p / "tokenizer" if (p / "tokenizer").is_dir() else None
    tok = tokenizer if hasattr(tokenizer, "encode") else load_tokenizer(tokenizer)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tok, scheduler=scheduler)


def load_base(path, *, dtype: torch.dtype | str | None = torch.float32, allow_pickle: bool = False,
              tokenizer=None, config_dir=None) -> dict:
    """Load SD1.5's parts from ``path``: ``{"unet", "vae", "text_encoder", "tokenizer", "scheduler"}``.

    Args:
        path: a diffusers folder, or a single-file checkpoint (``.safetensors``; pickle formats need
            ``allow_pickle``).
        dtype: weights dtype (a ``torch.dtype`` or ``"fp32"``/``"fp16"``/``"bf16"``).
        tokenizer: a tokenizer object or source (see :func:`load_tokenizer`); for a folder the
            default is its ``tokenizer/``.
        config_dir: for single files, a diffusers-layout folder of configs (default: the shipped
            SD1.5 configs).
    """
    # the device check (no fp16 on CPU) is load_pipeline's; here only the name is resolved
    dtype = resolve_dtype(dtype, "cuda") if dtype is not None else torch.float32
    p = _existing(path, "base")
    if p.is_dir():
        return _load_folder(p, dtype, tokenizer)
    return _load_single_file(p, dtype, allow_pickle, tokenizer, config_dir)


# --------------------------------------------------------------------------------------------------
# ControlNet
# --------------------------------------------------------------------------------------------------
def load_controlnet(path, *, dtype: torch.dtype | str | None = torch.float32, unet=None):
    """A ControlNet from ``path``: a VMamba ControlNet ``.safetensors`` (config in its metadata) or
    a diffusers ControlNet folder. With ``unet`` the two are checked to fit (:func:`check_compatible`)."""
    dtype = resolve_dtype(dtype, "cuda") if dtype is not None else torch.float32
    p = check_controlnet_path(path)  # exists; a folder with config.json or a readable VMamba .safetensors
    if p.is_dir():
        cfg = json.loads((p / "config.json").read_text())
        cls_name = cfg.get("_class_name", "ControlNetModel")
        if cls_name == "VMambaControlNetModel":
            from .models import VMambaControlNetModel as cls
        elif cls_name == "ControlNetModel":
            from diffusers import ControlNetModel as cls
        else:
            raise ModelLoadError(f"controlnet: {p} holds a {cls_name}, expected a ControlNetModel")
        try:
            model = cls.from_pretrained(str(p), torch_dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"controlnet: {p} could not be loaded ({e})") from None
        fill = cfg.get("hint_target_fill", "blank")  # ours, not diffusers': from_pretrained drops it
        if fill != "blank":
            from .control_input import TARGET_FILLS

            if fill not in TARGET_FILLS:
                raise ModelLoadError(f"controlnet: {p}/config.json has hint_target_fill={fill!r}, expected one "
                                     f"of {TARGET_FILLS}")
            model.register_to_config(hint_target_fill=fill)
        from .instruction.bank import read_bank_file
        try:
            model.instruction_bank = read_bank_file(p)
        except ValueError as e:
            raise ModelLoadError(f"controlnet: {e}") from None
    else:
        try:
            from .models.io import load_vmamba_controlnet
        except ImportError as e:  # pragma: no cover - models package is part of gie_core
            raise ModelLoadError(f"controlnet: the VMamba ControlNet loader is unavailable ({e})") from None
        try:
            model = load_vmamba_controlnet(p, base_config=unet)
        except ValueError as e:  # the models package's errors are ValueErrors with clear messages
            raise ModelLoadError(f"controlnet: {e}") from None
    if unet is not None:
        check_compatible(unet, model, source=str(p))
    if model.dtype != dtype:
        model.to(dtype=dtype)
    return model.eval()


def check_compatible(unet, controlnet, source: str = "controlnet") -> None:
    """Raise :class:`ModelLoadError` unless ``controlnet``'s residuals fit ``unet``."""
    u, c = unet.config, controlnet.config
    problems = []
    if c.cross_attention_dim != u.cross_attention_dim:
        problems.append(f"cross-attention width {c.cross_attention_dim} vs the UNet's {u.cross_attention_dim}")
    if tuple(c.block_out_channels) != tuple(u.block_out_channels):
        problems.append(f"block widths {tuple(c.block_out_channels)} vs {tuple(u.block_out_channels)}")
    if c.in_channels != 4 or u.in_channels not in (4, 9):
        problems.append(f"latent channels {c.in_channels} (ControlNet) / {u.in_channels} (UNet)")
    if c.layers_per_block != u.layers_per_block:
        problems.append(f"layers per block {c.layers_per_block} vs {u.layers_per_block}")
    if problems:
        raise ModelLoadError(f"{source}: this ControlNet does not fit the base model: " + "; ".join(problems)
                             + " (was it trained for another base, e.g. SDXL or SD2?)")


# --------------------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------------------
def load_pipeline(base, controlnet, *, device: str | torch.device = "cpu", dtype: Any = "auto",
                  cpu_offload: bool = False, allow_pickle: bool = False, tokenizer=None,
                  scheduler: str | None = None, config_dir=None):
    """Load an :class:`~gie_core.pipeline.InstructGIEPipeline` from local paths.

    Args:
        base: SD1.5 as a diffusers folder or single-file checkpoint (see :func:`load_base`).
        controlnet: the VMamba ControlNet ``.safetensors`` (or a diffusers ControlNet folder).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        dtype: ``"auto"`` (fp16 on CUDA, fp32 on CPU), ``"fp32"``, ``"fp16"``, ``"bf16"``.
        cpu_offload: keep models on the CPU and move each to the GPU only while it runs (CUDA only).
        allow_pickle: permit ``.ckpt``/``.pt`` base checkpoints (read with ``weights_only=True``).
        tokenizer: tokenizer source for single-file checkpoints (see :func:`load_tokenizer`).
        scheduler: a scheduler name to use by default (see ``pipeline.make_scheduler``).
    """
    from .pipeline import InstructGIEPipeline, make_scheduler

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"device: {device!r} is not a device (cpu, cuda, cuda:1, …)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device: CUDA was asked for but is not available; use --device cpu")
    if cpu_offload and dev.type != "cuda":
        raise ModelLoadError("cpu_offload: only meaningful with a CUDA device")
    torch_dtype = resolve_dtype(dtype, dev)
    # Paths, formats and truncated files are reported before the (slow) loads.
    check_controlnet_path(controlnet)
    if isinstance(base, (str, os.PathLike)):
        check_base_path(base, allow_pickle)
    parts = load_base(base, dtype=torch_dtype, allow_pickle=allow_pickle, tokenizer=tokenizer,
                      config_dir=config_dir)
    cn = load_controlnet(controlnet, dtype=torch_dtype, unet=parts["unet"])
    if scheduler is not None:
        parts["scheduler"] = make_scheduler(scheduler, parts["scheduler"].config)
    pipe = InstructGIEPipeline(controlnet=cn, **parts)
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe.to(dev)
    return pipe
