"""ComfyUI adapters for gie_core: thin nodes, the only code of this repo that imports ComfyUI.

ComfyUI modules (comfy.*, folder_paths, nodes) are imported inside the node functions and
INPUT_TYPES, so the node classes import (and the pure nodes run) without ComfyUI.
"""
from .instruction import InstructionUnifier
from .loader import VMambaControlNetLoader, register_model_folder
from .regions import FaceRegionMask
from .sampler import InstructGIESampler
from .visual_prompt import VisualPromptConcatenate

NODE_CLASS_MAPPINGS = {
    "InstructGIEVMambaControlNetLoader": VMambaControlNetLoader,
    "InstructGIEVisualPromptConcatenate": VisualPromptConcatenate,
    "InstructGIEInstructionUnifier": InstructionUnifier,
    "InstructGIEFaceRegionMask": FaceRegionMask,
    "InstructGIESampler": InstructGIESampler,
}

# Every name starts with the pack's, so searching the node list for "InstructGIE" finds all five
# (and the node's own name still finds it: messages refer to "Visual Prompt Concatenate" etc.).
NODE_DISPLAY_NAME_MAPPINGS = {
    "InstructGIEVMambaControlNetLoader": "InstructGIE VMamba ControlNet Loader",
    "InstructGIEVisualPromptConcatenate": "InstructGIE Visual Prompt Concatenate",
    "InstructGIEInstructionUnifier": "InstructGIE Instruction Unifier",
    "InstructGIEFaceRegionMask": "InstructGIE Face-Region Mask",
    "InstructGIESampler": "InstructGIE Sampler",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "register_model_folder"]
