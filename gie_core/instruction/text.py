"""Text normalisation for the rules backend: :func:`clean` (whole instructions) and
:func:`entity` (noun phrases), with plurals and pronouns. Pure Python, cached, idempotent."""
from __future__ import annotations

import functools
import re
import unicodedata

from .grammar import is_plural
from .lexicon import LEX, alternation, lemma, number_word, parts_of_speech

# ----------------------------------------------------------------------------------------------
# Cleaning (idempotent: clean(clean(x)) == clean(x))

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u201c": '"',
                         "\u201d": '"', "\u2013": "-", "\u2014": "-", "\u00a0": " "})
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,;:.!?。、，！？])")
_REPEATED_PUNCT = re.compile(r"([,;:.!?])[,;:.!?]+")
_POLITE_PREFIX = re.compile(rf"^{alternation(LEX['politeness_prefixes'])}\b[\s,]*")
_POLITE_SUFFIX = re.compile(rf"[\s,]*\b{alternation(LEX['politeness_suffixes'])}$")
# The regexes only run on text that starts / ends with a phrase (a cheap test that spares most).
_POLITE_STARTS = tuple(LEX["politeness_prefixes"])
_POLITE_ENDS = tuple(LEX["politeness_suffixes"])
_EDGE_PUNCT = "\"'.,;:!?()[]{}…。、，！？ "
# Symbols users type for words; replaced before anything else reads the text. (symbol, pattern,
# replacement): a pattern only runs on text holding its symbol.
_SYMBOLS = (("°", re.compile(r"(\d)\s*°"), lambda m: m.group(1) + " degrees"),
            ("&", re.compile(r"\s&\s"), " and "), ("&", re.compile(r"\bb&w\b"), "black and white"),
            # arrows stand for "into" ("car → boat"); replaced before emoji are dropped
            *((arrow, re.compile(rf"\s*{arrow}\ufe0f?\s*"), " into ") for arrow in "\u2192\u279c\u2794\u21d2\u27f6\u2799\u27a1"),
            ("->", re.compile(r"\s*-+>\s*"), " into "), ("=>", re.compile(r"\s*=>\s*"), " into "),
            # "yard + snowman" is the yard with a snowman; "+hat" adds one
            ("+", re.compile(r"^([a-z][a-z ]*?)\s*:?\s*\+\s*([a-z].*)$"), r"add \2 to the \1"),  # "man: +beard"
            ("+", re.compile(r"(?<=\w)\s+\+\s+(?=\w)"), " with "), ("+", re.compile(r"^\+\s*(?=[a-z])"), "add "),
            ("-", re.compile(r"^([a-z][a-z ]*?)\s*(?::\s*|\s)-(?=[a-z])([a-z].*)$"), r"remove the \2 from the \1"),
            ("into", re.compile(r"\binto (?:gone|removed|deleted|nothing|none)$"), "gone"))
# Chat spellings ("u", "w/", "→") stand for words; whole words only.
_CHAT = LEX["chat_spellings"]
_CHAT_RE = re.compile(rf"(?<![\w/'-]){alternation(_CHAT)}(?![\w/'-])")
# Words that carry no edit wherever they stand ("delete the tourists pls, it was so crowded").
_FILLER_RE = re.compile(rf"(?<![\w'-]){alternation(LEX['filler_words'])}(?![\w'-])")
# Emoji and their joiners / variation selectors carry no instruction anywhere in the text.
_EMOJI_MARKS = frozenset("\u200d\ufe0e\ufe0f\u20e3")


def _is_edge_char(ch: str) -> bool:
    # Punctuation and symbols (emoji) at the edges are not part of an instruction.
    if ch.isascii() and ch.isalnum():  # the common case, decided without a Unicode lookup
        return False
    cat = unicodedata.category(ch)
    return ch in _EDGE_PUNCT or cat.startswith("P") or cat in ("So", "Sk", "Cf")


def _is_emoji(ch: str) -> bool:
    return ch in _EMOJI_MARKS or unicodedata.category(ch) in ("So", "Cs", "Co")


def _strip_edges(text: str) -> str:
    while text and _is_edge_char(text[0]):
        text = text[1:]
    while text and _is_edge_char(text[-1]):
        text = text[:-1]
    return text


_PLAIN = re.compile(r"[a-z0-9'-]+(?: [a-z0-9'-]+)*")


# In plain text (lower-case words, single spaces) a chat spelling or filler is a whole word, so a set
# lookup tells whether the regexes have anything to do (the common case: nothing).
_PLAIN_SPECIAL = frozenset(_CHAT) | frozenset(LEX["filler_words"])
_SPECIAL_IS_ONE_WORD = not any(" " in w for w in _PLAIN_SPECIAL)


def _normalise(text: str) -> str:
    if _PLAIN.fullmatch(text):  # already lower-case words and single spaces: nothing to do
        if _SPECIAL_IS_ONE_WORD and _PLAIN_SPECIAL.isdisjoint(text.split(" ")):
            return text
        return _drop_fillers(_CHAT_RE.sub(lambda m: _CHAT[m.group(0)], text))
    text = unicodedata.normalize("NFC", text).translate(_QUOTES).lower()
    for symbol, pattern, repl in _SYMBOLS:
        if symbol in text:
            text = pattern.sub(repl, text)
    if not text.isascii() and any(_is_emoji(ch) for ch in text):  # emoji are never ASCII
        text = "".join(" " if _is_emoji(ch) else ch for ch in text)
    text = _CHAT_RE.sub(lambda m: _CHAT[m.group(0)], text)
    text = _drop_fillers(text)
    text = " ".join(text.split())  # one space between words (str.split and re's \s agree)
    text = _REPEATED_PUNCT.sub(_first_group, text)
    return _SPACE_BEFORE_PUNCT.sub(_first_group, text)


def _first_group(m: re.Match) -> str:
    # A function, not r"\1": a template makes every sub() call go through re's Python helper.
    return m.group(1)


def _drop_fillers(text: str) -> str:
    if not _FILLER_RE.search(text):
        return text
    text = _FILLER_RE.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(_first_group, " ".join(text.split()))
    return _REPEATED_PUNCT.sub(_first_group, text)


@functools.lru_cache(maxsize=1 << 16)
def clean(text: str) -> str:
    """Lower-case, Unicode NFC, one space between words, no edge punctuation or emoji, no
    politeness or filler at the edges. Language-neutral: non-English text is only lower-cased and
    trimmed. Idempotent: clean(clean(x)) == clean(x)."""
    text = _normalise(text)
    for _ in range(64):  # each pass only removes characters, so this converges fast
        new = _strip_edges(text)
        if new.startswith(_POLITE_STARTS):
            new = _POLITE_PREFIX.sub("", new)
        if new.endswith(_POLITE_ENDS) or "\n" in new:  # "$" also matches before a final newline
            new = _POLITE_SUFFIX.sub("", new)
        new = _strip_edges(new).strip()
        if new == text:
            break
        text = new
    again = _normalise(text)
    return text if again == text else clean(again)


# ----------------------------------------------------------------------------------------------
# Noun phrases

IMAGE_WORDS = LEX["image_words"]
_IMAGE_RE = re.compile(rf"^(?:(?:the|this|that|my|your|our|whole|entire|full|overall)\s+)*"
                       rf"{alternation(IMAGE_WORDS)}$")


def is_image(np: str) -> bool:
    """'it', 'the whole picture', 'this photo' …: the whole image, not a thing in it."""
    return bool(_IMAGE_RE.match(np.strip()))


_IRREGULAR_PLURALS = {"man": "men", "woman": "women", "person": "people", "child": "children",
                      "mouse": "mice", "goose": "geese", "tooth": "teeth", "foot": "feet",
                      "leaf": "leaves", "knife": "knives", "wolf": "wolves", "shelf": "shelves",
                      "life": "lives", "wife": "wives", "half": "halves", "loaf": "loaves",
                      "calf": "calves", "thief": "thieves", "scarf": "scarves"}
_SAME_PLURAL = frozenset("sheep fish deer police".split())


def pluralise(noun_phrase: str) -> str:
    """``shape`` -> ``shapes``, ``red box`` -> ``red boxes``, ``woman`` -> ``women``: the head
    (last word) takes the English plural; already-plural phrases are returned unchanged."""
    words = noun_phrase.split()
    if not words or is_plural(noun_phrase) or words[-1] in _SAME_PLURAL:
        return noun_phrase
    head = words[-1]
    if head in _IRREGULAR_PLURALS:
        head = _IRREGULAR_PLURALS[head]
    elif head.endswith(("s", "x", "z", "ch", "sh")):
        head += "es"
    elif head.endswith("y") and len(head) > 1 and head[-2] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head += "s"
    return " ".join(words[:-1] + [head])


_ARTICLE = re.compile(r"^(?:a|an|the|some|this|that|these|those|any|all(?: of)?|every|each|one of the)\s+"
                      r"(?!(?:few|couple|lot|bunch|pair|little|bit|dozen)\b)")
_BARE_DETERMINERS = frozenset("a an the some this that these those any all every each".split())
_TRAILER_IMAGES = [w for w in IMAGE_WORDS if w not in ("it", "this", "that", "one", "thing")]
_IMG_NOUNS = alternation(_TRAILER_IMAGES)
_TRAILER_WORDS = ("out", "off", "away", "again", "entirely", "completely", "altogether", "as well",
                  "please", "now", "instead", "in it", "there", "here", "somewhere", "in there", "in here")
_ENTITY_TRAILERS = re.compile(
    rf"(?:\s+(?:from|in|of|out of|off|on) (?:the |this |my )?(?:whole |entire )?{_IMG_NOUNS}"
    rf"|\s+(?:{'|'.join(_TRAILER_WORDS)}))+$")
# A trailer ends the phrase, so the phrase's last word is a trailer's last word: a set lookup spares
# most runs of the regex.
_TRAILER_LAST_WORDS = frozenset(w.split()[-1] for w in [*_TRAILER_IMAGES, *_TRAILER_WORDS])
_EVERY = re.compile(r"^(?:each and every|every one of the|each one of the|each of the|every single|"
                    r"every|each)\s+(?!other\b|one\b)")
_ALL = re.compile(r"^(?:all|both)(?: of)?(?: the)?\s+")
_POSTURE = re.compile(rf"\s+{alternation(LEX['posture_words'])}(?=\s+(?:on|in|at|by|next|beside|"
                      r"near|under|over|above|behind|in front|inside|to|from|around)\b|$)")
_ALIASES = {**LEX["locator_aliases"], **LEX["phrase_synonyms"]}
_ALIAS_RE = re.compile(rf"\b{alternation(_ALIASES)}\b")
_SIDE_ADJ = re.compile(rf"^{alternation(LEX['side_adjectives'])}\s+(\S.*)$")
_PRONOUNS = LEX["pronouns"]
_POSSESSIVE = re.compile(r"^(his|her|their|its)\s+(\S.*)$")
_EXTRA = re.compile(r"^(\S+)\s+(?:extra|additional|more)\s+")
_ANOTHER = re.compile(r"^(?:another|an extra|an additional|extra|additional)\s+(?=\S)")
_RECIPROCAL = re.compile(r"^(?:each|one) another$|^each other$")
_PREPOSITION = re.compile(r"\b(?:of|in|on|with|from)\b")


def resolve_pronoun(word: str) -> str:
    """'him' → 'man', 'her' → 'woman' (the referent the instruction most likely means when it
    names nobody else); other words unchanged."""
    return _PRONOUNS.get(word, word)


_ING_BEFORE_PLACE = re.compile(r"(?<=\S) ([a-z]+ing)(?= (?:on|in|at|across|over|above|under|through|along|"
                               r"around|into|onto|near|beside|behind|inside|up|down|from)\b|$)")


def _drop_participle(m: re.Match) -> str:
    """Drop a verb's -ing form that is only a verb ('arching', 'hovering'; not 'painting')."""
    pos = parts_of_speech(m.group(1))
    return "" if "VERB" in pos and "NOUN" not in pos else m.group(0)


@functools.lru_cache(maxsize=1 << 16)
def entity(text: str) -> str:
    """Normalise a noun phrase: no leading article/demonstrative, no 'from the picture' tail, no
    posture words ('the cat sitting on the sofa' → 'cat on the sofa'), one spelling of a locator
    ('on the left side' → 'on the left'), numbers as words, pronouns resolved ('him' → 'man',
    'his hat' → "man's hat"). Quantifiers carry no article: 'all the shapes', 'every shape',
    'both shapes' all become 'shapes' (a possessive after every/each is kept, later refused)."""
    text = text.strip()
    if text and text.rsplit(None, 1)[-1] in _TRAILER_LAST_WORDS:
        text = _ENTITY_TRAILERS.sub("", text)
    if _RECIPROCAL.match(text):
        return text  # reciprocal pronouns, not quantified things: refused by valid_entity
    m = _EVERY.match(text)
    if m:
        rest = text[m.end():].strip()
        if not rest or "'" in rest or _PREPOSITION.search(rest):
            return text  # "every man's hat": no safe plural; valid_entity refuses it
        return pluralise(entity(rest))
    text = _ALL.sub("", text)
    prev = None
    while prev != text:
        prev = text
        text = _ARTICLE.sub("", text).strip()
    if text in _BARE_DETERMINERS:
        return ""
    text = _ALIAS_RE.sub(lambda m: _ALIASES[m.group(0)], text)  # one spelling of locators, synonyms
    text = _POSTURE.sub("", text)
    if "ing" in text:  # "a rainbow arching across the sky": how it is there, not what it is
        text = _ING_BEFORE_PLACE.sub(_drop_participle, text)
    m = _SIDE_ADJ.match(text)
    if m and len(m.group(1).split()) <= 2:  # "the left man" -> "man on the left"
        text = f"{m.group(1)} {LEX['side_adjectives'][text.split()[0]]}"
    words = text.split()
    if words:
        words[0] = number_word(words[0])
        text = " ".join(words)
        m = _EXTRA.match(text)
        if m and (m.group(1) in LEX["numbers"] or m.group(1).isdigit()):
            text = f"{m.group(1)} more {text[m.end():]}"
        m = _ANOTHER.match(text)
        if m and not is_plural(text):  # "another chair" = "one more chair"
            text = "one more " + text[m.end():]
    if text in _PRONOUNS and text not in ("his", "hers", "its"):
        return _PRONOUNS[text]
    m = _POSSESSIVE.match(text)
    if m and m.group(1) in _PRONOUNS:
        return f"{_PRONOUNS[m.group(1)]}'s {m.group(2)}"
    return text


_NOUN_WORDS = (LEX["garments"] | LEX["beings"] | LEX["scenes"] | LEX["facial_hair"] | LEX["styles"]
               | frozenset(LEX["materials"]) | frozenset(LEX["pronouns"].values()))
_NOT_ENTITY = frozenset("nothing anything everything none something changes change edits "
                        "modifications it's its".split()) | {"each other", "one another"}
_BAD_LAST_WORD = frozenset("more less very too so much quite really extra even not or and then "
                           "with into look looks seem seems appear appears be feel is are a an the "
                           "to of in on at for from by as was were next instead rather".split())
_NEGATION = re.compile(r"\b(?:not|never|don't|dont|doesn't|no longer|without|neither|nor|n't)\b")
_PUNCT = re.compile(r"[;,.!?:\"()\[\]{}]")
_NOT_IN_NP = re.compile(r"\b(?:is|are|was|were|be|been|should|would|could|will|shall|must|do|does|"
                        r"did|want|like|need|i|you|we|me|please|make|turn|change|and|but|or|then|look|"
                        r"looks|it's|that's|there's|what's|he's|she's|they're|i'd|i'm|let's)\b")
_MODAL_CAN = re.compile(r"\bcan\b(?! *$)")  # "trash can" is a thing, "can be" a modal
_PLACE_START = re.compile(r"(?:the|a|an|his|her|their|its|my|this|that|left|right|top|bottom|"
                          r"background|foreground|middle|centre|center|front|back|corner)\b")
_DETERMINER = re.compile(r"^(?:the|a|an|his|her|their|its|my|this|that)\s+")
_BARE_PLACE = re.compile(r"\b(?:around|across|behind|beside|under|above|near|next to|on|in|at|from|"
                         r"of|with) (?!the\b|a\b|an\b|his\b|her\b|their\b|its\b|my\b|this\b|that\b)\w+$")
_OF_WORD = re.compile(r"\bof \w+$")
_ING_NOUNS = frozenset("king ring wing string building painting clothing ceiling swing spring "
                       "thing morning evening earring sibling darling pudding railing".split())


@functools.lru_cache(maxsize=1 << 16)
def valid_entity(text: str) -> bool:
    """A noun phrase we are willing to carry into a canonical clause. Rejecting here makes the
    clause unparsed, which is always safe: the cleaned input comes back."""
    if not text or len(text) > 80 or _PUNCT.search(text) or text in _NOT_ENTITY \
            or not text[0].isalnum():
        return False
    words = text.split()
    if len(words) > 7 or words[-1] in _BAD_LAST_WORD or _NEGATION.search(text):
        return False
    if len(words) > 1 and any(w in ("it", "this", "that", "i", "you", "we", "there", "he", "she",
                                     "they", "me", "us", "him", "them") for w in words):
        return False
    if words[0] in ("every", "each", "all", "both", "only", "just", "also", "please", "make",
                    "turn", "change", "add", "remove", "replace", "and", "or", "but", "to", "of",
                    "with", "be", "is", "are", "should", "would", "could", "can", "will", "do",
                    "in", "on", "at", "into", "onto", "from", "for", "by", "as", "like", "than",
                    "so", "if", "not", "no", "very", "too", "where", "when", "how", "what", "who",
                    "which", "while", "because", "let", "have", "get", "give", "put"):
        return False
    if _NOT_IN_NP.search(text) or _MODAL_CAN.search(text):  # "trash can" is a thing, "can be" a modal
        return False
    if all(w.isdigit() or w in LEX["numbers"] for w in words):
        return False  # "remove 30": a number alone names nothing
    core, place = (_NP_PREP.split(text, maxsplit=1) + [""])[:2]
    prep = _NP_PREP.search(text)
    if place and prep.group(0).strip() != "of" and not _PLACE_START.match(place):
        return False  # "three by cartoon marble": a place needs its determiner
    place_words = _DETERMINER.sub("", place).split()
    if not all(_np_word(w) for w in core.split() + place_words):
        return False  # grammar or a bare verb inside a noun phrase: "the again dog", "put sketch"
    if _BARE_PLACE.search(text) and not _OF_WORD.search(text):
        return False  # "people around sofa": a place needs its determiner
    last = words[-1]
    pos = parts_of_speech(last.removesuffix("'s"))
    if pos and not pos & {"NOUN", "PROPN", "NUM"} and last not in _NOUN_WORDS and not last.isdigit():
        return False  # "horizontally", "bigger": the phrase must end in a noun
    if parts_of_speech(last) == {"VERB"} and last not in LEX["garments"] and \
            lemma(last, "VERB") != last:
        return False  # "the picture cropped", "the statue made": a verb form, not a noun
    # "-ing" words open a noun phrase only as nouns ("the writing", "the building"), not as verbs.
    return not (words[0].endswith("ing") and words[0] not in _ING_NOUNS
                and "NOUN" not in parts_of_speech(words[0]))


_NP_PREP = re.compile(r"\s+(?:of|on|in|at|with|from|next to|near|by|behind|under|above|around|"
                      r"across|beside|inside|over|below)\s+")
_NP_FUNCTION = frozenset("the a an to by as into onto for from than then again also just only very "
                         "too so such not no any some all every each both either neither who which "
                         "that this these those what where when why how and or but if because while "
                         "until unless i you he she we they me him us them my your our their its "
                         "it's is are was were be been being do does did have has had could "
                         "will would should shall may might must of on in at with his hers".split())
_LEX_VERBS = frozenset(w for ws in LEX["verbs"].values() for w in ws if " " not in w) | frozenset(
    k for t in ("age_verbs", "size_verbs", "state_verbs", "style_verbs", "weather_verbs") for k in LEX[t]
    if " " not in k)


@functools.lru_cache(maxsize=1 << 15)
def _np_word(word: str) -> bool:
    """A word that can stand in a noun phrase: a noun, adjective, number or participle (or a word
    the dictionary does not know: a name)."""
    w = word.removesuffix("'s")
    if not w or w in _NP_FUNCTION or not w[0].isalnum() or w in ("another", "extra", "additional"):
        return False
    if w.isdigit() or w in LEX["numbers"] or w in _NOUN_WORDS:
        return True
    pos = parts_of_speech(w)
    if w in _LEX_VERBS and "NOUN" not in pos:
        return False  # "de-age", "erase": an edit verb, not part of a name
    if "-" in w:
        return True
    if not pos or pos & {"NOUN", "ADJ", "PROPN", "NUM"}:
        return True
    return "VERB" in pos and w.endswith(("ed", "ing", "en"))


def head(np: str) -> str:
    """The head noun: the last word before any prepositional phrase ('man on the left' → 'man')."""
    core = re.split(r"\s+(?:on|in|at|of|with|from|next to|near|by|behind|under|above)\s+", np, maxsplit=1)[0]
    words = core.split()
    return words[-1] if words else ""
