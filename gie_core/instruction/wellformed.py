"""An independent check that a canonical instruction is well-formed English: every clause is one
of the canonical sentence shapes, every noun phrase is a determiner, modifiers and a noun (as
lemminflect's dictionary knows the words), and every value is a word of its kind.

It shares no code with the parser (:mod:`.frames`), so a parser bug that builds a broken clause
("make it an as a pencil sketch") is caught here, not re-accepted by the same rules.

>>> check("change the colour of the car to red")
[]
>>> check("make it an as a pencil sketch")
['clause 1 \\'make it an as a pencil sketch\\': style value \\'an as a pencil sketch\\' is not a noun phrase']
"""
from __future__ import annotations

import functools
import re

from .grammar import CLAUSE_SEPARATOR
from .lexicon import LEX, parts_of_speech

_FUNCTION_WORDS = frozenset(
    "a an the to of in on at for from by with as into onto it this that is are be was were been "
    "make change add remove replace and or but not no if then so than do does did will would "
    "another "
    "should could may might must i you he she we they me him us them my your our its "
    "render turn give put".split())
_NP_PREPS = ("of", "on", "in", "at", "with", "next to", "behind", "under", "above", "across", "around",
             "near", "beside", "inside", "over", "below", "from", "by")
_NP_PREP_RES = tuple(re.compile(rf"^(.+?) {prep} (?:the |a |an )?(.+)$") for prep in _NP_PREPS)
_KNOWN_NOUNS = (LEX["garments"] | LEX["beings"] | LEX["scenes"] | LEX["facial_hair"]
                | frozenset(LEX["materials"]) | LEX["styles"] | LEX["style_nouns"])


@functools.lru_cache(maxsize=1 << 14)
def _content_word(word: str) -> bool:
    if word in _FUNCTION_WORDS:
        return False
    if word.isdigit() or word in LEX["numbers"] or word in _KNOWN_NOUNS:
        return True
    if "-" in word:
        return all(_content_word(p) or p.isdigit() for p in word.split("-") if p)
    if word.endswith("'s"):
        return _content_word(word[:-2])
    pos = parts_of_speech(word)
    return bool(pos & {"NOUN", "ADJ", "PROPN", "NUM", "VERB"}) or word.isalpha() and len(word) > 2 \
        and not pos


def _noun_phrase(np: str, *, article: str) -> str | None:
    """``None`` when ``np`` is a well-formed noun phrase with the expected ``article`` ('the',
    'a' (a/an/none for plurals and mass nouns) or '' (none)); else the reason."""
    words = np.split()
    if not words:
        return "empty noun phrase"
    if article == "the" and words[0] != "the":
        return "expected 'the'"
    if article == "the":
        words = words[1:]
    elif article == "a" and words[0] in ("a", "an"):
        if len(words) < 2:
            return "article without a noun"
        if words[1] in ("more", "another", "other", "extra", "additional", "few", "many", "several"):
            return f"{words[0]!r} before {words[1]!r}"
        expected_an = words[1][0] in "aeiou"
        if words[0] == "an" and not expected_an and not words[1].startswith(("hour", "honest", "heir", "hono")):
            return f"'an' before {words[1]!r}"
        words = words[1:]
    if not words:
        return "article without a noun"
    rest = " ".join(words)
    for prep in _NP_PREP_RES:  # "man on the left", "vase of flowers", "hair of the woman"
        m = prep.match(rest)
        if m:
            return _bare(m.group(1)) or _bare(m.group(2))
    return _bare(rest)


def _bare(np: str) -> str | None:
    words = np.split()
    if not words or len(words) > 8:
        return "noun phrase of no or too many words"
    if words[0] in ("a", "an", "the"):
        return f"doubled article in {np!r}"
    bad = [w for w in words if not _content_word(w)]
    if bad:
        return f"{bad[0]!r} cannot be part of a noun phrase"
    last = words[-1].removesuffix("'s")
    pos = parts_of_speech(last)
    if pos and not pos & {"NOUN", "PROPN", "NUM", "ADJ"} and last not in _KNOWN_NOUNS:
        return f"{last!r} cannot end a noun phrase"
    return None


_SHAPES: tuple[tuple[str, re.Pattern, dict], ...] = tuple(
    (name, re.compile(p), slots) for name, p, slots in (
        ("replace", r"^replace (?P<t>the .+) with (?P<v>.+)$", {"t": "the", "v": "a"}),
        ("remove", r"^remove (?P<t>the .+)$", {"t": "the"}),
        ("add", r"^add (?P<v>.+?) (?:to|next to|behind|under|above|in front of|on top of|around|"
                r"across|between) (?P<t>the .+)$", {"v": "a", "t": "the"}),
        ("add", r"^add (?P<v>.+)$", {"v": "a"}),
        ("count", r"^(?:double|triple|halve|reduce) the number of (?P<v>\S+(?: \S+){0,3})$", {"v": "plural"}),
        ("text", r"^write '(?P<v>[^']+)' on (?:the image|(?P<t>the .+))$", {"v": "quoted", "t": "the"}),
        ("on fire", r"^set (?P<t>the .+) on fire$", {"t": "the"}),
        ("on off", r"^turn (?:on|off) (?P<t>the .+)$", {"t": "the"}),
        ("age", r"^turn (?P<t>the .+) into (?P<v>an? (?:child|toddler|baby|teenager|puppy|kitten|cub|foal|calf|chick|duckling|lamb|piglet))$", {"t": "the", "v": "a"}),
        ("colour", r"^change the colour of (?P<t>the .+) to (?P<c>.+)$", {"t": "the", "c": "colour"}),
        ("material", r"^make (?P<t>the .+) out of (?P<v>.+)$", {"t": "the", "v": ""}),
        ("clothing", r"^make (?P<t>the .+) wear (?P<v>.+)$", {"t": "the", "v": "a"}),
        ("hair", r"^change the hair(?: of (?P<t>the .+))? to (?P<v>.+)$", {"t": "the", "v": ""}),
        ("expression", r"^change the expression of (?P<t>the .+) to (?P<v>\S+)$", {"t": "the", "v": "word"}),
        ("background", r"^change the background to (?P<v>the .+)$", {"v": "the"}),
        ("background", r"^change the background to (?P<v>.+)$", {"v": "a"}),
        ("season", r"^change the season to (?:winter|spring|summer|autumn)$", {}),
        ("weather", r"^change the weather to (?P<v>\S+)$", {"v": "word"}),
        ("time", r"^change the time of day to (?P<v>.+)$", {"v": ""}),
        ("style", r"^make it (?P<v>.+?)(?: style)?$", {"v": "style"}),
        ("transform", r"^(?:flip the image (?:horizontally|vertically)|rotate the image \d+ degrees"
                      r"(?: clockwise| counterclockwise)?|invert the colours of the image|"
                      r"(?:blur|sharpen|pixelate) the image|make the image (?:slightly )?(?:brighter|darker)|"
                      r"(?:increase|decrease) the (?:contrast|saturation) of the image(?: slightly)?|"
                      r"zoom in on the image|zoom out of the image|crop the image to a square|"
                      r"add a vignette to the image|make the colours of the image (?:warmer|cooler))$", {}),
        ("filter", r"^(?:blur|sharpen|pixelate) (?P<t>the .+)$", {"t": "the"}),
        ("zoom", r"^zoom in on (?P<t>the .+)$", {"t": "the"}),
        ("attribute", r"^make (?P<t>the .+?) (?P<v>(?:slightly |\w+ years |[\w-]+ years )?[\w-]+(?: up| in)?)$",
         {"t": "the", "v": "word"}),
    ))


def check_clause(clause: str) -> str | None:
    """``None`` when ``clause`` is a well-formed canonical clause, else the reason."""
    reasons = []
    for _family, pattern, slots in _SHAPES:
        m = pattern.match(clause)
        if not m:
            continue
        problem = None
        for slot, kind in slots.items():
            value = m.group(slot)
            if value is None:
                continue
            if kind in ("the", "a", ""):
                problem = _noun_phrase(value, article=kind)
            elif kind == "colour":
                problem = _bare(value)
            elif kind == "plural":
                problem = _bare(value) or (None if value.endswith("s") or value.split()[-1] in (
                    "people", "children", "men", "women", "sheep", "fish", "deer", "mice", "geese")
                    else f"{value!r} is not a plural noun")
            elif kind == "quoted":
                problem = None if value.strip() == value and "  " not in value and value.strip() \
                    else f"{value!r} is not trimmed text"
            elif kind == "word":
                problem = None if all(_content_word(w) for w in value.split()) else f"{value!r} is not a word"
            elif kind == "style":
                if value in LEX["style_bare"] or value in LEX["styles"]:
                    problem = None
                elif value.startswith(("a ", "an ")):
                    problem = _noun_phrase(value, article="a")
                else:
                    problem = _bare(value)
                if problem:
                    problem = f"style value {value!r} is not a noun phrase"
            if problem:
                break
        if problem is None:
            return None
        reasons.append(problem)
    return reasons[-1] if reasons else "not one of the canonical sentence shapes"


def check(text: str) -> list[str]:
    """The problems of a canonical instruction (``[]`` when it is well-formed)."""
    if not isinstance(text, str) or not text or text != text.strip() or "  " in text:
        return ["not a trimmed, single-spaced string"]
    problems = []
    for i, clause in enumerate(text.split(CLAUSE_SEPARATOR), 1):
        why = check_clause(clause)
        if why:
            problems.append(f"clause {i} {clause!r}: {why}")
    return problems
