"""Procedural in-context edits whose parameters only the example pair shows.

An *edit* is a family plus random parameters: a 3×3 colour matrix and bias, per-channel gamma, a
hue angle, a pixelation block, a target colour for the objects, ... All pairs of one edit share
its parameters, so a model can only get the query right by reading the example pair — the
instruction cannot carry the parameters, and with probability ``generic`` (default one half) it is
a generic one ("edit it like the example") that does not even name the family.

Generalisation is tested two ways: whole families never drawn for training (``unseen`` families)
and held-out *parameter ranges* of training families (larger colour matrices, hue angles near
180°, coarser pixelation, stronger gammas). :func:`edit_records` draws evaluation pairs of either
split, each carrying its edit's id in ``PairRecord.group`` so an evaluation pairs a query with an
example of the same edit (and, for the wrong-example figure, of another edit).

Training reads :class:`InContextEditDataset`: sample ``i`` is a pure function of ``(seed, i)``, a
fresh edit with fresh scenes every time, so the model never sees the same parameters twice.
Everything is numpy + PIL, 32-64 px images; a sample costs about a millisecond.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import synthetic
from .synthetic import Background, Face, Obj, Scene, face_mask, render


# --------------------------------------------------------------------------- scenes
def _rgb(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def _saturated(rng: np.random.Generator) -> tuple[int, int, int]:
    """A vivid colour: random hue, high saturation, mid-to-high value."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def random_scene(rng: np.random.Generator, faces: bool = True) -> Scene:
    """A scene with colours spread over the whole RGB cube (so a colour edit is well determined by
    its example): a textured background of two random colours and 1-4 vivid objects, or a face."""
    kind = ("gradient", "stripes", "checker", "noise", "solid")[int(rng.integers(5))]
    colors = (_rgb(rng, 40, 256), _rgb(rng, 40, 256))
    param = {"gradient": float(rng.uniform(0, 2 * math.pi)), "stripes": float(rng.integers(3, 7)),
             "checker": float(rng.integers(2, 5)), "noise": float(rng.integers(1 << 30)), "solid": 0.0}[kind]
    bg = Background(kind, colors, param)
    if faces and rng.random() < 0.25:
        face = Face(float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.42, 0.58)), float(rng.uniform(0.26, 0.34)),
                    synthetic.SKIN[int(rng.integers(len(synthetic.SKIN)))], ("neutral", "smile", "frown")[int(rng.integers(3))])
        return Scene(bg, (), face)
    objs: list[Obj] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            r = float(rng.uniform(0.12, 0.22))
            o = Obj(synthetic.SHAPES[int(rng.integers(len(synthetic.SHAPES)))], _saturated(rng),
                    float(rng.uniform(r, 1 - r)), float(rng.uniform(r, 1 - r)), r)
            if all(math.hypot(o.cx - p.cx, o.cy - p.cy) > 0.8 * (o.r + p.r) for p in objs):
                break
        objs.append(o)
    return Scene(bg, tuple(objs))


def _to_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float32) / 255.0


# --------------------------------------------------------------------------- edits
# Colours in the RGB cube used to judge how strong a colour edit is (fixed, so the judgement is too).
_PROBE = np.random.default_rng(12345).random((256, 3)).astype(np.float32)


def _affine(x: np.ndarray, m: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip((x - 0.5) @ m.T + 0.5 + b, 0.0, 1.0)


def _strong_enough(fn: Callable[[np.ndarray], np.ndarray], min_change: float = 0.12, max_clipped: float = 0.3) -> bool:
    """Visible (mean absolute change on the probe colours) and not mostly saturated."""
    y = fn(_PROBE)
    clipped = float(np.mean((y <= 1e-6) | (y >= 1 - 1e-6)))
    return float(np.mean(np.abs(y - _PROBE))) >= min_change and clipped <= max_clipped


def _sample_matrix(rng, seen: bool):
    lo, hi = (0.6, 1.2) if seen else (1.35, 1.8)  # Frobenius norm of M - I
    for _ in range(100):
        a = rng.normal(size=(3, 3))
        a *= rng.uniform(lo, hi) / np.linalg.norm(a)
        m, b = np.eye(3) + a, rng.uniform(-0.15, 0.15, size=3)
        if _strong_enough(lambda x, m=m, b=b: _affine(x, m, b), max_clipped=0.3 if seen else 0.4):
            return tuple(np.round(np.concatenate([m.ravel(), b]), 4).tolist())
    raise RuntimeError("colour matrix: no draw passed the strength test in 100 tries")


def _apply_matrix(x, p):
    p = np.asarray(p, np.float32)
    return _affine(x, p[:9].reshape(3, 3), p[9:])


def _hue_matrix(theta: float) -> np.ndarray:
    """Rotation by ``theta`` about the grey axis (greys stay grey; hues turn)."""
    k = np.ones(3) / math.sqrt(3)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * (kx @ kx)


def _sample_hue(rng, seen: bool):
    deg = rng.uniform(40, 140) if seen else rng.uniform(155, 180)
    return (round(float(deg * (1 if rng.random() < 0.5 else -1)), 2),)


def _apply_hue(x, p):
    return _affine(x, _hue_matrix(math.radians(p[0])).astype(np.float32), np.zeros(3, np.float32))


def _sample_gamma(rng, seen: bool):
    lo, hi = (0.35, 0.9) if seen else (1.0, 1.4)  # |log gamma| per channel
    for _ in range(100):
        g = rng.uniform(lo, hi, size=3) * rng.choice([-1.0, 1.0], size=3)
        if _strong_enough(lambda x, g=g: np.power(x, np.exp(g)), min_change=0.08, max_clipped=1.0):
            return tuple(np.round(np.exp(g), 4).tolist())
    raise RuntimeError("gamma: no draw passed the strength test in 100 tries")


def _apply_gamma(x, p):
    return np.power(np.clip(x, 0, 1), np.asarray(p, np.float32))


def _pixelate(x, p):
    s, k = x.shape[0], max(1, int(p[0]) * x.shape[0] // 32)  # block in px of a 32-px image
    img = Image.fromarray((x * 255).round().astype(np.uint8))
    return _to_array(img.resize((s // k, s // k), Image.BOX).resize((s, s), Image.NEAREST))


def _sample_pixelate(rng, seen: bool):
    # block as a fraction of the image: 1/8 or 1/4 in training, 1/2 held out
    return (int(rng.choice([4, 8])),) if seen else (16,)


def _sepia(x, p):
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    return np.clip(x @ m.T, 0, 1)


_PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def _grey(x, p):
    return np.repeat((x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, -1)


def _posterize(x, p):
    n = int(p[0])
    return np.round(x * (n - 1)) / (n - 1)


def _recolour_objects(scene: Scene, p, rng) -> tuple[Scene, Scene] | None:
    if not scene.objects:
        return None
    return scene, replace(scene, objects=tuple(replace(o, color=tuple(p)) for o in scene.objects))


@dataclass(frozen=True)
class Family:
    """A parametrised edit family.

    ``sample(rng, seen)`` draws parameters from the training range (``seen``) or the held-out
    range, or returns None when the family has no such range. Pixel families transform the
    rendered before image (``pixel(x, params)`` on ``[H,W,3]`` floats in 0..1); scene families
    edit the scene description (``scene(scene, params, rng) -> (before, after) | None``).
    ``geometry`` moves a mask the way the edit moves the pixels (flips, rotations)."""

    name: str
    sample: Callable[[np.random.Generator, bool], tuple | None]
    paraphrases: tuple[str, ...] = ()
    pixel: Callable | None = field(default=None, repr=False, compare=False)
    scene: Callable | None = field(default=None, repr=False, compare=False)
    geometry: Callable | None = field(default=None, repr=False, compare=False)
    faces: bool = True  # whether face scenes suit the family


def _fixed(params: tuple = ()):
    return lambda rng, seen: params if seen else None


def _unseen_only(sample):
    return lambda rng, seen: None if seen else sample(rng)


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("colour_matrix", _sample_matrix, ("change the colours", "recolour the image", "apply a colour transform",
                                             "remap the colors"), pixel=_apply_matrix),
    Family("hue_rotate", _sample_hue, ("shift the hue", "rotate the hue", "change the hue of the image",
                                       "turn the hues"), pixel=_apply_hue),
    Family("gamma", _sample_gamma, ("apply a colour curve", "change the gamma", "adjust the curves",
                                    "apply a tone curve"), pixel=_apply_gamma),
    Family("invert", _fixed(), ("invert the colors", "make it a negative", "invert the colours of the image",
                                "Please invert the colors."), pixel=lambda x, p: 1.0 - x),
    Family("grayscale", _fixed(), ("make it black and white", "convert the image to grayscale",
                                   "remove the colour", "make the picture greyscale"), pixel=_grey),
    Family("flip_h", _fixed(), ("flip the image horizontally", "mirror the image left to right",
                                "flip it horizontally", "Please flip the picture horizontally."),
           pixel=lambda x, p: x[:, ::-1], geometry=lambda m: m[:, ::-1]),
    Family("flip_v", _fixed(), ("flip the image vertically", "turn the image upside down", "flip it vertically",
                                "Please flip the picture vertically."),
           pixel=lambda x, p: x[::-1], geometry=lambda m: m[::-1]),
    Family("rotate_180", _fixed(), ("rotate the image 180 degrees", "turn the image 180 degrees",
                                    "rotate it by 180 degrees", "Please rotate the picture 180 degrees."),
           pixel=lambda x, p: x[::-1, ::-1], geometry=lambda m: m[::-1, ::-1]),
    Family("pixelate", _sample_pixelate, ("pixelate the image", "make it pixelated", "turn it into pixel art",
                                          "Please pixelate the picture."), pixel=_pixelate),
    Family("recolour_objects", lambda rng, seen: _saturated(rng) if seen else None,
           ("recolour the shapes", "change the colour of the shapes", "paint the objects a new colour",
            "make all the shapes one colour"), scene=_recolour_objects, faces=False),
    # Held out of training: only the example can teach them.
    Family("sepia", lambda rng, seen: None if seen else (), ("make it sepia", "apply a sepia tone"), pixel=_sepia),
    Family("channel_swap", _unseen_only(lambda rng: _PERMUTATIONS[int(rng.integers(len(_PERMUTATIONS)))]),
           ("swap the colour channels", "swap the colors"), pixel=lambda x, p: x[..., list(p)]),
    Family("posterize", _unseen_only(lambda rng: (int(rng.integers(2, 4)),)),
           ("posterize the image", "reduce the number of colours"), pixel=_posterize),
]}

SEEN_FAMILIES = tuple(n for n, f in FAMILIES.items() if f.sample(np.random.default_rng(0), True) is not None)
UNSEEN_FAMILIES = tuple(n for n in FAMILIES if n not in SEEN_FAMILIES)
#: Training families with a held-out parameter range (their unseen draws).
HELD_OUT_RANGES = tuple(n for n in SEEN_FAMILIES if FAMILIES[n].sample(np.random.default_rng(0), False) is not None)

#: Instructions that name no edit: the example alone says what to do.
GENERIC_INSTRUCTIONS = ("edit it like the example", "do the same edit", "apply the same edit as the example",
                        "make it look like the example", "edit the image the way the example shows")


@dataclass(frozen=True)
class Edit:
    """One concrete edit: a family and its parameters."""

    family: str
    params: tuple
    seen: bool

    @property
    def id(self) -> str:
        return f"{self.family}:{zlib.crc32(repr(self.params).encode()):08x}"


def sample_edit(rng: np.random.Generator, seen: bool = True, families: Sequence[str] | None = None) -> Edit:
    """A random edit of ``families`` (default: every family with a range in that split)."""
    pool = [n for n in (families or FAMILIES) if FAMILIES[n].sample(np.random.default_rng(0), seen) is not None]
    if not pool:
        raise ValueError(f"families {list(families or [])}: none has {'training' if seen else 'held-out'} parameters")
    name = pool[int(rng.integers(len(pool)))]
    return Edit(name, tuple(FAMILIES[name].sample(rng, seen)), seen)


@dataclass
class Pair:
    before: np.ndarray  # [H,W,3] float32 in 0..1
    after: np.ndarray
    mask: np.ndarray | None = None  # face region of the after image, [H,W] in 0..1


def make_pair(edit: Edit, rng: np.random.Generator, size: int = 32) -> Pair:
    """A new scene edited by ``edit``."""
    fam = FAMILIES[edit.family]
    for _ in range(50):
        scene = random_scene(rng, faces=fam.faces)
        if fam.scene is not None:
            out = fam.scene(scene, edit.params, rng)
            if out is None:
                continue
            b_scene, a_scene = out
            before, after = _to_array(render(b_scene, size)), _to_array(render(a_scene, size))
            scene = a_scene
        else:
            before = _to_array(render(scene, size))
            after = np.ascontiguousarray(fam.pixel(before, edit.params), np.float32)
        m = face_mask(scene, size)
        mask = None if m is None else np.asarray(m, np.float32) / 255.0
        if mask is not None and fam.geometry is not None:
            mask = np.ascontiguousarray(fam.geometry(mask))
        return Pair(before, after, mask)
    raise RuntimeError(f"could not draw a scene for {edit.family}")  # pragma: no cover


def instruction_for(edit: Edit, rng: np.random.Generator, generic: float) -> str:
    """A generic instruction with probability ``generic`` (always for a family without
    paraphrases), else one of the family's paraphrases."""
    para = FAMILIES[edit.family].paraphrases
    if not para or rng.random() < generic:
        return GENERIC_INSTRUCTIONS[int(rng.integers(len(GENERIC_INSTRUCTIONS)))]
    return para[int(rng.integers(len(para)))]


# --------------------------------------------------------------------------- training samples
@dataclass
class InContextSpec:
    """Parsed ``incontext:`` data spec, e.g. ``incontext:size=32,generic=0.5,families=invert+gamma``.

    Training reads ``size``, ``seed``, ``generic`` and ``families``; evaluation data
    (:func:`load_spec`) also ``edits`` per split, ``pairs`` per edit and ``split``
    (``seen``, ``unseen`` or ``both``)."""

    size: int = 32
    seed: int = 0
    generic: float = 0.5
    families: tuple[str, ...] = ()
    edits: int = 200
    pairs: int = 2
    split: str = "both"

    @classmethod
    def parse(cls, spec: str) -> InContextSpec:
        body = spec.split(":", 1)[1] if ":" in spec else ""
        out = cls()
        for part in filter(None, body.split(",")):
            if "=" not in part:
                raise ValueError(f"incontext spec {spec!r}: expected key=value items, got {part!r}")
            k, v = (s.strip() for s in part.split("=", 1))
            if k in ("size", "seed", "edits", "pairs", "generic"):
                try:
                    float(v) if k == "generic" else int(v)
                except ValueError:
                    raise ValueError(f"incontext spec {spec!r}: {k} must be a number, got {v!r}") from None
            if k in ("size", "seed", "edits", "pairs"):
                setattr(out, k, int(v))
            elif k == "split":
                if v not in ("seen", "unseen", "both"):
                    raise ValueError(f"incontext spec {spec!r}: split must be seen, unseen or both, got {v!r}")
                out.split = v
            elif k == "generic":
                out.generic = float(v)
                if not 0 <= out.generic <= 1:
                    raise ValueError(f"incontext spec {spec!r}: generic must be in [0, 1], got {v}")
            elif k == "families":
                fams = tuple(x for x in v.split("+") if x)
                bad = [f for f in fams if f not in FAMILIES]
                if bad:
                    raise ValueError(f"incontext spec {spec!r}: unknown families {bad}; expected names from "
                                     f"{sorted(FAMILIES)}")
                out.families = fams
            else:
                raise ValueError(f"incontext spec {spec!r}: unknown key {k!r} (size, seed, generic, families, "
                                 "edits, pairs, split)")
        if out.size < 8 or out.size % 8:
            raise ValueError(f"incontext spec {spec!r}: size must be a multiple of 8, got {out.size}")
        return out


def is_incontext_spec(source: Any) -> bool:
    return isinstance(source, str) and source.startswith("incontext")


class InContextEditDataset(torch.utils.data.Dataset):
    """Training samples of fresh edits: sample ``i`` draws an edit of a training family from its
    training range, ``k`` example pairs and a query pair, and builds the visual prompt.

    Items are the same dicts as :class:`trainer.data.dataset.InContextDataset`'s (``grid``,
    ``hint``, ``target_mask``, ``region_mask``, ``instruction``, ``family``, ``index``).
    ``unify`` maps instruction texts (LIU, or whitespace normalisation for the no-LIU ablation).
    """

    def __init__(self, spec: InContextSpec | str, k: int = 1, tile: int | None = None, seed: int = 0,
                 unify: Callable[[str], str] | None = None, length: int = 10**9, resize: str = "crop"):
        self.spec = InContextSpec.parse(spec) if isinstance(spec, str) else spec
        if tile is not None and tile != self.spec.size:
            raise ValueError(f"tile {tile}: the incontext data draws {self.spec.size}-px images; set the data "
                             f"spec's size={tile} or tile={self.spec.size}")
        if k < 1:
            raise ValueError(f"k (examples per sample): expected >= 1, got {k}")
        self.k, self.seed, self.length, self.resize = k, seed, length, resize
        self.families = self.spec.families or SEEN_FAMILIES
        self._unify = unify or (lambda s: " ".join(s.split()))
        self._unified: dict[str, str] = {}
        self.bad: set[str] = set()  # the interface of InContextDataset; procedural images are never bad

    def __len__(self) -> int:
        return self.length

    def instructions(self) -> list[str]:
        """Every (unified) instruction a sample can carry: the generic ones and the paraphrases of
        this dataset's families."""
        texts = list(GENERIC_INSTRUCTIONS) + [p for f in self.families for p in FAMILIES[f].paraphrases]
        return sorted({self.unify(t) for t in texts})

    def unify(self, text: str) -> str:
        if text not in self._unified:
            self._unified[text] = self._unify(text)
        return self._unified[text]

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.spec.seed, self.seed, int(index)])
        edit = sample_edit(rng, True, self.families)
        pairs = [make_pair(edit, rng, self.spec.size) for _ in range(self.k + 1)]
        return sample_item(pairs, self.unify(instruction_for(edit, rng, self.spec.generic)), edit.family,
                           int(index), self.resize)


def sample_item(pairs: Sequence[Pair], instruction: str, family: str, index: int, resize: str = "crop") -> dict:
    """The training dict of ``pairs`` (examples first, the query last) as a visual prompt."""
    from gie_core.visual_prompt import build

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]  # noqa: E731
    q = pairs[-1]
    tile = q.before.shape[0]
    vp = build([(t(p.before), t(p.after)) for p in pairs[:-1]], t(q.before), tile=tile, resize=resize,
               target=t(q.after))
    region = torch.zeros(vp.grid.shape[1:3], dtype=torch.float32)
    if q.mask is not None:
        top, left, h, w = vp.layout.target_box
        region[top:top + h, left:left + w] = torch.from_numpy(q.mask)
    return {
        "grid": vp.grid[0].permute(2, 0, 1).contiguous(),
        "hint": vp.hint[0].permute(2, 0, 1).contiguous(),
        "target_mask": vp.target_mask[0],
        "region_mask": region,
        "instruction": instruction,
        "family": family,
        "index": index,
    }


# --------------------------------------------------------------------------- evaluation records
def edit_records(n_edits: int, pairs_per_edit: int = 2, split: str = "seen", size: int = 32, seed: int = 0,
                 generic: float = 0.5, families: Sequence[str] | None = None):
    """``PairRecord``s of ``n_edits`` edits of ``split`` (``seen``: training families and ranges;
    ``unseen``: held-out families and held-out ranges), ``pairs_per_edit`` each, drawn with seeds
    disjoint from training's. Each record's ``group`` is its edit's id; all pairs of an edit share
    one instruction."""
    from .formats import PairRecord

    if split not in ("seen", "unseen"):
        raise ValueError(f"split: expected 'seen' or 'unseen', got {split!r}")
    if pairs_per_edit < 2:
        raise ValueError(f"pairs_per_edit: expected >= 2 (an example and a query), got {pairs_per_edit}")
    pil = lambda a: Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8))  # noqa: E731
    out = []
    for e in range(n_edits):
        rng = np.random.default_rng([seed, 7919, 0 if split == "seen" else 1, e])
        edit = sample_edit(rng, split == "seen", families)
        text = instruction_for(edit, rng, generic)
        for j in range(pairs_per_edit):
            p = make_pair(edit, rng, size)
            out.append(PairRecord(text, pil(p.before), pil(p.after), f"incontext/{split}/{e}/{j}", edit.family,
                                  split == "seen", None if p.mask is None else Image.fromarray((p.mask * 255).astype(np.uint8)),
                                  group=edit.id))
    return out


def load_spec(spec: str):
    """Evaluation records of an ``incontext:`` spec (``instructgie-eval --data incontext:...``):
    ``edits`` edits per split, ``pairs`` pairs each (default 200 × 2, seed 0 — training draws from
    other seeds, so none of these pairs was trained on)."""
    s = InContextSpec.parse(spec)
    splits = ("seen", "unseen") if s.split == "both" else (s.split,)
    return [r for split in splits
            for r in edit_records(s.edits, s.pairs, split, s.size, s.seed, s.generic, s.families or None)]
