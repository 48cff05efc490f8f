"""Conversational context around an edit: what the relaxed reading of :mod:`.rules` may drop or
resolve when a text does not parse as a whole.

Chatty instructions wrap the edit in clauses that comment on the picture or give a reason:
"too dark, bump up the brightness", "hey so the lamp kind of ruins this pic, could you take the
lamp out?", "flip it horizontally so the left side ends up on the right". The relaxed reading
splits such a text into pieces and keeps the pieces that are edits; a piece may be dropped only
when it is one of the kinds below, and only beside a piece that is an edit, so a text that says
nothing the rules can read is still refused as a whole.

- :data:`COMMENTARY`: a statement about the picture ("it looks flat", "colours are too loud",
  "he blinked"), a complaint ("too dark"), a question ("what would he look like with a beard"),
  a reason ("for a moody look").
- :func:`vague_head`: a verb that names no edit, followed by a "so" clause that does ("retouch
  the skin so it looks smooth", "edit it so the man's eyes are shut"); its object is what "it"
  means in that clause.
- :func:`resolve`: "it"/"them" in a piece that does not parse on its own names the thing of the
  piece before ("I don't want the dog in this shot, please erase it").

The verbs that name no edit live in ``data/lexicon.json`` (``vague_edit_verbs``).
"""
from __future__ import annotations

import functools
import re

from .lexicon import LEX, alternation, lemma, parts_of_speech, verb_forms
from .text import entity, valid_entity

_DEGREE = r"(?:(?:way|far|much|a bit|a little|kind of|kinda|sort of|just|so|a tad|bit|still|now|" \
          r"really|pretty|rather|quite|very|a lot) )*"
_BE = r"(?:is|are|was|were|'s|'re|looks|look|looked|seems|seem|seemed|feels|feel|felt|appears|" \
      r"appear|got|gets|get|has gotten|has become|became|kind of looks|just looks)"
_SUBJECT_PRONOUN = r"(?:i|we|you|they|he|she|it|it's|this|that|everything|everyone|nobody|someone)"
_DETERMINER = r"(?:the|this|that|these|those|my|our|your|his|her|their|its)"
_WISH = frozenset("want wants need needs like love wish hope prefer would 'd wonder wondering "
                  "think mean".split())

# Context pieces, tried in order: (name, regex on the cleaned piece).
COMMENTARY: tuple[tuple[str, re.Pattern], ...] = tuple((name, re.compile(p)) for name, p in (
    ("complaint", rf"^(?:(?:it|this|that|it's|its|it is|this is|that's|everything is|way|"
                  rf"looks|look|kind of|kinda) )*{_DEGREE}too \S+(?: \S+){{0,3}}$"),
    ("question", r"^(?:what|how|why|where|who|when|which)\b(?! about\b)(?!'s up with)(?! would \S+ look\b)"
                 r"|^(?:is|isn't|doesn't|don't|didn't|wouldn't|won't|can't|does|do|did) "
                 r"(?:it|this|that|he|she|they|you)\b(?! (?:be|look|have)\b)"),
    ("reason", r"^for (?:privacy|fun|insta|instagram|social media|the win|(?:a|an|the|that|some|my|"
               r"our) .+)$"),
    ("interjection", r"^(?:ugh|hmm+|oh|ok|okay|yeah|yes|wow|hey|so|um+|uh|oops|ah|meh|nice|cool|"
                     r"thanks|thank you|great|perfect|awesome)$"),
    ("statement", rf"^(?!(?:can|could|would|will|please|pls|may) (?:you|u)\b)(?:{_SUBJECT_PRONOUN}|{_DETERMINER} [\w'-]+(?: [\w'-]+){{0,2}}|[\w'-]+(?: [\w'-]+)?) "
                  rf"(?:kind of |kinda |sort of |really |just |totally |so |always |still )?{_BE}"
                  rf"(?: .+)?$"),
    # "he's a stranger", "it's a bit soft", "that's the vibe"
    ("contracted statement", r"^(?:he's|she's|they're|that's|it's|we're|you're|i'm|there's no|he is|she is|"
                             r"they are|that is|there's|there is|there are)\b"),
    # "would make it way happier", "will look great": what the edit would do
    ("outcome", r"^(?:would|will|it'd|it would|that'd|that would|this would|that will|it will|should)\b"
                r"(?! you\b)(?! u\b)"),
    ("simile", r"^(?:like|as if|as though|kind of like|sort of like) (?:after|before|in|an?|the|it|some|"
               r"one|those|a scene|from)\b"),
    ("aim", r"^(?:going for|aiming for|trying to get|want(?:ing)? to get) (?:a|an|the|that|some|more)\b|"
            r"^(?:going|aiming|trying|shooting)$"),
    ("ability", r"^(?:(?:can|could|would|will) (?:you|u) )?(?:do|manage|handle) (?:that|this|it)$|"
                r"^(?:(?:can|could|would|will) (?:you|u) )?show (?:me|us)$|"
                r"^(?:is that|would that be) (?:possible|ok|okay|doable)$"),
    ("thanks", r"^(?:thanks|thank you|thx|ty|cheers|much appreciated|appreciate it)(?: .+)?$"),
    # "want a clean shot", "need it to pop": a reason without its subject
    ("bare reason", r"^(?:want|wanted|need|needed|trying) (?:a|an|the|some|it|this|that|them) (?:\S+ ){0,4}?\S+$"),
))
_PRONOUN_SUBJECT = re.compile(rf"^(?P<s>{_SUBJECT_PRONOUN}) (?:(?:kind of|kinda|sort of|really|just|"
                              rf"totally|always|still|never|already) )*(?P<v>[\w'-]+)(?: .*)?$")
_NP_SUBJECT = re.compile(rf"^{_DETERMINER} (?:[\w'-]+ ){{1,3}}?(?:(?:kind of|kinda|sort of|really|"
                         rf"just|totally|always|still|never|already) )*(?P<v>[\w'-]+)(?: .*)?$")


def _finite_verb(word: str) -> bool:
    """An inflected verb form that needs a subject ('ruins', 'blinked', 'ends'), per
    lemminflect's dictionary."""
    if word in _WISH or word.endswith("ing") or "VERB" not in parts_of_speech(word):
        return False
    return lemma(word, "VERB") != word


@functools.lru_cache(maxsize=1 << 14)
def is_commentary(piece: str) -> bool:
    """A piece that comments on the picture or gives a reason instead of asking for an edit."""
    if any(p.match(piece) for _, p in COMMENTARY):
        return not re.match(r"^(?:i|we)(?:'d| would)? (?:want|need|like|love|wish|prefer)\b", piece)
    m = _PRONOUN_SUBJECT.match(piece)
    if m:
        s, v = m.group("s"), m.group("v")
        if v in _WISH or v.startswith(("'d", "'ll", "'m")):
            return False
        if s in ("i", "we", "you", "they"):
            return "VERB" in parts_of_speech(v) and v not in ("do", "can", "could", "should")
        return _finite_verb(v)
    m = _NP_SUBJECT.match(piece)
    if m and m.group("v") in _MODALS:
        return True  # "my kids would love it"
    return bool(m) and _finite_verb(m.group("v"))


_MODALS = frozenset("would will could can might should must".split())


_VAGUE = re.compile(rf"^{alternation(LEX['vague_edit_verbs'], inflect=True)}(?: (?P<x>.+?))?"
                    r"(?: (?:up|a bit|a little|slightly))?$")


def vague_head(piece: str) -> str | None:
    """The object of a verb that names no edit ('retouch the skin' → 'the skin', 'edit it' → 'it'),
    or ``None`` when ``piece`` is not such a clause."""
    m = _VAGUE.match(piece)
    if not m:
        return None
    return m.group("x") or "it"


_ANAPHOR = re.compile(r"\b(?:it's|it is|they're|they are|its|it|them|they)\b")
_REPLACEMENT = {"it's": "{} is", "it is": "{} is", "they're": "{} are", "they are": "{} are",
                "its": "{}'s", "it": "{}", "them": "{}", "they": "{}"}


@functools.lru_cache(maxsize=1)
def _edit_words() -> frozenset[str]:
    """Words that start or carry an edit: every verb of the rules' verb tables (all inflections)
    and the value vocabularies (colours, materials, styles, seasons, weather, times)."""
    verbs = {w.split()[0] for ws in LEX["verbs"].values() for w in ws}
    for table in ("state_verbs", "size_verbs", "age_verbs", "style_verbs", "weather_verbs", "expression_verbs"):
        verbs |= {w.split()[0] for w in LEX[table]}
    verbs |= set("make turn flip mirror rotate zoom crop blur sharpen invert brighten darken lighten "
                 "desaturate saturate warm cool write age shrink enlarge double triple halve dye cut "
                 "trim shave swap replace remove add put give".split())
    words = {f for v in verbs for f in verb_forms(v)}
    for table in ("colours", "materials", "styles", "seasons", "weather", "times", "weather_nouns"):
        words |= {w for k in LEX[table] for w in k.split() if len(w) > 2}
    return frozenset(words) | frozenset("no without not don't dont never more less".split())


@functools.lru_cache(maxsize=1 << 14)
def is_aside(piece: str) -> bool:
    """A piece beside an edit that names no edit of its own: none of its words is an edit verb, a
    negation or a value word ('it blocks the view', 'my kids would love it', 'thanks so much').
    The relaxed reading may drop it, after every other reading of the piece has failed."""
    words = re.findall(r"[a-z][a-z'-]*", piece)
    edit_words = _edit_words()  # built on first use: every inflection of every verb table
    if not words or len(words) > 12 or any(w in edit_words for w in words):
        return False
    return not valid_entity(entity(piece))  # "the dog, the cat, red": a thing named is no aside


_SUBJECT_NP = re.compile(rf"^(?P<np>(?:the|this|that|my|our|his|her|their) [\w'-]+(?: [\w'-]+)?) "
                         rf"(?:kind of |kinda |sort of |really |just |so |still )?{_BE}\b")


_THERE_IS = re.compile(r"^there(?:'s| is| are) (?:an?|some|the|this|that) (?P<n>[\w'-]+(?: [\w'-]+)??)"
                       r"(?: (?:sitting|standing|lying|on|in|at|by|near|next|behind|under|over)\b.*)?$")


def commentary_subject(piece: str) -> str | None:
    """The thing a comment is about ('the lake looks kind of empty' → 'the lake', "there's a
    pigeon on the statue" → 'the pigeon'): what "it" means in the edit that follows."""
    m = _SUBJECT_NP.match(piece)
    if m:
        return m.group("np")
    m = _THERE_IS.match(piece)
    return f"the {m.group('n')}" if m else None


def has_anaphor(piece: str) -> bool:
    return _ANAPHOR.search(piece) is not None


def resolve(piece: str, referent: str) -> str:
    """``piece`` with its pronouns naming ``referent`` (a noun phrase: 'the skin')."""
    return _ANAPHOR.sub(lambda m: _REPLACEMENT[m.group(0)].format(referent), piece)
