"""Face-Region Mask: IMAGE -> MASK of detail-critical regions (faces first)."""
from __future__ import annotations

from ._checks import check_choice, check_finite_output, check_image, check_int, fail
from ._common import CATEGORY

NODE = "Face-Region Mask"
MAX_GROW = 512
#: Defaults of the node (and of the shipped workflows): a margin around the face, softened, so an
#: edit or a re-edit through the mask blends in. The library's region_mask defaults stay 0.
DEFAULT_DILATE = DEFAULT_FEATHER = 8


#: Region names offered in the menu (gie_core.regions.ALIASES without plural duplicates); "face"
#: works offline, the others need a face-parsing or Mask2Former model folder.
REGIONS = ("face", "eyes", "brows", "lips", "ears", "hair", "skin", "person")


def region_choices() -> list[str]:
    return list(REGIONS)


def backend_choices() -> list[str]:
    from gie_core import regions

    names = list(getattr(regions, "BACKENDS", ("auto",)))
    if "auto" in names:
        names.remove("auto")
    return ["auto"] + names


class FaceRegionMask:
    """Finds faces (or another region) and returns a soft mask, as used by selective area matching."""

    CATEGORY = CATEGORY
    FUNCTION = "mask"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("1 on the detected region, 0 elsewhere, soft at the edges when feathered.",)
    DESCRIPTION = ("Masks detail-critical regions (faces first) of an image, e.g. to inspect them or to "
                   "re-edit them with a noise mask.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image(s) to look for the region in."}),
                "region": (region_choices(), {"tooltip": "Which region to mask."}),
                "backend": (backend_choices(), {"tooltip": "The detector; 'auto' takes the best one installed "
                                                           "(the offline default needs nothing extra)."}),
                "dilate": ("INT", {"default": DEFAULT_DILATE, "min": 0, "max": MAX_GROW, "step": 1,
                                   "tooltip": "Grow the mask by this many pixels."}),
                "feather": ("INT", {"default": DEFAULT_FEATHER, "min": 0, "max": MAX_GROW, "step": 1,
                                    "tooltip": "Soften the mask edge over this many pixels."}),
            },
            "optional": {
                "custom_region": ("STRING", {"default": "",
                                             "tooltip": "Overrides 'region' when set: combine with '+' (face+hair) "
                                                        "or name a model label (label:car)."}),
                "model_path": ("STRING", {"default": "",
                                          "tooltip": "Learned backends only: path of a local Mask2Former or "
                                                     "face-parsing model folder (nothing is downloaded)."}),
            },
        }

    def mask(self, image, region="face", backend="auto", dilate=DEFAULT_DILATE, feather=DEFAULT_FEATHER,
             custom_region="", model_path=""):
        from gie_core import regions

        image = check_image(image, NODE, "image")
        region = check_choice(region, NODE, "region", region_choices())
        if custom_region is not None and not isinstance(custom_region, str):
            raise fail(NODE, f"'custom_region' must be text, got {type(custom_region).__name__}")
        custom = (custom_region or "").strip()
        if custom:
            region = custom
        backend = check_choice(backend, NODE, "backend", backend_choices())
        dilate = check_int(dilate, NODE, "dilate", 0, MAX_GROW)
        feather = check_int(feather, NODE, "feather", 0, MAX_GROW)
        if model_path is not None and not isinstance(model_path, str):
            raise fail(NODE, f"'model_path' must be text, got {type(model_path).__name__}")
        model = (model_path or "").strip() or None
        rgb = image[..., :3] if image.shape[-1] >= 3 else image.expand(*image.shape[:3], 3)
        try:
            m = regions.region_mask(rgb, region=region, backend=backend, dilate=dilate, feather=feather,
                                    model=model)
        except (ValueError, ImportError, OSError) as e:  # e.g. an optional detector's package is missing
            raise fail(NODE, str(e)) from None
        b, h, w = image.shape[:3]
        if tuple(m.shape) != (b, h, w):
            raise fail(NODE, f"the detector returned a mask of shape {tuple(m.shape)} for an image of "
                             f"{b}x{h}x{w}; please report this")
        m = check_finite_output(m.float(), NODE, "mask")
        return (m.clamp(0.0, 1.0),)
