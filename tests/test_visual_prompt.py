"""Visual prompt: grid geometry, resize modes, crop back, input formats and errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gie_core import control_input
from gie_core import visual_prompt as vp


def solid(color, h=32, w=32, b=1):
    return torch.tensor(color, dtype=torch.float32).expand(b, h, w, 3).clone()


def smooth(h, w, b=1, seed=0):
    """A smooth image (low-frequency) so resampling round trips are accurate."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, 4, 4, generator=g)
    up = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=True)
    return up.permute(0, 2, 3, 1).contiguous()


COLORS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0),
          (0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (0.2, 0.4, 0.6), (0.9, 0.5, 0.1)]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_grid_geometry_and_cell_contents(n):
    examples = [(solid(COLORS[2 * i]), solid(COLORS[2 * i + 1])) for i in range(n)]
    query = solid((0.3, 0.3, 0.3))
    p = vp.build(examples, query, tile=64)
    assert p.grid.shape == (1, 64 * (n + 1), 128, 3)
    assert p.grid.dtype == torch.float32
    lay = p.layout
    assert (lay.rows, lay.cols, lay.tile) == (n + 1, 2, 64)
    for i in range(n):
        for col in range(2):
            t, l, h, w = lay.cell_box(i, col)
            expect = torch.tensor(COLORS[2 * i + col])
            assert torch.allclose(p.grid[0, t:t + h, l:l + w], expect.expand(h, w, 3), atol=1e-6)
    t, l, h, w = lay.query_box
    assert (t, l) == (64 * n, 0)
    assert torch.allclose(p.grid[0, t:t + h, l:l + w], torch.full((h, w, 3), 0.3), atol=1e-6)
    # target: blanked in grid (no target given) and hint, mask 1 exactly there
    t, l, h, w = lay.target_box
    assert (t, l, h, w) == (64 * n, 64, 64, 64)
    assert torch.all(p.hint[0, t:t + h, l:l + w] == lay.blank_value)
    m = torch.zeros(64 * (n + 1), 128)
    m[t:t + h, l:l + w] = 1
    assert torch.equal(p.target_mask[0], m)
    outside = p.target_mask[0] == 0
    assert torch.equal(p.hint[0][outside], p.grid[0][outside])
    assert set(lay.cells) == {f"example{i}_{s}" for i in range(n) for s in ("before", "after")} | {"query", "target"}


def test_one_pair_256_is_sd_native_512():
    p = vp.build([(smooth(300, 200), smooth(300, 200))], smooth(300, 200), tile=256)
    assert p.grid.shape == (1, 512, 512, 3)
    assert p.layout.grid_size == (512, 512)


def test_target_goes_in_grid_but_not_hint():
    ex = (solid(COLORS[0]), solid(COLORS[1]))
    q, tgt = solid((0.1, 0.2, 0.3), b=2), solid((0.7, 0.8, 0.9), b=2)
    p = vp.build([ex], q, tile=64, target=tgt)
    cell = p.layout.cell(p.grid, "target")
    assert torch.allclose(cell, torch.tensor([0.7, 0.8, 0.9]).expand_as(cell), atol=1e-6)
    assert torch.all(p.layout.cell(p.hint, "target") == p.layout.blank_value)
    assert torch.allclose(p.layout.crop(p.grid, original_size=True), tgt, atol=1e-6)


def test_control_image_with_target_channel():
    p = vp.build([(solid(COLORS[0]), solid(COLORS[1]))], solid(COLORS[2], b=2), tile=64)
    h4 = p.control_image(True)
    assert h4.shape == (2, 4, 128, 128)
    assert torch.equal(h4[:, :3].permute(0, 2, 3, 1), p.hint) and torch.equal(h4[:, 3], p.target_mask)
    assert torch.equal(p.control_image().permute(0, 2, 3, 1), p.hint)
    with pytest.raises(ValueError, match="target_mask: this ControlNet takes the target mask"):
        control_input.build(p.control_image(), None, target_channel=True)


# ---------------------------------------------------------------- resize modes
def test_fit_pads_and_crops_back_to_aspect_and_size():
    q = smooth(100, 200, b=2)
    p = vp.build([(smooth(64, 64), smooth(64, 64))], q, tile=64, resize="fit", pad_value=0.25)
    pl = p.layout.placements[0]
    assert pl.original_size == (100, 200)
    assert pl.content_box == (16, 0, 32, 64) and pl.padding == (16, 16, 0, 0)
    assert pl.scale == pytest.approx((0.32, 0.32))
    qcell = p.layout.cell(p.grid, "query")
    assert torch.all(qcell[:, :16] == 0.25) and torch.all(qcell[:, 48:] == 0.25)
    # content = the query downscaled (independent resize with PIL-free torch area average)
    ref = torch.nn.functional.interpolate(q.permute(0, 3, 1, 2), size=(32, 64), mode="area").permute(0, 2, 3, 1)
    assert (qcell[:, 16:48] - ref).abs().max() < 0.03
    # crop of the query cell: query's aspect; original size: close to the original (smooth image)
    c = p.layout.crop(p.grid, cell="query")
    assert c.shape == (2, 32, 64, 3)
    full = p.layout.crop(p.grid, original_size=True, cell="query")
    assert full.shape == (2, 100, 200, 3)
    assert (full - q).abs().mean() < 0.01
    # the target crop has the same geometry
    assert p.layout.crop(p.grid).shape == (2, 32, 64, 3)
    assert p.layout.crop(p.grid, original_size=True).shape == (2, 100, 200, 3)


def test_fit_tall_image_pads_left_right():
    p = vp.build([(smooth(64, 64), smooth(64, 64))], smooth(90, 30), tile=64)
    pl = p.layout.placements[0]
    assert pl.content_box[2] == 64 and pl.content_box[3] == round(30 * 64 / 90)
    assert pl.padding[0] == pl.padding[1] == 0 and abs(pl.padding[2] - pl.padding[3]) <= 1


def test_crop_mode_takes_centred_square():
    q = torch.zeros(1, 100, 200, 3)
    q[:, :, :, 0] = 1.0                     # red everywhere
    q[:, :, 50:150] = torch.tensor([0.0, 1.0, 0.0])  # green centre square
    p = vp.build([(smooth(64, 64), smooth(64, 64))], q, tile=64, resize="crop")
    pl = p.layout.placements[0]
    assert pl.source_box == (0, 50, 100, 100) and pl.content_box == (0, 0, 64, 64)
    qcell = p.layout.cell(p.grid, "query")
    assert torch.allclose(qcell, torch.tensor([0.0, 1.0, 0.0]).expand_as(qcell), atol=1e-5)
    assert p.layout.crop(p.grid, cell="query").shape == (1, 64, 64, 3)
    back = p.layout.crop(p.grid, original_size=True, cell="query")
    assert back.shape == (1, 100, 100, 3)
    assert torch.allclose(back, q[:, :, 50:150], atol=1e-5)


def test_stretch_mode_uses_whole_cell_and_restores_size():
    q = smooth(40, 160, b=1)
    p = vp.build([(smooth(64, 64), smooth(64, 64))], q, tile=64, resize="stretch")
    pl = p.layout.placements[0]
    assert pl.content_box == (0, 0, 64, 64) and pl.padding == (0, 0, 0, 0)
    assert pl.scale == pytest.approx((64 / 40, 64 / 160))
    back = p.layout.crop(p.grid, original_size=True, cell="query")
    assert back.shape == (1, 40, 160, 3)
    assert (back - q).abs().mean() < 0.01


def test_examples_of_other_sizes_are_fitted_too():
    ex_before = solid(COLORS[0], h=20, w=80)
    p = vp.build([(ex_before, solid(COLORS[1], h=80, w=20))], solid(COLORS[2]), tile=64, pad_value=0.5)
    c = p.layout.cell(p.grid, "example0_before")[0]
    assert torch.allclose(c[32], torch.tensor(COLORS[0]).expand(64, 3), atol=1e-6)
    assert torch.all(c[0] == 0.5)  # padding row above the wide image


# ---------------------------------------------------------------- batches
def test_batch_of_queries_shares_examples_and_per_query_examples():
    ex = (solid(COLORS[0]), solid(COLORS[1]))
    q = torch.stack([solid(COLORS[2])[0], solid(COLORS[3])[0], solid(COLORS[4])[0]])
    p = vp.build([ex], q, tile=64)
    assert p.grid.shape[0] == 3
    assert torch.equal(p.grid[0, :64], p.grid[2, :64])
    assert torch.allclose(p.layout.cell(p.grid, "query")[1], torch.tensor(COLORS[3]).expand(64, 64, 3))
    per_query = (torch.cat([solid(COLORS[5]), solid(COLORS[6]), solid(COLORS[7])]), solid(COLORS[1]))
    p2 = vp.build([per_query], q, tile=64)
    for i, c in enumerate((5, 6, 7)):
        assert torch.allclose(p2.layout.cell(p2.grid, "example0_before")[i],
                              torch.tensor(COLORS[c]).expand(64, 64, 3))


def test_batch_mismatch_is_a_clear_error():
    ex = (solid(COLORS[0], b=2), solid(COLORS[1]))
    with pytest.raises(ValueError, match=r"examples\[0\]\.before.*batch of 2.*3 queries"):
        vp.build([ex], solid(COLORS[2], b=3), tile=64)
    with pytest.raises(ValueError, match="target"):
        vp.build([(solid(COLORS[0]), solid(COLORS[1]))], solid(COLORS[2], b=3), tile=64,
                 target=solid(COLORS[2], b=2))


def test_list_of_queries_of_different_sizes():
    ex = (solid(COLORS[0]), solid(COLORS[1]))
    p = vp.build([ex], [smooth(50, 80), smooth(90, 30)], tile=64)
    assert p.grid.shape[0] == 2
    with pytest.raises(ValueError, match="crop_each"):
        p.layout.crop(p.grid)
    parts = p.layout.crop_each(p.grid, original_size=True)
    assert [tuple(x.shape) for x in parts] == [(1, 50, 80, 3), (1, 90, 30, 3)]


# ---------------------------------------------------------------- latents, masks, serialisation
def test_crop_latent_and_masks():
    p = vp.build([(smooth(64, 64), smooth(64, 64))] * 3, smooth(100, 200, b=2), tile=128)
    hg, wg = p.layout.grid_size
    lat = torch.arange(2 * 4 * (hg // 8) * (wg // 8), dtype=torch.float32).reshape(2, 4, hg // 8, wg // 8)
    c = p.layout.crop_latent(lat, factor=8)
    assert c.shape == (2, 4, 16, 16)
    assert torch.equal(c, lat[:, :, 3 * 16:, 16:])
    m8 = p.layout.target_mask(factor=8)
    assert m8.shape == (2, hg // 8, wg // 8)
    assert torch.equal(p.layout.crop_mask(m8, factor=8), torch.ones(2, 16, 16))
    assert torch.equal(p.layout.crop_mask(p.target_mask), torch.ones(2, 128, 128))
    # content mask: 1 on the content rows (fit pads 32 rows top and bottom of 128 for a 1:2 image)
    cm = p.layout.content_mask()
    assert cm.shape == (2, 128, 128) and cm.sum(dim=(1, 2)).tolist() == [64 * 128] * 2
    assert p.layout.content_mask(8).sum().item() == pytest.approx(2 * 64 * 128 / 64)
    with pytest.raises(ValueError, match="factor"):
        p.layout.crop_latent(lat, factor=7)
    with pytest.raises(ValueError, match="latent"):
        p.layout.crop_latent(lat[..., :5], factor=8)


def test_layout_json_round_trip():
    p = vp.build([(smooth(64, 64), smooth(64, 64))] * 2, smooth(100, 200, b=2), tile=64, resize="fit")
    d = json.loads(json.dumps(p.layout.to_dict()))
    assert d["placements"][0]["padding"] == [16, 16, 0, 0] and d["rows"] == 3
    lay = vp.GridLayout.from_dict(d)
    assert lay == p.layout
    assert torch.equal(lay.crop(p.grid, original_size=True), p.layout.crop(p.grid, original_size=True))
    with pytest.raises(ValueError, match="layout dict"):
        vp.GridLayout.from_dict({"tile": 64})


# ---------------------------------------------------------------- input formats
def test_formats_agree():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    ref = torch.from_numpy(u8.astype(np.float64) / 255.0).float()[None]
    for img in (u8, torch.from_numpy(u8), torch.from_numpy(u8)[None], Image.fromarray(u8),
                u8.astype(np.float64) / 255.0, (u8.astype(np.uint16) * 257)):
        x = vp.to_image_tensor(img)
        assert x.shape == (1, 64, 64, 3) and x.dtype == torch.float32
        assert torch.allclose(x, ref, atol=1e-6), type(img)


def test_grayscale_rgba_and_16bit():
    g = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    for img in (g, g[..., None], torch.from_numpy(g)[None, ..., None]):
        x = vp.to_image_tensor(img)
        assert x.shape == (1, 64, 64, 3) and torch.equal(x[..., 0], x[..., 2])
        assert torch.allclose(x[0, ..., 1], torch.from_numpy(g))
    # RGBA: alpha 0 -> background, alpha 1 -> colour, 0.5 -> average
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[0, :, 3], rgba[1, :, 3], rgba[2:, :, 3] = 0, 255, 128
    for img in (rgba, Image.fromarray(rgba, "RGBA")):
        x = vp.to_image_tensor(img, background=(0.0, 0.0, 1.0))[0]
        assert torch.allclose(x[0], torch.tensor([0.0, 0.0, 1.0]).expand(4, 3))
        assert torch.allclose(x[1], torch.tensor([1.0, 0.0, 0.0]).expand(4, 3))
        a = 128 / 255
        assert torch.allclose(x[2], torch.tensor([a, 0.0, 1 - a]).expand(4, 3), atol=1e-6)
    # 16-bit grayscale PIL (mode I;16) keeps its precision
    v16 = (np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)
    pil16 = Image.fromarray(v16)
    assert pil16.mode.startswith("I")
    x = vp.to_image_tensor(pil16)
    assert torch.allclose(x[0, ..., 0].double(), torch.from_numpy(v16 / 65535.0), atol=1e-6)
    la = Image.fromarray(np.stack([np.full((4, 4), 255, np.uint8), np.zeros((4, 4), np.uint8)], -1), "LA")
    assert torch.allclose(vp.to_image_tensor(la, background=(0.0, 0.0, 0.0)), torch.zeros(1, 4, 4, 3))
    # a palette image converts through RGB
    pal = Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).convert("P")
    ref = torch.from_numpy(np.asarray(pal.convert("RGB")) / 255.0).float()[None]
    assert torch.allclose(vp.to_image_tensor(pal), ref)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("tile", [0, -64, 100, 250, 64.0, "256", True])
def test_bad_tile(tile):
    with pytest.raises(ValueError, match="tile"):
        vp.build([(solid(COLORS[0]), solid(COLORS[1]))], solid(COLORS[2]), tile=tile)


@pytest.mark.parametrize("examples, match", [
    ([], "1 to 4"),
    ([(solid(COLORS[0]), solid(COLORS[1]))] * 5, "1 to 4"),
    ([(solid(COLORS[0]),)], r"examples\[0\].*pair"),
    (solid(COLORS[0]), "sequence"),
])
def test_bad_examples(examples, match):
    with pytest.raises(ValueError, match=match):
        vp.build(examples, solid(COLORS[2]), tile=64)


def test_bad_images_and_modes():
    ex = [(solid(COLORS[0]), solid(COLORS[1]))]
    with pytest.raises(ValueError, match="resize"):
        vp.build(ex, solid(COLORS[2]), tile=64, resize="pad")
    with pytest.raises(ValueError, match=r"query.*0\.\.1.*255"):
        vp.build(ex, solid(COLORS[2]) * 255, tile=64)
    bad = solid(COLORS[2]).clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="query.*NaN"):
        vp.build(ex, bad, tile=64)
    with pytest.raises(ValueError, match="channels-first"):
        vp.build(ex, torch.rand(1, 3, 32, 32), tile=64)
    with pytest.raises(ValueError, match=r"examples\[0\]\.after"):
        vp.build([(solid(COLORS[0]), "after.png")], solid(COLORS[2]), tile=64)
    with pytest.raises(ValueError, match="dtype"):
        vp.to_image_tensor(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ValueError, match="background"):
        vp.build(ex, solid(COLORS[2]), tile=64, background=(2, 0, 0))
    p = vp.build(ex, solid(COLORS[2]), tile=64)
    with pytest.raises(ValueError, match="grid of 128x128"):
        p.layout.crop(torch.rand(1, 64, 64, 3))


@pytest.mark.parametrize("k", [1, 2])
def test_fill_target_copies_the_query_cell_only(k):
    g = torch.Generator().manual_seed(k)
    ex = [(torch.rand(1, 64, 64, 3, generator=g), torch.rand(1, 64, 64, 3, generator=g)) for _ in range(k)]
    p = vp.build(ex, torch.rand(2, 64, 64, 3, generator=g), tile=64, resize="crop")
    hint = p.control_image(target_channel=True)  # [2, 4, H, W]
    filled = control_input.fill_target(hint)
    assert torch.equal(filled, p.control_image(target_channel=True, fill="query"))
    t, l, h, w = p.layout.target_box
    qt, ql, _, _ = p.layout.query_box
    assert torch.equal(filled[:, :3, t:t + h, l:l + w], hint[:, :3, qt:qt + h, ql:ql + w])
    assert torch.equal(filled[:, 3], hint[:, 3])  # the target-mask channel stays
    rest = torch.ones_like(hint, dtype=torch.bool)
    rest[:, :3, t:t + h, l:l + w] = False
    assert torch.equal(filled[rest], hint[rest])
    assert control_input.fill_target(hint, "blank") is hint
    with pytest.raises(ValueError, match="target fill: expected one of"):
        control_input.fill_target(hint, "copy")
    with pytest.raises(ValueError, match="square cells in 2 columns, got 64×96"):
        control_input.fill_target(torch.zeros(1, 3, 64, 96))
