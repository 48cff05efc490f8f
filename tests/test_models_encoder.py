"""VMambaHintEncoder: config, shapes, zero init, global receptive field, bad input, hint caching."""
import json

import pytest
import torch

from gie_core.models import CachedHintEncoder, HintEncoderConfig, HintEncoderConfigError, VMambaHintEncoder

SMALL = dict(dims=(16, 32), depths=(1, 1), out_channels=24, mlp_ratio=2.0, scan_backend="reference")


def randomise_output_conv(enc: VMambaHintEncoder, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        enc.conv_out.weight.copy_(torch.randn(enc.conv_out.weight.shape, generator=g) * 0.05)
        enc.conv_out.bias.copy_(torch.randn(enc.conv_out.bias.shape, generator=g) * 0.05)


class StemCounter:
    """Counts calls and rows through the encoder's stem (= real encodes)."""

    def __init__(self, enc):
        self.calls, self.rows = 0, 0
        enc.stem.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.calls += 1
        self.rows += inputs[0].shape[0]


# -- config ------------------------------------------------------------------------------------------
def test_default_config_is_v05_noz_at_latent_resolution_with_d_inner_96():
    cfg = HintEncoderConfig()
    assert (cfg.ssm_variant, cfg.d_state, cfg.ssm_ratio, cfg.out_channels) == ("v05_noz", 1, 1.0, 320)
    torch.manual_seed(0)
    enc = VMambaHintEncoder(cfg)
    seen = []
    for stage in enc.stages:
        for blk in stage.blocks:
            blk.op.register_forward_pre_hook(lambda m, a: seen.append((a[0].shape[1:3], m.d_inner)))
    with torch.no_grad():
        out = enc(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 320, 8, 12)
    # every SS2D runs at the latent grid (H/8 × W/8) with d_inner 96: 64×64 tokens at a 512 grid
    assert seen and all(s == ((8, 12), 96) for s in seen)


def test_config_json_round_trip_and_errors():
    cfg = HintEncoderConfig(ssm_variant="v0", use_target_channel=True, **SMALL)
    assert (cfg.d_state, cfg.ssm_ratio) == (16, 2.0)  # v0 defaults resolved on construction
    again = HintEncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(HintEncoderConfigError, match="unknown key.*'dimz'"):
        HintEncoderConfig.from_dict({"dimz": (8,)})
    with pytest.raises(ValueError, match="latent factor 8"):
        HintEncoderConfig(patch_size=4, dims=(8,), depths=(1,))
    with pytest.raises(ValueError, match="latent factor 4"):
        HintEncoderConfig(patch_size=4, dims=(8, 16), depths=(0, 1), latent_factor=4)
    with pytest.raises(ValueError, match="latent_factor must be a power of 2"):
        HintEncoderConfig(patch_size=2, dims=(8, 16), depths=(0, 1), latent_factor=3)
    with pytest.raises(ValueError, match="equal length"):
        HintEncoderConfig(dims=(8, 16), depths=(1,))
    with pytest.raises(ValueError, match="ssm_variant"):
        HintEncoderConfig(ssm_variant="v9")
    with pytest.raises(ValueError, match="use_target_channel must be true or false"):
        HintEncoderConfig.from_dict({"use_target_channel": "yes"})
    with pytest.raises(ValueError, match="scan_backend"):
        HintEncoderConfig(scan_backend="cuda-magic")


# -- forward -----------------------------------------------------------------------------------------
def test_latent_factor_4_maps_to_a_factor_4_latent_and_checks_the_hint_size():
    # Tiny from-scratch stacks may use a factor-4 VAE: the hint must land on that latent grid.
    torch.manual_seed(0)
    enc = VMambaHintEncoder(HintEncoderConfig(**{**SMALL, "patch_size": 2, "latent_factor": 4}))
    randomise_output_conv(enc)
    assert enc(torch.rand(1, 3, 36, 20)).shape == (1, 24, 9, 5)
    with pytest.raises(ValueError, match="positive multiples of 4, got 34×20"):
        enc(torch.rand(1, 3, 34, 20))


def test_shapes_zero_init_and_target_channel():
    torch.manual_seed(0)
    enc = VMambaHintEncoder(HintEncoderConfig(use_target_channel=True, **SMALL))
    out = enc(torch.rand(2, 4, 40, 24))
    assert out.shape == (2, 24, 5, 3)
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv: a fresh ControlNet is a no-op
    randomise_output_conv(enc)
    assert enc(torch.rand(2, 4, 40, 24)).abs().sum() > 0


def test_receptive_field_spans_the_whole_grid():
    """A pixel in the top-left cell changes the features of the bottom-right latent cell: the scan,
    not a local conv stack, carries information across the visual prompt."""
    torch.manual_seed(0)
    enc = VMambaHintEncoder(HintEncoderConfig(**SMALL)).eval()
    randomise_output_conv(enc)
    enc.caching = False
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[:, :, 0:4, 0:4] = 1 - y[:, :, 0:4, 0:4]
    with torch.no_grad():
        a, b = enc(x), enc(y)
    assert (a[..., -1, -1] - b[..., -1, -1]).abs().max() > 1e-6


@pytest.mark.parametrize("shape,match", [
    ((1, 3, 36, 64), "multiples of 8"),
    ((1, 4, 64, 64), "3 channels"),
    ((3, 64, 64), r"shape \[batch, 3, height, width\]"),
])
def test_bad_hints_raise_clear_errors(shape, match):
    enc = VMambaHintEncoder(HintEncoderConfig(**SMALL))
    with pytest.raises(ValueError, match=match):
        enc(torch.rand(shape))


def test_target_channel_required_when_configured_and_nan_rejected():
    enc = VMambaHintEncoder(HintEncoderConfig(use_target_channel=True, **SMALL))
    with pytest.raises(ValueError, match="4 channels.*target-cell"):
        enc(torch.rand(1, 3, 16, 16))
    bad = torch.rand(1, 4, 16, 16)
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        enc(bad)
    with torch.no_grad(), pytest.raises(ValueError, match="NaN"):
        enc(bad)


# -- caching -----------------------------------------------------------------------------------------
@pytest.fixture
def encoder():
    torch.manual_seed(0)
    # float64: batch-size-dependent float32 rounding (~1e-6) would blur "same output with and without cache"
    enc = VMambaHintEncoder(HintEncoderConfig(**SMALL)).eval()
    randomise_output_conv(enc)
    return enc.double()


def test_cache_encodes_once_over_steps_and_cfg_halves(encoder):
    count = StemCounter(encoder)
    hint = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    cfg_batch = torch.cat([hint, hint])  # what diffusers' pipelines pass with classifier-free guidance
    with torch.no_grad():
        outs = [encoder(cfg_batch) for _ in range(5)]
        encoder.caching = False
        fresh = encoder(cfg_batch)
    assert count.calls == 2 and count.rows == 1 + 2  # one 1-row encode cached, then one uncached 2-row encode
    for o in outs:
        torch.testing.assert_close(o, fresh, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[0][0], outs[0][1], rtol=0, atol=0)


def test_cache_recomputes_for_a_different_hint_of_the_same_shape(encoder):
    count = StemCounter(encoder)
    a, b = torch.rand(2, 3, 32, 32, dtype=torch.float64), torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        fa = encoder(a)
        fb = encoder(b)
        fa2 = encoder(a)  # still cached (several distinct hints are kept)
    assert count.rows == 4
    assert not torch.allclose(fa, fb)
    torch.testing.assert_close(fa2, fa, rtol=0, atol=0)
    # an in-place edit of the caller's tensor is a different hint: the cache compares against its own copy
    with torch.no_grad():
        b[:, :, :4, :4] = 0.5
        fb2 = encoder(b)
    assert count.rows == 6 and not torch.allclose(fb2, fb)


def test_cache_rows_deduplicated_within_a_batch(encoder):
    count = StemCounter(encoder)
    a, b = torch.rand(1, 3, 16, 16, dtype=torch.float64), torch.rand(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        out = encoder(torch.cat([a, b, a, b]))
        encoder.caching = False
        ref = encoder(torch.cat([a, b, a, b]))
    assert count.calls == 2 and count.rows == 2 + 4
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_no_caching_with_grad_and_after_weight_changes(encoder):
    count = StemCounter(encoder)
    hint = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    for _ in range(3):
        encoder(hint).sum().backward()
    assert count.calls == 3  # training: never cached
    with torch.no_grad():
        before = encoder(hint)
        opt = torch.optim.SGD(encoder.parameters(), lr=0.1)
        opt.step()  # grads from above: weights change in place
        after = encoder(hint)
        encoder.load_state_dict({k: v * 1.01 for k, v in encoder.state_dict().items()})
        reloaded = encoder(hint)
    assert count.calls == 6
    assert not torch.allclose(before, after) and not torch.allclose(after, reloaded)


def test_cache_switch_and_clear(encoder):
    count = StemCounter(encoder)
    hint = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        encoder(hint)
        encoder(hint)
        encoder.clear_hint_cache()
        encoder(hint)
        encoder.caching = False
        encoder(hint)
        encoder(hint)
    assert count.calls == 4
    assert len(encoder.hint_cache) == 0


def test_cached_hint_encoder_comfyui_signature(encoder):
    """ComfyUI calls input_hint_block(hint, emb, context) every step; the wrapper encodes once."""
    count = StemCounter(encoder)
    block = CachedHintEncoder(encoder)
    hint = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        outs = [block(hint, torch.randn(2, 64), torch.randn(2, 7, 32)) for _ in range(4)]
    assert count.calls == 1
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert set(block.state_dict()) == {"encoder." + k for k in encoder.state_dict()}
    block.caching = False
    with torch.no_grad():
        block(hint)
    assert count.calls == 2


def test_cached_hint_encoder_wraps_a_plain_encoder():
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    torch.manual_seed(0)
    conv = ControlNetConditioningEmbedding(32, 3, (8, 16, 16, 16))
    calls = []
    conv.conv_in.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    block = CachedHintEncoder(conv)
    hint = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = block(hint, None, None)
        b = block(hint, None, None)
    assert calls == [2] and torch.equal(a, b)


def test_batch_larger_than_cache_capacity_still_hits(encoder):
    encoder.hint_cache.max_entries = 2
    count = StemCounter(encoder)
    hints = torch.rand(5, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        first = encoder(hints)
        second = encoder(hints)
    assert count.calls == 1 and torch.equal(first, second)


def test_moving_or_casting_the_encoder_drops_the_cache(encoder):
    hint = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        encoder(hint)
    assert len(encoder.hint_cache) == 1
    encoder.float()
    assert len(encoder.hint_cache) == 0
    with torch.no_grad():
        assert encoder(hint).dtype == torch.float32


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    enc = VMambaHintEncoder(HintEncoderConfig(**SMALL)).double()
    randomise_output_conv(enc)
    hint = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    grads = []
    for checkpointing in (False, True):
        enc.zero_grad()
        enc.gradient_checkpointing = checkpointing
        enc(hint).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-10, atol=1e-12)


def test_cache_under_inference_mode_with_an_encoder_built_there():
    """ComfyUI builds and runs models inside torch.inference_mode (parameters without version counters)."""
    with torch.inference_mode():
        enc = VMambaHintEncoder(HintEncoderConfig(**SMALL))
        randomise_output_conv(enc)
        count = StemCounter(enc)
        block = CachedHintEncoder(enc)
        hint = torch.rand(2, 3, 16, 16)
        a = block(hint, None, None)
        b = block(hint, None, None)
    with torch.no_grad():
        c = block(hint)
    assert count.calls == 1 and torch.equal(a, b) and torch.equal(a, c)
    with torch.inference_mode():
        d = block(torch.rand(2, 3, 16, 16))
        assert count.calls == 2 and not torch.equal(a, d)
        enc.conv_out.weight.mul_(2)  # an in-place weight edit (e.g. a patcher) must invalidate
        e = block(hint)
    assert count.calls == 3 and torch.allclose(e - enc.conv_out.bias[:, None, None], 2 * (a - enc.conv_out.bias[:, None, None]))


def test_target_fill_query_encodes_the_hint_with_the_query_in_the_target_cell():
    from gie_core.control_input import fill_target

    torch.manual_seed(0)
    blank = VMambaHintEncoder(HintEncoderConfig(**SMALL))
    randomise_output_conv(blank)
    filling = VMambaHintEncoder(HintEncoderConfig(**SMALL, target_fill="query"))
    filling.load_state_dict(blank.state_dict())
    hint = torch.rand(2, 3, 64, 32)  # 2 rows of 16-px cells
    with torch.no_grad():
        assert torch.allclose(filling(hint), blank(fill_target(hint)))
        assert not torch.allclose(filling(hint), blank(hint))
    with pytest.raises(ValueError, match=r"target_fill must be one of \('blank', 'query'\)"):
        HintEncoderConfig(**SMALL, target_fill="copy")


# -- layouts and blocks ------------------------------------------------------------------------------
CELLS = dict(SMALL, dims=(16,), depths=(1,), patch_size=8, layout="cells")


def test_cells_layout_writes_only_the_target_cell_and_reads_each_example_pair():
    torch.manual_seed(0)
    enc = VMambaHintEncoder(HintEncoderConfig(**CELLS))
    randomise_output_conv(enc)
    hint = torch.rand(2, 3, 96, 64)  # two example rows + the query row of 32-px cells
    with torch.no_grad():
        out = enc(hint)
    assert out.shape == (2, 24, 12, 8)
    assert not out[:, :, :8].any() and not out[:, :, 8:, :4].any()  # only the target cell
    assert out[:, :, 8:, 4:].abs().sum() > 0
    # per example pair [before, after, query] through the trunk, averaged over the pairs
    with torch.no_grad():
        one = [enc._trunk(torch.cat([hint[:, :, r:r + 32, :32], hint[:, :, r:r + 32, 32:], hint[:, :, 64:, :32]], 1))
               for r in (0, 32)]
    assert torch.allclose(out[:, :, 8:, 4:], (one[0] + one[1]) / 2, atol=1e-6)
    # the target cell's content never matters; the query does
    other = hint.clone()
    other[:, :, 64:, 32:] = 0.5
    with torch.no_grad():
        assert torch.equal(enc(other), out)
        other[:, :, 64:, :32] = 0.5
        assert not torch.allclose(enc(other), out)


def test_cells_layout_config_and_geometry_errors():
    with pytest.raises(HintEncoderConfigError, match="layout must be one of"):
        HintEncoderConfig(**dict(CELLS, layout="rows"))
    with pytest.raises(HintEncoderConfigError, match="'cells' layout gives the encoder the query"):
        HintEncoderConfig(**dict(CELLS, target_fill="query"))
    enc = VMambaHintEncoder(HintEncoderConfig(**CELLS))
    with pytest.raises(ValueError, match="'cells' layout needs a visual-prompt grid"):
        enc(torch.rand(1, 3, 32, 64))  # one row: no example


def test_conv_blocks_are_local_and_vss_blocks_global():
    """The 'conv' ablation keeps the block's shape but sees only a neighbourhood; the scan sees all."""
    def reach(block):
        torch.manual_seed(0)
        enc = VMambaHintEncoder(HintEncoderConfig(**dict(SMALL, dims=(16,), depths=(2,), patch_size=8, block=block,
                                                          conv_kernel=3)))
        randomise_output_conv(enc)
        hint = torch.rand(1, 3, 128, 128, requires_grad=True)
        enc(hint)[0, :, 0, 0].sum().backward()  # the top-left latent pixel
        return hint.grad[0].abs().sum(0)
    conv, vss = reach("conv"), reach("vss")
    assert conv[64:, 64:].sum() == 0 and conv[:8, :8].sum() > 0
    assert vss[64:, 64:].sum() > 0
    with pytest.raises(HintEncoderConfigError, match="block must be one of"):
        HintEncoderConfig(**dict(SMALL, block="attention"))
    with pytest.raises(HintEncoderConfigError, match="conv_kernel must be a positive odd integer"):
        HintEncoderConfig(**dict(SMALL, conv_kernel=4))
