"""`instructgie unify`: rewrite image-editing instructions into the canonical form (LIU)."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "rewrite image-editing instructions into one canonical form (language instruction unification)"
DESCRIPTION = """\
Rewrite image-editing instructions into the canonical form InstructGIE trains and infers with,
so paraphrases of one edit condition the model the same way.

Instructions come from the arguments, or one per line from standard input when none are given
(blank lines are skipped). One output line per instruction, in order.

examples:
  instructgie unify "Could you please paint the car red?"
  printf 'swap the cat for a dog\\nmake it look like winter\\n' | instructgie unify --json
  instructgie unify --backend embedding --bank train_instructions.txt "the car must go"
  instructgie unify --backend llm --model ./qwen2.5-0.5b-instruct "lose the hat"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="instructions to unify (default: read lines from stdin)")
    parser.add_argument("--backend", choices=("rules", "embedding", "llm"), default="rules",
                        help="rules (offline default), embedding (needs --bank) or llm (needs --model)")
    parser.add_argument("--bank", metavar="FILE",
                        help="canonical instructions for the embedding backend: one per line, or a "
                             "JSON list of strings")
    parser.add_argument("--threshold", type=float, default=None,
                        help="embedding backend: cosine similarity a bank match must reach "
                             "(default 0.75)")
    parser.add_argument("--model", metavar="PATH",
                        help="llm: a local transformers causal-LM folder; embedding: a local "
                             "sentence-transformers folder (default: the bundled MiniLM)")
    parser.add_argument("--device", default="cpu", help="torch device for model backends (default cpu)")
    parser.add_argument("--truncate", action="store_true",
                        help="cut instructions longer than 2000 characters instead of failing")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per line: input, canonical, edits")


def _read_bank(path: str) -> list[str]:
    from gie_core.cli import CLIError
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CLIError(f"--bank: cannot read {path!r}: {e.strerror}") from e
    if text.lstrip().startswith("["):
        try:
            bank = json.loads(text)
        except json.JSONDecodeError as e:
            raise CLIError(f"--bank: {path!r} is not valid JSON: {e}") from e
        if not isinstance(bank, list) or not all(isinstance(b, str) for b in bank):
            raise CLIError(f"--bank: {path!r} must hold a JSON list of strings")
    else:
        bank = [line.strip() for line in text.splitlines() if line.strip()]
    if not bank:
        raise CLIError(f"--bank: {path!r} holds no instructions")
    return bank


def run(args: argparse.Namespace) -> int:
    from gie_core.cli import CLIError
    from gie_core.instruction import InstructionError, parse, unify_batch

    texts = list(args.texts)
    if not texts:
        if sys.stdin.isatty():
            raise CLIError("no instructions: give them as arguments or pipe them in, one per line")
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not texts:
            raise CLIError("no instructions on standard input")
    bank = None
    if args.backend == "embedding":
        if not args.bank:
            raise CLIError("--backend embedding needs --bank FILE (canonical instructions)")
        bank = _read_bank(args.bank)
    if args.backend == "llm" and not args.model:
        raise CLIError("--backend llm needs --model PATH (a local transformers causal-LM folder)")
    try:
        outputs = unify_batch(texts, args.backend, bank=bank, threshold=args.threshold,
                              model=args.model, device=args.device, truncate=args.truncate,
                              progress=len(texts) > 1000)
    except (InstructionError, ValueError) as e:
        raise CLIError(str(e)) from e
    for text, out in zip(texts, outputs):
        if args.json:
            edits = [{k: v for k, v in vars(e).items() if v is not None} for e in parse(out)]
            print(json.dumps({"input": text, "canonical": out, "edits": edits}, ensure_ascii=False))
        else:
            print(out)
    return 0
