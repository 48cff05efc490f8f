"""`instructgie edit` on image files with tiny models on disk, including its one-line errors."""
import json

import numpy as np
import pytest
from PIL import Image

from gie_core import tiny
from gie_core.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from gie_core.models import VMambaControlNetModel, save_vmamba_controlnet

    root = tmp_path_factory.mktemp("cli")
    tiny.save_tiny_sd(root / "sd")
    cn = VMambaControlNetModel.from_unet(tiny.make_tiny_unet(0), hint_encoder_config=dict(dims=(8, 16), depths=(0, 1)))
    save_vmamba_controlnet(cn, root / "cn.safetensors")
    rng = np.random.default_rng(0)

    def img(name, h, w, mode="RGB"):
        arr = rng.integers(0, 256, size=(h, w, len(mode)), dtype=np.uint8)
        Image.fromarray(arr, mode).save(root / name)
        return str(root / name)

    return dict(root=root, base=str(root / "sd"), cn=str(root / "cn.safetensors"),
                before=img("before.png", 48, 48), after=img("after.png", 48, 48),
                q1=img("q1.png", 40, 72), q2=img("q2.png", 64, 64, "RGBA"))


def _args(s, out, *extra):
    return ["edit", "--example", s["before"], s["after"], "--query", s["q1"], "--instruction", "make it winter",
            "--base", s["base"], "--controlnet", s["cn"], "--out", str(out), "--tile", "64", "--steps", "2",
            "--guidance", "1", "--seed", "5", *extra]


def test_edit_writes_edits_at_original_size_and_a_run_record(setup, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(_args(setup, out, "--query", setup["q2"], "--save-grid", "--resize", "crop"))
    assert rc == 0
    e1, e2 = Image.open(out / "q1_edit.png"), Image.open(out / "q2_edit.png")
    assert e1.size == (40, 40) and e2.size == (64, 64)  # crop mode: the centred square, original pixels
    assert Image.open(out / "q1_grid.png").size == (128, 128)
    record = json.loads((out / "run.json").read_text())
    assert [o["seed"] for o in record["outputs"]] == [5, 6]
    assert record["outputs"][0]["layout"]["resize"] == "crop"
    assert str(out / "q1_edit.png") in capsys.readouterr().out
    # the same command reproduces the same pixels
    out2 = tmp_path / "again"
    assert main(_args(setup, out2, "--query", setup["q2"], "--resize", "crop")) == 0
    assert np.array_equal(np.asarray(Image.open(out2 / "q1_edit.png")), np.asarray(e1))


def test_cell_size_and_fit(setup, tmp_path):
    out = tmp_path / "o"
    assert main(_args(setup, out, "--cell-size", "--no-unify")) == 0
    assert Image.open(out / "q1_edit.png").size == (64, 36)  # 40x72 fitted into 64: 36 rows x 64 columns
    assert json.loads((out / "run.json").read_text())["outputs"][0]["instruction_used"] == "make it winter"


@pytest.mark.parametrize("change, message", [
    (lambda a, s: a.__setitem__(a.index(s["q1"]), s["q1"] + ".missing"), "does not exist"),
    (lambda a, s: a.__setitem__(a.index(s["base"]), s["base"] + "-nope"), "base"),
    (lambda a, s: a.__setitem__(a.index(s["cn"]), s["base"] + "/model_index.json"), "controlnet"),
    (lambda a, s: a.__setitem__(a.index("64"), "100"), "--tile"),
    (lambda a, s: a.__setitem__(a.index("2"), "0"), "--steps"),
    (lambda a, s: a.extend(["--scheduler", "warp"]), "scheduler"),
    (lambda a, s: a.extend(["--control-start", "0.9", "--control-end", "0.1"]), "control"),
    (lambda a, s: a.extend(["--background", "plaid"]), "--background"),
    (lambda a, s: a.extend(["--device", "cuda"]) if not __import__("torch").cuda.is_available()
     else a.extend(["--dtype", "fp16", "--device", "cpu"]), "CUDA|fp16"),
    (lambda a, s: a.extend(["--example", s["before"], s["after"]] * 4), "1 to 4"),
])
def test_errors_are_one_line(setup, tmp_path, capsys, change, message):
    args = _args(setup, tmp_path / "e")
    change(args, setup)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1].split("\r")[-1]  # (model loading may draw progress bars before)
    assert last.startswith("instructgie edit: error:"), err
    assert __import__("re").search(message, last), err


def test_not_an_image_and_pickle_base(setup, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    args = _args(setup, tmp_path / "e")
    args[args.index(setup["q1"])] = str(bad)
    assert main(args) == 2
    assert "not a readable image" in capsys.readouterr().err
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    args = _args(setup, tmp_path / "e")
    args[args.index(setup["base"])] = str(ckpt)
    assert main(args) == 2
    assert "--allow-pickle" in capsys.readouterr().err


def test_help_is_fast_and_complete(capsys):
    with pytest.raises(SystemExit) as e:
        main(["edit", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--example", "--query", "--instruction", "--base", "--controlnet", "--steps", "--guidance",
                 "--strength", "--control-start", "--seed", "--scheduler", "--tile", "--resize", "--device",
                 "--dtype", "--allow-pickle", "--no-unify", "--out"):
        assert flag in text
