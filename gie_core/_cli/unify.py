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
(blank lines are skipped; input must be UTF-8). One output line per instruction, in order.

With --model (a trained InstructGIE ControlNet) or --bank (a file of canonical instructions) the
result is snapped onto the nearest instruction the model was trained on when it is close and no
guard fires (add vs remove, older vs younger, other numbers or colours); --json shows the match
and its similarity.

examples:
  instructgie unify "Could you please paint the car red?"
  printf 'swap the cat for a dog\\nmake it look like winter\\n' | instructgie unify --json
  instructgie unify --model instructgie.safetensors --json "blonde hair"
  instructgie unify --bank train_instructions.txt "could the car go away"
  instructgie unify --backend llm --llm-model ./qwen2.5-0.5b-instruct "lose the hat"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="instructions to unify (default: read lines from stdin)")
    parser.add_argument("--backend", choices=("rules", "embedding", "llm"), default="rules",
                        help="rules (offline default), llm (needs --llm-model) or embedding (the "
                             "rules + MiniLM snapping; needs --model or --bank)")
    parser.add_argument("--model", metavar="CONTROLNET",
                        help="a trained InstructGIE ControlNet (.safetensors file or diffusers folder): "
                             "snap onto the instructions it was trained on (its instruction bank)")
    parser.add_argument("--bank", metavar="FILE",
                        help="canonical instructions to snap onto: one per line, or a JSON list of "
                             "strings (instead of a model's bank)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="similarity a bank match must reach (default 0.80 embedding, 0.70 lexical)")
    parser.add_argument("--similarity", choices=("auto", "embedding", "lexical"), default="auto",
                        help="bank similarity: MiniLM embeddings when installed (auto), or lexical")
    parser.add_argument("--llm-model", metavar="PATH",
                        help="llm backend: a local transformers causal-LM folder")
    parser.add_argument("--embedder", metavar="PATH",
                        help="embedding backend: a local sentence-transformers folder "
                             "(default: the bundled MiniLM)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="llm backend: seconds of decoding per instruction before the rules "
                             "take over (default 20)")
    parser.add_argument("--device", default="cpu", help="torch device for model backends (default cpu)")
    parser.add_argument("--truncate", action="store_true",
                        help="cut instructions longer than 2000 characters instead of failing")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per line: input, canonical, edits (and the bank "
                             "match, its similarity and whether it was used)")


def _read_bank(path: str) -> list[str]:
    from gie_core.cli import CLIError
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CLIError(f"--bank: cannot read {path!r}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise CLIError(f"--bank: {path!r} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
                       f"offset {e.start}); save it as UTF-8") from None
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


def _model_bank(path: str) -> list[str] | None:
    from pathlib import Path

    from gie_core.cli import CLIError
    p = Path(path)
    if not p.exists():
        raise CLIError(f"--model: {path!r} does not exist (expected an InstructGIE ControlNet "
                       ".safetensors file or diffusers ControlNet folder)")
    if p.is_dir() and (p / "config.json").is_file():
        try:
            arch = json.loads((p / "config.json").read_text("utf-8")).get("architectures") or []
        except (OSError, ValueError):
            arch = []
        if any(str(a).endswith("ForCausalLM") for a in arch):
            raise CLIError(f"--model: {path!r} is a causal language model; --model names a trained "
                           "InstructGIE ControlNet now, give a causal LM as --llm-model")
    from gie_core.instruction import model_bank
    try:
        return model_bank(p)
    except ValueError as e:  # not a VMamba ControlNet file, damaged bank …
        raise CLIError(f"--model: {e}") from None


def _utf8_lines(stream) -> list[str]:
    """Lines of a binary stream decoded as UTF-8; a clear error names the first bad line."""
    from gie_core.cli import CLIError
    lines = []
    for n, raw in enumerate(stream, 1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as e:
            raise CLIError(f"standard input line {n} is not UTF-8 text (byte {raw[e.start]:#04x} at "
                           f"column {e.start + 1}); convert it to UTF-8, e.g. with "
                           "`iconv -f latin1 -t utf-8`") from None
    return lines


def _check_args_utf8(texts: list[str]) -> None:
    """Arguments that were not valid UTF-8 reach Python with lone surrogates (surrogateescape)."""
    from gie_core.cli import CLIError
    for n, t in enumerate(texts, 1):
        bad = next((i for i, ch in enumerate(t) if "\udc80" <= ch <= "\udcff"), None)
        if bad is not None:
            raise CLIError(f"argument {n} is not UTF-8 text (byte {ord(t[bad]) - 0xdc00:#04x} at "
                           f"column {bad + 1}); pass instructions as UTF-8")


def run(args: argparse.Namespace) -> int:
    from gie_core.cli import CLIError
    from gie_core.instruction import InstructionError, parse, unify_batch, unify_match_batch

    texts = list(args.texts)
    _check_args_utf8(texts)
    if not texts:
        if sys.stdin is None or sys.stdin.isatty():
            raise CLIError("no instructions: give them as arguments or pipe them in, one per line")
        stream = getattr(sys.stdin, "buffer", None)
        texts = _utf8_lines(stream) if stream is not None else [ln.rstrip("\n") for ln in sys.stdin]
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise CLIError("no instructions on standard input")
    if args.model and args.bank:
        raise CLIError("--model and --bank both give a bank; use one")
    bank = _read_bank(args.bank) if args.bank else _model_bank(args.model) if args.model else None
    if args.model and bank is None:
        print(f"instructgie unify: note: {args.model} records no instruction bank (trained before "
              "banks existed); unifying without one", file=sys.stderr)
    if args.backend == "embedding" and bank is None:
        raise CLIError("--backend embedding needs a bank: --model CONTROLNET or --bank FILE")
    if args.backend == "llm" and not args.llm_model:
        raise CLIError("--backend llm needs --llm-model PATH (a local transformers causal-LM folder)")
    model = args.llm_model if args.backend == "llm" else args.embedder
    try:
        if bank is None:
            outputs = unify_batch(texts, args.backend, model=model, device=args.device,
                                  truncate=args.truncate, progress=len(texts) > 1000, timeout=args.timeout)
            matches = [None] * len(texts)
        else:
            matches = unify_match_batch(texts, args.backend, bank=bank, threshold=args.threshold,
                                        model=model, device=args.device, truncate=args.truncate,
                                        progress=len(texts) > 1000, similarity=args.similarity,
                                        timeout=args.timeout)
            outputs = [m.output for m in matches]
    except (InstructionError, ValueError, ImportError, OSError) as e:
        raise CLIError(str(e)) from e
    for text, out, match in zip(texts, outputs, matches):
        if args.json:
            edits = [{k: v for k, v in vars(e).items() if v is not None} for e in parse(out)]
            row = {"input": text, "canonical": out, "edits": edits}
            if match is not None:
                row.update(match=match.match, score=round(match.score, 4), snapped=match.snapped,
                           reason=match.reason)
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(out)
    return 0
