"""Names shared by the InstructGIE nodes (no ComfyUI import here)."""

CATEGORY = "InstructGIE"
#: Custom ComfyUI type carrying a ``gie_core.visual_prompt.GridLayout`` between nodes.
LAYOUT_TYPE = "GIE_LAYOUT"
