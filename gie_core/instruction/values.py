"""Value classifiers: is this phrase a colour, a material, a style, a season…? Each returns the
canonical value or ``None``. The words come from ``data/lexicon.json``; lemmas from lemminflect."""
from __future__ import annotations

import functools
import re

from .grammar import Edit
from .lexicon import LEX, alternation, lemma, number_value, parts_of_speech, verb_lemma, words_of
from .text import entity, is_image, valid_entity

COLOURS = LEX["colours"]
_COLOUR_ALIASES = LEX["colour_aliases"]
_COLOUR_WORD = alternation(COLOURS | {"gray", "blond", "blonde"})
_COLOUR_RE = re.compile(rf"^(?:{alternation(LEX['colour_modifiers'])} )?{_COLOUR_WORD}"
                        rf"(?:(?: and |-|/| or ){_COLOUR_WORD})?$")
_LOOK = re.compile(r"^(?:(?:look|looks|appear|seem|be|feel|become|get|grow)\s+)?(?:like\s+)?"
                   r"(?:(?:it's|it is|it was|it were|its|they're|they are|there's|there is|there are|"
                   r"he's|she's|he is|she is|"
                   r"this is|this was|everything is|we're|we are)\s+)?"
                   r"(?:(?:be|look|made)\s+)?"
                   # "taken at night", "set on the moon", "take place on mars": where/when it is
                   r"(?:(?:(?:taken|shot|photographed|captured|filmed|set|located|situated)\s+"
                   r"|(?:take|takes|taking|took) place\s+|(?:happen|happens|happening)\s+)"
                   r"(?=(?:in|at|on|during|under|inside|underwater)\b))?")


@functools.lru_cache(maxsize=1 << 16)
def strip_look(v: str) -> str:
    """'look like it's snowing' → 'snowing'; 'be red' → 'red'."""
    prev = None
    while prev != v:
        prev = v
        v = _LOOK.sub("", v.strip(), count=1).strip()
    return v


_DEGREE_SLIGHT = re.compile(rf"^{alternation(LEX['degrees']['slightly'])}\s+|\s+{alternation(LEX['degrees']['slightly'])}$")
_DEGREE_PLAIN = re.compile(rf"^{alternation(LEX['degrees'][''])}\s+|\s+{alternation(LEX['degrees'][''])}$")


def degree(v: str) -> tuple[str, str]:
    """Split an intensity off a value: ('slightly', 'brighter') for 'a little brighter', ('',
    'brighter') for 'much brighter' or 'brighter'. Two levels only: a slight change is its own
    edit; 'much'/'a lot' are the plain edit (README of the blind benchmark: 'a little' and 'a lot'
    differ; 'a lot brighter' and 'brighter' are one request for a brighter image)."""
    v = v.strip()
    if v in LEX["degrees"]["slightly"]:
        return "slightly", ""
    if v in LEX["degrees"][""]:
        return "", ""
    out = ""
    for _ in range(3):
        m = _DEGREE_SLIGHT.search(v)
        if m:
            out = "slightly"
            v = (v[:m.start()] + v[m.end():]).strip()
            continue
        m = _DEGREE_PLAIN.search(v)
        if m:
            v = (v[:m.start()] + v[m.end():]).strip()
            continue
        break
    return out, v


_COLOUR_HEAD = re.compile(r"^(?:in |to |into |painted |coloured |colored |a |the |all )+")
_COLOUR_TAIL = re.compile(r"\s+(?:colou?r(?:ed)?|tone|shade|paint|one)$")


def colour_value(v: str) -> str | None:
    v = _COLOUR_HEAD.sub("", v.strip())
    v = _COLOUR_TAIL.sub("", v)
    if _COLOUR_RE.match(v):
        return " ".join(_COLOUR_ALIASES.get(w, w) for w in v.replace("blond ", "blonde ").split())
    return None


_MATERIAL_HEAD = re.compile(r"^(?:(?:made|built|carved|sculpted|crafted|constructed|cast)\s+)?"
                            r"(?:entirely |completely |all |wholly )?(?:out\s+)?(?:of|from|in)\s+")
_MATERIAL_TAIL = re.compile(r"\s+(?:material|texture|version|one)$")
_SOLID = re.compile(r"^(?:solid|pure|real|shiny|polished) ")


def material_value(v: str) -> str | None:
    v = _SOLID.sub("", v.strip())
    v = strip_look(v.strip())
    v = _MATERIAL_HEAD.sub("", v)
    v = entity(v)
    v = _SOLID.sub("", v)
    v = _MATERIAL_TAIL.sub("", v)
    if v in LEX["materials"]:
        return LEX["materials"][v]
    lem = " ".join(v.split()[:-1] + [lemma(v.split()[-1], "NOUN")]) if v else v
    return LEX["materials"].get(lem)


_EXPRESSION_VERB = re.compile(r"^(?:with |have |has |wear |wearing |show |showing |making |make )")
_ARTICLE_HEAD = re.compile(r"^(?:an? |the )")
_FACE_TAIL = re.compile(r"\s+(?:on (?:his|her|their|its) face|face)$")
_EXPRESSION_TAIL = re.compile(rf"^(?:an? |the )?(?:(\S+) )?{alternation(LEX['expression_words'])}"
                              r"(?: on (?:his|her|their|its) face)?$")


def expression_value(v: str) -> str | None:
    v = strip_look(v.strip())
    v = _EXPRESSION_VERB.sub("", v)
    m = _EXPRESSION_TAIL.match(v)
    if m:
        v = m.group(1) or ""
    v = _ARTICLE_HEAD.sub("", v.strip())
    v = _FACE_TAIL.sub("", v)
    if v in LEX["expression_synonyms"]:
        v = LEX["expression_synonyms"][v]
    if v in LEX["expression_verbs"]:
        return LEX["expression_verbs"][v]
    if v in LEX["expression_adjectives"]:
        return "angry" if v == "mad" else v
    if " " not in v and verb_lemma(v) in LEX["expression_verbs"] and v.endswith("s"):
        return LEX["expression_verbs"][verb_lemma(v)]  # "so he winks"
    if v in LEX["expression_nouns"]:
        return LEX["expression_nouns"][v]
    return None


_AGE_TAIL = re.compile(r"\s+(?:again|now|than (?:he|she|they) (?:is|are))$")
_YEARS = re.compile(r"^(?:by\s+)?(\S+)\s+years?(?:\s+(older|younger))?$")


def age_value(v: str) -> str | None:
    """'older', 'look younger', 'a bit older' → 'slightly older', 'ten years older', '10 years
    older' → 'ten years older'."""
    v = strip_look(v.strip())
    v = _AGE_TAIL.sub("", v)
    deg, v = degree(v)
    m = _YEARS.match(v)
    if m and m.group(2):
        n = number_value(m.group(1))
        return f"{words_of(n)} years {m.group(2)}" if n and 0 < n < 120 else None
    out = LEX["age"].get(v)
    if out is None and not deg:
        return numeric_age(v, bare=False)
    return (f"{deg} {out}" if deg else out) if out else None


_AGE_NUMBER = re.compile(r"^(?:to |at |aged? |at age |at the age of |about |around )*(?P<n>\d{1,3}|[a-z]+(?:[ -][a-z]+)?)"
                         r"(?P<unit>\s*(?:years?|yrs?)(?:[ -]old)?|[ -]year[ -]old|\s*yo|\s*y/o)?$")


def numeric_age(v: str, bare: bool = True) -> str | None:
    """'80 years old' / 'eighty' / 'to 80' → 'eighty years old'. A bare number counts only where
    the clause is already about age (``bare``: 'age him to 80', 'him at 80')."""
    m = _AGE_NUMBER.match(v.strip())
    if not m or not (bare or m.group("unit")):
        return None
    n = number_value(m.group("n"))
    return f"{words_of(n)} years old" if n and 0 < n < 120 else None


_GROWN = re.compile(r"^(?:grown|adult|full-grown|fully grown|grown-up|grown up|old|elderly|older) [a-z]+$")
_AGAIN = re.compile(r"\s+(?:again|once more|now|once again)$")
_AN_AGE = re.compile(r"^(?:an? |the |look like an? |like an? |into an? |be an? )")


def age_noun_value(v: str) -> str | None:
    """'a child' / 'kid' → 'a child', 'an old man' → 'older': what a person is turned into by age."""
    v = _AGAIN.sub("", strip_look(v.strip()))
    v = _AN_AGE.sub("", v)
    got = LEX["age_nouns"].get(v) or numeric_age(v, bare=False)  # "an 80-year-old"
    if got is None and _GROWN.match(v):
        return "older"  # "a grown dog", "an adult cat"
    return got


_BE_HEAD = re.compile(r"^(?:be\s+)")
_SIZE_TAIL = re.compile(r"\s+(?:in size|than (?:it is|before|now))$")
_BIG = re.compile(r"^(?:more )?(?:big|large)$")


def size_value(v: str) -> str | None:
    """'bigger' / 'look larger' / 'a lot smaller' → 'bigger' / 'smaller'; 'a bit bigger' →
    'slightly bigger'."""
    v = strip_look(v.strip())
    v = _BE_HEAD.sub("", v)
    v = _SIZE_TAIL.sub("", v)
    deg, v = degree(v)
    v = _BIG.sub("bigger", v)
    out = LEX["size"].get(v)
    if out is None or v in ("big", "small", "tall", "large"):
        # A plain adjective ("make the dog big") states a size, not a change of size; only the
        # comparative, or a size far from any ("huge", "tiny"), is a size edit.
        return None
    return f"{deg} {out}" if deg else out


_HAIR_TAIL = re.compile(rf"\s*\b{alternation(LEX['hair_words'])}(?:\s+(?:colou?r|style|cut))?$")


def hair_value(v: str) -> str | None:
    v = entity(v.strip())
    v = re.sub(r"^(?:with |to |into |have |be |dyed |coloured |colored )", "", v)
    v = _HAIR_TAIL.sub("", v)
    v = entity(v)
    v = " ".join(LEX["hair_comparatives"].get(w, w) for w in v.split())  # "longer hair" is long hair
    if not v or len(v.split()) > 4 or not re.fullmatch(r"[\w' -]+", v):
        return None
    v = " ".join(_COLOUR_ALIASES.get(w, w) for w in v.split())
    if colour_value(v) or v in LEX["hair_colours"] or v in LEX["hair_styles"] or \
            v.replace("blond ", "blonde ") in LEX["hair_colours"]:
        return colour_value(v) or v
    if all(w in LEX["hair_styles"] or w in LEX["hair_colours"] or colour_value(w) for w in v.split()):
        return v
    return None


def person_hair_value(v: str) -> str | None:
    """Adjectives that describe a person by their hair: 'blonde', 'a redhead', 'bald'."""
    v = _A_HEAD.sub("", strip_look(v))
    return LEX["person_hair_adjectives"].get(v)


# ----------------------------------------------------------------------------------------------
# Whole-image values: season, weather, time of day, style

_A_HEAD = re.compile(r"^(?:an? )")
_GLOBAL_PREP = re.compile(r"^(?:in|into|to|at|during|on|for|as)\s+")
_GLOBAL_TAIL = re.compile(r"(?<=\S)\s+(?:scene|setting|season|weather|time|vibe|vibes|mood|atmosphere|"
                          r"look|theme|landscape|version|image|photo|picture|pic|shot|photograph|day|"
                          r"conditions|lighting|light|effect|feel|sky)$")
_GLOBAL_ADJ = re.compile(r"^(?:(?:a|an|the)\s+)?(?:very|really|nice|beautiful|heavy|light|bright|full|"
                         r"late|early|typical|cold|warm|hot|dark|gloomy|quiet)\s+(?=\S)")


def global_value(v: str) -> str:
    v = strip_look(v)
    v = _GLOBAL_PREP.sub("", v)
    v = entity(v)
    v = _A_HEAD.sub("", v)
    v = _GLOBAL_TAIL.sub("", v)
    v = _GLOBAL_ADJ.sub("", v) if v.split() and len(v.split()) > 1 else v
    return v.strip()


_LOCATIVE = re.compile(r"^(?:on|onto|to|in|into|at|inside)\s+(.+)$")


def setting_value(raw: str) -> Edit | None:
    """Where the whole scene is: 'on the moon' → a new background; 'underwater' → the scene's
    state. A place needs its preposition ('on the moon', 'in a forest'); a bare 'moon' is a
    thing, not a setting."""
    v = strip_look(raw.strip())
    v = LEX["state_synonyms"].get(v, v)
    if v in LEX["scene_states"]:
        return Edit("state", target="scene", value=v)
    m = _LOCATIVE.match(v)
    if not m:
        return None
    place = entity(m.group(1))
    if place in LEX["settings"]:
        return Edit("background", value=LEX["settings"][place])
    if place in LEX["scenes"] and valid_entity(place):
        return Edit("background", value=background_value(place))
    return None


def classify_global(raw: str) -> Edit | None:
    """A whole-image change: season, weather, time of day or style."""
    v = global_value(raw)
    if v in LEX["seasons"]:
        return Edit("season", value=LEX["seasons"][v])
    if v in LEX["weather"]:
        return Edit("weather", value=LEX["weather"][v])
    if v in LEX["times"]:
        return Edit("time", value=LEX["times"][v])
    place = setting_value(raw)
    if place is not None:
        return place
    style = style_value(raw)
    if style is not None:
        return Edit("style", value=style)
    return None


_STYLE_INDICATORS = re.compile(rf"\b{alternation(LEX['style_indicators'])}\b")
_STYLE_FILLERS = re.compile(rf"\b{alternation(LEX['style_fillers'])}\s+")
_STYLE_OF = re.compile(r"^(?:(?:the|an?) )?(?:style|manner|look|aesthetic|art style) of (.+)$")
_WORK_BY = re.compile(r"^(?:an? |the )?(?:painting|drawing|picture|artwork|work|sketch|piece)s? "
                      r"(?:by|from|of) (.+)$")
_STYLE_TAIL = re.compile(r"\s+(?:style|styled|aesthetic|look|version|filter|effect|vibe|vibes|"
                         r"rendering|render|inspired|type|theme|themed|feel)$")
# "pixel art from an old video game", "andy warhol style pop art": where a style comes from
_STYLE_ORIGIN = re.compile(r"\s+(?:from|in|of) (?:an?|the) (?:old |classic |retro |vintage )?"
                           r"(?:video game|game|movie|film|cartoon|comic|arcade game)s?$")
_STYLE_NAMED = re.compile(r"^.+? style (?=\S)")
_IMAGE_TAIL = re.compile(r"(?<=\S)\s+(?:photo|image|picture|photograph|pic|shot|still|movie|film|"
                         r"animation|frame|scene)$")
_STYLE_PREP = re.compile(r"^(?:in|into|to|as|like|on)\s+")
_STYLE_SOURCE = re.compile(r"^(?:(?:it's|it is|it was) )?(?:straight )?(?:out of|from) (?=an? |the )")
_STYLE_STILL = re.compile(r"^(?:an? |the )?(?:still|frame|scene|shot|screenshot|screengrab) (?:from|of|out of) ")
_STYLE_COMPOUND = re.compile(r"^([a-z0-9' ]+?)-(?:style|styled|inspired) .+$")
_STYLE_SUFFIX = re.compile(r"-(?:style|styled|inspired|like|esque)$|'s$")
_NOT_IN_STYLE = re.compile(r"\b(?:make|change|turn|add|remove|replace|apply|use|give|put|set|convert|"
                           r"filter|effect|render|redo|as|it|this|and|or|of|with|to|the|a|an|flip|"
                           r"rotate|zoom|crop|blur|sharpen|invert|horizontally|vertically|degrees)\b")
_STYLE_CHARS = re.compile(r"[a-z0-9][a-z0-9' -]*")
# "painted in watercolour", "hand-sketched in pencil", "drawn by van gogh": the medium or artist.
_MADE_IN = re.compile(r"^(?:(?:it|this) (?:was |is |were )?)?(?:hand[- ])?(?:painted|drawn|sketched|done|"
                      r"rendered|created|made|illustrated|animated) (?:in|with|using|by|from) ")


@functools.lru_cache(maxsize=1 << 14)
def style_value(raw: str) -> str | None:
    """The style name of a phrase ('in the style of Van Gogh' → 'van gogh'; 'a watercolour' →
    'watercolor painting'), or ``None`` when it names no style."""
    v = strip_look(raw.strip())
    v = _STYLE_PREP.sub("", v)
    v = _STYLE_SOURCE.sub("", v)
    v = _STYLE_STILL.sub("", v)
    v = _STYLE_COMPOUND.sub(r"\1", v)  # "pixar-style 3d animation"
    v = _STYLE_ORIGIN.sub("", v)
    rest = _STYLE_NAMED.sub("", v)
    if rest != v and (rest in LEX["styles"] or rest in LEX["style_synonyms"]):
        v = rest  # "andy warhol style pop art" is pop art
    v = _MADE_IN.sub("", v)
    explicit = False
    for _ in range(2):
        if v in LEX["style_synonyms"] or v in LEX["styles"]:
            break  # "old film" is a known look before "film" is dropped as a medium word
        m = _STYLE_OF.match(v) or _WORK_BY.match(v)
        if m:
            v, explicit = m.group(1), True
        v = entity(v)
        v = _STYLE_FILLERS.sub("", v)
        v = _A_HEAD.sub("", v)
        while True:
            new = _STYLE_TAIL.sub("", v)
            if new == v:
                break
            v, explicit = new, True
        v = _STYLE_SUFFIX.sub("", v)
        v = _IMAGE_TAIL.sub("", v)
    if not v or len(v) > 60:
        return None
    known = v in LEX["styles"] or v in LEX["style_synonyms"]
    v = LEX["style_synonyms"].get(v, v)
    words = v.split()
    # "a van gogh painting" -> the painter's style; "an oil painting" stays a medium.
    if len(words) >= 2 and words[-1] == "painting" and words[-2] not in LEX["paint_media"]:
        v = " ".join(words[:-1])
        v = LEX["style_synonyms"].get(v, v)
    words = v.split()
    countable = words and words[-1] in LEX["style_nouns"] and len(words) <= 4
    if explicit or known or v in LEX["styles"] or countable or _STYLE_INDICATORS.search(raw):
        if _NOT_IN_STYLE.search(v) \
                and v not in LEX["styles"] and v not in LEX["style_bare"]:
            return None  # a verb, a filter word or grammar left inside: not a style name
        if not _STYLE_CHARS.fullmatch(v) or v in LEX["colours"] or is_image(v):
            return None
        if not known and v not in LEX["styles"] and not _plausible_name(v):
            return None
        return v
    return None


_NOT_IN_NAMES = frozenset("then can be is are was style styled and or but not no so if when where "
                          "please make change turn add remove replace look like more less very "
                          "too also just it this that there here".split())


def _plausible_name(v: str) -> bool:
    """A style name of at most four words, none of them grammar ('then', 'be', 'style' …)."""
    from .text import _np_word
    words = v.split()
    return 0 < len(words) <= 4 and not any(w in _NOT_IN_NAMES or "'" in w or not _np_word(w)
                                           or len(w) < 2 for w in words)


_BACKGROUND_HEAD = re.compile(r"^(?:to|into|with|for|as|be|a|an|the)\s+")
_BACKGROUND_FILLER = re.compile(rf"^{alternation(LEX['background_fillers'])}\s+")
_BACKGROUND_TAIL = re.compile(r"\s+(?:background|backdrop|colou?r|scene|setting|one)$")


def background_value(v: str) -> str | None:
    v = _BACKGROUND_HEAD.sub("", v.strip())
    v = entity(v)
    v = _BACKGROUND_FILLER.sub("", v)
    v = _BACKGROUND_TAIL.sub("", v)
    v = entity(v)
    if v in LEX["settings"]:  # "the moon", "mars": named places keep their own form
        return LEX["settings"][v]
    v = LEX["background_synonyms"].get(v, v)  # "a mountain background" shows mountains
    c = colour_value(v)
    if c is not None:
        return c
    if not valid_entity(v) or re.search(r"\b(?:make|change|add|remove|it|this)\b", v):
        return None
    return v


def is_background(np: str) -> bool:
    return entity(np) in LEX["background_words"]


def is_adjective(word: str) -> bool:
    return "ADJ" in parts_of_speech(word) or word in LEX["state_adjectives"]


# States whose canonical clause has its own shape ("set the house on fire").
MULTIWORD_STATES = frozenset({"on fire"})


_COMPLETELY = re.compile(r"^(?:all |completely |totally |fully |entirely )")


def state_value(v: str, strict: bool = False) -> str | None:
    """An adjective for the generic ``state`` family ('flooded', 'post-apocalyptic'). ``strict``
    (captions like 'flooded street') accepts only the lexicon's state adjectives."""
    v = strip_look(v.strip())
    v = _COMPLETELY.sub("", v)
    v = LEX["state_synonyms"].get(v, v)
    if v in MULTIWORD_STATES:
        return v
    if v in LEX["opinion_adjectives"]:
        return None  # "the beige is boring" judges the picture, it asks for nothing
    if v in LEX["state_adjectives"]:
        return v if " " not in v else None  # the canonical shape takes one word ("flooded")
    if strict or len(v.split()) != 1 or not re.fullmatch(r"[a-z][a-z-]+", v):
        return None
    pos = parts_of_speech(v)
    if "ADJ" in pos and "NOUN" not in pos and not v.endswith(("er", "est")) and v not in (
            "more", "less", "other", "same", "different", "new", "own", "such", "only",
            "good", "better", "bad", "worse", "nice", "great", "beautiful", "pretty", "ugly",
            "prettier", "real", "realistic", "possible", "certain", "sure", "able"):
        return v
    return None
