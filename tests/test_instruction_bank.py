"""The model's instruction bank: snapping with guards, the weights-file metadata, the pipeline and
the CLI using the loaded model's bank, and a training run that records it (end to end, tiny)."""
from __future__ import annotations

import io
import json

import pytest
import torch

from gie_core.instruction import BankMatch, InstructionBank, unify, unify_batch, unify_match
from gie_core.instruction.bank import contrast_guard, decode_bank, encode_bank, lexical_similarity

BANK = ["remove the dog", "add a dog", "make the woman older", "make the woman younger",
        "change the hair of the girl to blonde", "change the weather to snowy",
        "flip the image horizontally", "flip the image vertically", "add two birds"]


# --- snapping ------------------------------------------------------------------------------------

@pytest.mark.parametrize("similarity", ["lexical", "embedding"])
def test_exact_and_target_filled_matches(similarity):
    m = unify_match("Could you make the woman look older?", bank=BANK, similarity=similarity)
    assert (m.output, m.snapped, m.reason, m.score) == ("make the woman older", True, "exact", 1.0)
    m = unify_match("blonde hair", bank=BANK, similarity=similarity)  # names no one: the bank does
    assert m.unified == "change the hair to blonde"
    assert m.output == "change the hair of the girl to blonde" and m.snapped and 0 < m.score <= 1


@pytest.mark.parametrize("similarity", ["lexical", "embedding"])
def test_parsed_edits_never_cross_a_family_value_or_target(similarity):
    # Close in wording, different edits: kept as the rules say, nearest entry only reported.
    for text, expected in [("add a cat", "add a cat"), ("remove the cat", "remove the cat"),
                           ("make the man older", "make the man older"),
                           ("add three birds", "add three birds"),
                           ("make it rain", "change the weather to rainy")]:
        m = unify_match(text, bank=BANK, similarity=similarity, threshold=0.0)
        assert m.output == expected and not m.snapped and m.match in BANK


def test_unparsed_text_snaps_when_close_and_no_guard_fires():
    bank = InstructionBank(BANK, similarity="lexical", threshold=0.5)
    text = "flip the image horizontally like a pancake"
    assert unify(text) == "flip the image horizontally like a pancake"  # the rules refuse it
    (m,) = bank.match_unified([text], [unify(text)])
    assert m.snapped and m.output == "flip the image horizontally" and m.reason == "similar"
    # The nearest entry is the opposite action: reported, never used.
    text = "dog: remove it, no, add it back in"
    (m,) = bank.match_unified([text], [unify(text)])
    assert not m.snapped and m.output == unify(text)


def test_contrast_guard():
    assert contrast_guard("bring a dog in", "remove the dog") is None  # no opposite word pair
    assert "opposite" in contrast_guard("add the dog", "remove the dog")
    assert "opposite" in contrast_guard("she looks older now", "make the woman younger")
    assert "opposite" in contrast_guard("mirror it vertically", "flip the image horizontally")
    assert contrast_guard("two birds please", "add three birds") == "different numbers"
    assert contrast_guard("a red one", "change the colour of the car to blue") == "different colours"


def test_lexical_similarity_is_a_bounded_symmetric_score():
    a, b = "flip the image horizontally", "flip it horizontally please"
    assert lexical_similarity(a, b) == pytest.approx(lexical_similarity(b, a))
    assert 0 < lexical_similarity(a, b) < 1 and lexical_similarity(a, a) == pytest.approx(1.0)
    assert lexical_similarity(a, "remove the dog") < lexical_similarity(a, b)


def test_embedding_similarity_matches_a_plain_numpy_cosine():
    # Independent of the bank code: raw MiniLM vectors, cosine in numpy.
    import numpy as np

    from gie_core.instruction.embedding import load_embedder
    emb = load_embedder()
    bank = InstructionBank(BANK, similarity="embedding")
    got = bank.scores(["could the dog go away"])[0]
    q = emb.encode(["could the dog go away"], convert_to_numpy=True)[0]
    b = emb.encode(bank.entries, convert_to_numpy=True)
    want = b @ q / (np.linalg.norm(b, axis=1) * np.linalg.norm(q))
    assert np.allclose(got, want, atol=1e-5)


def test_bank_snapping_is_idempotent_and_without_bank_behaviour_is_unchanged():
    texts = ["blonde hair", "flip it horizontally", "get rid of the dog", "Füge einen Hut hinzu",
             "make her look older", "add a cat"]
    outs = unify_batch(texts, bank=BANK)
    assert unify_batch(outs, bank=BANK) == outs
    assert unify_batch(texts) == [unify(t) for t in texts]  # no bank: the rules alone
    assert outs[3] == "füge einen hut hinzu"


def test_bank_arguments_are_checked():
    with pytest.raises(ValueError, match="bank"):
        unify("remove the dog", bank=[])
    with pytest.raises(ValueError, match="similarity"):
        unify("remove the dog", bank=BANK, similarity="magic")
    with pytest.raises(ValueError, match="threshold"):
        unify("remove the dog", bank=BANK, threshold=3)
    with pytest.raises(TypeError):
        unify("remove the dog", bank="remove the dog")


def test_bank_encoding_round_trips_and_rejects_garbage():
    raw = encode_bank(["remove the dog", "add a dog", "remove the dog"])
    assert decode_bank(raw) == ["add a dog", "remove the dog"]  # sorted, deduplicated
    assert json.loads(raw)["liu_backend"] == "rules"
    assert decode_bank(None) is None
    with pytest.raises(ValueError, match="JSON"):
        decode_bank("{oops")
    with pytest.raises(ValueError, match="list of strings"):
        decode_bank('{"instructions": [1, 2]}')


def test_bank_match_describes_itself():
    m = unify_match("blonde hair", bank=BANK, similarity="lexical")
    assert isinstance(m, BankMatch) and "snapped to" in m.describe() and m.to_dict()["snapped"]


# --- the weights file, the loaders, the pipeline, the CLI -----------------------------------------

HINT = {"dims": [8, 16], "depths": [0, 1]}


@pytest.fixture(scope="module")
def controlnets(tmp_path_factory):
    from gie_core import tiny
    from gie_core.models import VMambaControlNetModel, save_vmamba_controlnet

    root = tmp_path_factory.mktemp("bank")
    cn = VMambaControlNetModel.from_unet(tiny.make_tiny_unet(0), hint_encoder_config=HINT)
    with_bank = save_vmamba_controlnet(cn, root / "with_bank.safetensors", instruction_bank=BANK)
    old = save_vmamba_controlnet(cn, root / "old.safetensors")  # as files were written before banks
    return {"root": root, "with": with_bank, "old": old}


def test_weights_file_records_the_bank_and_old_files_have_none(controlnets):
    from gie_core.loading import load_controlnet
    from gie_core.models.io import read_instruction_bank

    assert read_instruction_bank(controlnets["with"]) == sorted(BANK)
    assert read_instruction_bank(controlnets["old"]) is None
    assert load_controlnet(controlnets["with"]).instruction_bank == sorted(BANK)
    assert load_controlnet(controlnets["old"]).instruction_bank is None


def test_diffusers_folder_controlnet_carries_its_bank(tmp_path):
    from diffusers import ControlNetModel

    from gie_core import tiny
    from gie_core.loading import load_controlnet
    from trainer.export import save_controlnet

    cn = ControlNetModel.from_unet(tiny.make_tiny_unet(0))
    folder = save_controlnet(cn, tmp_path / "conv.safetensors", instruction_bank=BANK)
    assert (folder / "instruction_bank.json").is_file()
    assert load_controlnet(folder).instruction_bank == sorted(BANK)


def _cli(argv, capsys, stdin_bytes=None, monkeypatch=None):
    from gie_core.cli import main
    if stdin_bytes is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin_bytes), encoding="utf-8"))
    rc = main(["unify", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_model_bank_json(controlnets, capsys):
    rc, out, err = _cli(["--model", str(controlnets["with"]), "--json", "blonde hair", "add a cat"], capsys)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["canonical"] == "change the hair of the girl to blonde" and rows[0]["snapped"]
    assert rows[0]["match"] == "change the hair of the girl to blonde" and 0 < rows[0]["score"] <= 1
    assert rows[1]["canonical"] == "add a cat" and not rows[1]["snapped"]
    rc, out, err = _cli(["--model", str(controlnets["old"]), "blonde hair"], capsys)
    assert rc == 0 and out.strip() == "change the hair to blonde" and "no instruction bank" in err


def test_cli_model_errors(controlnets, capsys, tmp_path):
    rc, _, err = _cli(["--model", str(tmp_path / "missing.safetensors"), "x"], capsys)
    assert rc == 2 and "does not exist" in err and "Traceback" not in err
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "config.json").write_text('{"architectures": ["GPT2LMHeadModel", "LlamaForCausalLM"]}')
    rc, _, err = _cli(["--model", str(lm), "x"], capsys)
    assert rc == 2 and "--llm-model" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    rc, _, err = _cli(["--model", str(bad), "x"], capsys)
    assert rc == 2 and "--model" in err and len(err.strip().splitlines()) == 1


def test_cli_non_utf8_input_is_one_clear_line(capsys, monkeypatch, tmp_path):
    rc, out, err = _cli([], capsys, stdin_bytes=b"remove the dog\nCaf\xe9 au lait\n", monkeypatch=monkeypatch)
    assert rc == 2 and out == ""
    assert err.strip().count("\n") == 0 and "line 2 is not UTF-8" in err and "0xe9" in err
    rc, _, err = _cli(["remove the \udce9 dog"], capsys)  # how Python passes a non-UTF-8 argument
    assert rc == 2 and "argument 1 is not UTF-8" in err and "Traceback" not in err
    bank = tmp_path / "bank.txt"
    bank.write_bytes(b"remove the d\xf6g\n")
    rc, _, err = _cli(["--bank", str(bank), "x"], capsys)
    assert rc == 2 and "not UTF-8" in err


def test_cli_non_utf8_input_through_a_real_process(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "gie_core.cli", "unify"], input=b"caf\xe9 noir\n",
                          capture_output=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "Traceback" not in err and "not UTF-8" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_training_records_the_bank_and_inference_uses_it_by_default(tmp_path):
    """End to end: a tiny training run with LIU writes the unified training instructions into the
    model; the pipeline loaded from that file snaps instructions onto them unless told not to."""
    from gie_core import tiny
    from gie_core.loading import load_pipeline
    from gie_core.models.io import read_instruction_bank
    from trainer.config import make_config
    from trainer.data.synthetic import FAMILIES
    from trainer.train import train

    cfg = make_config(data="synthetic:pairs=2,size=64,families=flip+invert", tile=64, base_model="tiny",
                      hint_encoder_config='{"dims": [16, 32], "depths": [0, 1]}', clip_model="tiny",
                      batch_size=2, validate_every=0, validation_inference_steps=0, checkpoint_every=0,
                      progress=False, liu=True, verify="header", val_fraction=0.0, max_steps=1,
                      esm=False, sam=False, output_dir=str(tmp_path / "run"))
    result = train(cfg)
    bank = read_instruction_bank(result["export"])
    expected = {unify(p) for f in ("flip", "invert") for v in FAMILIES[f].variants for p in v.paraphrases}
    assert set(bank) == {e for e in expected if e in bank} and "flip the image horizontally" in bank
    assert "invert the colours of the image" in bank

    tiny.save_tiny_sd(tmp_path / "sd", seed=cfg.tiny_seed)
    pipe = load_pipeline(tmp_path / "sd", result["export"], device="cpu", dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.controlnet.instruction_bank == bank
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    text = "flip the image horizontally like a pancake"
    out = pipe.edit([(image, image.flip(2))], image, text, tile=64, num_inference_steps=1, seed=0,
                    guidance_scale=1.0)
    assert out.instruction == "flip the image horizontally"
    assert out.instruction_match.snapped and out.instruction_match.match == "flip the image horizontally"
    off = pipe.edit([(image, image.flip(2))], image, text, tile=64, num_inference_steps=1, seed=0,
                    guidance_scale=1.0, instruction_bank=None)
    assert off.instruction == unify(text) and off.instruction_match is None
