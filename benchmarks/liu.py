"""LIU benchmark: consistency, separation and throughput of each unification backend on the
paraphrase suite (gie_core/instruction/data/paraphrase_suite.json), against "no unification".

consistency   share of edits whose four phrasings all unify to one string
separation    share of the suite's distinct instructions that keep a string of their own
apart         share of suite edits whose outputs no other edit produces
throughput    instructions per CPU-second (caches cleared before each pass, so every instruction
              is parsed from scratch), and relative to the rules backend

The embedding bank is the rules form of each edit's first phrasing (what a training set's unified
instructions would hold). The llm row needs --model (a local causal LM); --tiny-llm uses a tiny
random GPT-2 built offline instead, which never produces a canonical answer, so it measures the
fallback path and the decoding cost only.

    .venv/bin/python benchmarks/liu.py [--model LLM_FOLDER | --tiny-llm] [--device cpu] [--skip-embedding]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from importlib import resources

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gie_core.instruction import core, rules, unify, unify_batch  # noqa: E402


def load_suite() -> dict:
    return json.loads(resources.files("gie_core.instruction").joinpath("data/paraphrase_suite.json")
                      .read_text("utf-8"))


def score(suite: dict, fn) -> dict:
    """fn: list[str] -> list[str]. Returns the metrics per split."""
    res = {}
    for split in ("dev", "heldout"):
        edits = [e for e in suite["edits"] if e["split"] == split]
        outs = fn([p for e in edits for p in e["phrasings"]])
        groups = [outs[4 * k:4 * k + 4] for k in range(len(edits))]
        consistent = sum(len(set(g)) == 1 for g in groups) / len(groups)
        owner: dict[str, set] = {}
        for k, g in enumerate(groups):
            for o in g:
                owner.setdefault(o, set()).add(k)
        apart = sum(all(len(owner[o]) == 1 for o in g) for g in groups) / len(groups)
        distinct = suite["distinct"][split]
        d_out = fn(distinct)
        counts = Counter(d_out)
        separated = sum(counts[o] == 1 for o in d_out) / len(d_out)
        res[split] = dict(consistency=consistent, separation=separated, apart=apart,
                          n_edits=len(edits), n_distinct=len(distinct))
    return res


def throughput(fn, texts: list[str], clear=None, min_seconds: float = 1.0) -> float:
    """Instructions per CPU-second of this process (process time, not wall time: the machine this
    runs on may be shared, and the backends here are single-process)."""
    n, t0 = 0, time.process_time()
    while True:
        if clear:
            clear()
        fn(texts)
        n += len(texts)
        dt = time.process_time() - t0
        if dt >= min_seconds:
            return n / dt


def clear_rules_caches() -> None:
    core._unify_clean.cache_clear()
    rules.clean.cache_clear()
    rules.parse_clause.cache_clear()


def tiny_random_lm(folder: str) -> str:
    """A random GPT-2 with a byte-level BPE tokenizer trained offline on the few-shot prompt."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from gie_core.instruction.llm import FEW_SHOT_EXAMPLES, build_prompt
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([build_prompt(i) + " " + c for i, c in FEW_SHOT_EXAMPLES],
                            trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=64, n_layer=1,
                               n_head=2, eos_token_id=tok.eos_token_id,
                               bos_token_id=tok.eos_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="local causal-LM folder for the llm row (default: tiny random)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-embedding", action="store_true")
    ap.add_argument("--tiny-llm", action="store_true",
                    help="measure the llm row with a tiny random GPT-2 (slow on CPU: the fallback "
                         "path decodes 48 tokens per instruction)")
    args = ap.parse_args(argv)

    suite = load_suite()
    all_texts = [p for e in suite["edits"] for p in e["phrasings"]] + \
        [t for v in suite["distinct"].values() for t in v]
    bank = [unify(e["phrasings"][0]) for e in suite["edits"]]
    rows = []

    rows.append(("none (baseline)", score(suite, lambda xs: list(xs)), None))
    rows.append(("rules", score(suite, unify_batch),
                 throughput(unify_batch, all_texts, clear=clear_rules_caches)))
    unparsed = sum(unify(t) == rules.clean(t) and not core.is_canonical(unify(t))
                   for t in all_texts)
    if not args.skip_embedding:
        emb = lambda xs: unify_batch(xs, "embedding", bank=bank, device=args.device)  # noqa: E731
        emb(["warm up the model"])
        rows.append(("embedding", score(suite, emb), throughput(emb, all_texts, clear=clear_rules_caches)))
    if args.model or args.tiny_llm:
        tmp = None
        model = args.model
        label = "llm"
        if model is None:
            tmp = tempfile.TemporaryDirectory()
            model = tiny_random_lm(tmp.name)
            label = "llm (tiny random)"
        from gie_core.instruction.llm import LLMUnifier
        llm = lambda xs: unify_batch(xs, "llm", model=model, device=args.device)  # noqa: E731
        quality = score(suite, llm)
        lm = LLMUnifier.cached(model, args.device)
        sample = all_texts[:24]

        def llm_cold(xs):
            lm._answers.clear()
            return llm(xs)
        rows.append((label, quality, throughput(llm_cold, sample, clear=clear_rules_caches, min_seconds=0.5)))

    rules_speed = rows[1][2]
    head = (f"{'backend':<20} {'consist dev':>11} {'consist held':>12} {'separ dev':>9} "
            f"{'separ held':>10} {'apart':>6} {'instr/s':>10} {'vs rules':>8}")
    print(f"suite: {sum(e['split'] == 'dev' for e in suite['edits'])} dev + "
          f"{sum(e['split'] == 'heldout' for e in suite['edits'])} held-out edits x 4 phrasings, "
          f"{len(suite['distinct']['dev'])} + {len(suite['distinct']['heldout'])} distinct instructions; "
          f"{unparsed}/{len(all_texts)} suite texts left unparsed by the rules")
    print(head)
    print("-" * len(head))
    for name, q, speed in rows:
        apart = (q["dev"]["apart"] * q["dev"]["n_edits"] + q["heldout"]["apart"] * q["heldout"]["n_edits"]) / \
            (q["dev"]["n_edits"] + q["heldout"]["n_edits"])
        print(f"{name:<20} {q['dev']['consistency']:>10.1%} {q['heldout']['consistency']:>12.1%} "
              f"{q['dev']['separation']:>9.1%} {q['heldout']['separation']:>10.1%} {apart:>6.0%} "
              + (f"{speed:>10,.0f} {speed / rules_speed:>7.2f}x" if speed else f"{'n/a':>10} {'':>8}"))
    if not (args.model or args.tiny_llm):
        print("llm: not measured (pass --model FOLDER for a local causal LM, or --tiny-llm)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
