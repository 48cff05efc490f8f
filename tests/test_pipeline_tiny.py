"""The offline tiny tokenizer and the tiny SD folder the other tests build on."""
import json

import torch
from transformers import CLIPTokenizer

from gie_core import tiny


def test_tiny_vocab_layout_matches_text_encoder_config():
    cfg = tiny.tiny_text_encoder_config()
    vocab, merges = tiny.tiny_clip_vocab(cfg["vocab_size"])
    assert len(vocab) == cfg["vocab_size"] and sorted(vocab.values()) == list(range(cfg["vocab_size"]))
    assert vocab["<|startoftext|>"] == cfg["bos_token_id"] and vocab["<|endoftext|>"] == cfg["eos_token_id"]
    # every merge produces a token of the vocabulary, from tokens of the vocabulary
    for m in merges:
        a, b = m.split(" ")
        assert a in vocab and b in vocab and a + b in vocab
    assert tiny.tiny_clip_vocab(cfg["vocab_size"]) == (vocab, merges)  # deterministic


def test_tiny_tokenizer_round_trips_and_saves(tmp_path):
    tok = tiny.make_tiny_tokenizer(tmp_path / "tok")
    text = "Turn the sky into a starry night, 2 cats!"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id == 998 and ids[-1] == tok.eos_token_id == 999
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")
    # editing words are single tokens after the BPE training; unseen ones fall back to bytes
    assert len(tok("winter").input_ids) == 3
    assert len(tok("qzx").input_ids) > 3
    again = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert again(text).input_ids == ids
    assert json.loads((tmp_path / "tok" / "vocab.json").read_text())["<|endoftext|>"] == 999
    batch = tok([text, "make it winter"], padding="max_length", max_length=77, truncation=True,
                return_tensors="pt")
    assert batch.input_ids.shape == (2, 77) and int(batch.input_ids.max()) < 1000


def test_save_tiny_sd_loads_offline_in_diffusers(tmp_path):
    from diffusers import StableDiffusionPipeline

    folder = tiny.save_tiny_sd(tmp_path / "sd", seed=3)
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / sub).is_dir()
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    fresh = tiny.make_tiny_unet(3)
    for k, v in fresh.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[k], v), k
    pipe.set_progress_bar_config(disable=True)
    out = pipe("make it winter", num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 64, 64, 3)
