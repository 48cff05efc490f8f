"""The canonical instruction grammar: one sentence shape per edit family.

An instruction in canonical form is one or more canonical clauses joined by ``"; "``, in the fixed
order of :data:`FAMILIES`. Each clause is an :class:`Edit` rendered by :meth:`Edit.render`:

==========  ==========================================================
family      canonical clause
==========  ==========================================================
replace     ``replace the cat with a dog``
remove      ``remove the car``
add         ``add a moon to the sky`` / ``add a dog``
count       ``double the number of balloons`` (double / triple / halve / reduce)
colour      ``change the colour of the car to red``
material    ``make the table out of wood``
clothing    ``make the man wear a suit``
hair        ``change the hair of the girl to blonde``
expression  ``change the expression of the man to sad``
age         ``make the woman older`` / ``make the woman ten years older`` /
            ``make the man eighty years old`` / ``turn the man into a child``
size        ``make the shapes bigger`` / ``make the tree taller``
state       ``make the street flooded`` (any other adjective of a thing) / ``set the house on fire`` /
            ``turn on the lamp``
background  ``change the background to a beach``
style       ``make it a watercolor painting`` / ``make it anime style``
text        ``write 'happy birthday' on the image`` / ``write 'sale' on the sign``
season      ``change the season to winter``
weather     ``change the weather to snowy``
time        ``change the time of day to night``
transform   ``flip the image horizontally`` / ``rotate the image 90 degrees clockwise`` /
            ``invert the colours of the image`` / ``blur the image`` / ``make the image brighter`` /
            ``increase the contrast of the image slightly`` / ``zoom in on the image`` /
            ``crop the image to a square`` / ``add a vignette to the image``
==========  ==========================================================

Everything is lower case; entities carry no leading article (the renderer adds ``the`` to things
that exist in the image and ``a``/``an`` to things that are added, unless plural or uncountable).
"""
from __future__ import annotations

from dataclasses import dataclass

from .lexicon import LEX

# The fixed clause order: object-level edits first, whole-image edits last.
FAMILIES: tuple[str, ...] = (
    "replace", "remove", "add", "count", "colour", "material", "clothing", "hair", "expression",
    "age", "size", "state", "background", "style", "text", "season", "weather", "time", "transform",
)
_RANK = {f: i for i, f in enumerate(FAMILIES)}
CLAUSE_SEPARATOR = "; "

# Nouns that take no indefinite article.
UNCOUNTABLE = frozenset(
    "snow rain fog mist water grass hair smoke fire sand light sunlight text foliage furniture "
    "makeup lipstick jewelry jewellery lightning steam ice wood gold glass metal art scenery "
    "graffiti confetti dust rust moss lava space".split()
)
_NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve several many few a couple "
    "multiple some lots".split()
)
# Words that are not articles but make an article wrong ("the man's hat", "his hat", "two dogs").
_DETERMINER_LIKE = frozenset("his her their its my your our".split()) | _NUMBER_WORDS
_PRONOUNS = frozenset("it him her them me us he she they everything you".split())
_AN_EXCEPTIONS = ("uni", "use", "usu", "eu", "one", "ur")
_AN_SILENT_H = ("hour", "honest", "honou", "heir")


def is_plural(noun_phrase: str) -> bool:
    """Heuristic: the head (last word) ends in s but not in ss/us/is (glasses, dogs, people)."""
    head = noun_phrase.split()[-1] if noun_phrase.split() else ""
    if head in {"people", "children", "men", "women", "mice", "geese", "teeth", "feet", "sheep",
                "fish", "deer", "police", "clothes", "jeans", "trousers", "pants", "shorts"}:
        return True
    return len(head) > 2 and head.endswith("s") and not head.endswith(("ss", "us", "is", "'s"))


def definite(entity: str) -> str:
    """``car`` -> ``the car``; leaves pronouns, possessive determiners and numbers alone."""
    first = entity.split(" ", 1)[0]
    if first in _PRONOUNS:
        return entity
    if first in _DETERMINER_LIKE or first.isdigit():
        return entity if first not in _NUMBER_WORDS else "the " + entity
    return "the " + entity


def indefinite(entity: str) -> str:
    """``dog`` -> ``a dog``, ``owl`` -> ``an owl``; plural, uncountable, counted or possessed
    phrases stay bare."""
    words = entity.split()
    if not words:
        return entity
    first = words[0]
    if first in _DETERMINER_LIKE or first.isdigit() or "'s" in entity or first in _PRONOUNS:
        return entity
    if is_plural(entity) or words[-1] in UNCOUNTABLE:
        return entity
    if first[0] in "aeiou" and not first.startswith(_AN_EXCEPTIONS):
        return "an " + entity
    if first.startswith(_AN_SILENT_H):
        return "an " + entity
    return "a " + entity


# Style values whose head noun is countable ("make it a watercolor painting") and styles rendered
# bare ("make it pixel art"); both lists live in data/lexicon.json.
STYLE_NOUNS = LEX["style_nouns"]
STYLE_BARE = LEX["style_bare"]


def render_style(value: str) -> str:
    words = value.split()
    if value in STYLE_BARE or (words and words[-1] == "art"):
        return "make it " + value
    if words and words[-1] in STYLE_NOUNS:
        return "make it " + indefinite(value)
    return f"make it {value} style"


# Whole-image pixel transforms. The Edit value is the operation without its object:
# "flip horizontally", "rotate 90 degrees clockwise", "rotate 180 degrees", "invert", "blur",
# "sharpen", "pixelate", "brighter", "slightly darker", "increase contrast", "decrease saturation
# slightly", "zoom in", "zoom out", "crop square", "vignette", "warmer", "cooler".
TRANSFORM_VERBS = frozenset({"flip", "rotate", "invert", "blur", "sharpen", "pixelate"})
TRANSFORM_LEVELS = frozenset({"brighter", "darker", "slightly brighter", "slightly darker"})
TRANSFORM_FIXED = {"zoom in": "zoom in on the image", "zoom out": "zoom out of the image",
                   "crop square": "crop the image to a square",
                   "vignette": "add a vignette to the image",
                   "warmer": "make the colours of the image warmer",
                   "cooler": "make the colours of the image cooler",
                   "invert": "invert the colours of the image"}


def render_transform(value: str) -> str:
    """``flip horizontally`` -> ``flip the image horizontally``; ``invert`` -> ``invert the
    colours of the image``; ``brighter`` -> ``make the image brighter``; ``increase contrast
    slightly`` -> ``increase the contrast of the image slightly``."""
    if value in TRANSFORM_FIXED:
        return TRANSFORM_FIXED[value]
    if value in TRANSFORM_LEVELS:
        return f"make the image {value}"
    verb, _, rest = value.partition(" ")
    if verb in ("increase", "decrease"):
        quality, _, degree = rest.partition(" ")
        return f"{verb} the {quality} of the image" + (f" {degree}" if degree else "")
    return f"{verb} the image" + (f" {rest}" if rest else "")


@dataclass(frozen=True, order=True)
class Edit:
    """One parsed edit. ``family`` is one of :data:`FAMILIES`; ``target`` is the thing edited (no
    article: ``"car"``, ``"man's hat"``), ``value`` what it becomes or what is added, ``place``
    where an added object goes, ``relation`` how (``None`` means ``to``: "add a dog next to the
    boy"). Unused fields are ``None``."""

    family: str
    target: str | None = None
    value: str | None = None
    place: str | None = None
    relation: str | None = None  # add only: where the thing goes relative to place ("next to")

    def __post_init__(self):
        if self.family not in _RANK:
            raise ValueError(f"Edit.family must be one of {FAMILIES}, got {self.family!r}")

    def render(self) -> str:
        """The canonical clause for this edit."""
        f, t, v = self.family, self.target, self.value
        if f == "replace":
            return f"replace {definite(t)} with {indefinite(v)}"
        if f == "remove":
            return f"remove {definite(t)}"
        if f == "add":
            return f"add {indefinite(v)}" + (f" {self.relation or 'to'} {definite(self.place)}"
                                             if self.place else "")
        if f == "count":
            return f"{v} the number of {t}"
        if f == "text":
            return f"write '{v}' on {definite(self.place) if self.place else 'the image'}"
        if f == "colour":
            return f"change the colour of {definite(t)} to {v}"
        if f == "material":
            return f"make {definite(t)} out of {v}"
        if f == "clothing":
            return f"make {definite(t)} wear {indefinite(v)}"
        if f == "hair":
            return f"change the hair of {definite(t)} to {v}" if t else f"change the hair to {v}"
        if f == "expression":
            return f"change the expression of {definite(t)} to {v}"
        if f == "state" and v == "on fire":
            return f"set {definite(t)} on fire"
        if f == "state" and v in ("on", "off"):
            return f"turn {v} {definite(t)}"
        if f == "age" and v.startswith(("a ", "an ")):
            return f"turn {definite(t)} into {v}"
        if f in ("age", "size", "state"):
            return f"make {definite(t)} {v}"
        if f == "background":
            bare = _is_adjectival(v) or v.startswith("the ") or v in _SETTING_NAMES
            return f"change the background to {v if bare else indefinite(v)}"
        if f == "style":
            return render_style(v)
        if f == "season":
            return f"change the season to {v}"
        if f == "weather":
            return f"change the weather to {v}"
        if f == "time":
            return f"change the time of day to {v}"
        if t is not None and v == "zoom in":
            return f"zoom in on {definite(t)}"
        if t is not None:  # a local filter: "blur the background", "pixelate the man's face"
            return f"{v} {definite(t)}"
        return render_transform(v)

    def sort_key(self) -> tuple:
        return (_RANK[self.family], self.render())


COLOURS = LEX["colours"]
_BACKGROUND_ADJECTIVES = LEX["background_adjectives"]


_SETTING_NAMES = frozenset(LEX["settings"].values())  # "mars", "space": no article


def _is_adjectival(value: str) -> bool:
    last = value.split()[-1]
    return last in COLOURS or last in _BACKGROUND_ADJECTIVES


def render(edits: list[Edit]) -> str:
    """Canonical text for a list of edits: deduplicated, in the fixed family order."""
    if not edits:
        raise ValueError("render: expected at least one Edit, got none")
    out, seen = [], set()
    for _, r in sorted({e.sort_key() for e in edits}):  # each edit rendered once
        if r not in seen:
            seen.add(r)
            out.append(r)
    return CLAUSE_SEPARATOR.join(out)


