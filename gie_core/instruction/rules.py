"""The offline ``rules`` backend: clean the text, split it into clauses, and read each clause with
the frame table of :mod:`.frames` (imperatives, then rewrites of wishes and statements, then
captions).

Nothing here guesses: a clause that no frame accepts makes the whole parse fail, and the caller
then returns the cleaned input unchanged.
"""
from __future__ import annotations

import functools
import re

from .frames import CAPTIONS, FRAMES, REWRITES, Frame
from .grammar import Edit
from .lexicon import verb_lemma
from .patterns import compile_pattern, first_words
from .text import clean, entity, is_image, pluralise, valid_entity  # noqa: F401  (clean, entity,

# pluralise are re-exported: the public helpers)

_MAX_REWRITES = 3


_COMPILED: dict[int, list] = {}


def _compiled(frames: tuple[Frame, ...]) -> list:
    """(frame, regex, first words or None) for each frame, built once per table."""
    got = _COMPILED.get(id(frames))
    if got is None:
        got = _COMPILED[id(frames)] = [(f, compile_pattern(f.pattern), first_words(f.pattern))
                                       for f in frames]
    return got


_BY_FIRST: dict[tuple[int, str], list] = {}


def _candidates(frames: tuple[Frame, ...], first: str) -> list:
    """The frames (in table order) that a clause starting with ``first`` can match."""
    key = (id(frames), first)
    got = _BY_FIRST.get(key)
    if got is None:
        got = [(f, r) for f, r, starts in _compiled(frames) if starts is None or first in starts]
        if len(_BY_FIRST) < 50_000:
            _BY_FIRST[key] = got
    return got


def _apply(frames: tuple[Frame, ...], c: str) -> Edit | None:
    text = " " + c
    for frame, regex in _candidates(frames, c.split(" ", 1)[0]):
        m = regex.match(text)
        if m is None:
            continue
        slots = {k: v.strip() for k, v in m.groupdict().items() if v is not None}
        e = frame.handler(**slots)
        if e is not None:
            return e
    return None


def _rewrite(template: str, slots: dict) -> str | None:
    """The rewritten clause, or ``None`` when its ``x`` slot is neither a thing nor the image
    (a rewrite never turns a word salad into a clause)."""
    x = slots.get("x")
    if x is not None and not (is_image(x) or valid_entity(entity(x))):
        return None
    if "p" in slots:  # a participle stands for its verb: "rotated" -> "rotate"
        slots = {**slots, "p": verb_lemma(slots["p"]) or slots["p"]}
    if "v" in slots:  # "make the car be red" -> "make the car red"
        slots = {**slots, "v": re.sub(r"^be\s+", "", slots["v"])}
    out = re.sub(r"\{(\w+)\}", lambda m: slots.get(m.group(1), ""), template)
    return clean(" ".join(out.split()))


@functools.lru_cache(maxsize=1 << 16)
def read_clause(clause: str, depth: int = 0) -> Edit | None:
    """One cleaned clause → an :class:`Edit`, or ``None`` when no frame accepts it."""
    c = clean(clause)
    if not c or len(c) > 300:
        return None
    e = _apply(FRAMES, c)
    if e is not None:
        return e
    if depth < _MAX_REWRITES:
        text = " " + c
        for rw in REWRITES:
            m = compile_pattern(rw.pattern).match(text)
            if m is None:
                continue
            new = _rewrite(rw.template, {k: v.strip() for k, v in m.groupdict().items() if v})
            if new and new != c:
                e = read_clause(new, depth + 1)
                if e is not None:
                    return e
    return _apply(CAPTIONS, c)


def clear_caches() -> None:
    """Forget every cached parse (benchmarks measure the rules from scratch with this)."""
    from . import core, frames, text, values
    for f in (read_clause, text.clean, text.entity, text.valid_entity, frames.target_value,
              values.style_value, core._unify_clean, core._verified):
        f.cache_clear()


def parse_clause(clause: str) -> Edit | None:
    """Parse one clause; ``None`` when no frame accepts it."""
    return read_clause(clause)


# ----------------------------------------------------------------------------------------------
# Clause splitting

_SPLIT = re.compile(r"\s*(?:;|,|\.\s|\band then\b|\band also\b|\bthen\b|\balso\b|\band\b|&|"
                    r"\bplus\b|\bafter that\b|\bwhile you're at it\b)\s*")
_MAX_PIECES = 24  # beyond this many separators the text is parsed as one clause


def split_clauses(text: str) -> list[str] | None:
    """Split cleaned text into clauses that each parse, joining neighbouring pieces where a piece
    does not parse on its own (so 'make it black and white' stays one clause). Prefers the
    segmentation with the shortest first clause; ``None`` when no segmentation parses."""
    pieces, seps, pos = [], [], 0
    for m in _SPLIT.finditer(text):
        pieces.append(text[pos:m.start()])
        seps.append(m.group(0))
        pos = m.end()
    pieces.append(text[pos:])
    kept, joins, pending = [], [], ""
    for i, piece in enumerate(pieces):
        if i > 0:
            pending += seps[i - 1]
        if clean(piece):
            if kept:
                joins.append(pending)
            kept.append(piece)
            pending = ""
    if not kept:
        return None
    if len(kept) > _MAX_PIECES:
        return [text] if parse_clause(text) is not None else None
    n = len(kept)
    memo: dict[int, list[str] | None] = {n: []}

    def segment(i: int) -> list[str] | None:
        if i in memo:
            return memo[i]
        memo[i] = None
        joined = kept[i]
        for j in range(i, n):
            if j > i:
                joined = joined + joins[j - 1] + kept[j]
            if parse_clause(joined) is not None:
                rest = segment(j + 1)
                if rest is not None:
                    memo[i] = [joined] + rest
                    break
        return memo[i]

    return segment(0)


def parse_text(text: str) -> list[Edit] | None:
    """All edits of an instruction, or ``None`` if any clause does not parse."""
    c = clean(text)
    if not c:
        return None
    if not _SPLIT.search(c):
        e = parse_clause(c)
        return [e] if e is not None else None
    whole = parse_clause(c)
    clauses = split_clauses(c)
    if clauses is None or (whole is not None and len(clauses) == 1):
        return [whole] if whole is not None else None
    return [parse_clause(cl) for cl in clauses]
