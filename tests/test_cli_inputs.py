"""What a newcomer types wrong, and what `edit` reads from a model folder: one-line errors before any
model loads, and the settings a trained model records."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gie_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "gie_core" / "assets" / "demo"
BEFORE, AFTER, QUERY = (DEMO / f"sepia_{n}.png" for n in ("example_before", "example_after", "query"))


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail loudly if a command gets as far as loading models (the checks must come first)."""
    from gie_core import loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(loading, "load_pipeline", refuse)


def _edit(*extra, model=None, out=None):
    args = ["edit", "--example", str(BEFORE), str(AFTER), "--query", str(QUERY), "--instruction", "make it sepia"]
    if model is not None:
        args += ["--model", str(model)]
    if out is not None:
        args += ["--out", str(out)]
    return [*args, *map(str, extra)]


def _one_line_error(capsys, argv, command="edit") -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"instructgie {command}: error:"), err
    return last


def test_non_utf8_instruction_from_a_real_command_line(tiny_stack, tmp_path):
    """The bytes go through the real argv decoding (surrogate escapes), in a new process."""
    cmd = [sys.executable, "-m", "gie_core.cli", *_edit(model=tiny_stack, out=tmp_path / "o")]
    argv = [a.encode() for a in cmd]
    argv[argv.index(b"make it sepia")] = b"make it s\xe9pia"
    proc = subprocess.run(argv, capture_output=True, cwd=ROOT, timeout=600)
    err = proc.stderr.decode("utf-8", "replace").strip()
    assert proc.returncode == 2, err
    assert err.splitlines()[-1] == ("instructgie edit: error: --instruction: not valid UTF-8 text (byte 0xe9 at "
                                    "character 10); pass the text in UTF-8"), err
    assert "Traceback" not in err


def test_instruction_length_is_checked_first_and_truncate_cuts_it(tiny_stack, tmp_path, capsys, monkeypatch):
    long_text = "make it sepia " * 800  # 11200 characters
    with monkeypatch.context() as m:
        from gie_core import loading

        m.setattr(loading, "load_pipeline", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
        argv = _edit("--steps", 1, model=tiny_stack, out=tmp_path / "a")
        argv[argv.index("make it sepia")] = long_text
        last = _one_line_error(capsys, argv)
    assert "11200 characters, more than the 2000 allowed" in last and "--truncate" in last
    assert main([*argv, "--truncate"]) == 0
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert 1000 < len(record["instruction"]) <= 2000 and long_text.startswith(record["instruction"])


@pytest.mark.parametrize("command", ["edit", "demo"])
def test_out_naming_a_file_is_one_line(tiny_stack, tmp_path, capsys, no_model_load, command):
    existing = tmp_path / "taken.png"
    existing.write_bytes(b"x")
    argv = (_edit(model=tiny_stack, out=existing) if command == "edit"
            else ["demo", "--model", str(tiny_stack), "--out", str(existing)])
    last = _one_line_error(capsys, argv, command)
    assert "taken.png' is a file" in last


def _corrupt_copies(stack: Path, tmp: Path) -> dict[str, Path]:
    cn = stack / "controlnet.safetensors"
    data = cn.read_bytes()
    truncated = tmp / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    junk = tmp / "junk.safetensors"
    junk.write_bytes(b"\x07" * 64)
    base = tmp / "base"
    shutil.copytree(stack / "base", base)
    unet = base / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:-1000])
    return {"truncated": truncated, "junk": junk, "base": base}


@pytest.mark.parametrize("case, message", [
    ("missing base", "base: .*nope does not exist"),
    ("missing controlnet", "controlnet: .*nope.safetensors does not exist"),
    ("truncated controlnet", "truncated.safetensors is truncated: tensor"),
    ("junk controlnet", "junk.safetensors is not a readable .safetensors file"),
    ("truncated base weights", "diffusion_pytorch_model.safetensors is truncated"),
    ("controlnet given the base", "controlnet: .*base is a folder without config.json"),
    ("base given the controlnet", "base: .*controlnet.safetensors is an InstructGIE VMamba ControlNet; pass it as"),
    ("no models at all", "--base and --controlnet: required"),
    ("both kinds", "--model replaces --base and --controlnet"),
])
def test_bad_model_paths_are_reported_before_loading(tiny_stack, tmp_path, capsys, no_model_load, case, message):
    bad = _corrupt_copies(tiny_stack, tmp_path)
    base, cn = tiny_stack / "base", tiny_stack / "controlnet.safetensors"
    models = {
        "missing base": ["--base", tmp_path / "nope", "--controlnet", cn],
        "missing controlnet": ["--base", base, "--controlnet", tmp_path / "nope.safetensors"],
        "truncated controlnet": ["--base", base, "--controlnet", bad["truncated"]],
        "junk controlnet": ["--base", base, "--controlnet", bad["junk"]],
        "truncated base weights": ["--base", bad["base"], "--controlnet", cn],
        "controlnet given the base": ["--base", cn, "--controlnet", base],
        "base given the controlnet": ["--base", cn, "--controlnet", cn],
        "no models at all": [],
        "both kinds": ["--model", tiny_stack, "--base", base],
    }[case]
    last = _one_line_error(capsys, _edit(*models, out=tmp_path / "o"))
    assert __import__("re").search(message, last), last


def test_edit_takes_the_model_folders_settings_and_flags_win(tiny_stack, tmp_path, capsys):
    """train_config.json says tile 64, crop, LIU; guidance and steps are what the trainer validates with."""
    out = tmp_path / "from_model"
    assert main(_edit("--seed", 1, model=tiny_stack, out=out)) == 0
    err = capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert (record["tile"], record["resize"], record["guidance"], record["steps"], record["unify"]) == \
        (64, "crop", 1.0, 20, True)
    assert record["settings_from"] == str(tiny_stack / "train_config.json")
    assert "tile 64, resize crop, guidance 1, steps 20" in err
    assert record["outputs"][0]["layout"]["tile"] == 64
    # the same model through --base/--controlnet: the train_config.json beside the ControlNet is read
    out2 = tmp_path / "paths"
    assert main(_edit("--seed", 1, "--base", tiny_stack / "base", "--controlnet",
                      tiny_stack / "controlnet.safetensors", out=out2)) == 0
    assert np.array_equal(np.asarray(Image.open(out2 / "sepia_query_edit.png")),
                          np.asarray(Image.open(out / "sepia_query_edit.png")))
    # options given on the command line win over the folder's
    out3 = tmp_path / "flags"
    assert main(_edit("--seed", 1, "--tile", 128, "--resize", "fit", "--guidance", 2, "--steps", 2,
                      "--no-unify", model=tiny_stack, out=out3)) == 0
    record = json.loads((out3 / "run.json").read_text())
    assert (record["tile"], record["resize"], record["guidance"], record["steps"], record["unify"]) == \
        (128, "fit", 2.0, 2, False)


def test_a_controlnet_without_a_model_folder_keeps_the_defaults(tiny_stack, tmp_path, capsys, no_model_load):
    lone = tmp_path / "lone.safetensors"
    shutil.copy(tiny_stack / "controlnet.safetensors", lone)
    with pytest.raises(AssertionError, match="a model was loaded"):  # got past every check to the load
        main(_edit("--base", tiny_stack / "base", "--controlnet", lone, out=tmp_path / "o"))
    assert "tile 256, resize fit, guidance 7.5, steps 20 (unset options from the defaults)" in capsys.readouterr().err


def test_threads_option_and_its_errors(tiny_stack, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GIE_THREADS", raising=False)
    out = tmp_path / "t"
    assert main(_edit("--threads", 1, "--steps", 1, model=tiny_stack, out=out)) == 0
    assert json.loads((out / "run.json").read_text())["threads"] == 1
    assert "using 1 CPU thread (set by --threads)" in capsys.readouterr().err
    last = _one_line_error(capsys, _edit("--threads", "lots", "--steps", 1, model=tiny_stack, out=out))
    assert "--threads: expected a positive number of threads or 'auto', got 'lots'" in last


# ---------------------------------------------------------------------------------------------- mask
@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Nine images, the fifth not an image at all."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    face = data.astronaut()
    for i in range(9):
        Image.fromarray(np.roll(face, 8 * i, axis=1)).save(folder / f"p{i}.png")
    (folder / "p4.png").write_bytes(b"not an image")
    return folder


def test_mask_keeps_going_past_an_unreadable_image(photos, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["mask", str(photos), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == [f"p{i}_mask.png" for i in range(9) if i != 4]
    assert "wrote 8 mask(s)" in captured.out
    assert "1 of 9 image(s) could not be read" in captured.err and "p4.png" in captured.err
    assert "Traceback" not in captured.err
    assert all(np.asarray(Image.open(out / f"p{i}_mask.png")).max() == 255 for i in (0, 8))  # faces found


def test_mask_unknown_region_and_a_shrink_that_erases(photos, tmp_path, capsys):
    last = _one_line_error(capsys, ["mask", str(photos / "p0.png"), "-o", str(tmp_path / "a"), "--region", "elbow"],
                           "mask")
    assert "region 'elbow' is unknown" in last
    last = _one_line_error(capsys, ["mask", str(photos / "p0.png"), "-o", str(tmp_path / "b"), "--region", "hair"],
                           "mask")
    assert "needs a model folder" in last  # a known name still gets the model hint
    assert main(["mask", str(photos / "p0.png"), "-o", str(tmp_path / "c"), "--dilate", "-1000"]) == 1
    err = capsys.readouterr().err
    assert "--dilate -1000 shrank the region found in 1 image(s) to nothing" in err
    assert np.asarray(Image.open(tmp_path / "c" / "p0_mask.png")).max() == 0
    assert main(["mask", str(photos / "p0.png"), "-o", str(tmp_path / "d"), "--dilate", "-4"]) == 0
    last = _one_line_error(capsys, ["mask", str(photos / "p0.png"), "-o", str(photos / "p0.png")], "mask")
    assert "--output-dir" in last and "is a file" in last
