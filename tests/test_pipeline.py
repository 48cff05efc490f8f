"""InstructGIEPipeline end to end: tiny random SD + VMamba ControlNet written to disk and loaded back."""
import pytest
import torch

from gie_core import tiny
from gie_core import visual_prompt as vp
from gie_core.loading import load_pipeline
from gie_core.pipeline import InstructGIEPipeline, make_scheduler

TILE = 64
HINT = dict(dims=(8, 16), depths=(0, 1))


def _as_if_trained(controlnet, seed=0):
    """Fresh ControlNets have zero output convs (no effect); give them small random weights so the
    tests can see the control signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return controlnet


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    from gie_core.models import VMambaControlNetModel, save_vmamba_controlnet

    root = tmp_path_factory.mktemp("models")
    tiny.save_tiny_sd(root / "sd", seed=0)
    unet = tiny.make_tiny_unet(0)
    paths = {"base": root / "sd"}
    for target_channel in (False, True):
        cn = VMambaControlNetModel.from_unet(unet, hint_encoder_config=dict(HINT, use_target_channel=target_channel))
        path = root / f"cn_{int(target_channel)}.safetensors"
        save_vmamba_controlnet(_as_if_trained(cn), path)
        paths[f"cn{int(target_channel)}"] = path
    return paths


@pytest.fixture(scope="module")
def pipe(model_paths):
    p = load_pipeline(model_paths["base"], model_paths["cn0"], device="cpu", dtype="fp32")
    p.set_progress_bar_config(disable=True)
    return p


def smooth(h, w, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear",
                                           align_corners=True).permute(0, 2, 3, 1).contiguous()


def examples(n):
    return [(smooth(48, 48, seed=10 + i), smooth(48, 48, seed=20 + i)) for i in range(n)]


def encode_mean(vae, grid_bhwc):
    """An independent VAE encode of the input grid (posterior mean, SD scaling)."""
    with torch.no_grad():
        x = grid_bhwc.permute(0, 3, 1, 2) * 2 - 1
        return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor


EXPECTED_CROP = {"fit": (36, 64), "crop": (64, 64), "stretch": (64, 64)}  # 40x72 query in a 64 tile
EXPECTED_ORIGINAL = {"fit": (40, 72), "crop": (40, 40), "stretch": (40, 72)}


@pytest.mark.parametrize("resize", ["fit", "crop", "stretch"])
@pytest.mark.parametrize("n_examples", [1, 3])
def test_edit_end_to_end(pipe, resize, n_examples):
    query = torch.cat([smooth(40, 72, seed=1), smooth(40, 72, seed=2)])
    out = pipe.edit(examples(n_examples), query, "make it winter", tile=TILE, resize=resize,
                    num_inference_steps=2, seed=3, original_size=(n_examples == 3), guidance_scale=1.0)
    rows = n_examples + 1
    assert out.grids.shape == (2, rows * TILE, 2 * TILE, 3)
    expect = EXPECTED_ORIGINAL[resize] if n_examples == 3 else EXPECTED_CROP[resize]
    assert out.edits.shape == (2, *expect, 3)
    assert torch.isfinite(out.grids).all() and out.grids.min() >= 0 and out.grids.max() <= 1
    assert out.latents.shape == (2, 4, rows * TILE // 8, 2 * TILE // 8)

    # Known cells: the final latents hold exactly the (independently) encoded input grid there ...
    ref = encode_mean(pipe.vae, out.prompt.grid)
    known = 1 - out.prompt.layout.target_mask(factor=8)[:, None]
    assert torch.allclose(out.latents * known, ref * known, atol=1e-3)  # batched-conv rounding only
    # ... while the target cell was generated (it differs from the encoded blank cell).
    assert (out.prompt.layout.crop_latent(out.latents) - out.prompt.layout.crop_latent(ref)).abs().mean() > 0.05
    # Decoded: the SD VAE decoder's GroupNorms see the whole latent, so the pixel-level reference is the
    # decode of [encoded input on known cells | generated target], not a round trip of the input alone.
    blended = ref * known + out.latents * (1 - known)
    with torch.no_grad():
        dec = pipe.vae.decode(blended / pipe.vae.config.scaling_factor).sample
    dec = ((dec + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    assert (dec - out.grids).abs().max() < 1e-3
    # the edits are the target cells of the grids, cut by the layout
    assert torch.equal(out.edits, out.prompt.layout.crop(out.grids, original_size=(n_examples == 3)))


def test_seeds_reproduce_bit_for_bit_and_per_query(pipe):
    ex, q = examples(1), torch.cat([smooth(64, 64, seed=4), smooth(64, 64, seed=5)])
    kw = dict(tile=TILE, num_inference_steps=2, guidance_scale=1.0, scheduler="euler_a")  # ancestral: noise every step
    a = pipe.edit(ex, q, "make it winter", seed=7, **kw)
    b = pipe.edit(ex, q, "make it winter", seed=7, **kw)
    c = pipe.edit(ex, q, "make it winter", seed=8, **kw)
    assert a.seeds == [7, 8]
    assert torch.equal(a.grids, b.grids) and torch.equal(a.latents, b.latents)
    assert not torch.allclose(a.grids, c.grids)
    # query i uses seed + i: the second query alone with seed 8 gives the same edit
    alone = pipe.edit(ex, q[1:], "make it winter", seed=8, **kw)
    assert torch.allclose(alone.latents[0], a.latents[1], atol=1e-4)
    r = pipe.edit(ex, q[:1], "make it winter", tile=TILE, num_inference_steps=1, seed=None, guidance_scale=1.0)
    assert isinstance(r.seeds[0], int)


def test_schedulers_by_name_cfg_and_control(pipe):
    ex, q = examples(1), smooth(64, 64, seed=6)
    base = dict(tile=TILE, num_inference_steps=2, seed=1, guidance_scale=1.0)  # CFG off unless tested
    default_sched = type(pipe.scheduler)
    runs = {name: pipe.edit(ex, q, "make it winter", scheduler=name, **base).latents
            for name in ("ddim", "euler_a", "dpmpp_2m_karras", "UniPCMultistepScheduler")}
    assert type(pipe.scheduler) is default_sched  # the per-call scheduler does not stick
    assert not torch.allclose(runs["ddim"], runs["euler_a"])
    for lat in runs.values():
        assert torch.isfinite(lat).all()
    ref = runs["ddim"]
    cfg = pipe.edit(ex, q, "make it winter", scheduler="ddim", **{**base, "guidance_scale": 7.5}).latents
    no_ctrl = pipe.edit(ex, q, "make it winter", scheduler="ddim", control_strength=0.0, **base).latents
    late = pipe.edit(ex, q, "make it winter", scheduler="ddim", control_start=0.5, **base).latents
    other_text = pipe.edit(ex, q, "make it black and white", scheduler="ddim", **base).latents
    for other in (cfg, no_ctrl, late, other_text):
        assert not torch.allclose(ref, other, atol=1e-4)
    # control_strength 0 is the UNet alone: the same as a ControlNet that acts on no step
    none_late = pipe.edit(ex, q, "make it winter", scheduler="ddim", control_start=0.0, control_end=1e-6,
                          **base).latents
    assert torch.allclose(no_ctrl, none_late, atol=1e-5)


def test_target_channel_controlnet(model_paths):
    p = load_pipeline(model_paths["base"], model_paths["cn1"], device="cpu")
    p.set_progress_bar_config(disable=True)
    assert p.uses_target_channel and p.controlnet.config.conditioning_channels == 4
    out = p.edit(examples(1), smooth(64, 64), "make it winter", tile=TILE, num_inference_steps=1, seed=0)
    assert out.grids.shape == (1, 128, 128, 3)


def test_edit_prompt_with_a_built_prompt_and_unify(pipe):
    prompt = vp.build(examples(2), smooth(50, 50, b=2), tile=TILE, resize="crop")
    out = pipe.edit_prompt(prompt, "Make it look like winter!", num_inference_steps=1, seed=0)
    assert out.prompt is prompt and out.edits.shape == (2, 64, 64, 3)
    raw = pipe.edit_prompt(prompt, "Make it look like winter!", num_inference_steps=1, seed=0, unify=False)
    assert raw.instruction == "Make it look like winter!"
    try:
        from gie_core.instruction import unify
    except ImportError:
        assert out.instruction == raw.instruction
    else:
        assert out.instruction == unify("Make it look like winter!")


def test_queries_of_different_sizes_give_a_list(pipe):
    out = pipe.edit(examples(1), [smooth(40, 64), smooth(64, 32)], "make it winter", tile=TILE,
                    num_inference_steps=1, seed=0, original_size=True)
    assert [tuple(e.shape) for e in out.edits] == [(1, 40, 64, 3), (1, 64, 32, 3)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(num_inference_steps=2.5), "num_inference_steps"),
    (dict(guidance_scale=-1), "guidance_scale"),
    (dict(control_strength=-0.5), "control_strength"),
    (dict(control_start=0.6, control_end=0.4), "control_start"),
    (dict(control_end=1.5), "control_end"),
    (dict(seed=[1, 2, 3]), "seed"),
    (dict(scheduler="warp_drive"), "scheduler"),
    (dict(negative_prompt=3), "negative_prompt"),
])
def test_bad_arguments(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe.edit(examples(1), smooth(64, 64), "make it winter", tile=TILE, **kwargs)


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="tile"):
        pipe.edit(examples(1), smooth(64, 64), "x", tile=100)
    with pytest.raises(ValueError, match="instruction"):
        pipe.edit(examples(1), smooth(64, 64), None, tile=TILE)
    with pytest.raises(ValueError, match="VisualPrompt"):
        pipe.edit_prompt(torch.zeros(1, 128, 128, 3), "x")
    # a ControlNet whose hint has neither 3 nor 4 channels cannot take a visual prompt
    from diffusers import ControlNetModel

    odd = ControlNetModel.from_unet(pipe.unet, conditioning_channels=1,
                                    conditioning_embedding_out_channels=(8, 8, 8, 8))
    other = InstructGIEPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                unet=pipe.unet, controlnet=odd, scheduler=pipe.scheduler)
    with pytest.raises(ValueError, match="1-channel hint"):
        other.edit(examples(1), smooth(64, 64), "x", tile=TILE, num_inference_steps=1)


def test_make_scheduler_keeps_the_noise_schedule(pipe):
    s = make_scheduler("euler", pipe.scheduler.config)
    assert s.config.beta_schedule == pipe.scheduler.config.beta_schedule
    assert s.config.beta_end == pipe.scheduler.config.beta_end
    s2 = make_scheduler("dpmpp_2m_karras", pipe.scheduler.config)
    assert s2.config.use_karras_sigmas
    with pytest.raises(ValueError, match="scheduler"):
        make_scheduler("StableDiffusionPipeline", pipe.scheduler.config)


def test_pipeline_is_a_diffusers_controlnet_inpaint_pipeline(pipe):
    from diffusers import StableDiffusionControlNetInpaintPipeline

    assert isinstance(pipe, StableDiffusionControlNetInpaintPipeline)
    assert isinstance(pipe, InstructGIEPipeline)


def test_every_scheduler_alias_builds():
    from diffusers import DDIMScheduler

    from gie_core.pipeline import SCHEDULER_ALIASES

    cfg = DDIMScheduler.from_config(tiny.sd15_scheduler_config()).config
    for name, (cls_name, extra) in SCHEDULER_ALIASES.items():
        s = make_scheduler(name, cfg)
        assert type(s).__name__ == cls_name
        assert all(s.config[k] == v for k, v in extra.items())
        assert s.config.beta_end == 0.012
