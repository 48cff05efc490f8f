"""Instruction Unifier: paraphrased instruction -> canonical instruction (LIU), optionally encoded."""
from __future__ import annotations

from typing import Any

from ._checks import check_choice, fail
from ._common import CATEGORY

NODE = "Instruction Unifier"


def backend_choices() -> list[str]:
    """The LIU backends gie_core offers, the offline default first."""
    from gie_core import instruction

    names = list(getattr(instruction, "BACKENDS", ("rules",)))
    if "rules" in names:
        names.remove("rules")
        names.insert(0, "rules")
    return names


class InstructionUnifier:
    """Maps any phrasing of an edit to one canonical instruction, as InstructGIE's LIU does."""

    CATEGORY = CATEGORY
    FUNCTION = "unify"
    RETURN_TYPES = ("STRING", "CONDITIONING", "STRING")
    RETURN_NAMES = ("instruction", "conditioning", "bank_match")
    OUTPUT_TOOLTIPS = (
        "The unified (canonical) instruction.",
        "The unified instruction encoded by the connected CLIP (only when a CLIP is connected).",
        "How the instruction met the model's instruction bank: the nearest trained instruction, "
        "its similarity, and whether it was used.",
    )
    DESCRIPTION = ("Language instruction unification: turns paraphrases of an edit ('make it snowy', "
                   "'add snow to the scene') into the one wording the model was trained with.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "default": "make it look like winter",
                                    "tooltip": "The edit instruction, in your own words."}),
                "backend": (backend_choices(), {"tooltip": "How to unify: 'rules' is offline and "
                                                           "deterministic; others need their extra installed."}),
            },
            "optional": {
                "clip": ("CLIP", {"tooltip": "Optional: a text encoder; then the unified instruction is "
                                             "also returned as CONDITIONING (like CLIP Text Encode)."}),
                "bank": ("STRING", {"multiline": True, "default": "",
                                    "tooltip": "Canonical instructions to snap onto, one per line (default: "
                                               "the connected ControlNet's training instructions)."}),
                "llm_model": ("STRING", {"default": "",
                                         "tooltip": "'llm' backend only: path of a local transformers "
                                                    "causal-LM folder (nothing is downloaded)."}),
                "control_net": ("CONTROL_NET", {"tooltip": "Optional: the InstructGIE ControlNet you edit "
                                                           "with; its recorded training instructions become "
                                                           "the bank the instruction is snapped onto."}),
            },
        }

    def unify(self, text, backend="rules", clip=None, bank="", llm_model="", control_net=None):
        from gie_core import instruction

        if not isinstance(text, str):
            raise fail(NODE, f"'text' must be a string, got {type(text).__name__}")
        if not text.strip():
            raise fail(NODE, "'text' is empty: type the edit instruction (e.g. 'make it look like winter')")
        if len(text) > instruction.MAX_CHARS:
            raise fail(NODE, f"'text' is {len(text)} characters; at most {instruction.MAX_CHARS} are accepted")
        backend = check_choice(backend, NODE, "backend", backend_choices())
        for name, value in (("bank", bank), ("llm_model", llm_model)):
            if value is not None and not isinstance(value, str):
                raise fail(NODE, f"'{name}' must be text, got {type(value).__name__}")
        lines = [ln.strip() for ln in (bank or "").splitlines() if ln.strip()]
        if not lines and control_net is not None:
            from .loader import vmamba_hint_block
            block = vmamba_hint_block(control_net)
            if block is None:
                raise fail(NODE, "'control_net' is not an InstructGIE VMamba ControlNet; load it with "
                                 "the InstructGIE ControlNet loader")
            lines = list(getattr(block, "instruction_bank", None) or [])
        options: dict[str, Any] = {}
        if backend == "embedding" and not lines:
            raise fail(NODE, "the 'embedding' backend needs a bank: connect the InstructGIE ControlNet "
                             "or type canonical instructions into 'bank', one per line")
        if backend == "llm":
            if not (llm_model or "").strip():
                raise fail(NODE, "the 'llm' backend needs 'llm_model': the path of a local causal-LM folder")
            options["model"] = llm_model.strip()
        try:
            if lines:
                match = instruction.unify_match(text, backend=backend, bank=lines, **options)
                unified, shown = match.output, match.describe()
            else:
                unified = instruction.unify(text, backend=backend, **options)
                shown = "no instruction bank (connect the InstructGIE ControlNet to snap onto its training instructions)"
        except (ValueError, ImportError, OSError) as e:  # e.g. an optional backend's package is missing
            raise fail(NODE, str(e)) from None
        if not isinstance(unified, str) or not unified.strip():
            raise fail(NODE, f"backend {backend!r} returned no instruction for {text!r}")
        conditioning = None
        if clip is not None:
            if not (hasattr(clip, "tokenize") and hasattr(clip, "encode_from_tokens_scheduled")):
                raise fail(NODE, f"'clip' must be a CLIP from a checkpoint or CLIP loader, got {type(clip).__name__}")
            # What ComfyUI's CLIP Text Encode node does.
            conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(unified))
        return {"ui": {"text": [f"{unified}\n{shown}"]}, "result": (unified, conditioning, shown)}
