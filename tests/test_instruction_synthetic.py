"""LIU on the trainer's synthetic data: every paraphrase of one synthetic edit must unify to one
string, and different edits must stay different. The paraphrase table is imported from
trainer/data/synthetic.py, so a new family or paraphrase there is checked here automatically.

The expected canonical strings below are written from the grammar table in docs/instruction.md,
not copied from unify's output. Phrasings the rules deliberately do not unify are listed in
OUT_OF_SCOPE with the reason; the tests also check that the list is still true (a listed phrasing
that starts unifying must be moved back in scope) and that none of them is merged into another edit.
"""
from __future__ import annotations

import itertools
import re

import pytest

from gie_core.instruction import is_canonical, parse, unify
from gie_core.instruction.rules import entity, pluralise
from trainer.data.synthetic import FAMILIES as SYNTHETIC

VARIANTS = {(f.name, v.name): v.paraphrases for f in SYNTHETIC.values() for v in f.variants}

# (family, variant) -> the canonical instruction, from the grammar table.
EXPECTED = {
    **{("recolour", c): f"change the colour of the shapes to {c}" for c in ("red", "green", "blue", "yellow")},
    ("flip", "horizontal"): "flip the image horizontally",
    ("flip", "vertical"): "flip the image vertically",
    ("rotate", "90"): "rotate the image 90 degrees clockwise",
    ("rotate", "180"): "rotate the image 180 degrees",  # clockwise or not, 180° is one edit
    ("invert", "colors"): "invert the colours of the image",
    ("grayscale", "gray"): "make it black and white",
    ("blur", "blur"): "blur the image",
    ("brightness", "brighter"): "make the image brighter",
    ("brightness", "darker"): "make the image darker",
    **{("add_object", f"{c}_{s}"): f"add a {c} {s}" for c in ("red", "blue", "yellow") for s in ("circle", "square")},
    **{("remove_object", s): f"remove the {s}" for s in ("circle", "square", "triangle")},
    ("background", "white"): "change the background to white",
    ("background", "black"): "change the background to black",
    ("background", "sky"): "change the background to a blue sky",
    ("background", "checkerboard"): "change the background to a checkerboard",
    ("background", "stripes"): "change the background to stripes",
    ("scale", "bigger"): "make the shapes bigger",
    ("scale", "smaller"): "make the shapes smaller",
    ("face", "smile"): "change the expression of the face to smiling",
    ("face", "glasses"): "add glasses",
    ("outline", "edges"): "make it a line drawing",
    ("sepia", "sepia"): "make it sepia",
    ("pixelate", "pixels"): "pixelate the image",
}

# Single phrasings left out of their group, with the reason.
OUT_OF_SCOPE = {
    "turn the image upside down": "turning a picture upside down is a 180° rotation in everyday "
                                  "speech, a vertical flip only to some; the rules do not guess",
    "make the objects bigger": "'objects' and 'shapes' are different words; the rules do not "
                               "assume which things the objects are",
    "make the objects smaller": "same as 'make the objects bigger'",
    "make the person smile": "names the person, not the face: another target",
    "add a smile": "names no target; the expression clause needs one",
    "put glasses on the face": "names a place (the face), which 'add glasses' does not",
    "give the person glasses": "names the person as the wearer, another target",
    "give the image an old photo look": "figurative: an old photo may be sepia, faded or black "
                                        "and white",
    "turn it into pixel art": "pixel art is a style (palette, hand-placed pixels) in the LIU "
                              "suite, not the pixelate filter",
}
# Whole synthetic edits the grammar has no clause for.
OUT_OF_SCOPE_GROUPS = {
    **{("move", d): "moves are refused by design (docs/instruction.md: 'put the cat on the left')"
       for d in ("left", "right", "up", "down")},
    ("face", "close_eyes"): "no clause for eyes (open/closed); 'close the eyes' names no owner",
}


def in_scope(key):
    return [p for p in VARIANTS[key] if p not in OUT_OF_SCOPE]


def test_every_synthetic_edit_is_classified():
    # A new synthetic family must be given an expected canonical form or a reason to be left out.
    assert set(VARIANTS) == set(EXPECTED) | set(OUT_OF_SCOPE_GROUPS)
    assert not set(EXPECTED) & set(OUT_OF_SCOPE_GROUPS)
    every_phrasing = {p for ps in VARIANTS.values() for p in ps}
    assert set(OUT_OF_SCOPE) <= every_phrasing, "OUT_OF_SCOPE names a phrasing the generator lacks"


@pytest.mark.parametrize("key", sorted(EXPECTED), ids="/".join)
def test_paraphrases_unify_to_the_grammar_form(key):
    out = {p: unify(p) for p in in_scope(key)}
    assert len(in_scope(key)) >= 2
    assert set(out.values()) == {EXPECTED[key]}, out
    assert is_canonical(EXPECTED[key]) and unify(EXPECTED[key]) == EXPECTED[key]


def test_different_edits_stay_distinct():
    # Every in-scope phrasing of every edit, against every phrasing of every other edit.
    unified = {key: {unify(p) for p in ps} for key, ps in VARIANTS.items()}
    for a, b in itertools.combinations(sorted(VARIANTS), 2):
        assert not unified[a] & unified[b], (a, b, unified[a] & unified[b])


def test_out_of_scope_list_is_still_true():
    for key, expected in EXPECTED.items():
        for p in VARIANTS[key]:
            if p in OUT_OF_SCOPE:
                assert unify(p) != expected, f"{p!r} now unifies: move it back in scope"
    for key in OUT_OF_SCOPE_GROUPS:
        assert len({unify(p) for p in VARIANTS[key]}) > 1, f"{key} now unifies: give it a form"


def test_the_separations_the_transforms_must_keep():
    pairs = [("flip it horizontally", "flip it vertically"),
             ("rotate it 90 degrees clockwise", "rotate it 180 degrees clockwise"),
             ("rotate it 90 degrees clockwise", "rotate it 90 degrees counterclockwise"),
             ("rotate it 90 degrees clockwise", "rotate it 90 degrees"),
             ("flip the image vertically", "rotate the image 180 degrees"),
             ("make it brighter", "make it darker"), ("blur the image", "sharpen the image"),
             ("pixelate the image", "make it pixel art"), ("make the shapes bigger", "make the shapes smaller")]
    for a, b in pairs:
        assert unify(a) != unify(b), (a, b)
    # Only the whole image loses its colour.
    assert unify("remove the colour") == "make it black and white" != unify("remove the colour of the car")
    # The same rotation said two ways is one edit.
    assert unify("rotate it 270 degrees clockwise") == unify("rotate the image 90 degrees counterclockwise") \
        == "rotate the image 90 degrees counterclockwise"
    assert unify("mirror the photo") == unify("flip the image left to right") == "flip the image horizontally"


@pytest.mark.parametrize("text", [
    "flip it",                      # which axis?
    "turn it 90",                   # no unit
    "rotate it by 0 degrees", "rotate it by 360 degrees",
    "invert the colours of the car",
    "remove every man's hat",       # no safe plural for a quantified possessive
    "remove each other",
])
def test_near_misses_are_refused(text):
    assert parse(text) == [] and not is_canonical(unify(text))


@pytest.mark.parametrize("text,expected", [
    ("Paint every shape blue.", "change the colour of the shapes to blue"),
    ("please make all the shapes blue", "change the colour of the shapes to blue"),
    ("paint each bus yellow", "change the colour of the buses to yellow"),
    ("make both cars red", "change the colour of the cars to red"),
    ("remove every tree", "remove the trees"),
    ("remove each of the trees", "remove the trees"),
    ("make each woman older", "make the women older"),
    ("make every one of the boxes red", "change the colour of the boxes to red"),
])
def test_quantifiers_get_no_article(text, expected):
    out = unify(text)
    assert out == expected
    assert not re.search(r"\b(?:the|a|an) (?:every|each|all|both)\b", out)


def test_pluralise():
    cases = {"shape": "shapes", "bus": "buses", "box": "boxes", "church": "churches",
             "berry": "berries", "boy": "boys", "woman": "women", "red car": "red cars",
             "leaf": "leaves", "sheep": "sheep", "shapes": "shapes", "children": "children"}
    for singular, plural in cases.items():
        assert pluralise(singular) == plural
    assert entity("every single shape") == "shapes"
    assert entity("all of the dogs") == "dogs"
