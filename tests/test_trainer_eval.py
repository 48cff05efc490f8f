"""instructgie-eval: metrics against independent computations, FID plumbing, an end-to-end run."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.evaluate import EvalItem, Scorer, TinyFeatures, fid, main, markdown_table, score_splits


def _img(seed, size=32):
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def test_psnr_ssim_and_clip_direction():
    from trainer.losses import CLIPImageEmbedder
    from trainer.train import make_tiny_clip

    after, before = _img(1), _img(2)
    noisy = (after + 0.05 * (2 * _img(3) - 1)).clamp(0, 1)
    items = [EvalItem(after.clone(), after, before, "x", "a", True), EvalItem(noisy, after, before, "x", "b", False)]
    s = Scorer(clip=CLIPImageEmbedder(make_tiny_clip()))
    res = score_splits(items, s)
    mse = float(((noisy - after) ** 2).mean())
    assert res["splits"]["unseen"]["psnr"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-4)
    assert res["splits"]["seen"]["ssim"] == pytest.approx(1.0, abs=1e-5)
    copy_mse = float(((before - after) ** 2).mean())
    assert res["splits"]["seen"]["psnr_copy_query"] == pytest.approx(10 * np.log10(1 / copy_mse), rel=1e-4)
    assert res["splits"]["seen"]["clip_dir_image"] == pytest.approx(1.0, abs=1e-5)  # edit == ground truth
    assert res["splits"]["unseen"]["ssim"] < 1.0
    assert set(res["splits"]) == {"seen", "unseen", "all"} and set(res["families"]) == {"a", "b"}
    table = markdown_table({"m": res})
    assert "| m | seen |" in table and "PSNR" in table


def test_fid_plumbing_with_a_tiny_feature_extractor():
    feats = TinyFeatures()
    real = [_img(i) for i in range(12)]
    same = fid(feats, real, real, size=32)
    shifted = fid(feats, [(x * 0.3) for x in real], real, size=32)
    assert abs(same) < 1e-3 and shifted > same + 1e-3
    assert np.isnan(fid(feats, real[:1], real[:1]))


def test_predictions_folder_cli(tmp_path):
    rows = []
    for i in range(3):
        for name, seed in (("b", 10 + i), ("a", 20 + i)):
            Image.fromarray((_img(seed).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / f"{name}{i}.png")
        rows.append({"prediction": f"a{i}.png", "after": f"a{i}.png", "before": f"b{i}.png", "instruction": "x",
                     "family": "f", "seen": i < 2})
    rows.append({"prediction": "missing.png", "after": "a0.png", "before": "b0.png"})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--predictions", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())["models"]["predictions"]
    assert m["splits"]["seen"]["n"] == 2 and m["splits"]["unseen"]["n"] == 1
    assert m["splits"]["seen"]["psnr"] is None  # identical images: infinite PSNR, reported as null
    assert main(["--out", str(tmp_path / "o2")]) == 2  # neither models nor predictions


def test_end_to_end_eval_of_a_trained_run(tmp_path):
    from trainer.config import make_config
    from trainer.train import train

    cfg = make_config(data="synthetic:pairs=3,size=64,families=flip", tile=64, base_model="tiny",
                      hint_encoder_config='{"dims": [16, 32], "depths": [0, 1]}', esm=False, batch_size=1,
                      max_steps=1, validate_every=0, checkpoint_every=0, progress=False, liu=False,
                      val_fraction=0.0, output_dir=str(tmp_path / "run"))
    train(cfg)
    out = tmp_path / "eval"
    rc = main(["--model", f"full={tmp_path / 'run'}", "--data", "synthetic:pairs=2,size=64,families=flip+sepia,start_index=50",
               "--steps", "2", "--queries-per-instruction", "1", "--clip-model", "tiny", "--inception", "tiny",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())["models"]["full"]
    assert m["splits"]["seen"]["n"] == 2 and m["splits"]["unseen"]["n"] == 1  # flip: 2 variants; sepia held out
    for split in m["splits"].values():
        assert np.isfinite(split["psnr"]) and -1 <= split["clip_dir_image"] <= 1
    assert "| full | unseen |" in (out / "metrics.md").read_text()
    assert (out / "samples-full.png").is_file()


def test_fid_feature_specs(tmp_path):
    from trainer.evaluate import load_fid_features

    assert load_fid_features("") is None
    assert isinstance(load_fid_features("tiny"), TinyFeatures)
    with pytest.raises(ValueError, match="inception weights"):
        load_fid_features(str(tmp_path / "missing.pth"))
