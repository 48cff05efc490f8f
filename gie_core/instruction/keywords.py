"""The keyword reading: the last resort of the ``rules`` backend for text no frame accepts.

A chatty or oddly built request often still names exactly one thing and exactly one value the
lexicon knows ("honestly the car would look so much better in red" → the car, red). When the
frames, the rewrites and the relaxed reading have all refused a text, this module reads it as a
bag of words: the value words found (season, weather, time of day, style, colour, material,
expression), the things named (nouns that are not values, image words or chat), and whether it
says "no"/"without"/"gone". It answers only when the signals name one edit without doubt:

- one season / weather / time of day / style value and nothing else → that whole-image edit;
- one colour or one material and one thing → that thing's colour / material;
- a removal word ("no", "without", "gone", "rid") and one thing, no value → remove it;
- one expression and one person → that person's expression.

Anything else (two values, two things, a value and a removal word) is refused, so the reading
adds edits where the rules had none and never changes what they read.
"""
from __future__ import annotations

import functools
import re

from .grammar import Edit
from .lexicon import LEX, parts_of_speech
from .text import entity, is_image, resolve_pronoun, valid_entity
from .values import colour_value, expression_value, material_value, style_value

_REMOVAL = frozenset("no without gone rid remove removed delete deleted erase erased lose minus "
                     "disappear vanish".split())
# Words that negate or hedge a value ("not red", "less winter") make the reading unsure.
_DOUBT = frozenset("not don't dont never less instead rather than but except keep same "
                   "add added more another extra".split())
# Nouns that name no thing in the picture.
_NOT_THINGS = frozenset(
    "thing things way look looks vibe vibes feel feeling mood style version edit edits bit lot "
    "lots kind sort time times idea favor favour kids kid boss friend friends mom dad client "
    "someone anyone everyone nobody somebody lol pls please thanks thank day today night "
    "moment chance help job work view shot frame photo picture image pic pics photos pictures "
    "images scene colour color colours colors tone tones shade shades effect filter finish light "
    "lighting hair skin face eyes expression background foreground side top bottom left right "
    "middle center centre corner edges part rest whole everything something nothing".split())
# Verbs of asking and liking that are also nouns ("I think", "a look"): not things.
_REQUEST_VERBS = frozenset("think like love want need wish hope prefer mean try look make turn change "
                           "give put get go set feel see show keep let guess bet add do have use help "
                           "fix edit work seem appear become render paint".split())
_DETERMINERS = frozenset("the a an this that these those my your our their some".split())
_PLACES = frozenset("bg left right background foreground middle center centre side top bottom corner".split())
_GLOBAL_TABLES = (("season", "seasons"), ("weather", "weather"), ("time", "times"))


def _ngrams(words: list[str], n: int) -> list[tuple[int, str]]:
    return [(i, " ".join(words[i:i + n])) for i in range(len(words) - n + 1)]


@functools.lru_cache(maxsize=1 << 12)
def read(c: str) -> Edit | None:
    """One edit read from the keywords of cleaned text ``c``, or ``None`` (see the module doc)."""
    words = re.findall(r"[a-z][a-z'-]*", c)
    if not words or len(words) > 30 or any(w in _DOUBT for w in words):
        return None
    used: set[int] = set()
    values: list[tuple[str, str]] = []  # (family, value)
    for n in (3, 2, 1):  # longest first: "golden hour" before "golden"
        for i, gram in _ngrams(words, n):
            if used & set(range(i, i + n)):
                continue
            found = None
            for family, table in _GLOBAL_TABLES:
                if gram in LEX[table] and gram != "clear":  # "clear the people off" is no weather
                    found = (family, LEX[table][gram])
                    break
            if found is None and n == 1 and gram in LEX["materials"]:
                found = ("material", material_value(gram))  # "a gold statue" is made of gold
            if found is None and (gram in LEX["styles"] or gram in LEX["style_synonyms"]):
                s = style_value(gram)
                found = ("style", s) if s else None
            if found is None and n == 1:
                c_val, e_val = colour_value(gram), expression_value(gram)
                if c_val and not (i and words[i - 1] in ("a", "an")):  # "an orange" is the fruit
                    found = ("colour", c_val)
                elif e_val and "ADJ" in parts_of_speech(gram) | ({"ADJ"} if gram.endswith("ing") else set()):
                    found = ("expression", e_val)
            if found and found[1]:
                values.append(found)
                used.update(range(i, i + n))
    things = []
    hair = "hair" in words or any(w in LEX["person_hair_adjectives"] for w in words)
    nouns = 0  # every word that may be a noun: a removal must name exactly one
    possessive = places = False
    for i, w in enumerate(words):
        if w.endswith("'s"):
            w, possessive = w[:-2], True
        if i in used or w in _NOT_THINGS or w in _REMOVAL or len(w) < 3 or is_image(w):
            if w in _PLACES:
                nouns, places = nouns + 2, True  # "the man on the left": where it is tells apart
            continue
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if "NOUN" in parts_of_speech(w) and w not in LEX["pronouns"] and w not in _REQUEST_VERBS:
            nouns += 1
        if w in LEX["pronouns"]:
            if w in ("his", "hers", "its") or (w == "her" and nxt and nxt not in _REMOVAL and
                                               "NOUN" in parts_of_speech(nxt)):
                possessive = True
                continue  # a possessive: the thing is the noun after it
            things.append(resolve_pronoun(w))
        elif (w in LEX["garments"] or w in LEX["beings"] or w in LEX["scenes"] or
              parts_of_speech(w) == frozenset({"NOUN"}) or
              ("NOUN" in parts_of_speech(w) and w not in _REQUEST_VERBS and i and words[i - 1] in _DETERMINERS)) \
                and valid_entity(entity(w)):
            things.append(entity(w))
    things = list(dict.fromkeys(things))
    removal = any(w in _REMOVAL for w in words)
    if any(w in LEX["body_parts"] and w != "hair" for w in words):
        return None  # "the owl with green eyes": the eyes, not the owl
    kinds = {f for f, _ in values}
    if len(set(values)) > 1 or len(kinds) > 1:
        return None
    if not values:
        # whose it is or where it is would be lost ("his hat", "the man on the left"): refused
        ok = removal and len(things) == 1 and nouns == 1 and not possessive
        return Edit("remove", target=things[0]) if ok else None
    if removal:
        return None
    family, value = values[0]
    if hair and family == "colour":  # "her hair, blonde pls": the hair of whoever is named
        people = [t for t in things if t in LEX["beings"]]
        if len(people) > 1 or len(things) > len(people):
            return None
        owner = people[0] if people and people[0] not in ("man", "woman") else None
        return Edit("hair", target=owner, value=value)
    if family in ("season", "weather", "time", "style"):
        # a thing or a place named beside it scopes the change ("only the background in winter")
        return Edit(family, value=value) if not things and not places and nouns == 0 else None
    if len(things) != 1 or places:
        return None
    if family == "expression":
        return Edit("expression", target=things[0], value=value) if things[0] in LEX["beings"] else None
    return Edit(family, target=things[0], value=value)
