"""instructgie-eval: statistics against plain references, item choice, batching, the wrong-example
wiring, the metric code end to end on tiny local models, the output folder and the CLI."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from trainer import evaluate as ev
from trainer.data.formats import PairRecord


def _img(seed, size=32):
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def _pil(seed, size=32):
    return Image.fromarray((_img(seed, size).permute(1, 2, 0).numpy() * 255).astype(np.uint8))


# --------------------------------------------------------------------------- statistics
def test_psnr_and_ssim_per_item_against_plain_formulas():
    truth = torch.stack([_img(1), _img(2)])
    pred = (truth + 0.05 * (2 * torch.stack([_img(3), _img(4)]) - 1)).clamp(0, 1)
    mse = ((pred.double() - truth.double()) ** 2).mean((1, 2, 3))
    assert torch.allclose(ev.psnr_per_item(pred, truth).double(), 10 * torch.log10(1 / mse), rtol=1e-5)
    same = ev.psnr_per_item(truth, truth)
    assert torch.equal(same, torch.full((2,), ev.PSNR_CAP_DB))  # infinite PSNR is capped, never inf/NaN
    ssim = ev.ssim_per_item(pred, truth)
    assert ssim.shape == (2,) and (ssim < 1).all()
    assert torch.allclose(ev.ssim_per_item(truth, truth), torch.ones(2), atol=1e-5)


def test_bootstrap_interval_matches_normal_theory():
    v = np.random.default_rng(0).normal(3.0, 2.0, size=400)
    lo, hi = ev.bootstrap_ci(v, resamples=4000, seed=1)
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)  # the textbook interval of a mean
    assert lo < v.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert ev.bootstrap_ci(v, 4000, seed=1) == [lo, hi]  # seeded: reproducible
    assert ev.bootstrap_ci([1.0]) is None and ev.bootstrap_ci([2.0, 2.0, 2.0]) == [2.0, 2.0]


def _item(index, psnr, copy=None, wrong=None, split="seen", family="f"):
    scores = {"psnr": psnr, "ssim": 0.5}
    if copy is not None:
        scores["psnr_copy"] = copy
    if wrong is not None:
        scores["psnr_wrong_example"] = wrong
    return ev.ItemResult(index, f"q{index}", "g", family, split, scores)


def test_summaries_are_paired_per_item():
    rng = np.random.default_rng(0)
    psnr, copy = rng.normal(20, 3, 50), rng.normal(18, 3, 50)
    wrong = psnr - rng.normal(2.5, 0.5, 50)
    items = [_item(i, psnr[i], copy[i], wrong[i], "seen" if i < 30 else "unseen", "a" if i % 2 else "b")
             for i in range(50)]
    res = ev.score_splits(items, resamples=1000)
    seen = res["splits"]["seen"]
    assert set(res["splits"]) == {"seen", "unseen", "all"} and seen["n"] == 30
    gain = psnr[:30] - copy[:30]
    assert seen["gain_over_copy"]["mean"] == pytest.approx(gain.mean())
    # paired: the interval of the per-item differences, far narrower here than the two unpaired ones
    assert seen["gain_over_copy"]["ci"] == ev.bootstrap_ci(gain, 1000, ev._stable_seed(0, "gain_over_copy"))
    assert seen["wrong_example_cost"]["mean"] == pytest.approx((psnr[:30] - wrong[:30]).mean())
    cost_ci = seen["wrong_example_cost"]["ci"]
    assert cost_ci[1] - cost_ci[0] < 0.5 * (seen["psnr"]["ci"][1] - seen["psnr"]["ci"][0])
    assert seen["families"]["a"]["n"] == 15 and res["splits"]["all"]["n"] == 50
    targets = ev.check_targets(res)
    assert targets["wrong_example_cost"]["met"] and targets["wrong_example_cost"]["value"] == pytest.approx(
        res["splits"]["all"]["wrong_example_cost"]["mean"])
    worst = min(seen["families"].items(), key=lambda kv: kv[1]["gain_over_copy"]["mean"])
    assert targets["seen_family_gain_over_copy"]["family"] == worst[0]

    other = [_item(i, psnr[i] + 1.0 + 0.1 * (i % 3), copy[i], wrong[i], it.split, it.family)
             for i, it in enumerate(items)]
    cmp = ev.compare_models({"ref": items, "better": other}, "ref", resamples=1000)["better"]
    d = cmp["splits"]["seen"]["psnr"]
    assert d["mean"] == pytest.approx(np.mean([1.0 + 0.1 * (i % 3) for i in range(30)]))
    assert 1.0 <= d["ci"][0] <= d["ci"][1] <= 1.2  # paired: the shared item noise cancels


# --------------------------------------------------------------------------- items
def _records(family, group, n, seen=True, instruction="edit it like the example"):
    return [PairRecord(instruction, _pil(hash((group, i)) % 1000), _pil(hash((group, i, 1)) % 1000),
                       f"{group}/{i}", family, seen, group=group) for i in range(n)]


def test_edit_groups_prefer_the_group_id_over_the_instruction():
    recs = _records("colour", "c1", 3) + _records("colour", "c2", 3) + _records("gamma", "g1", 2)
    recs += [PairRecord("flip the image horizontally", None, None, f"f{i}", "flip", True) for i in range(2)]
    recs += [PairRecord("mirror the image left to right", None, None, "f2", "flip", True)]
    groups = {g.key: g for g in ev.edit_groups(recs)}
    # one generic instruction, three edits; the real-data fallback unifies paraphrases into one edit
    assert {k: len(g.records) for k, g in groups.items() if k in ("c1", "c2", "g1")} == {"c1": 3, "c2": 3, "g1": 2}
    flip = [g for k, g in groups.items() if k not in ("c1", "c2", "g1")]
    assert len(flip) == 1 and len(flip[0].records) == 3 and flip[0].family == "flip"


def test_plan_is_round_robin_and_wrong_examples_come_from_other_edits():
    groups = ev.edit_groups(_records("colour", "c1", 6) + _records("colour", "c2", 2) + _records("gamma", "g1", 4)
                            + _records("blur", "b1", 5, seen=False) + _records("blur", "b2", 5, seen=False))
    jobs = ev.plan_jobs(groups, n_per_split=7, k=1, seed=0)
    seen = [j for j in jobs if j.split == "seen"]
    assert len(seen) == 7 and len([j for j in jobs if j.split == "unseen"]) == 7
    assert [j.index for j in jobs] == list(range(14))
    # round robin: the first three queries are one per edit
    assert {j.group.key for j in seen[:3]} == {"c1", "c2", "g1"}
    for j in jobs:
        assert j.query in j.group.records and all(e in j.group.records and e is not j.query for e in j.examples)
        assert j.wrong_group is not j.group and all(e in j.wrong_group.records for e in j.wrong_examples)
        assert j.wrong_group.family != j.group.family  # another family exists for every edit here
    keys = [(j.query.key, [e.key for e in j.examples], [e.key for e in j.wrong_examples]) for j in jobs]
    again = ev.plan_jobs(groups, n_per_split=7, k=1, seed=0)
    assert keys == [(j.query.key, [e.key for e in j.examples], [e.key for e in j.wrong_examples]) for j in again]
    # where the same edits qualify, k=2 gives the same queries and extends k=1's examples
    # (evaluate.run plans once with the largest k; a model with a smaller k takes the first ones)
    big = [g for g in groups if len(g.records) > 2]
    k1, k2 = ev.plan_jobs(big, 7, k=1, seed=0), ev.plan_jobs(big, 7, k=2, seed=0)
    assert [j.query.key for j in k1] == [j.query.key for j in k2]
    assert all(len(b.examples) == 2 and b.examples[0] is a.examples[0] for a, b in zip(k1, k2))
    capped = ev.plan_jobs(groups, n_per_split=100, k=1, seed=0, max_per_group=2)
    assert max(sum(j.group is g for j in capped) for g in groups) == 2
    assert ev.plan_jobs(groups, 3, 1, seed=0, wrong_example=False)[0].wrong_group is None


def test_data_sources_are_a_registry_and_plug_in_by_module(monkeypatch):
    recs = _records("colour", "c1", 2)
    calls = []
    ev.register_data_source("fake_source", lambda spec: calls.append(spec) or recs)
    assert ev.load_eval_records("fake_source:n=2") == recs and calls == ["fake_source:n=2"]
    plugin = types.ModuleType("trainer.data.plugged_test_source")
    plugin.load_spec = lambda spec: recs[:1]
    monkeypatch.setitem(sys.modules, "trainer.data.plugged_test_source", plugin)
    assert ev.load_eval_records("plugged_test_source:x") == recs[:1]
    assert "plugged_test_source" in ev.data_source_names()
    with pytest.raises(ValueError, match="no data source 'nosuch'.*synthetic"):
        ev.load_eval_records("nosuch:a=1")
    synth = ev.load_eval_records("synthetic:pairs=2,size=32,families=flip")
    assert len(synth) == 4 and synth[0].family == "flip"


# --------------------------------------------------------------------------- generation
class ExampleReader:
    """A stand-in editor with the pipeline's editing API that reads the example perfectly for one
    edit: it inverts the query when the example pair is an inversion, else returns it unchanged."""

    def build_prompt(self, examples, query, tile=64, resize="crop", **kw):
        from gie_core.visual_prompt import build

        return build(examples, query, tile=tile, resize=resize, **kw)

    def edit_prompt(self, prompt, instruction, **kw):
        cell = lambda name: prompt.layout.cell(prompt.grid, name)  # noqa: E731
        shows_inversion = ((cell("example0_after") - (1 - cell("example0_before"))).abs().mean((1, 2, 3)) < 0.01)
        q = cell("query")
        return types.SimpleNamespace(edits=torch.where(shows_inversion[:, None, None, None], 1 - q, q))


def test_the_wrong_example_reaches_the_right_query():
    records = ev.load_eval_records("synthetic:pairs=4,size=64,families=invert+flip")
    jobs = ev.plan_jobs(ev.edit_groups(records), n_per_split=8, k=1, seed=0)
    spec = ev.ModelSpec("reader", "", "", tile=64)
    items = ev.generate(ExampleReader(), spec, jobs, ev.Scorer(), batch_size=3, oracle=False, progress=False)
    assert len(items) == 8 and {it.family for it in items} == {"invert", "flip"}
    for it in items:
        q = next(j.query for j in jobs if j.index == it.index)
        before = torch.from_numpy(np.asarray(q.before, np.float64) / 255)
        after = torch.from_numpy(np.asarray(q.after, np.float64) / 255)
        copy = float(10 * torch.log10(1 / ((before - after) ** 2).mean()))
        inverted = float(10 * torch.log10(1 / ((1 - before - after) ** 2).mean().clamp_min(1e-10)))
        assert it.scores["psnr_copy"] == pytest.approx(copy, abs=1e-3)  # truth and query in the model's frame
        if it.family == "invert":  # own example: inverted (exact); another edit's: left unchanged
            assert it.scores["psnr"] == ev.PSNR_CAP_DB
            assert it.scores["psnr_wrong_example"] == pytest.approx(copy, abs=1e-3)
        else:  # a flip example is not read; an inversion example (another edit) inverts the flip query
            assert it.scores["psnr"] == pytest.approx(copy, abs=1e-3)
            assert it.scores["psnr_wrong_example"] == pytest.approx(min(inverted, ev.PSNR_CAP_DB), abs=1e-3)
    res = ev.score_splits(items, resamples=200)
    assert res["splits"]["seen"]["families"]["invert"]["wrong_example_cost"]["mean"] > 10


@pytest.fixture(scope="module")
def tiny_controlnets(tmp_path_factory):
    """Two random VMamba ControlNets over the random tiny SD stack (``--base-model tiny``)."""
    from gie_core.models import VMambaControlNetModel
    from gie_core.models.io import save_vmamba_controlnet
    from gie_core.tiny import make_tiny_unet

    folder = tmp_path_factory.mktemp("controlnets")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cn = VMambaControlNetModel.from_unet(make_tiny_unet(0), hint_encoder_config={"dims": [16, 32], "depths": [0, 1]})
        with torch.no_grad():  # from_unet zero-initialises the outputs: make the ControlNet matter
            for p in cn.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.02)
        paths.append(save_vmamba_controlnet(cn, folder / f"cn{seed}.safetensors"))
    return paths


def test_batching_does_not_change_the_edits(tiny_controlnets):
    spec = ev.model_from_arg(f"a={tiny_controlnets[0]}", base="tiny", tile=64)
    pipe = ev.load_pipeline_for(spec, scheduler="ddim")
    pipe.set_progress_bar_config(disable=True)
    jobs = ev.plan_jobs(ev.edit_groups(ev.load_eval_records("synthetic:pairs=3,size=64,families=flip+sepia")),
                        n_per_split=3, k=1, seed=0)
    runs = [ev.generate(pipe, spec, jobs, ev.Scorer(), steps=2, batch_size=b, progress=False) for b in (1, 4)]
    assert len(runs[0]) == len(jobs) == 6
    for a, b in zip(*runs):
        assert a.index == b.index
        for key in ("psnr", "ssim", "psnr_copy", "psnr_oracle", "psnr_wrong_example"):
            assert a.scores[key] == pytest.approx(b.scores[key], abs=1e-3), key
    assert all(np.isfinite(list(it.scores.values())).all() for it in runs[0])


# --------------------------------------------------------------------------- metrics end to end
@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    """A tiny random CLIPModel with its tokenizer, saved in transformers' format (a fixture: its
    numbers measure nothing)."""
    from transformers import CLIPConfig, CLIPModel

    from gie_core.tiny import make_tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny_random_encoder")
    torch.manual_seed(0)
    # projection_dim in both halves too, as released CLIP configs have it
    cfg = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      vocab_size=1000, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                      projection_dim=16),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16),
                     projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    make_tiny_tokenizer(folder)
    return folder


def test_direction_encoder_and_its_errors(tiny_clip_folder, tmp_path):
    from transformers import CLIPModel

    enc = ev.DirectionEncoder(tiny_clip_folder)
    assert enc.text is not None and enc.name == tiny_clip_folder.name
    truth, query = torch.stack([_img(1), _img(2)]), torch.stack([_img(3), _img(4)])
    s = ev.Scorer(enc).score("seen", truth.clone(), truth, query, instructions=["flip it", "make it red"],
                             captions=[("a cat", "a dog"), ("a car", "a red car")])
    assert all(r["dir_image"] == pytest.approx(1.0, abs=1e-5) for r in s)  # the edit is the truth
    # text directions against the transformers model's own text features
    full = CLIPModel.from_pretrained(tiny_clip_folder).eval()
    ids = enc.tokenizer(["a car", "a red car"], padding=True, return_tensors="pt")
    with torch.no_grad():
        t = full.get_text_features(**ids)
        t = t if isinstance(t, torch.Tensor) else t.pooler_output
    shift = enc.embed_images(truth[1:]) - enc.embed_images(query[1:])
    assert s[1]["dir_caption"] == pytest.approx(float(ev._cos(shift, t[1:] - t[:1])), abs=1e-5)
    assert -1 <= s[0]["dir_instruction"] <= 1
    with pytest.raises(ValueError, match="missing_clip: no such folder"):
        ev.DirectionEncoder(tmp_path / "missing_clip")
    with pytest.raises(ValueError, match="real local CLIP"):
        ev.DirectionEncoder("tiny")


def test_fid_streams_per_split_like_the_whole_list():
    feats = ev.TinyFeatures()
    real = [_img(i) for i in range(12)]
    fake = [(x * 0.6) for x in real]
    assert abs(ev.fid(feats, real, real, size=32)) < 1e-3
    whole = ev.fid(feats, fake, real)
    scorer = ev.Scorer(fid_features=feats)
    for i in range(0, 12, 5):
        scorer.score("seen", torch.stack(fake[i:i + 5]), torch.stack(real[i:i + 5]))
    by_split = scorer.fid_by_split()
    assert by_split["seen"] == pytest.approx(whole, rel=1e-4) and by_split["all"] == pytest.approx(whole, rel=1e-4)
    assert np.isnan(ev.fid(feats, real[:1], real[:1]))
    assert scorer.fid_key == "fd_tiny"
    with pytest.raises(ValueError, match="no such file"):
        ev.load_fid_features("/nonexistent/pt_inception.pth")


def test_cli_end_to_end_two_models(tiny_controlnets, tiny_clip_folder, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["--model", f"a={tiny_controlnets[0]}", "--model", f"b={tiny_controlnets[1]}", "--base-model", "tiny",
            "--tile", "64", "--scheduler", "ddim", "--data", "synthetic:pairs=3,size=64,families=flip+invert+sepia",
            "--n-per-split", "4", "--steps", "2", "--batch-size", "4", "--bootstrap", "200",
            "--clip-model", str(tiny_clip_folder), "--inception", "tiny", "--sheet-rows", "2", "--out", str(out),
            "--no-progress"]
    assert ev.main(args) == 0
    printed = capsys.readouterr().out
    assert "target wrong_example_cost" in printed
    report = json.loads((out / "metrics.json").read_text())
    a = report["models"]["a"]["splits"]
    assert a["seen"]["n"] == 4 and a["unseen"]["n"] == 3 and a["all"]["n"] == 7  # sepia: 3 pairs, 1 edit
    for key in ("psnr", "ssim", "psnr_copy", "psnr_oracle", "gain_over_copy", "psnr_wrong_example",
                "wrong_example_cost", "dir_image", "dir_instruction"):
        assert np.isfinite(a["seen"][key]["mean"]), key
    assert a["seen"]["gain_over_copy"]["ci"] is not None and "fd_tiny" in a["all"] and "fid" not in a["all"]
    assert set(a["seen"]["families"]) == {"flip", "invert"}
    # identical items for both models: the same copy baseline item by item
    items = {m: [json.loads(x) for x in (out / f"items-{m}.jsonl").read_text().splitlines()] for m in "ab"}
    assert [(i["key"], i["psnr_copy"]) for i in items["a"]] == [(i["key"], i["psnr_copy"]) for i in items["b"]]
    assert report["comparisons"]["b"]["reference"] == "a"
    diff = report["comparisons"]["b"]["splits"]["all"]["psnr"]["mean"]
    assert diff == pytest.approx(np.mean([y["psnr"] - x["psnr"] for x, y in zip(items["a"], items["b"])]))
    md = (out / "metrics.md").read_text()
    assert "| a | seen | 4 |" in md and "b − a" in md and "CLIP" not in md  # the fixture is never called CLIP
    assert "FD (tiny random features" in md and f"({tiny_clip_folder.name})" in md
    run = json.loads((out / "run.json").read_text())
    assert sorted(run["files"]) == sorted(p.name for p in out.iterdir())
    assert {"families.png", "samples-a.png", "samples-b.png", "items-a.jsonl"} <= set(run["files"])
    sheet = Image.open(out / "samples-a.png")
    pad, cell = 6, 96  # make_sheet's geometry: six labelled columns, rows of 2 seen + 2 unseen items
    assert sheet.size == (pad + 6 * (cell + pad), 18 + 4 * (16 + cell + pad) + pad)
    assert Image.open(out / "families.png").size[0] > 400

    # the folder holds an evaluation: refused without --overwrite, replaced with it
    assert ev.main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    one = args[:2] + args[4:]  # model a only
    assert ev.main(one + ["--overwrite", "--no-wrong-example"]) == 0
    names = {p.name for p in out.iterdir()}
    assert "samples-b.png" not in names and "items-b.jsonl" not in names and "notes.txt" in names
    assert sorted(json.loads((out / "run.json").read_text())["files"]) == sorted(names - {"notes.txt"})
    assert "wrong_example_cost" not in json.loads((out / "metrics.json").read_text())["models"]["a"]["splits"]["all"]
    # a failing run leaves the earlier evaluation as it was, and no staging folder
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert ev.main(["--model", str(tmp_path / "nope"), "--out", str(out), "--overwrite"]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_predictions_folder(tmp_path):
    rows = []
    for i in range(3):
        for name, seed in (("b", 10 + i), ("a", 20 + i), ("p", 30 + i)):
            _pil(seed).save(tmp_path / f"{name}{i}.png")
        rows.append({"prediction": f"p{i}.png", "after": f"a{i}.png", "before": f"b{i}.png", "instruction": "x",
                     "family": "f", "seen": i < 2})
    rows.append({"prediction": "missing.png", "after": "a0.png", "before": "b0.png"})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert ev.main(["--predictions", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())["models"]["predictions"]
    assert m["splits"]["seen"]["n"] == 2 and m["splits"]["unseen"]["n"] == 1
    p, a = (np.asarray(Image.open(tmp_path / f"{n}2.png"), np.float64) / 255 for n in "pa")
    assert m["splits"]["unseen"]["psnr"]["mean"] == pytest.approx(10 * np.log10(1 / ((p - a) ** 2).mean()), rel=1e-4)
    assert (tmp_path / "out" / "samples-predictions.png").is_file()


def test_cli_help_and_bad_input(capsys, tmp_path):
    parser = ev.build_parser()
    undocumented = [a.dest for a in parser._actions if not a.help]
    assert undocumented == []
    for argv, msg in ((["--out", str(tmp_path / "o")], "give --model"),
                      (["--model", "default", "--n-per-split", "0", "--out", str(tmp_path / "o")], "--n-per-split"),
                      (["--model", "bad name=default", "--out", str(tmp_path / "o")], "the name 'bad name'")):
        assert ev.main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1
