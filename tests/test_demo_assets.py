"""The demo's bundled inputs (gie_core/assets/demo/) are exactly what the synthetic generator draws
for their recorded (seed, family, variant, index): regenerate them and compare pixel for pixel.

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

# Seed 2026 is never used in training (the shipped model trains on seed 0), so every image here is
# new to the model; the last three families are held out of training altogether.
DEMO_SEED = 2026
DEMO_SIZE = 64
DEMO_CASES = [  # (family, variant, paraphrase index: the wording LIU has to unify)
    ("flip", "horizontal", 1),
    ("invert", "colors", 1),
    ("recolour", "blue", 2),
    ("grayscale", "gray", 0),
    ("rotate", "180", 1),
    ("brightness", "darker", 0),
    ("sepia", "sepia", 1),
    ("outline", "edges", 0),
    ("pixelate", "pixels", 1),
]


def _visible(pair, threshold: float = 15.0) -> bool:
    diff = np.abs(np.asarray(pair.before, np.float32) - np.asarray(pair.after, np.float32)).mean()
    return bool(diff > threshold)


def build_demo_inputs(folder: Path) -> dict:
    """Writes the PNGs and ``manifest.json`` of the demo cases into ``folder``; returns the manifest."""
    from trainer.data.synthetic import HELD_OUT_DEFAULT, generate_pair

    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for family, variant, paraphrase in DEMO_CASES:
        # The first pairs whose edit is plainly visible (a horizontally flipped symmetric face is not).
        indices = [i for i in range(64) if _visible(generate_pair(family, variant, i, DEMO_SIZE, DEMO_SEED))][:2]
        example, query = (generate_pair(family, variant, i, DEMO_SIZE, DEMO_SEED, paraphrase=paraphrase)
                          for i in indices)
        name = f"{family}_{variant}"
        files = {"example_before": example.before, "example_after": example.after,
                 "query": query.before, "ground_truth": query.after}
        for role, img in files.items():
            img.save(folder / f"{name}_{role}.png", optimize=True)
        cases.append({
            "name": name, "family": family, "variant": variant,
            "seen": family not in HELD_OUT_DEFAULT,
            "instruction": example.instruction, "canonical": example.canonical,
            "examples": [[f"{name}_example_before.png", f"{name}_example_after.png"]],
            "query": f"{name}_query.png", "ground_truth": f"{name}_ground_truth.png",
            "source": {"generator": "trainer.data.synthetic.generate_pair", "seed": DEMO_SEED,
                       "size": DEMO_SIZE, "example_index": indices[0], "query_index": indices[1], "paraphrase": paraphrase},
        })
    manifest = {"version": 1, "cases": cases}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def test_bundled_demo_inputs_match_the_generator(tmp_path):
    pytest.importorskip("trainer.data.synthetic")
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
        assert np.abs(q - t).mean() > 15.0, case["name"]
    assert {c["seen"] for c in fresh["cases"]} == {True, False}


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ASSETS
    m = build_demo_inputs(out)
    print(f"wrote {len(m['cases'])} demo cases to {out}")
