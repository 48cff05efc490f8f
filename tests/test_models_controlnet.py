"""VMambaControlNetModel: from_unet, the no-op start, gradients, caching inside real diffusers
pipelines (text-to-image and inpaint), diffusers config round trips and a full-size SD1.5 forward."""
import gc

import numpy as np
import pytest
import torch

from gie_core.models import VMambaControlNetModel, VMambaHintEncoder
from gie_core.tiny import make_tiny_sd_components, make_tiny_unet

HINT = dict(dims=(16, 32), depths=(1, 1), mlp_ratio=2.0, scan_backend="reference")


def perturb(model: VMambaControlNetModel, seed: int = 0) -> None:
    """Give the zero-initialised convs random weights, as after some training."""
    g = torch.Generator().manual_seed(seed)
    zero_convs = [*model.controlnet_down_blocks, model.controlnet_mid_block, model.hint_encoder.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            for p in conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def stem_counter(model):
    rows = []
    model.hint_encoder.stem.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    return rows


@pytest.fixture(scope="module")
def unet():
    return make_tiny_unet(seed=0)


def test_from_unet_copies_encoder_and_installs_vmamba(unet):
    cn = VMambaControlNetModel.from_unet(unet, hint_encoder_config=HINT)
    assert isinstance(cn.controlnet_cond_embedding, VMambaHintEncoder)
    assert cn.hint_encoder_config.out_channels == unet.config.block_out_channels[0]
    for name, p in unet.down_blocks.state_dict().items():
        assert torch.equal(cn.down_blocks.state_dict()[name], p), name
    assert torch.equal(cn.conv_in.weight, unet.conv_in.weight)
    assert cn.config.hint_encoder_config["dims"] == [16, 32]
    fresh = VMambaControlNetModel.from_unet(unet, load_weights_from_unet=False)
    assert not torch.equal(fresh.conv_in.weight, unet.conv_in.weight)
    with pytest.raises(ValueError, match="out_channels=99.*block_out_channels"):
        VMambaControlNetModel.from_unet(unet, hint_encoder_config={**HINT, "out_channels": 99})


def test_fresh_controlnet_is_a_no_op(unet):
    torch.manual_seed(0)
    cn = VMambaControlNetModel.from_unet(unet, hint_encoder_config=HINT)
    sample, ehs, hint = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 32), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.count_nonzero(cn.hint_encoder(hint)) == 0
        out = cn(sample, 10, ehs, hint)
        for r in [*out.down_block_res_samples, out.mid_block_res_sample]:
            assert torch.count_nonzero(r) == 0
        plain = unet(sample, 10, ehs).sample
        controlled = unet(sample, 10, ehs, down_block_additional_residuals=out.down_block_res_samples,
                          mid_block_additional_residual=out.mid_block_res_sample).sample
    assert torch.equal(plain, controlled)


def test_gradients_flow_into_the_hint_encoder(unet):
    torch.manual_seed(0)
    cn = VMambaControlNetModel.from_unet(unet, hint_encoder_config=HINT)
    sample, ehs, hint = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 32), torch.rand(1, 3, 64, 64)
    # Fresh: only the zero convs get gradient (the ControlNet recipe); the hint encoder's own zero conv
    # sits behind the ControlNet's zero convs, so it is reached once those have moved.
    out = cn(sample, 10, ehs, hint)
    sum((r * torch.randn_like(r)).sum() for r in out.down_block_res_samples).backward()  # linear: r is 0
    assert cn.controlnet_down_blocks[0].weight.grad.abs().sum() > 0
    assert cn.hint_encoder.conv_out.weight.grad.abs().sum() == 0
    perturb(cn)
    cn.zero_grad()
    out = cn(sample, 10, ehs, hint)
    (sum(r.square().sum() for r in out.down_block_res_samples) + out.mid_block_res_sample.square().sum()).backward()
    enc = cn.hint_encoder
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_caching_inside_controlnet_forward(unet):
    torch.manual_seed(0)
    cn = VMambaControlNetModel.from_unet(unet, hint_encoder_config=HINT).double()
    perturb(cn)
    rows = stem_counter(cn)
    hint = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    sample, ehs = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 5, 32, dtype=torch.float64)
    cond = torch.cat([hint, hint])
    with torch.no_grad():
        cached = [cn(sample, t, ehs, cond).mid_block_res_sample for t in (900, 500, 100)]
        cn.hint_caching = False
        plain = [cn(sample, t, ehs, cond).mid_block_res_sample for t in (900, 500, 100)]
    assert rows == [1, 2, 2, 2]
    for a, b in zip(cached, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    cn.hint_caching = True
    cn.clear_hint_cache()
    with torch.no_grad():
        cn(sample, 1, ehs, cond)
    assert rows[-1] == 1


def test_diffusers_config_round_trip(tmp_path, unet):
    cn = VMambaControlNetModel.from_unet(unet, hint_encoder_config={**HINT, "use_target_channel": True})
    assert cn.config.conditioning_channels == 4
    cn.save_config(tmp_path)
    config = VMambaControlNetModel.load_config(tmp_path)
    rebuilt = VMambaControlNetModel.from_config(config)
    assert rebuilt.config.hint_encoder_config == cn.config.hint_encoder_config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in cn.state_dict().items()}
    # and diffusers' own save_pretrained / from_pretrained
    perturb(cn)
    cn.save_pretrained(tmp_path / "model")
    loaded = VMambaControlNetModel.from_pretrained(tmp_path / "model")
    for k, v in cn.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def make_pipeline(pipeline_cls, controlnet):
    parts = make_tiny_sd_components(seed=0)
    from diffusers import DDIMScheduler

    parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config)
    return pipeline_cls(**parts, controlnet=controlnet, safety_checker=None, feature_extractor=None,
                        requires_safety_checker=False).to("cpu")


def test_stable_diffusion_controlnet_pipeline_runs_and_caches():
    from diffusers import StableDiffusionControlNetPipeline

    unet = make_tiny_unet(seed=0)
    torch.manual_seed(0)
    cn = VMambaControlNetModel.from_unet(unet, hint_encoder_config=HINT)
    pipe = make_pipeline(StableDiffusionControlNetPipeline, cn)
    rows = stem_counter(cn)
    hint = torch.rand(1, 3, 64, 64)
    kwargs = dict(prompt="make it snowy", image=hint, num_inference_steps=2, guidance_scale=5.0,
                  height=64, width=64, output_type="np")
    fresh = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert fresh.shape == (1, 64, 64, 3) and np.isfinite(fresh).all()
    assert rows == [1]  # 2 steps × (cond + uncond) → one single-row encode
    perturb(cn)
    trained = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert rows == [1, 1]  # the weights changed: recomputed once, then reused
    assert np.abs(trained - fresh).max() > 1e-4  # the control path is wired into the UNet


def test_stable_diffusion_controlnet_inpaint_pipeline_runs():
    from diffusers import StableDiffusionControlNetInpaintPipeline

    unet = make_tiny_unet(seed=0)
    torch.manual_seed(0)
    cn = VMambaControlNetModel.from_unet(unet, hint_encoder_config=HINT)
    perturb(cn)
    pipe = make_pipeline(StableDiffusionControlNetInpaintPipeline, cn)
    rows = stem_counter(cn)
    image = torch.rand(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 32:, 32:] = 1  # the target cell of a 2×2 visual prompt
    out = pipe(prompt="make it snowy", image=image, mask_image=mask, control_image=image, num_inference_steps=2,
               guidance_scale=5.0, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    assert rows == [1]


@pytest.mark.slow
def test_full_size_sd15_unet_forward_at_32x32_latent():
    """SD1.5-shaped UNet (860M params, random weights) → VMamba ControlNet → one forward at 32×32 latent."""
    from diffusers import UNet2DConditionModel

    from gie_core.models import SD15_UNET_CONFIG

    with torch.device("meta"):  # random weights filled below: faster than the default initialisers
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    unet.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.dim() > 1:
                p.uniform_(-0.03, 0.03, generator=g)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)  # 1-D weights are norm scales
    try:
        cn = VMambaControlNetModel.from_unet(unet)
        assert cn.hint_encoder_config.out_channels == 320 and cn.config.cross_attention_dim == 768
        assert torch.equal(cn.mid_block.attentions[0].proj_in.weight, unet.mid_block.attentions[0].proj_in.weight)
        perturb(cn)
        sample, ehs, hint = torch.randn(1, 4, 32, 32), torch.randn(1, 77, 768), torch.rand(1, 3, 256, 256)
        with torch.no_grad():
            out = cn(sample, 500, ehs, hint)
        widths = [r.shape[1] for r in out.down_block_res_samples]
        sizes = [r.shape[-1] for r in out.down_block_res_samples]
        # SD1.5's skip connections: conv_in + 3 per level (2 resnets + downsampler; none on the last level)
        assert widths == [320] * 4 + [640] * 3 + [1280] * 5
        assert sizes == [32] * 3 + [16] * 3 + [8] * 3 + [4] * 3
        assert out.mid_block_res_sample.shape == (1, 1280, 4, 4)
        assert all(torch.isfinite(r).all() and r.abs().sum() > 0 for r in out.down_block_res_samples)
    finally:  # ~5 GB: give it back before the next test
        del unet
        cn = out = None
        gc.collect()
