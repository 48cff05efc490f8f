"""The ``llm`` backend: a local transformers causal-LM folder (e.g. a small instruct model) rewrites
the instruction with a fixed few-shot prompt and greedy decoding. Its answer is kept only when it
parses under the canonical grammar and re-renders to itself; otherwise the ``rules`` result is
returned. Nothing is downloaded: the folder must hold the config, weights and tokenizer.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from .core import _unify_clean, is_canonical

# The examples show every family and a two-clause answer; the answers are the rules' own canonical
# output, so a model that copies the pattern produces text that parses.
FEW_SHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("please paint the car red", "change the colour of the car to red"),
    ("get rid of the people in the background", "remove the people in the background"),
    ("swap the cat for a dog", "replace the cat with a dog"),
    ("put some birds in the sky", "add birds to the sky"),
    ("turn it into a watercolour", "make it a watercolor painting"),
    ("make it look like winter", "change the season to winter"),
    ("it should be raining", "change the weather to rainy"),
    ("turn day into night", "change the time of day to night"),
    ("give the woman a smile", "change the expression of the woman to smiling"),
    ("make the man look older", "make the man older"),
    ("dye the girl's hair blonde", "change the hair of the girl to blonde"),
    ("dress the man in a suit", "make the man wear a suit"),
    ("make the table out of wood", "make the table out of wood"),
    ("put a beach in the background", "change the background to a beach"),
    ("make the shapes larger", "make the shapes bigger"),
    ("mirror the photo", "flip the image horizontally"),
    ("rotate it by 90 degrees clockwise", "rotate the image 90 degrees clockwise"),
    ("add a snowman and make it winter", "add a snowman; change the season to winter"),
)
PROMPT_HEADER = ("Rewrite each image-editing instruction in canonical form. Canonical clauses: add, "
                 "remove, replace X with Y, change the colour of X to C, make X out of M, make X "
                 "wear Y, change the hair/expression of X to V, make X older/younger, make X bigger/smaller, "
                 "change the background/season/weather/time of day to V, make it <style>, "
                 "flip/rotate/blur/sharpen/pixelate the image, invert the colours of the image, "
                 "make the image brighter/darker. Several clauses are joined by '; '.\n\n")


def build_prompt(cleaned: str) -> str:
    """The fixed few-shot prompt for one cleaned instruction."""
    shots = "".join(f"Instruction: {i}\nCanonical: {c}\n\n" for i, c in FEW_SHOT_EXAMPLES)
    return f"{PROMPT_HEADER}{shots}Instruction: {cleaned}\nCanonical:"


def first_answer(generated: str) -> str:
    """The model's answer: the generated text up to the first newline or prompt marker."""
    text = generated.split("\n", 1)[0]
    text = re.split(r"\b(?:Instruction|Canonical):", text, maxsplit=1)[0]
    return text.strip()


_MODELS: dict[tuple[str, str], tuple] = {}


def load_causal_lm(model_path: str | os.PathLike, device: str = "cpu"):
    """(tokenizer, model) from a local folder, cached in-process; never touches the hub."""
    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise ValueError(f"model: expected a local transformers causal-LM folder with config.json, "
                         f"got {str(model_path)!r}")
    key = (str(path.resolve()), device)
    if key not in _MODELS:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        model.to(device).eval()
        _MODELS[key] = (tokenizer, model)
    return _MODELS[key]


class LLMUnifier:
    """Few-shot causal-LM unifier with the rules as the fallback."""

    def __init__(self, model_path, device: str = "cpu", max_new_tokens: int = 48):
        self.tokenizer, self.model = load_causal_lm(model_path, device)
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self._answers: dict[str, str] = {}  # greedy decoding is deterministic: decode each text once

    @classmethod
    def cached(cls, model_path, device: str = "cpu") -> LLMUnifier:
        return _cached_unifier(str(model_path), device)

    def generate(self, cleaned: str) -> str:
        """The raw greedy continuation of the prompt for one cleaned instruction."""
        if cleaned in self._answers:
            return self._answers[cleaned]
        import torch
        enc = self.tokenizer(build_prompt(cleaned), return_tensors="pt").to(self.device)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        with torch.no_grad():
            # Only the first line is used, so decoding stops at a newline.
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      num_beams=1, pad_token_id=pad, stop_strings=["\n"],
                                      tokenizer=self.tokenizer)
        answer = self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        if len(self._answers) < 100_000:
            self._answers[cleaned] = answer
        return answer

    def unify_one(self, cleaned: str) -> str:
        # Canonical input is returned as is (this keeps the backend idempotent); otherwise the
        # answer depends only on the cleaned text, through a deterministic greedy decode.
        if is_canonical(cleaned):
            return cleaned
        from .rules import clean
        answer = clean(first_answer(self.generate(cleaned)))
        if answer and is_canonical(answer):  # case and edge punctuation are forgiven, nothing else
            return answer
        return _unify_clean(cleaned)

    def unify_cleaned(self, cleaned: list[str], progress: bool = False) -> list[str]:
        """Unify already-cleaned instructions, each distinct text decoded once."""
        unique = list(dict.fromkeys(cleaned))
        it = unique
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(unique, desc="unify (llm)", unit="instr")
        done = {c: self.unify_one(c) for c in it}
        return [done[c] for c in cleaned]


@functools.lru_cache(maxsize=4)
def _cached_unifier(model_path: str, device: str) -> LLMUnifier:
    return LLMUnifier(model_path, device=device)
