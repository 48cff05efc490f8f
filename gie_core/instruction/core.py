"""Input checks, the ``rules`` unifier and the public ``unify`` / ``unify_batch`` / ``parse`` /
``is_canonical`` functions. The optional backends live in ``embedding.py`` and ``llm.py``."""
from __future__ import annotations

import functools
from collections.abc import Iterable

from .grammar import Edit, render
from .rules import clean, parse_text
from .wellformed import check as check_form

MAX_CHARS = 2000
BACKENDS = ("rules", "embedding", "llm")


class InstructionError(ValueError):
    """An instruction that cannot be unified: empty, too long, or only filler."""


class InstructionTypeError(InstructionError, TypeError):
    """An instruction that is not a string."""


def check_instruction(text, *, truncate: bool = False, name: str = "text") -> str:
    """Validate one instruction and return it (cut to :data:`MAX_CHARS` at a word boundary when
    ``truncate`` is true; otherwise an over-long instruction is an error)."""
    if not isinstance(text, str):
        raise InstructionTypeError(f"{name}: expected an instruction string, got {type(text).__name__}")
    if not text.strip():
        raise InstructionError(f"{name}: expected a non-empty instruction, got {text!r}")
    if len(text) > MAX_CHARS:
        if not truncate:
            raise InstructionError(
                f"{name}: instruction is {len(text)} characters, more than the {MAX_CHARS} allowed "
                "(pass truncate=True to cut it at the last word boundary before the limit)")
        cut = text[:MAX_CHARS]
        space = cut.rfind(" ")
        text = cut[:space] if space > MAX_CHARS // 2 else cut
    return text


def rules_output(c: str) -> str | None:
    """What the rules render for cleaned text ``c`` (``None`` when they cannot parse it), before
    the round-trip and well-formedness guards of :func:`_unify_clean`; tests check it directly."""
    edits = parse_text(c)
    return render(edits) if edits else None


@functools.lru_cache(maxsize=1 << 16)
def _verified(out: str) -> bool:
    """Whether a rendered instruction is clean, re-parses to itself and is well-formed English;
    checked once per distinct output (a dataset has far fewer outputs than inputs)."""
    if clean(out) != out:
        return False
    again = parse_text(out)
    return bool(again) and render(again) == out and not check_form(out)


@functools.lru_cache(maxsize=1 << 16)
def _unify_clean(c: str) -> str:
    """The rules result for already-cleaned text ``c``: canonical if it parses, the canonical text
    re-parses to itself and is well-formed English, else ``c`` unchanged. unify(x) depends only on
    clean(x) and clean is idempotent, which makes unify idempotent by construction."""
    out = rules_output(c)
    return out if out is not None and _verified(out) else c


def _clean_checked(text, truncate: bool, name: str = "text") -> str:
    text = check_instruction(text, truncate=truncate, name=name)
    c = clean(text)
    if not c:
        raise InstructionError(f"{name}: {text!r} holds no instruction once politeness and "
                               "punctuation are removed")
    return c


def unify_rules(text: str, *, truncate: bool = False) -> str:
    """The offline ``rules`` backend for one instruction."""
    return _unify_clean(_clean_checked(text, truncate))


def unify(text: str, backend: str = "rules", *, bank: Iterable[str] | None = None,
          threshold: float | None = None, model: str | None = None, device: str = "cpu",
          truncate: bool = False, similarity: str = "auto", timeout: float | None = None,
          parser: bool = False) -> str:
    """Rewrite an image-editing instruction into its canonical form.

    ``backend``: ``"rules"`` (offline default, deterministic, fast), ``"llm"`` (a local
    transformers causal-LM folder given as ``model``; its answer is kept when it is a well-formed
    canonical instruction, else the rules decide; see :mod:`.llm`), or ``"embedding"`` (the rules,
    then snapping to ``bank`` by MiniLM similarity; ``model`` may name another local
    sentence-transformers folder).

    ``bank``: canonical instructions a model was trained on (see :mod:`.bank`); the result is
    snapped to the nearest entry when close and no contrast guard fires (add vs remove, older vs
    younger, other numbers or colours…). :func:`unify_match` reports the match and its score.
    Without a bank the result is the backend's. Deterministic and idempotent.

    ``parser``: when the rules cannot read the text, let spaCy's dependency parse offer simpler
    wordings (see :mod:`.parser`; needs the ``nlp`` extra). Off by default so that the result
    does not depend on what is installed.

    Raises :class:`InstructionError` (a ``ValueError``) on empty, whitespace-only or over-long
    text (unless ``truncate``) and :class:`InstructionTypeError` on non-strings.
    """
    return unify_batch([text], backend, bank=bank, threshold=threshold, model=model,
                       device=device, truncate=truncate, progress=False, similarity=similarity,
                       timeout=timeout, parser=parser)[0]


def unify_batch(texts: Iterable[str], backend: str = "rules", *, bank: Iterable[str] | None = None,
                threshold: float | None = None, model: str | None = None, device: str = "cpu",
                truncate: bool = False, progress: bool = False, similarity: str = "auto",
                timeout: float | None = None, parser: bool = False) -> list[str]:
    """:func:`unify` over many instructions (a whole dataset); model backends are loaded once and
    cached in-process, and each distinct text is unified once."""
    if bank is None:
        return _backend_batch(texts, backend, model=model, device=device, truncate=truncate,
                              progress=progress, timeout=timeout, parser=parser)[1]
    return [m.output for m in unify_match_batch(
        texts, backend, bank=bank, threshold=threshold, model=model, device=device,
        truncate=truncate, progress=progress, similarity=similarity, timeout=timeout, parser=parser)]


def unify_match(text: str, backend: str = "rules", *, bank: Iterable[str], **kwargs):
    """:func:`unify` with a bank, returning the :class:`~gie_core.instruction.bank.BankMatch`
    (``.output`` is what :func:`unify` returns; ``.match`` and ``.score`` the nearest entry)."""
    return unify_match_batch([text], backend, bank=bank, **kwargs)[0]


def unify_match_batch(texts: Iterable[str], backend: str = "rules", *, bank: Iterable[str],
                      threshold: float | None = None, model: str | None = None, device: str = "cpu",
                      truncate: bool = False, progress: bool = False, similarity: str = "auto",
                      timeout: float | None = None, parser: bool = False) -> list:
    """:func:`unify_match` over many instructions."""
    from .bank import cached_bank
    if isinstance(bank, str):
        raise InstructionTypeError("bank: expected a list of canonical instructions, got one string")
    texts, unified = _backend_batch(texts, backend, model=model, device=device, truncate=truncate,
                                    progress=progress, timeout=timeout, for_bank=True, parser=parser)
    emb_model = model if backend == "embedding" else None
    if backend == "embedding":
        similarity = "embedding"
    b = cached_bank(tuple(bank), threshold, similarity, emb_model, device)
    return b.match_unified(texts, unified)


def _backend_batch(texts, backend: str, *, model, device, truncate, progress, timeout,
                   for_bank: bool = False, parser: bool = False) -> tuple[list[str], list[str]]:
    """(the input texts, the backend's canonical results)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if isinstance(texts, str):
        raise InstructionTypeError("texts: expected a list of instruction strings, got one string")
    texts = list(texts)
    cleaned = [_clean_checked(t, truncate, name=f"texts[{i}]") for i, t in enumerate(texts)]
    if backend == "embedding" and not for_bank:
        raise ValueError("bank: the embedding backend needs a bank of canonical instructions "
                         "(e.g. the training set's unified instructions, or a model's bank)")
    if backend in ("rules", "embedding"):
        it = cleaned
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(cleaned, desc="unify (rules)", unit="instr")
        out = [_unify_clean(c) for c in it]
        return texts, _with_parser(cleaned, out) if parser else out
    if model is None:
        raise ValueError("model: the llm backend needs a local transformers causal-LM folder")
    from .llm import LLMUnifier
    unifier = LLMUnifier.cached(model, device=device, timeout=timeout)
    return texts, unifier.unify_cleaned(cleaned, progress=progress)


def _with_parser(cleaned: list[str], out: list[str]) -> list[str]:
    """Give text the rules left unparsed a second chance through the dependency parser."""
    from . import parser
    todo = sorted({c for c, o in zip(cleaned, out) if o == c and not is_canonical(o)})
    if not todo:
        return out
    better = {}
    for c, cands in zip(todo, parser.simplify_batch(todo)):
        for cand in cands:
            cc = clean(cand)
            got = _unify_clean(cc) if cc else cc
            if cc and is_canonical(got):
                better[c] = got
                break
    return [better.get(c, o) for c, o in zip(cleaned, out)]


def parse(text: str, *, truncate: bool = False) -> list[Edit]:
    """The edits of an instruction under the canonical grammar, in canonical order; ``[]`` when
    the rules cannot parse it."""
    c = _clean_checked(text, truncate)
    out = _unify_clean(c)
    if out == c and parse_text(c) is None:
        return []
    edits = parse_text(out)
    return sorted(set(edits), key=Edit.sort_key) if edits else []


def is_canonical(text) -> bool:
    """True when ``text`` is already a canonical instruction (it parses and re-renders to itself)."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_CHARS:
        return False
    edits = parse_text(text)
    return bool(edits) and render(edits) == text
