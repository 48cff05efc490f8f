"""The ``llm`` backend: a local transformers causal-LM folder (e.g. a small instruct model) rewrites
the instruction with a fixed few-shot prompt and greedy decoding, as the paper's frozen lightweight
LLM does. Nothing is downloaded: the folder must hold the config, weights and tokenizer.

Its answer is judged for *form*, not against the rules' grammar (:func:`check_answer`): one or more
imperative clauses of plain English that keep the instruction's objects, attributes and numbers.
When the rules can read the answer, their canonical form of it is returned (so "paint the car red"
and "make the car red" from the model still meet in one string); a well-formed answer the rules
cannot read is returned as the model wrote it. Anything else, a decoding past ``timeout`` seconds,
or a model error falls back to the rules. Answers are cached per cleaned instruction (in-process,
and in a JSON file with ``cache_file``), and an accepted answer unifies to itself (idempotence).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
from pathlib import Path

from .core import _unify_clean, is_canonical
from .lexicon import LEX, lemma, parts_of_speech, verb_lemma

log = logging.getLogger(__name__)

# The examples show every family and a two-clause answer; the answers are the rules' own canonical
# output, so a model that copies the pattern produces text the rules read.
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
DEFAULT_TIMEOUT = 20.0  # seconds of decoding per instruction before the rules take over
MAX_ANSWER_WORDS = 40


def build_prompt(cleaned: str) -> str:
    """The fixed few-shot prompt for one cleaned instruction."""
    shots = "".join(f"Instruction: {i}\nCanonical: {c}\n\n" for i, c in FEW_SHOT_EXAMPLES)
    return f"{PROMPT_HEADER}{shots}Instruction: {cleaned}\nCanonical:"


def first_answer(generated: str) -> str:
    """The model's answer: the generated text up to the first newline or prompt marker."""
    text = generated.split("\n", 1)[0]
    text = re.split(r"\b(?:Instruction|Canonical):", text, maxsplit=1)[0]
    return text.strip()


# ----------------------------------------------------------------------------------------------
# Judging an answer's form

_FILLER = frozenset("a an the of to in on at into onto with and it its this that is be make "
                    "change turn image picture photo please some more by for from".split())
_KEEP_EXACT = re.compile(r"\b(?:\d+|left|right|top|bottom|front|back|clockwise|counterclockwise|"
                         r"horizontally|vertically|add|remove|older|younger|bigger|smaller|"
                         r"brighter|darker|in|out)\b")


def _content(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    out = set()
    for w in words:
        if w in _FILLER:
            continue
        out.add(lemma(lemma(w, "VERB"), "NOUN"))
    return out


def _equivalents(word: str) -> set[str]:
    """A word with the forms the rules treat as the same (him → man, ten → 10, grey → gray …)."""
    out = {word}
    if word in LEX["pronouns"]:
        out.add(LEX["pronouns"][word])
    n = LEX["numbers"].get(word)
    if n is not None:
        out.add(str(n))
    for table in ("colour_aliases", "materials", "weather", "seasons", "times", "style_synonyms",
                  "expression_synonyms", "age", "size", "phrase_synonyms"):
        v = LEX[table].get(word)
        if isinstance(v, str):
            out.update(v.split())
    return out


def check_answer(answer: str, cleaned: str) -> str | None:
    """Why ``answer`` is not a usable rewrite of ``cleaned`` (``None`` when it is): it must be one
    or more imperative English clauses ('; '-separated), each opening with a verb in its base form,
    of plain lower-case words, keeping the instruction's objects and attributes (a noun, colour or
    number of the instruction may not vanish) and its contrast words (add/remove, left/right …)."""
    if not answer:
        return "empty answer"
    if len(answer.split()) > MAX_ANSWER_WORDS:
        return "answer too long"
    if not re.fullmatch(r"[a-z0-9' ,;-]+", answer):
        return "answer has characters an instruction does not need"
    if re.search(r"\b(?:instruction|canonical|rewrite|answer)\b", answer):
        return "answer repeats the prompt"
    for clause in answer.split("; "):
        first = clause.split(" ", 1)[0]
        if not first or verb_lemma(first) != first or "VERB" not in parts_of_speech(first):
            return f"clause {clause!r} does not open with a verb in its base form"
    kept = set()
    for w in _content(answer):
        kept |= _equivalents(w)
    verbs = {lemma(c.split()[0], "VERB") for c in re.split(r"[;,.]| and | then ", cleaned) if c.split()}
    lost = [w for w in _content(cleaned) if not (_equivalents(w) & kept) and w not in verbs and _matters(w)]
    if lost:
        return f"answer drops {lost[0]!r}"
    if set(_KEEP_EXACT.findall(answer)) - set(_KEEP_EXACT.findall(cleaned)) & \
            {"left", "right", "top", "bottom", "clockwise", "counterclockwise"}:
        return "answer adds a side or direction the instruction does not name"
    return None


def _matters(word: str) -> bool:
    """Objects, attributes and numbers must survive; verbs and politeness need not."""
    if word.isdigit() or word in LEX["numbers"] or word in LEX["colours"]:
        return True
    pos = parts_of_speech(word)
    return not pos or bool(pos & {"NOUN", "ADJ", "PROPN", "NUM"})


# ----------------------------------------------------------------------------------------------
# The model

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
    """Few-shot causal-LM unifier with form validation, a cache, a timeout and the rules as the
    fallback. ``cache_file``: a JSON file that keeps answers across processes (read at start,
    written after each batch)."""

    def __init__(self, model_path, device: str = "cpu", max_new_tokens: int = 48,
                 timeout: float | None = None, cache_file: str | os.PathLike | None = None):
        self.tokenizer, self.model = load_causal_lm(model_path, device)
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        self._answers: dict[str, str] = {}  # greedy decoding is deterministic: decode each text once
        self._accepted: set[str] = set()  # answers kept as written (the rules could not read them)
        self._lock = threading.Lock()
        self.cache_file = Path(cache_file) if cache_file else None
        if self.cache_file and self.cache_file.is_file():
            try:
                data = json.loads(self.cache_file.read_text("utf-8"))
                self._answers.update({k: v for k, v in data.get("answers", {}).items()
                                      if isinstance(k, str) and isinstance(v, str)})
            except (OSError, ValueError) as e:
                log.warning("llm cache %s unreadable (%s); starting empty", self.cache_file, e)
        self.stats = {"model": 0, "rules_fallback": 0, "cached": 0}

    @classmethod
    def cached(cls, model_path, device: str = "cpu", timeout: float | None = None) -> LLMUnifier:
        return _cached_unifier(str(model_path), device, timeout)

    def generate(self, cleaned: str) -> str:
        """The raw greedy continuation of the prompt for one cleaned instruction ("" on a model
        error); decoding stops at a newline or after ``timeout`` seconds."""
        with self._lock:
            if cleaned in self._answers:
                self.stats["cached"] += 1
                return self._answers[cleaned]
        import torch
        enc = self.tokenizer(build_prompt(cleaned), return_tensors="pt").to(self.device)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        try:
            with torch.no_grad():
                out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                          num_beams=1, pad_token_id=pad, stop_strings=["\n"],
                                          tokenizer=self.tokenizer, max_time=self.timeout)
            answer = self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        except (RuntimeError, ValueError) as e:  # a broken model must not break unification
            log.warning("llm: generation failed for %r (%s); the rules decide", cleaned, e)
            return ""
        with self._lock:
            if len(self._answers) < 100_000:
                self._answers[cleaned] = answer
        return answer

    def unify_one(self, cleaned: str) -> str:
        # Canonical input, and answers this unifier accepted, are returned as they are (this keeps
        # the backend idempotent); otherwise the answer depends only on the cleaned text.
        if is_canonical(cleaned) or cleaned in self._accepted:
            return cleaned
        from .rules import clean
        answer = clean(first_answer(self.generate(cleaned)))
        problem = check_answer(answer, cleaned)
        if problem is None:
            self.stats["model"] += 1
            ruled = _unify_clean(answer)
            if is_canonical(ruled):
                return ruled
            self._accepted.add(answer)
            return answer
        self.stats["rules_fallback"] += 1
        return _unify_clean(cleaned)

    def unify_cleaned(self, cleaned: list[str], progress: bool = False) -> list[str]:
        """Unify already-cleaned instructions, each distinct text decoded once."""
        unique = list(dict.fromkeys(cleaned))
        it = unique
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(unique, desc="unify (llm)", unit="instr")
        done = {c: self.unify_one(c) for c in it}
        self.save_cache()
        return [done[c] for c in cleaned]

    def save_cache(self) -> None:
        if self.cache_file is None:
            return
        tmp = self.cache_file.with_name(self.cache_file.name + ".tmp")
        tmp.write_text(json.dumps({"answers": self._answers}, ensure_ascii=False), "utf-8")
        os.replace(tmp, self.cache_file)


@functools.lru_cache(maxsize=4)
def _cached_unifier(model_path: str, device: str, timeout: float | None) -> LLMUnifier:
    return LLMUnifier(model_path, device=device, timeout=timeout)
