"""A small pattern language for the frame table, compiled to anchored regular expressions.

Pattern syntax (words separated by spaces)::

    remove          a literal word (matched exactly)
    ~take           a verb in any inflection (take, takes, took, taken, taking)
    {x}             a slot: one or more words, captured as ``x``
    {verb:flip}     a slot that only takes the words of class ``flip`` (see :data:`CLASSES`)
    <remove>        a word class from the lexicon (see :data:`CLASSES`), e.g. every remove verb
                    in every inflection, or <img> for "it / the (whole) picture / this photo"
    (in|into|on)    one of several literal word sequences ("(get rid of|delete)" is fine)
    [the]           optional: anything inside may be absent ("[from <img>]")

Slots are non-greedy, so the first slot takes as few words as the rest of the pattern allows.
"""
from __future__ import annotations

import functools
import re

from .lexicon import LEX, alternation

_IMG_WORDS = alternation(LEX["image_words"])
_BE = r"(?:be|is|are|was|were|been|being|'s|'re)"
CLASSES: dict[str, str] = {
    "img": rf"(?:(?:the|this|that|my|your|our|whole|entire|full|overall|current)\s+)*{_IMG_WORDS}",
    "be": _BE,
    "colour": r"(?:colou?rs?|tones?|shades?|hues?)",
    **{name: alternation(words, inflect=True) for name, words in LEX["verbs"].items()},
}


def add_classes(classes: dict[str, str]) -> None:
    """Register word classes (name → regex) for patterns."""
    CLASSES.update(classes)


def _tokenise(pattern: str) -> list[str]:
    tokens, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == " ":
            i += 1
        elif ch in "[(":
            close = {"[": "]", "(": ")"}[ch]
            depth, j = 0, i
            while True:
                if pattern[j] == ch:
                    depth += 1
                elif pattern[j] == close:
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            tokens.append(pattern[i:j + 1])
            i = j + 1
        else:
            j = i
            while j < len(pattern) and pattern[j] != " ":
                j += 1
            tokens.append(pattern[i:j])
            i = j
    return tokens


def _word(word: str) -> str:
    return alternation([word[1:]], inflect=True) if word.startswith("~") else re.escape(word)


def _piece(token: str) -> str:
    """The regex for one token, with its leading space."""
    if token.startswith("["):
        return "(?:" + "".join(_piece(t) for t in _tokenise(token[1:-1])) + ")?"
    if token.startswith("("):
        alts = token[1:-1].split("|")
        return " (?:" + "|".join(" ".join(_word(w) for w in a.split()) for a in alts) + ")"
    if token.startswith("{"):  # a slot, possibly with a suffix: {x},
        inner, _, suffix = token[1:].partition("}")
        name, _, cls = inner.partition(":")
        body = CLASSES[cls] if cls else r"\S.*?"
        return rf" (?P<{name}>{body})" + re.escape(suffix)
    if token.startswith("<"):  # a class, possibly with a suffix: <img>'s
        name, _, suffix = token[1:].partition(">")
        return " " + CLASSES[name] + re.escape(suffix)
    return " " + _word(token)


@functools.cache
def first_words(pattern: str) -> frozenset[str] | None:
    """The words a text matching ``pattern`` can start with, or ``None`` when any word can (the
    pattern opens with a free slot, an optional part or a class that is not a word list): a cheap
    filter that spares most regex matches."""
    tokens = _tokenise(pattern)
    return _token_words(tokens[0]) if tokens else None


def _token_words(t: str) -> frozenset[str] | None:
    """The words a text holds where token ``t`` matched (a literal word, ``~verb``, a group of
    alternatives or a class of word alternatives), or ``None`` when that is not a fixed list."""
    if t.startswith("("):
        out = set()
        for alt in t[1:-1].split("|"):
            w = alt.split()[0]
            out |= _word_forms(w[1:]) if w.startswith("~") else {w}
        return frozenset(out)
    if t.startswith("~"):
        return _word_forms(t[1:])
    if t.startswith("<"):
        name, _, suffix = t[1:].partition(">")
        return None if suffix else _literal_first_words(CLASSES[name])
    if t.startswith("{"):
        inner, _, suffix = t[1:].partition("}")
        cls = inner.partition(":")[2]
        return _literal_first_words(CLASSES[cls]) if cls and not suffix else None
    if t.startswith("["):
        return None
    return frozenset({t})


@functools.cache
def required_words(pattern: str) -> frozenset[str] | None:
    """Words of which a text matching ``pattern`` must hold one as a whole (space-separated)
    word, from the shortest such list among its tokens after the first that every match needs
    (not optional, not a free slot); ``None`` when there is none. A cheap filter that spares most
    regex matches of patterns that open with a slot ('{y} instead of {x}')."""
    needs = [w for w in map(_token_words, _tokenise(pattern)[1:]) if w is not None]
    return min(needs, key=len) if needs else None


def _word_forms(verb: str) -> frozenset[str]:
    from .lexicon import verb_forms
    return frozenset(f.split()[0] for f in verb_forms(verb))


@functools.cache
def _literal_first_words(regex: str) -> frozenset[str] | None:
    """First words of a class regex that is a plain alternation of literal phrases; else None."""
    m = re.fullmatch(r"\(\?:(.*)\)", regex)
    body = m.group(1) if m else regex
    if re.search(r"(?<!\\)[()\[\]?*+{}]", body):
        return None
    out = set()
    for alt in re.split(r"(?<!\\)\|", body):
        word = re.split(r"\\ |\\s|\s", alt, maxsplit=1)[0]
        out.add(re.sub(r"\\(.)", r"\1", word))
    return frozenset(out)


@functools.cache
def compile_pattern(pattern: str) -> re.Pattern:
    """The anchored regex for ``pattern``; match it against ``" " + text``."""
    return re.compile("^" + "".join(_piece(t) for t in _tokenise(pattern)) + "$")


def match(pattern: str, text: str) -> dict | None:
    """The slots of ``pattern`` in ``text`` (a dict, possibly empty) or ``None``."""
    m = compile_pattern(pattern).match(" " + text)
    return None if m is None else {k: v for k, v in m.groupdict().items() if v is not None}
