"""Language instruction unification (LIU): paraphrases of one edit map to one canonical
instruction, at training and at inference time, so the text encoder sees one format.

>>> from gie_core.instruction import unify
>>> unify("Could you please paint the car red?")
'change the colour of the car to red'
>>> unify("blonde hair", bank=["change the hair of the girl to blonde", "remove the dog"])
'change the hair of the girl to blonde'
"""
from .bank import BankMatch, InstructionBank, model_bank
from .core import (
                   BACKENDS,
                   MAX_CHARS,
                   InstructionError,
                   InstructionTypeError,
                   check_instruction,
                   is_canonical,
                   parse,
                   unify,
                   unify_batch,
                   unify_match,
                   unify_match_batch,
                   unify_rules,
)
from .grammar import CLAUSE_SEPARATOR, FAMILIES, Edit, render
from .rules import clean

__all__ = [
    "unify", "unify_batch", "unify_match", "unify_match_batch", "BankMatch", "InstructionBank",
    "model_bank", "unify_rules", "parse", "is_canonical", "render", "clean", "Edit",
    "FAMILIES", "CLAUSE_SEPARATOR", "BACKENDS", "MAX_CHARS", "InstructionError",
    "InstructionTypeError", "check_instruction",
]
