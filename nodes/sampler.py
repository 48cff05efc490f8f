"""InstructGIE Sampler: fills the target cell of a visual prompt with ComfyUI's own sampling.

It does what a user would wire by hand — Apply ControlNet (Advanced) on both conditionings, VAE
Encode of the grid, Set Latent Noise Mask on the target cell, KSampler, VAE Decode — by calling
those ComfyUI functions, so previews, the progress bar, the cancel button and model management are
ComfyUI's. Then it puts the known cells back from the input grid and crops the edit out.
"""
from __future__ import annotations

import sys

import torch

from ._checks import check_choice, check_finite_output, check_float, check_image, check_int, check_mask, fail
from ._common import CATEGORY, LAYOUT_TYPE

NODE = "InstructGIE Sampler"
CROP_MODES = ("query size", "cell")
_CONTEXT_BASES = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}


def _comfy_nodes():
    """ComfyUI's top-level ``nodes`` module (already imported when ComfyUI runs)."""
    mod = sys.modules.get("nodes")
    if mod is None or not hasattr(mod, "common_ksampler"):
        import importlib

        mod = importlib.import_module("nodes")
    if not hasattr(mod, "common_ksampler"):
        raise RuntimeError(f"{NODE}: ComfyUI's 'nodes' module is not importable here")
    return mod


def sampler_lists():
    import comfy.samplers

    return comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS


def check_model_fits(model, block, vae) -> None:
    """Clear errors for a model, VAE or ControlNet of another family than the ControlNet's base."""
    if not hasattr(model, "get_model_object") or not hasattr(model, "model"):
        raise fail(NODE, f"'model' must be a MODEL from a checkpoint loader, got {type(model).__name__}")
    latent_format = model.get_model_object("latent_format")
    channels = getattr(latent_format, "latent_channels", None)
    if channels != 4:
        raise fail(NODE, f"'model' works on {channels}-channel latents; the VMamba ControlNet needs a Stable "
                         f"Diffusion (4-channel) model such as SD1.5")
    unet_config = getattr(getattr(model.model, "model_config", None), "unet_config", {}) or {}
    got = unet_config.get("context_dim")
    want = block.context_dim
    if got is not None and want is not None and int(got) != int(want):
        raise fail(NODE, f"the VMamba ControlNet was made for {_CONTEXT_BASES.get(want, block.base)} but 'model' is "
                         f"{_CONTEXT_BASES.get(int(got), 'another base model')} (text features {got} wide, not "
                         f"{want}); load a checkpoint of the ControlNet's base model")
    width = unet_config.get("model_channels")
    if width is not None and int(width) != int(block.encoder.config.out_channels):
        raise fail(NODE, f"'model' has first-block width {width} but the ControlNet {block.encoder.config.out_channels}; "
                         f"they come from different base models")
    if not (hasattr(vae, "encode") and hasattr(vae, "decode")):
        raise fail(NODE, f"'vae' must be a VAE, got {type(vae).__name__}")
    vae_channels = getattr(vae, "latent_channels", 4)
    if vae_channels != 4:
        raise fail(NODE, f"'vae' makes {vae_channels}-channel latents; use the SD VAE of the checkpoint")


def _rgb(x):
    """[B,H,W,1|3|4] -> [B,H,W,3] (gray repeated, alpha dropped)."""
    return x.expand(*x.shape[:3], 3) if x.shape[-1] == 1 else x[..., :3]


def control_image_for(block, hint, mask, batch: int):
    """The IMAGE given to Apply ControlNet: the hint, plus the target mask as a 4th channel for
    ControlNets trained with it (``use_target_channel``)."""
    if not block.uses_target_channel:
        return hint
    from gie_core import control_input

    x = control_input.build(hint.expand(batch, -1, -1, -1).movedim(-1, 1), mask.expand(batch, -1, -1), target_channel=True)
    return x.movedim(1, -1)


def check_inputs(model, control_net, vae, grid, hint, target_mask, layout, seed, steps, cfg, sampler_name, scheduler,
                 control_strength, control_start, control_end, denoise, crop, samplers, schedulers) -> dict:
    """Every check the sampler makes before touching ComfyUI; returns the normalised values.

    ``samplers`` / ``schedulers`` are ComfyUI's lists (passed in, so this runs without ComfyUI).
    """
    from gie_core.visual_prompt import GridLayout

    from .loader import vmamba_hint_block

    if not isinstance(layout, GridLayout):
        raise fail(NODE, f"'layout' must come from Visual Prompt Concatenate, got {type(layout).__name__}")
    grid = _rgb(check_image(grid, NODE, "grid"))
    hint = _rgb(check_image(hint, NODE, "hint"))
    b, hg, wg = grid.shape[:3]
    if (hg, wg) != tuple(layout.grid_size):
        raise fail(NODE, f"'grid' is {hg}x{wg} but the layout describes a {layout.grid_size[0]}x"
                         f"{layout.grid_size[1]} grid; connect the grid and layout of the same Visual Prompt node")
    if tuple(hint.shape[1:3]) != (hg, wg):
        raise fail(NODE, f"'hint' is {hint.shape[1]}x{hint.shape[2]} but 'grid' is {hg}x{wg}")
    if hint.shape[0] not in (1, b):
        raise fail(NODE, f"'hint' has a batch of {hint.shape[0]} but 'grid' has {b}")
    if layout.batch_size not in (1, b):
        raise fail(NODE, f"'layout' describes {layout.batch_size} queries but 'grid' has a batch of {b}")
    mask = check_mask(target_mask, NODE, "target_mask", size=(hg, wg), batch=b)
    if float(mask.sum()) == 0:
        raise fail(NODE, "'target_mask' is empty: nothing to generate (connect Visual Prompt Concatenate's target_mask)")
    block = vmamba_hint_block(control_net)
    if block is None:
        raise fail(NODE, "'control_net' is not a VMamba ControlNet; load it with the VMamba ControlNet Loader")
    check_model_fits(model, block, vae)
    v = dict(grid=grid, hint=hint, mask=mask, block=block)
    v["seed"] = check_int(seed, NODE, "seed", 0, 0xffffffffffffffff)
    v["steps"] = check_int(steps, NODE, "steps", 1, 10000)
    v["cfg"] = check_float(cfg, NODE, "cfg", 0.0, 100.0)
    v["sampler_name"] = check_choice(sampler_name, NODE, "sampler_name", samplers)
    v["scheduler"] = check_choice(scheduler, NODE, "scheduler", schedulers)
    v["strength"] = check_float(control_strength, NODE, "control_strength", 0.0, 10.0)
    v["start"] = check_float(control_start, NODE, "control_start", 0.0, 1.0)
    v["end"] = check_float(control_end, NODE, "control_end", 0.0, 1.0)
    if v["start"] > v["end"]:
        raise fail(NODE, f"'control_start' ({v['start']}) must not be after 'control_end' ({v['end']})")
    v["denoise"] = check_float(denoise, NODE, "denoise", 0.01, 1.0)
    v["crop"] = check_choice(crop, NODE, "crop", CROP_MODES)
    return v


class InstructGIESampler:
    """Generates the target cell of a visual prompt with a VMamba ControlNet and crops the edit."""

    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE", "IMAGE", "LATENT")
    RETURN_NAMES = ("edited", "grid", "latent")
    OUTPUT_TOOLTIPS = (
        "The edited query, cut out of the grid.",
        "The whole grid with the generated target cell (the other cells are the input's).",
        "The sampled grid latent (with the target-cell noise mask, for a refining KSampler).",
    )
    DESCRIPTION = ("Edits the query as the example pair shows: samples the grid's target cell with the "
                   "VMamba ControlNet (ComfyUI's samplers, previews and cancel), then crops it out.")

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = sampler_lists()
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 model (from Load Checkpoint); LoRAs applied before work."}),
                "positive": ("CONDITIONING", {"tooltip": "The instruction, encoded (Instruction Unifier or CLIP Text Encode)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative conditioning (an empty prompt is fine)."}),
                "control_net": ("CONTROL_NET", {"tooltip": "The VMamba ControlNet (VMamba ControlNet Loader)."}),
                "vae": ("VAE", {"tooltip": "The VAE that encodes the grid and decodes the result."}),
                "grid": ("IMAGE", {"tooltip": "Visual Prompt Concatenate's 'grid'."}),
                "hint": ("IMAGE", {"tooltip": "Visual Prompt Concatenate's 'hint' (the ControlNet input)."}),
                "target_mask": ("MASK", {"tooltip": "Visual Prompt Concatenate's 'target_mask'."}),
                "layout": (LAYOUT_TYPE, {"tooltip": "Visual Prompt Concatenate's 'layout', to crop the edit."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "The random seed of the noise."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Denoising steps."}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale."}),
                "sampler_name": (samplers, {"tooltip": "The sampling algorithm (ComfyUI's list)."}),
                "scheduler": (schedulers, {"tooltip": "The noise schedule (ComfyUI's list)."}),
                "control_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                               "tooltip": "How strongly the visual prompt steers the model."}),
                "control_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                            "tooltip": "When the ControlNet starts acting (fraction of sampling)."}),
                "control_end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                          "tooltip": "When the ControlNet stops acting (fraction of sampling)."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "1 regenerates the target cell fully; lower keeps more of what is there."}),
            },
            "optional": {
                "crop": (list(CROP_MODES), {"default": "query size",
                                            "tooltip": "Return the edit at the query's own size, or the whole target cell."}),
            },
        }

    def sample(self, model, positive, negative, control_net, vae, grid, hint, target_mask, layout, seed, steps,
               cfg, sampler_name, scheduler, control_strength=1.0, control_start=0.0, control_end=1.0,
               denoise=1.0, crop="query size"):
        samplers, schedulers = sampler_lists()
        v = check_inputs(model, control_net, vae, grid, hint, target_mask, layout, seed, steps, cfg, sampler_name,
                         scheduler, control_strength, control_start, control_end, denoise, crop, samplers, schedulers)
        grid, hint, mask, block = v["grid"], v["hint"], v["mask"], v["block"]
        hg, wg = grid.shape[1:3]

        # -- ComfyUI's own machinery ----------------------------------------------------------------
        comfy_nodes = _comfy_nodes()
        control_image = control_image_for(block, hint, mask, grid.shape[0])
        try:
            positive, negative = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(
                positive, negative, control_net, control_image, v["strength"], v["start"], v["end"], vae=vae)
            latent = {"samples": vae.encode(grid), "noise_mask": mask.reshape(-1, 1, hg, wg)}
            (out,) = comfy_nodes.common_ksampler(model, v["seed"], v["steps"], v["cfg"], v["sampler_name"],
                                                 v["scheduler"], positive, negative, latent, denoise=v["denoise"])
            decoded = vae.decode(out["samples"])
        finally:
            block.clear_hint_cache()  # features of this run are not needed any more
        if decoded.ndim == 5:  # video VAEs return [B, T, H, W, C]
            decoded = decoded.reshape(-1, *decoded.shape[-3:])
        decoded = check_finite_output(decoded.to(grid.device, torch.float32), NODE, "decoded image")
        if tuple(decoded.shape[1:3]) != (hg, wg):
            raise fail(NODE, f"the VAE decoded a {decoded.shape[1]}x{decoded.shape[2]} image for a {hg}x{wg} grid; "
                             f"use the SD VAE (factor 8)")
        m = mask[..., None].to(decoded)
        result_grid = (grid * (1.0 - m) + decoded[..., :3] * m).clamp(0.0, 1.0)
        edited = layout.crop(result_grid, original_size=(v["crop"] == "query size"))
        return (edited, result_grid, out)
