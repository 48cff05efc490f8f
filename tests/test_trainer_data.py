"""Trainer data: the synthetic generator, the three dataset formats, bad files, grouping, sampling."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.data import synthetic
from trainer.data.dataset import InContextDataset, collate, prepare_groups
from trainer.data.formats import BadImage, load_image, load_ip2p, load_records, parse_synthetic_spec


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_pair_is_deterministic_and_index_dependent():
    a = synthetic.generate_pair("recolour", "red", 3, size=64, seed=7)
    b = synthetic.generate_pair("recolour", "red", 3, size=64, seed=7)
    c = synthetic.generate_pair("recolour", "red", 4, size=64, seed=7)
    assert a.before.tobytes() == b.before.tobytes() and a.after.tobytes() == b.after.tobytes()
    assert a.instruction == b.instruction
    assert a.before.tobytes() != c.before.tobytes()


@pytest.mark.parametrize("family,variant", synthetic.instructions())
def test_every_edit_changes_the_image(family, variant):
    for i in range(2):
        p = synthetic.generate_pair(family, variant, i, size=64)
        assert p.before.size == p.after.size == (64, 64)
        diff = np.abs(np.asarray(p.before, np.int16) - np.asarray(p.after, np.int16)).sum(-1)
        changed = float((diff > 30).mean())  # share of visibly changed pixels
        assert changed > 0.005, f"{family}/{variant} #{i} barely changes the image ({changed:.4f})"
        assert p.instruction in synthetic.FAMILIES[family].variant(variant).paraphrases


def test_pixel_edits_match_independent_transforms():
    p = synthetic.generate_pair("flip", "horizontal", 0, size=64)
    assert np.array_equal(np.asarray(p.after), np.asarray(p.before)[:, ::-1])
    p = synthetic.generate_pair("rotate", "90", 0, size=64)  # clockwise: numpy's rot90 with k=-1
    assert np.array_equal(np.asarray(p.after), np.rot90(np.asarray(p.before), k=-1))
    p = synthetic.generate_pair("invert", "colors", 0, size=64)
    assert np.array_equal(np.asarray(p.after), 255 - np.asarray(p.before))


def test_face_pairs_carry_a_face_mask_inside_the_image():
    p = synthetic.generate_pair("face", "smile", 0, size=64)
    m = np.asarray(p.mask, np.float32) / 255
    assert 0.05 < m.mean() < 0.6  # a face-sized blob, not empty, not everything


def test_write_dataset_is_reproducible_and_marks_held_out(tmp_path):
    fams = ["flip", "sepia"]
    d1 = synthetic.write_dataset(tmp_path / "a", 2, fams, size=32, held_out=["sepia"], progress=False)
    d2 = synthetic.write_dataset(tmp_path / "b", 2, fams, size=32, held_out=["sepia"], progress=False)
    rows = [json.loads(x) for x in (d1 / "metadata.jsonl").read_text().splitlines()]
    assert rows == [json.loads(x) for x in (d2 / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 + 2  # flip has two variants, sepia one
    assert {r["family"]: r["seen"] for r in rows} == {"flip": True, "sepia": False}
    for r in rows:
        assert (d1 / r["before"]).read_bytes() == (d2 / r["before"]).read_bytes()
    seen, unseen = synthetic.split_families(["sepia"])
    assert "sepia" in unseen and "sepia" not in seen
    with pytest.raises(ValueError, match="held-out"):
        synthetic.split_families(["nope"])


def test_synthetic_spec_parsing():
    assert parse_synthetic_spec("synthetic:pairs=3,size=32,families=flip+invert") == \
        {"pairs_per_instruction": 3, "size": 32, "families": ["flip", "invert"]}
    with pytest.raises(ValueError, match="unknown key"):
        parse_synthetic_spec("synthetic:colour=3")


# ----------------------------------------------------------------------------- formats
def _png(color, size=32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def _folder_with_broken_files(root):
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(6):
        for side, col in (("b", (10 * i, 0, 0)), ("a", (0, 10 * i, 0))):
            (root / "img" / f"{i}{side}.png").write_bytes(_png(col))
        rows.append({"instruction": "make it green" if i < 3 else "make it red", "before": f"img/{i}b.png",
                     "after": f"img/{i}a.png"})
    # broken: missing file, garbage bytes, tiny image, truncated PNG
    rows.append({"instruction": "make it green", "before": "img/missing.png", "after": "img/0a.png"})
    (root / "img" / "garbage.png").write_bytes(b"this is not an image")
    rows.append({"instruction": "make it green", "before": "img/garbage.png", "after": "img/0a.png"})
    Image.new("RGB", (4, 4)).save(root / "img" / "tiny.png")
    rows.append({"instruction": "make it red", "before": "img/tiny.png", "after": "img/3a.png"})
    (root / "img" / "trunc.png").write_bytes(_png((1, 2, 3), 64)[:60])
    rows.append({"instruction": "make it red", "before": "img/3b.png", "after": "img/trunc.png"})
    # a group of one pair (dropped) and a malformed line (skipped)
    rows.append({"instruction": "make it blue", "before": "img/0b.png", "after": "img/0a.png"})
    lines = [json.dumps(r) for r in rows] + ['{"instruction": "x"}', "not json"]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_folder_dataset_skips_and_counts_bad_files(tmp_path):
    root = _folder_with_broken_files(tmp_path / "ds")
    train, val, report = prepare_groups(str(root), liu=False, val_fraction=0.0, progress=False)
    assert report.pairs_read == 11  # the two malformed lines never become records
    assert len(report.bad_files) == 4
    reasons = " ".join(report.bad_files.values())
    assert "missing" in reasons and "smaller than" in reasons and "unreadable" in reasons
    assert report.groups_dropped == 1 and report.pairs_in_dropped_groups == 1
    assert sorted(g.instruction for g in train) == ["make it green", "make it red"]
    assert all(len(g.pairs) == 3 for g in train)


def test_header_verify_defers_truncated_files_to_sampling(tmp_path):
    root = _folder_with_broken_files(tmp_path / "ds")
    train, _, report = prepare_groups(str(root), liu=False, val_fraction=0.0, verify="header", progress=False)
    assert len(report.bad_files) == 3  # the truncated PNG has a valid header
    ds = InContextDataset(train, k=1, tile=64)
    for i in range(12):  # every draw succeeds: the truncated pair is skipped when it comes up
        ds[i]
    assert any("unreadable" in b for b in ds.bad)


def test_load_image_errors_are_bad_image():
    with pytest.raises(BadImage, match="missing"):
        load_image("/nonexistent/x.png")
    with pytest.raises(BadImage, match="unreadable"):
        load_image(b"garbage")
    with pytest.raises(BadImage, match="no image"):
        load_image(None)
    assert isinstance(BadImage("x"), ValueError)


def _ip2p_table(n, before="original_image", after="edited_image", instr="edit_prompt"):
    import pyarrow as pa

    return pa.table({
        before: [{"bytes": _png((i, 0, 0)), "path": None} for i in range(n)],
        after: [{"bytes": _png((0, i, 0)), "path": None} for i in range(n)],
        instr: ["make it green"] * n,
    })


def test_ip2p_parquet_and_aliases(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(_ip2p_table(3), tmp_path / "a.parquet", row_group_size=2)
    pq.write_table(_ip2p_table(2, "input", "output", "instruction"), tmp_path / "b.parquet")
    recs = load_records(tmp_path)
    assert len(recs) == 5
    img = load_image(recs[2].before)  # third row: second row group
    assert img.getpixel((0, 0)) == (2, 0, 0)
    assert load_image(recs[4].after).getpixel((0, 0)) == (0, 1, 0)


def test_ip2p_missing_column_is_a_clear_error(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(_ip2p_table(2, before="photo"), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="before-image column"):
        load_ip2p(tmp_path / "x.parquet")


def test_ip2p_datasets_save_to_disk_layout(tmp_path):
    """The arrow stream files + state.json that ``datasets.save_to_disk`` writes."""
    import pyarrow as pa

    t = _ip2p_table(4)
    with pa.OSFile(str(tmp_path / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
    (tmp_path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (tmp_path / "dataset_info.json").write_text("{}")
    recs = load_records(tmp_path)
    assert len(recs) == 4 and load_image(recs[3].before).getpixel((0, 0)) == (3, 0, 0)
    train, _, report = prepare_groups(recs, liu=False, val_fraction=0.0, progress=False)
    assert report.pairs_kept == 4 and len(train) == 1


# ----------------------------------------------------------------------------- grouping and sampling
def test_validation_split_is_by_instruction():
    train, val, report = prepare_groups("synthetic:pairs=3,size=32,families=flip+invert+grayscale+blur",
                                        liu=False, val_fraction=0.3, progress=False)
    assert train and val
    assert not {g.instruction for g in train} & {g.instruction for g in val}


def test_sample_is_a_function_of_seed_and_index_and_matches_its_pairs():
    train, _, _ = prepare_groups("synthetic:pairs=3,size=64,families=flip+invert", liu=False,
                                 val_fraction=0.0, progress=False)
    ds = InContextDataset(train, k=1, tile=64, seed=3)
    a, b, c = ds[5], ds[5], ds[6]
    assert torch.equal(a["grid"], b["grid"]) and a["instruction"] == b["instruction"]
    assert any(not torch.equal(a["grid"], ds[i]["grid"]) for i in range(6, 10))  # small groups: some repeat
    # The hint equals the grid outside the target cell and is blank inside it.
    t = a["target_mask"].bool()
    assert torch.equal(a["hint"][:, ~t], a["grid"][:, ~t]) and float(a["hint"][:, t].abs().max()) == 0.0
    # Every cell is one of the group's images (64 px: no resize), example and query pairs differ.
    g = next(g for g in train if g.instruction == a["instruction"])
    befores = [torch.from_numpy(np.asarray(p.before, np.float32) / 255).permute(2, 0, 1) for p in g.pairs]
    ex_before, query = a["grid"][:, :64, :64], a["grid"][:, 64:, :64]
    assert any(torch.allclose(ex_before, x, atol=1e-6) for x in befores)
    assert any(torch.allclose(query, x, atol=1e-6) for x in befores)
    assert not torch.equal(ex_before, query)
    batch = collate([a, c])
    assert batch["grid"].shape == (2, 3, 128, 128) and batch["region_mask"].shape == (2, 128, 128)


def test_face_mask_lands_in_the_target_cell():
    train, _, _ = prepare_groups("synthetic:pairs=3,size=64,families=face", liu=False, val_fraction=0.0,
                                 progress=False)
    item = InContextDataset(train, k=1, tile=64)[0]
    r = item["region_mask"]
    assert r.sum() > 50 and float((r * (1 - item["target_mask"])).abs().max()) == 0.0


def test_empty_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one instruction group"):
        InContextDataset([], k=1, tile=64)


def test_liu_merges_paraphrases_but_never_different_edits():
    spec = "synthetic:pairs=6,size=16"
    with_liu, _, rep = prepare_groups(spec, liu=True, val_fraction=0.0, min_side=8, progress=False)
    without, _, _ = prepare_groups(spec, liu=False, val_fraction=0.0, min_side=8, progress=False)
    assert rep.unified_changed > 0
    assert len(with_liu) < len(without)  # paraphrases of one edit land in one group
    for g in with_liu:
        assert len({p.canonical for p in g.pairs}) == 1, (g.instruction, {p.canonical for p in g.pairs})


# ----------------------------------------------------------------------------- SAM mask cache
def test_sam_masks_are_computed_once_per_image_content_and_cached_on_disk(tmp_path, monkeypatch):
    from gie_core import regions
    from trainer.data.dataset import RegionMaskProvider
    from trainer.data.formats import PairRecord

    calls = []
    real = regions.region_mask

    def counting(images, **kw):
        calls.append(tuple(images.shape))
        return real(images, **kw)

    monkeypatch.setattr(regions, "region_mask", counting)
    face = synthetic.generate_pair("face", "smile", 0, size=64).after
    other = synthetic.generate_pair("face", "smile", 1, size=64).after
    rec = PairRecord("smile", face, face, "a")
    p = RegionMaskProvider("face", cache_dir=str(tmp_path / "cache"))
    m = p(rec, face)
    assert m.shape == (64, 64) and len(calls) == 1
    assert torch.equal(p(PairRecord("smile", face, face, "b"), face.copy()), m)  # same pixels, other record
    assert len(calls) == 1 and p.stats["memory"] == 1
    p(rec, other)
    assert len(calls) == 2  # other pixels: computed
    fresh = RegionMaskProvider("face", cache_dir=str(tmp_path / "cache"))  # another run, worker or process
    assert torch.equal(fresh(rec, face), m) and len(calls) == 2 and fresh.stats["disk"] == 1
    feathered = RegionMaskProvider("face", feather=4, cache_dir=str(tmp_path / "cache"))
    feathered(rec, face)
    assert len(calls) == 3  # every option is part of the key
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 3


# ----------------------------------------------------------------------------- InstructPix2Pix's layout, sources
def _jpg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path, quality=90)


def _ip2p_release(root, with_seeds_json=True):
    """A dataset built to tempt a sampler: four prompt folders of one edit (three seeds each), a fifth
    whose *before* images are byte copies of folder p0's (another folder, the same source image),
    a repeated pair in p1, and a second edit whose pairs all come from one prompt folder."""
    seeds = []
    for f in range(4):
        name = f"p{f}"
        (root / name).mkdir(parents=True)
        (root / name / "prompt.json").write_text(json.dumps(
            {"input": f"a photo {f}", "edit": "make it snowy", "output": f"a snowy photo {f}"}))
        for s in range(3):
            _jpg(root / name / f"{100 + s}_0.jpg", 10 * f + s)
            _jpg(root / name / f"{100 + s}_1.jpg", 1000 + 10 * f + s)
        seeds.append([name, [str(100 + s) for s in range(3)]])
    copy = root / "copycat"
    copy.mkdir()
    (copy / "prompt.json").write_text(json.dumps({"input": "x", "edit": "Make it snowy.", "output": "y"}))
    for s in range(2):
        (copy / f"{7 + s}_0.jpg").write_bytes((root / "p0" / f"{100 + s}_0.jpg").read_bytes())
        _jpg(copy / f"{7 + s}_1.jpg", 5000 + s)
    seeds.append(["copycat", ["7", "8"]])
    for ext in ("0", "1"):  # p1/103 repeats p1/100 byte for byte
        (root / "p1" / f"103_{ext}.jpg").write_bytes((root / "p1" / f"100_{ext}.jpg").read_bytes())
    seeds[1][1].append("103")
    (root / "rain").mkdir()
    (root / "rain" / "prompt.json").write_text(json.dumps({"input": "a", "edit": "make it rainy", "output": "b"}))
    for s in range(4):
        _jpg(root / "rain" / f"{s}_0.jpg", 9000 + s)
        _jpg(root / "rain" / f"{s}_1.jpg", 9100 + s)
    seeds.append(["rain", ["0", "1", "2", "3"]])
    if with_seeds_json:
        (root / "seeds.json").write_text(json.dumps(seeds))
    return root


@pytest.mark.parametrize("with_seeds_json", [True, False])
def test_ip2p_released_folder_layout(tmp_path, with_seeds_json):
    root = _ip2p_release(tmp_path / "ip2p", with_seeds_json)
    recs = load_records(str(root))
    assert len(recs) == 4 * 3 + 1 + 2 + 4
    r = next(x for x in recs if x.key.endswith("p2/101"))
    assert r.instruction == "make it snowy" and r.source == "ip2p:p2"
    assert r.before_caption == "a photo 2" and r.after_caption == "a snowy photo 2"
    assert str(r.before).endswith("p2/101_0.jpg") and str(r.after).endswith("p2/101_1.jpg")


def test_no_sample_takes_an_example_from_its_querys_source(tmp_path):
    from trainer.data.formats import content_hash

    root = _ip2p_release(tmp_path / "ip2p")
    train, _, rep = prepare_groups(str(root), liu=True, val_fraction=0.0, progress=False)
    # "make it rainy" has one prompt folder: no query could get an example, so it is dropped.
    assert len(train) == 1 and "snow" in train[0].instruction
    assert rep.groups_single_source == 1 and rep.pairs_in_single_source_groups == 4
    assert rep.duplicate_pairs_dropped == 1  # p1/103
    # p0 and copycat share before images: one component; p1, p2, p3 one each.
    assert rep.group_sizes == {"14": 1} and rep.sources_per_group == {"4": 1}
    recs = {r.key: r for r in load_records(str(root))}
    before = {k: content_hash(r.before) for k, r in recs.items()}

    def clashes(ds):
        n = 0
        for i in range(300):
            *examples, query = ds[i]["pair_keys"]
            for e in examples:
                n += recs[e].source == recs[query].source or before[e] == before[query]
        return n

    assert clashes(InContextDataset(train, k=2, tile=64, seed=1)) == 0
    # The data does tempt: without the constraint, samples do take examples from their query's source.
    loose, _, _ = prepare_groups(str(root), liu=True, val_fraction=0.0, progress=False, dedupe="none")
    assert clashes(InContextDataset(loose, k=2, tile=64, seed=1)) > 20
    data_report = rep.to_dict()
    assert json.loads(json.dumps(data_report)) == data_report
    assert "pairs per group: min 14, median 14, max 14 (1 groups)" in rep.summary()


def test_dedupe_by_source_only_reads_no_image(tmp_path, monkeypatch):
    import trainer.data.dataset as dataset_module

    def no_reading(ref):
        raise AssertionError("dedupe=source must not hash images")

    monkeypatch.setattr(dataset_module, "content_hash", no_reading)
    root = _ip2p_release(tmp_path / "ip2p")
    train, _, rep = prepare_groups(str(root), liu=True, val_fraction=0.0, verify="none", dedupe="source",
                                   progress=False)
    assert rep.sources_per_group == {"5": 1}  # copycat counts as its own source by folder alone
    with pytest.raises(ValueError, match="dedupe: expected hash, source or none"):
        prepare_groups(str(root), dedupe="pixels", progress=False)


def test_parquet_rows_stream_one_column_of_a_few_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainer.data.formats import LazyCell, _ParquetRows

    def png(seed):
        buf = io.BytesIO()
        Image.fromarray(np.full((20, 20, 3), seed, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    n = 20
    table = pa.table({"edit_prompt": ["flip"] * n, "original_image": [png(i) for i in range(n)],
                      "edited_image": [png(100 + i) for i in range(n)]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    recs = load_ip2p(tmp_path / "d.parquet")
    rows = recs[0].before.reader.rows
    assert isinstance(rows, _ParquetRows) and isinstance(recs[0].before, LazyCell)
    for r in recs:  # every row group, both image columns
        assert load_image(r.before).getpixel((0, 0))[0] == int(r.key.split("#")[1])
        load_image(r.after)
        assert len(rows._cache) <= _ParquetRows.ROW_GROUP_CACHE
    assert all(chunk.type == pa.binary() for chunk in rows._cache.values())  # one column each
