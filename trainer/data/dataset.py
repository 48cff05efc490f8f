"""In-context training samples: pairs grouped by (unified) instruction, drawn k examples + 1 query.

``prepare_groups`` reads records, drops pairs with bad images (counted), unifies the instructions
(LIU; off for the ablation), groups pairs by instruction, drops groups with fewer than
``min_group`` pairs (counted) and splits train/validation *by instruction*. ``InContextDataset``
turns a group list into samples: sample ``i`` is a pure function of ``(seed, i)``, which makes
``--resume`` exact (the data position is just the sample counter) and multi-process sharding simple.
"""
from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .formats import BadImage, PairRecord, describe, load_image, load_records

log = logging.getLogger("trainer.data")


@dataclass
class Group:
    """All pairs of one (unified) instruction."""

    instruction: str  # the text the text encoder sees
    pairs: list[PairRecord]
    family: str | None = None
    seen: bool | None = None


@dataclass
class DataReport:
    """What data preparation kept and dropped, for the log."""

    pairs_read: int = 0
    pairs_kept: int = 0
    pairs_skipped: int = 0  # pairs with a bad image
    bad_files: dict[str, str] = field(default_factory=dict)  # reference -> reason
    groups_dropped: int = 0
    pairs_in_dropped_groups: int = 0
    train_groups: int = 0
    val_groups: int = 0
    held_out_pairs: int = 0
    unified_changed: int = 0

    def summary(self) -> str:
        s = (f"data: {self.pairs_read} pairs read, {self.pairs_kept} kept; {self.pairs_skipped} pairs with "
             f"{len(self.bad_files)} bad image files skipped; {self.groups_dropped} instruction groups with < 2 pairs dropped "
             f"({self.pairs_in_dropped_groups} pairs); {self.train_groups} train / {self.val_groups} validation "
             f"instructions; {self.unified_changed} instructions rewritten by LIU")
        if self.held_out_pairs:
            s += f"; {self.held_out_pairs} pairs of held-out families kept out of training"
        return s

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def unify_instructions(texts: Sequence[str], enabled: bool = True, backend: str = "rules") -> list[str]:
    """LIU on a list of instructions (``enabled=False``: whitespace-normalised originals)."""
    if not enabled:
        return [" ".join(t.split()) for t in texts]
    from gie_core import instruction

    uniq = sorted(set(texts))
    if hasattr(instruction, "unify_batch"):
        mapped = dict(zip(uniq, instruction.unify_batch(uniq, backend=backend)))
    else:
        mapped = {t: instruction.unify(t, backend=backend) for t in uniq}
    return [mapped[t] for t in texts]


def _check_record(rec: PairRecord, min_side: int, full: bool) -> tuple[str, str] | None:
    """``(file, reason)`` of the record's first bad image, or None."""
    for ref in (rec.before, rec.after):
        try:
            load_image(ref, min_side, header_only=not full)
        except BadImage as e:
            return describe(ref), str(e)
    return None


def _fraction(text: str, seed: int) -> float:
    return zlib.crc32(f"{seed}:{text}".encode()) / 2**32


def prepare_groups(source: str | Sequence[PairRecord], *, fmt: str = "auto", liu: bool = True,
                   liu_backend: str = "rules", min_group: int = 2, val_fraction: float = 0.1,
                   seed: int = 0, min_side: int = 16, verify: str = "full", include_unseen: bool = False,
                   progress: bool = True) -> tuple[list[Group], list[Group], DataReport]:
    """Reads and groups a dataset: returns ``(train_groups, val_groups, report)``.

    ``verify``: ``"full"`` decodes every image once up front, ``"header"`` only opens it (faster
    for big datasets; later decode failures are skipped at sampling time). Pairs whose ``seen``
    field is False (held-out families) are left out unless ``include_unseen``.
    """
    from tqdm.auto import tqdm

    if verify not in ("full", "header", "none"):
        raise ValueError(f"verify: expected full, header or none, got {verify!r}")
    if min_group < 2:
        raise ValueError(f"min_group: expected at least 2 (one example + one query), got {min_group}")
    records = load_records(source, fmt) if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__") \
        else list(source)
    report = DataReport(pairs_read=len(records))
    kept: list[PairRecord] = []
    for rec in tqdm(records, desc="checking images", disable=not progress or verify == "none"):
        if rec.seen is False and not include_unseen:
            report.held_out_pairs += 1
            continue
        bad = None if verify == "none" else _check_record(rec, min_side, verify == "full")
        if bad is not None:
            report.bad_files[bad[0]] = bad[1]
            report.pairs_skipped += 1
            log.warning("skipped pair %s: %s", rec.key, bad[1])
            continue
        kept.append(rec)
    report.pairs_kept = len(kept)
    unified = unify_instructions([r.instruction for r in kept], liu, liu_backend)
    report.unified_changed = sum(u != " ".join(r.instruction.split()) for u, r in zip(unified, kept))
    by_text: dict[str, list[PairRecord]] = {}
    for u, r in zip(unified, kept):
        by_text.setdefault(u, []).append(r)
    groups = []
    for text in sorted(by_text):
        pairs = by_text[text]
        if len(pairs) < min_group:
            report.groups_dropped += 1
            report.pairs_in_dropped_groups += len(pairs)
            continue
        fams = Counter(p.family for p in pairs)
        groups.append(Group(text, pairs, fams.most_common(1)[0][0], pairs[0].seen))
    train = [g for g in groups if _fraction(g.instruction, seed) >= val_fraction]
    val = [g for g in groups if _fraction(g.instruction, seed) < val_fraction]
    if val_fraction > 0 and not val and len(train) > 1:  # keep at least one validation instruction
        val = [min(train, key=lambda g: _fraction(g.instruction, seed))]
        train = [g for g in train if g is not val[0]]
    report.train_groups, report.val_groups = len(train), len(val)
    log.info(report.summary())
    return train, val, report


def place_mask_in_cell(mask: torch.Tensor, placement, tile: int) -> torch.Tensor:
    """An ``[H,W]`` mask of the query's *after* image put into its ``tile``×``tile`` cell the way
    ``gie_core.visual_prompt`` placed the image (same source crop and content box)."""
    st, sl, sh, sw = placement.source_box
    ct, cl, ch, cw = placement.content_box
    m = mask[st:st + sh, sl:sl + sw][None, None].float()
    m = F.interpolate(m, size=(ch, cw), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    cell = torch.zeros((tile, tile), dtype=torch.float32)
    cell[ct:ct + ch, cl:cl + cw] = m.clamp(0, 1)
    return cell


class InContextDataset(torch.utils.data.Dataset):
    """Sample ``i`` = one instruction group, ``k`` example pairs + 1 query pair, as a visual prompt.

    Items are dicts: ``grid``/``hint`` ``[3,Hg,Wg]`` (0..1), ``target_mask`` and ``region_mask``
    ``[Hg,Wg]`` (the SAM region inside the target cell; zeros when none), ``instruction`` and
    ``family``. ``length`` is nominal: any index is valid, the content depends on ``(seed, i)`` only.
    """

    def __init__(self, groups: Sequence[Group], k: int = 1, tile: int = 256, seed: int = 0,
                 length: int = 10**9, resize: str = "crop", region_masks: Callable | None = None,
                 min_side: int = 16, max_retries: int = 8):
        if not groups:
            raise ValueError("groups: expected at least one instruction group with >= 2 pairs, got none "
                             "(is the dataset empty, or were all images bad?)")
        if k < 1:
            raise ValueError(f"k (examples per sample): expected >= 1, got {k}")
        self.groups, self.k, self.tile, self.seed = list(groups), k, tile, seed
        self.length, self.resize, self.region_masks = length, resize, region_masks
        self.min_side, self.max_retries = min_side, max_retries
        self.bad: set[str] = set()

    def __len__(self) -> int:
        return self.length

    def instructions(self) -> list[str]:
        """The (unified) instructions this dataset's samples carry."""
        return [g.instruction for g in self.groups]

    def _load(self, rec: PairRecord) -> tuple[Any, Any]:
        return load_image(rec.before, self.min_side), load_image(rec.after, self.min_side)

    def __getitem__(self, index: int) -> dict:
        from gie_core.visual_prompt import build

        rng = np.random.default_rng([self.seed, int(index)])
        for _ in range(self.max_retries):
            g = self.groups[int(rng.integers(len(self.groups)))]
            n = min(len(g.pairs), self.k + 1)
            picks = rng.choice(len(g.pairs), size=n, replace=False)
            recs = [g.pairs[int(i)] for i in picks]
            if n < self.k + 1:  # small group: reuse examples, never the query itself as an example
                extra = rng.choice(n - 1, size=self.k + 1 - n, replace=True)
                recs = recs[:-1] + [recs[int(i)] for i in extra] + recs[-1:]
            try:
                imgs = [self._load(r) for r in recs]
                break
            except BadImage as e:
                log.warning("sample %d: skipped a pair with a bad image (%s)", index, e)
                self.bad.add(str(e))
        else:
            raise RuntimeError(f"sample {index}: {self.max_retries} draws in a row hit bad images; "
                               "check the dataset (run with verify=full)")
        query = recs[-1]
        vp = build([imgs[j] for j in range(self.k)], imgs[-1][0], tile=self.tile, resize=self.resize,
                   target=imgs[-1][1])
        region = torch.zeros(vp.grid.shape[1:3], dtype=torch.float32)
        mask = self._region_mask(query, imgs[-1][1])
        if mask is not None:
            t, l, h, w = vp.layout.target_box
            region[t:t + h, l:l + w] = place_mask_in_cell(mask, vp.layout.placements[0], self.tile)
        return {
            "grid": vp.grid[0].permute(2, 0, 1).contiguous(),
            "hint": vp.hint[0].permute(2, 0, 1).contiguous(),
            "target_mask": vp.target_mask[0],
            "region_mask": region,
            "instruction": g.instruction,
            "family": g.family or "",
            "index": int(index),
        }

    def _region_mask(self, rec: PairRecord, after_image) -> torch.Tensor | None:
        if rec.mask is not None:
            try:
                m = load_image(rec.mask, 1, mode="L")
            except BadImage as e:
                log.warning("mask of %s unusable (%s); using none", rec.key, e)
                return None
            if m.size != after_image.size:
                m = m.resize(after_image.size)
            return torch.from_numpy(np.asarray(m, np.float32) / 255.0)
        if self.region_masks is None:
            return None
        return self.region_masks(rec, after_image)


def collate(items: Sequence[dict]) -> dict:
    """Stacks dataset items into a batch (text fields become lists)."""
    out: dict[str, Any] = {}
    for k in items[0]:
        v = [it[k] for it in items]
        out[k] = torch.stack(v) if isinstance(v[0], torch.Tensor) else (torch.tensor(v) if k == "index" else v)
    return out


class RegionMaskProvider:
    """SAM masks from ``gie_core.regions`` for pairs without a mask of their own, cached per file.

    Uses the regions engineer's per-file cache when ``gie_core.regions`` provides one
    (``MaskCache``), else an in-process dict keyed by the record key."""

    def __init__(self, region: str = "face", backend: str = "auto", dilate: int = 0, feather: int = 0,
                 cache_dir: str | None = None):
        self.region, self.backend, self.dilate, self.feather = region, backend, dilate, feather
        self.cache_dir = cache_dir
        self._memo: dict[str, torch.Tensor] = {}
        self._cache = None

    def __call__(self, rec: PairRecord, after_image) -> torch.Tensor | None:
        key = describe(rec.after)  # per image file: pairs sharing an after image share its mask
        if key in self._memo:
            return self._memo[key]
        from gie_core import regions

        img = torch.from_numpy(np.asarray(after_image, np.float32) / 255.0)[None]
        opts = dict(region=self.region, backend=self.backend, dilate=self.dilate, feather=self.feather)
        try:
            if self.cache_dir and isinstance(rec.after, (str, Path)):
                if self._cache is None:
                    self._cache = regions.MaskCache(self.cache_dir)
                m = self._cache.get(rec.after, img, **opts)
            else:
                m = regions.region_mask(img, **opts)
        except Exception as e:  # a detector failure must not stop training; the pair just gets no SAM
            log.warning("region mask for %s failed (%s: %s); using none", rec.key, type(e).__name__, e)
            m = None
        m = None if m is None else torch.as_tensor(m, dtype=torch.float32).reshape(img.shape[1:3])
        self._memo[key] = m
        return m
