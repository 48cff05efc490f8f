"""Region names: parsing ``"face+hair"`` / ``"label:car"`` and matching them to a model's labels."""
from __future__ import annotations

import re

# Friendly names -> label names they stand for in common label sets (CelebAMask-HQ face parsing,
# COCO / ADE20K for Mask2Former). Only the labels a model actually has are used.
ALIASES: dict[str, tuple[str, ...]] = {
    "face": ("face", "skin", "nose", "eye_g", "eyeglasses", "glasses", "l_eye", "r_eye", "left_eye",
             "right_eye", "l_brow", "r_brow", "left_eyebrow", "right_eyebrow", "eyebrows", "mouth",
             "u_lip", "l_lip", "upper_lip", "lower_lip", "lips"),
    "eyes": ("l_eye", "r_eye", "left_eye", "right_eye", "eyes", "eye"),
    "brows": ("l_brow", "r_brow", "left_eyebrow", "right_eyebrow", "eyebrows", "eyebrow"),
    "lips": ("u_lip", "l_lip", "upper_lip", "lower_lip", "lips"),
    "ears": ("l_ear", "r_ear", "left_ear", "right_ear", "ears", "ear"),
    "hair": ("hair",),
    "person": ("person", "people", "human"),
}
ALIASES["faces"] = ALIASES["face"]
ALIASES["people"] = ALIASES["person"]


# Every name a region part may use without "label:": the friendly names and the labels they stand for.
KNOWN_NAMES = frozenset(ALIASES) | frozenset(label for labels in ALIASES.values() for label in labels)


def unknown_parts(parts: list[str]) -> list[str]:
    """Region parts that are neither a known name nor an explicit ``label:<name>``."""
    return [p for p in parts if not p.startswith("label:") and p not in KNOWN_NAMES]


def normalise_label(name: str) -> str:
    """Lower-case, with spaces and dashes as underscores: ``"Upper Lip" -> "upper_lip"``."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def parse_region(region: str) -> list[str]:
    """Splits ``"face+hair"`` into normalised parts; ``"label:X"`` parts keep their prefix."""
    if not isinstance(region, str) or not region.strip():
        raise ValueError(f"region: expected a non-empty string such as 'face', 'person', 'face+hair' or "
                         f"'label:car', got {region!r}")
    parts = []
    for raw in region.split("+"):
        raw = raw.strip()
        if not raw:
            raise ValueError(f"region: empty part in {region!r} (write parts as 'face+hair')")
        if raw.lower().startswith("label:"):
            label = normalise_label(raw[len("label:"):])
            if not label:
                raise ValueError(f"region: 'label:' needs a label name, e.g. 'label:car', in {region!r}")
            parts.append("label:" + label)
        else:
            parts.append(normalise_label(raw))
    return list(dict.fromkeys(parts))


def _label_index(id2label: dict) -> dict[str, set[int]]:
    """Every normalised name (and each ';'/','-separated synonym, as in ADE20K) -> label ids."""
    index: dict[str, set[int]] = {}
    for i, name in id2label.items():
        full = normalise_label(name)
        names = {full} | {normalise_label(s) for s in re.split(r"[;,]", str(name)) if s.strip()}
        for n in names:
            index.setdefault(n, set()).add(int(i))
    return index


def describe_labels(id2label: dict, limit: int = 25) -> str:
    names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def resolve_labels(parts: list[str], id2label: dict, where: str) -> set[int]:
    """Label ids for region parts. A part naming a model label exactly wins over an alias; an alias
    takes every label of its group the model has. Unknown -> ValueError listing known labels."""
    index = _label_index(id2label)
    ids: set[int] = set()
    for part in parts:
        explicit = part.startswith("label:")
        name = part[len("label:"):] if explicit else part
        if name in index:
            ids |= index[name]
            continue
        if not explicit and name in ALIASES:
            found = set().union(*(index.get(a, set()) for a in ALIASES[name]))
            if found:
                ids |= found
                continue
        raise ValueError(f"region {part!r} is not known to {where}; its labels are: "
                         f"{describe_labels(id2label)} (use 'label:<name>' or a combination like 'a+b')")
    return ids
