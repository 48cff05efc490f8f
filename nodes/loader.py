"""VMamba ControlNet Loader: one InstructGIE ``.safetensors`` -> a real ComfyUI ``CONTROL_NET``.

The file holds a diffusers ControlNet whose conditioning embedding is the VMamba hint encoder.
Its standard part goes through ComfyUI's own diffusers-ControlNet conversion
(``comfy.controlnet.load_controlnet_state_dict``, which recognises the format by
``controlnet_cond_embedding.conv_in.weight``, so placeholder conv-embedding tensors are added), and
the resulting ``cldm.ControlNet``'s ``input_hint_block`` is then replaced by :class:`VMambaHintBlock`.
Everything downstream — Apply ControlNet, KSampler, model management — is ComfyUI's.
"""
from __future__ import annotations

import logging
import os

from ._checks import fail
from ._common import CATEGORY

NODE = "VMamba ControlNet Loader"
#: The model folder registered for InstructGIE files (models/instructgie), besides "controlnet".
FOLDER = "instructgie"
SEARCH_FOLDERS = (FOLDER, "controlnet")
log = logging.getLogger("InstructGIE")


def register_model_folder() -> None:
    """Register ``models/instructgie`` with ComfyUI and create it, so users see where files go
    (a no-op outside ComfyUI; a read-only install only logs why the folder is missing)."""
    try:
        import folder_paths
    except ImportError:
        return
    path = os.path.join(folder_paths.models_dir, FOLDER)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        log.warning("InstructGIE: could not create %s (%s); put VMamba ControlNets in models/controlnet", path, e)
    folder_paths.add_model_folder_path(FOLDER, path, is_default=True)
    paths, exts = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | {".safetensors"})


def list_files() -> list[str]:
    """``.safetensors`` names in the instructgie and controlnet folders (instructgie first)."""
    import folder_paths

    names: list[str] = []
    for folder in SEARCH_FOLDERS:
        try:
            found = folder_paths.get_filename_list(folder)
        except KeyError:  # folder not registered
            continue
        names += [n for n in found if n.lower().endswith(".safetensors") and n not in names]
    return names


def resolve(name: str) -> str:
    import folder_paths

    for folder in SEARCH_FOLDERS:
        try:
            path = folder_paths.get_full_path(folder, name)
        except KeyError:
            path = None
        if path:
            return path
    raise fail(NODE, f"'{name}' was not found in models/{FOLDER} or models/controlnet; put the file there "
                     f"and press Refresh (R)")


def load_vmamba_controlnet_for_comfy(path: str, name: str | None = None):
    """Build ComfyUI's ``ControlNet`` from an InstructGIE file; see the module docstring."""
    import comfy.controlnet
    import comfy.model_detection

    from gie_core.models import VMambaHintEncoder, io
    from gie_core.models.configs import base_family

    from .hint_block import VMambaHintBlock

    name = name or os.path.basename(path)
    try:
        config, standard, hint_state = io.split_vmamba_state_dict(path, placeholder_cond_embedding=True)
    except io.NotVMambaControlNetError:
        raise fail(NODE, f"'{name}' is not an InstructGIE VMamba ControlNet (no InstructGIE metadata). "
                         f"Load ordinary ControlNets with ComfyUI's 'Load ControlNet Model' node.") from None
    except io.VMambaControlNetFileError as e:
        raise fail(NODE, f"'{name}' cannot be used: {e}") from None
    if comfy.model_detection.unet_config_from_diffusers_unet(standard) is None:
        raise fail(NODE, f"'{name}': its copied UNet encoder matches no architecture ComfyUI knows "
                         f"(base {base_family(config)!r}); ComfyUI loads SD1.x, SD2.x and SDXL ControlNets")
    control = comfy.controlnet.load_controlnet_state_dict(standard)
    cldm = getattr(control, "control_model", None)
    if cldm is None or not hasattr(cldm, "input_hint_block"):
        raise fail(NODE, f"'{name}': ComfyUI did not build a UNet ControlNet from it (got {type(control).__name__})")
    try:
        encoder = VMambaHintEncoder(config["hint_encoder_config"])
        encoder.load_state_dict(hint_state, strict=True)
    except (ValueError, RuntimeError) as e:  # RuntimeError: torch's key/shape mismatch report
        raise fail(NODE, f"'{name}': the VMamba hint encoder does not match its stored config: {e}") from None
    if encoder.config.out_channels != cldm.model_channels:
        raise fail(NODE, f"'{name}': the hint encoder gives {encoder.config.out_channels} channels but the "
                         f"ControlNet's first block has {cldm.model_channels}")
    encoder.eval()
    block = VMambaHintBlock(encoder.float(), context_dim=config.get("cross_attention_dim"), base=base_family(config))
    try:  # the unified instructions it was trained on, for the Instruction Unifier (None: older file)
        block.instruction_bank = io.read_instruction_bank(path)
    except io.VMambaControlNetFileError as e:
        raise fail(NODE, f"'{name}' cannot be used: {e}") from None
    # The placeholder conv block is dropped here; the patcher has not sized the model yet, so the
    # VMamba weights are counted by ComfyUI's memory management.
    cldm.input_hint_block = block.to(next(cldm.parameters()).device)
    control.control_model_wrapped.size = 0
    return control


def vmamba_hint_block(control_net):
    """The :class:`VMambaHintBlock` of a CONTROL_NET, or None when it is not a VMamba ControlNet."""
    from .hint_block import VMambaHintBlock

    block = getattr(getattr(control_net, "control_model", None), "input_hint_block", None)
    return block if isinstance(block, VMambaHintBlock) else None


class VMambaControlNetLoader:
    """Loads an InstructGIE VMamba ControlNet as a standard ComfyUI CONTROL_NET."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("CONTROL_NET",)
    RETURN_NAMES = ("control_net",)
    OUTPUT_TOOLTIPS = ("A ComfyUI ControlNet with the VMamba hint encoder; works with Apply ControlNet too.",)
    DESCRIPTION = ("Loads an InstructGIE VMamba ControlNet (.safetensors from models/instructgie or "
                   "models/controlnet) as a ComfyUI ControlNet.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"control_net_name": (list_files(), {
            "tooltip": "An InstructGIE VMamba ControlNet file in models/instructgie or models/controlnet."})}}

    def load(self, control_net_name):
        if not isinstance(control_net_name, str) or not control_net_name:
            raise fail(NODE, f"'control_net_name' must name a file, got {control_net_name!r}")
        path = resolve(control_net_name)
        return (load_vmamba_controlnet_for_comfy(path, control_net_name),)
