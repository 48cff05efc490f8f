"""The keyword reading (gie_core/instruction/keywords.py): the last resort of the rules backend."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gie_core.instruction import is_canonical, unify
from gie_core.instruction.grammar import render
from gie_core.instruction.keywords import read
from gie_core.instruction.text import clean

DATA = Path(__file__).parent / "data" / "liu"


@pytest.mark.parametrize("text, expected", [
    ("honestly the car would look so much better in red", "change the colour of the car to red"),
    ("I think it'd look nicer in winter", "change the season to winter"),
    ("the vibe I'm after is very film noir", "make it film noir"),
    ("it'd be nicer if the barn were in red tbh", "change the colour of the barn to red"),
    ("billboard = gone", "remove the billboard"),
])
def test_keywords_read_what_the_frames_refuse(text, expected):
    assert read(clean(text)) is not None
    assert unify(text) == expected
    assert unify(expected) == expected


@pytest.mark.parametrize("text", [
    "honestly the car would look better red or blue",    # two values
    "bg winter only pls",                                 # a place scopes the season
    "the tree in autumn colours only",                    # so does a thing
    "his hat is ugly, gone",                              # whose hat would be lost
    "the man on the left is ugly, gone",                  # which man would be lost
    "not red, the car, please",                           # a negated value
    "the dog and the cat, red",                           # two things
    "red",                                                # a value and no thing
])
def test_keywords_refuse_what_they_cannot_be_sure_of(text):
    assert read(clean(text)) is None
    assert not is_canonical(unify(text))


def test_keywords_agree_with_the_frames_where_both_read():
    """Over the tuning suites, on every phrasing the frames read, the keyword reading (when it
    reads anything) gives the same canonical instruction at least 97 % of the time (99.6 % when
    written): it stands in for the frames on text they refuse, so it must mean the same thing."""
    texts = [p for f in ("benchmark_dev.jsonl", "other_suite.jsonl")
             for line in (DATA / f).read_text("utf-8").splitlines() if line.strip()
             for p in json.loads(line)["phrasings"]]
    fired = agree = 0
    for t in texts:
        out = unify(t)
        if not is_canonical(out):
            continue
        kw = read(clean(t))
        if kw is None:
            continue
        fired += 1
        agree += render([kw]) == out
    assert fired >= 100
    assert agree >= 0.97 * fired, (agree, fired)
