"""The vocabularies of the rules backend (``data/lexicon.json``) and the word-level language tools
they need: lemmas, inflections and the parts of speech a word can take, from ``lemminflect``
(an English lemmatiser/inflector that ships its own dictionaries; no download at run time).

Everything here is a pure lookup, cached, so the rules stay fast.
"""
from __future__ import annotations

import functools
import json
import re
from importlib import resources
from types import MappingProxyType

_DATA = "data/lexicon.json"


def _freeze(value):
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@functools.lru_cache(maxsize=1)
def load() -> MappingProxyType:
    """The lexicon as read-only mappings and frozensets (keys starting with ``_`` are comments)."""
    raw = json.loads(resources.files("gie_core.instruction").joinpath(_DATA).read_text("utf-8"))
    return _freeze({k: v for k, v in raw.items() if not k.startswith("_")})


LEX = load()


def alternation(words, *, inflect: bool = False) -> str:
    """A regex alternation of ``words`` (longest first, so multi-word entries win); with ``inflect``
    every verb also matches its inflected forms (remove → removes, removed, removing)."""
    forms = set()
    for w in words:
        forms.add(w)
        if inflect:
            forms.update(verb_forms(w))
    return "(?:" + "|".join(re.escape(f) for f in sorted(forms, key=lambda s: (-len(s), s))) + ")"


@functools.lru_cache(maxsize=4096)
def verb_forms(verb: str) -> frozenset[str]:
    """All inflections of a (possibly multi-word, particle-last) verb: ``get rid of`` → ``got rid of``…"""
    head, _, rest = verb.partition(" ")
    try:
        from lemminflect import getAllInflections, getAllInflectionsOOV
    except ImportError:  # pragma: no cover - lemminflect is a dependency; keep the base form working
        return frozenset({verb})
    infl = getAllInflections(head, upos="VERB") or getAllInflectionsOOV(head, upos="VERB")
    forms = {f for fs in infl.values() for f in fs} | {head}
    return frozenset(f + (" " + rest if rest else "") for f in forms)


@functools.lru_cache(maxsize=1 << 16)
def all_lemmas(word: str) -> MappingProxyType:
    """lemminflect's dictionary entry for ``word``: POS → lemmas (cached; lemminflect copies its
    answer on every call, which dominates the rules' run time without this)."""
    from lemminflect import getAllLemmas
    return MappingProxyType(dict(getAllLemmas(word)))


def parts_of_speech(word: str) -> frozenset[str]:
    """The universal POS tags lemminflect's dictionary knows for ``word`` (NOUN, VERB, ADJ…)."""
    return frozenset(all_lemmas(word))


@functools.lru_cache(maxsize=1 << 15)
def lemma(word: str, upos: str) -> str:
    """The lemma of ``word`` as ``upos`` (VERB/NOUN/ADJ), or the word itself when unknown."""
    known = all_lemmas(word).get(upos)
    if known:
        return known[0]
    if upos == "NOUN" and not all_lemmas(word):
        from lemminflect import getLemma
        out = getLemma(word, upos="NOUN", lemmatize_oov=True)
        return out[0] if out else word
    return word


@functools.lru_cache(maxsize=1 << 12)
def participle(verb: str) -> str:
    """The past participle of a verb (``flood`` → ``flooded``)."""
    from lemminflect import getInflection
    out = getInflection(verb, tag="VBN")
    return out[0] if out else verb + "ed"


@functools.lru_cache(maxsize=1 << 12)
def present_participle(verb: str) -> str:
    """The -ing form of a verb (``burn`` → ``burning``)."""
    from lemminflect import getInflection
    out = getInflection(verb, tag="VBG")
    return out[0] if out else verb + "ing"


def verb_lemma(word: str) -> str | None:
    """The verb lemma of ``word`` when it can be a verb, else ``None``."""
    got = all_lemmas(word).get("VERB")
    return got[0] if got else None


_DIGITS = re.compile(r"[0-9]{1,6}")
_NUMBER_WORDS = {v: k for k, v in LEX["numbers"].items() if " " not in k and k != "dozen"}


def number_word(token: str) -> str:
    """Digits up to 20 become words ("2" → "two"), so "add 2 birds" and "add two birds" agree;
    larger numbers and words are returned as they are."""
    if _DIGITS.fullmatch(token) and int(token) in _NUMBER_WORDS and int(token) <= 20:
        return _NUMBER_WORDS[int(token)]
    return token


def number_value(token: str) -> int | None:
    """``"ten"`` → 10, ``"10"`` → 10, ``"thirty"`` → 30; ``None`` for anything else."""
    if _DIGITS.fullmatch(token):
        return int(token)
    return LEX["numbers"].get(token)


def words_of(value: int) -> str:
    """10 → "ten", 30 → "thirty", 45 → "45" (tens and numbers up to twenty have a word)."""
    return _NUMBER_WORDS.get(value, str(value))
