"""The rule table of the ``rules`` backend: family → pattern → handler.

:data:`FRAMES` are imperative clauses ("remove the car", "paint the car red"), tried in order;
:data:`REWRITES` turn wishes, statements and participles into imperatives ("I'd like the car to
be red" → "make the car red", "the photo rotated by 90 degrees" → "rotate the photo by 90
degrees"); :data:`CAPTIONS` read terse descriptions of the result ("blue car", "a cat on the
sofa", "the sofa without the cat"), tried last because they are the loosest.

A pattern (see :mod:`.patterns`) captures slots; its handler turns them into an
:class:`~gie_core.instruction.grammar.Edit` or returns ``None`` (then the next frame is tried).
Handlers only classify slot text with the vocabularies of ``data/lexicon.json`` (through
:mod:`.values`); they never guess. To teach the rules a new phrasing, add a row here; to teach
them a word, add it to the lexicon.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from .grammar import Edit, is_plural
from .lexicon import LEX, alternation, lemma, participle, parts_of_speech, present_participle, verb_lemma
from .patterns import add_classes
from .text import entity, head, is_image, resolve_pronoun, valid_entity
from .values import (
    age_noun_value,
    age_value,
    background_value,
    classify_global,
    colour_value,
    degree,
    expression_value,
    global_value,
    hair_value,
    is_background,
    material_value,
    numeric_age,
    person_hair_value,
    setting_value,
    size_value,
    state_value,
    strip_look,
    style_value,
)

Handler = Callable[..., "Edit | None"]


@dataclass(frozen=True)
class Frame:
    family: str  # the family the frame usually yields (documentation and coverage reports)
    pattern: str
    handler: Handler


@dataclass(frozen=True)
class Rewrite:
    name: str
    pattern: str
    template: str  # slots in braces: "make {x} {v}"


# ----------------------------------------------------------------------------------------------
# Entities

def ent(x: str | None) -> str | None:
    """A thing in the image (normalised), or ``None`` when ``x`` is not one."""
    if x is None or x.endswith(("'s", "s'")):  # "the woman's" owns something not named
        return None
    t = entity(x)
    return t if valid_entity(t) and not is_image(t) and not is_image(x) else None


_BODY = alternation(LEX["body_parts"])
_OWNED_PART = re.compile(rf"^(.+?)'s? {_BODY}$|^(?:the )?{_BODY} of (.+)$")


def owner_of_part(np: str) -> str | None:
    """'man's head' / 'the neck of the woman' → 'man' / 'woman' (for garments put on a body part)."""
    m = _OWNED_PART.match(np)
    if not m:
        return None
    return ent(m.group(1) or m.group(2))


def is_being(np: str) -> bool:
    return head(np) in LEX["beings"] or np in LEX["beings"] or np.split()[-1:] == ["face"]


def is_garment(np: str) -> bool:
    words = np.split()
    return bool(words) and (words[-1] in LEX["garments"] or " ".join(words[-2:]) in LEX["garments"])


_LOCATOR = re.compile(rf"\s+{alternation(LEX['locators'])}$")
_SOURCE = re.compile(r"^(.+?)\s+(?:from|on|in|off|out of|inside|at|under|next to|near|by|beside|"
                     r"behind|above|over|across|along|in front of|sitting on|standing on)\s+(?:the|"
                     r"this|that|his|her|their|its|my|a)\s+(.+)$")


def removal_target(x: str) -> str | None:
    """The thing to remove, without where it is ('the cat on the sofa' → 'cat') unless the place
    tells two things apart ('the man on the left', 'the people in the background')."""
    t = entity(re.sub(r"\s+(?:on|in|from|off|out of|in front of|behind|next to|beside|near|under|above) "
                      r"(?:it|them|there)$", "", x.strip()))
    m = re.match(r"^(.+?) (?:on|from|off|off of) (him|her)$", t)
    if m and is_garment(entity(m.group(1))):  # "the tie on him"
        return f"{resolve_pronoun(m.group(2))}'s {entity(m.group(1))}"
    if not t:
        return None
    loc = _LOCATOR.search(t)
    if loc:
        base = ent(t[:loc.start()])
        return f"{base}{loc.group(0)}" if base else None
    m = _SOURCE.match(t)
    if m and ent(m.group(1)) and valid_entity(m.group(2)):
        place = m.group(2)
        owner = owner_of_part(entity(place))  # "the glasses from the man's face"
        if owner is not None and is_garment(m.group(1)):
            return f"{owner}'s {ent(m.group(1))}"
        if not is_being(place) or not is_garment(m.group(1)):
            return ent(m.group(1))
        return f"{entity(resolve_pronoun(place))}'s {ent(m.group(1))}"  # "the hat on the man"
    return ent(t)


# The people a pronoun stands for ('him' → 'man', 'her' → 'woman'): an owner that could only
# have come from a pronoun is left out of what it owns, so "make her hair blonde", "blonde
# hair" and "make the woman's hair blonde" are one edit (a picture has one such person).
_DEFAULT_PEOPLE = frozenset(LEX["pronouns"].values())
_DEFAULT_OWNER = re.compile(rf"^{alternation(_DEFAULT_PEOPLE)}'s (?=\S)")


# Removing "the man's hat" and "the woman's hat" are told apart: removal names whose it takes.
_OWNED_KEPT = frozenset({"remove"})


def normalise_edit(e: Edit) -> Edit:
    """An edit with default-person owners dropped: hair of 'man'/'woman' is just the hair, and
    "woman's dress" is the dress (except for removals). A person who is the edit's target
    (expression, age, clothing) is kept."""
    target, place = e.target, e.place
    if e.family == "hair" and target in _DEFAULT_PEOPLE:
        target = None
    if e.family == "expression" and target:  # "make her face sad": the person's expression
        target = re.sub(r"^(.+?)'s (?:face|expression|mouth|facial expression)$", r"\1", target)
    if e.family in _OWNED_KEPT:
        return e if target == e.target else Edit(e.family, target=target, value=e.value)
    if target and _DEFAULT_OWNER.match(target):
        target = _DEFAULT_OWNER.sub("", target)
    if place and _DEFAULT_OWNER.match(place):
        place = _DEFAULT_OWNER.sub("", place)
    if target == e.target and place == e.place:
        return e
    return Edit(e.family, target=target, value=e.value, place=place, relation=e.relation)


# ----------------------------------------------------------------------------------------------
# Handlers

def h_replace(x: str, y: str, **_) -> Edit | None:
    if is_background(x):
        return h_background(y)
    if is_image(x):
        return classify_global(y)
    xe, ye = ent(x), ent(y)
    if xe is None or ye is None or xe == ye:
        return None
    xe = removal_target(x) or xe  # "the mug on the table" is the mug (a side tells two apart)
    sky = sky_value(xe, y)
    if sky is not None:
        return sky
    xg, yg = global_value(xe), global_value(ye)
    for fam, vocab in (("time", "times"), ("season", "seasons"), ("weather", "weather")):
        if xg in LEX[vocab] and yg in LEX[vocab]:
            return Edit(fam, value=LEX[vocab][yg])
    return Edit("replace", target=xe, value=ye)


def sky_value(x: str, v: str) -> Edit | None:
    """The sky turned into a time of day or a weather ('a sunset sky', 'make the sky overcast')."""
    if entity(x) not in ("sky", "skies", "sky above"):
        return None
    g = global_value(v)
    for fam, vocab in (("time", "times"), ("weather", "weather")):
        if g in LEX[vocab]:
            return Edit(fam, value=LEX[vocab][g])
    return None


def h_remove(x: str, p: str | None = None, **_) -> Edit | None:
    """'remove the cat'; ``p`` is where it is taken from ('take the glasses off the man')."""
    if p is not None and not is_image(p) and ent(p) is not None and is_garment(entity(x)) \
            and (is_being(entity(resolve_pronoun(p))) or owner_of_part(entity(p))):
        x = f"{x} on {p}"
    t = removal_target(x)
    if t is None:
        return None
    if is_background(t):
        return Edit("remove", target="background")  # a cut-out: the subject on nothing
    if t in ("colour", "color", "colours", "colors"):
        return None
    if t in ("writing", "words", "lettering", "wording", "letters"):
        t = "text"  # "erase the writing on the poster"
    owner = hair_owner(t)
    if owner:  # "shave his hair off": all of it gone is bald
        return Edit("hair", target=owner, value="bald")
    return Edit("remove", target=t)


def h_background(v: str, **_) -> Edit | None:
    if strip_look(v) in ("blurry", "blurred", "out of focus", "blurrier", "soft", "bokeh"):
        return Edit("transform", target="background", value="blur")
    val = background_value(v)
    return Edit("background", value=val) if val else None


_REL = alternation(LEX["add_relations"])
_PLACE = re.compile(rf"^(.+?)\s+({_REL})\s+((?:the|his|her|their|its|my|this|that|him|it|them)\b.*)$")
_WEATHER_NOUNS = LEX["weather_nouns"]
_WEATHER_WORD = alternation(LEX["weather_nouns"])


_COUNT = re.compile(rf"^(?P<c>{alternation(LEX['count_words'])})(?: as many| the (?:number|amount|count) "
                    r"of| the)? (?P<x>.+)$")


_ON_PLACE = re.compile(r" (?:on|in|at) (?:the|this|that) [a-z]+$")


def count_value(y: str) -> Edit | None:
    """'twice as many balloons', 'double the number of balloons' → double the number of balloons.
    Only a plural thing has a number ('double the size of the dog' is not a count)."""
    m = _COUNT.match(y.strip())
    if not m:
        return None
    things = entity(_ON_PLACE.sub("", m.group("x")))  # "double the cupcakes on the plate"
    if not valid_entity(things) or not is_plural(things) or is_image(things) or \
            re.match(r"^(?:size|number|amount|count)\b", things):
        return None
    return Edit("count", target=things, value=LEX["count_words"][m.group("c")])


def h_count(verb: str, x: str, **_) -> Edit | None:
    """'double the balloons', 'halve the number of trees'."""
    return count_value(f"{verb_lemma(verb)} {x}")


_QUOTED = re.compile(r"^[\'\"](?P<t>[^\'\"]+?)[\'\"]?$|^(?P<u>[^\'\"]+?)[\'\"]$")


_POSITION = re.compile(r"^(?:the )?(?:very )?(?:top|bottom|middle|centre|center|corner|top left|top right|"
                       r"bottom left|bottom right|upper left|upper right|lower left|lower right|left|right|"
                       r"side|edge)(?: (?:corner|side|edge|part))?(?: of (.+))?$")


def text_place(p: str | None) -> str | None | bool:
    """Where words are written: ``None`` for the image (or a spot on it: 'at the top'), the thing
    ('the cake' → 'cake'), or ``False`` when ``p`` is neither."""
    if p is None or is_image(p):
        return None
    m = _POSITION.match(p.strip())
    if m:
        return text_place(m.group(1)) if m.group(1) else None
    m = re.match(r"^(?:icing|frosting|chalk|paint|neon|gold|big|large|small|bold|red|white|black) "
                 r"(?:letters )?(?:on|onto) (.+)$", p.strip())  # "in icing on the cake"
    if m:
        return text_place(m.group(1))
    t = ent(p)
    return t if t is not None else False


def h_text_colon(p: str, v: str) -> Edit | None:
    """'banner: "sale"', 'banner text: welcome home', 'license plate: abc 123'."""
    m = re.match(r"^(.+?) (?:text|caption|name|wording|title|lettering)$", p.strip())
    if m:
        return h_text(v, m.group(1), quoted=False)
    return h_text(v, p, quoted=not _carries_text(p))


def _carries_text(p: str) -> bool:
    """A thing that usually bears words (a sign, a banner, a licence plate)."""
    t = entity(p)
    return t in LEX["text_carriers"] or head(t) in LEX["text_carriers"]


def h_text(v: str, p: str | None = None, quoted: bool = True, **_) -> Edit | None:
    """'write "happy birthday" on the cake': the words, as typed (lower-cased), quoted unless the
    clause says they are words ('the text hello'); where they go when it is not the image."""
    if re.match(r"^(?:no|without|any|the) ", v.strip()) or v.strip() in ("text", "words"):
        return None  # "billboard: no text" takes words away
    v = re.sub(r"\s+(?:instead|please|now|too)$", "", v.strip())
    m = _QUOTED.match(v.strip())
    if m:
        words = " ".join((m.group("t") or m.group("u")).split())
    elif not quoted and re.fullmatch(r"[\w' !&-]{1,40}", v.strip()) and len(v.split()) <= 5:
        words = " ".join(v.split())
    else:
        return None
    place = text_place(p)
    if not words or place is False or "'" in words:
        return None
    return Edit("text", value=words, place=place)


def h_add(y: str, place: str | None = None, relation: str | None = None, **_) -> Edit | None:
    """'a cat on the sofa' / 'a dog next to the boy' / 'two more birds' / 'snow'."""
    body = re.sub(r"\s+(?:in|on|there|here|in there|in here|to it|to this)$", "", drop_measure(y))
    if place is None:
        m = _PLACE.match(body)
        if m:
            body, relation, place = m.group(1), m.group(2), m.group(3)
            body = re.sub(r"\s+(?:up|down|out|over|high up|way up)$", "", body)  # "a moon up in the sky"
    relation = LEX["add_relations"].get(relation or "to", "to")
    obj = entity(body)
    obj = re.sub(rf"^((?:an? )?{_WEATHER_WORD}) with (?:some )?{_WEATHER_WORD}$", r"\1", obj)  # "a storm with lightning"
    weather = re.sub(r"^(?:an? )?(?:falling|fresh|heavy|light|pouring|driving|gentle|soft) ", "", obj)
    if weather != obj and weather in _WEATHER_NOUNS:
        obj = weather  # "add falling snow" is the weather
    counted = count_value(body) if place is None else None
    if counted is not None:  # "make there be twice as many balloons"
        return counted
    if place is None and obj in LEX["light_sources"]:
        return _lit(None, obj)  # "add neon lighting": the scene lit by it
    if obj.startswith("one ") and not is_plural(obj) and not obj.startswith("one more "):
        obj = obj[4:]  # "add one dog" is "add a dog"; other numbers are kept
    if not valid_entity(obj) or is_image(obj) or obj in LEX["pronouns"] or \
            obj in ("him", "her", "them", "me", "us") or head(obj) in LEX["deverbal_nouns"] or \
            head(obj) in ("style", "look", "effect", "filter", "vibe", "vibes", "aesthetic"):
        return None  # "add a background blur" is an edit ("blur the background"), not a thing
    if place is not None and entity(place) == "sky" and (obj in _WEATHER_NOUNS or
                                                         global_value(obj) in LEX["times"]):
        place = None  # "add clouds to the sky" is the weather
    if place is not None:
        p = entity(resolve_pronoun(place.strip()))
        owner = owner_of_part(p)
        if is_image(place) or is_image(p):
            place = None
        elif is_background(p):
            if head(obj) in LEX["scenes"] and relation == "to":
                return Edit("background", value=obj)
            place = "background"
        elif owner is not None and (is_garment(obj) or obj in LEX["facial_hair"] or
                                    re.search(r"\b(?:hand|hands|arm|arms|paw|paws)$", p)):
            place = owner  # "an umbrella in the woman's hand" is held by her
        else:
            place = p if valid_entity(p) else None
            if place is None:
                return None
    if place is not None and is_being(place) and re.search(rf"\b{_HAIR}$", obj) and hair_value(obj):
        return Edit("hair", target=place, value=hair_value(obj))  # "long hair on him"
    if place is not None and is_being(place) and obj in LEX["hair_styles"]:
        return Edit("hair", target=place, value=obj)  # "a ponytail on her"
    if place is None and (obj in _WEATHER_NOUNS or re.sub(r"^an? ", "", obj) in _WEATHER_NOUNS):
        return Edit("weather", value=LEX["weather"][re.sub(r"^an? ", "", obj)])
    if place is None and global_value(obj) in LEX["times"] and \
            re.search(r"\b(?:light|lighting|glow|sky|hour|sunset|sunrise|dusk|dawn)$", obj):
        return Edit("time", value=LEX["times"][global_value(obj)])  # "add golden-hour light"
    if place is not None and is_garment(obj) and is_being(place) and relation in ("to", "around", "on top of"):
        return Edit("clothing", target=place, value=obj)
    if place is not None and relation == "to" and head(obj) in LEX["facial_hair"] and is_being(place):
        return Edit("add", value=obj, place=place)
    return Edit("add", value=obj, place=place, relation=None if relation == "to" else relation)


def _expression_of(x: str, v: str) -> Edit | None:
    t, ex = ent(re.sub(r"'s?$", "", x.strip())), expression_value(v)
    return Edit("expression", target=t, value=ex) if t and ex else None


def _is_defect(x: str) -> bool:
    """Scratches, dust, red eye: what a retoucher removes when asked to fix it."""
    t = entity(x)
    return t in LEX["defects"] or head(t) in LEX["defects"]


def h_held(p: str, y: str) -> Edit | None:
    """'make the woman hold an umbrella' adds it to her; '… a bouquet instead of the umbrella'
    replaces what she holds."""
    if not is_being(entity(resolve_pronoun(p))):
        return None
    m = _INSTEAD.match(y)
    return h_replace(m.group(2), m.group(1)) if m else h_add(y, place=p)


_INSTEAD = re.compile(r"^(.+?) (?:instead of|in place of|rather than) (.+)$")


def h_add_or_instead(y: str) -> Edit | None:
    """'there should be a motorcycle (instead of the bicycle)'."""
    m = _INSTEAD.match(y)
    return h_replace(m.group(2), m.group(1)) if m else h_add(y)


def h_add_verb(verb: str, y: str, **_) -> Edit | None:
    """'put/place …' with a definite object moves something already there: refused."""
    if re.match(r"^(?:put|place|drop|stick|pop|set|position|move)\b", verb) and \
            re.match(r"^(?:the|his|her|their|its|this|that|these|those|him|her|them|it|me|us)\b", y) \
            and not re.search(r"\bin the background$", y):
        return None
    return h_add(y)


def h_fill(p: str, y: str, **_) -> Edit | None:
    """'fill the sky with fireworks', 'cover the ground with snow' → add … to …."""
    return h_add(y, place=p)


_COVERED = re.compile(r"^(?:all )?(?:covered|overgrown|filled|full|coated|draped|dotted|littered|strewn|"
                      r"crawling|swarming|teeming|blanketed|smothered|plastered|wrapped|carpeted)"
                      r"(?: all over)? (?:in|with|of|by) (.+)$")


def covered_with(x: str, v: str) -> Edit | None:
    """'the building covered in vines' / 'overgrown with vines' → add vines to the building."""
    m = _COVERED.match(v.strip())
    return h_add(m.group(1), place=x) if m and ent(x) else None


def _possessed(np: str, nouns: str) -> str | None:
    m = re.match(rf"^(?:the )?(?:{nouns}) of (.+)$", np)
    if m:
        return entity(m.group(1))
    m = re.match(rf"^(.+?)(?:'s?)? (?:{nouns})$", np)
    if m:
        return entity(m.group(1))
    return None


_HAIR = alternation(LEX["hair_words"])
_HAIR_OF_OWNER, _HAIR_OF, _HAIR_ONLY = (re.compile(rf"^(.*?)'s?\s+{_HAIR}$"), re.compile(rf"^{_HAIR} of (.+)$"),
                                        re.compile(rf"^{_HAIR}$"))


def hair_owner(np: str) -> str | None:
    """'the woman's hair' → 'woman'; 'the hair of the woman' → 'woman'; 'her hair' → 'woman';
    'the hair' → ''; ``None`` when ``np`` is not hair."""
    np = entity(np.strip())
    m = _HAIR_OF_OWNER.match(np)
    if m:
        return entity(m.group(1))
    m = _HAIR_OF.match(np)
    if m:
        return entity(resolve_pronoun(m.group(1)))
    if _HAIR_ONLY.match(np):
        return ""
    return None


_CARRIERS = alternation(LEX["colour_carriers"])
_CARRIER_OF_OWNER, _CARRIER_OF = re.compile(rf"^(.+?)'s? {_CARRIERS}$"), re.compile(rf"^(?:the )?{_CARRIERS} of (.+)$")


def colour_target(x: str) -> str | None:
    """The thing whose colour changes: 'the cat's fur' → 'cat', 'the car's paint' → 'car'."""
    t = entity(x)
    m = _CARRIER_OF_OWNER.match(t) or _CARRIER_OF.match(t)
    if m:
        return ent(m.group(1))
    return ent(t)


def being_aged(x: str, y: str) -> Edit | None:
    """A person made a child, a teenager or an old man is an age edit."""
    t = ent(x)
    if t is None or not is_being(t):
        return None
    a = age_noun_value(y)
    return Edit("age", target=t, value=a) if a else None


_SWITCHED = {"on": "on", "off": "off", "switched on": "on", "turned on": "on", "powered on": "on",
             "switched off": "off", "turned off": "off", "powered off": "off"}


def switch_value(x: str, v: str, any_thing: bool = False) -> Edit | None:
    """'the lamp on' → turn on the lamp. Without a verb that switches, only things that have a
    switch ('lamp', 'tv', 'street lights') read 'on'/'off' that way ('the hat on' does not)."""
    value = _SWITCHED.get(strip_look(v.strip()))
    t = ent(x)
    if value is None or t is None:
        return None
    if not any_thing and t not in LEX["switchables"] and head(t) not in LEX["switchables"] and \
            " ".join(t.split()[-2:]) not in LEX["switchables"]:
        return None
    return Edit("state", target=t, value=value)


def h_switch(x: str, p: str, **_) -> Edit | None:
    """'turn on the lamp', 'switch the tv off'."""
    return switch_value(x, p, any_thing=True)


def h_place_in_setting(x: str, v: str, **_) -> Edit | None:
    """'put the car underwater', 'move the house to the moon', 'place him in outer space': the
    thing stays, the scene around it changes."""
    if ent(resolve_pronoun(x)) is None and not is_image(x):
        return None
    return setting_value(v)


_SETTING_VALUES = frozenset(LEX["settings"].values())
_LOCATIVE_START = re.compile(r"^(?:on|in|at|to|into|onto|inside|underwater|under water|submerged)\b")
# Without into/onto: after "make X" those name what X becomes ("make the car into a boat").
_AT_PLACE = re.compile(r"^(?:on|in|at|to|inside|underwater|under water|submerged)\b")
_DEFINITE = frozenset("the this that these those his her their its my him them it he she they".split())


def _lit(x: str | None, source: str) -> Edit | None:
    """'light the room with candles' → the room candlelit; the whole picture is 'the scene'."""
    value = LEX["light_sources"].get(source)
    t = "scene" if x is None or is_image(x) else ent(x)
    return Edit("state", target=t, value=value) if value and t else None


def _head_owner(x: str) -> str | None | bool:
    """'his head' / 'the man's head' → 'man'; ``False`` when ``x`` is not a head."""
    t = entity(x.strip())
    m = re.match(r"^(?:(.+?)'s )?(?:head|scalp)$", t)
    if not m:
        return False
    return ent(m.group(1)) if m.group(1) else None


_HAIR_VERBS = {"curl": "curly", "braid": "braided", "straighten": "straight"}


def _hair_verb(verb: str, x: str) -> Edit | None:
    """'curl her hair' → curly hair; only hair is curled this way ('straighten the horizon' is not)."""
    owner = hair_owner(x)
    value = _HAIR_VERBS.get(verb_lemma(verb) or verb)
    return Edit("hair", target=owner or None, value=value) if owner is not None and value else None


_LIT_STATES = {v: v for v in LEX["light_sources"].values()} | {k: v for k, v in LEX["state_synonyms"].items()
                                                                 if v in LEX["light_sources"].values()}


def _in_weather(v: str) -> Edit | None:
    """'in the middle of a sandstorm', 'into a blizzard': the weather around the scene."""
    m = re.match(r"^(?:in|into)(?: the middle of| the midst of)? (?:an? |the )?(.+)$", v.strip())
    w = m.group(1) if m else None
    return Edit("weather", value=LEX["weather"][w]) if w in _WEATHER_NOUNS and w in LEX["weather"] else None


def const_local(value: str) -> Handler:
    def handler(**_):
        return Edit("transform", target="background", value=value)
    return handler


def h_place_split(xv: str, caption: bool = False, **_) -> Edit | None:
    """'<thing> <where>' with the split found here ('the car underwater', 'him in outer space').
    A caption needs a known setting and a thing that is already there ('a house on the moon'
    adds a house)."""
    words = xv.split()
    if not words or not (words[0] in _DEFINITE or (caption and len(words) > 1 and words[1] in (
            "on", "in", "at", "underwater", "inside"))):
        return None  # "put a boat on the lake" / "put fireworks in the sky" add them
    for i in range(1, len(words)):
        x, v = " ".join(words[:i]), " ".join(words[i:])
        if not _LOCATIVE_START.match(v):
            continue
        named = re.search(r"\s(?:setting|scene|environment|surroundings)$", v)
        if named:  # "the armchair in a living room setting" names the place as the setting
            v, caption = v[:named.start()], False
        e = h_place_in_setting(x, v)
        if e is None:
            continue
        # A named setting or underwater always; a scene ("on a racetrack") after a verb, not the
        # sky ("put the moon in the sky" adds it).
        if e.value in _SETTING_VALUES or e.value == "underwater" or \
                (not caption and e.value not in ("sky", "skies", "a sky")):
            return e
    return None


def h_age_to(x: str, amount: str, **_) -> Edit | None:
    """'age him to 80', 'age the boy up to a teenager', 'him at 80'."""
    t = ent(x)
    if t is None or not is_being(t):
        return None
    a = numeric_age(amount) or age_noun_value(amount)
    return Edit("age", target=t, value=a) if a else None


def h_change(x: str, y: str, verb: str = "change", **_) -> Edit | None:
    """'change/turn/convert <X> (in)to <Y>'."""
    x, y = x.strip(), y.strip()
    if is_image(x):
        return classify_global(y) or _image_level(y)
    xe = entity(x)
    sky = sky_value(xe, y)
    if sky is not None:
        return sky
    for names, fam, vocab in ((("season", "seasons"), "season", "seasons"),
                              (("weather", "weather conditions", "conditions"), "weather", "weather"),
                              (tuple(LEX["time_words"]), "time", "times")):
        if xe in names:
            v = global_value(y)
            return Edit(fam, value=LEX[vocab][v]) if v in LEX[vocab] else None
    if xe in ("style", "art style", "medium", "image style", "look", "aesthetic"):
        s = style_value(y if y.endswith("style") else y + " style")
        return Edit("style", value=s) if s else None
    if is_background(xe) or re.match(r"^(?:background|backdrop) colou?r$", xe):
        return h_background(y)
    owner = hair_owner(x)
    if owner is not None:
        hv = hair_value(y)
        return Edit("hair", target=owner or None, value=hv) if hv else None
    t = _possessed(xe, r"colou?r|colou?ring|paint|paint job|paintwork|fur|coat|skin|tone|hue")
    if t is not None:
        c = colour_value(y)
        if c and valid_entity(t):
            return Edit("background", value=c) if is_background(t) else Edit("colour", target=t, value=c)
        return None
    t = _possessed(xe, r"material|texture")
    if t is not None:
        m = material_value(y)
        return Edit("material", target=t, value=m) if m and valid_entity(t) else None
    t = _possessed(xe, r"(?:facial )?expression|face|mood|emotion")
    if t is not None:
        ex = expression_value(y)
        return Edit("expression", target=t, value=ex) if ex and valid_entity(t) else None
    t = _possessed(xe, r"clothes|clothing|outfit|attire|wardrobe|garments")
    if t is not None:
        g = entity(y)
        return Edit("clothing", target=t, value=g) if valid_entity(g) and valid_entity(t) else None
    xg, yg = global_value(xe), global_value(y)
    for fam, vocab in (("time", "times"), ("season", "seasons")):
        if xg in LEX[vocab] and yg in LEX[vocab]:
            return Edit(fam, value=LEX[vocab][yg])
    target = colour_target(x)
    if target is None:
        return None
    aged = being_aged(xe, y)
    if aged is not None:  # "turn the man into a child"
        return aged
    if is_being(xe) and expression_value(y) and not re.match(r"^(?:an?|the) ", y):
        return Edit("expression", target=ent(x), value=expression_value(y))  # "girl -> surprised face"
    if verb_lemma(verb) in ("turn", "transform", "convert") and material_value(y) and ent(x):
        return Edit("material", target=ent(x), value=material_value(y))  # "turn the statue to gold"
    c = colour_value(y)
    if c is not None:
        return Edit("colour", target=target, value=c)
    m = material_value(y)
    if m is not None:
        return Edit("material", target=ent(x), value=m) if ent(x) else None
    xt = ent(x)
    if xt is None:
        return None
    ye = entity(y)
    if not valid_entity(ye) or ye == xt or is_image(ye):
        return None
    if style_value(y) and re.search(r"\b(?:style|painting|drawing|sketch|cartoon|anime|comic|art|"
                                    r"illustration|render)\b", y) and verb != "swap":
        return None  # "turn the man into a cartoon": a local style change we have no clause for
    return Edit("replace", target=removal_target(x) or xt, value=ye)


_LEVELS = {
    "brighter": "brighter", "lighter": "brighter", "darker": "darker", "dimmer": "darker",
    "blurry": "blur", "blurred": "blur", "blurrier": "blur", "out of focus": "blur",
    "sharper": "sharpen", "sharp": "sharpen", "crisper": "sharpen", "crisp": "sharpen",
    "in focus": "sharpen", "pixelated": "pixelate", "pixelized": "pixelate", "pixelised": "pixelate",
    "pixely": "pixelate", "more saturated": "increase saturation", "less saturated": "decrease saturation",
    "more colorful": "increase saturation", "more colourful": "increase saturation",
    "more vibrant": "increase saturation", "less vibrant": "decrease saturation",
    "more vivid": "increase saturation", "less vivid": "decrease saturation",
    "less colorful": "decrease saturation", "less colourful": "decrease saturation",
    "more contrasty": "increase contrast", "less contrasty": "decrease contrast",
    "punchier": "increase contrast", "flatter": "decrease contrast",
    "more contrast": "increase contrast", "less contrast": "decrease contrast",
    "higher contrast": "increase contrast", "lower contrast": "decrease contrast",
    "high contrast": "increase contrast", "low contrast": "decrease contrast",
    "more saturation": "increase saturation", "less saturation": "decrease saturation",
    "warmer": "warmer", "cooler": "cooler", "colder": "cooler",
    "negative": "invert", "inverted": "invert", "upside down": None, "zoomed in": "zoom in",
    "zoomed out": "zoom out", "square": "crop square", "vignetted": "vignette",
    "mirrored": "flip horizontally", "more exposed": "brighter", "more zoomed in": "zoom in",
    "more zoomed out": "zoom out", "underexposed": "darker",
    "overexposed": "brighter", "less bright": "darker", "less dark": "brighter",
}
_DEGREED = ("brighter", "darker", "increase contrast", "decrease contrast", "increase saturation",
            "decrease saturation")


def _image_level(v: str) -> Edit | None:
    """'brighter', 'a little brighter', 'much more saturated', 'blurry' … of the whole image."""
    deg, core = degree(re.sub(r"^(?:have|with|get)\s+", "", strip_look(v)))
    core = re.sub(r"^(?:more )(?=(?:saturated|colou?rful|vibrant|vivid|contrasty|exposed)$)", "more ", core)
    value = _LEVELS.get(core)
    if value is None and deg == "":
        m = re.match(r"^(saturated|colou?rful|vibrant|vivid|contrasty|exposed)$", core)
        if m and v.strip().split()[0] in ("more", "much", "way", "a", "even"):
            value = _LEVELS.get("more " + core)
    if value is None:
        return None
    if deg and value in _DEGREED:
        value = f"slightly {value}" if value in ("brighter", "darker") else f"{value} slightly"
    return Edit("transform", value=value)


_QUALITIES = {"brightness": ("brighter", "darker"), "exposure": ("brighter", "darker"),
              "contrast": ("increase contrast", "decrease contrast"),
              "saturation": ("increase saturation", "decrease saturation"),
              "vibrance": ("increase saturation", "decrease saturation"),
              "vibrancy": ("increase saturation", "decrease saturation"),
              "colour saturation": ("increase saturation", "decrease saturation"),
              "color saturation": ("increase saturation", "decrease saturation"),
              "warmth": ("warmer", "cooler"), "colour temperature": ("warmer", "cooler"),
              "color temperature": ("warmer", "cooler")}
_UP = re.compile(r"^(?:increase|increases|increased|increasing|raise|raised|boost|boosted|up|upped|"
                 r"add|more|bump up|bump|turn up|crank up|pump up|lift|heighten|enhance|amp up|"
                 r"push|punch up|higher|strengthen|intensify|max out)$")
_DOWN = re.compile(r"^(?:decrease|decreased|reduce|reduced|lower|lowered|lessen|turn down|tone down|"
                   r"cut|drop|dial down|dial back|less|lower|weaken|soften|mute|pull back|"
                   r"bring down|knock down|take down|minimise|minimize)$")


def h_quality(direction: str, q: str, deg: str = "", **_) -> Edit | None:
    """'increase the contrast', 'lower the saturation a bit', 'more contrast'."""
    q = re.sub(r"^(?:the |its |the image's |the photo's |the picture's )", "", q.strip())
    q = re.sub(r"\s+(?:of|in|on)\s+.+$", "", q) if not is_image(q) else q
    q = re.sub(r"\s+levels?$", "", q)
    pair = _QUALITIES.get(q)
    if pair is None:
        return None
    up = _UP.match(direction) is not None
    if not up and _DOWN.match(direction) is None:
        return None
    value = pair[0] if up else pair[1]
    d, rest = degree(deg or "")
    if rest:
        return None
    if d and value in _DEGREED:
        value = f"slightly {value}" if value in ("brighter", "darker") else f"{value} slightly"
    return Edit("transform", value=value)


_FLIP_DIRECTIONS = {"horizontally": "horizontally", "left to right": "horizontally",
                    "right to left": "horizontally", "side to side": "horizontally",
                    "left-right": "horizontally", "horizontal": "horizontally",
                    "vertically": "vertically", "top to bottom": "vertically",
                    "bottom to top": "vertically", "upside down": "vertically",
                    "up-down": "vertically", "vertical": "vertically", "sideways": "horizontally"}


def h_flip(verb: str, d: str | None = None, **_) -> Edit | None:
    if d is None:
        # A mirror image is left-right by convention; a bare "flip" names no axis.
        return Edit("transform", value="flip horizontally") if verb.startswith("mirror") else None
    d = re.sub(r"^(?:on |along |across |around )?(?:the |a )?|\s+(?:axis|direction|way)$", "", d.strip())
    d = re.sub(r"\s+axis$", "", d)
    direction = _FLIP_DIRECTIONS.get(d)
    if direction is None:
        return None
    if d == "upside down" and not verb.startswith(("flip", "mirror", "reflect")):
        return None
    return Edit("transform", value="flip " + direction)


_CLOCKWISE = {"clockwise": True, "cw": True, "to the right": True, "right": True,
              "counterclockwise": False, "counter-clockwise": False, "counter clockwise": False,
              "anticlockwise": False, "anti-clockwise": False, "anti clockwise": False,
              "ccw": False, "to the left": False, "left": False}
_ROT_AMOUNT = re.compile(r"^(\d{1,3}|ninety|one hundred (?:and )?eighty|a hundred (?:and )?eighty|"
                         r"two hundred (?:and )?seventy)(\s*(?:degrees?|deg|°))?"
                         r"(?:\s+(?:to the right|to the left|clockwise|counterclockwise|"
                         r"counter-clockwise|counter clockwise|anticlockwise|anti-clockwise|"
                         r"anti clockwise|cw|ccw|right|left))?$")
_ROT_WORDS = {"ninety": 90, "one hundred eighty": 180, "one hundred and eighty": 180,
              "a hundred eighty": 180, "a hundred and eighty": 180, "two hundred seventy": 270,
              "two hundred and seventy": 270}


def h_rotate(verb: str, amount: str, **_) -> Edit | None:
    a = amount.strip()
    a = re.sub(r"^(?:by|through)\s+", "", a)
    a = re.sub(r"^(left|right|clockwise|counterclockwise|anticlockwise|ccw|cw) (\d{1,3}(?: ?(?:degrees?|°))?)$",
               r"\2 \1", a)  # "rotate left 90"
    # "a quarter turn to the right", "90 degrees in the clockwise direction"
    a = re.sub(r"^(?:a |one )?(quarter|half)(?: (?:of a )?(?:turn|rotation))?\b",
               lambda m: "90 degrees" if m.group(1) == "quarter" else "180 degrees", a)
    a = re.sub(r"\s+in (?:the|a) (\S+) direction$", r" \1", a)
    a = re.sub(r"\s+(?:turn|rotation)$", "", a)
    m = _ROT_AMOUNT.match(a)
    if not m:
        return None
    number, unit = m.group(1), m.group(2)
    direction = a[m.end(2) if m.group(2) else m.end(1):].strip() or None
    if not verb.startswith("rot") and unit is None:
        return None  # "turn it 90" without "degrees" is too loose to be sure
    d = int(number) if number.isdigit() else _ROT_WORDS.get(number)
    if d is None or not 0 < d < 360:
        return None
    if d == 180:
        return Edit("transform", value="rotate 180 degrees")
    if direction is None:
        return Edit("transform", value=f"rotate {d} degrees")
    clockwise = _CLOCKWISE[direction]
    if d > 180:  # 270 clockwise is 90 counterclockwise
        d, clockwise = 360 - d, not clockwise
    return Edit("transform", value=f"rotate {d} degrees {'clockwise' if clockwise else 'counterclockwise'}")


def h_zoom(direction: str, x: str | None = None, **_) -> Edit | None:
    value = "zoom in" if direction in ("in", "into", "closer") else "zoom out"
    if x is None or is_image(x):
        return Edit("transform", value=value)
    t = ent(x)
    return Edit("transform", target=t, value=value) if t and value == "zoom in" else None


def const(family: str, value: str) -> Handler:
    def handler(**_):
        return Edit(family, value=value)
    handler.__name__ = f"const_{family}_{value.replace(' ', '_')}"
    return handler


def h_style_verb(verb: str, **_) -> Edit | None:
    s = LEX["style_verbs"].get(verb_lemma(verb) or verb) or LEX["style_verbs"].get(verb)
    while s in LEX["style_verbs"]:
        s = LEX["style_verbs"][s]
    return Edit("style", value=LEX["style_synonyms"].get(s, s)) if s else None


def h_filter(v: str, **_) -> Edit | None:
    s = style_value(v)
    if s is None or s in ("blur", "sharpen", "vignette", "negative"):
        return None
    return Edit("style", value=s)


def h_dress(x: str, y: str, **_) -> Edit | None:
    t, g = ent(x), entity(y)
    return Edit("clothing", target=t, value=g) if t and valid_entity(g) and is_garment(g) or \
        (t and valid_entity(g) and y.startswith(("a ", "an ")) and g in LEX["garments"]) else None


def h_put_in(x: str, y: str, **_) -> Edit | None:
    g = entity(y)
    if is_garment(g) and not is_garment(entity(x)):
        t = ent(x)
        return Edit("clothing", target=t, value=g) if t and valid_entity(g) else None
    return None


def h_wear(x: str, y: str, **_) -> Edit | None:
    t, g = ent(x), entity(y)
    if t and valid_entity(g) and not is_image(x):
        return Edit("clothing", target=t, value=g)
    return None


def h_cut_hair(x: str, **_) -> Edit | None:
    owner = hair_owner(x)
    return Edit("hair", target=owner or None, value="short") if owner is not None else None


def h_size(verb: str, x: str, deg: str = "", **_) -> Edit | None:
    value = verb_entry(verb, "size_verbs")
    return h_size_value(x, value, deg) if value else None


def h_size_noun(direction: str, n: str, x: str, deg: str = "", **_) -> Edit | None:
    """'increase the height of the tree' → taller; 'reduce the size of the dog' → smaller."""
    up = _UP.match(direction) is not None
    if not up and _DOWN.match(direction) is None:
        return None
    return h_size_value(x, LEX["size_nouns"][n]["up" if up else "down"], deg)


def h_size_value(x: str, value: str, deg: str = "") -> Edit | None:
    t = ent(x)
    d, rest = degree(deg)
    if t is None or rest:
        return None
    return Edit("size", target=t, value=f"{d} {value}" if d else value)


def h_own_part(verb: str, x: str, part: str, **_) -> Edit | None:
    """'make the man close his eyes' is 'close the man's eyes'."""
    owner = ent(resolve_pronoun(x))
    if owner is None or not is_being(owner) or part not in LEX["body_parts"]:
        return None
    return h_state_verb(verb, f"{owner}'s {part}")


def h_scale(xv: str, **_) -> Edit | None:
    """'scale the shapes to be bigger', 'resize the dog to look smaller'."""
    words = xv.split()
    for i in range(1, len(words)):
        x, v = " ".join(words[:i]), " ".join(words[i:])
        t, s = ent(x), size_value(re.sub(r"^(?:to\s+(?:be\s+|look\s+)?|up\s+|down\s+)", "", v))
        if t and s:
            return Edit("size", target=t, value=s)
    return None


def h_local_filter(verb: str, x: str, **_) -> Edit | None:
    """'blur the background', 'pixelate the boy's face': a filter on a part of the image."""
    value = {"blur": "blur", "sharpen": "sharpen", "pixelate": "pixelate", "pixelise": "pixelate",
             "pixelize": "pixelate", "soften": "blur"}.get(verb_lemma(verb) or verb)
    t = ent(x)
    if value is None or t is None:
        return None
    return Edit("transform", target="background" if is_background(t) else t, value=value)


# A thing made blurry / pixelated is a local filter on it.
_LOCAL_FILTER_STATES = {"blurry": "blur", "blurred": "blur", "blurred out": "blur", "out of focus": "blur",
                        "pixelated": "pixelate", "pixelated out": "pixelate", "pixellated": "pixelate"}


def verb_entry(verb: str, table: str) -> str | None:
    """The lexicon ``table``'s value for a (possibly inflected, multi-word) verb: 'aged up' → the
    entry of 'age up'."""
    words = verb.split()
    key = " ".join([verb_lemma(words[0]) or words[0]] + words[1:])
    return LEX[table].get(key) or LEX[table].get(verb)


def h_age_verb(verb: str, x: str, amount: str | None = None, **_) -> Edit | None:
    direction = verb_entry(verb, "age_verbs")
    t = ent(x)
    if direction is None or t is None:
        return None
    if amount:
        value = age_value(f"{amount} years {direction}")
        return Edit("age", target=t, value=value) if value else None
    return Edit("age", target=t, value=direction)


def h_state_verb(verb: str, x: str, **_) -> Edit | None:
    value = verb_entry(verb, "state_verbs")
    t = ent(x)
    if value is None or t is None:
        return None
    return target_value("make", x, value, strict=True) or Edit("state", target=t, value=value)


def h_give(xy: str, verb: str = "give", **_) -> Edit | None:
    """'give <X> <Y>': a garment, hair, an expression, or something added to X."""
    words = xy.split()
    for i in range(1, len(words)):
        x, y = " ".join(words[:i]), " ".join(words[i:])
        if re.match(r"^(?:the|a|an|his|their|my)$", x):
            continue
        if not (re.match(r"^(?:an?|some|the|\w+ hair|\w+ \w+ hair|\w+ (?:expression|look|face))\b", y)
                or expression_value(y) or hair_owner(y) is not None or re.match(r"^\w+ \w+$", y)
                or len(y.split()) == 1 or is_image(x)):
            continue
        e = _give(x, y)
        if e is not None and not (e.family == "add" and " " in x and not is_being(x)):
            return e
    return None


_MEASURE = re.compile(rf"^(?:an? |some )?{alternation(LEX['measure_nouns'])}s? of ")


def drop_measure(y: str) -> str:
    """'a layer of fog' → 'fog', 'a pair of sunglasses' → 'sunglasses'."""
    return _MEASURE.sub("", y.strip())


def _give(x: str, y: str) -> Edit | None:
    y = re.sub(r"\s+(?:to (?:wear|put on|have|hold)|on)$", "", drop_measure(y))  # "a hat to wear"
    if x.strip() in ("me", "us"):
        return h_add(y)  # "give me a red car" asks for an object
    if is_image(x):
        v = re.sub(r"^(?:an?|the)\s+", "", y)
        level = _image_level(re.sub(r"\s+(?:tone|tones|look|feel|colou?rs?)$", "", v))
        if level is not None:  # "give the photo a warmer tone"
            return level
        if re.search(r"\b(?:look|feel|style|effect|filter|vibe|tone|theme)$", v):
            return h_filter(v)
        g = classify_global(v)  # "give it golden hour lighting", "give it an overcast sky"
        return g if g is not None and g.family in ("time", "weather", "season") else None
    target = ent(x)
    y = y.strip()
    if target is None:
        return None
    if re.sub(r"^(?:an?|the) ", "", y) in LEX["hair_styles"] and is_being(target):
        return Edit("hair", target=target, value=re.sub(r"^(?:an?|the) ", "", y))  # "a mohawk"
    if re.search(rf"\b{_HAIR}$", y):
        hv = hair_value(y)
        return Edit("hair", target=target, value=hv) if hv else None
    ex = expression_value(y)
    if ex is not None:
        return Edit("expression", target=target, value=ex)
    m = re.match(rf"^((?:\w+ )?\w+) ({_BODY})$", entity(y))
    if m and colour_value(m.group(1)):  # "the owl with green eyes": the owl's eyes are green
        return Edit("colour", target=f"{target}'s {m.group(2)}", value=colour_value(m.group(1)))
    obj = entity(y)
    if not valid_entity(obj):
        return None
    if is_garment(obj):
        return Edit("clothing", target=target, value=obj)
    if not re.match(r"^(?:an?|some|the|\d+|two|three|four|five)\b", y) and y.split()[0] not in \
            LEX["numbers"] and len(y.split()) > 1 and head(obj) not in LEX["facial_hair"]:
        return None
    return Edit("add", value=obj, place=target)


def h_make(xv: str, verb: str = "make", reverse: bool = False, strict: bool = False, **_) -> Edit | None:
    """'make <X> <V>' and friends: try every split (shortest X first); ``reverse`` reads '<V> <X>'
    captions ('blue car'), ``strict`` refuses open-class adjectives there."""
    m = _INSTEAD_OF.search(xv)
    if m:  # "make the sofa leather instead of fabric": what it was is not the edit
        return h_make(xv[:m.start()], verb=verb, reverse=reverse, strict=strict)
    words = xv.split()
    if reverse and words and words[0] in ("a", "an", "the", "some"):
        words = words[1:]
    for i in range(1, len(words)):
        x, v = " ".join(words[:i]), " ".join(words[i:])
        if reverse:
            x, v = v, x
        e = target_value(verb, x, v, strict=strict)
        if e is not None:
            return e
    if not reverse:  # "make the moon huge in the sky": where the thing is, said again
        m = _WHERE_TAIL.search(xv)
        if m:
            return h_make(xv[:m.start()], verb=verb, strict=strict)
    return None


_INSTEAD_OF = re.compile(r" (?:instead of|rather than) .+$")
_WHERE_TAIL = re.compile(r" (?:in|on|at) (?:the|this|that) (?:sky|picture|photo|image|pic|shot|scene|frame|"
                         r"background|foreground|middle|center|centre)$")


_GROWN_FACIAL_HAIR = re.compile(rf"^({alternation(LEX['facial_hair'])})(?:ed|d)$")  # "bearded"
_PAINT_VERBS = ("paint", "color", "colour", "recolor", "recolour", "tint", "dye", "repaint", "spray")


@functools.lru_cache(maxsize=1 << 16)
def target_value(verb: str, x: str, v: str, strict: bool = False) -> Edit | None:
    verb = verb_lemma(verb) or verb
    if verb in _PAINT_VERBS:
        c = colour_value(v)
        if c is None:
            if verb == "dye":
                hv, owner = hair_value(v), hair_owner(x)
                if hv and owner is not None:
                    return Edit("hair", target=owner or None, value=hv)
            return None
        owner = hair_owner(x)
        if owner is not None:
            return Edit("hair", target=owner or None, value=c)
        if is_background(x):
            return Edit("background", value=c)
        t = colour_target(x)
        return Edit("colour", target=t, value=c) if t else None
    if is_image(x):
        if strict:
            return None
        lv = strip_look(v)
        if lv in LEX["weather_verbs"] or verb_lemma(lv.split()[0] if lv else "") in LEX["weather_verbs"] \
                and len(lv.split()) == 1:
            return Edit("weather", value=LEX["weather_verbs"].get(lv) or
                        LEX["weather_verbs"][verb_lemma(lv)])
        lit = _LIT_STATES.get(strip_look(v))
        if lit is not None:  # "make the scene neon-lit"
            return Edit("state", target="scene", value=lit)
        return classify_global(v) or _image_level(v) or count_value(v)  # "make it twice as many X"
    if is_background(x):
        if strict and not (colour_value(v) or head(background_value(v) or "") in LEX["scenes"]):
            return None  # a caption names a real background ("beach background"), not "cut out the"
        return h_background(v)
    local = _LOCAL_FILTER_STATES.get(strip_look(v))
    if local is not None and ent(x) is not None:  # "make the boy's face blurry" = blur it
        return h_local_filter(local, x)
    sky = sky_value(x, v)
    if sky is not None:
        return sky
    if entity(x) in ("lighting", "light", "colours", "colors", "tones", "colour", "color") and \
            strip_look(v) in ("warmer", "cooler", "colder"):  # "make the lighting warmer"
        return Edit("transform", value="warmer" if strip_look(v) == "warmer" else "cooler")
    if entity(x) in ("weather", "season", "time of day", "time", "lighting", "style", "art style"):
        return None if strict else h_change(x, v)
    if entity(x) in _QUALITIES:  # "make the contrast higher", "the saturation a little lower"
        d, core = degree(strip_look(v))
        up = {"higher": True, "stronger": True, "more": True, "increased": True, "lower": False,
              "weaker": False, "less": False, "reduced": False, "decreased": False}.get(core)
        if up is None:
            return None
        return h_quality("increase" if up else "decrease", entity(x), deg="a little" if d else "")
    owner = hair_owner(x)
    if owner is not None:
        hv = hair_value(v)
        return Edit("hair", target=owner or None, value=hv) if hv else None
    target = ent(x)
    if target is None:
        return None
    switched = switch_value(x, v)
    if switched is not None:
        return switched
    if _AT_PLACE.match(v):
        placed = setting_value(v)  # "make the car underwater", "the house should be on the moon"
        if placed is not None and (placed.family == "background" or not strict):
            return placed
    aged = being_aged(target, v) if not strict else None
    if aged is not None:
        return aged
    covered = covered_with(x, v)
    if covered is not None:
        return covered
    if is_being(target):
        hv = person_hair_value(v)
        if hv is not None:
            return Edit("hair", target=target, value=hv)
    m = re.match(r"^(?:wear|wears|wearing|be wearing|put on|dressed in|dress in|dressed up in|"
                 r"dressed as|in|with)\s+(.+)$", v)
    if m and (v.startswith(("wear", "dress", "put on")) or is_garment(entity(m.group(1)))):
        g = entity(m.group(1))
        return Edit("clothing", target=target, value=g) if valid_entity(g) else None
    m = re.match(rf"^(?:have|has|with|get|grow)\s+((?:an?|some|the|\w+ hair|\w+ {_BODY})\b.*)$", v)
    if m and not strict:
        return _give(x, m.group(1))
    mat = material_value(v)
    if mat is not None:  # "make the car gold" is a material; "paint the car gold" a colour (above)
        return Edit("material", target=target, value=mat)
    c = colour_value(strip_look(v))
    if c is not None:
        t = colour_target(x)
        return Edit("colour", target=t, value=c) if t else None
    a = age_value(v)
    if a is not None:
        return Edit("age", target=target, value=a)
    sz = size_value(v)
    if sz is not None:
        return Edit("size", target=target, value=sz)
    ex = expression_value(v)
    if ex is not None:
        return Edit("expression", target=target, value=ex)
    if is_being(target):
        fh = _GROWN_FACIAL_HAIR.match(strip_look(v))
        if fh:
            return Edit("add", value=fh.group(1), place=target)
    m = re.match(r"^(?:be |look like |into |become |turn into |like )?((?:an?|the) \S.*)$", v)
    if m and verb in ("make", "turn") and not strict and not style_value(m.group(1)) and \
            not re.match(r"^(?:an?|some) ", x):  # "make a balloon above the valley" is no target
        # "make the dog a cat" / "make her a zombie": the thing becomes another thing.
        y = entity(m.group(1))
        # "an orange" with its article is the fruit; "orange" alone is the colour
        if valid_entity(y) and y != target and (colour_value(y) is None or m.group(1).startswith("a")) \
                and material_value(y) is None and not is_image(y):
            return Edit("replace", target=removal_target(x) or target, value=y)
    if verb in ("make", "turn") and not strict and is_plural(head(target)) and is_plural(v) and \
            valid_entity(entity(v)) and all("NOUN" in parts_of_speech(w) for w in v.split()[-1:]) \
            and colour_value(v) is None and material_value(v) is None and not style_value(v):
        return Edit("replace", target=removal_target(x) or target, value=entity(v))  # "make the flowers sunflowers"
    s = state_value(v, strict=strict)
    if s is not None:
        return Edit("state", target=target, value=s)
    return _changed_state(target, x, v, strict)


def _changed_state(target: str, x: str, v: str, strict: bool) -> Edit | None:
    """'make the skin smoother' (a comparative is its adjective: smooth; whiter is the colour
    white) and 'make the house burn' (a verb: the thing is doing it, 'burning')."""
    v = strip_look(v)
    if " " in v or not v.isalpha():
        return None
    pos = parts_of_speech(v)
    if "ADJ" in pos and v.endswith("er"):
        base = lemma(v, "ADJ")
        if base != v:
            c = colour_value(base)
            if c is not None:
                t = colour_target(x)
                return Edit("colour", target=t, value=c) if t else None
            s = state_value(base, strict=strict)
            return Edit("state", target=target, value=s) if s else None
    if "VERB" in pos and lemma(v, "VERB") == v and not strict:
        s = state_value(present_participle(v), strict=True)
        return Edit("state", target=target, value=s) if s else None
    return None


# ----------------------------------------------------------------------------------------------
# The tables

# Word classes for constrained slots ({verb:flip}); verbs match every inflection.
add_classes({
    "flip": alternation(["flip", "mirror", "reflect"], inflect=True),
    "flipdir": alternation(sorted(_FLIP_DIRECTIONS) + [f"{d} axis" for d in ("horizontal", "vertical")]
                           + ["on the horizontal axis", "on the vertical axis", "along the horizontal axis",
                              "along the vertical axis", "across the horizontal axis",
                              "across the vertical axis", "horizontally and", "the other way"]),
    "rotate": alternation(["rotate", "turn", "spin", "tilt"], inflect=True),
    "up": _UP.pattern[4:-2],
    "down": _DOWN.pattern[4:-2],
    "quality": alternation(_QUALITIES),
    "zoomdir": r"(?:in|into|out|closer)",
    "styleverb": alternation(LEX["style_verbs"], inflect=True),
    "sizeverb": alternation(LEX["size_verbs"], inflect=True),
    "ageverb": alternation(LEX["age_verbs"], inflect=True),
    "stateverb": alternation(LEX["state_verbs"], inflect=True),
    "addverb": alternation(LEX["verbs"]["add"]),
    "paintverb": alternation(_PAINT_VERBS, inflect=True),
    "degree": alternation(LEX["degrees"]["slightly"] | LEX["degrees"][""]),
    "rel": _REL,
    "filterverb": alternation(["blur", "sharpen", "pixelate", "pixelise", "pixelize"], inflect=True),
    "countverb": alternation(["double", "triple", "halve"], inflect=True),
    "flipadj": r"(?:horizontal|vertical)",
    "updown": r"(?:up|down)",
    "updir": rf"(?:{_UP.pattern[4:-2]}|{_DOWN.pattern[4:-2]})",
    "sizenoun": alternation(LEX["size_nouns"]),
    "part": alternation(LEX["body_parts"]),
    "onoff": r"(?:on|off)",
    "hairverb": alternation(["curl", "braid", "straighten"], inflect=True),
})


def _make_global(v: str, **_) -> Edit | None:
    return classify_global(v)


def _style_only(v: str, **_) -> Edit | None:
    s = style_value(v)
    return Edit("style", value=s) if s else None


FRAMES: tuple[Frame, ...] = (
    Frame("background", "{y} (for|as) [the] (background|backdrop|bg)", lambda y, **_: h_background(y)),
    # whole-image transforms (first: "add a vignette" is not an object to add)
    Frame("transform", "{verb:flip} [<img>] {d:flipdir}", h_flip),
    Frame("transform", "{verb:flip} [<img>]", h_flip),
    Frame("transform", "{verb:rotate} [<img>] {amount}", h_rotate),
    Frame("transform", "(invert|negate|reverse) [the] <colour> [(of|in) <img>]", const("transform", "invert")),
    Frame("transform", "(invert|negate) [<img>]", const("transform", "invert")),
    Frame("transform", "invert <img>'s <colour>", const("transform", "invert")),
    Frame("transform", "(make|turn|convert) [<img>] [into] [a] [(photo|photographic)] negative",
          const("transform", "invert")),
    Frame("transform", "(apply|add) [a] negative [(filter|effect)] [to <img>]", const("transform", "invert")),
    Frame("transform", "blur [<img>] [(out|up)]", const("transform", "blur")),
    Frame("transform", "(~saturate|~oversaturate) [(them|<img>|the colou?rs|the colors|the colours)] [more]",
          const("transform", "increase saturation")),
    Frame("transform", "sharpen [<img>] [up]", const("transform", "sharpen")),
    Frame("transform", "(pixelate|pixelise|pixelize) [<img>]", const("transform", "pixelate")),
    Frame("transform", "{verb:filterverb} (out|up) {x}", h_local_filter),
    Frame("transform", "(~put|~add|~apply|~place) [a] {verb:filterverb} (over|on|to|onto|across) {x}",
          h_local_filter),
    Frame("transform", "(~put|~add|~apply) [a] {x} {verb:filterverb} [(effect|filter)]",
          lambda verb, x, **_: h_local_filter(verb, f"the {x}") if not is_image(x) else None),
    Frame("transform", "{verb:filterverb} {x} [(out|up|a bit|a little|slightly)]", h_local_filter),
    Frame("transform", "(do|apply|make|perform|add|give <img>) [a] {d:flipadj} (flip|mirror|reflection) "
          "[(of|to|on) <img>]", lambda d, **_: h_flip("flip", d)),
    Frame("transform", "(~pull|~bring|~turn|~crank|~dial|~tone|~knock|~push|~pump|~bump|~take) [the] "
          "{q:quality} {p:updown} [(of|in|on) <img>] [{deg:degree}]",
          lambda q, p, deg="", **_: h_quality("bump up" if p == "up" else "bring down", q, deg)),
    Frame("transform", "(apply|add|put) [a] [gaussian] (blur|blurring) [(filter|effect)] [(to|on) <img>]",
          const("transform", "blur")),
    Frame("transform", "(apply|add|put) [a] (sharpen|sharpening) [(filter|effect)] [(to|on) <img>]",
          const("transform", "sharpen")),
    Frame("transform", "(apply|add|put) [a] (pixelation|pixelate) [(filter|effect)] [(to|on) <img>]",
          const("transform", "pixelate")),
    Frame("transform", "(brighten|lighten) [up] [<img>] [up] [{deg:degree}]",
          lambda deg="", **_: _image_level(f"{deg} brighter")),
    Frame("transform", "darken [<img>] [{deg:degree}]", lambda deg="", **_: _image_level(f"{deg} darker")),
    Frame("transform", "(make|render|get) <img> {v}", lambda v, **_: _image_level(v)),
    Frame("transform", "(make|render) [the] <colour> [of <img>] {v}", lambda v, **_: _image_level(v)),
    Frame("transform", "{direction:up} [(the|more|extra|some)] {q:quality} [(of|in|on|to) <img>] [{deg:degree}]",
          h_quality),
    Frame("transform", "{direction:down} [(the|some)] {q:quality} [(of|in|on) <img>] [{deg:degree}]", h_quality),
    Frame("transform", "{direction:up} <img>'s {q:quality} [{deg:degree}]", h_quality),
    Frame("transform", "{direction:down} <img>'s {q:quality} [{deg:degree}]", h_quality),
    Frame("transform", "(zoom|zoom way|punch) {direction:zoomdir} [(on|of|from|to|into|at|onto)] [<img>] "
          "[(a bit|a little|slightly)]", h_zoom),
    Frame("transform", "zoom <img> {direction:zoomdir}", h_zoom),
    Frame("transform", "(zoom|punch|push) {direction:zoomdir} [(closer|tighter|more)] (on|to|into|onto|at|towards) {x} "
          "[(a bit|a little|slightly)]",
          h_zoom),
    Frame("transform", "(zoom|punch|push) (into|onto) {x}", lambda x, **_: h_zoom("in", x)),
    Frame("transform", "(warm|warm up|heat up) [the] [(colors|colours|tones|white balance|colour temperature|"
          "color temperature|lighting|light)] [(of|in) <img>] [<img>]",
          const("transform", "warmer")),
    Frame("transform", "(cool|cool down|cool off) [the] [(colors|colours|tones|white balance|colour temperature|"
          "color temperature|lighting|light)] [(of|in) <img>] "
          "[<img>]", const("transform", "cooler")),
    Frame("transform", "(crop|trim) [<img>] [(to|into|as)] [a] [1:1] square [(shape|format|aspect ratio)]",
          const("transform", "crop square")),
    Frame("transform", "make <img> [a] square [crop]", const("transform", "crop square")),
    Frame("transform", "(crop|trim) [<img>] (to|into|as) [a] 1:1 [(ratio|aspect ratio|format|square)]",
          const("transform", "crop square")),
    Frame("transform", "make <img> square (by cropping|with a crop)", const("transform", "crop square")),
    Frame("transform", "(add|apply|put|give <img>) [a] [dark] vignette [(effect|filter)] "
          "[(to|on|around|onto|in) {anything}]", const("transform", "vignette")),
    Frame("transform", "vignette [<img>]", const("transform", "vignette")),
    Frame("transform", "(~darken|~shade|~fade) [the] (corners|edges) [(of <img>)] [(with|using|by adding) [a] vignette]",
          const("transform", "vignette")),
    # colour removal and filters that are styles
    Frame("style", "(remove|drop|take out|strip|drain|take away|get rid of) [the] [all] [the] <colour> "
          "[(from|of|in) <img>]", const("style", "black and white")),
    Frame("style", "desaturate [<img>] [(completely|fully|entirely)]", const("style", "black and white")),
    Frame("style", "(~take|~drain|~suck|~strip|~pull) [(all|every bit of)] [the] <colour> out [(of <img>)]",
          const("style", "black and white")),
    Frame("style", "(draw|show|keep) only the (outline|outlines|edges|contours|contour) [of <img>]",
          const("style", "line drawing")),
    Frame("style", "(apply|add|use|put|give <img>) [(a|an)] {v} (filter|effect|tone|tint|look|finish|overlay) "
          "[(to|on|over) <img>]", h_filter),
    Frame("style", "{verb:styleverb} [<img>]", h_style_verb),
    Frame("style", "(redo|render|draw|redraw|paint|repaint|recreate|reimagine|depict|present|show|make|turn|"
          "convert|reproduce|remake|do|transform) <img> (as|like|into) {v}", _make_global),
    Frame("style", "(put|render|redo|show|draw|redraw|paint|repaint|recreate|reimagine|do|sketch) <img> "
          "(in|with|using) {v}", _make_global),
    Frame("style", "(draw|paint|sketch|render|redo|do) <img> (in|with|using) {v}", _style_only),
    # count and text
    Frame("count", "{verb:countverb} {x}", h_count),
    Frame("count", "(~reduce|~lower|~decrease|~cut|~cut down on|~cut down|~thin out|~lessen) the (number|amount|count) "
          "of {x}", lambda x, **_: count_value(f"reduce {x}")),
    Frame("count", "(~remove|~delete|~erase|~take out|~get rid of) (some|a few|a couple|half) of {x}",
          lambda x, **_: count_value(f"reduce {x}")),
    Frame("text", "(~write|~add|~put|~overlay|~type|~print|~place|~insert|~stamp|~paint|~spell out) [the] "
          "(text|words|word|caption|message|phrase|slogan|saying|lettering) [(saying|reading|that says)] {v} "
          "[(on|onto|over|across|to|in|at|along|under|above) {p}]", lambda v, p=None, **_: h_text(v, p, quoted=False)),
    Frame("text", "(~write|~add|~put|~overlay|~type|~print|~place|~insert|~stamp|~paint|~spell out) {v} "
          "[(on|onto|over|across|to|in|at|along|under|above) {p}]", h_text),
    Frame("text", "(~change|~rename|~set) [the] {p} (name|text|title|wording|lettering) to {v}",
          lambda v, p, **_: h_text(v, p, quoted=False)),
    Frame("text", "(~change|~replace|~edit) the (text|words|writing|wording|lettering) (on|of) {p} (to|with|so it says) {v}",
          lambda v, p, **_: h_text(v, p, quoted=False)),
    Frame("text", "(~change|~set) {p} to {v}", lambda v, p, **_: h_text(v, p, quoted=True) if _carries_text(p) else None),
    Frame("text", "{p}: {v}", lambda v, p, **_: h_text_colon(p, v) if _carries_text(p) or re.search(
        r" (?:text|sign|caption|name|wording|title|lettering)$", p) else None),
    Frame("text", "(~rename) {p} [to] {v}", lambda v, p, **_: h_text(v, p, quoted=False)),
    Frame("text", "(~make|~have|~let|~get|~change|~edit) {p} (say|read|show|display|to say|to read|to show|"
          "so it says|so it reads|so it shows|so that it says) {v}", lambda v, p, **_: h_text(v, p, quoted=False)),
    # replace
    Frame("replace", "<replace> {x} (with|by|for) {y}", h_replace),
    Frame("replace", "<swap> {x} (for|with|to|into|out for) {y}",
          lambda x, y, **_: h_background(y) if is_background(x) else h_change(x, y, "swap")),
    Frame("replace", "substitute {y} for {x}", h_replace),
    Frame("replace", "substitute {x} (with|by) {y}", h_replace),
    Frame("replace", "(use|put|place|have|add|give me|show|draw|paint) {y} (instead of|in place of|"
          "rather than) {x}", h_replace),
    Frame("replace", "{y} (instead of|in place of|rather than|replacing) {x}", h_replace),
    Frame("replace", "{y} where {x} (is|was|are|were|used to be|stands|sits|is now)", h_replace),
    # background
    Frame("background", "(change|set|make|turn|switch|replace|update|swap|alter|convert) [the] "
          "(background|backdrop|bg) [(color|colour)] (to|into|with|for|as|be|to be) {v}", h_background),
    Frame("background", "(make|set|paint|color|colour) [the] (background|backdrop|bg) {v}", h_background),
    Frame("background", "(use|give it|add|apply|choose|pick|put|set|give <img>) [(a|an)] {v} "
          "(background|backdrop)", h_background),
    Frame("hair", "(~shave) {x}", lambda x, **_: Edit("hair", target=_head_owner(x), value="bald")
          if _head_owner(x) is not False else None),
    Frame("hair", "{verb:hairverb} {x}", lambda verb, x, **_: _hair_verb(verb, x)),
    Frame("hair", "(~put|~tie|~style|~do|~wear|~have) {x} (in|into|up in) {y}",
          lambda x, y, **_: Edit("hair", target=hair_owner(x) or None, value=entity(y))
          if hair_owner(x) is not None and entity(y) in LEX["hair_styles"] else None),
    # remove ("take ten years off her" is her age)
    Frame("remove", "(~empty|~clear|~rid) {p} of [(all|the|all the|any)] {x}",
          lambda p, x, **_: h_remove(x) if not p.endswith((" out", " off", " away")) else None),
    Frame("remove", "(~fix|~repair|~correct|~clean up|~clean|~retouch|~remove) [(all|any)] [the] {x} "
          "[(on|in|from|of) {p}]", lambda x, p=None, **_: h_remove(x) if _is_defect(x) else None),
    Frame("age", "(~take|~knock|~shave) {amount} years off [of] {x}",
          lambda amount, x, **_: h_age_verb("de-age", x, amount)),
    Frame("remove", "<remove> {x}", h_remove),
    Frame("remove", "(~take|~get|~cut|~wipe|~clone|~edit|~paint|~photoshop|~erase|~clear|~scrub|~crop|~rub) "
          "{x} (out|off|away) [(of|from) {p}]", h_remove),
    Frame("remove", "(~take|~get|~remove|~lift|~pull|~clear|~erase|~delete) {x} (out of|off of|off|from) {p}",
          h_remove),
    Frame("remove", "(~take|~get|~erase|~delete|~remove) {x} (away from|out from) {p}", h_remove),
    Frame("remove", "(~take|~get|~cut|~wipe|~rub|~clean|~clear|~knock) (off|out|away) {x}", h_remove),
    Frame("remove", "(~make|~have|~let|~get) {x} (disappear|vanish|go away|gone|leave|be gone)", h_remove),
    Frame("remove", "(i|we) (don't|do not|dont) (want|need|like) {x} [(in|on) <img>] [anymore]", h_remove),
    # add
    Frame("add", "there (should be|is|are|will be|needs to be|must be|'s|ought to be|could be|can be) {y}",
          lambda y, **_: h_add_or_instead(y)),
    Frame("add", "(can|could|should|will|would) there be {y}", lambda y, **_: h_add_or_instead(y)),
    Frame("add", "(make|let) there be {y}", lambda y, **_: h_add(y)),
    Frame("add", "(~fill|~cover|~decorate|~sprinkle|~surround|~dot|~populate) {p} (with|in) {y}", h_fill),
    Frame("add", "(~scatter|~sprinkle) {y} (over|across|on|onto|around) {p}",
          lambda y, p, **_: h_add(y, place=p)),
    Frame("add", "give me {y}", lambda y, **_: h_add(y)),
    Frame("add", "(~make|~have|~let|~get) {p} (hold|holding|carry|carrying|be holding|be carrying) {y}",
          lambda p, y, **_: h_held(p, y)),
    Frame("add", "(~shine|~point|~aim|~cast) {y} (on|onto|at) {p}", lambda y, p, **_: h_add(y, place=p)),
    Frame("add", "have {y} {rel:rel} {p}", lambda y, rel, p, **_: h_add(y, place=p, relation=rel)),
    # clothing / hair / size / age / state verbs
    Frame("clothing", "(~dress|~clothe) [up] {x} (in|with|as) {y}", h_dress),
    Frame("clothing", "(put|place) {x} (in|into) {y}", h_put_in),
    Frame("clothing", "{x} (wear|wears|wearing|dressed in|is wearing|in|with|has|having|sporting) {y}",
          lambda x, y, **_: h_wear(x, y) if is_garment(entity(y)) and is_being(entity(x)) else None),
    Frame("hair", "(~cut|~trim|~shorten) {x} [(short|shorter)]", h_cut_hair),
    Frame("size", "(~scale|~resize) {xv}", h_scale),
    Frame("size", "{verb:sizeverb} {x} [{deg:degree}]", h_size),
    Frame("size", "{direction:updir} the {n:sizenoun} of {x} [{deg:degree}]", h_size_noun),
    Frame("age", "(~age) {x} [(up|down|forward|back)] (to|into|until) {amount}", h_age_to),
    Frame("age", "(~age) {x} {p:updown}", lambda x, p, **_: h_age_verb(f"age {p}", x)),
    Frame("age", "{verb:ageverb} {x} by {amount} years", h_age_verb),
    Frame("age", "{verb:ageverb} {x}", h_age_verb),
    Frame("state", "(~turn|~switch|~flick|~click|~power) {p:onoff} {x}", h_switch),
    Frame("state", "(~turn|~switch|~flick|~click|~power) {x} {p:onoff}", h_switch),
    Frame("state", "(~light|~illuminate|~fill) {x} (with|by|using) {v}", lambda x, v, **_: _lit(x, entity(v))),
    Frame("state", "{verb:stateverb} {x} [with {stuff}]", h_state_verb),

    Frame("state", "(~make|~have|~let|~get) {x} {verb:stateverb} (his|her|their|its) {part:part}", h_own_part),
    Frame("background", "(~put|~set|~move|~place|~transport|~take|~send|~relocate|~bring) <img> {v}",
          lambda v, **_: setting_value(v) or _in_weather(v)),
    Frame("background", "[(get|have|put|place|show)] <img> (on|in front of|against) [(a|an)] {v} (background|backdrop)",
          lambda v, **_: h_background(v)),
    Frame("transform", "(~add|~apply|~give|~put) [(a|an|some)] (bokeh|blur|blurry|background blur) [(effect)] "
          "(to|on|in) [the] (background|bg|backdrop)", const_local("blur")),
    Frame("background", "(~put|~set|~move|~place|~transport|~take|~send|~relocate|~bring|~drop|~teleport|"
          "~stick|~plop|~throw|~show) {xv}", lambda xv, **_: h_place_split(xv)),
    Frame("material", "(~build|~rebuild|~carve|~sculpt|~craft|~construct|~make|~cast|~mould|~mold|~forge|~redo|"
          "~recreate|~remake) {x} (out of|from|of|in|with|using) {v}",
          lambda x, v, **_: Edit("material", target=ent(x), value=material_value(v))
          if ent(x) and material_value(v) and not x.endswith((" instead", " rather")) else None),
    # give / make / change
    Frame("give", "<give> {xy}", h_give),
    Frame("paint", "{verb:paintverb} {xv}", lambda verb, xv, **_: h_make(xv, verb=verb)),
    Frame("change", "(make|turn|change|transform|convert) {x} (look like|resemble|appear like) {y}",
          lambda x, y, **_: h_change(x, y) if re.match(r"^(?:an?|the) ", y) else None),
    Frame("change", "{verb:change} {x} back (into|to) {y}", lambda verb, x, y, **_: h_change(x, y, verb)),
    Frame("expression", "(~change|~edit|~fix) {x} (expression|face|facial expression) so (he's|she's|he is|she is|"
          "they're|it's|they are|it is) {v}", lambda x, v, **_: _expression_of(x, v)),
    Frame("change", "{verb:change} {x} (into|to|in to|over to) {y}",
          lambda verb, x, y, **_: h_change(x, y, verb)),
    Frame("change", "{verb:change} (into|to) {y}", lambda y, **_: classify_global(y)),
    Frame("make", "(~make|~get|~have|~let|~render|~keep|~leave) {xv}", lambda xv, **_: h_make(xv)),
    Frame("make", "{verb:change} {xv}", lambda verb, xv, **_: h_make(xv, verb=verb)),
    # add (after the others: "put <garment> on <being>" is clothing, handled in h_add)
    Frame("add", "{verb:addverb} {y}", h_add_verb),
)
add_classes({"change": alternation(LEX["verbs"]["change"], inflect=True)})

_PARTICIPLES = {f: v for v in LEX["participle_verbs"] for f in {participle(v)}}
_PARTICIPLE = alternation(_PARTICIPLES)
add_classes({"vbn": _PARTICIPLE,
             # longest first: the first alternative that lets the rest match wins
             "wish": r"(?:(?:i|we)(?:'d| would)(?: really)? (?:like|love) (?:it if|to see|to have|to get)|"
                     r"(?:can|could|may) (?:we|i) (?:get|have|see)|"
                     r"(?:i|we) (?:want|need) to (?:see|have|get)|"
                     r"(?:i|we)(?:'d| would) rather(?: have| see| get)?|"
                     r"(?:i|we)(?:'d| would)?(?: really| just| also)? (?:want|like|love|prefer|need|"
                     r"wish|hope|expect)|(?:i'm|i am|we're|we are) (?:looking for|hoping for))",
             "modal": r"(?:should|must|needs to|need to|has to|have to|ought to|will|shall|could|"
                      r"would|can|might|is going to|are going to|is supposed to|are supposed to)"})

REWRITES: tuple[Rewrite, ...] = (
    Rewrite("has no", "{x} {m:modal} have no {y}", "{x} without {y}"),
    Rewrite("has not", "{x} (shouldn't|should not|mustn't|must not|can't|cannot|won't|doesn't|does not|"
            "don't|do not) (have|contain|show|include|be wearing|wear|be holding|hold) {y}", "{x} without {dy}"),
    Rewrite("has", "{x} {m:modal} have {y}", "{x} with {y}"),
    Rewrite("where it is", "{y} {m:modal} be where {x} (is|was|are|were|used to be)", "{y} where {x} is"),
    Rewrite("but it is", "{x} but (it's|it is|they're|they are|as|make it|turned into) {y}", "turn {x} into {y}"),
    Rewrite("painted it", "(make|have|get) <img> (look|seem) (like|as if|as though) {y} (painted|drew|sketched|"
            "made|did|created|illustrated) it", "paint it in the style of {y}"),
    Rewrite("painted it", "{v} <img> (like|as if|as though) {y} (painted|drew|sketched|made|did|created|illustrated) it",
            "paint it in the style of {y}"),
    Rewrite("the sun is", "[(make|have|get) <img> (look|seem) (like|as if|as though)] the sun (is|was) (setting|going down)",
            "make it sunset"),
    Rewrite("the sun is", "[(make|have|get) <img> (look|seem) (like|as if|as though)] the sun (is|was) (rising|coming up)",
            "make it sunrise"),
    Rewrite("see", "see {y}", "{y}"),
    Rewrite("but with", "{x}, but with {y}", "{x} with {y}"),
    Rewrite("by doing", "{c} by {p:ing} {rest}", "{p} {rest}"),
    Rewrite("until", "{c} until {rest}", "{c}"),
    Rewrite("what would", "[(what|how)] would {x} look [like] (with|in) {y}", "give {x} {y}"),
    Rewrite("what would", "[(what|how)] would {x} look [like] {v}", "make {x} look {v}"),
    Rewrite("version of", "[(a|an|the)] {v} version of {x}", "make {x} {v}"),
    Rewrite("look better with", "{s:subjectwould} look (better|nicer|good|great|cool) (with|in) {y}", "give {s} {y}"),
    Rewrite("he does", "{s:subject} {v}", "make {s} {v}"),
    Rewrite("show", "show {xv}", "make {xv}"),
    Rewrite("show as", "(show|picture|imagine|depict) {x} as {y}", "turn {x} into {y}"),
    Rewrite("it should be instead", "(it|this|that) {m:modal} be {y} (instead of|rather than|in place of) {x}",
            "replace {x} with {y}"),
    Rewrite("colon part", "{x}: {part:part} {v}", "make {x}'s {part} {v}"),
    Rewrite("colon no", "{x}: (no|without|minus) {y}", "{x} without {y}"),
    Rewrite("colon zoom", "zoom in: {x}", "zoom in on the {x}"),
    Rewrite("colon zoom", "(close-up|closeup|closer) [(on|of)]: {x}", "zoom in on the {x}"),
    Rewrite("needs doing", "[<img>] (needs|need|could use|wants|requires) [(a|some)] [(bit of|little|more)] {n:deverbal}",
            "{n} it"),
    Rewrite("would be great if", "[(it|this|that)] (would|'d|will) be (great|cool|nice|awesome|amazing|lovely|better|fun|"
            "perfect|ideal|good|neat) if {c}", "{c}"),
    Rewrite("looked", "{x} (looked|seemed|appeared) {v}", "make {x} look {v}"),
    Rewrite("at the camera", "{c} (at|into|towards|toward) the (camera|viewer|lens)", "{c}"),
    Rewrite("needs", "{p} (needs|could use|is missing|lacks|should get) {y}", "add {y} to {dp}"),
    Rewrite("should go", "{x} {m:modal} (go|disappear|vanish|leave|be gone|be removed|be deleted|be erased|"
            "go away)", "remove {x}"),
    Rewrite("dash", "{x} (-|:) (remove|delete|erase|gone)", "remove {x}"),
    Rewrite("for her", "{y} for {x:someone}", "give {x} {y}"),
    Rewrite("says", "{p} {m:modal} (say|read|show|display) {v}", "make {p} say {v}"),
    Rewrite("colon", "{x}: {v}", "make {x} {v}"),
    Rewrite("but as", "{x}, but (as|it's|it is|turned into|make it) {y}", "turn {x} into {y}"),
    Rewrite("how it would look", "[see] how {x} (would|will|might|could) look (as|like) {y}", "make {x} look like {y}"),
    Rewrite("how it would look", "[see] how {x} (would|will|might|could) look with {y}", "give {x} {y}"),
    Rewrite("the way", "{v} <img> (the way|like|how) {y} (would|would have|did|does|might) [(it|have done it|do it|"
            "paint it|have painted it|paint)]", "paint it in the style of {y}"),
    Rewrite("gerund", "{p:ing} {rest}", "{p} {rest}"),
    Rewrite("wish for a thing", "{w:wish} there to <be> {y}", "add {y}"),
    Rewrite("wish for a state", "{w:wish} [for] {x} to {v}", "make {x} {v}"),
    Rewrite("wish for a thing somewhere", "{w:wish} {y} to <be> {rel:rel} {p}", "add {y} {rel} {p}"),
    Rewrite("wish", "{w:wish} {y}", "{y}"),
    Rewrite("wish for a state", "{w:wish} {xv}", "make {xv}"),
    Rewrite("question", "(can|could|would|will|should|might|may) {x} (look|appear|seem) {v}", "make {x} look {v}"),
    Rewrite("question", "(can|could|would|will|should|might|may) {x} be {v}", "make {x} {v}"),
    Rewrite("question", "(can|could|would|will|should|might|may) {x} {v:hasverb} {y}", "make {x} {v} {y}"),
    Rewrite("needs", "[<img>] (needs|need|could use|wants|requires) {y}", "{y}"),
    Rewrite("make it so", "make it so [that] {x} <be> {v}", "make {x} {v}"),
    Rewrite("look like", "(make|have|get) <img> (look|seem|appear) (like|as if|as though) {x} <be> {v}",
            "make {x} {v}"),
    Rewrite("instead", "{c} instead", "{c}"),
    Rewrite("deverbal noun", "[(do|apply|perform|add|give <img>)] [(a|an|some)] {x} {n:deverbal}", "{n} the {x}"),
    Rewrite("statement", "{x} {m:modal} [be] {v}", "make {x} {v}"),
    Rewrite("participle", "{m:make} {x} {p:vbn}", "{p} {x}"),
    Rewrite("participle with rest", "{m:make} {x} {p:vbn} {rest}", "{p} {x} {rest}"),
    Rewrite("caption participle", "{x} {p:vbn} [{rest}]", "{p} {x} {rest}"),
    Rewrite("participle caption", "{p:vbn} {rest}", "{p} {rest}"),
    Rewrite("adverb participle caption", "{d} {p:vbn} [{rest}]", "{p} {rest} {d}"),
    Rewrite("is", "{x} (is|are|'s|was|were|looks|look|seems|appears) [now] {v}", "make {x} {v}"),
    Rewrite("but", "{x}, (but|only|just|except|now|yet|and) [make it] {v}", "make {x} {v}"),
    Rewrite("comma", "{x}, {v}", "make {x} {v}"),
    Rewrite("but", "{x} but {v}", "make {x} {v}"),
    Rewrite("as", "{x} (as|like|turned into|transformed into|into) {y}", "turn {x} into {y}"),
    Rewrite("as", "(as|like|in|into) {y}", "make it {y}"),
    # "… of the photo" (not "in front of it": "it" alone is the thing before)
    Rewrite("of the image", "{v} of (the|this|that|my|your|our|whole|entire) <img>", "{v}"),
    Rewrite("instead of", "{c} (instead of|rather than) {x}", "{c}"),  # last: "X instead of Y" replaces first
)
add_classes({"make": r"(?:make|get|have|let|keep|leave|render)",
             "hasverb": r"(?:wear|have|hold|get|grow|smile|frown|laugh|cry|say|read|show)",
             "subject": r"(?:he|she)",
             "subjectwould": r"(?:he|she|it|this)(?:'d| would)",
             "someone": r"(?:him|her|them|the (?:man|woman|boy|girl|baby|child|kid|person|guy|lady))",
             # "(would you mind) putting …": gerunds that are not also nouns ("building", "painting")
             "ing": alternation({g for ws in LEX["verbs"].values() for w in ws
                                 for g in [present_participle(w.split()[0])]
                                 if w.split()[0] not in ("show", "do", "be", "have")
                                 and "NOUN" not in parts_of_speech(g)}),
             "deverbal": alternation(LEX["deverbal_nouns"])})


def _bare_noun(np: str) -> bool:
    """One or two words naming a thing, with no article ('horse', 'red car'): a caption's slot."""
    words = np.split()
    return 0 < len(words) <= 2 and words[0] not in _DEFINITE and words[0] not in ("a", "an", "some") \
        and valid_entity(np) and not is_image(np)


def _caption_with(x: str, y: str, rel: str | None = None, **_) -> Edit | None:
    """'the lake with a boat on it', 'the boy with a dog next to him', 'cat with a bow tie'."""
    if rel is not None:
        return h_add(y, place=x, relation=rel)
    y = re.sub(r"\s+on$", "", y.strip())  # "the cat with a hat on"
    g = entity(y)
    if is_garment(g) and is_being(entity(x)):
        return h_wear(x, y)
    if is_being(entity(x)):  # "the man with a beard", "girl with blonde hair": give them it
        return _give(x, y)
    if re.match(r"^(?:an?|some|\d+|two|three|four|five)\b", y) or _bare_noun(y):
        return h_add(y, place=x)  # "the lake with a boat", "yard + snowman"
    return None


def _caption_without(p: str, x: str, **_) -> Edit | None:
    """'the sofa without the cat' → remove the cat; 'the man without his hat' / 'him without a
    beard' → remove the man's hat / beard (what a person wears or grows is theirs)."""
    x = re.sub(r"\s+on$", "", x.strip())  # "he shouldn't have a tie on"
    owner, thing = ent(resolve_pronoun(p)), entity(x)
    if owner and is_being(owner) and (is_garment(thing) or head(thing) in LEX["facial_hair"]) \
            and "'s" not in thing:
        return h_remove(f"{owner}'s {thing}")
    return h_remove(x)


CAPTIONS: tuple[Frame, ...] = (
    Frame("age", "{x} (at|aged|at age|at the age of) {amount}", h_age_to),
    Frame("state", "{x} {p:onoff}", lambda x, p, **_: switch_value(x, p)),
    Frame("remove", "{x} (gone|removed|deleted|erased|taken) (from|off|out of) {p}", h_remove),
    Frame("replace", "{x} (to|into) {y}", lambda x, y, **_: h_change(x, y, "turn") if _bare_noun(x) and _bare_noun(y)
          else None),
    Frame("background", "{y} (for|as) [the] (background|backdrop|bg)", lambda y, **_: h_background(y)),
    Frame("background", "{v} (setting|scenery|location|surroundings)",
          lambda v, **_: h_background(v) if entity(v) in LEX["settings"] or head(entity(v)) in LEX["scenes"]
          else None),
    Frame("background", "{xv}", lambda xv, **_: h_place_split(xv, caption=True)),
    Frame("weather", "{y} (falling|coming down|pouring down|pouring|raining down|drifting down) "
          "[(from the sky|from above|down)]", lambda y, **_: h_add(y) if entity(y) in _WEATHER_NOUNS else None),
    Frame("count", "{y}", lambda y, **_: count_value(y)),
    Frame("text", "(text|words|caption) {v}", h_text),
    Frame("text", "{v} (text|words|caption|lettering) [(on|onto|over|across|to|in|at|along) {p}]", h_text),
    Frame("text", "{p} (that says|that reads|saying|reading|with the text|with the words|with the word) {v}",
          lambda v, p, **_: h_text(v, p, quoted=False)),
    Frame("text", "{p} with {v}", h_text),
    Frame("text", "{p}: {v}", lambda v, p, **_: h_text_colon(p, v)),
    Frame("text", "{p} (into|to) {v}", lambda v, p, **_: h_text(v, p) if v.startswith(("'", '"')) else None),
    Frame("text", "{p} (text|caption|wording|lettering) (into|=|to) {v}", lambda v, p, **_: h_text(v, p, quoted=False)),
    Frame("state", "{v}", lambda v, **_: _lit(None, v) or (Edit("state", target="scene", value=_LIT_STATES[v])
                                                           if v in _LIT_STATES else None)),
    Frame("remove", "(no|without|minus|sans|lose|bye|bye bye) [more] [the] {x}", h_remove),
    Frame("remove", "{p} (without|with no|minus|sans|free of|but without|minus the) {x}", _caption_without),
    Frame("remove", "{x} (removed|gone|deleted|erased|taken out|got rid of|out)", h_remove),
    Frame("add", "{x} with {y} {rel:rel} (it|him|her|them)", _caption_with),
    Frame("state", "{x} with [(his|her|their|its)] {part:part} {v}",
          lambda x, part, v, **_: target_value("make", f"{x}'s {part}", v) if ent(x) and is_being(ent(x)) else None),
    Frame("clothing", "{x} with {y}", _caption_with),
    Frame("transform", "[(a|an)] {d:flipadj} (flip|mirror|reflection) [of <img>]",
          lambda d, **_: h_flip("flip", d)),
    Frame("rotate", "{amount} (degree|degrees|°|deg) {d} (rotation|turn)",
          lambda amount, d, **_: h_rotate("rotate", f"{amount} degrees {d}")),
    Frame("rotate", "{amount} (degree|degrees|°|deg) (rotation|turn|rotated) [{d}]",
          lambda amount, d=None, **_: h_rotate("rotate", f"{amount} degrees" + (f" {d}" if d else ""))),
    Frame("rotate", "(rotation|rotate) [by] {amount}", lambda amount, **_: h_rotate("rotate", amount)),
    Frame("transform", "{q:quality} {direction:updown}", lambda q, direction, **_: h_quality(
        "increase" if direction == "up" else "decrease", q)),
    Frame("transform", "{v} (crop|cropped|format)", lambda v, **_: Edit("transform", value="crop square")
          if v == "square" else None),
    Frame("transform", "[(a|an)] (closer view|close-up|closeup|close up|closer shot|tighter shot|zoomed-in view|"
          "zoomed in view|tighter crop|closer crop|tighter framing) (of|on|around) {x}", lambda x, **_: h_zoom("in", x)),
    Frame("transform", "[a] vignette [(effect|filter)] [(on|to|around|in|over) {anything}]",
          const("transform", "vignette")),
    Frame("transform", "{v} <img>", lambda v, **_: _image_level(v) or classify_global(v)),
    Frame("transform", "{v} <colour>", lambda v, **_: _image_level(v)),
    Frame("transform", "{v}", lambda v, **_: _image_level(v) if re.match(
        r"^(?:more|less|higher|lower|high|low|much|a|slightly) ", v) or v in _LEVELS else None),
    Frame("background", "{v} (background|backdrop|bg)", h_background),
    Frame("background", "(background|backdrop) (of|with) {v}", h_background),
    Frame("global", "(at|in|during|on) {v}", lambda v, **_: classify_global(v)),
    Frame("global", "<img> [(in|as|like|into|at|during)] {v}", lambda v, **_: classify_global(v) or _image_level(v)),
    Frame("global", "{v}", lambda v, **_: classify_global(v)),
    Frame("add", "{y}", lambda y, **_: h_add(y) if _PLACE.match(y) and not re.match(
        r"^(?:the|this|that|these|those|his|her|their|its|my)\b", y) else None),
    # a caption of a changed attribute is short ("flooded street", "the car red"): longer text
    # is not tried split by split
    Frame("attribute", "{xv}", lambda xv, **_: None if xv.count(" ") > 6 else
          h_make(xv, strict=True) or h_make(xv, reverse=True, strict=True)),
    Frame("add", "{y}", lambda y, **_: h_add(y) if re.match(
        r"^(?:an?|some|one|two|three|four|five|six|seven|eight|nine|ten|\d+|more|another|lots of|"
        r"a few|several|many)\b", y) or _PLACE.match(y) else None),
)
