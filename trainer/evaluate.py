"""``instructgie-eval``: how well trained models edit, measured against baselines that blur cannot beat.

Every query of the evaluation data is edited twice by each model: with ``k`` example pairs of its
own edit, and with ``k`` pairs of a *different* edit (the wrong-example run: same query, same
instruction, same noise). Per split (seen / unseen edits) and per family, with 95 % bootstrap
intervals, it reports

- PSNR and SSIM of the edit against the ground truth (torchmetrics);
- the copy baseline (the unedited query scored against the truth) and the model's gain over it,
  paired per item;
- the VAE oracle: the truth encoded and decoded by the model's own autoencoder inside the grid,
  the ceiling of any edit made through that VAE;
- the wrong-example cost: the PSNR lost when the example is swapped (paired); a model that reads
  the example loses several dB, one that ignores it loses nothing;
- FID (torchmetrics, local Inception weights) and directional similarity in a local CLIP's space:
  ``cos(E(edit) - E(query), E(truth) - E(query))`` and the text form against captions (InstructPix2Pix
  data) or the instruction.

Items are drawn once from the data and the seed, so every ``--model`` edits the same queries with
the same examples and seeds, and differences between models come with paired intervals.

Writes into ``--out``: ``metrics.json`` (everything), ``metrics.md`` (the tables),
``families.png`` (per-family bars with intervals, copy baseline and oracle), ``samples-NAME.png``
(labelled sample sheet per model), ``items-NAME.jsonl`` (every item's scores) and ``run.json``
(what was run and which files it wrote; written last).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import time
import types
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger("trainer.evaluate")

SPLITS = ("seen", "unseen", "all")
PSNR_CAP_DB = 100.0  # identical images: PSNR is infinite; capped so that means and intervals exist
# The bars issue 13 sets for the embedded demo model (docs/trainer.md): gains in dB.
TARGETS = {"seen_gain_over_copy": 2.0, "seen_family_gain_over_copy": 0.0, "unseen_gain_over_copy": 0.0,
           "wrong_example_cost": 2.0}
# Text direction without captions: T(after) - T(before) from the instruction itself.
INSTRUCTION_TEXTS = ("a picture", "a picture, edited: {instruction}")


def _stable_seed(*parts) -> int:
    """A seed from any JSON-able parts, the same in every process and Python version."""
    return zlib.crc32(json.dumps(parts, default=str).encode())


def split_name(seen: bool | None) -> str:
    return {True: "seen", False: "unseen", None: "all"}[seen]


# --------------------------------------------------------------------------- data sources
DataSource = Callable[[str], list]  # the whole --data string -> list[trainer.data.formats.PairRecord]
_DATA_SOURCES: dict[str, DataSource] = {}
_SOURCE_NAME = re.compile(r"[a-z][a-z0-9_]*")


def register_data_source(name: str, loader: DataSource) -> None:
    """Makes ``--data NAME:...`` call ``loader(spec)`` with the whole spec string; ``loader``
    returns ``PairRecord``s (an edit id in ``group``, the split in ``seen``, the family in ``family``)."""
    if not _SOURCE_NAME.fullmatch(name or ""):
        raise ValueError(f"data source name {name!r}: expected lower-case letters, digits and _")
    _DATA_SOURCES[name] = loader


def data_source_names() -> list[str]:
    return sorted(_DATA_SOURCES)


def _synthetic_source(spec: str) -> list:
    from .data.formats import load_records

    return load_records(spec, "synthetic")


register_data_source("synthetic", _synthetic_source)


def load_eval_records(spec: str, fmt: str = "auto") -> list:
    """Records of ``--data``. ``NAME:...`` goes to a registered source (``synthetic`` is built in;
    a module ``trainer.data.NAME`` with a ``load_spec(spec)`` function is registered on first use,
    so a new source plugs in without touching this file); anything else is a folder or
    InstructPix2Pix-format data (``trainer.data.formats.load_records``)."""
    from .data.formats import load_records

    m = re.match(r"([a-z][a-z0-9_]*):", spec)
    name = m.group(1) if m else (fmt if fmt in _DATA_SOURCES else "")
    if name and fmt in ("auto", name) and not Path(spec).exists():
        if name not in _DATA_SOURCES:
            module_name = f"trainer.data.{name}"
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                if e.name != module_name:
                    raise
                module = None
            loader = getattr(module, "load_spec", None)
            if not callable(loader):
                raise ValueError(f"--data {spec!r}: no data source {name!r}; registered: "
                                 f"{', '.join(data_source_names())} (or give a folder / parquet path)")
            register_data_source(name, loader)
        return list(_DATA_SOURCES[name](spec))
    return load_records(spec, fmt)


# --------------------------------------------------------------------------- items
@dataclass(eq=False)
class EditGroup:
    """The pairs of one edit: same group id, else same canonical, else same unified instruction."""

    key: str
    records: list
    family: str = ""
    seen: bool | None = None


def edit_groups(records: Sequence, liu: bool = True) -> list[EditGroup]:
    """Pairs grouped by edit (``PairRecord.group``, then ``canonical``, then the unified instruction),
    sorted by key; groups of one pair are kept (they can still serve as another query's wrong example)."""
    from .data.dataset import unify_instructions

    keys = [getattr(r, "group", None) or r.canonical for r in records]
    missing = [i for i, k in enumerate(keys) if not k]
    if missing:
        for i, u in zip(missing, unify_instructions([records[i].instruction for i in missing], liu)):
            keys[i] = u
    by_key: dict[str, list] = {}
    for k, r in zip(keys, records):
        by_key.setdefault(k, []).append(r)
    groups = []
    for k, rs in sorted(by_key.items()):
        seen = {r.seen for r in rs}
        if len(seen) > 1:
            log.warning("edit %r mixes seen and unseen pairs; the split of its first pair (%s) is used",
                        k, split_name(rs[0].seen))
        groups.append(EditGroup(k, rs, rs[0].family or "", rs[0].seen))
    return groups


@dataclass(eq=False)
class EvalJob:
    """One query: its own examples and another edit's (``wrong_*``, None when there is no other edit).

    ``index`` is the item's id (its seed is ``seed + index`` for both runs)."""

    index: int
    split: str
    group: EditGroup
    query: object
    examples: tuple
    wrong_group: EditGroup | None = None
    wrong_examples: tuple = ()


def plan_jobs(groups: Sequence[EditGroup], n_per_split: int, k: int = 1, seed: int = 0,
              max_per_group: int | None = None, wrong_example: bool = True) -> list[EvalJob]:
    """Up to ``n_per_split`` queries per split, taken round-robin over the split's edits (every edit
    gives its first query before any gives a second; edit order and query order are seeded), each
    with ``k`` other pairs of its edit as examples.

    The wrong example is ``k`` pairs of another edit, from another family when there is one. The plan
    is a pure function of the groups, ``k`` and ``seed``: every model gets the same items (models
    with a smaller ``k`` use the first of the examples)."""
    if n_per_split < 1 or k < 1:
        raise ValueError(f"n_per_split and k must be at least 1, got {n_per_split} and {k}")
    usable = [g for g in groups if len(g.records) > k]
    if len(usable) < len(groups):
        log.info("%d edit(s) with %d pair(s) or fewer give no query (k=%d examples are needed besides it)",
                 len(groups) - len(usable), k, k)
    by_split: dict[str, list[EditGroup]] = {}
    for g in usable:
        by_split.setdefault(split_name(g.seen), []).append(g)
    chosen = []
    for split in sorted(by_split):
        gs = by_split[split]
        order = [gs[i] for i in np.random.default_rng(_stable_seed(seed, "order", split)).permutation(len(gs))]
        perms = {g.key: np.random.default_rng(_stable_seed(seed, "queries", g.key)).permutation(len(g.records))
                 for g in gs}
        depth = max(len(g.records) for g in gs)
        if max_per_group:
            depth = min(depth, max_per_group)
        taken = []
        for r in range(depth):
            for g in order:
                if len(taken) >= n_per_split:
                    break
                if r < len(g.records):
                    perm, size = perms[g.key], len(g.records)
                    examples = tuple(g.records[perm[(r + 1 + e) % size]] for e in range(k))
                    taken.append((split, g, g.records[perm[r]], examples))
        if len(taken) < n_per_split:
            log.warning("split %s: %d queries available, %d asked (--n-per-split); its intervals will be "
                        "wider — give more pairs per edit or more edits", split, len(taken), n_per_split)
        chosen += taken
    jobs = []
    for i, (split, g, q, ex) in enumerate(chosen):
        job = EvalJob(i, split, g, q, ex)
        if wrong_example:
            others = [h for h in groups if h is not g]
            other_family = [h for h in others if g.family and h.family and h.family != g.family]
            pool = [h for h in (other_family or others) if len(h.records) >= k]
            if pool:
                rng = np.random.default_rng(_stable_seed(seed, "wrong", q.key))
                h = pool[int(rng.integers(len(pool)))]
                job.wrong_group = h
                job.wrong_examples = tuple(h.records[j] for j in rng.choice(len(h.records), k, replace=False))
        jobs.append(job)
    if wrong_example and jobs and not any(j.wrong_group for j in jobs):
        log.warning("only one edit in the data: no wrong-example figure")
    return jobs


# --------------------------------------------------------------------------- models
@dataclass
class ModelSpec:
    name: str
    controlnet: str
    base: str
    liu: bool = True
    tile: int = 256
    k: int = 1
    resize: str = "crop"
    tiny_seed: int = 0


BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "gie_core" / "assets" / "default"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def model_from_arg(arg: str, base: str = "", liu: bool = True, tile: int | None = None,
                   k: int | None = None) -> ModelSpec:
    """``NAME=PATH`` or ``PATH``; PATH is a training output folder (its train_config.json gives the
    base, LIU, tile and k), an exported ControlNet (with ``base``), or ``default`` (the bundled model)."""
    name, _, path = arg.rpartition("=")
    if path == "default":
        p, name = BUNDLED_MODEL, name or "default"
    else:
        p = Path(path)
        name = name or p.stem
    if not _MODEL_NAME.fullmatch(name):
        raise ValueError(f"--model {arg!r}: the name {name!r} must be letters, digits, '_', '.', '+' or '-' "
                         "(it names files in --out)")
    cfg_file = p / "train_config.json"
    if p.is_dir() and cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        export = p / cfg.get("export_name", "controlnet.safetensors")
        if not export.exists():
            export = export.with_suffix("")  # conv ablations export a folder
        trained_base = p / "base"
        return ModelSpec(name, str(export), str(trained_base) if trained_base.is_dir() else cfg["base_model"],
                         cfg.get("liu", True) and liu, tile or cfg.get("tile", 256), k or cfg.get("k_examples", 1),
                         cfg.get("resize", "crop"), cfg.get("tiny_seed", 0))
    if not p.exists():
        raise ValueError(f"--model {arg!r}: no such file or folder")
    if not base:
        raise ValueError(f"--model {arg!r}: an exported ControlNet needs --base-model")
    return ModelSpec(name, str(p), base, liu, tile or 256, k or 1)


def load_pipeline_for(spec: ModelSpec, device: str = "cpu", scheduler: str | None = None):
    from gie_core.loading import ModelLoadError, load_controlnet, load_pipeline

    try:
        if spec.base != "tiny":
            return load_pipeline(spec.base, spec.controlnet, device=device, scheduler=scheduler or None)
        from gie_core.pipeline import InstructGIEPipeline, make_scheduler
        from gie_core.tiny import make_tiny_sd_components

        parts = make_tiny_sd_components(spec.tiny_seed)
        if scheduler:
            parts["scheduler"] = make_scheduler(scheduler, parts["scheduler"].config)
        cn = load_controlnet(spec.controlnet, unet=parts["unet"])
        return InstructGIEPipeline(controlnet=cn, **parts).to(device)
    except ModelLoadError as e:
        raise ValueError(f"--model {spec.name}: {e}") from None


# --------------------------------------------------------------------------- feature extractors
def _torch_fidelity_submodules():
    """Makes ``torch_fidelity.<submodule>`` importable without running its ``__init__``, which
    imports torchvision (never installed here: it drags torch to a CUDA build). The Inception
    feature extractor itself needs only torch."""
    if "torch_fidelity" in sys.modules:
        return
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        raise ValueError("FID with Inception weights needs torch-fidelity; install it without its "
                         "torchvision dependency: pip install --no-deps torch-fidelity")
    pkg = types.ModuleType("torch_fidelity")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = pkg


class InceptionFeatures(nn.Module):
    """FID's Inception-v3 (torch-fidelity's TF-compatible port) with weights from a local file;
    images ``[B,3,H,W]`` in 0..1 → 2048 pool features."""

    num_features = 2048

    def __init__(self, weights_path: str | Path):
        super().__init__()
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise ValueError(f"--inception {weights_path}: no such file (expected the FID Inception weights "
                             "pt_inception-2015-12-05-6726825d.pth)")
        _torch_fidelity_submodules()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=str(weights_path))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(x)[0].reshape(images.shape[0], -1).float()


class TinyFeatures(nn.Module):
    """A fixed random conv feature extractor: FID plumbing in tests, never for reported numbers
    (its distance is reported as ``fd_tiny``, not as FID)."""

    num_features = 16

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w1", torch.randn(8, 3, 3, 3, generator=g) * 0.5)
        self.register_buffer("w2", torch.randn(16, 8, 3, 3, generator=g) * 0.3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        x = F.gelu(F.conv2d(x, self.w1, stride=2, padding=1))
        x = F.gelu(F.conv2d(x, self.w2, stride=2, padding=1))
        return x.mean((2, 3))


def load_fid_features(spec: str) -> nn.Module | None:
    """``""``: no FID; ``"tiny"``: :class:`TinyFeatures` (plumbing only); else a local Inception file."""
    if not spec:
        return None
    return TinyFeatures() if spec == "tiny" else InceptionFeatures(spec)


def _fid_metric(features: nn.Module, size: int = 299):
    if importlib.util.find_spec("torch_fidelity") is not None:
        _torch_fidelity_submodules()  # else torchmetrics' import of it pulls torchvision and fails
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=features, normalize=True, input_img_size=(3, size, size))


def _fid_update(metric, images: torch.Tensor, real: bool, size: int = 299):
    """``images`` ``[B,3,H,W]`` in 0..1, resized to the extractor's input size."""
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
    metric.update(x.to(metric.device), real=real)


def fid(features: nn.Module, fake: Sequence[torch.Tensor], real: Sequence[torch.Tensor], size: int = 299) -> float:
    """FID between two lists of ``[3,H,W]`` images through torchmetrics (NaN below two of each)."""
    if len(fake) < 2 or len(real) < 2:
        return float("nan")  # undefined for fewer than two samples; reported as null in JSON
    metric = _fid_metric(features, size)
    for imgs, is_real in ((real, True), (fake, False)):
        for i in range(0, len(imgs), 16):
            _fid_update(metric, torch.stack([t.float() for t in imgs[i:i + 16]]), is_real, size)
    return float(metric.compute())


class DirectionEncoder:
    """A local CLIP (transformers format) for directional similarity: image embeddings always, text
    embeddings when the folder holds a full ``CLIPModel`` with its tokenizer."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        from .losses import CLIPImageEmbedder

        folder = Path(folder)
        if str(folder) == "tiny":
            raise ValueError("--clip-model tiny: directional similarity needs a real local CLIP folder "
                             "(a random encoder measures nothing)")
        if not folder.is_dir():
            raise ValueError(f"--clip-model {folder}: no such folder (expected a local CLIP model folder in "
                             "transformers format: config.json and its weights)")
        if not (folder / "config.json").is_file():
            raise ValueError(f"--clip-model {folder}: no config.json in it (expected a transformers CLIP folder)")
        self.name = folder.name
        self.image = CLIPImageEmbedder.from_folder(folder).to(device)
        self.text = self.tokenizer = None
        if '"CLIPModel"' in (folder / "config.json").read_text():
            from transformers import AutoTokenizer, CLIPModel

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as e:
                log.warning("--clip-model %s: no usable tokenizer (%s); text direction skipped", folder, e)
            else:
                full = CLIPModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
                self.text = full.text_model.to(device)
                self.text_projection = full.text_projection.to(device)
        else:
            log.info("--clip-model %s holds a vision model only: no text direction", folder)
        self.device = device

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image(images.to(self.device)).float().cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        return self.text_projection(self.text(**ids).pooler_output).float().cpu()


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1, eps=1e-6)


# --------------------------------------------------------------------------- per-item scores
def psnr_per_item(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` in 0..1 → ``[B]`` PSNR in dB (torchmetrics), capped at :data:`PSNR_CAP_DB`."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    v = peak_signal_noise_ratio(pred.float().clamp(0, 1), truth.float().clamp(0, 1), data_range=1.0,
                                reduction="none", dim=(1, 2, 3))
    return v.clamp(max=PSNR_CAP_DB)


def ssim_per_item(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(pred.float().clamp(0, 1), truth.float().clamp(0, 1),
                                               data_range=1.0, reduction="none").reshape(-1)


@dataclass
class ItemResult:
    """One query's scores (``None`` where a score does not apply); ``sheet``: images for the sample sheet."""

    index: int
    key: str
    group: str
    family: str
    split: str
    scores: dict
    wrong_group: str | None = None
    sheet: dict | None = None

    def to_json(self) -> dict:
        return {"index": self.index, "key": self.key, "group": self.group, "family": self.family,
                "split": self.split, "wrong_group": self.wrong_group, **_clean(self.scores)}


class Scorer:
    """Per-item metrics of a batch, plus FID accumulated per split (fed batch by batch)."""

    def __init__(self, directions: DirectionEncoder | None = None, fid_features: nn.Module | None = None,
                 device: str = "cpu"):
        self.directions = directions
        self.fid_features = fid_features
        self.device = device
        self._fid: dict[str, object] = {}

    def score(self, split: str, edit: torch.Tensor, truth: torch.Tensor, query: torch.Tensor | None = None,
              oracle: torch.Tensor | None = None, instructions: Sequence[str] | None = None,
              captions: Sequence[tuple[str | None, str | None]] | None = None) -> list[dict]:
        """Images ``[B,3,H,W]`` in 0..1 of one size (``query`` is the copy baseline)."""
        b = edit.shape[0]
        cols: dict[str, torch.Tensor | list] = {"psnr": psnr_per_item(edit, truth), "ssim": ssim_per_item(edit, truth)}
        if query is not None and query.shape == truth.shape:
            cols["psnr_copy"] = psnr_per_item(query, truth)
        if oracle is not None:
            cols["psnr_oracle"] = psnr_per_item(oracle, truth)
        if self.directions is not None and query is not None:
            e_q, e_e, e_t = (self.directions.embed_images(x) for x in (query, edit, truth))
            shift = e_e - e_q
            cols["dir_image"] = _cos(shift, e_t - e_q)
            if self.directions.text is not None:
                if captions and all(c and c[0] and c[1] for c in captions):
                    t_b = self.directions.embed_texts([c[0] for c in captions])
                    t_a = self.directions.embed_texts([c[1] for c in captions])
                    cols["dir_caption"] = _cos(shift, t_a - t_b)
                if instructions:
                    t_b = self.directions.embed_texts([INSTRUCTION_TEXTS[0]] * b)
                    t_a = self.directions.embed_texts([INSTRUCTION_TEXTS[1].format(instruction=t) for t in instructions])
                    cols["dir_instruction"] = _cos(shift, t_a - t_b)
        if self.fid_features is not None:
            for s in {split, "all"}:
                if s not in self._fid:
                    self._fid[s] = _fid_metric(self.fid_features).to(self.device)
                _fid_update(self._fid[s], truth, True)
                _fid_update(self._fid[s], edit, False)
        return [{k: float(v[i]) for k, v in cols.items()} for i in range(b)]

    def wrong_scores(self, edit: torch.Tensor, truth: torch.Tensor) -> list[dict]:
        return [{"psnr_wrong_example": float(p), "ssim_wrong_example": float(s)}
                for p, s in zip(psnr_per_item(edit, truth), ssim_per_item(edit, truth))]

    def fid_by_split(self) -> dict[str, float]:
        out = {}
        for s, m in self._fid.items():
            n_fake = int(m.fake_features_num_samples)
            out[s] = float(m.compute()) if n_fake >= 2 else float("nan")
        self._fid = {}
        return out

    @property
    def fid_key(self) -> str | None:
        if self.fid_features is None:
            return None
        return "fd_tiny" if isinstance(self.fid_features, TinyFeatures) else "fid"


# --------------------------------------------------------------------------- generation
def _chw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).float().cpu()


def _hwc_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()


@torch.no_grad()
def vae_roundtrip(pipe, grid: torch.Tensor) -> torch.Tensor:
    """``[B,Hg,Wg,3]`` in 0..1 through the pipeline's VAE (posterior mean, as the pipeline encodes)."""
    vae = pipe.vae
    x = grid.permute(0, 3, 1, 2).to(device=vae.device, dtype=vae.dtype) * 2 - 1
    dec = vae.decode(vae.encode(x).latent_dist.mode()).sample
    return ((dec.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


@dataclass
class _Task:
    job: EvalJob
    wrong: bool  # the wrong-example run of the job

    @property
    def examples(self) -> tuple:
        return self.job.wrong_examples if self.wrong else self.job.examples


def _batch_key(task: _Task, k: int, text: str):
    from .data.formats import load_image

    recs = [task.job.query, *task.examples[:k]]
    sizes = [load_image(r.before, 1, header_only=True).size for r in recs]
    sizes += [load_image(r.after, 1, header_only=True).size for r in recs]
    return (text, tuple(sizes))


def generate(pipe, spec: ModelSpec, jobs: Sequence[EvalJob], scorer: Scorer, *, steps: int = 20,
             guidance: float = 1.0, seed: int = 0, batch_size: int = 8, oracle: bool = True,
             sheet_indices: set[int] | frozenset = frozenset(), progress: bool = True) -> list[ItemResult]:
    """Edits every job's query (and its wrong-example run), ``batch_size`` queries per pipeline call,
    and scores it. Queries share a call when their (unified) instruction and image sizes match; the
    pipeline's per-query seeds make the result independent of the batching."""
    from tqdm.auto import tqdm

    from gie_core.visual_prompt import to_image_tensor

    from .data.dataset import unify_instructions
    from .data.formats import BadImage, load_image

    k = spec.k
    texts = dict(zip((j.index for j in jobs), unify_instructions([j.query.instruction for j in jobs], spec.liu)))
    tasks, keys = [], {}
    for job in jobs:
        for wrong in (False, True) if job.wrong_group is not None else (False,):
            t = _Task(job, wrong)
            try:
                keys[id(t)] = _batch_key(t, k, texts[job.index])
            except BadImage as e:
                log.warning("skipped query %s: %s", job.query.key, e)
                continue
            tasks.append(t)
    tasks.sort(key=lambda t: (keys[id(t)], t.job.index, t.wrong))
    batches: list[list[_Task]] = []
    for t in tasks:
        if batches and len(batches[-1]) < batch_size and keys[id(batches[-1][0])] == keys[id(t)]:
            batches[-1].append(t)
        else:
            batches.append([t])

    results: dict[int, ItemResult] = {}
    wrong_scores: dict[int, dict] = {}
    sheet_parts: dict[int, dict] = {}
    bar = tqdm(total=len(tasks), desc=f"editing ({spec.name})", unit="edit", disable=not progress)
    for batch in batches:
        try:
            imgs = [{"examples": [(load_image(e.before, 1), load_image(e.after, 1)) for e in t.examples[:k]],
                     "query": load_image(t.job.query.before, 1), "truth": load_image(t.job.query.after, 1)}
                    for t in batch]
        except BadImage as e:  # header fine, pixels not: drop the batch's queries, keep going
            log.warning("skipped %d queries: %s", len(batch), e)
            bar.update(len(batch))
            continue
        examples = [(to_image_tensor([d["examples"][e][0] for d in imgs]),
                     to_image_tensor([d["examples"][e][1] for d in imgs])) for e in range(k)]
        queries = to_image_tensor([d["query"] for d in imgs])
        truths = to_image_tensor([d["truth"] for d in imgs])
        prompt = pipe.build_prompt(examples, queries, tile=spec.tile, resize=spec.resize)
        out = pipe.edit_prompt(prompt, texts[batch[0].job.index], num_inference_steps=steps, guidance_scale=guidance,
                               seed=[seed + t.job.index for t in batch], unify=False)
        edits = (out.edits if isinstance(out.edits, torch.Tensor) else torch.cat(out.edits)).float().cpu()

        # The truth and the query in the model's own frame: the same resize as the query's, no
        # resampling of the edit. The oracle is the truth through the VAE inside the same grid.
        own = [i for i, t in enumerate(batch) if not t.wrong]
        wrong = [i for i, t in enumerate(batch) if t.wrong]
        if wrong:  # (the job's own run may sit in another batch)
            wframe = pipe.build_prompt([(a[wrong], b[wrong]) for a, b in examples], queries[wrong], tile=spec.tile,
                                       resize=spec.resize, target=truths[wrong])
            w_truth = wframe.layout.crop(wframe.grid).float().cpu()
            for j, s in zip(wrong, scorer.wrong_scores(_chw(edits[wrong]), _chw(w_truth))):
                wrong_scores[batch[j].job.index] = s
                if batch[j].job.index in sheet_indices:
                    sheet_parts.setdefault(batch[j].job.index, {})["wrong_edit"] = _hwc_uint8(edits[j])
        if own:
            frame = pipe.build_prompt([(a[own], b[own]) for a, b in examples], queries[own], tile=spec.tile,
                                      resize=spec.resize, target=truths[own])
            truth = frame.layout.crop(frame.grid).float().cpu()
            query = frame.layout.crop(frame.grid, cell="query").float().cpu()
            orc = frame.layout.crop(vae_roundtrip(pipe, frame.grid)).float().cpu() if oracle else None
            jobs_own = [batch[i].job for i in own]
            split_groups: dict[str, list[int]] = {}
            for n, j in enumerate(jobs_own):
                split_groups.setdefault(j.split, []).append(n)
            for split, rows in split_groups.items():
                caps = [(jobs_own[n].query.before_caption, jobs_own[n].query.after_caption) for n in rows]
                scores = scorer.score(split, _chw(edits[[own[n] for n in rows]]), _chw(truth[rows]),
                                      _chw(query[rows]), None if orc is None else _chw(orc[rows]),
                                      [texts[jobs_own[n].index] for n in rows], caps)
                for n, s in zip(rows, scores):
                    j = jobs_own[n]
                    results[j.index] = ItemResult(j.index, j.query.key, j.group.key, j.group.family, j.split, s,
                                                  j.wrong_group.key if j.wrong_group else None)
                    if j.index in sheet_indices:
                        sheet_parts.setdefault(j.index, {}).update(
                            example_before=_hwc_uint8(frame.layout.cell(frame.grid, "example0_before")[n]),
                            example_after=_hwc_uint8(frame.layout.cell(frame.grid, "example0_after")[n]),
                            query=_hwc_uint8(query[n]), edit=_hwc_uint8(edits[own[n]]), truth=_hwc_uint8(truth[n]))
        bar.update(len(batch))
    bar.close()
    items = []
    for idx in sorted(results):
        r = results[idx]
        r.scores.update(wrong_scores.get(idx, {}))
        r.sheet = sheet_parts.get(idx)
        items.append(r)
    return items


# --------------------------------------------------------------------------- statistics
def bootstrap_ci(values, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the mean (scipy.stats.bootstrap); ``None`` below two values.
    A difference of paired values (per-item ``a - b``) gives the paired interval."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size < 2:
        return None
    if np.ptp(v) == 0:
        return [float(v[0]), float(v[0])]
    from scipy import stats

    res = stats.bootstrap((v,), np.mean, n_resamples=resamples, confidence_level=level, method="percentile",
                          rng=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def _paired(items: Sequence[ItemResult], a: str, b: str) -> list[float]:
    return [it.scores[a] - it.scores[b] for it in items if it.scores.get(a) is not None
            and it.scores.get(b) is not None]


# per-item quantity -> how it is computed from an item's scores
QUANTITIES: dict[str, Callable[[Sequence[ItemResult]], list[float]]] = {
    **{key: (lambda items, key=key: [it.scores[key] for it in items if it.scores.get(key) is not None])
       for key in ("psnr", "ssim", "psnr_copy", "psnr_oracle", "psnr_wrong_example", "ssim_wrong_example",
                   "dir_image", "dir_caption", "dir_instruction")},
    "gain_over_copy": lambda items: _paired(items, "psnr", "psnr_copy"),
    "wrong_example_cost": lambda items: _paired(items, "psnr", "psnr_wrong_example"),
}


def summarize(items: Sequence[ItemResult], resamples: int = 2000, seed: int = 0) -> dict:
    """``{"n", QUANTITY: {"mean", "ci": [lo, hi], "n"}}`` for the quantities the items have."""
    out: dict = {"n": len(items)}
    for name, fn in QUANTITIES.items():
        v = fn(items)
        if v:
            out[name] = {"mean": float(np.mean(v)), "ci": bootstrap_ci(v, resamples, _stable_seed(seed, name)),
                         "n": len(v)}
    return out


def _by_split(items: Sequence[ItemResult]) -> dict[str, list[ItemResult]]:
    out: dict[str, list[ItemResult]] = {}
    for it in items:
        out.setdefault(it.split, []).append(it)
    if len(out) > 1:
        out["all"] = list(items)
    return {s: out[s] for s in sorted(out, key=lambda s: (SPLITS + (s,)).index(s))}


def score_splits(items: Sequence[ItemResult], resamples: int = 2000, seed: int = 0,
                 fid_by_split: dict[str, float] | None = None, fid_key: str = "fid") -> dict:
    """Per split: the summary, FID and per family (``splits[split]["families"][family]``)."""
    out: dict = {"splits": {}}
    for split, its in _by_split(items).items():
        s = summarize(its, resamples, seed)
        if fid_by_split and split in fid_by_split:
            s[fid_key] = fid_by_split[split]
        fams: dict[str, list[ItemResult]] = {}
        for it in its:
            fams.setdefault(it.family or "(none)", []).append(it)
        s["families"] = {f: summarize(v, resamples, seed) for f, v in sorted(fams.items())}
        out["splits"][split] = s
    return out


def _wrong_example_cost(it: ItemResult) -> float | None:
    w = it.scores.get("psnr_wrong_example")
    return None if w is None else it.scores["psnr"] - w


PAIRED_QUANTITIES: dict[str, Callable[[ItemResult], float | None]] = {
    "psnr": lambda it: it.scores.get("psnr"), "ssim": lambda it: it.scores.get("ssim"),
    "wrong_example_cost": _wrong_example_cost}


def _difference_block(pairs: Sequence[tuple[ItemResult, ItemResult]], resamples: int, seed: int) -> dict:
    res: dict = {"n": len(pairs)}
    for q, fn in PAIRED_QUANTITIES.items():
        d = [a - b for a, b in ((fn(x), fn(y)) for x, y in pairs) if a is not None and b is not None]
        if d:
            res[q] = {"mean": float(np.mean(d)), "ci": bootstrap_ci(d, resamples, _stable_seed(seed, q)), "n": len(d)}
    return res


def compare_models(items: dict[str, Sequence[ItemResult]], reference: str, resamples: int = 2000,
                   seed: int = 0) -> dict:
    """Paired differences ``model - reference`` on the items both scored (same queries, examples
    and seeds), per split and family: PSNR, SSIM and the wrong-example cost."""
    ref = {it.index: it for it in items[reference]}
    out = {}
    for name, its in items.items():
        if name == reference:
            continue
        both = [(it, ref[it.index]) for it in its if it.index in ref]
        if len(both) < max(len(its), len(ref)):
            log.warning("%s vs %s: %d common items (of %d and %d)", name, reference, len(both), len(its), len(ref))
        by: dict[str, list] = {}
        for a, b in both:
            by.setdefault(a.split, []).append((a, b))
        if len(by) > 1:
            by["all"] = both
        splits = {}
        for split in sorted(by, key=lambda s: (SPLITS + (s,)).index(s)):
            fams: dict[str, list] = {}
            for a, b in by[split]:
                fams.setdefault(a.family or "(none)", []).append((a, b))
            splits[split] = {**_difference_block(by[split], resamples, seed),
                             "families": {f: _difference_block(v, resamples, seed) for f, v in sorted(fams.items())}}
        out[name] = {"reference": reference, "splits": splits}
    return out


def check_targets(result: dict) -> dict:
    """Issue 13's bars on one model's results (:data:`TARGETS`): value, bar and whether it is met."""
    splits = result["splits"]
    out = {}

    def mean(block, q):
        v = block.get(q) if block else None
        return None if v is None else v["mean"]

    seen = splits.get("seen")
    if seen:
        out["seen_gain_over_copy"] = mean(seen, "gain_over_copy")
        fams = {f: mean(b, "gain_over_copy") for f, b in seen["families"].items()}
        fams = {f: v for f, v in fams.items() if v is not None}
        if fams:
            worst = min(fams, key=fams.get)
            out["seen_family_gain_over_copy"] = fams[worst]
            out["seen_family_worst"] = worst
    if splits.get("unseen"):
        out["unseen_gain_over_copy"] = mean(splits["unseen"], "gain_over_copy")
    overall = splits.get("all") or next(iter(splits.values()), None)
    out["wrong_example_cost"] = mean(overall, "wrong_example_cost")
    checks = {}
    for name, bar in TARGETS.items():
        v = out.get(name)
        if v is not None:
            checks[name] = {"value": v, "bar": bar, "met": bool(v >= bar)}
            if name == "seen_family_gain_over_copy":
                checks[name]["family"] = out["seen_family_worst"]
    return checks


# --------------------------------------------------------------------------- reports
def _clean(o):
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _fmt(block: dict | None, key: str, digits: int = 2, ci: bool = True) -> str:
    v = block.get(key) if block else None
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        return "–" if not np.isfinite(v) else f"{v:.{digits}f}"
    s = f"{v['mean']:.{digits}f}"
    if ci and v.get("ci"):
        s += f" [{v['ci'][0]:.{digits}f}, {v['ci'][1]:.{digits}f}]"
    return s


def _direction_columns(results: dict, encoder: str) -> list[tuple[str, str]]:
    names = {"dir_image": "image", "dir_caption": "caption", "dir_instruction": "instruction"}
    present = {k for m in results.values() for s in m["splits"].values() for k in names if k in s}
    return [(k, f"dir. sim. {names[k]} ({encoder})") for k in names if k in present]


def markdown_report(results: dict, comparisons: dict, targets: dict, meta: dict) -> str:
    """The tables of ``metrics.md``."""
    lines = ["# InstructGIE evaluation", ""]
    lines.append(f"Data `{meta.get('data')}`; {meta.get('steps')} sampling steps, guidance {meta.get('guidance')}, "
                 f"seed {meta.get('seed')}; means with 95 % bootstrap intervals ({meta.get('bootstrap')} resamples). "
                 "Copy: the unedited query scored against the truth. Oracle: the truth through the model's own VAE. "
                 "Wrong-example: the same query edited with another edit's example pair.")
    lines.append("")
    if targets:
        lines += ["## Targets", "", "| model | bar | value | met |", "|---|---|---|---|"]
        labels = {"seen_gain_over_copy": "seen: PSNR − copy ≥ {bar:g} dB",
                  "seen_family_gain_over_copy": "every seen family: PSNR − copy ≥ {bar:g} dB",
                  "unseen_gain_over_copy": "unseen: PSNR − copy ≥ {bar:g} dB",
                  "wrong_example_cost": "wrong-example cost ≥ {bar:g} dB"}
        for name, checks in targets.items():
            for key, c in checks.items():
                extra = f" (worst: {c['family']})" if "family" in c else ""
                lines.append(f"| {name} | {labels[key].format(bar=c['bar'])} | {c['value']:.2f}{extra} | "
                             f"{'yes' if c['met'] else '**no**'} |")
        lines.append("")
    fid_key = meta.get("fid_key")
    extra_cols = ([(fid_key, "FID" if fid_key == "fid" else "FD (tiny random features, plumbing only)")]
                  if fid_key else []) + _direction_columns(results, meta.get("direction_encoder", ""))
    head = ["model", "split", "n", "PSNR", "SSIM", "copy", "oracle", "PSNR − copy", "wrong-ex. PSNR",
            "wrong-ex. cost"] + [c[1] for c in extra_cols]
    lines += ["## Per split", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results.items():
        for split, s in m["splits"].items():
            cells = [name, split, str(s["n"]), _fmt(s, "psnr"), _fmt(s, "ssim", 3), _fmt(s, "psnr_copy", ci=False),
                     _fmt(s, "psnr_oracle", ci=False), _fmt(s, "gain_over_copy"), _fmt(s, "psnr_wrong_example", ci=False),
                     _fmt(s, "wrong_example_cost")] + [_fmt(s, c[0], 3 if c[0].startswith("dir") else 2)
                                                       for c in extra_cols]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    head = ["model", "split", "family", "n", "PSNR", "SSIM", "copy", "oracle", "PSNR − copy", "wrong-ex. cost"]
    lines += ["## Per family", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results.items():
        for split, s in m["splits"].items():
            if split == "all" and len(m["splits"]) > 1:
                continue
            for fam, f in s["families"].items():
                lines.append("| " + " | ".join([name, split, fam, str(f["n"]), _fmt(f, "psnr"), _fmt(f, "ssim", 3),
                                                 _fmt(f, "psnr_copy", ci=False), _fmt(f, "psnr_oracle", ci=False),
                                                 _fmt(f, "gain_over_copy"), _fmt(f, "wrong_example_cost")]) + " |")
    lines.append("")
    if comparisons:
        head = ["model − reference", "split", "family", "n", "Δ PSNR", "Δ SSIM", "Δ wrong-ex. cost"]
        lines += ["## Differences between models (paired, same items)", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for name, c in comparisons.items():
            for split, s in c["splits"].items():
                rows = [("all families", s)] + ([] if split == "all" else list(s["families"].items()))
                for fam, b in rows:
                    lines.append("| " + " | ".join([f"{name} − {c['reference']}", split, fam, str(b["n"]),
                                                     _fmt(b, "psnr"), _fmt(b, "ssim", 3),
                                                     _fmt(b, "wrong_example_cost")]) + " |")
        lines.append("")
    return "\n".join(lines)


def family_chart(results: dict, path: Path) -> bool:
    """Per-family bars (PSNR and wrong-example cost, one bar per model, 95 % intervals) with the copy
    baseline and the VAE oracle drawn as lines over each family. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no families.png (pip install matplotlib)")
        return False
    entries = []  # (label, split, family)
    for m in results.values():
        for split, s in m["splits"].items():
            if split == "all" and len(m["splits"]) > 1:
                continue
            for fam in s["families"]:
                if (split, fam) not in [(e[1], e[2]) for e in entries]:
                    entries.append((fam if split == "seen" else f"{fam}\n({split})", split, fam))
    if not entries:
        return False
    names = list(results)
    width = 0.8 / len(names)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.9 * len(entries) + 2), 7.5), sharex=True)
    for ax, key, title in ((axes[0], "psnr", "PSNR against the ground truth (dB)"),
                           (axes[1], "wrong_example_cost", "PSNR lost with a wrong example (dB)")):
        for mi, name in enumerate(names):
            xs, ys, lo, hi = [], [], [], []
            for x, (_, split, fam) in enumerate(entries):
                b = results[name]["splits"].get(split, {}).get("families", {}).get(fam, {}).get(key)
                if b is None:
                    continue
                xs.append(x - 0.4 + width * (mi + 0.5))
                ys.append(b["mean"])
                ci = b.get("ci") or [b["mean"], b["mean"]]
                lo.append(b["mean"] - ci[0])
                hi.append(ci[1] - b["mean"])
            ax.bar(xs, ys, width * 0.9, yerr=[lo, hi], capsize=2, label=name)
        if key == "psnr":  # baselines of the first model (the copy baseline is the same for all at one tile)
            labelled = set()
            for x, (_, split, fam) in enumerate(entries):
                ref = results[names[0]]["splits"].get(split, {}).get("families", {}).get(fam, {})
                for q, style, lab in (("psnr_copy", "k-", "copy (unedited query)"),
                                      ("psnr_oracle", "k:", f"VAE oracle ({names[0]})")):
                    if ref.get(q):
                        ax.plot([x - 0.45, x + 0.45], [ref[q]["mean"]] * 2, style, lw=1.5,
                                label=None if lab in labelled else lab)
                        labelled.add(lab)
        else:
            ax.axhline(0, color="k", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[1].set_xticks(range(len(entries)), [e[0] for e in entries], rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


SHEET_COLUMNS = ("example before", "example after", "query", "edit", "truth", "wrong-example edit")


def sample_sheet(items: Sequence[ItemResult], cell: int = 96):
    """Labelled sheet (PIL) of the items that carry images: example before | example after | query |
    edit | truth | wrong-example edit, captioned with family, split and PSNR."""
    from gie_core._cli.demo import make_sheet

    rows = []
    for it in items:
        if not it.sheet or "edit" not in it.sheet:
            continue
        s = it.scores
        blank = torch.full_like(it.sheet["edit"], 255)
        cells = [it.sheet[n].float() / 255 for n in ("example_before", "example_after", "query", "edit", "truth")]
        cells.append(it.sheet.get("wrong_edit", blank).float() / 255)
        caption = f"{it.family or '?'} ({it.split})  PSNR {s['psnr']:.1f} dB"
        if s.get("psnr_copy") is not None:
            caption += f"  copy {s['psnr_copy']:.1f}"
        if s.get("psnr_wrong_example") is not None:
            caption += f"  wrong ex. {s['psnr_wrong_example']:.1f}"
        rows.append({"seen": it.split != "unseen", "cells": cells, "caption": caption})
    return make_sheet(rows, cell=cell, columns=SHEET_COLUMNS) if rows else None


def pick_sheet_items(jobs: Sequence[EvalJob], per_split: int = 6) -> set[int]:
    """Up to ``per_split`` items per split for the sample sheet: one per family first, in plan order."""
    chosen: set[int] = set()
    for split in sorted({j.split for j in jobs}):
        first, rest, families = [], [], set()
        for j in jobs:
            if j.split == split:
                (rest if j.group.family in families else first).append(j)
                families.add(j.group.family)
        chosen |= {j.index for j in (first + rest)[:per_split]}
    return chosen


# --------------------------------------------------------------------------- output folder
OWN_FILES = re.compile(r"(run\.json|metrics\.json|metrics\.md|families\.png|samples-.+\.png|items-.+\.jsonl)")


def prepare_out(out: Path, overwrite: bool) -> Path:
    """A fresh staging folder inside ``out``; refuses an ``out`` that holds an earlier evaluation
    unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    old = sorted(p.name for p in out.iterdir() if OWN_FILES.fullmatch(p.name)) if out.is_dir() else []
    if old and not overwrite:
        raise ValueError(f"--out {out}: already holds an evaluation ({', '.join(old[:3])}"
                         f"{', …' if len(old) > 3 else ''}); pass --overwrite to replace it or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".eval-staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = out / f".eval-staging-{os.getpid()}"
    stage.mkdir()
    return stage


def publish(stage: Path, out: Path) -> list[str]:
    """Replaces the previous evaluation in ``out`` by the staged files: ``run.json`` goes first and
    comes back last, so a ``run.json`` beside the files always describes them."""
    (out / "run.json").unlink(missing_ok=True)
    new = sorted(p.name for p in stage.iterdir())
    for p in out.iterdir():
        if p.is_file() and OWN_FILES.fullmatch(p.name) and p.name not in new:
            p.unlink()
    for name in sorted(new, key=lambda n: n == "run.json"):
        os.replace(stage / name, out / name)
    stage.rmdir()
    return new


# --------------------------------------------------------------------------- CLI
DESCRIPTION = """Evaluates trained InstructGIE models against baselines that blur cannot beat: every query
is edited with its own edit's example pair and with another edit's, and scored (PSNR, SSIM, optional
FID and CLIP directional similarity) per split and family with 95 % bootstrap intervals, beside the
unedited query (copy baseline) and the truth through the model's VAE (oracle). Writes metrics.json,
metrics.md, families.png, samples-NAME.png, items-NAME.jsonl and run.json into --out."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="instructgie-eval", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  instructgie-eval --model default --out runs/eval_default
  instructgie-eval --model full=runs/tiny --model conv=runs/tiny_conv --steps 10 --out runs/eval
  instructgie-eval --model runs/sd15/controlnet.safetensors --base-model /models/sd15 --data /data/test \\
      --clip-model /models/clip-vit-large-patch14 --inception /models/pt_inception-2015-12-05-6726825d.pth
  instructgie-eval --predictions my_edits/ --clip-model /models/clip --out runs/eval_external

--data NAME:... picks a registered data source (synthetic; a module trainer.data.NAME with a
load_spec(spec) function registers itself); anything else is a folder with metadata.jsonl or
InstructPix2Pix-format parquet/arrow data. Pairs are grouped into edits by their `group` id, else
their canonical instruction, else their unified instruction.""")
    g = p.add_argument_group("models")
    g.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a model to evaluate (repeatable; the first is the reference of the paired differences): "
                        "a training output folder, an exported ControlNet (with --base-model), or 'default' "
                        "for the bundled model")
    g.add_argument("--base-model", default="", metavar="PATH",
                   help="SD1.5 folder/file (or 'tiny') under exported ControlNets; training folders name their own")
    g.add_argument("--predictions", default="", metavar="DIR",
                   help="score finished edits instead of running models: a folder with metadata.jsonl rows "
                        "{prediction, after, before, instruction[, family, seen]}")
    g = p.add_argument_group("items")
    g.add_argument("--data", default="synthetic:pairs=70,size=64,start_index=100000", metavar="SPEC",
                   help="evaluation pairs (default: 70 fresh synthetic pairs per edit, indices the training "
                        "data never uses, enough for 200 unseen queries)")
    g.add_argument("--data-format", default="auto", metavar="FORMAT",
                   help="auto, folder, ip2p or a registered source name (default: auto, from --data)")
    g.add_argument("--n-per-split", type=int, default=200, metavar="N",
                   help="queries per split (seen / unseen), taken round-robin over the edits (default: 200)")
    g.add_argument("--max-queries-per-edit", "--queries-per-instruction", dest="max_queries_per_edit", type=int,
                   default=None, metavar="N", help="at most N queries from one edit (default: no limit)")
    g.add_argument("--k", type=int, default=None, metavar="N", help="example pairs per query (default: each model's training k)")
    g.add_argument("--no-wrong-example", action="store_true",
                   help="skip the wrong-example runs (halves the work; no wrong-example cost)")
    g.add_argument("--no-oracle", action="store_true", help="skip the VAE-oracle baseline")
    g.add_argument("--no-liu", action="store_true", help="do not unify instructions (grouping and prompts)")
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, default=20, metavar="N", help="denoising steps per edit (default: 20)")
    g.add_argument("--guidance", type=float, default=1.0, metavar="X", help="classifier-free guidance scale (default: 1 = off)")
    g.add_argument("--scheduler", default="", metavar="NAME", help="sampler by short name, e.g. ddim, euler_a (default: the model's)")
    g.add_argument("--batch-size", type=int, default=16, metavar="N", help="queries per pipeline call (default: 16)")
    g.add_argument("--tile", type=int, default=None, metavar="PX", help="cell size in pixels (default: each model's training tile)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the item choice and of the sampling noise "
                                                       "(item i uses seed+i) (default: 0)")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda, cuda:1 … (default: cuda if available)")
    g = p.add_argument_group("metrics and output")
    g.add_argument("--clip-model", default="", metavar="DIR",
                   help="local CLIP folder (transformers format) for directional similarity; text direction "
                        "needs a full CLIPModel with its tokenizer (default: none)")
    g.add_argument("--inception", default="", metavar="FILE",
                   help="local FID Inception weights (pt_inception-2015-12-05-6726825d.pth; needs torch-fidelity); "
                        "'tiny' runs the FID code on random features, for tests (default: no FID)")
    g.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="bootstrap resamples per interval (default: 2000)")
    g.add_argument("--sheet-rows", type=int, default=6, metavar="N",
                   help="sample-sheet rows per split (default: 6)")
    g.add_argument("--out", default="runs/eval", metavar="DIR", help="output folder (default: runs/eval)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an earlier evaluation in --out (its files are removed; others are kept)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _check_args(args) -> None:
    for name, v, lo in (("--n-per-split", args.n_per_split, 1), ("--batch-size", args.batch_size, 1),
                        ("--steps", args.steps, 1), ("--bootstrap", args.bootstrap, 100),
                        ("--sheet-rows", args.sheet_rows, 0)):
        if v < lo:
            raise ValueError(f"{name}: expected at least {lo}, got {v}")
    for name, v in (("--k", args.k), ("--max-queries-per-edit", args.max_queries_per_edit), ("--tile", args.tile)):
        if v is not None and v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v}")
    if args.guidance < 0:
        raise ValueError(f"--guidance: expected a number >= 0, got {args.guidance}")
    if not args.model and not args.predictions:
        raise ValueError("give --model (repeatable) or --predictions")
    if args.model and args.predictions:
        raise ValueError("give either --model or --predictions, not both")


def _to_chw_image(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)


def score_predictions(folder: str | Path, scorer: Scorer, sheet_rows: int = 6) -> list[ItemResult]:
    """Items of a predictions folder (metadata.jsonl rows with prediction/after/before paths)."""
    from .data.formats import BadImage, load_image

    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise ValueError(f"--predictions {folder}: expected a metadata.jsonl with rows "
                         "{prediction, after, before, instruction[, family, seen]}")
    items, per_split = [], {}
    for n, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            pred, after, before = (_to_chw_image(load_image(folder / r[c], 1))[None]
                                   for c in ("prediction", "after", "before"))
        except (ValueError, KeyError, TypeError, BadImage) as e:
            log.warning("predictions line %d skipped: %s", n, e)
            continue
        if pred.shape != after.shape:  # another size than the truth: score at the truth's
            pred = F.interpolate(pred, size=after.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1)
        split = split_name(r.get("seen"))
        s = scorer.score(split, pred, after, before, None, [r.get("instruction", "")],
                         [(r.get("before_caption"), r.get("after_caption"))])[0]
        it = ItemResult(len(items), str(r["prediction"]), r.get("instruction", ""), r.get("family", ""), split, s)
        per_split[split] = per_split.get(split, 0) + 1
        if per_split[split] <= sheet_rows:
            it.sheet = {"query": _hwc_uint8(before[0].permute(1, 2, 0)), "edit": _hwc_uint8(pred[0].permute(1, 2, 0)),
                        "truth": _hwc_uint8(after[0].permute(1, 2, 0))}
        items.append(it)
    if not items:
        raise ValueError(f"--predictions {folder}: no usable rows")
    return items


def _predictions_sheet(items: Sequence[ItemResult], cell: int = 96):
    from gie_core._cli.demo import make_sheet

    rows = [{"seen": it.split != "unseen", "cells": [it.sheet[n].float() / 255 for n in ("query", "edit", "truth")],
             "caption": f"{it.family or '?'} ({it.split})  PSNR {it.scores['psnr']:.1f} dB"}
            for it in items if it.sheet and len({tuple(it.sheet[n].shape) for n in it.sheet}) == 1]
    return make_sheet(rows, cell=cell, columns=("query", "edit", "truth")) if rows else None


def run(args) -> dict:
    """The whole evaluation; returns the ``metrics.json`` content."""
    t0 = time.time()
    _check_args(args)
    out = Path(args.out)
    stage = prepare_out(out, args.overwrite)
    try:
        report = _run(args, stage, t0)
        publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return report


def _run(args, stage: Path, t0: float) -> dict:
    if args.device == "cpu" or str(args.device).startswith("cpu"):
        # Tiny scans: the plain PyTorch scan is as fast as the fused numba one, which compiles on
        # first use (60-100 s of CPU measured, docs/demo.md). A GIE_SCAN_BACKEND set by the user wins.
        os.environ.setdefault("GIE_SCAN_BACKEND", "cpu_torch")
    directions = DirectionEncoder(args.clip_model, args.device) if args.clip_model else None
    scorer = Scorer(directions, load_fid_features(args.inception), args.device)
    items_by_model: dict[str, list[ItemResult]] = {}
    results: dict = {}
    models: dict = {}
    n_items: dict = {}
    if args.predictions:
        items = score_predictions(args.predictions, scorer, args.sheet_rows)
        items_by_model["predictions"] = items
        results["predictions"] = score_splits(items, args.bootstrap, args.seed, scorer.fid_by_split(),
                                              scorer.fid_key or "fid")
        sheet = _predictions_sheet(items)
        if sheet is not None:
            sheet.save(stage / "samples-predictions.png")
    else:
        specs = [model_from_arg(a, args.base_model, not args.no_liu, args.tile, args.k) for a in args.model]
        dup = {s.name for s in specs if [t.name for t in specs].count(s.name) > 1}
        if dup:
            raise ValueError(f"--model: the name {sorted(dup)[0]!r} is given twice; name them NAME=PATH")
        records = load_eval_records(args.data, args.data_format)
        groups = edit_groups(records, not args.no_liu)
        k_max = max(s.k for s in specs)
        jobs = plan_jobs(groups, args.n_per_split, k_max, args.seed, args.max_queries_per_edit,
                         not args.no_wrong_example)
        if not jobs:
            raise ValueError(f"--data {args.data}: no edit with at least {k_max + 1} pairs (a query and "
                             f"{k_max} example(s))")
        for j in jobs:
            n_items[j.split] = n_items.get(j.split, 0) + 1
        log.info("%d edits, %d queries (%s)", len(groups), len(jobs),
                 ", ".join(f"{s} {n}" for s, n in sorted(n_items.items())))
        sheet_ids = pick_sheet_items(jobs, args.sheet_rows)
        for spec in specs:
            pipe = load_pipeline_for(spec, args.device, args.scheduler)
            pipe.set_progress_bar_config(disable=True)
            model_jobs = jobs
            items = generate(pipe, spec, model_jobs, scorer, steps=args.steps, guidance=args.guidance,
                             seed=args.seed, batch_size=args.batch_size, oracle=not args.no_oracle,
                             sheet_indices=sheet_ids, progress=not args.no_progress)
            del pipe
            items_by_model[spec.name] = items
            results[spec.name] = score_splits(items, args.bootstrap, args.seed, scorer.fid_by_split(),
                                              scorer.fid_key or "fid")
            models[spec.name] = vars(spec)
            sheet = sample_sheet(items)
            if sheet is not None:
                sheet.save(stage / f"samples-{spec.name}.png")
    reference = next(iter(items_by_model))
    comparisons = compare_models(items_by_model, reference, args.bootstrap, args.seed) if len(items_by_model) > 1 \
        else {}
    targets = {name: check_targets(r) for name, r in results.items()}
    meta = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    meta.update(fid_key=scorer.fid_key, direction_encoder=directions.name if directions else None,
                psnr_cap_db=PSNR_CAP_DB, instruction_texts=list(INSTRUCTION_TEXTS))
    report = _clean({"meta": meta, "models": results, "comparisons": comparisons, "targets": targets})
    (stage / "metrics.json").write_text(json.dumps(report, indent=1))
    (stage / "metrics.md").write_text(markdown_report(results, comparisons, targets, meta))
    for name, items in items_by_model.items():
        (stage / f"items-{name}.jsonl").write_text("".join(json.dumps(it.to_json()) + "\n" for it in items))
    family_chart(results, stage / "families.png")
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("torch", "diffusers", "transformers", "torchmetrics", "comfyui-instructgie"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    files = sorted(p.name for p in stage.iterdir()) + ["run.json"]
    run_info = {"command": ["instructgie-eval", *getattr(args, "argv", [])], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "wall_s": round(time.time() - t0, 1), "files": files, "models": models, "items_per_split": n_items,
                "options": meta, "versions": versions}
    (stage / "run.json").write_text(json.dumps(_clean(run_info), indent=1) + "\n")
    return report


def _summary_lines(report: dict, out: Path) -> list[str]:
    lines = []
    for name, m in report["models"].items():
        for split, s in m["splits"].items():
            lines.append(f"{name:<12} {split:<7} n={s['n']:<4} PSNR {_fmt(s, 'psnr')}  copy {_fmt(s, 'psnr_copy', ci=False)}"
                         f"  gain {_fmt(s, 'gain_over_copy')}  wrong-ex. cost {_fmt(s, 'wrong_example_cost')}")
        for key, c in report["targets"].get(name, {}).items():
            lines.append(f"{name:<12} target {key}: {c['value']:.2f} (bar {c['bar']:g}) {'met' if c['met'] else 'NOT met'}")
    lines.append(f"report: {out / 'metrics.md'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        from gie_core.runtime import prepare_process

        prepare_process()  # torch threads for the CPUs idle now, numba's pool, no torchvision notes
        report = run(args)
    except ValueError as e:
        print(f"instructgie-eval: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(_summary_lines(report, Path(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
