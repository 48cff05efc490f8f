"""The offline ``rules`` backend: clean the text, split it into clauses, and read each clause with
the frame table of :mod:`.frames` (imperatives, then rewrites of wishes and statements, then
captions).

Nothing here guesses: a clause that no frame accepts makes the whole parse fail, and the caller
then returns the cleaned input unchanged.
"""
from __future__ import annotations

import functools
import re

from . import context
from .frames import CAPTIONS, FRAMES, REWRITES, Frame, normalise_edit
from .grammar import Edit, definite
from .keywords import read as read_keywords
from .lexicon import LEX, verb_lemma
from .patterns import compile_pattern, first_words, required_words
from .text import clean, entity, is_image, pluralise, valid_entity  # noqa: F401  (clean, entity,

# pluralise are re-exported: the public helpers)

_MAX_REWRITES = 3


_COMPILED: dict[int, list] = {}


def _compiled(frames: tuple) -> list:
    """(frame, regex, first words or None, required words) for each frame (or rewrite), built
    once per table."""
    got = _COMPILED.get(id(frames))
    if got is None:
        got = _COMPILED[id(frames)] = [(f, compile_pattern(f.pattern), first_words(f.pattern),
                                        required_words(f.pattern)) for f in frames]
    return got


_BY_FIRST: dict[tuple[int, str], list] = {}


def _candidates(frames: tuple, first: str) -> list:
    """(frame, regex, required words) of the frames (in table order) that a clause starting
    with ``first`` can match."""
    key = (id(frames), first)
    got = _BY_FIRST.get(key)
    if got is None:
        got = [(f, r, needs) for f, r, starts, needs in _compiled(frames)
               if starts is None or first in starts]
        if len(_BY_FIRST) < 50_000:
            _BY_FIRST[key] = got
    return got


def _matches(frames: tuple, c: str):
    """(frame, match) for each frame (or rewrite) of the table whose pattern matches clause
    ``c``, in table order. A frame is skipped without running its regex when ``c`` lacks every
    word of its :func:`~.patterns.required_words` (two thirds of the matches, on the suites)."""
    text, words = " " + c, None
    for frame, regex, needs in _candidates(frames, c.split(" ", 1)[0]):
        if needs is not None:
            if words is None:
                words = set(c.split(" "))
            if words.isdisjoint(needs):
                continue
        m = regex.match(text)
        if m is not None:
            yield frame, m


def _apply(frames: tuple[Frame, ...], c: str) -> Edit | None:
    for frame, m in _matches(frames, c):
        slots = {k: v.strip() for k, v in m.groupdict().items() if v is not None}
        e = frame.handler(**slots)
        if e is not None:
            return e
    return None


_OBJECT_FORM = {"he": "him", "she": "her", "it": "it", "this": "it"}


def _rewrite(template: str, slots: dict) -> str | None:
    """The rewritten clause, or ``None`` when its ``x`` slot is neither a thing nor the image
    (a rewrite never turns a word salad into a clause)."""
    x = slots.get("x")
    if x is not None and not (is_image(x) or valid_entity(entity(x))):
        return None
    if "p" in slots:  # a participle stands for its verb: "rotated" -> "rotate"
        slots = {**slots, "p": verb_lemma(slots["p"]) or slots["p"]}
    if "n" in slots:  # a noun made from a verb stands for it: "whitening" -> "whiten"
        slots = {**slots, "n": LEX["deverbal_nouns"].get(slots["n"], slots["n"])}
    for name in ("p", "y"):  # {dp}/{dy}: the slot with an article ("add a car to the driveway")
        if "{d" + name + "}" in template and name in slots:
            v = re.sub(r"^(?:a|an|any|some) ", "", slots[name])
            slots = {**slots, "d" + name: v if re.match(r"^(?:the|this|that|these|those|his|her|their|its|my|"
                                                         r"him|them|it)\b", v) else "the " + v}
    if "s" in slots:  # a subject pronoun as the object: "he'd look better with a beard" -> "give him …"
        slots = {**slots, "s": _OBJECT_FORM[re.split(r"['\s]", slots["s"])[0]]}
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
        for rw, m in _matches(REWRITES, c):
            new = _rewrite(rw.template, {k: v.strip() for k, v in m.groupdict().items() if v})
            if new and new != c:
                e = read_clause(new, depth + 1)
                if e is not None:
                    return e
    return _apply(CAPTIONS, c)


def clear_caches() -> None:
    """Forget every cached parse (benchmarks measure the rules from scratch with this)."""
    from . import core, frames, keywords, text, values
    for f in (read_clause, text.clean, text.entity, text.valid_entity, frames.target_value,
              values.style_value, values.strip_look, core._unify_clean, core._verified,
              context.is_commentary, context.is_aside, keywords.read):
        f.cache_clear()


def parse_clause(clause: str) -> Edit | None:
    """Parse one clause; ``None`` when no frame accepts it."""
    return read_clause(clause)


# ----------------------------------------------------------------------------------------------
# Clause splitting

# The words share one \b(?:…)\b: the same matches as "\band then\b|\bthen\b|…" in the same order of
# preference, found several times faster (the engine no longer tries every word at every position).
_SEPARATORS = r"[;,&]|\.\s|\b(?:and then|and also|then|also|and|plus|after that|while you're at it)\b"
_SPLIT = re.compile(rf"\s*(?:{_SEPARATORS})\s*")
_HAS_SEPARATOR = re.compile(_SEPARATORS)  # whether _SPLIT matches, without its spaces: faster
# The relaxed reading also splits off questions, "so (that) …" clauses and "for …" reasons.
_SO = r"\bso(?: that\b|(?= (?:the|it|it's|its|we|i|you|he|she|they|this|that|there|everything|his|" \
      r"her|their|my|our)\b))"
_RELAXED = (rf"{_SEPARATORS}|[?!]\s|{_SO}|(?<=\S)(?= for (?:privacy|fun|insta|instagram|social media|a|an|"
            r"the|that|some|my|our)\b)")
_RELAXED_SPLIT = re.compile(rf"\s*(?:{_RELAXED})\s*")
_HAS_RELAXED = re.compile(_RELAXED)
_IS_SO = re.compile(r"\bso\b")
_MAX_PIECES = 24  # beyond this many separators the text is parsed as one clause


def _pieces(text: str, splitter: re.Pattern = _SPLIT) -> tuple[list[str], list[str]]:
    """The non-empty pieces of ``text`` between separators, and the separator text between each
    two neighbours."""
    pieces, seps, pos = [], [], 0
    for m in splitter.finditer(text):
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
    return kept, joins


def split_clauses(text: str) -> list[str] | None:
    """Split cleaned text into clauses that each parse, joining neighbouring pieces where a piece
    does not parse on its own (so 'make it black and white' stays one clause). Prefers the
    segmentation with the shortest first clause; ``None`` when no segmentation parses."""
    kept, joins = _pieces(text)
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


def _referent(e: Edit) -> str | None:
    """What 'it' means in the next piece: the thing an edit changed ('the dog')."""
    thing = e.target if e.family != "add" else e.value
    if not thing or thing in ("background", "image"):
        return None
    return definite(thing)


def read_relaxed(text: str) -> list[Edit] | None:
    """The edits of a chatty text whose pieces do not all parse: pieces that comment on the
    picture, give a reason, or name no edit before a "so" clause that does are dropped (see
    :mod:`.context`), and "it" in a piece that does not parse alone names the previous piece's
    thing. At least one piece must be an edit; ``None`` otherwise."""
    kept, joins = _pieces(text, _RELAXED_SPLIT)
    n = len(kept)
    if n < 2 or n > _MAX_PIECES:
        return None
    after_so = [False] + [bool(_IS_SO.search(j)) for j in joins]
    memo: dict = {}

    def read(piece: str, ref: str | None) -> Edit | None:
        if ref and context.has_anaphor(piece):
            e = parse_clause(context.resolve(piece, ref))
            if e is not None:
                return e
        return parse_clause(piece)

    def segment(i: int, ref: str | None, prev_edit: bool, vague: bool) -> list | None:
        """Edits (``None`` for a dropped piece) for pieces i.. ; ``ref`` what 'it' names,
        ``prev_edit`` whether the previous piece was an edit, ``vague`` whether it named no edit
        and asked for a "so" clause."""
        if i == n:
            return []
        key = (i, ref, prev_edit, vague)
        if key in memo:
            return memo[key]
        memo[key] = None
        options = []
        if after_so[i] and prev_edit:
            options.append(("drop", i, None))  # "flip it so the left side ends up on the right"
        elif not (after_so[i] and vague) and context.is_commentary(kept[i]):
            options.append(("drop", i, None))  # "too dark, bump up the brightness"
        joined = kept[i]
        for j in range(i, n):
            if j > i:
                joined = joined + joins[j - 1] + kept[j]
            e = read(joined, ref)
            if e is not None:
                options.append(("edit", j, e))
        if i + 1 < n and after_so[i + 1] and not after_so[i]:
            obj = context.vague_head(kept[i])
            if obj is not None:
                options.append(("vague", i, obj))
        if not any(kind == "drop" for kind, _, _ in options) and (context.is_commentary(kept[i]) or
                                                                  context.is_aside(kept[i])):
            options.append(("drop", i, None))
        if edits_first:  # the second pass: a piece that reads as an edit is one
            options.sort(key=lambda o: o[0] != "edit")
        for kind, j, got in options:
            if kind == "edit":
                rest = segment(j + 1, _referent(got) or ref, True, False)
                if rest is not None:
                    memo[key] = [got] + rest
                    break
            elif kind == "vague":
                obj = got if got != "it" and not is_image(got) and valid_entity(entity(got)) else None
                rest = segment(j + 1, definite(entity(obj)) if obj else ref, False, True)
                if rest is not None:
                    memo[key] = [None] + rest
                    break
            else:
                about = context.commentary_subject(kept[i])  # "the lake looks empty, put a boat on it"
                rest = segment(j + 1, about or ref, False, False)
                if rest is not None:
                    memo[key] = [None] + rest
                    break
        return memo[key]

    edits_first = False
    got = segment(0, None, False, False)
    edits = [e for e in got or () if e is not None]
    if not edits:  # every piece read as a comment ("he'd look better with long hair, can you?")
        edits_first = True
        memo.clear()
        got = segment(0, None, False, False)
        edits = [e for e in got or () if e is not None]
    return edits or None


def _parse_edits(text: str) -> list[Edit] | None:
    c = clean(text)
    if not c:
        return None
    if not _HAS_SEPARATOR.search(c):
        e = parse_clause(c)
        if e is not None:
            return [e]
        return read_relaxed(c) if _HAS_RELAXED.search(c) else None
    whole = parse_clause(c)
    clauses = split_clauses(c)
    if clauses is None:
        return [whole] if whole is not None else read_relaxed(c)
    if whole is not None and len(clauses) == 1:
        return [whole]
    return [parse_clause(cl) for cl in clauses]


def parse_text(text: str) -> list[Edit] | None:
    """All edits of an instruction, or ``None`` if any clause does not parse (after the relaxed
    reading of :func:`read_relaxed` and the keyword reading of :mod:`.keywords` have had their
    chance); owners that only a pronoun named are left out (see
    :func:`~gie_core.instruction.frames.normalise_edit`)."""
    edits = _parse_edits(text)
    if not edits:  # the last resort: one edit named by its keywords alone (see .keywords)
        c = clean(text)
        kw = read_keywords(c) if c else None
        edits = [kw] if kw is not None else None
    return [normalise_edit(e) for e in edits] if edits else edits
