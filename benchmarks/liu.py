"""LIU benchmark: consistency, separation, idempotence, well-formedness and throughput of the
instruction unifier on paraphrase suites, against "no unification".

Suites (tests/data/liu/, see the READMEs there; gie_core/instruction/data/paraphrase_suite.json),
every one written blind (by authors who never read the rules) and every one tuned on by now:
  blind-dev      90 edits x 5 phrasings
  blind-heldout  90 edits x 5, same author (read from round 2 on; scored with --final)
  other          70 edits x 4, another author and style (read from round 2 on; --final)
  blind2         120 edits x 4 (liu_blind2; read from round 3 on)
  blind3-dev     80 edits x 4 (the dev half of liu_blind3; read from round 4 on)
  blind3-heldout 80 edits x 4 (its held-out half; read in round 7)
  blind4         110 edits x 4 (liu_blind4; read in round 6)
  blind5-a       47 edits x 4 (half a of liu_blind5; read in round 5)
  own            50 edits x 4, written by the rules' first author (dev + held-out)
Suites nobody tuned on are kept outside the repository and scored with --suite FILE.jsonl (a
"split" field makes FILE-dev / FILE-heldout rows).

consistency   share of edits whose phrasings all unify to one string
separation    share of edits none of whose outputs another edit of the suite produces
pairs         share of near-miss pairs (marked in the data) kept apart
idempotent    share of outputs o with unify(o) == o
unified       share of phrasings that came out canonical (not refused)
malformed     canonical outputs that fail gie_core.instruction.wellformed.check (must be 0)

Throughput: instructions per CPU-second (process time), caches cleared before each pass so every
instruction is parsed from scratch; single-threaded (run with OMP_NUM_THREADS=1).

    .venv/bin/python benchmarks/liu.py                    # every suite, rules backend, speed
    .venv/bin/python benchmarks/liu.py --misses blind-dev # list the misses of a suite
    .venv/bin/python benchmarks/liu.py --bank             # + the bank-snapping row
    .venv/bin/python benchmarks/liu.py --tiny-llm         # + llm row (tiny random GPT-2: fallback path)
    .venv/bin/python benchmarks/liu.py --suite FILE.jsonl --misses FILE   # + a suite of your own
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gie_core.instruction import is_canonical, rules, text, unify, unify_batch  # noqa: E402

DATA = ROOT / "tests" / "data" / "liu"
HIDDEN = ("blind-heldout", "other")  # scored only with --final (never while tuning)


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def load_suites() -> dict[str, list[dict]]:
    """name -> edits [{id, phrasings, pair?}]."""
    own = json.loads(resources.files("gie_core.instruction").joinpath("data/paraphrase_suite.json")
                     .read_text("utf-8"))
    return {
        "blind-dev": load_jsonl(DATA / "benchmark_dev.jsonl"),
        "blind-heldout": load_jsonl(DATA / "benchmark_heldout.jsonl"),
        "other": load_jsonl(DATA / "other_suite.jsonl"),
        "blind2": load_jsonl(DATA / "blind2_suite.jsonl"),
        "blind3-dev": load_jsonl(DATA / "blind3_dev.jsonl"),
        "blind3-heldout": load_jsonl(DATA / "blind3_heldout.jsonl"),
        "blind4": load_jsonl(DATA / "blind4_suite.jsonl"),
        "blind5-a": load_jsonl(DATA / "blind5_a.jsonl"),
        "own-dev": [e for e in own["edits"] if e["split"] == "dev"],
        "own-heldout": [e for e in own["edits"] if e["split"] == "heldout"],
    }


def score(edits: list[dict], fn) -> dict:
    """fn: list[str] -> list[str]. The suite's figures and its misses."""
    from gie_core.instruction.wellformed import check

    texts = [p for e in edits for p in e["phrasings"]]
    outs = fn(texts)
    groups, k = [], 0
    for e in edits:
        groups.append(outs[k:k + len(e["phrasings"])])
        k += len(e["phrasings"])
    owner: dict[str, set] = {}
    for e, g in zip(edits, groups):
        for o in g:
            owner.setdefault(o, set()).add(e["id"])
    by_id = {e["id"]: g for e, g in zip(edits, groups)}
    consistent = [len(set(g)) == 1 for g in groups]
    apart = [all(len(owner[o]) == 1 for o in g) for g in groups]
    pairs = {tuple(sorted((e["id"], e["pair"]))) for e in edits if e.get("pair") in by_id}
    pairs_apart = [not set(by_id[a]) & set(by_id[b]) for a, b in pairs]
    again = fn(outs)
    idem = [a == o for a, o in zip(again, outs)]
    canonical = [is_canonical(o) for o in outs]
    malformed = [(t, o, check(o)) for t, o, c in zip(texts, outs, canonical) if c and check(o)]
    return dict(
        n=len(edits), phrasings=len(texts), consistency=sum(consistent) / len(edits),
        separation=sum(apart) / len(edits), pairs=(sum(pairs_apart) / len(pairs)) if pairs else 1.0,
        n_pairs=len(pairs), idempotent=sum(idem) / len(idem), unified=sum(canonical) / len(outs),
        malformed=malformed,
        misses=[(e, g) for e, g, c in zip(edits, groups, consistent) if not c],
        clashes=[(e, g) for e, g, a in zip(edits, groups, apart) if not a])


def throughput(fn, texts: list[str], clear=None, min_seconds: float = 1.0) -> float:
    """Instructions per CPU-second of this process."""
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
    rules.clear_caches()


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
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=2048, n_embd=64, n_layer=1,
                               n_head=2, eos_token_id=tok.eos_token_id,
                               bos_token_id=tok.eos_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def print_misses(name: str, res: dict) -> None:
    print(f"\n--- {name}: {len(res['misses'])} inconsistent edits")
    for e, g in res["misses"]:
        print(f"{e['id']} {e.get('family', '')}")
        for p, o in zip(e["phrasings"], g):
            print(f"    {p!r:70} -> {o!r}")
    print(f"--- {name}: {len(res['clashes'])} edits sharing an output with another edit")
    for e, g in res["clashes"]:
        print(f"{e['id']}: {sorted(set(g))}")
    for t, o, why in res["malformed"]:
        print(f"MALFORMED {t!r} -> {o!r}: {why}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--misses", nargs="*", default=[], metavar="SUITE",
                    help="print the inconsistent edits and clashes of these suites (blind-dev by "
                         "default when given without a name)")
    ap.add_argument("--bank", action="store_true",
                    help="also score unify(text, bank=...) with each suite's bank (the rules form "
                         "of each edit's first phrasing, what a trained model records)")
    ap.add_argument("--parser", action="store_true", help="also score and time unify(parser=True) "
                    "(spaCy dependency parse for text the rules cannot read)")
    ap.add_argument("--tiny-llm", action="store_true", help="also score the llm backend with a tiny "
                    "random GPT-2 (measures the validation and fallback path)")
    ap.add_argument("--model", help="local causal-LM folder for an llm row")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--suite", action="append", default=[], metavar="FILE.jsonl",
                    help="also score this suite (one JSON object a line: id, phrasings, optional "
                         "pair); named by the file's stem, e.g. for --misses")
    ap.add_argument("--final", action="store_true",
                    help="also score the held-out suites (blind-heldout, other); without it they are "
                         "not read at all, so tuning cannot see them")
    args = ap.parse_args(argv)

    suites = load_suites()
    if not args.final:
        suites = {n: s for n, s in suites.items() if n not in HIDDEN}
    for path in map(Path, args.suite):
        if not path.is_file():
            ap.error(f"--suite {path}: no such file")
        edits = load_jsonl(path)
        splits = sorted({e["split"] for e in edits if "split" in e})
        if splits:  # one row per split: a held-out half is never mixed into the tuned one
            for sp in splits:
                suites[f"{path.stem}-{sp}"] = [e for e in edits if e.get("split") == sp]
        else:
            suites[path.stem] = edits
    for name in args.misses:
        if name in HIDDEN and not args.final:
            ap.error(f"--misses {name}: a held-out suite; its misses are read only with --final")
    rows = []
    rows.append(("none", {n: score(s, lambda xs: [text.clean(x) for x in xs]) for n, s in suites.items()}))
    rules_res = {n: score(s, unify_batch) for n, s in suites.items()}
    rows.append(("rules", rules_res))
    if args.parser:
        rows.append(("rules+parser", {n: score(s, lambda xs: unify_batch(xs, parser=True))
                                      for n, s in suites.items()}))
    if args.bank:
        from gie_core.instruction import unify_batch as ub

        def banked(suite):
            bank = [unify(e["phrasings"][0]) for e in suite]
            return lambda xs: ub(xs, bank=bank)
        rows.append(("rules + bank", {n: score(s, banked(s)) for n, s in suites.items()}))
    if args.model or args.tiny_llm:
        tmp = None
        model = args.model
        if model is None:
            tmp = tempfile.TemporaryDirectory()
            model = tiny_random_lm(tmp.name)
        llm = lambda xs: unify_batch(xs, "llm", model=model)  # noqa: E731
        rows.append(("llm (tiny random)" if tmp else "llm", {n: score(s[:10], llm) for n, s in suites.items()}))

    head = f"{'backend':<14} {'suite':<14} {'edits':>5} {'consist':>8} {'separ':>7} {'pairs':>9} " \
           f"{'idem':>6} {'unified':>8} {'malformed':>9}"
    print(head)
    print("-" * len(head))
    for name, res in rows:
        for suite, r in res.items():
            print(f"{name:<14} {suite:<14} {r['n']:>5} {r['consistency']:>8.1%} {r['separation']:>7.1%} "
                  f"{r['pairs']:>6.0%}/{r['n_pairs']:<2} {r['idempotent']:>6.1%} {r['unified']:>8.1%} "
                  f"{len(r['malformed']):>9}")
    wanted = args.misses if args.misses else ([] if "--misses" not in (argv or sys.argv) else ["blind-dev"])
    for suite in wanted:
        print_misses(suite, rules_res[suite])

    if not args.skip_speed:
        all_texts = [p for s in suites.values() for e in s for p in e["phrasings"]]
        base = throughput(lambda xs: [text.clean(x) for x in xs], all_texts, clear=clear_rules_caches)
        speed = throughput(unify_batch, all_texts, clear=clear_rules_caches)
        print(f"\nbaseline (clean only): {base:,.0f} instructions per CPU-second")
        print(f"rules: {speed:,.0f} instructions per CPU-second from scratch "
              f"({len(all_texts)} suite phrasings, caches cleared each pass; {speed / base:.2f}x the "
              f"baseline's rate)")
        warm = throughput(unify_batch, all_texts)
        print(f"rules (warm cache, repeated instructions): {warm:,.0f} instructions per CPU-second")
        if args.parser:
            from gie_core.instruction import parser
            if parser.available():
                parser.load()
                ps = throughput(lambda xs: parser.simplify_batch(xs), all_texts, min_seconds=2.0)
                print(f"parser (spaCy dependency parse + candidates, batched): {ps:,.0f} instructions "
                      f"per CPU-second ({ps / speed:.2f}x the rules)")
                pu = throughput(lambda xs: unify_batch(xs, parser=True), all_texts,
                                clear=clear_rules_caches, min_seconds=2.0)
                print(f"rules+parser (unify with parser=True, from scratch): {pu:,.0f} instructions "
                      f"per CPU-second")
            else:
                print("parser: spaCy or its English pipeline is not installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
