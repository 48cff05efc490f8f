"""`instructgie demo`: on a tiny random stack written in the trainer's export format (fast), and one
real run of the shipped model when it is installed."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gie_core._cli import demo as demo_cli
from gie_core.cli import build_parser, main

CELL, PAD, HEADER, CAPTION = 128, 6, 18, 16  # the sheet geometry documented in make_sheet


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["demo", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


CASES = ("colour_matrix", "sepia")


def test_demo_writes_edits_sheet_and_record(tiny_stack, tmp_path, capsys):
    out = tmp_path / "demo"
    rc, stdout, _ = _run(capsys, "--model", tiny_stack, "--out", out, "--steps", 2, "--seed", 3,
                         "--device", "cpu", *[a for c in CASES for a in ("--case", c)])
    assert rc == 0
    record = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in record["cases"]] == list(CASES)
    assert [c["seed"] for c in record["cases"]] == [3, 4]
    assert record["cases"][1]["seen"] is False
    # the model saw the instruction as training unified it (train_config.json: liu true)
    from gie_core.instruction import unify

    manifest = {c["name"]: c for c in json.loads((demo_cli.DEMO_INPUTS / "manifest.json").read_text())["cases"]}
    for c in record["cases"]:
        assert c["instruction"] == manifest[c["name"]]["instruction"]
        assert c["instruction_used"] == unify(c["instruction"])
    edits = [_png(out / f"{name}_edit.png") for name in CASES]
    assert all(e.shape == (32, 32, 3) for e in edits)
    assert "sheet:" in stdout

    # The sheet: header, then per case a caption band and five cells in the documented order;
    # compare its cells with the files they were made from (nearest-neighbour upscaling).
    sheet = _png(out / "sheet.png")
    assert sheet.shape == (HEADER + len(CASES) * (CAPTION + CELL + PAD) + PAD, PAD + 5 * (CELL + PAD), 3)

    def cell(row, col):
        y = HEADER + row * (CAPTION + CELL + PAD) + CAPTION
        x = PAD + col * (CELL + PAD)
        return sheet[y:y + CELL, x:x + CELL]

    def up(a):
        return np.asarray(Image.fromarray(a).resize((CELL, CELL), Image.NEAREST))

    for row, name in enumerate(CASES):
        case = manifest[name]
        files = [*case["examples"][0], case["query"], None, case["ground_truth"]]
        for col, f in enumerate(files):
            want = edits[row] if f is None else _png(demo_cli.DEMO_INPUTS / f)
            np.testing.assert_array_equal(cell(row, col), up(want), err_msg=f"{name} column {col}")


def test_demo_is_reproducible_by_seed(tiny_stack, tmp_path, capsys):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        rc, _, _ = _run(capsys, "--model", tiny_stack, "--out", tmp_path / name, "--steps", 2, "--seed", seed,
                        "--device", "cpu", "--case", "invert")
        assert rc == 0
        runs[name] = _png(tmp_path / name / "invert_edit.png")
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert np.abs(runs["a"].astype(int) - runs["c"].astype(int)).mean() > 1.0


def test_missing_models_and_bad_options_are_one_line_errors(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = _run(capsys, "--model", empty)
    assert rc == 2 and err.count("\n") == 1 and "base/model_index.json" in err
    rc, _, err = _run(capsys, "--model", tmp_path / "nope")
    assert rc == 2 and "not a folder" in err
    monkeypatch.setattr(demo_cli, "DEFAULT_MODEL", empty)
    rc, _, err = _run(capsys)
    assert rc == 2 and err.count("\n") == 1 and "instructgie-train --preset demo_default" in err
    rc, _, err = _run(capsys, "--case", "no_such_case")
    assert rc == 2 and "colour_matrix" in err
    rc, _, err = _run(capsys, "--steps", 0)
    assert rc == 2 and "--steps" in err


def test_help_and_list(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["demo", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--steps", "--seed", "--device", "--model"):
        assert opt in text
    rc, out, _ = _run(capsys, "--list")
    assert rc == 0 and len(out.strip().splitlines()) == len(demo_cli._load_manifest())
    assert "UNSEEN" in out


SHIPPED = demo_cli.DEFAULT_MODEL


@pytest.mark.skipif(not (SHIPPED / "controlnet.safetensors").is_file(), reason="the bundled model is not installed")
def test_shipped_model_is_small_safe_and_edits_better_than_copying(tmp_path, capsys):
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    weights = [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert not weights, f"pickle weights shipped: {weights}"
    assert any(p.suffix == ".safetensors" for p in files)

    # The bundled seen cases, at the model's own settings: its edits are closer to the ground truth
    # than the unedited query is (the copy baseline), on average by at least 2 dB. PSNR is computed
    # here from the PNGs, not taken from the command's record.
    seen = [c for c in demo_cli._load_manifest() if c["seen"]]
    rc, _, _ = _run(capsys, "--out", tmp_path / "shipped", "--device", "cpu", *[a for c in seen for a in ("--case", c["name"])])
    assert rc == 0

    def psnr(a, b):
        return 10 * np.log10(1.0 / np.mean((a - b) ** 2))

    model, copy = [], []
    for c in seen:
        truth = _png(demo_cli.DEMO_INPUTS / c["ground_truth"]) / 255.0
        model.append(psnr(_png(tmp_path / "shipped" / f"{c['name']}_edit.png") / 255.0, truth))
        copy.append(psnr(_png(demo_cli.DEMO_INPUTS / c["query"]) / 255.0, truth))
    assert np.mean(model) > np.mean(copy) + 2.0, (model, copy)
