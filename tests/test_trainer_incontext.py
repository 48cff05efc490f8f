"""Procedural in-context edits (trainer/data/incontext.py) and the trainer options built for them."""
import numpy as np
import pytest
import torch

from trainer.config import make_config
from trainer.data import incontext as ic
from trainer.train import Trainer, step_generator


def _psnr(a, b):
    return float(10 * np.log10(1 / max(float(np.mean((a - b) ** 2)), 1e-10)))


def test_families_split_into_seen_unseen_and_held_out_ranges():
    assert set(ic.SEEN_FAMILIES) | set(ic.UNSEEN_FAMILIES) == set(ic.FAMILIES)
    assert not set(ic.SEEN_FAMILIES) & set(ic.UNSEEN_FAMILIES)
    assert {"sepia", "channel_swap", "posterize"} <= set(ic.UNSEEN_FAMILIES)
    assert set(ic.HELD_OUT_RANGES) <= set(ic.SEEN_FAMILIES) and "colour_matrix" in ic.HELD_OUT_RANGES
    rng = np.random.default_rng(0)
    seen = [ic.sample_edit(rng, True, ["hue_rotate"]).params[0] for _ in range(50)]
    unseen = [ic.sample_edit(rng, False, ["hue_rotate"]).params[0] for _ in range(50)]
    assert max(abs(a) for a in seen) <= 140 < 155 <= min(abs(a) for a in unseen)
    with pytest.raises(ValueError, match="none has training parameters"):
        ic.sample_edit(rng, True, ["sepia"])


def test_the_parameters_only_the_example_shows_change_the_result():
    """Two edits of one family give different targets for the same query: the example is needed."""
    rng = np.random.default_rng(1)
    for fam in ("colour_matrix", "hue_rotate", "gamma", "pixelate", "recolour_objects"):
        a, b = ic.sample_edit(rng, True, [fam]), ic.sample_edit(rng, True, [fam])
        while a.params == b.params:  # pixelate has two sizes
            b = ic.sample_edit(rng, True, [fam])
        p = ic.make_pair(a, np.random.default_rng(5), 32)
        q = ic.make_pair(b, np.random.default_rng(5), 32)
        assert np.array_equal(p.before, q.before), fam  # same scene ...
        assert _psnr(p.after, q.after) < 30, fam  # ... visibly different edits


def test_pairs_are_deterministic_in_range_and_edits_are_visible():
    e = ic.sample_edit(np.random.default_rng(3), True, ["colour_matrix"])
    p1, p2 = ic.make_pair(e, np.random.default_rng(9), 32), ic.make_pair(e, np.random.default_rng(9), 32)
    assert np.array_equal(p1.before, p2.before) and np.array_equal(p1.after, p2.after)
    rng = np.random.default_rng(4)
    for fam in ic.FAMILIES:
        seen = fam in ic.SEEN_FAMILIES
        p = ic.make_pair(ic.sample_edit(rng, seen, [fam]), rng, 32)
        assert p.before.shape == p.after.shape == (32, 32, 3) and p.before.dtype == np.float32
        assert 0 <= p.after.min() and p.after.max() <= 1
        assert _psnr(p.before, p.after) < 28, fam  # copying the query is never good enough


def test_face_masks_follow_geometric_edits():
    for seed in range(40):  # a scene with a face
        still = ic.make_pair(ic.Edit("invert", (), True), np.random.default_rng(seed), 32)
        if still.mask is not None:
            break
    flipped = ic.make_pair(ic.Edit("flip_h", (), True), np.random.default_rng(seed), 32)  # the same scene
    assert still.mask is not None and still.mask.shape == (32, 32) and still.mask.sum() > 20
    assert np.array_equal(flipped.before, still.before)
    assert np.array_equal(flipped.mask, still.mask[:, ::-1])


def test_dataset_items_and_determinism():
    ds = ic.InContextEditDataset("incontext:size=32,generic=0.5", k=1, tile=32, seed=0)
    a, b = ds[7], ds[7]
    assert a["grid"].shape == (3, 64, 64) and a["hint"].shape == (3, 64, 64)
    assert torch.equal(a["grid"], b["grid"]) and a["instruction"] == b["instruction"]
    assert a["target_mask"][32:, 32:].all() and not a["target_mask"][:32].any()
    assert not a["hint"][:, 32:, 32:].any() or a["hint"][:, 32:, 32:].std() == 0  # the target is blanked
    texts = {ds[i]["instruction"] for i in range(60)}
    assert texts & set(ic.GENERIC_INSTRUCTIONS) and texts - set(ic.GENERIC_INSTRUCTIONS)
    assert {ds[i]["instruction"] for i in range(60)} <= set(ds.instructions())
    fams = {ds[i]["family"] for i in range(200)}
    assert fams <= set(ic.SEEN_FAMILIES) and len(fams) >= 8
    only = ic.InContextEditDataset("incontext:size=32,families=invert+gamma", k=2, tile=32)
    assert only[0]["grid"].shape == (3, 96, 64) and {only[i]["family"] for i in range(20)} <= {"invert", "gamma"}


@pytest.mark.parametrize("spec, match", [
    ("incontext:size=30", "size must be a multiple of 8"),
    ("incontext:generic=2", r"generic must be in \[0, 1\]"),
    ("incontext:families=invert+blurry", "unknown families"),
    ("incontext:colour=1", "unknown key 'colour'"),
    ("incontext:size", "expected key=value"),
    ("incontext:edits=many", "edits must be a number, got 'many'"),
])
def test_bad_specs_name_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        ic.InContextSpec.parse(spec)
    with pytest.raises(ValueError, match="draws 32-px images"):
        ic.InContextEditDataset("incontext:size=32", tile=64)


def test_eval_records_group_pairs_of_one_edit():
    recs = ic.edit_records(6, 3, "unseen", size=32, seed=0)
    assert len(recs) == 18 and all(r.seen is False for r in recs)
    for e in range(6):
        group = recs[3 * e:3 * e + 3]
        assert len({r.group for r in group}) == 1 and len({r.instruction for r in group}) == 1
    assert len({r.group for r in recs}) == 6
    seen = ic.edit_records(4, 2, "seen", size=32, seed=0)
    assert {r.group for r in seen}.isdisjoint({r.group for r in recs})
    with pytest.raises(ValueError, match="pairs_per_edit"):
        ic.edit_records(1, 1)


TINY = dict(data="incontext:size=32,generic=0.5", tile=32, base_model="tiny", esm=False, sam=True,
            hint_encoder_config='{"dims": [16], "depths": [1], "patch_size": 8, "layout": "cells"}',
            batch_size=2, validate_every=0, validation_inference_steps=0, checkpoint_every=0, progress=False,
            liu=False, val_fraction=0.0, prediction_type="sample",
            scheduler_config='{"rescale_betas_zero_snr": true, "timestep_spacing": "trailing"}')


def test_trainer_reads_incontext_data_and_trains_the_regression_probe(tmp_path):
    cfg = make_config(**{**TINY, "output_dir": str(tmp_path / "run"), "train_timesteps": "999"})
    tr = Trainer(cfg).setup()
    assert tr.sd.noise_scheduler.alphas_cumprod[-1] == 0  # the last timestep is pure noise
    batch = tr.collate([tr.train_set[i] for i in range(2)])
    seen = []
    orig = tr.sd.noise_scheduler.add_noise
    tr.sd.noise_scheduler.add_noise = lambda x, n, t: (seen.append(t.tolist()), orig(x, n, t))[1]
    losses = tr.compute_losses(batch, step_generator(0, 0))
    assert seen == [[999, 999]] and torch.isfinite(losses["total"])
    for bad in ("9-3", "5,1000", "a-b"):
        with pytest.raises(ValueError, match=f"train_timesteps='{bad}'"):
            make_config(**{**TINY, "train_timesteps": bad})
    listed = make_config(**{**TINY, "train_timesteps": "999, 749,499,249"})
    assert listed.training_timesteps() == [249, 499, 749, 999]
    assert make_config(**{**TINY, "train_timesteps": "999,999,249"}).training_timesteps() == [249, 999, 999]


def test_eval_data_source_plugs_into_instructgie_eval():
    from trainer.evaluate import edit_groups, load_eval_records

    recs = load_eval_records("incontext:size=32,edits=5,pairs=2,seed=0")
    assert len(recs) == 20 and {r.seen for r in recs} == {True, False}
    groups = edit_groups(recs)
    assert all(len({r.group for r in g.records}) == 1 for g in groups)
    only = load_eval_records("incontext:size=32,edits=3,pairs=3,split=unseen")
    assert len(only) == 9 and not any(r.seen for r in only)
    with pytest.raises(ValueError, match="split must be seen, unseen or both"):
        load_eval_records("incontext:split=train")
