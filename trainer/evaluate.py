"""``instructgie-eval``: how well trained models edit, split into seen and unseen edit families.

For every query pair of the evaluation data the model gets ``k`` example pairs of the same edit
(same canonical instruction when the data has one, e.g. the synthetic generator's, else the same
unified instruction) and its edit is compared with

- the ground-truth *after* image: PSNR and SSIM (torchmetrics),
- in distribution: FID (torchmetrics' ``FrechetInceptionDistance`` on features from a local
  Inception file, see :func:`load_fid_features`),
- in direction: CLIP directional similarity, ``cos(E(edit) − E(before), E(after) − E(before))``
  with a local CLIP image encoder, and with captions (InstructPix2Pix data) the text version
  ``cos(E(edit) − E(before), T(after caption) − T(before caption))``.

Writes ``metrics.json`` and ``metrics.md`` (one table row per model and split) and a sample sheet
per model. ``--predictions`` scores already generated edits (a folder with metadata.jsonl rows
``{prediction, after, before, instruction[, family, seen]}``) without any model.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger("trainer.evaluate")


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
            raise ValueError(f"inception weights {weights_path}: not found (expected the FID Inception "
                             "file pt_inception-2015-12-05-6726825d.pth)")
        _torch_fidelity_submodules()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=str(weights_path))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(x)[0].reshape(images.shape[0], -1).float()


class TinyFeatures(nn.Module):
    """A fixed random conv feature extractor: FID plumbing in tests, never for reported numbers."""

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
    """``""``: no FID; ``"tiny"``: :class:`TinyFeatures`; else a local Inception weights file."""
    if not spec:
        return None
    return TinyFeatures() if spec == "tiny" else InceptionFeatures(spec)


# --------------------------------------------------------------------------- metrics
@dataclass
class EvalItem:
    """One scored edit: images ``[3,H,W]`` in 0..1."""

    prediction: torch.Tensor
    after: torch.Tensor
    before: torch.Tensor
    instruction: str
    family: str = ""
    seen: bool | None = None
    before_caption: str | None = None
    after_caption: str | None = None


def split_name(seen: bool | None) -> str:
    return {True: "seen", False: "unseen", None: "all"}[seen]


@dataclass
class Scorer:
    """Computes every metric for lists of :class:`EvalItem`."""

    clip: nn.Module | None = None  # images [B,3,H,W] -> embeddings (trainer.losses.CLIPImageEmbedder)
    clip_text: object = None  # (tokenizer, CLIPModel) for the caption direction
    fid_features: nn.Module | None = None
    batch: int = 16
    extra: dict = field(default_factory=dict)

    @torch.no_grad()
    def _embed(self, imgs: Sequence[torch.Tensor]) -> torch.Tensor:
        out = []
        for i in range(0, len(imgs), self.batch):
            chunk = torch.stack([F.interpolate(x[None], size=imgs[0].shape[-2:], mode="bilinear")[0]
                                 for x in imgs[i:i + self.batch]])
            out.append(self.clip(chunk))
        return torch.cat(out)

    @torch.no_grad()
    def _text(self, texts: Sequence[str]) -> torch.Tensor:
        tok, model = self.clip_text
        ids = tok(list(texts), padding=True, truncation=True, return_tensors="pt")
        return model.get_text_features(**ids).float()

    @torch.no_grad()
    def score(self, items: Sequence[EvalItem]) -> dict:
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        if not items:
            return {"n": 0}
        psnr, ssim, copy = [], [], []
        for it in items:
            p, a = it.prediction[None].float().clamp(0, 1), it.after[None].float().clamp(0, 1)
            if p.shape != a.shape:
                p = F.interpolate(p, size=a.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1)
            psnr.append(float(peak_signal_noise_ratio(p, a, data_range=1.0)))
            ssim.append(float(structural_similarity_index_measure(p, a, data_range=1.0)))
            b = it.before[None].float().clamp(0, 1)
            if b.shape == a.shape:  # the do-nothing baseline: the query itself as the edit
                copy.append(float(peak_signal_noise_ratio(b, a, data_range=1.0)))
        res = {"n": len(items), "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}
        if copy:
            res["psnr_copy_query"] = float(np.mean(copy))
        if self.clip is not None:
            e_p = self._embed([it.prediction for it in items])
            e_b = self._embed([it.before for it in items])
            e_a = self._embed([it.after for it in items])
            res["clip_dir_image"] = float(F.cosine_similarity(e_p - e_b, e_a - e_b, dim=-1, eps=1e-6).mean())
            capt = [i for i, it in enumerate(items) if it.before_caption and it.after_caption]
            if self.clip_text is not None and capt:
                t_b = self._text([items[i].before_caption for i in capt])
                t_a = self._text([items[i].after_caption for i in capt])
                sel = torch.tensor(capt)
                res["clip_dir_text"] = float(F.cosine_similarity(e_p[sel] - e_b[sel], t_a - t_b, dim=-1,
                                                                 eps=1e-6).mean())
        if self.fid_features is not None:
            res["fid"] = fid(self.fid_features, [it.prediction for it in items], [it.after for it in items])
        return res


def fid(features: nn.Module, fake: Sequence[torch.Tensor], real: Sequence[torch.Tensor], size: int = 299) -> float:
    """FID between two image lists through torchmetrics (images resized to ``size``)."""
    if importlib.util.find_spec("torch_fidelity") is not None:
        _torch_fidelity_submodules()  # else torchmetrics' import of it pulls torchvision and fails
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(fake) < 2 or len(real) < 2:
        return float("nan")  # undefined for fewer than two samples; reported as null in JSON
    metric = FrechetInceptionDistance(feature=features, normalize=True, input_img_size=(3, size, size))
    for imgs, real_flag in ((real, True), (fake, False)):
        for i in range(0, len(imgs), 16):
            x = torch.stack([F.interpolate(t[None].float(), size=(size, size), mode="bilinear", antialias=True)[0]
                             for t in imgs[i:i + 16]]).clamp(0, 1)
            metric.update(x, real=real_flag)
    return float(metric.compute())


def score_splits(items: Sequence[EvalItem], scorer: Scorer) -> dict:
    """Metrics per split (seen / unseen / all) and per edit family."""
    out: dict = {"splits": {}, "families": {}}
    for split in sorted({split_name(it.seen) for it in items}):
        out["splits"][split] = scorer.score([it for it in items if split_name(it.seen) == split])
    if len(out["splits"]) > 1:
        out["splits"]["all"] = scorer.score(items)
    plain = Scorer(batch=scorer.batch)  # per family: PSNR/SSIM only (FID needs many samples)
    for fam in sorted({it.family for it in items if it.family}):
        out["families"][fam] = plain.score([it for it in items if it.family == fam])
    return out


# --------------------------------------------------------------------------- generation
def _to_chw(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)


def eval_groups(records, liu: bool = True) -> list[list]:
    """Pairs grouped by edit: canonical instruction when known, else the unified instruction."""
    from .data.dataset import unify_instructions

    keys = [r.canonical for r in records]
    missing = [i for i, k in enumerate(keys) if not k]
    if missing:
        unified = unify_instructions([records[i].instruction for i in missing], liu)
        for i, u in zip(missing, unified):
            keys[i] = u
    groups: dict[str, list] = {}
    for k, r in zip(keys, records):
        groups.setdefault(k, []).append(r)
    return [g for _, g in sorted(groups.items()) if len(g) >= 2]


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


def model_from_arg(arg: str, base: str, liu: bool, tile: int | None, k: int | None) -> ModelSpec:
    """``NAME=PATH`` or ``PATH``; PATH is a training output folder (its train_config.json gives
    the base, LIU, tile and k) or an exported ControlNet."""
    name, _, path = arg.rpartition("=")
    p = Path(path)
    name = name or p.stem
    cfg_file = p / "train_config.json"
    if p.is_dir() and cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        export = p / cfg["export_name"]
        if not export.exists():
            export = export.with_suffix("")  # conv ablations export a folder
        trained_base = p / "base"
        return ModelSpec(name, str(export), str(trained_base) if trained_base.is_dir() else cfg["base_model"],
                         cfg["liu"] and liu, tile or cfg["tile"], k or cfg["k_examples"], cfg["resize"],
                         cfg.get("tiny_seed", 0))
    if not p.exists():
        raise ValueError(f"--model {arg!r}: no such file or folder")
    if not base:
        raise ValueError(f"--model {arg!r}: an exported ControlNet needs --base-model")
    return ModelSpec(name, str(p), base, liu, tile or 256, k or 1)


def load_pipeline_for(spec: ModelSpec, device: str = "cpu"):
    from gie_core.loading import load_controlnet, load_pipeline

    if spec.base != "tiny":
        return load_pipeline(spec.base, spec.controlnet, device=device)
    from gie_core.pipeline import InstructGIEPipeline
    from gie_core.tiny import make_tiny_sd_components

    parts = make_tiny_sd_components(spec.tiny_seed)
    cn = load_controlnet(spec.controlnet, unet=parts["unet"])
    return InstructGIEPipeline(controlnet=cn, **parts).to(device)


@torch.no_grad()
def generate(pipe, groups, spec: ModelSpec, queries_per_group: int = 2, steps: int = 20, guidance: float = 1.0,
             seed: int = 0, progress: bool = True) -> list[EvalItem]:
    """Edits up to ``queries_per_group`` queries of every group, each with ``k`` other pairs as examples."""
    from tqdm.auto import tqdm

    from .data.formats import BadImage, load_image

    jobs = []
    for g in groups:
        for qi in range(min(queries_per_group, len(g))):
            others = [r for j, r in enumerate(g) if j != qi]
            jobs.append((g[qi], [others[(qi + e) % len(others)] for e in range(spec.k)]))
    items = []
    for n, (q, exs) in enumerate(tqdm(jobs, desc=f"editing ({spec.name})", disable=not progress)):
        try:
            ex = [(load_image(e.before), load_image(e.after)) for e in exs]
            qb, qa = load_image(q.before), load_image(q.after)
        except BadImage as e:
            log.warning("skipped query %s: %s", q.key, e)
            continue
        out = pipe.edit(ex, qb, q.instruction, tile=spec.tile, resize=spec.resize, num_inference_steps=steps,
                        guidance_scale=guidance, seed=seed + n, unify=spec.liu)
        pred = out.edits[0] if isinstance(out.edits, list) else out.edits
        b, a = _to_chw(qb), _to_chw(qa)
        p = pred.reshape(pred.shape[-3:]).permute(2, 0, 1).float().cpu()
        if p.shape[-2:] != a.shape[-2:]:
            p = F.interpolate(p[None], size=a.shape[-2:], mode="bicubic", antialias=True)[0].clamp(0, 1)
        items.append(EvalItem(p, a, b, q.instruction, q.family or "", q.seen, q.before_caption, q.after_caption))
    return items


def sample_sheet(items: Sequence[EvalItem], n: int = 8):
    """Rows of before | edit | ground truth for the first ``n`` items, as a PIL image."""
    from PIL import Image

    rows = [torch.cat([it.before, it.prediction, it.after], 2) for it in items[:n]
            if it.before.shape == it.prediction.shape == it.after.shape]
    if not rows or len({r.shape for r in rows}) != 1:
        return None
    img = torch.cat(rows, 1).permute(1, 2, 0).clamp(0, 1).numpy()
    return Image.fromarray((img * 255).round().astype(np.uint8))


def load_predictions(folder: str | Path) -> list[EvalItem]:
    """Items from a predictions folder (metadata.jsonl rows with prediction/after/before paths)."""
    from .data.formats import load_image

    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise ValueError(f"--predictions {folder}: expected a metadata.jsonl with rows "
                         "{prediction, after, before, instruction[, family, seen]}")
    items = []
    for n, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            items.append(EvalItem(_to_chw(load_image(folder / r["prediction"], 1)), _to_chw(load_image(folder / r["after"], 1)),
                                  _to_chw(load_image(folder / r["before"], 1)), r.get("instruction", ""),
                                  r.get("family", ""), r.get("seen"), r.get("before_caption"), r.get("after_caption")))
        except (ValueError, KeyError) as e:
            log.warning("predictions line %d skipped: %s", n, e)
    return items


# --------------------------------------------------------------------------- reports
METRIC_COLUMNS = (("n", "n", "{:d}"), ("psnr", "PSNR (dB)", "{:.2f}"),
                  ("psnr_copy_query", "PSNR of the unedited query (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                  ("fid", "FID", "{:.2f}"), ("clip_dir_image", "CLIP dir. (image)", "{:.3f}"),
                  ("clip_dir_text", "CLIP dir. (text)", "{:.3f}"))


def markdown_table(results: dict) -> str:
    """One row per model and split; columns for the metrics present."""
    cols = [c for c in METRIC_COLUMNS if any(c[0] in s for m in results.values() for s in m["splits"].values())]
    lines = ["| model | split | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for name, m in results.items():
        for split, s in m["splits"].items():
            cells = []
            for key, _, fmt in cols:
                v = s.get(key)
                cells.append("–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v))
            lines.append(f"| {name} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _clean(o):
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    return o


def write_reports(results: dict, out: str | Path, meta: dict | None = None) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_clean({"meta": meta or {}, "models": results}), indent=1))
    md = "# InstructGIE evaluation\n\n" + markdown_table(results)
    fams = {f for m in results.values() for f in m.get("families", {})}
    if fams:
        md += "\n## PSNR (dB) per edit family\n\n| family | " + " | ".join(results) + " |\n|---|" + "---|" * len(results) + "\n"
        for f in sorted(fams):
            md += f"| {f} | " + " | ".join(f"{results[m]['families'][f]['psnr']:.2f}" if f in results[m].get("families", {})
                                           else "–" for m in results) + " |\n"
    (out / "metrics.md").write_text(md)
    return out / "metrics.json", out / "metrics.md"


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="instructgie-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  instructgie-eval --model full=runs/tiny --model conv=runs/tiny_conv \\
      --data synthetic:pairs=4,size=64,start_index=100000 --clip-model tiny --out runs/eval
  instructgie-eval --model runs/sd15/controlnet.safetensors --base-model /models/sd15 --data /data/test \\
      --clip-model /models/clip-vit-large --inception /models/pt_inception-2015-12-05-6726825d.pth
  instructgie-eval --predictions my_edits/ --clip-model /models/clip --out runs/eval_external""")
    p.add_argument("--model", action="append", default=[], help="NAME=PATH (repeatable): a training output folder or an exported ControlNet")
    p.add_argument("--base-model", default="", help="SD1.5 folder/file (or 'tiny') for exported ControlNets")
    p.add_argument("--predictions", default="", help="score this folder of finished edits instead of running models")
    p.add_argument("--data", default="synthetic:pairs=4,size=64,start_index=100000",
                   help="evaluation pairs (same formats as training; the default synthetic spec uses unseen indices)")
    p.add_argument("--data-format", default="auto")
    p.add_argument("--queries-per-instruction", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--tile", type=int, default=None, help="cell size (default: the model's training tile)")
    p.add_argument("--k", type=int, default=None, help="example pairs (default: the model's)")
    p.add_argument("--no-liu", action="store_true", help="do not unify instructions")
    p.add_argument("--clip-model", default="", help="local CLIP folder (or 'tiny') for CLIP directional similarity")
    p.add_argument("--inception", default="", help="local FID Inception weights file (or 'tiny' for plumbing tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="runs/eval", help="folder for metrics.json, metrics.md and sample sheets")
    p.add_argument("--no-progress", action="store_true")
    return p


def _clip_scorer(spec: str):
    from .losses import CLIPImageEmbedder
    from .train import load_clip

    if not spec:
        return None, None
    emb = load_clip(spec)
    text = None
    cfg_file = Path(spec) / "config.json"
    if spec != "tiny" and '"CLIPModel"' in cfg_file.read_text():
        from transformers import CLIPModel, CLIPTokenizer

        text = (CLIPTokenizer.from_pretrained(spec, local_files_only=True),
                CLIPModel.from_pretrained(spec, local_files_only=True).eval())
    assert isinstance(emb, CLIPImageEmbedder)
    return emb, text


def run(args) -> dict:
    clip, clip_text = _clip_scorer(args.clip_model)
    scorer = Scorer(clip=clip, clip_text=clip_text, fid_features=load_fid_features(args.inception))
    results: dict = {}
    out = Path(args.out)
    if args.predictions:
        items = load_predictions(args.predictions)
        if not items:
            raise ValueError(f"--predictions {args.predictions}: no usable rows")
        results["predictions"] = score_splits(items, scorer)
    else:
        if not args.model:
            raise ValueError("give --model (repeatable) or --predictions")
        from .data.formats import load_records

        records = load_records(args.data, args.data_format)
        groups = eval_groups(records, not args.no_liu)
        if not groups:
            raise ValueError(f"--data {args.data}: no edit with at least two pairs")
        for arg in args.model:
            spec = model_from_arg(arg, args.base_model, not args.no_liu, args.tile, args.k)
            pipe = load_pipeline_for(spec, args.device)
            pipe.set_progress_bar_config(disable=True)
            items = generate(pipe, groups, spec, args.queries_per_instruction, args.steps, args.guidance,
                             args.seed, not args.no_progress)
            results[spec.name] = score_splits(items, scorer)
            sheet = sample_sheet(items)
            if sheet is not None:
                out.mkdir(parents=True, exist_ok=True)
                sheet.save(out / f"samples-{spec.name}.png")
    meta = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list))}
    write_reports(results, out, meta)
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        from gie_core.runtime import prepare_process

        prepare_process()  # torch threads for the CPUs idle now, numba's pool, no torchvision notes
        run(args)
    except ValueError as e:
        print(f"instructgie-eval: error: {e}", file=sys.stderr)
        return 2
    print((Path(args.out) / "metrics.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
