"""One-file weights for the VMamba ControlNet.

File layout: one ``.safetensors`` with diffusers ``ControlNetModel`` key names for the copied UNet
encoder and the zero convs, and the VMamba hint encoder's keys under ``controlnet_cond_embedding.``.
The safetensors metadata holds::

    format          "instructgie-vmamba-controlnet"
    format_version  "1"
    config          the full diffusers config as JSON (including "hint_encoder_config")
    base            "sd1" / "sd2" / "sdxl" / "unknown" (informative)
    instruction_bank  optional: the unified instructions the model was trained on, as JSON
                    ``{"version": 1, "liu_backend": ..., "instructions": [...]}``; inference snaps
                    new instructions onto them (gie_core.instruction.bank). Files without it load
                    as before.

so the file alone rebuilds the model. Every failure is a :class:`VMambaControlNetFileError`
(a ``ValueError``) whose subclass and message say what is wrong.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..model_files import VMAMBA_FORMAT as FORMAT_NAME
from .configs import BASE_KEYS, base_family

FORMAT_VERSION = 1
HINT_PREFIX = "controlnet_cond_embedding."
BANK_KEY = "instruction_bank"


class VMambaControlNetFileError(ValueError):
    """A VMamba ControlNet file cannot be used; the subclass says why."""


class CorruptFileError(VMambaControlNetFileError):
    """The file is not a readable safetensors file (truncated, damaged header, non-finite weights)."""


class NotVMambaControlNetError(VMambaControlNetFileError):
    """A readable safetensors file that is not an InstructGIE VMamba ControlNet (no/unknown metadata)."""


class IncompatibleBaseError(VMambaControlNetFileError):
    """The ControlNet was made for another base model than the one it is checked against."""


class StateDictMismatchError(VMambaControlNetFileError):
    """Keys or shapes in the file do not match the model its config describes."""


def _few(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", … ({len(keys)} in all)" if len(keys) > n else "")


def _plain(value):
    """JSON-ready copy of a config value (tuples → lists, FrozenDicts → dicts)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def model_config_dict(model) -> dict:
    """The model's diffusers config as a plain dict, without diffusers' private ``_…`` entries."""
    return {k: _plain(v) for k, v in dict(model.config).items() if not k.startswith("_")}


def save_vmamba_controlnet(model, path: str | os.PathLike, extra_metadata: dict | None = None,
                           instruction_bank=None) -> Path:
    """Write ``model`` (a :class:`~gie_core.models.VMambaControlNetModel`) to one ``.safetensors`` file.

    Tensors keep the model's dtype. ``extra_metadata`` (str → str) is stored alongside, for provenance.
    ``instruction_bank``: the unified instructions the model was trained on (a list of strings; by
    default the model's own ``instruction_bank`` attribute, if it has one). Returns the path written.
    """
    from safetensors.torch import save_file

    from .controlnet import VMambaControlNetModel

    if not isinstance(model, VMambaControlNetModel):
        raise ValueError(f"save_vmamba_controlnet: model must be a VMambaControlNetModel, got {type(model).__name__}")
    path = Path(path)
    config = model_config_dict(model)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config, sort_keys=True),
        "base": base_family(config),
    }
    if instruction_bank is None:
        instruction_bank = getattr(model, "instruction_bank", None)
    if instruction_bank is not None:
        from gie_core.instruction.bank import encode_bank
        metadata[BANK_KEY] = encode_bank(instruction_bank)
    for k, v in (extra_metadata or {}).items():
        if k in metadata or not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"save_vmamba_controlnet: extra_metadata must map new str keys to str values; bad key {k!r}")
        metadata[k] = v
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # never leave a half-written file under the real name
    return path


def _open(path):
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VMamba ControlNet file not found: {path}")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError for any damaged header
        raise CorruptFileError(f"{path}: not a readable .safetensors file (truncated or corrupt?): {e}") from e


def read_vmamba_config(path: str | os.PathLike) -> dict:
    """The full diffusers config stored in a VMamba ControlNet file (``hint_encoder_config`` included)."""
    with _open(path) as f:
        return _config_from_metadata(f.metadata(), path)


def read_instruction_bank(path: str | os.PathLike) -> list[str] | None:
    """The instruction bank stored in a VMamba ControlNet file, ``None`` when it has none."""
    from gie_core.instruction.bank import decode_bank

    with _open(path) as f:
        metadata = f.metadata() or {}
        _config_from_metadata(metadata, path)
    try:
        return decode_bank(metadata.get(BANK_KEY), str(path))
    except ValueError as e:
        raise CorruptFileError(str(e)) from None


def _config_from_metadata(metadata: dict | None, path) -> dict:
    metadata = metadata or {}
    fmt = metadata.get("format")
    if fmt != FORMAT_NAME:
        found = f"format={fmt!r}" if fmt is not None else f"metadata keys {sorted(metadata)}"
        raise NotVMambaControlNetError(
            f"{path}: not an InstructGIE VMamba ControlNet file (expected metadata format={FORMAT_NAME!r}, found "
            f"{found}); a standard ControlNet goes through the ordinary ControlNet loader")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        version = None
    if version != FORMAT_VERSION:
        raise NotVMambaControlNetError(f"{path}: unsupported format_version {metadata.get('format_version')!r}; "
                                       f"this gie_core reads version {FORMAT_VERSION}")
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{path}: the 'config' metadata is missing or not valid JSON ({e})") from e
    if not isinstance(config, dict) or "hint_encoder_config" not in config:
        raise CorruptFileError(f"{path}: the 'config' metadata has no hint_encoder_config")
    return config


def _as_config_dict(base) -> dict:
    if hasattr(base, "config") and not isinstance(base, dict):
        base = base.config
    return {k: _plain(v) for k, v in dict(base).items()}


def check_base_compatibility(config: dict, base_config, source: str = "ControlNet") -> None:
    """Raise :class:`IncompatibleBaseError` unless ``config`` (a ControlNet config) fits ``base_config``
    (a UNet, its config, or a config dict), comparing the keys that fix residual shapes and embeddings."""
    base = _as_config_dict(base_config)
    diffs = []
    for key in BASE_KEYS:
        if key not in base:
            continue
        mine, theirs = _plain(config.get(key)), base[key]
        if key == "transformer_layers_per_block":  # an int means that value for every block
            n = len(config.get("block_out_channels", []))
            mine = [mine] * n if isinstance(mine, int) else mine
            theirs = [theirs] * n if isinstance(theirs, int) else theirs
        if mine != theirs:
            diffs.append(f"{key}: file {mine!r} vs base {theirs!r}")
    if diffs:
        raise IncompatibleBaseError(
            f"{source} was made for another base model ({base_family(config)}) than the one given "
            f"({base_family(base)}): " + "; ".join(diffs))


def _read_tensors(f, path, keys=None) -> dict:
    out = {}
    for k in (f.keys() if keys is None else keys):
        try:
            t = f.get_tensor(k)
        except Exception as e:
            raise CorruptFileError(f"{path}: tensor {k!r} cannot be read ({e})") from e
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CorruptFileError(f"{path}: tensor {k!r} holds NaN or inf values")
        out[k] = t
    return out


def _check_keys(path, expected: dict, f) -> None:
    """Compare the file's keys and shapes with ``expected`` (name → shape)."""
    found = set(f.keys())
    missing, unexpected = set(expected) - found, found - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_few(unexpected)}")
        raise StateDictMismatchError(f"{path}: weights do not match the config stored in the file: " + "; ".join(parts))
    bad = [f"{k}: file {tuple(f.get_slice(k).get_shape())} vs model {tuple(expected[k])}"
           for k in sorted(expected) if tuple(f.get_slice(k).get_shape()) != tuple(expected[k])]
    if bad:
        raise StateDictMismatchError(f"{path}: {len(bad)} tensor shape(s) differ from the config: " + "; ".join(bad[:5]))


def load_vmamba_controlnet(path: str | os.PathLike, device=None, dtype=None, base_config=None):
    """Rebuild a :class:`~gie_core.models.VMambaControlNetModel` from one file written by
    :func:`save_vmamba_controlnet`.

    Args:
        path: the ``.safetensors`` file.
        device, dtype: where and in what dtype to put the model (default: CPU, the file's dtype).
        base_config: optionally a UNet (or its config / a config dict) the ControlNet must fit;
            a mismatch (e.g. an SDXL file for an SD1.5 UNet) raises :class:`IncompatibleBaseError`.
    """
    from .controlnet import VMambaControlNetModel

    with _open(path) as f:
        metadata = f.metadata() or {}
        config = _config_from_metadata(metadata, path)
        if base_config is not None:
            check_base_compatibility(config, base_config, source=str(path))
        try:
            with torch.device("meta"):  # shapes only; the file supplies every tensor
                model = VMambaControlNetModel.from_config(config)
        except ValueError as e:
            raise CorruptFileError(f"{path}: the stored config does not build a VMamba ControlNet: {e}") from e
        expected = {k: v.shape for k, v in model.state_dict().items()}
        _check_keys(path, expected, f)
        state = _read_tensors(f, path)
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # a non-persistent buffer the file cannot carry: would be a bug in this module
        raise RuntimeError(f"load_vmamba_controlnet: tensors left uninitialised: {_few(leftover)}")
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    from gie_core.instruction.bank import decode_bank
    try:  # not a config entry: the bank is data about training, not about the architecture
        model.instruction_bank = decode_bank(metadata.get(BANK_KEY), str(path))
    except ValueError as e:
        raise CorruptFileError(str(e)) from None
    return model


def split_vmamba_state_dict(path: str | os.PathLike, placeholder_cond_embedding: bool = False):
    """``(config, controlnet_state_dict, hint_encoder_state_dict)`` from a VMamba ControlNet file.

    ``controlnet_state_dict`` is the standard diffusers ControlNet part (hint-encoder keys removed);
    ``hint_encoder_state_dict`` holds the VMamba encoder's tensors with the ``controlnet_cond_embedding.``
    prefix stripped (load it into ``VMambaHintEncoder(config["hint_encoder_config"])``). With
    ``placeholder_cond_embedding=True`` the standard part also gets zero tensors for diffusers' conv
    hint block (``controlnet_cond_embedding.conv_in.weight`` etc.), so a loader that recognises
    diffusers ControlNets by those keys (ComfyUI) converts it; the placeholder is then replaced.
    """
    with _open(path) as f:
        config = _config_from_metadata(f.metadata(), path)
        state = _read_tensors(f, path)
    hint = {k[len(HINT_PREFIX):]: v for k, v in state.items() if k.startswith(HINT_PREFIX)}
    standard = {k: v for k, v in state.items() if not k.startswith(HINT_PREFIX)}
    if not hint:
        raise StateDictMismatchError(f"{path}: no hint-encoder tensors under {HINT_PREFIX!r}")
    if placeholder_cond_embedding:
        standard.update(placeholder_cond_embedding_state_dict(config))
    return config, standard, hint


def placeholder_cond_embedding_state_dict(config: dict) -> dict:
    """Zero tensors shaped like diffusers' conv ``ControlNetConditioningEmbedding`` for ``config``.

    The shapes are written out here rather than taken from a diffusers module, so the ComfyUI loader
    works without diffusers installed (tests/test_models_io.py checks them against diffusers)."""
    widths = [int(w) for w in (config.get("conditioning_embedding_out_channels") or (16, 32, 96, 256))]
    shapes = {"conv_in.weight": (widths[0], 3, 3, 3), "conv_in.bias": (widths[0],)}
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        shapes[f"blocks.{2 * i}.weight"] = (w_in, w_in, 3, 3)
        shapes[f"blocks.{2 * i}.bias"] = (w_in,)
        shapes[f"blocks.{2 * i + 1}.weight"] = (w_out, w_in, 3, 3)
        shapes[f"blocks.{2 * i + 1}.bias"] = (w_out,)
    out = int(config["block_out_channels"][0])
    shapes["conv_out.weight"] = (out, widths[-1], 3, 3)
    shapes["conv_out.bias"] = (out,)
    return {HINT_PREFIX + k: torch.zeros(shape) for k, shape in shapes.items()}
