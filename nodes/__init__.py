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

NODE_DISPLAY_NAME_MAPPINGS = {
    "InstructGIEVMambaControlNetLoader": "VMamba ControlNet Loader",
    "InstructGIEVisualPromptConcatenate": "Visual Prompt Concatenate",
    "InstructGIEInstructionUnifier": "Instruction Unifier",
    "InstructGIEFaceRegionMask": "Face-Region Mask",
    "InstructGIESampler": "InstructGIE Sampler",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "register_model_folder"]
