"""The demo model's training instructions must keep unifying exactly as they did when they were
pinned (main at db3e73f, before LIU round 2): the lead trains on ``unify``'s output, so a change
to what a training instruction becomes changes the model's conditioning. A change here must be
a conscious decision: update tests/data/liu/trainer_instruction_pins.json in the same commit and
say why.

The texts come from trainer/data/incontext.py (GENERIC_INSTRUCTIONS and every family's
paraphrases); a new text there that is not pinned fails too, so it gets pinned on purpose.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gie_core.instruction import unify
from trainer.data.incontext import FAMILIES, GENERIC_INSTRUCTIONS

PINS = json.loads((Path(__file__).parent / "data" / "liu" / "trainer_instruction_pins.json")
                  .read_text("utf-8"))


def _current() -> dict[str, str]:
    texts = list(GENERIC_INSTRUCTIONS) + [p for f in FAMILIES.values() for p in f.paraphrases]
    return {t: unify(t) for t in texts}


def _pinned() -> dict[str, str]:
    return {**PINS["generic"], **{t: o for fam in PINS["families"].values() for t, o in fam.items()}}


def test_every_training_instruction_is_pinned():
    missing = sorted(set(_current()) - set(_pinned()))
    assert not missing, f"training instructions with no pinned unify output: {missing}"


@pytest.mark.parametrize("text", sorted(_pinned()))
def test_training_instruction_unifies_as_pinned(text):
    if text not in _current():
        pytest.skip(f"{text!r} is no longer a training instruction")
    assert unify(text) == _pinned()[text]


def test_pins_keep_the_training_families_apart():
    """What the pins record: no two in-context families share a unified instruction, and no
    family shares one with the generic instructions (which name no edit)."""
    owner: dict[str, set] = {}
    for fam, texts in PINS["families"].items():
        for out in texts.values():
            owner.setdefault(out, set()).add(fam)
    generic = set(PINS["generic"].values())
    assert all(len(fams) == 1 for fams in owner.values()), owner
    assert not generic & set(owner)
