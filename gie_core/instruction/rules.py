"""The offline ``rules`` backend: clean the text, split it into clauses, parse each clause into an
:class:`~gie_core.instruction.grammar.Edit` with a small set of verb patterns and vocabularies.

Nothing here guesses: a clause that no pattern accepts makes the whole parse fail, and the caller
then returns the cleaned input unchanged.
"""
from __future__ import annotations

import functools
import re
import unicodedata

from .grammar import COLOURS, Edit, is_plural

# ----------------------------------------------------------------------------------------------
# Cleaning (idempotent: clean(clean(x)) == clean(x))

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u201c": '"',
                         "\u201d": '"', "\u2013": "-", "\u2014": "-", "\u00a0": " "})
_WS = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,;:.!?。、，！？])")
_REPEATED_PUNCT = re.compile(r"([,;:.!?])[,;:.!?]+")
_POLITE_PREFIX = re.compile(
    r"^(?:please|pls|plz|kindly|could you|can you|would you|will you|could u|can u|would you mind|"
    r"i want you to|i'd like you to|i would like you to|i need you to|i'd love you to|"
    r"i want to|i'd like to|i would like to|let's|lets|go ahead and|try to|just|also|then|and|now|"
    r"so|ok|okay|hey|hi|hello|help me|you should|we should|maybe|perhaps|"
    r"i wonder if you could|would it be possible to|is it possible to)\b[\s,]*"
)
_POLITE_SUFFIX = re.compile(
    r"[\s,]*\b(?:please|pls|plz|thanks|thank you|thx|for me|if possible|if you can|if you could|"
    r"as well|too)$"
)
_EDGE_PUNCT = "\"'.,;:!?()[]{}…。、，！？ "


def _strip_edges(text: str) -> str:
    # Keep a trailing/leading apostrophe only when it is part of a word (e.g. "dogs'") - rare; the
    # quote characters we strip here are sentence punctuation in practice.
    while text and (text[0] in _EDGE_PUNCT or unicodedata.category(text[0]).startswith("P")):
        text = text[1:]
    while text and (text[-1] in _EDGE_PUNCT or unicodedata.category(text[-1]).startswith("P")):
        text = text[:-1]
    return text


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(_QUOTES).lower()
    text = _WS.sub(" ", text).strip()
    text = _REPEATED_PUNCT.sub(r"\1", text)
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


@functools.lru_cache(maxsize=1 << 16)
def clean(text: str) -> str:
    """Lower-case, Unicode NFC, one space between words, no edge punctuation, no politeness or
    filler at the edges. Language-neutral: non-English text is only lower-cased and trimmed.
    Idempotent: clean(clean(x)) == clean(x)."""
    text = _normalise(text)
    for _ in range(64):  # each pass only removes characters, so this converges fast
        new = _strip_edges(text)
        new = _POLITE_PREFIX.sub("", new)
        new = _POLITE_SUFFIX.sub("", new)
        new = _strip_edges(new).strip()
        if new == text:
            break
        text = new
    # Removing words can join punctuation ("a , b" cannot occur after _normalise, but "x ,, y"
    # can appear once a filler between commas is gone): normalise again until stable.
    again = _normalise(text)
    return text if again == text else clean(again)


# ----------------------------------------------------------------------------------------------
# Vocabularies

_IMAGE_WORDS = (r"(?:it|this|that|everything|the (?:whole |entire )?(?:image|photo|photograph|"
                r"picture|pic|scene|shot|frame|thing|setting)|this (?:image|photo|picture|pic|scene|"
                r"one)|the whole thing)")
_IMAGE_RE = re.compile(rf"^{_IMAGE_WORDS}$")

SEASONS = {"winter": "winter", "wintry": "winter", "wintery": "winter", "wintertime": "winter",
           "winter time": "winter", "summer": "summer", "summertime": "summer", "summery": "summer",
           "summer time": "summer", "spring": "spring", "springtime": "spring",
           "spring time": "spring", "autumn": "autumn", "fall": "autumn", "autumnal": "autumn",
           "autumn time": "autumn"}
WEATHER = {"snowy": "snowy", "snow": "snowy", "snowing": "snowy", "snowfall": "snowy",
           "rainy": "rainy", "rain": "rainy", "raining": "rainy", "rainfall": "rainy",
           "foggy": "foggy", "fog": "foggy", "misty": "misty", "mist": "misty",
           "sunny": "sunny", "sunshine": "sunny", "cloudy": "cloudy", "overcast": "cloudy",
           "stormy": "stormy", "storm": "stormy", "thunderstorm": "stormy", "windy": "windy",
           "hazy": "hazy", "haze": "hazy", "blizzard": "blizzard", "hail": "hail"}
# What "add <X>" with no place turns into a weather change.
_WEATHER_NOUNS = {"rain", "snow", "fog", "mist", "snowfall", "rainfall", "storm", "haze",
                  "a storm", "a blizzard", "blizzard"}
TIMES = {"night": "night", "nighttime": "night", "night time": "night", "night-time": "night",
         "midnight": "midnight", "day": "day", "daytime": "day", "day time": "day",
         "daylight": "day", "sunset": "sunset", "sundown": "sunset", "sunrise": "sunrise",
         "dawn": "dawn", "dusk": "dusk", "twilight": "twilight", "morning": "morning",
         "evening": "evening", "noon": "noon", "midday": "noon", "afternoon": "afternoon",
         "golden hour": "golden hour", "blue hour": "blue hour"}
_EXPRESSION_VERBS = {"smile": "smiling", "laugh": "laughing", "cry": "crying", "frown": "frowning",
                     "grin": "grinning", "wink": "winking", "scream": "screaming",
                     "shout": "shouting", "pout": "pouting", "yawn": "yawning"}
_EXPRESSION_ADJ = frozenset(
    "happy sad angry surprised scared afraid frightened serious neutral shocked disgusted confused "
    "excited bored worried grumpy calm cheerful joyful upset furious annoyed nervous sleepy tired "
    "smiling laughing crying frowning grinning winking screaming shouting pouting yawning "
    "sorrowful gloomy thoughtful pensive".split()
)
_EXPRESSION_NOUNS = {"smile": "smiling", "frown": "frowning", "grin": "grinning",
                     "laugh": "laughing", "wink": "winking"}
_AGE = {"older": "older", "old": "older", "elderly": "older", "aged": "older", "younger": "younger",
        "young": "younger", "youthful": "younger"}
MATERIALS = {"wood": "wood", "wooden": "wood", "gold": "gold", "golden": "gold", "silver": "silver",
             "glass": "glass", "metal": "metal", "metallic": "metal", "steel": "steel",
             "iron": "iron", "stone": "stone", "marble": "marble", "plastic": "plastic",
             "paper": "paper", "ice": "ice", "clay": "clay", "bronze": "bronze", "copper": "copper",
             "concrete": "concrete", "brick": "brick", "crystal": "crystal", "diamond": "diamond",
             "rubber": "rubber", "leather": "leather", "chocolate": "chocolate", "lego": "lego",
             "porcelain": "porcelain", "ceramic": "ceramic", "cardboard": "cardboard",
             "fabric": "fabric", "wool": "wool", "velvet": "velvet", "denim": "denim",
             "chrome": "chrome", "jade": "jade", "granite": "granite", "bamboo": "bamboo"}
_COLOUR_ALIASES = {"gray": "grey", "blond": "blonde", "colour": "color"}
_COLOUR_MODIFIERS = r"(?:light|dark|bright|pale|deep|pastel|neon|hot|sky|baby|royal|navy|lime|" \
                    r"forest|blood|jet|pure|vivid|soft)"
_COLOUR_WORD = r"(?:" + "|".join(sorted(COLOURS | {"gray"}, key=len, reverse=True)) + r")"
_COLOUR_RE = re.compile(rf"^(?:{_COLOUR_MODIFIERS} )?{_COLOUR_WORD}(?:(?: and |-|/){_COLOUR_WORD})?$")

GARMENTS = frozenset(
    "hat cap beanie helmet crown tiara suit tuxedo jacket coat blazer dress gown shirt t-shirt "
    "tshirt blouse sweater jumper hoodie cardigan vest scarf tie bowtie glasses sunglasses goggles "
    "gloves mittens boots shoes sneakers sandals heels skirt jeans trousers pants shorts uniform "
    "costume kimono robe cape cloak armor armour bikini swimsuit necklace earrings mask apron "
    "turban veil headband bandana overalls pajamas pyjamas outfit clothes raincoat poncho".split()
)
_BEINGS = frozenset(
    "man woman girl boy person child kid baby lady guy gentleman people men women children kids "
    "dog cat puppy kitten horse bear him her them he she they teenager student bride groom "
    "king queen soldier player model subject".split()
)
_SCENES = frozenset(
    "beach city forest mountains mountain desert ocean sea space studio jungle park street field "
    "meadow lake river waterfall castle sky skyline garden snowfield countryside village "
    "cityscape galaxy island library office room kitchen stage".split()
)

# Styles recognised in "make it <X>" even without a style word.
_STYLE_WORDS = frozenset(
    {"anime", "manga", "cartoon", "comic", "comic book", "pixel art", "pop art", "impressionist",
     "impressionism", "cubist", "cubism", "surrealist", "surrealism", "pointillist", "cyberpunk",
     "steampunk", "vaporwave", "synthwave", "low poly", "3d render", "claymation", "ukiyo-e",
     "ghibli", "studio ghibli", "black and white", "sepia", "grayscale", "greyscale", "monochrome",
     "vintage", "retro", "noir", "film noir", "photorealistic", "realistic", "watercolor",
     "watercolour", "oil painting", "pencil sketch", "charcoal sketch", "sketch", "mosaic",
     "stained glass", "art deco", "art nouveau", "baroque", "renaissance", "gothic", "minimalist",
     "abstract", "expressionist", "psychedelic", "graffiti", "origami", "disney", "pixar",
     "lego", "line art", "ink drawing", "pastel", "gouache", "acrylic painting", "woodcut",
     "3d", "8-bit", "16-bit", "hdr", "polaroid", "vhs"}
)
_STYLE_INDICATORS = re.compile(
    r"\b(?:style|painting|drawing|sketch|art|artwork|render|rendering|illustration|cartoon|"
    r"anime|comic|poster|mosaic|engraving|etching|woodcut|aesthetic)\b"
)
_PAINT_MEDIA = frozenset({"oil", "watercolor", "watercolour", "acrylic", "gouache", "ink", "tempera",
                          "digital", "abstract", "impressionist", "expressionist", "realistic"})
_STYLE_SYNONYMS = {"watercolour": "watercolor", "watercolor": "watercolor painting",
                   "watercolour painting": "watercolor painting", "oil": "oil painting",
                   "pencil drawing": "pencil sketch", "charcoal drawing": "charcoal sketch",
                   "comic book": "comic", "greyscale": "black and white",
                   "grayscale": "black and white", "gray scale": "black and white",
                   "grey scale": "black and white", "outline sketch": "line drawing",
                   "outline drawing": "line drawing", "black & white": "black and white",
                   "b&w": "black and white", "studio ghibli": "ghibli", "manga": "manga",
                   "cartoons": "cartoon", "acrylic": "acrylic painting", "gouache": "gouache painting"}

_ARTICLE = re.compile(r"^(?:a|an|the|some|this|that|these|those|any|all(?: of)?|every|each)\s+"
                      r"(?!(?:few|couple|lot|bunch|pair|little|bit)\b)")
_BARE_DETERMINERS = frozenset("a an the some this that these those any all every each".split())
_ENTITY_TRAILERS = re.compile(
    r"(?:\s+(?:from|in|of|out of|off) (?:the |this )?(?:picture|image|photo|photograph|pic|scene|"
    r"shot|frame)|\s+(?:out|off|away|again|entirely|completely|altogether|as well))+$"
)


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


# "every shape" / "each shape" mean all the shapes: the entity becomes the plural ("shapes").
_EVERY = re.compile(r"^(?:each and every|every one of the|each one of the|each of the|every single|"
                    r"every|each)\s+(?!other\b|one\b)")
_ALL = re.compile(r"^(?:all|both)(?: of)?(?: the)?\s+")


def entity(text: str) -> str:
    """Normalise a noun phrase: no leading article/demonstrative, no 'from the picture' tail.
    Quantifiers carry no article: 'all the shapes', 'every shape', 'each shape' and 'both
    shapes' all become 'shapes' (a possessive after every/each is kept and later refused)."""
    text = _ENTITY_TRAILERS.sub("", text.strip())
    if re.match(r"^(?:each|one) another$|^each other$", text):
        return text  # reciprocal pronouns, not quantified things: refused by _valid_entity
    m = _EVERY.match(text)
    if m:
        rest = text[m.end():].strip()
        if not rest or "'" in rest or re.search(r"\b(?:of|in|on|with|from)\b", rest):
            return text  # "every man's hat": no safe plural; _valid_entity refuses it
        return pluralise(entity(rest))
    text = _ALL.sub("", text)
    prev = None
    while prev != text:
        prev = text
        text = _ARTICLE.sub("", text).strip()
    return "" if text in _BARE_DETERMINERS else text


_NOT_ENTITY = frozenset("nothing anything everything none something changes change edits "
                        "modifications".split()) | {"each other", "one another"}
_BAD_LAST_WORD = frozenset("more less very too so much quite really extra even not or and then "
                           "with into look looks seem seems appear appears be feel is are".split())
_NEGATION = re.compile(r"\b(?:not|never|don't|dont|doesn't|no longer|without|neither|nor)\b")


def _valid_entity(text: str) -> bool:
    """A noun phrase we are willing to carry into a canonical clause. Rejecting here makes the
    clause unparsed, which is always safe: the cleaned input comes back."""
    if not text or len(text) > 200 or re.search(r"[;,]", text) or text in _NOT_ENTITY:
        return False
    words = text.split()
    if words[-1] in _BAD_LAST_WORD or _NEGATION.search(text):
        return False
    if len(words) > 1 and words[0] in ("it", "this", "that", "i", "you", "we"):
        return False
    if words[0] in ("every", "each", "all", "both", "only"):
        return False  # a quantifier that entity() could not normalise
    return not (words[0].endswith("ing") and words[0] not in ("king", "ring", "wing", "string",
                                                              "building", "painting", "clothing",
                                                              "ceiling", "swing", "spring"))


# ----------------------------------------------------------------------------------------------
# Value classifiers

def _strip_look(v: str) -> str:
    v = re.sub(r"^(?:look|looks|appear|seem|be|feel)\s+", "", v)
    v = re.sub(r"^like\s+", "", v)
    v = re.sub(r"^(?:it's|it is|it was|its)\s+", "", v)
    v = re.sub(r"^(?:be|look)\s+", "", v)
    return v.strip()


def _global_value(v: str) -> str:
    v = _strip_look(v)
    v = re.sub(r"^(?:in|into|to|at|during|on|for)\s+", "", v)
    v = entity(v)
    v = re.sub(r"(?<=\S)\s+(?:scene|setting|season|weather|time|vibe|mood|atmosphere|look|theme|"
               r"landscape|version|image|photo|picture|day)$", "", v)
    return v.strip()


def classify_global(raw: str) -> Edit | None:
    """A whole-image change: season, weather, time of day or style."""
    v = _global_value(raw)
    if v in SEASONS:
        return Edit("season", value=SEASONS[v])
    if v in WEATHER:
        return Edit("weather", value=WEATHER[v])
    if v in TIMES:
        return Edit("time", value=TIMES[v])
    style = classify_style(raw)
    if style is not None:
        return Edit("style", value=style)
    return None


def classify_style(raw: str) -> str | None:
    v = _strip_look(raw.strip())
    v = re.sub(r"^(?:in|into|to)\s+", "", v)
    explicit = False
    m = re.match(r"^(?:the |an? )?style of (.+)$", v)
    if m:
        v, explicit = m.group(1), True
    m = re.match(r"^(?:an? |the )?(?:painting|drawing|picture|artwork|work|sketch)s? (?:by|from) (.+)$", v)
    if m:
        v, explicit = m.group(1), True
    v = entity(v)
    v = re.sub(r"\s+(?:style|aesthetic|styled|look)$", "", v)
    m = re.match(r"^(?:the |an? )?style of (.+)$", v)
    if m:
        v, explicit = entity(m.group(1)), True
    v = re.sub(r"^(?:an? )", "", v)
    if not v or len(v) > 60:
        return None
    known = v in _STYLE_WORDS
    v = _STYLE_SYNONYMS.get(v, v)
    words = v.split()
    # "a van gogh painting" -> the painter's style; "an oil painting" stays a medium.
    if len(words) >= 2 and words[-1] == "painting" and words[-2] not in _PAINT_MEDIA:
        v = " ".join(words[:-1])
    v = _STYLE_SYNONYMS.get(v, v)
    if explicit or raw.strip().endswith(("style", "aesthetic")) or v in _STYLE_WORDS or known \
            or _STYLE_INDICATORS.search(raw):
        if re.search(r"\b(?:make|change|turn|add|remove|replace|apply|use|give|put|set|convert|"
                     r"filter|effect)\b", v):
            return None  # a verb or a filter word left inside: not a style name
        return v
    return None


def colour_value(v: str) -> str | None:
    v = re.sub(r"^(?:in |to |into )", "", v.strip())
    v = re.sub(r"\s+(?:colou?r(?:ed)?|tone|shade)$", "", v)
    v = re.sub(r"^(?:a |the )", "", v)
    if _COLOUR_RE.match(v):
        return " ".join(_COLOUR_ALIASES.get(w, w) for w in v.split())
    return None


def material_value(v: str) -> str | None:
    v = re.sub(r"^(?:made )?(?:out )?(?:of |from )", "", v.strip())
    v = re.sub(r"^(?:be )?made (?:out )?(?:of |from )", "", v)
    v = entity(v)
    return MATERIALS.get(v)


def expression_value(v: str) -> str | None:
    v = _strip_look(v.strip())
    v = re.sub(r"^(?:an? )?(?:(\w+) )?(?:expression|face|look|facial expression)$",
               lambda m: m.group(1) or "", v)
    v = v.strip()
    if v in _EXPRESSION_VERBS:
        return _EXPRESSION_VERBS[v]
    if v in _EXPRESSION_ADJ:
        return v
    m = re.match(r"^an? (\w+)$", v)
    if m and m.group(1) in _EXPRESSION_NOUNS:
        return _EXPRESSION_NOUNS[m.group(1)]
    if v in _EXPRESSION_NOUNS:
        return _EXPRESSION_NOUNS[v]
    return None


def age_value(v: str) -> str | None:
    v = _strip_look(v.strip())
    v = re.sub(r"\s+(?:again|now)$", "", v)
    v = re.sub(r"^(?:much |a lot |way |a bit |a little |slightly )", "", v)
    return _AGE.get(v)


_SIZE = {"bigger": "bigger", "larger": "bigger", "smaller": "smaller"}


def size_value(v: str) -> str | None:
    """'bigger' / 'look larger' / 'a lot smaller' -> 'bigger' / 'smaller' (intensifiers dropped,
    as for age)."""
    v = _strip_look(v.strip())
    v = re.sub(r"^(?:be\s+)?(?:much |a lot |way |a bit |a little |slightly )", "", v)
    return _SIZE.get(v)


def hair_value(v: str) -> str | None:
    v = entity(v.strip())
    v = re.sub(r"^(?:with |to |into )", "", v)
    v = re.sub(r"\s*\bhair\s*(?:colou?r|style|cut)?$", "", v)
    v = re.sub(r"\s*\b(?:hairstyle|haircut|hair-do|hairdo)$", "", v)
    v = entity(v)
    if not v or len(v.split()) > 4 or not re.fullmatch(r"[\w' -]+", v):
        return None
    return " ".join(_COLOUR_ALIASES.get(w, w) for w in v.split())


def _owner(np: str) -> str | None:
    """'the woman's hair' -> 'woman'; 'the hair of the woman' -> 'woman'; 'the hair' -> ''."""
    np = np.strip()
    m = re.match(r"^(.*?)'s?\s+(?:hair|hairstyle|haircut|hair colou?r|hair style)$", np)
    if m:
        return entity(m.group(1))
    m = re.match(r"^(?:the )?(?:hair|hairstyle|haircut|hair colou?r|hair style) of (.+)$", np)
    if m:
        return entity(m.group(1))
    if re.match(r"^(?:the |her |his |their )?(?:hair|hairstyle|haircut)$", np):
        owner = np.split()[0] if np.split()[0] in ("her", "his", "their") else ""
        return {"her": "her", "his": "him", "their": "them"}.get(owner, "")
    return None


def _possessed(np: str, nouns: str) -> str | None:
    """Owner of '<X>'s <noun>', '<X> <noun>' or 'the <noun> of <X>'; ``None`` when no match."""
    m = re.match(rf"^(?:the )?(?:{nouns}) of (.+)$", np)
    if m:
        return entity(m.group(1))
    m = re.match(rf"^(.+?)(?:'s?)? (?:{nouns})$", np)
    if m:
        return entity(m.group(1))
    return None


def _head(np: str) -> str:
    words = np.split()
    return words[-1] if words else ""


def _is_being(np: str) -> bool:
    return _head(np) in _BEINGS or np in _BEINGS


def _is_garment(np: str) -> bool:
    return _head(np) in GARMENTS


def _is_background(np: str) -> bool:
    return entity(np) in ("background", "backdrop", "back ground", "bg")


# ----------------------------------------------------------------------------------------------
# Clause parsing

_FIRST_PERSON_TO = re.compile(
    r"^(?:i want|i'd like|i would like|i need|i wish|i'd love|i would love|we want|we need|"
    r"make it so|i'd prefer|i would prefer)\s+(.+?)\s+to\s+(?:be\s+)?(.+)$"
)
_SHOULD = re.compile(r"^(.+?)\s+(?:should|must|needs to|need to|has to|have to|ought to)\s+(?:be\s+)?(.+)$")
_MAKE = re.compile(r"^(?:make|turn|get|render|have|let|paint|colou?r|recolou?r|dye|tint)\s+(.+)$")


def _make_clause(verb: str, obj_value: str) -> Edit | None:
    """'make <X> <V>' and friends: find the value at the end, the rest is the target."""
    words = obj_value.split()
    # Try every split point, longest target first, so multi-word values ('look older') match.
    for i in range(1, len(words)):
        x, v = " ".join(words[:i]), " ".join(words[i:])
        e = _target_value(verb, x, v)
        if e is not None:
            return e
    return None


def _target_value(verb: str, x: str, v: str) -> Edit | None:
    if verb in ("paint", "color", "colour", "recolor", "recolour", "tint", "dye"):
        c = colour_value(v)
        if c is None:
            if verb == "dye":
                hv = hair_value(v)
                owner = _owner(x)
                if hv and owner is not None:
                    return Edit("hair", target=owner or None, value=hv)
            return None
        owner = _owner(x)
        if owner is not None:
            return Edit("hair", target=owner or None, value=c)
        if _is_background(x):
            return Edit("background", value=c)
        return Edit("colour", target=_ent_or_none(x), value=c) if _ent_or_none(x) else None
    if _IMAGE_RE.match(x):
        m = re.match(r"^(?:look like it's |look like it is |be )?(\w+)$", v)
        if m and m.group(1) in WEATHER:
            return Edit("weather", value=WEATHER[m.group(1)])
        return classify_global(v)
    if _is_background(x):
        val = _background_value(v)
        return Edit("background", value=val) if val else None
    owner = _owner(x)
    if owner is not None:
        hv = hair_value(v)
        return Edit("hair", target=owner or None, value=hv) if hv else None
    target = _ent_or_none(x)
    if target is None:
        return None
    m = re.match(r"^(?:wear|wearing|be wearing|put on|dressed in|dress in|in)\s+(.+)$", v)
    if m and (v.startswith("wear") or _is_garment(entity(m.group(1)))):
        g = entity(m.group(1))
        return Edit("clothing", target=target, value=g) if _valid_entity(g) else None
    m = re.match(r"^(?:have|with)\s+(.+)$", v)
    if m:
        return _give(x, m.group(1))
    m = re.match(r"^(?:be |look like |into )?(an? \S.*)$", v)
    if m and verb in ("make", "turn") and not _STYLE_INDICATORS.search(v):
        # "make the dog a cat" / "make her a zombie": the thing becomes another thing.
        y = entity(m.group(1))
        if _valid_entity(y) and y != target and not y.endswith(" one") and colour_value(y) is None \
                and material_value(y) is None:
            return Edit("replace", target=target, value=y)
    c = colour_value(_strip_look(v))
    if c is not None:
        return Edit("colour", target=target, value=c)
    mat = material_value(v)
    if mat is not None:
        return Edit("material", target=target, value=mat)
    a = age_value(v)
    if a is not None:
        return Edit("age", target=target, value=a)
    sz = size_value(v)
    if sz is not None:
        return Edit("size", target=target, value=sz)
    ex = expression_value(v)
    if ex is not None:
        return Edit("expression", target=target, value=ex)
    return None


def _ent_or_none(x: str) -> str | None:
    t = entity(x)
    return t if _valid_entity(t) and not _IMAGE_RE.match(t) else None


def _background_value(v: str) -> str | None:
    v = re.sub(r"^(?:to|into|with|for|as|be)\s+", "", v.strip())
    v = entity(v)
    v = re.sub(r"^(?:plain|solid|simple|pure)\s+", "", v)
    v = re.sub(r"\s+(?:background|backdrop|colou?r)$", "", v)
    v = entity(v)
    c = colour_value(v)
    if c is not None:
        return c
    return v if _valid_entity(v) and not re.search(r"\b(?:make|change|add|remove)\b", v) else None


def _give(x: str, y: str) -> Edit | None:
    if x.strip() in ("me", "us"):
        return _add_clause(y)  # "give me a red car" asks for an object
    target = _ent_or_none(x)
    y = y.strip()
    if target is None:
        return None
    if re.search(r"\bhair(?:style|cut)?$", y):
        hv = hair_value(y)
        return Edit("hair", target=target, value=hv) if hv else None
    ex = expression_value(y)
    if ex is not None:
        return Edit("expression", target=target, value=ex)
    obj = entity(y)
    if not _valid_entity(obj):
        return None
    if _is_garment(obj):
        return Edit("clothing", target=target, value=obj)
    return Edit("add", value=obj, place=target)


_PREPS = r"(?:to|into|in|on|onto|inside|at)"


def _add_clause(body: str) -> Edit | None:
    body = re.sub(r"\s+(?:in|on|there|here)$", "", body.strip())
    obj, place = body, None
    # The place is the last prepositional phrase with a definite determiner ("to the sky").
    m = re.match(rf"^(.+?)\s+{_PREPS}\s+((?:the|his|her|their|its|my|this|that)\s+.+)$", body)
    if m:
        obj, place = m.group(1), m.group(2)
    obj = entity(obj)
    if obj.startswith("one ") and not is_plural(obj):
        obj = obj[4:]  # "add one dog" is "add a dog"; other numbers are kept
    if not _valid_entity(obj):
        return None
    if place is not None:
        p = entity(place)
        if _IMAGE_RE.match(place) or _IMAGE_RE.match("the " + p) or p in ("picture", "image",
                                                                          "photo", "scene"):
            place = None
        elif _is_background(p):
            if _head(obj) in _SCENES:
                return Edit("background", value=obj)
            place = "background"
        else:
            place = p if _valid_entity(p) else None
            if place is None:
                return None
    if place is None and obj in _WEATHER_NOUNS:
        return Edit("weather", value=WEATHER[entity(obj.replace("a ", ""))])
    if place is not None and _is_garment(obj) and _is_being(place):
        return Edit("clothing", target=place, value=obj)
    return Edit("add", value=obj, place=place)


def _change_clause(x: str, y: str, verb: str) -> Edit | None:
    """'change/turn/convert <X> (in)to <Y>'."""
    x, y = x.strip(), y.strip()
    if _IMAGE_RE.match(x):
        return classify_global(y)
    xe = entity(x)
    if xe in ("season", "seasons"):
        v = _global_value(y)
        return Edit("season", value=SEASONS[v]) if v in SEASONS else None
    if xe in ("weather", "weather conditions"):
        v = _global_value(y)
        return Edit("weather", value=WEATHER[v]) if v in WEATHER else None
    if xe in ("time of day", "time", "time of the day", "lighting"):
        v = _global_value(y)
        return Edit("time", value=TIMES[v]) if v in TIMES else None
    if xe in ("style", "art style", "medium", "image style"):
        s = classify_style(y + " style" if not y.endswith("style") else y)
        return Edit("style", value=s) if s else None
    if _is_background(xe) or re.match(r"^(?:background|backdrop) colou?r$", xe):
        val = _background_value(y)
        return Edit("background", value=val) if val else None
    owner = _owner(xe)
    if owner is not None or _owner(x) is not None:
        hv = hair_value(y)
        owner = owner if owner is not None else _owner(x)
        return Edit("hair", target=owner or None, value=hv) if hv else None
    t = _possessed(xe, r"colou?r|colou?ring|paint")
    if t is not None:
        c = colour_value(y)
        if c and _valid_entity(t):
            if _is_background(t):
                return Edit("background", value=c)
            return Edit("colour", target=t, value=c)
        return None
    t = _possessed(xe, r"material|texture")
    if t is not None:
        m = material_value(y)
        return Edit("material", target=t, value=m) if m and _valid_entity(t) else None
    t = _possessed(xe, r"(?:facial )?expression|face|mood")
    if t is not None:
        ex = expression_value(y)
        return Edit("expression", target=t, value=ex) if ex and _valid_entity(t) else None
    t = _possessed(xe, r"clothes|clothing|outfit|attire|wardrobe|garments")
    if t is not None:
        g = entity(y)
        return Edit("clothing", target=t, value=g) if _valid_entity(g) and _valid_entity(t) else None
    if xe in TIMES and _global_value(y) in TIMES:
        return Edit("time", value=TIMES[_global_value(y)])
    if xe in SEASONS and _global_value(y) in SEASONS:
        return Edit("season", value=SEASONS[_global_value(y)])
    if not _valid_entity(xe):
        return None
    c = colour_value(y)
    if c is not None:
        return Edit("colour", target=xe, value=c)
    m = material_value(y)
    if m is not None:
        return Edit("material", target=xe, value=m)
    ye = entity(y)
    if not _valid_entity(ye) or ye == xe:
        return None
    if verb in ("turn", "convert", "transform", "change", "make") and classify_style(y) and \
            _STYLE_INDICATORS.search(y):
        return None  # "turn the man into a cartoon": a local style change we have no clause for
    return Edit("replace", target=xe, value=ye)


_CHANGE_VERBS = r"(?:change|turn|convert|transform|switch|make|set|alter|modify|transition|shift|morph)"
_REMOVE = re.compile(
    r"^(?:remove|delete|erase|eliminate|get rid of|take out|take away|take off|cut out|"
    r"wipe out|wipe away|clear away|clear out|do away with|lose|ditch|drop|strip|strip away)\s+(.+)$"
)
_REMOVE_TAKE = re.compile(r"^(?:take|get|cut|wipe)\s+(.+?)\s+(?:out|off|away)$")


def _remove_value(x: str) -> Edit | None:
    x = re.sub(r"\s+(?:from|out of|off) (?:the |this )?(?:picture|image|photo|photograph|pic|"
               r"scene|shot|frame)$", "", x.strip())
    t = entity(x)
    if not _valid_entity(t) or _IMAGE_RE.match(x):
        return None
    return Edit("remove", target=t)


# Whole-image transforms. The object must be the whole image ("it", "the picture", ...) or absent:
# "blur the background" is a local edit the grammar has no clause for, so it stays unparsed.
_IMG = rf"(?:\s+{_IMAGE_WORDS})"
_FLIP_DIRECTIONS = {"horizontally": "horizontally", "left to right": "horizontally",
                    "right to left": "horizontally", "side to side": "horizontally",
                    "left-right": "horizontally", "horizontal": "horizontally",
                    "vertically": "vertically", "top to bottom": "vertically",
                    "bottom to top": "vertically", "upside down": "vertically",
                    "up-down": "vertically", "vertical": "vertically"}
_FLIP = re.compile(rf"^(flip|mirror|reflect)(?:{_IMG})?(?:\s+(?:along|across|on|around)\s+the)?"
                   rf"(?:\s+({'|'.join(_FLIP_DIRECTIONS)}))?(?:\s+axis)?$")
_CLOCKWISE = {"clockwise": True, "cw": True, "to the right": True, "right": True,
              "counterclockwise": False, "counter-clockwise": False, "counter clockwise": False,
              "anticlockwise": False, "anti-clockwise": False, "anti clockwise": False,
              "ccw": False, "to the left": False, "left": False}
_ROTATE = re.compile(rf"^(rotate|turn|spin)(?:{_IMG})?(?:\s+by)?\s+(\d{{1,3}})(\s*(?:degrees?|deg|°))?"
                     rf"(?:\s+({'|'.join(sorted(_CLOCKWISE, key=len, reverse=True))}))?$")
_INVERT = re.compile(rf"^(?:(?:invert|negate|reverse)(?:\s+the)?\s+colou?rs?(?:\s+(?:of|in)(?:{_IMG}))?|"
                     rf"invert(?:{_IMG})?(?:'s)?(?:\s+colou?rs?)?|"
                     rf"(?:make|turn|convert)(?:{_IMG})(?:\s+into)?\s+(?:a\s+)?(?:photo(?:graphic)?\s+)?negative|"
                     rf"(?:apply|add)\s+(?:a\s+)?negative(?:\s+(?:filter|effect))?(?:\s+to(?:{_IMG}))?)$")
_SIMPLE_TRANSFORMS = (
    ("blur", re.compile(rf"^(?:blur(?:{_IMG})?|make(?:{_IMG})\s+(?:blurry|blurred|blurrier)|"
                        rf"(?:apply|add)\s+(?:a\s+)?(?:gaussian\s+)?blur(?:\s+(?:filter|effect))?"
                        rf"(?:\s+to(?:{_IMG}))?)$")),
    ("sharpen", re.compile(rf"^(?:sharpen(?:{_IMG})?|make(?:{_IMG})\s+sharper|"
                           rf"(?:apply|add)\s+(?:a\s+)?sharpen(?:ing)?(?:\s+(?:filter|effect))?"
                           rf"(?:\s+to(?:{_IMG}))?)$")),
    ("pixelate", re.compile(rf"^(?:pixelate|pixelise|pixelize)(?:{_IMG})?$|"
                            rf"^make(?:{_IMG})\s+(?:pixelated|pixelized|pixelised)$|"
                            rf"^(?:apply|add)\s+(?:a\s+)?pixelation(?:\s+(?:filter|effect))?(?:\s+to(?:{_IMG}))?$")),
    ("brighter", re.compile(rf"^(?:brighten(?:\s+up)?(?:{_IMG})?|brighten(?:{_IMG})\s+up|"
                            rf"(?:make|render)(?:{_IMG})\s+(?:(?:a lot|much|way|a bit|a little|slightly)\s+)?brighter|"
                            rf"increase\s+the\s+brightness(?:\s+of(?:{_IMG}))?)$")),
    ("darker", re.compile(rf"^(?:darken(?:{_IMG})?|"
                          rf"(?:make|render)(?:{_IMG})\s+(?:(?:a lot|much|way|a bit|a little|slightly)\s+)?darker|"
                          rf"(?:decrease|reduce|lower)\s+the\s+brightness(?:\s+of(?:{_IMG}))?)$")),
)


def _transform_clause(c: str) -> Edit | None:
    """A whole-image pixel transform (flip, rotate, invert, blur, sharpen, pixelate, brighter,
    darker), or ``None``. Ambiguous forms are refused: 'flip it' (which axis?), 'turn it upside
    down' (a 180° rotation in everyday speech, a vertical flip to some)."""
    m = _FLIP.match(c)
    if m:
        verb, direction = m.group(1), m.group(2)
        if direction is None:
            # A mirror image is left-right by convention; a bare "flip" names no axis.
            return Edit("transform", value="flip horizontally") if verb == "mirror" else None
        return Edit("transform", value="flip " + _FLIP_DIRECTIONS[direction])
    m = _ROTATE.match(c)
    if m:
        verb, degrees, unit, direction = m.groups()
        if verb != "rotate" and unit is None:
            return None  # "turn it 90" without "degrees" is too loose to be sure
        d = int(degrees)
        if not 0 < d < 360:
            return None
        if d == 180:
            return Edit("transform", value="rotate 180 degrees")
        if direction is None:
            return Edit("transform", value=f"rotate {d} degrees")
        clockwise = _CLOCKWISE[direction]
        if d > 180:  # 270 clockwise is 90 counterclockwise
            d, clockwise = 360 - d, not clockwise
        return Edit("transform", value=f"rotate {d} degrees {'clockwise' if clockwise else 'counterclockwise'}")
    if _INVERT.match(c):
        return Edit("transform", value="invert")
    for value, pattern in _SIMPLE_TRANSFORMS:
        if pattern.match(c):
            return Edit("transform", value=value)
    return None


# Whole-image colour removal and filter names that are styles: "remove the colour", "apply a sepia
# filter", "add a sepia tone". Object-level forms ("remove the colour of the car") do not match.
_DECOLOUR = re.compile(rf"^(?:remove|drop|take out|strip)\s+(?:the\s+|all\s+(?:the\s+)?)?colou?rs?"
                       rf"(?:\s+(?:from|of)(?:{_IMG}))?$|^desaturate(?:{_IMG})?$")
_FILTER = re.compile(rf"^(?:apply|add|use|give(?:{_IMG}))\s+(?:an?\s+)?(.+?)\s+(?:filter|effect|tone|tint)"
                     rf"(?:\s+to(?:{_IMG}))?$")
_ONLY_OUTLINES = re.compile(rf"^(?:draw|show|keep)\s+only\s+the\s+(?:outlines?|edges|contours?)"
                            rf"(?:\s+of(?:{_IMG}))?$")


def _filter_clause(c: str) -> Edit | None:
    if _DECOLOUR.match(c):
        return Edit("style", value="black and white")
    if _ONLY_OUTLINES.match(c):
        return Edit("style", value="line drawing")
    m = _FILTER.match(c)
    if m:
        style = classify_style(m.group(1))
        if style is not None:
            return Edit("style", value=style)
    return None


@functools.lru_cache(maxsize=1 << 16)
def parse_clause(clause: str) -> Edit | None:
    """Parse one cleaned clause; ``None`` when no pattern accepts it."""
    c = clean(clause)
    if not c:
        return None
    m = _FIRST_PERSON_TO.match(c)
    if m:
        c = f"make {m.group(1)} {m.group(2)}"
    else:
        m = _SHOULD.match(c)
        if m:
            c = f"make {m.group(1)} {m.group(2)}"
    c = re.sub(r"^(?:let it)\s+(\w+)$", r"make it \1", c)

    e = _transform_clause(c)
    if e is None:
        e = _filter_clause(c)
    if e is not None:
        return e

    # replace
    m = re.match(r"^(?:replace|exchange)\s+(.+?)\s+(?:with|by|for)\s+(.+)$", c)
    if m:
        x, y = m.group(1), m.group(2)
        if _is_background(x):
            val = _background_value(y)
            return Edit("background", value=val) if val else None
        if _IMAGE_RE.match(x):
            return classify_global(y)
        return _replace(x, y)
    m = re.match(r"^(?:swap|switch|trade)\s+(?:out\s+)?(.+?)\s+(?:for|with|to)\s+(.+)$", c)
    if m:
        return _change_clause(m.group(1), m.group(2), "swap") if not _is_background(m.group(1)) \
            else _bg(m.group(2))
    m = re.match(r"^substitute\s+(.+?)\s+for\s+(.+)$", c)
    if m:
        return _replace(m.group(2), m.group(1))

    # remove
    m = _REMOVE_TAKE.match(c) or _REMOVE.match(c)
    if m:
        return _remove_value(m.group(1))
    m = re.match(r"^(?:no|without)\s+(?:more\s+)?(.+)$", c)
    if m and len(m.group(1).split()) <= 4:
        return _remove_value(m.group(1))
    m = re.match(r"^(.+?)\s+(?:removed|gone|deleted|erased)$", c)
    if m:
        return _remove_value(m.group(1))

    # background
    m = re.match(r"^(?:use|give it|add|apply|choose|pick)\s+(.+?)\s+(?:background|backdrop)$", c)
    if m and not re.search(r"\b(?:the|in|to|into|on|onto|at|of|for|with|his|her|their|its)$",
                           m.group(1)):
        return _bg(m.group(1))
    m = re.match(r"^(?:change|set|make|turn|switch|replace|update|swap)\s+(?:the\s+)?"
                 r"(?:background|backdrop)(?:\s+colou?r)?\s+(?:to|into|with|for|as|be|)\s*(.+)$", c)
    if m:
        return _bg(m.group(1))

    # season / weather / time / style stated as a change of the whole image
    m = re.match(rf"^{_CHANGE_VERBS}\s+(?:(.+?)\s+)?(?:in)?to\s+(.+)$", c)
    if m and m.group(1) is None:
        return classify_global(m.group(2))
    if m:
        e = _change_clause(m.group(1), m.group(2), c.split()[0])
        if e is not None:
            return e

    # dress / wear
    m = re.match(r"^(?:dress|clothe)\s+(.+?)\s+(?:in|with)\s+(.+)$", c)
    if m:
        t, g = _ent_or_none(m.group(1)), entity(m.group(2))
        return Edit("clothing", target=t, value=g) if t and _valid_entity(g) else None
    m = re.match(r"^(?:put|place)\s+(.+?)\s+(?:in|into)\s+(.+)$", c)
    if m and _is_garment(entity(m.group(2))) and not _is_garment(entity(m.group(1))):
        t, g = _ent_or_none(m.group(1)), entity(m.group(2))
        return Edit("clothing", target=t, value=g) if t and _valid_entity(g) else None
    m = re.match(r"^(?:put|place)\s+(.+?)\s+(?:on|onto)\s+(.+)$", c)
    if m and _is_garment(entity(m.group(1))):
        t, g = _ent_or_none(m.group(2)), entity(m.group(1))
        if t and _valid_entity(g):
            return Edit("clothing", target=t, value=g) if _is_being(t) else Edit("add", value=g, place=t)
    m = re.match(r"^(.+?)\s+(?:wear|wears|wearing)\s+(.+)$", c)
    if m and not c.startswith(("make ", "have ", "let ")):
        t, g = _ent_or_none(m.group(1)), entity(m.group(2))
        return Edit("clothing", target=t, value=g) if t and _valid_entity(g) else None

    # hair
    m = re.match(r"^(?:cut|trim|shorten)\s+(.+?)(?:\s+(?:short|shorter))?$", c)
    if m and _owner(m.group(1).strip()) is not None:
        owner = _owner(m.group(1).strip())
        return Edit("hair", target=owner or None, value="short")

    # size: "scale the shapes to be bigger", "scale up the car", "enlarge the car", "shrink it"
    m = re.match(r"^(?:scale|resize)\s+(.+?)\s+(?:to\s+(?:be\s+)?|to look\s+)?(bigger|larger|smaller)$", c) \
        or re.match(r"^scale\s+(?:(up|down)\s+(.+)|(.+?)\s+(up|down))$", c) \
        or re.match(r"^(enlarge|shrink)\s+(.+)$", c)
    if m:
        g = [x for x in m.groups() if x is not None]
        word = next(x for x in g if x in ("bigger", "larger", "smaller", "up", "down", "enlarge", "shrink"))
        target = _ent_or_none(next(x for x in g if x != word))
        value = "bigger" if word in ("bigger", "larger", "up", "enlarge") else "smaller"
        return Edit("size", target=target, value=value) if target else None

    # age
    m = re.match(r"^(?:age|older|age up)\s+(.+)$", c)
    if m and _ent_or_none(m.group(1)):
        return Edit("age", target=_ent_or_none(m.group(1)), value="older")
    m = re.match(r"^(?:de-age|deage|de age|rejuvenate|youthify)\s+(.+)$", c)
    if m and _ent_or_none(m.group(1)):
        return Edit("age", target=_ent_or_none(m.group(1)), value="younger")

    # give
    m = re.match(r"^give\s+(.+)$", c)
    if m:
        rest = m.group(1)
        words = rest.split()
        for i in range(1, len(words)):
            x, y = " ".join(words[:i]), " ".join(words[i:])
            if re.match(r"^(?:the|a|an|his|her|their|my)$", x):
                continue
            e = _give(x, y) if re.match(r"^(?:an?|some|the|\w+ hair|\w+ \w+ hair)\b", y) or \
                expression_value(y) else None
            if e is not None and not (e.family == "add" and " " in x and _head(x) not in _BEINGS
                                      and not _is_being(x)):
                return e

    # make X V
    m = _MAKE.match(c)
    if m:
        verb = c.split()[0]
        e = _make_clause(verb, m.group(1))
        if e is not None:
            return e

    # add
    m = re.match(r"^(put|place|drop|stick)\s+(?:(?:the|his|her|their|its)\s|(?:him|her|them|it|me|us)\b)", c)
    if m:
        return None  # "put the cat on the left" moves something that is already there
    m = re.match(r"^(?:give me|show me|add|insert|include|put|place|draw|create|introduce|"
                 r"bring in|drop|throw in|stick|show)\s+(.+)$", c)
    if m:
        return _add_clause(m.group(1))
    m = re.match(r"^(?:there should be|there is|there are|i want|i'd like|i would like|"
                 r"we need|i need)\s+(.+)$", c)
    if m:
        # "i'd like the car red" states a change; "i want a red car" asks for an object.
        made = parse_clause("make " + m.group(1))
        if made is not None:
            return made
        return _add_clause(m.group(1))

    # bare whole-image values: "at sunset", "van gogh style", "in winter"
    if re.match(r"^(?:at|in|during)\s+", c) or _STYLE_INDICATORS.search(c) or \
            _global_value(c) in SEASONS or _global_value(c) in TIMES or _global_value(c) in WEATHER:
        return classify_global(c)
    return None


def _bg(v: str) -> Edit | None:
    val = _background_value(v)
    return Edit("background", value=val) if val else None


def _replace(x: str, y: str) -> Edit | None:
    if _is_background(x):
        return _bg(y)
    xe, ye = entity(x), entity(y)
    if not (_valid_entity(xe) and _valid_entity(ye)) or xe == ye:
        return None
    if xe in TIMES and ye in TIMES:
        return Edit("time", value=TIMES[ye])
    if xe in SEASONS and ye in SEASONS:
        return Edit("season", value=SEASONS[ye])
    return Edit("replace", target=xe, value=ye)


# ----------------------------------------------------------------------------------------------
# Clause splitting

_SPLIT = re.compile(r"\s*(?:;|,|\.\s|\band then\b|\band also\b|\bthen\b|\balso\b|\band\b|&|"
                    r"\bplus\b|\bafter that\b)\s*")


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
    # Drop empty pieces, folding their separators into the one before the next piece.
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
    clauses = split_clauses(c)
    if clauses is None:
        e = parse_clause(c)
        return [e] if e is not None else None
    return [parse_clause(cl) for cl in clauses]
