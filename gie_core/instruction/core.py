"""Input checks, the ``rules`` unifier and the public ``unify`` / ``unify_batch`` / ``parse`` /
``is_canonical`` functions. The optional backends live in ``embedding.py`` and ``llm.py``."""
from __future__ import annotations

import functools
from collections.abc import Iterable

from .grammar import Edit, render
from .rules import clean, parse_text

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


@functools.lru_cache(maxsize=1 << 16)
def _unify_clean(c: str) -> str:
    """The rules result for already-cleaned text ``c``: canonical if it parses and the canonical
    text re-parses to itself, else ``c`` unchanged. unify(x) depends only on clean(x) and clean is
    idempotent, which makes unify idempotent by construction."""
    edits = parse_text(c)
    if not edits:
        return c
    out = render(edits)
    if clean(out) != out:
        return c
    again = parse_text(out)
    if not again or render(again) != out:
        return c
    return out


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
          truncate: bool = False) -> str:
    """Rewrite an image-editing instruction into its canonical form.

    ``backend``: ``"rules"`` (offline default, deterministic, fast), ``"embedding"`` (maps onto
    the nearest instruction of ``bank`` with the bundled MiniLM sentence embedder when the cosine
    similarity is at least ``threshold``; needs ``bank``), or ``"llm"`` (a local transformers
    causal-LM folder given as ``model``; its answer is kept only if it parses under the canonical
    grammar). All backends are deterministic and idempotent, and fall back to ``rules``.
    Raises :class:`InstructionError` (a ``ValueError``) on empty, whitespace-only or over-long
    text (unless ``truncate``) and :class:`InstructionTypeError` on non-strings.
    """
    return unify_batch([text], backend, bank=bank, threshold=threshold, model=model,
                       device=device, truncate=truncate, progress=False)[0]


def unify_batch(texts: Iterable[str], backend: str = "rules", *, bank: Iterable[str] | None = None,
                threshold: float | None = None, model: str | None = None, device: str = "cpu",
                truncate: bool = False, progress: bool = False) -> list[str]:
    """:func:`unify` over many instructions (a whole dataset); model backends are loaded once and
    cached in-process, the embedding backend encodes the batch at once."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if isinstance(texts, str):
        raise InstructionTypeError("texts: expected a list of instruction strings, got one string")
    texts = list(texts)
    cleaned = [_clean_checked(t, truncate, name=f"texts[{i}]") for i, t in enumerate(texts)]
    if backend == "rules":
        it = cleaned
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(cleaned, desc="unify (rules)", unit="instr")
        return [_unify_clean(c) for c in it]
    if backend == "embedding":
        if bank is None:
            raise ValueError("bank: the embedding backend needs a bank of canonical instructions "
                             "(e.g. the training set's unified instructions)")
        from .embedding import EmbeddingUnifier
        unifier = EmbeddingUnifier.cached(tuple(bank), threshold=threshold, model_path=model,
                                          device=device)
        return unifier.unify_cleaned(cleaned, progress=progress)
    if model is None:
        raise ValueError("model: the llm backend needs a local transformers causal-LM folder")
    from .llm import LLMUnifier
    unifier = LLMUnifier.cached(model, device=device)
    return unifier.unify_cleaned(cleaned, progress=progress)


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
