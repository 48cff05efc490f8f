"""The InstructGIE editing pipeline on diffusers.

:class:`InstructGIEPipeline` is diffusers' ``StableDiffusionControlNetInpaintPipeline`` driven by a
visual prompt (``gie_core.visual_prompt``): the whole grid is the inpainting image, the target cell
is the inpainting mask and the hint (the grid with the target cell blanked) is the ControlNet input.
diffusers' own loop then denoises the grid latent and, at every step, puts the known cells back
from the encoded grid (re-noised to the next timestep), so only the target cell is generated. The
scheduler, classifier-free guidance and ControlNet scale / start / end are diffusers' own.

What this subclass adds: the visual prompt in and the cropped edits out (:meth:`edit`,
:meth:`edit_prompt`), schedulers by short name, per-query seeds (bit-for-bit reproducible on CPU,
independent of the batch), instruction unification (``gie_core.instruction.unify``), the hint with a
target-marker channel for ControlNets that take one, and two savings over the stock pipeline:
known cells are put back from the VAE posterior *mean* (no sampling noise on the cells that must
not change) and the unused masked-image encode of the 9-channel path is skipped for 4-channel UNets.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import StableDiffusionControlNetInpaintPipeline

from . import control_input
from . import visual_prompt as vp_mod
from .visual_prompt import VisualPrompt

logger = logging.getLogger(__name__)

__all__ = ["InstructGIEPipeline", "InstructGIEOutput", "make_scheduler", "SCHEDULER_ALIASES",
           "unify_instruction"]

# Short names (ComfyUI/A1111 habits) -> (diffusers class name, extra config).
SCHEDULER_ALIASES: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "plms": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpm++_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpmpp_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "dpmpp_2s": ("DPMSolverSinglestepScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}


def make_scheduler(name: str, config: dict | Any):
    """A diffusers scheduler by short name (``"euler_a"``, ``"dpmpp_2m_karras"``, see
    :data:`SCHEDULER_ALIASES`) or class name (``"DDIMScheduler"``), configured from ``config``
    (another scheduler's ``.config``: the model's noise schedule is kept)."""
    import diffusers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"scheduler: expected a name, got {name!r}")
    key = name.strip()
    cls_name, extra = SCHEDULER_ALIASES.get(key.lower(), (key, {}))
    cls = getattr(diffusers, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        known = ", ".join(sorted(SCHEDULER_ALIASES))
        raise ValueError(f"scheduler: unknown scheduler {name!r}; use one of {known} or a diffusers "
                         f"scheduler class name such as DDIMScheduler")
    return cls.from_config(config, **extra)


_unify_warned = False


def unify_instruction(text: str, enabled: bool = True, bank=None):
    """Pass ``text`` through ``gie_core.instruction.unify`` (LIU) when enabled and available.
    With ``bank`` (the model's unified training instructions) the result is snapped onto the
    nearest entry when close; returns ``(instruction, BankMatch or None)``."""
    global _unify_warned
    if not isinstance(text, str):
        raise ValueError(f"instruction: expected a string, got {type(text).__name__}")
    if not enabled:
        return text, None
    try:
        from gie_core.instruction import unify, unify_match
    except ImportError:  # LIU not built in this checkout: edit with the text as given
        if not _unify_warned:
            logger.warning("gie_core.instruction.unify is not available; instructions are used as given")
            _unify_warned = True
        return text, None
    if not bank:
        return unify(text), None
    match = unify_match(text, bank=bank)
    return match.output, match


@dataclass
class InstructGIEOutput:
    """Result of an edit.

    ``edits``: ``[B,h,w,3]`` float 0..1, the target cells cropped back to each query's aspect (and
    original size on request), or a list when queries of different sizes were given; ``grids``:
    ``[B,Hg,Wg,3]`` the whole decoded grids; ``prompt``: the :class:`VisualPrompt` used;
    ``latents``: ``[B,4,Hg/8,Wg/8]`` the final grid latents; ``instruction``: the text the model
    saw; ``seeds``: the seed of each query (rerun with them to reproduce); ``instruction_match``:
    how the instruction met the model's instruction bank (a ``BankMatch``; ``None`` without a bank).
    """

    edits: torch.Tensor | list[torch.Tensor]
    grids: torch.Tensor
    prompt: VisualPrompt
    latents: torch.Tensor
    instruction: str
    seeds: list[int]
    instruction_match: Any = None


def _check_number(name: str, value, lo=None, hi=None, integer=False):
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f" in [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
        raise ValueError(f"{name}: expected {'an integer' if integer else 'a number'}{rng}, got {value!r}")


class InstructGIEPipeline(StableDiffusionControlNetInpaintPipeline):
    """Edit query images the way example pairs show, with SD1.5 + a (VMamba) ControlNet.

    Build it from components (``InstructGIEPipeline(vae=..., text_encoder=..., tokenizer=...,
    unet=..., controlnet=..., scheduler=...)``) or with ``gie_core.loading.load_pipeline``; then
    call :meth:`edit`. ``__call__`` stays diffusers' inpainting call.
    """

    def __init__(self, vae, text_encoder, tokenizer, unet, controlnet, scheduler, safety_checker=None,
                 feature_extractor=None, image_encoder=None, requires_safety_checker: bool = False):
        super().__init__(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                         controlnet=controlnet, scheduler=scheduler, safety_checker=safety_checker,
                         feature_extractor=feature_extractor, image_encoder=image_encoder,
                         requires_safety_checker=requires_safety_checker)

    # ---- diffusers hooks --------------------------------------------------------------------
    def _encode_vae_image(self, image: torch.Tensor, generator=None):
        # The known cells are put back from these latents at every step: use the posterior mean so
        # they carry no sampling noise (diffusers samples here).
        return self.vae.config.scaling_factor * self.vae.encode(image).latent_dist.mode()

    def prepare_mask_latents(self, mask, masked_image, batch_size, height, width, dtype, device,
                             generator, do_classifier_free_guidance):
        if self.unet.config.in_channels == 9:
            return super().prepare_mask_latents(mask, masked_image, batch_size, height, width, dtype,
                                                device, generator, do_classifier_free_guidance)
        # A 4-channel UNet only uses the latent-size mask; skip encoding the masked image.
        mask = torch.nn.functional.interpolate(
            mask, size=(height // self.vae_scale_factor, width // self.vae_scale_factor))
        mask = mask.to(device=device, dtype=dtype)
        if mask.shape[0] < batch_size:
            mask = mask.repeat(batch_size // mask.shape[0], 1, 1, 1)
        mask = torch.cat([mask] * 2) if do_classifier_free_guidance else mask
        return mask, None

    # ---- the editing API --------------------------------------------------------------------
    @property
    def uses_target_channel(self) -> bool:
        return control_input.spec_for(self.controlnet).target_channel

    def build_prompt(self, examples: Sequence, query: Any, tile: int = 256, resize: str = "fit",
                     **kwargs) -> VisualPrompt:
        """``gie_core.visual_prompt.build`` (kept here so callers need one import)."""
        return vp_mod.build(examples, query, tile=tile, resize=resize, **kwargs)

    def edit(self, examples: Sequence, query: Any, instruction: str, *, tile: int = 256,
             resize: str = "fit", background=(1.0, 1.0, 1.0), original_size: bool = False,
             **kwargs) -> InstructGIEOutput:
        """Edit ``query`` the way ``examples`` show.

        Args:
            examples: 1-4 ``(before, after)`` image pairs (see ``visual_prompt.build``).
            query: image(s) to edit, ``[B,H,W,C]`` float 0..1 (or PIL / numpy / a list of images).
            instruction: the edit in words (unified by LIU unless ``unify=False``).
            tile: cell size in pixels (multiple of 64; 256 -> a 512x512 grid for one pair).
            resize: ``"fit"``, ``"crop"`` or ``"stretch"`` (see ``visual_prompt``).
            original_size: crop the edits back to each query's original pixel size.
            **kwargs: sampling options of :meth:`edit_prompt`.
        """
        prompt = vp_mod.build(examples, query, tile=tile, resize=resize, background=background)
        return self.edit_prompt(prompt, instruction, original_size=original_size, **kwargs)

    @torch.no_grad()
    def edit_prompt(self, prompt: VisualPrompt, instruction: str, *, num_inference_steps: int = 20,
                    guidance_scale: float = 7.5, negative_prompt: str | None = None,
                    control_strength: float = 1.0, control_start: float = 0.0, control_end: float = 1.0,
                    seed: int | Sequence[int] | None = None, scheduler: str | None = None,
                    unify: bool = True, original_size: bool = False, eta: float = 0.0,
                    callback_on_step_end: Callable | None = None,
                    instruction_bank: Sequence[str] | str | None = "model") -> InstructGIEOutput:
        """Sample the target cells of a built :class:`VisualPrompt`.

        Args:
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance scale (<= 1 disables it).
            negative_prompt: text to steer away from (CFG's unconditional branch).
            control_strength: ControlNet output scale (diffusers' ``controlnet_conditioning_scale``).
            control_start, control_end: fraction of the steps during which the ControlNet acts.
            seed: one int (query ``i`` gets ``seed + i``), one per query, or None (random, reported
                in the output). Runs with the same seeds reproduce bit for bit on CPU.
            scheduler: a scheduler name for this call (see :func:`make_scheduler`); default: the
                pipeline's.
            unify: pass the instruction through ``gie_core.instruction.unify`` when available.
            instruction_bank: ``"model"`` (default) snaps the unified instruction onto the
                ControlNet's recorded training instructions (none for older files: unified only);
                a list of canonical instructions uses those; ``None`` turns snapping off.
            original_size: crop the edits back to the queries' original sizes.
            eta: DDIM eta (ignored by other schedulers).
            callback_on_step_end: diffusers' step callback ``(pipe, step, t, kwargs) -> dict``.
        """
        if not isinstance(prompt, VisualPrompt):
            raise ValueError(f"prompt: expected a VisualPrompt, got {type(prompt).__name__}")
        _check_number("num_inference_steps", num_inference_steps, 1, integer=True)
        _check_number("guidance_scale", guidance_scale, 0.0)
        _check_number("control_strength", control_strength, 0.0)
        _check_number("control_start", control_start, 0.0, 1.0)
        _check_number("control_end", control_end, 0.0, 1.0)
        if control_start >= control_end:
            raise ValueError(f"control_start ({control_start}) must be below control_end ({control_end})")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"negative_prompt: expected a string, got {type(negative_prompt).__name__}")
        if isinstance(instruction_bank, str):
            if instruction_bank != "model":
                raise ValueError(f"instruction_bank: expected 'model', a list of instructions or None, "
                                 f"got {instruction_bank!r}")
            instruction_bank = getattr(self.controlnet, "instruction_bank", None)
        text, match = unify_instruction(instruction, unify, instruction_bank)

        batch = prompt.batch_size
        if seed is None:
            seeds = [random.SystemRandom().randrange(2**31) for _ in range(batch)]
            seeds = [seeds[0] + i for i in range(batch)]
        elif isinstance(seed, int) and not isinstance(seed, bool):
            seeds = [seed + i for i in range(batch)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != batch:
                raise ValueError(f"seed: expected one seed per query ({batch}), got {len(seeds)}")
        # CPU generators: the same noise on every device, and per query so a query's result does
        # not depend on what else is in the batch.
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]

        grid = prompt.grid.permute(0, 3, 1, 2).contiguous()
        mask = prompt.target_mask[:, None]
        control = prompt.control_image_for(self.controlnet)
        want_c = int(getattr(self.controlnet.config, "conditioning_channels", control.shape[1]))
        if control.shape[1] != want_c:
            raise ValueError(f"controlnet: expects a {want_c}-channel hint, the visual prompt gives "
                             f"{control.shape[1]} (use_target_channel mismatch)")
        hg, wg = prompt.layout.grid_size

        captured: dict[str, torch.Tensor] = {}

        def on_step_end(pipe, step, timestep, kwargs):
            out = callback_on_step_end(pipe, step, timestep, kwargs) if callback_on_step_end else {}
            captured["latents"] = out.get("latents", kwargs["latents"]) if out else kwargs["latents"]
            return out or {}

        previous = self.scheduler
        if scheduler is not None:
            self.scheduler = make_scheduler(scheduler, previous.config)
        try:
            result = self(
                prompt=[text] * batch,
                image=grid,
                mask_image=mask,
                control_image=control,
                height=hg,
                width=wg,
                strength=1.0,
                num_inference_steps=num_inference_steps,
                guidance_scale=float(guidance_scale),
                negative_prompt=None if negative_prompt is None else [negative_prompt] * batch,
                eta=eta,
                generator=generators,
                output_type="pt",
                controlnet_conditioning_scale=float(control_strength),
                control_guidance_start=float(control_start),
                control_guidance_end=float(control_end),
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents"],
            )
        finally:
            self.scheduler = previous
            clear = getattr(self.controlnet, "clear_hint_cache", None)
            if callable(clear):  # hint features are per run; free them
                clear()
        grids = result.images.permute(0, 2, 3, 1).float().clamp(0, 1).contiguous()
        sizes = {tuple(p.content_box[2:]) if not original_size else tuple(p.source_box[2:])
                 for p in prompt.layout.placements}
        edits = (prompt.layout.crop(grids, original_size=original_size) if len(sizes) == 1
                 else prompt.layout.crop_each(grids, original_size=original_size))
        return InstructGIEOutput(edits=edits, grids=grids, prompt=prompt, latents=captured.get("latents"),
                                 instruction=text, seeds=seeds, instruction_match=match)
