"""Visual Prompt Concatenate: example pairs + query -> grid, hint, target mask, layout."""
from __future__ import annotations

from ._checks import check_choice, check_image, check_int, fail
from ._common import CATEGORY, LAYOUT_TYPE

NODE = "Visual Prompt Concatenate"
MAX_PAIRS = 4
RESIZE_MODES = ("fit", "crop", "stretch")  # gie_core.visual_prompt.RESIZE_MODES, checked in tests


def _pair_names(i: int) -> tuple[str, str]:
    suffix = "" if i == 1 else f"_{i}"
    return f"example_before{suffix}", f"example_after{suffix}"


class VisualPromptConcatenate:
    """Lays 1-4 example pairs and the query out as InstructGIE's visual-prompt grid."""

    CATEGORY = CATEGORY
    FUNCTION = "concatenate"
    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", LAYOUT_TYPE)
    RETURN_NAMES = ("grid", "hint", "target_mask", "layout")
    OUTPUT_TOOLTIPS = (
        "The full grid: example pairs as rows [before | after], the query last, its 'after' cell blank.",
        "The ControlNet input: the grid with the target cell blanked.",
        "1 on the target cell (the query's 'after'), 0 elsewhere; the noise mask for sampling.",
        "The grid geometry, for cutting the edit back out (connect to the InstructGIE Sampler).",
    )
    DESCRIPTION = ("Builds InstructGIE's visual prompt: a grid with one row per example pair "
                   "(before | after) and the query last, whose empty 'after' cell the model fills.")

    @classmethod
    def INPUT_TYPES(cls):
        required = {
            "example_before": ("IMAGE", {"tooltip": "Example 1, before the edit."}),
            "example_after": ("IMAGE", {"tooltip": "Example 1, after the edit: shows what to do."}),
            "query": ("IMAGE", {"tooltip": "The image(s) to edit; a batch edits several queries with the same examples."}),
            "tile": ("INT", {"default": 256, "min": 64, "max": 1024, "step": 64,
                             "tooltip": "Cell size in pixels (multiple of 64). 256 gives a 512x512 grid for one "
                                        "example pair, SD1.5's native size."}),
            "resize": (list(RESIZE_MODES), {"default": "fit",
                                            "tooltip": "How images go into square cells: fit (keep aspect, pad), "
                                                       "crop (centre square) or stretch."}),
        }
        optional = {}
        for i in range(2, MAX_PAIRS + 1):
            b, a = _pair_names(i)
            optional[b] = ("IMAGE", {"tooltip": f"Example {i}, before (optional; needs example_after_{i} too)."})
            optional[a] = ("IMAGE", {"tooltip": f"Example {i}, after (optional; needs example_before_{i} too)."})
        return {"required": required, "optional": optional}

    def concatenate(self, example_before, example_after, query, tile=256, resize="fit", **extra):
        from gie_core import visual_prompt

        tile = check_int(tile, NODE, "tile", 64, 1024)
        if tile % 64:
            raise fail(NODE, f"'tile' must be a multiple of 64 (latent and VMamba grids), got {tile}")
        resize = check_choice(resize, NODE, "resize", RESIZE_MODES)
        known = {n for i in range(2, MAX_PAIRS + 1) for n in _pair_names(i)}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise fail(NODE, f"unknown inputs {unknown}")
        query = check_image(query, NODE, "query")
        batch = query.shape[0]
        pairs = []
        for i in range(1, MAX_PAIRS + 1):
            nb, na = _pair_names(i)
            before, after = (example_before, example_after) if i == 1 else (extra.get(nb), extra.get(na))
            if before is None and after is None:
                continue
            if before is None or after is None:
                missing = nb if before is None else na
                raise fail(NODE, f"example pair {i} is incomplete: connect '{missing}' too, or neither")
            imgs = []
            for name, img in ((nb, before), (na, after)):
                img = check_image(img, NODE, name)
                if img.shape[0] not in (1, batch):
                    raise fail(NODE, f"'{name}' has a batch of {img.shape[0]} but 'query' has {batch}; "
                                     f"use one example image (shared) or one per query")
                imgs.append(img)
            pairs.append(tuple(imgs))
        try:
            vp = visual_prompt.build(pairs, query, tile=tile, resize=resize)
        except ValueError as e:  # already names the argument; add the node for ComfyUI's error box
            raise fail(NODE, str(e)) from None
        return (vp.grid, vp.hint, vp.target_mask, vp.layout)
