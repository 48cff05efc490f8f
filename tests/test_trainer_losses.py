"""ESM, SAM and LDM loss terms against hand-computed values; x0 recovery; the latent->RGB fit."""
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from trainer.embedders import (
    CLIPImageEmbedder,
    ColourStatsEmbedder,
    load_esm_embedder,
    make_random_tiny_clip,
    resolve_esm_embedder,
)
from trainer.losses import (
    diffusion_target,
    esm_loss,
    fit_latent_to_rgb,
    latent_to_rgb,
    ldm_loss,
    masked_mse,
    predicted_x0,
    sam_loss,
    to_latent_mask,
)


def test_esm_loss_hand_computed():
    q = torch.tensor([[1.0, 1.0]])
    pred = torch.tensor([[2.0, 1.0]])  # shift_pred = (1, 0)
    ex_b = torch.tensor([[0.0, 0.0]])
    ex_a = torch.tensor([[3.0, 3.0]])  # shift_example = (3, 3): 45 degrees away
    assert esm_loss(pred, q, ex_a, ex_b).item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    assert esm_loss(q + ex_a, q, ex_a, ex_b).item() == pytest.approx(0.0, abs=1e-6)  # same direction
    assert esm_loss(q - ex_a, q, ex_a, ex_b).item() == pytest.approx(2.0, abs=1e-6)  # opposite


def test_esm_loss_weights_and_multiple_examples():
    q = torch.zeros(2, 2)
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Two examples per sample; their mean shift is (1, 0) for both samples.
    ex_b = torch.zeros(2, 2, 2)
    ex_a = torch.tensor([[[2.0, 1.0], [0.0, -1.0]], [[2.0, 1.0], [0.0, -1.0]]])
    per_sample = [0.0, 1.0]  # sample 0 aligned, sample 1 orthogonal
    assert esm_loss(pred, q, ex_a, ex_b).item() == pytest.approx(sum(per_sample) / 2, abs=1e-6)
    w = torch.tensor([0.0, 1.0])
    assert esm_loss(pred, q, ex_a, ex_b, w).item() == pytest.approx(1.0, abs=1e-6)
    assert esm_loss(pred, q, ex_a, ex_b, torch.zeros(2)).item() == 0.0


def test_masked_mse_and_sam_hand_computed():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]], [[3.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])
    # weighted squared errors: ch0: 1*1 + 0.5*4 = 3; ch1: 1*9 = 9 -> 12 / (2 channels * 1.5 weight)
    assert sam_loss(pred, target, mask).item() == pytest.approx(12 / 3.0)
    assert masked_mse(pred, target, mask[:, None]).item() == pytest.approx(4.0)
    zero = sam_loss(pred.requires_grad_(), target, torch.zeros_like(mask))
    assert zero.item() == 0.0 and zero.requires_grad  # no region: no loss, graph intact
    with pytest.raises(ValueError, match="spatial size"):
        masked_mse(pred, target, torch.ones(1, 3, 3))


def test_ldm_loss_outside_weight():
    pred = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[2.0, 4.0]]]])
    tmask = torch.tensor([[[[1.0, 0.0]]]])
    assert ldm_loss(pred, target, tmask).item() == pytest.approx(4.0)  # target cell only
    assert ldm_loss(pred, target, tmask, 0.5).item() == pytest.approx((4 + 0.5 * 16) / 1.5)


def test_to_latent_mask_area_average():
    m = torch.zeros(1, 16, 16)
    m[:, :8, :4] = 1
    lm = to_latent_mask(m, 8)
    assert lm.shape == (1, 1, 2, 2) and lm[0, 0, 0, 0].item() == 0.5 and lm.sum().item() == 0.5


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_predicted_x0_inverts_the_forward_process(kind):
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, prediction_type=kind)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=g)
    noise = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([1, 400, 999])
    noisy = sched.add_noise(x0, noise, t)
    perfect = diffusion_target(x0, noise, t, sched)
    assert torch.allclose(predicted_x0(noisy, perfect, t, sched), x0, atol=2e-3)


def test_latent_to_rgb_fit_recovers_a_linear_decoder():
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(2, 4, 6, 6, generator=g)
    W = torch.randn(3, 4, generator=g) * 0.1
    b = torch.tensor([0.5, 0.4, 0.6])
    rgb = torch.einsum("bchw,rc->brhw", lat, W) + b.view(1, 3, 1, 1)
    img = rgb.repeat_interleave(8, -1).repeat_interleave(8, -2)  # the "decoded" image, factor 8
    W2, b2 = fit_latent_to_rgb(lat, img)
    assert torch.allclose(W2, W, atol=1e-3) and torch.allclose(b2, b, atol=1e-3)
    assert torch.allclose(latent_to_rgb(lat, W2, b2), rgb.clamp(0, 1), atol=1e-3)


def test_clip_embedder_passes_gradients_to_images_only(tmp_path):
    # Random weights only test the loading path here; no preset or ESM run may use them.
    model = make_random_tiny_clip(0)
    model.save_pretrained(tmp_path / "clip")
    emb = CLIPImageEmbedder.from_folder(tmp_path / "clip")
    x = torch.rand(2, 3, 40, 40, requires_grad=True)
    e = emb(x)
    assert e.shape == (2, 32)
    e.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in emb.parameters())
    # Same weights as the in-memory model: the folder round trip loads the real thing.
    assert torch.allclose(e, CLIPImageEmbedder(model)(x), atol=1e-5)
    with pytest.raises(ValueError, match="B,3,H,W"):
        emb(torch.rand(3, 40, 40))
    with pytest.raises(ValueError, match="config.json"):
        CLIPImageEmbedder.from_folder(tmp_path / "nothing")
    # The ESM loader takes the same folder.
    esm = load_esm_embedder("auto", str(tmp_path / "clip"), "/models/sd15")
    assert isinstance(esm, CLIPImageEmbedder) and torch.allclose(esm(x), e, atol=1e-5)


def _synthetic_shifts(embed, family, variant, n=8):
    import numpy as np

    from trainer.data.synthetic import generate_pair

    def t(img):
        return torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None]

    pairs = [generate_pair(family, variant, i, 64) for i in range(n)]
    before = torch.cat([t(p.before) for p in pairs])
    return embed(torch.cat([t(p.after) for p in pairs])) - embed(before), before


def test_colour_embedder_moves_with_edits_and_not_without():
    embed = ColourStatsEmbedder()
    shifts, before = _synthetic_shifts(embed, "invert", "colors")
    assert embed(before).shape == (8, embed.dim)
    assert torch.equal(embed(before) - embed(before.clone()), torch.zeros(8, embed.dim))  # no edit, no shift
    assert (shifts.norm(dim=1) > 0.2).all()  # an inverted image moves it far
    # The same edit on different images points the same way (what ESM relies on); on average,
    # other edits do not. (Colour statistics do confuse edits with one colour footprint, e.g.
    # inverting a bright image darkens it: the limit of a parameter-free embedding.)
    def mean_cos(a, b, same):
        c = F.cosine_similarity(a[:, None], b[None], dim=-1)
        return c[~torch.eye(len(a), dtype=torch.bool)].mean() if same else c.mean()

    families = [("invert", "colors"), ("grayscale", "gray"), ("brightness", "darker"), ("recolour", "red"),
                ("background", "checkerboard"), ("outline", "edges"), ("face", "glasses")]
    shift = {f: _synthetic_shifts(embed, *f)[0] for f in families}
    for f in families:
        within = mean_cos(shift[f], shift[f], True)
        across = sum(mean_cos(shift[f], shift[g], False) for g in families if g != f) / (len(families) - 1)
        assert within > 0.5 and within > across + 0.3, (f, within, across)
    assert mean_cos(shift[families[0]], shift[families[1]], False).abs() < 0.2  # invert is no grayscale


def test_colour_embedder_gradients_match_finite_differences():
    embed = ColourStatsEmbedder(thumb=2)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(embed, (x,))
    with pytest.raises(ValueError, match="B,3,H,W"):
        embed(torch.rand(2, 4, 6, 6))


def test_esm_embedder_choice_and_the_retired_random_clip():
    assert isinstance(load_esm_embedder("auto", "", "tiny"), ColourStatsEmbedder)
    assert resolve_esm_embedder("colour", "", "/models/sd15") == "colour"
    with pytest.raises(ValueError, match="no CLIP model is given"):
        resolve_esm_embedder("auto", "", "/models/sd15")  # SD1.5 never falls back silently
    with pytest.raises(ValueError, match="randomly initialised CLIP"):
        resolve_esm_embedder("auto", "tiny", "tiny")
    with pytest.raises(ValueError, match="needs --clip-model"):
        resolve_esm_embedder("clip", "", "tiny")
    with pytest.raises(ValueError, match="esm_embedder='dino'"):
        resolve_esm_embedder("dino", "", "tiny")
