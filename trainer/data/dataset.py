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

from .formats import BadImage, PairRecord, content_hash, describe, load_image, load_records

log = logging.getLogger("trainer.data")


@dataclass
class Group:
    """All pairs of one (unified) instruction.

    ``components[i]`` names the source component of pair ``i``: pairs that share a source (an
    InstructPix2Pix prompt folder, a ``source`` field) or a *before* image (by content hash),
    directly or through other pairs. A sample never takes its examples from its query's component.
    ``None``: every pair is its own component (groups built by hand)."""

    instruction: str  # the text the text encoder sees
    pairs: list[PairRecord]
    family: str | None = None
    seen: bool | None = None
    components: list[int] | None = None

    def __post_init__(self):
        if self.components is not None and len(self.components) != len(self.pairs):
            raise ValueError(f"components: expected one per pair ({len(self.pairs)}), got {len(self.components)}")
        comps = self.components if self.components is not None else list(range(len(self.pairs)))
        self._others: dict[int, list[int]] = {}  # component -> indices of the pairs outside it
        for c in set(comps):
            self._others[c] = [i for i, ci in enumerate(comps) if ci != c]
        self._comps = comps

    @property
    def num_components(self) -> int:
        return len(self._others)

    def partners(self, i: int) -> list[int]:
        """Indices of the pairs that may serve as examples for query ``i``."""
        return self._others[self._comps[i]]


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
    duplicate_pairs_dropped: int = 0  # the same before and after images under one instruction
    groups_single_source: int = 0  # groups whose pairs all share one source: no example for a query
    pairs_in_single_source_groups: int = 0
    group_sizes: dict[str, int] = field(default_factory=dict)  # pairs per kept group -> number of groups
    sources_per_group: dict[str, int] = field(default_factory=dict)  # source components -> groups

    def summary(self) -> str:
        s = (f"data: {self.pairs_read} pairs read, {self.pairs_kept} kept; {self.pairs_skipped} pairs with "
             f"{len(self.bad_files)} bad image files skipped; {self.groups_dropped} instruction groups with < 2 pairs dropped "
             f"({self.pairs_in_dropped_groups} pairs); {self.train_groups} train / {self.val_groups} validation "
             f"instructions; {self.unified_changed} instructions rewritten by LIU")
        if self.duplicate_pairs_dropped:
            s += f"; {self.duplicate_pairs_dropped} duplicate pairs dropped"
        if self.groups_single_source:
            s += (f"; {self.groups_single_source} groups from a single source dropped "
                  f"({self.pairs_in_single_source_groups} pairs)")
        if self.held_out_pairs:
            s += f"; {self.held_out_pairs} pairs of held-out families kept out of training"
        if self.group_sizes:
            s += f"; pairs per group: {_distribution(self.group_sizes)}"
        return s

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _distribution(hist: dict[str, int]) -> str:
    """``{"2": 5, "3": 1}`` → ``"min 2, median 2, max 3 (6 groups)"``."""
    sizes = sorted(int(k) for k, n in hist.items() for _ in range(n))
    return f"min {sizes[0]}, median {sizes[len(sizes) // 2]}, max {sizes[-1]} ({len(sizes)} groups)"


def _histogram(values) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items())}


def source_components(keys: Sequence[Sequence[str]]) -> list[int]:
    """Union-find: pairs sharing any key (a source name, an image hash) land in one component;
    returns a component id per pair."""
    parent = list(range(len(keys)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, ks in enumerate(keys):
        for k in ks:
            if k in first:
                a, b = find(i), find(first[k])
                if a != b:
                    parent[a] = b
            else:
                first[k] = i
    return [find(i) for i in range(len(keys))]


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


def _source_keys(rec: PairRecord, digest: tuple[str, str] | None, dedupe: str) -> list[str]:
    """What ties a pair to others: its source field and its before image's content hash."""
    keys = []
    if dedupe != "none" and rec.source is not None:
        keys.append(f"source:{rec.source}")
    if dedupe == "hash" and digest is not None:
        keys.append(f"image:{digest[0]}")
    return keys


def prepare_groups(source: str | Sequence[PairRecord], *, fmt: str = "auto", liu: bool = True,
                   liu_backend: str = "rules", min_group: int = 2, val_fraction: float = 0.1,
                   seed: int = 0, min_side: int = 16, verify: str = "full", include_unseen: bool = False,
                   progress: bool = True, dedupe: str = "hash") -> tuple[list[Group], list[Group], DataReport]:
    """Reads and groups a dataset: returns ``(train_groups, val_groups, report)``.

    ``verify``: ``"full"`` decodes every image once up front, ``"header"`` only opens it (faster
    for big datasets; later decode failures are skipped at sampling time). Pairs whose ``seen``
    field is False (held-out families) are left out unless ``include_unseen``.

    ``dedupe``: what keeps an example and its query apart. ``"hash"`` (default) reads every image
    once and hashes its stored bytes: pairs with the same *before* image (wherever the files live)
    or the same ``source`` (an InstructPix2Pix prompt folder) form one component, never example
    and query of one sample, and repeated pairs (same before and after under one instruction) are
    dropped. ``"source"``: only the ``source`` fields (nothing is read). ``"none"``: no constraint
    beyond never using the query itself. Groups left with a single component are dropped and
    counted, as are groups with fewer than ``min_group`` pairs.
    """
    from tqdm.auto import tqdm

    if verify not in ("full", "header", "none"):
        raise ValueError(f"verify: expected full, header or none, got {verify!r}")
    if dedupe not in ("hash", "source", "none"):
        raise ValueError(f"dedupe: expected hash, source or none, got {dedupe!r}")
    if min_group < 2:
        raise ValueError(f"min_group: expected at least 2 (one example + one query), got {min_group}")
    records = load_records(source, fmt) if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__") \
        else list(source)
    report = DataReport(pairs_read=len(records))
    kept: list[PairRecord] = []
    hashes: list[tuple[str, str] | None] = []
    desc = "checking images" + (" and hashing them" if dedupe == "hash" else "")
    for rec in tqdm(records, desc=desc, disable=not progress or (verify == "none" and dedupe != "hash")):
        if rec.seen is False and not include_unseen:
            report.held_out_pairs += 1
            continue
        bad = None if verify == "none" else _check_record(rec, min_side, verify == "full")
        digest = None
        if bad is None and dedupe == "hash":
            try:
                digest = (content_hash(rec.before), content_hash(rec.after))
            except BadImage as e:
                bad = (describe(rec.before), str(e))
        if bad is not None:
            report.bad_files[bad[0]] = bad[1]
            report.pairs_skipped += 1
            log.warning("skipped pair %s: %s", rec.key, bad[1])
            continue
        kept.append(rec)
        hashes.append(digest)
    report.pairs_kept = len(kept)
    unified = unify_instructions([r.instruction for r in kept], liu, liu_backend)
    report.unified_changed = sum(u != " ".join(r.instruction.split()) for u, r in zip(unified, kept))
    by_text: dict[str, list[int]] = {}
    for i, u in enumerate(unified):
        by_text.setdefault(u, []).append(i)
    groups = []
    for text in sorted(by_text):
        idx = by_text[text]
        if dedupe == "hash":  # the same pair twice under one instruction: keep the first
            seen_pairs: set[tuple[str, str]] = set()
            unique = []
            for i in idx:
                if hashes[i] in seen_pairs:
                    report.duplicate_pairs_dropped += 1
                    continue
                seen_pairs.add(hashes[i])
                unique.append(i)
            idx = unique
        pairs = [kept[i] for i in idx]
        if len(pairs) < min_group:
            report.groups_dropped += 1
            report.pairs_in_dropped_groups += len(pairs)
            continue
        comps = source_components([_source_keys(kept[i], hashes[i], dedupe) or [f"pair:{j}"]
                                   for j, i in enumerate(idx)])
        if len(set(comps)) < 2:
            report.groups_single_source += 1
            report.pairs_in_single_source_groups += len(pairs)
            continue
        fams = Counter(p.family for p in pairs)
        groups.append(Group(text, pairs, fams.most_common(1)[0][0], pairs[0].seen, comps))
    report.group_sizes = _histogram(len(g.pairs) for g in groups)
    report.sources_per_group = _histogram(g.num_components for g in groups)
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
            q = int(rng.integers(len(g.pairs)))
            partners = g.partners(q)  # never the query's own source or before image
            if not partners:
                raise ValueError(f"group {g.instruction!r}: pair {g.pairs[q].key} has no example from another "
                                 "source (build groups with prepare_groups, which drops such groups)")
            picks = rng.choice(len(partners), size=min(self.k, len(partners)), replace=False)
            if len(picks) < self.k:  # small group: reuse examples, never the query's component
                picks = np.concatenate([picks, rng.choice(len(partners), size=self.k - len(picks), replace=True)])
            recs = [g.pairs[partners[int(i)]] for i in picks] + [g.pairs[q]]
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
            "pair_keys": [r.key for r in recs],  # examples, then the query
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


MASK_CACHE_VERSION = 1


class RegionMaskProvider:
    """SAM masks from ``gie_core.regions`` for pairs without a mask of their own.

    Each mask is computed once per image *content* and kept on disk (``cache_dir``, one compressed
    ``.npz`` per key; the key hashes the decoded pixels, the image size and every option including
    the model folder), so reruns, resumed runs, DataLoader workers and other processes reuse it, and
    renaming or copying a dataset does not. A few hundred recent masks also stay in memory.

    :meth:`check` loads the detector and runs it once, so a backend, model folder or region that
    cannot work fails at start-up (one line), never as a run whose SAM term is silently zero. A
    detector error on an image later is an error too, naming the image."""

    def __init__(self, region: str = "face", backend: str = "auto", model: str | None = None, dilate: int = 0,
                 feather: int = 0, cache_dir: str | None = None, memo_size: int = 256):
        self.region, self.backend, self.dilate, self.feather = region, backend, dilate, feather
        self.model = str(Path(model).expanduser().resolve()) if model else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.memo_size = memo_size
        self._memo: dict[str, torch.Tensor] = {}
        self.stats = Counter()

    def _options(self) -> dict:
        return dict(region=self.region, backend=self.backend, dilate=self.dilate, feather=self.feather,
                    model=self.model)

    def describe(self) -> str:
        return (f"SAM region {self.region!r} (backend {self.backend!r}"
                + (f", model {self.model}" if self.model else "") + ")")

    def check(self) -> None:
        """Loads the detector and runs it on a test image; ValueError (one line) if it cannot work."""
        from gie_core import regions

        if self.model and not Path(self.model).is_dir():
            raise ValueError(f"sam_model={self.model!r}: no such folder (expected a local Mask2Former or "
                             "face-parsing model folder with config.json), or train without SAM (--no-sam)")
        try:
            regions.region_mask(torch.full((1, 64, 64, 3), 0.5), **self._options())
        except Exception as e:  # any failure of the detector is the user's setup to fix
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            raise ValueError(f"{self.describe()} cannot be used: {reason}. Fix --sam-region/--sam-backend/"
                             "--sam-model, or train without SAM (--no-sam)") from None

    def key(self, pixels: np.ndarray) -> str:
        import hashlib
        import json

        h = hashlib.sha256()
        h.update(json.dumps({"v": MASK_CACHE_VERSION, "shape": list(pixels.shape), **self._options(),
                             "model_stamp": self._model_stamp()}, sort_keys=True).encode())
        h.update(np.ascontiguousarray(pixels).tobytes())
        return h.hexdigest()[:40]

    def _model_stamp(self):
        if not self.model:
            return None
        cfg = Path(self.model) / "config.json"
        return cfg.stat().st_mtime_ns if cfg.is_file() else None

    def __call__(self, rec: PairRecord, after_image) -> torch.Tensor:
        pixels = np.asarray(after_image.convert("RGB") if hasattr(after_image, "convert") else after_image, np.uint8)
        key = self.key(pixels)
        if key in self._memo:
            self.stats["memory"] += 1
            return self._memo[key]
        mask = self._read(key)
        if mask is None:
            mask = self._compute(rec, pixels)
            self._write(key, mask)
        else:
            self.stats["disk"] += 1
        if len(self._memo) >= self.memo_size:
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = mask
        return mask

    def _compute(self, rec: PairRecord, pixels: np.ndarray) -> torch.Tensor:
        from gie_core import regions

        self.stats["computed"] += 1
        try:
            m = regions.region_mask(torch.from_numpy(pixels.astype(np.float32) / 255.0)[None], **self._options())
        except Exception as e:  # the detector's own errors vary by backend
            raise RuntimeError(f"{self.describe()} failed on {rec.key} ({describe(rec.after)}): "
                               f"{type(e).__name__}: {e}") from e
        m = torch.as_tensor(m, dtype=torch.float32).reshape(pixels.shape[:2])
        self.stats["with_region"] += int(bool(m.any()))
        return m

    def _file(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.npz"

    def _read(self, key: str) -> torch.Tensor | None:
        f = self._file(key)
        if f is None or not f.is_file():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                m = z["mask"]
                return torch.from_numpy(m.astype(np.float32) / (255.0 if m.dtype == np.uint8 else 1.0))
        except (OSError, ValueError, KeyError, EOFError):  # a broken entry is recomputed
            return None

    def _write(self, key: str, mask: torch.Tensor) -> None:
        import os
        import tempfile

        f = self._file(key)
        if f is None:
            return
        arr = mask.numpy()
        stored = (arr * 255).astype(np.uint8) if np.isin(arr, (0.0, 1.0)).all() else arr.astype(np.float16)
        f.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=f.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, mask=stored)
            os.replace(tmp, f)  # atomic: other workers and processes see the whole file or none
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
