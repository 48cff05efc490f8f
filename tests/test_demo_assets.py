"""The demo's bundled inputs (gie_core/assets/demo/) are exactly what the in-context edit generator
(trainer/data/incontext.py) draws for their recorded seeds: regenerate them and compare pixel for pixel.

Run as a script to (re)write them: ``python tests/test_demo_assets.py [FOLDER]``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ASSETS = Path(__file__).resolve().parents[1] / "gie_core" / "assets" / "demo"

# Seed 2026 is never used for training data (training draws from its own seed streams), so every
# image here is new to the model. The cases: edits of training families with fresh parameters
# (the example alone shows them: a colour matrix, a hue angle, gamma curves, a target colour),
# two that the instruction names, and three the model never trained on — whole families (sepia, a
# channel swap) and a held-out parameter range (hue turned by about 180 degrees).
DEMO_SEED = 2026
DEMO_SIZE = 32
DEMO_CASES = [  # (name, family, seen split, instruction; None = the generic one)
    ("colour_matrix", "colour_matrix", True, None),
    ("hue_rotate", "hue_rotate", True, None),
    ("gamma", "gamma", True, None),
    ("recolour_objects", "recolour_objects", True, None),
    ("invert", "invert", True, "make it a negative"),
    ("flip_h", "flip_h", True, "mirror the image left to right"),
    ("grayscale", "grayscale", True, None),
    ("sepia", "sepia", False, None),
    ("channel_swap", "channel_swap", False, None),
    ("hue_rotate_180", "hue_rotate", False, None),
]
GENERIC = "edit it like the example"


def _visible(pair, threshold: float = 0.1) -> bool:
    return bool(np.abs(pair.before - pair.after).mean() > threshold)


def build_demo_inputs(folder: Path) -> dict:
    """Writes the PNGs and ``manifest.json`` of the demo cases into ``folder``; returns the manifest."""
    from trainer.data import incontext as ic

    folder.mkdir(parents=True, exist_ok=True)
    png = lambda a: Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8))  # noqa: E731
    cases = []
    for i, (name, family, seen, instruction) in enumerate(DEMO_CASES):
        rng = np.random.default_rng([DEMO_SEED, i])
        edit = ic.sample_edit(rng, seen, [family])
        pairs = []
        while len(pairs) < 2:  # the first pairs whose edit is plainly visible
            p = ic.make_pair(edit, rng, DEMO_SIZE)
            if _visible(p):
                pairs.append(p)
        example, query = pairs
        files = {"example_before": example.before, "example_after": example.after,
                 "query": query.before, "ground_truth": query.after}
        for role, img in files.items():
            png(img).save(folder / f"{name}_{role}.png", optimize=True)
        cases.append({
            "name": name, "family": family, "seen": seen,
            "instruction": instruction or GENERIC,
            "examples": [[f"{name}_example_before.png", f"{name}_example_after.png"]],
            "query": f"{name}_query.png", "ground_truth": f"{name}_ground_truth.png",
            "source": {"generator": "trainer.data.incontext", "seed": [DEMO_SEED, i], "size": DEMO_SIZE,
                       "edit": {"family": edit.family, "params": list(edit.params), "seen": edit.seen}},
        })
    manifest = {"version": 2, "cases": cases}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def test_bundled_demo_inputs_match_the_generator(tmp_path):
    pytest.importorskip("trainer.data.incontext")
    shipped = json.loads((ASSETS / "manifest.json").read_text())
    fresh = build_demo_inputs(tmp_path)
    assert shipped == fresh
    for case in fresh["cases"]:
        names = [case["query"], case["ground_truth"], *case["examples"][0]]
        for name in names:
            a = np.asarray(Image.open(ASSETS / name).convert("RGB"))
            b = np.asarray(Image.open(tmp_path / name).convert("RGB"))
            assert a.shape == (DEMO_SIZE, DEMO_SIZE, 3)
            np.testing.assert_array_equal(a, b, err_msg=name)
        # the edit is visible: the ground truth differs from the query it was made from
        q = np.asarray(Image.open(ASSETS / case["query"]), dtype=np.float32)
        t = np.asarray(Image.open(ASSETS / case["ground_truth"]), dtype=np.float32)
        assert np.abs(q - t).mean() > 0.1 * 255, case["name"]
    assert {c["seen"] for c in fresh["cases"]} == {True, False}


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ASSETS
    m = build_demo_inputs(out)
    print(f"wrote {len(m['cases'])} demo cases to {out}")
