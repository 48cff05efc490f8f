"""Procedural before/after editing pairs: the project's own benchmark and tiny-model training data.

Every image is drawn from a small *scene description* (background, coloured objects, an optional
drawn face), so object-level edits (recolour, add, remove, scale, move, background swap, face
expression) are exact re-renders of an edited description and pixel-level edits (flip, rotate,
invert, grayscale, blur, outline, sepia, pixelate, brightness) are exact image transforms. Each
edit family has parameter *variants* (one canonical instruction each) and several paraphrases per
variant, so instruction unification has work to do. Whole families can be held out to test
generalisation to unseen edits.

Everything is deterministic: a pair is a pure function of ``(seed, family, variant, index, size)``.
Only numpy and PIL are used.
"""
from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 200),
    "orange": (250, 140, 30),
    "cyan": (40, 200, 210),
    "pink": (240, 120, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "brown": (130, 80, 40),
    "gray": (128, 128, 128),
}
OBJECT_COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink")
SHAPES = ("circle", "square", "triangle", "diamond")
SKIN = ((240, 200, 160), (210, 160, 120), (160, 110, 80), (250, 220, 190))
SUPERSAMPLE = 2  # draw at 2x and downsample: anti-aliased edges, still exact and deterministic


# --------------------------------------------------------------------------- scene description
@dataclass(frozen=True)
class Obj:
    shape: str
    color: str | tuple[int, int, int]  # a name of COLORS or an RGB triple
    cx: float  # centre, fraction of width
    cy: float
    r: float  # half-size, fraction of width


@dataclass(frozen=True)
class Face:
    cx: float
    cy: float
    r: float
    skin: tuple[int, int, int]
    mouth: str = "neutral"  # neutral | smile | frown
    eyes: str = "open"  # open | closed
    glasses: bool = False


@dataclass(frozen=True)
class Background:
    kind: str  # solid | gradient | stripes | checker | noise | landscape
    colors: tuple[tuple[int, int, int], ...]
    param: float = 0.0  # stripe period / checker cells / gradient angle / noise seed


@dataclass(frozen=True)
class Scene:
    background: Background
    objects: tuple[Obj, ...] = ()
    face: Face | None = None


def _rand_color(rng: np.random.Generator, exclude: Sequence[str] = ()) -> str:
    names = [c for c in OBJECT_COLORS if c not in exclude]
    return names[int(rng.integers(len(names)))]


def _rand_background(rng: np.random.Generator) -> Background:
    kind = ("solid", "gradient", "stripes", "checker", "noise", "landscape")[int(rng.integers(6))]
    # Backgrounds are paler than objects so that objects stay visible.
    pale = lambda: tuple(int(v) for v in rng.integers(150, 256, size=3))  # noqa: E731
    if kind == "solid":
        return Background(kind, (pale(),))
    if kind == "gradient":
        return Background(kind, (pale(), pale()), float(rng.uniform(0, 2 * math.pi)))
    if kind == "stripes":
        return Background(kind, (pale(), pale()), float(rng.integers(4, 10)))
    if kind == "checker":
        return Background(kind, (pale(), pale()), float(rng.integers(3, 8)))
    if kind == "noise":
        return Background(kind, (pale(), pale()), float(rng.integers(1 << 30)))
    return Background(kind, ((150, 200, 250), (110, 190, 100)), float(rng.uniform(0.55, 0.7)))


def _rand_objects(rng: np.random.Generator, n: int, shapes: Sequence[str] = SHAPES) -> tuple[Obj, ...]:
    objs = []
    for _ in range(n):
        for _attempt in range(20):  # rejection sampling keeps objects mostly apart
            r = float(rng.uniform(0.08, 0.16))
            o = Obj(shapes[int(rng.integers(len(shapes)))], _rand_color(rng),
                    float(rng.uniform(r + 0.02, 1 - r - 0.02)), float(rng.uniform(r + 0.02, 1 - r - 0.02)), r)
            if all(math.hypot(o.cx - p.cx, o.cy - p.cy) > o.r + p.r for p in objs):
                break
        objs.append(o)
    return tuple(objs)


def random_scene(rng: np.random.Generator, kind: str | None = None) -> Scene:
    """A random scene: ``kind`` is ``shapes``, ``texture``, ``landscape`` or ``face``."""
    kind = kind or ("shapes", "texture", "landscape", "face")[int(rng.integers(4))]
    if kind == "face":
        face = Face(float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.42, 0.58)), float(rng.uniform(0.25, 0.34)),
                    SKIN[int(rng.integers(len(SKIN)))], ("neutral", "frown")[int(rng.integers(2))])
        bg = _rand_background(rng)
        return Scene(bg if bg.kind != "landscape" else Background("solid", bg.colors[:1]), (), face)
    if kind == "texture":
        bg = _rand_background(rng)
        while bg.kind in ("solid", "landscape"):
            bg = _rand_background(rng)
        return Scene(bg, _rand_objects(rng, int(rng.integers(1, 3))))
    if kind == "landscape":
        bg = _rand_background(rng)
        bg = Background("landscape", ((150, 200, 250), (110, 190, 100)), float(rng.uniform(0.55, 0.7)))
        return Scene(bg, _rand_objects(rng, int(rng.integers(1, 4))))
    return Scene(_rand_background(rng), _rand_objects(rng, int(rng.integers(1, 5))))


# --------------------------------------------------------------------------- rendering
def _background_array(bg: Background, s: int) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / max(s - 1, 1)
    c = [np.array(v, np.float32) for v in bg.colors]
    if bg.kind == "solid":
        return np.broadcast_to(c[0], (s, s, 3)).copy()
    if bg.kind == "gradient":
        t = (xx - 0.5) * math.cos(bg.param) + (yy - 0.5) * math.sin(bg.param)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return c[0] * (1 - t[..., None]) + c[1] * t[..., None]
    if bg.kind == "stripes":
        m = (np.floor(xx * bg.param * 2) % 2)[..., None]
        return c[0] * (1 - m) + c[1] * m
    if bg.kind == "checker":
        m = ((np.floor(xx * bg.param) + np.floor(yy * bg.param)) % 2)[..., None]
        return c[0] * (1 - m) + c[1] * m
    if bg.kind == "noise":
        coarse = np.random.default_rng(int(bg.param)).random((6, 6)).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse).resize((s, s), Image.BICUBIC), np.float32).clip(0, 1)
        return c[0] * (1 - t[..., None]) + c[1] * t[..., None]
    if bg.kind == "landscape":
        m = (yy > bg.param)[..., None].astype(np.float32)
        return c[0] * (1 - m) + c[1] * m
    raise ValueError(f"background kind {bg.kind!r}: expected solid, gradient, stripes, checker, noise or landscape")


def _draw_obj(d: ImageDraw.ImageDraw, o: Obj, s: int, outline_only: bool = False) -> None:
    cx, cy, r = o.cx * s, o.cy * s, o.r * s
    col = COLORS[o.color] if isinstance(o.color, str) else tuple(o.color)  # a name or an RGB triple
    kw = dict(outline=col, width=max(1, s // 64)) if outline_only else dict(fill=col)
    if o.shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], **kw)
    elif o.shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], **kw)
    elif o.shape == "triangle":
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], **kw)
    elif o.shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], **kw)
    else:
        raise ValueError(f"object shape {o.shape!r}: expected one of {SHAPES}")


def _draw_face(d: ImageDraw.ImageDraw, f: Face, s: int) -> None:
    cx, cy, r = f.cx * s, f.cy * s, f.r * s
    d.ellipse([cx - r * 0.85, cy - r, cx + r * 0.85, cy + r], fill=f.skin, outline=(60, 40, 30), width=max(1, s // 96))
    ex, ey, er = r * 0.35, cy - r * 0.25, r * 0.12
    for sx in (-1, 1):
        x = cx + sx * ex
        if f.eyes == "open":
            d.ellipse([x - er, ey - er, x + er, ey + er], fill=(255, 255, 255))
            d.ellipse([x - er / 2, ey - er / 2, x + er / 2, ey + er / 2], fill=(30, 30, 30))
        else:
            d.line([x - er, ey, x + er, ey], fill=(30, 30, 30), width=max(1, s // 80))
        if f.glasses:
            d.ellipse([x - er * 1.8, ey - er * 1.8, x + er * 1.8, ey + er * 1.8], outline=(20, 20, 20), width=max(1, s // 80))
    if f.glasses:
        d.line([cx - ex + er * 1.8, ey, cx + ex - er * 1.8, ey], fill=(20, 20, 20), width=max(1, s // 80))
    my, mw = cy + r * 0.45, r * 0.4
    w = max(1, s // 64)
    if f.mouth == "smile":
        d.arc([cx - mw, my - mw * 0.8, cx + mw, my + mw * 0.6], 20, 160, fill=(150, 30, 30), width=w)
    elif f.mouth == "frown":
        d.arc([cx - mw, my, cx + mw, my + mw * 1.2], 200, 340, fill=(150, 30, 30), width=w)
    else:
        d.line([cx - mw * 0.8, my + mw * 0.2, cx + mw * 0.8, my + mw * 0.2], fill=(150, 30, 30), width=w)


def render(scene: Scene, size: int, outline_only: bool = False) -> Image.Image:
    """Draws ``scene`` as an RGB image of ``size``×``size`` pixels."""
    s = size * SUPERSAMPLE
    if outline_only:
        img = Image.new("RGB", (s, s), (255, 255, 255))
    else:
        img = Image.fromarray(_background_array(scene.background, s).clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw_obj(d, o, s, outline_only)
    if scene.face is not None:
        _draw_face(d, scene.face, s)
    return img.resize((size, size), Image.LANCZOS)


def face_mask(scene: Scene, size: int) -> Image.Image | None:
    """The face's exact region as an 'L' image (255 inside), or None without a face."""
    if scene.face is None:
        return None
    f, s = scene.face, size * SUPERSAMPLE
    m = Image.new("L", (s, s), 0)
    ImageDraw.Draw(m).ellipse([(f.cx - f.r * 0.85) * s, (f.cy - f.r) * s, (f.cx + f.r * 0.85) * s, (f.cy + f.r) * s], fill=255)
    return m.resize((size, size), Image.BILINEAR)


# --------------------------------------------------------------------------- edit families
@dataclass(frozen=True)
class Variant:
    """One concrete edit: a canonical instruction and its paraphrases (the first is canonical)."""

    name: str
    paraphrases: tuple[str, ...]

    @property
    def canonical(self) -> str:
        return self.paraphrases[0]


@dataclass(frozen=True)
class EditFamily:
    """A parametrised edit. ``apply(scene, variant, rng, size) -> (before_scene, before, after)``."""

    name: str
    variants: tuple[Variant, ...]
    scene_kinds: tuple[str, ...]
    apply: Callable = field(repr=False, compare=False)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ValueError(f"variant {name!r} of edit family {self.name!r}: expected one of {[v.name for v in self.variants]}")


def _para(templates: Sequence[str], **kw) -> tuple[str, ...]:
    return tuple(t.format(**kw) for t in templates)


def _pixel(fn):
    """An edit family that transforms the rendered image."""
    def apply(scene, variant, rng, size):
        before = render(scene, size)
        return scene, before, fn(before, variant, size)
    return apply


def _scene(fn):
    """An edit family that edits the scene description and re-renders it (None: not applicable)."""
    def apply(scene, variant, rng, size):
        out = fn(scene, variant, rng)
        if out is None:
            return None
        scene, after = out if isinstance(out, tuple) else (scene, out)
        return scene, render(scene, size), render(after, size)
    return apply


def _recolour(scene, v, rng):
    if not scene.objects or all(o.color == v.name for o in scene.objects):
        return None
    return Scene(scene.background, tuple(replace(o, color=v.name) for o in scene.objects), scene.face)


def _add(scene, v, rng):
    color, shape = v.name.split("_")
    r = float(rng.uniform(0.09, 0.14))
    for _ in range(30):
        o = Obj(shape, color, float(rng.uniform(r + 0.02, 1 - r - 0.02)), float(rng.uniform(r + 0.02, 1 - r - 0.02)), r)
        if all(math.hypot(o.cx - p.cx, o.cy - p.cy) > o.r + p.r + 0.02 for p in scene.objects):
            return Scene(scene.background, scene.objects + (o,), scene.face)
    return None


def _remove(scene, v, rng):
    # Make sure the scene has the shape to remove and something else that stays.
    objs = [replace(o, shape=v.name) if i == 0 else o for i, o in enumerate(scene.objects)]
    if len(objs) < 2:
        objs.append(replace(_rand_objects(rng, 1, [s for s in SHAPES if s != v.name])[0]))
    if all(o.shape == v.name for o in objs):
        objs[-1] = replace(objs[-1], shape=[s for s in SHAPES if s != v.name][int(rng.integers(3))])
    # Shapes to remove are drawn last (on top), so their removal is always visible.
    objs = [o for o in objs if o.shape != v.name] + [o for o in objs if o.shape == v.name]
    before = Scene(scene.background, tuple(objs), scene.face)
    return before, Scene(scene.background, tuple(o for o in objs if o.shape != v.name), scene.face)


def _scale(scene, v, rng):
    if not scene.objects:
        return None
    k = 1.6 if v.name == "bigger" else 0.6
    objs = tuple(replace(o, r=o.r / (k if v.name == "bigger" else 1.0)) for o in scene.objects)
    before = Scene(scene.background, objs, scene.face)
    return before, Scene(scene.background, tuple(replace(o, r=o.r * k) for o in objs), scene.face)


def _move(scene, v, rng):
    if not scene.objects:
        return None
    dx, dy = {"left": (-0.2, 0), "right": (0.2, 0), "up": (0, -0.2), "down": (0, 0.2)}[v.name]
    # Start the objects where the move keeps them inside the image.
    objs = tuple(replace(o, cx=float(np.clip(o.cx - dx / 2, o.r + 0.21, 1 - o.r - 0.21)) if dx else o.cx,
                         cy=float(np.clip(o.cy - dy / 2, o.r + 0.21, 1 - o.r - 0.21)) if dy else o.cy)
                 for o in scene.objects)
    before = Scene(scene.background, objs, scene.face)
    return before, Scene(scene.background, tuple(replace(o, cx=o.cx + dx, cy=o.cy + dy) for o in objs), scene.face)


_BG_SWAP = {
    "white": Background("solid", (COLORS["white"],)),
    "black": Background("solid", (COLORS["black"],)),
    "sky": Background("gradient", ((120, 170, 240), (220, 235, 255)), math.pi / 2),
    "checkerboard": Background("checker", ((250, 250, 250), (60, 60, 60)), 6.0),
    "stripes": Background("stripes", ((250, 250, 250), (230, 60, 60)), 6.0),
}


def _background(scene, v, rng):
    if scene.background == _BG_SWAP[v.name]:
        return None
    return Scene(_BG_SWAP[v.name], scene.objects, scene.face)


def _face(scene, v, rng):
    f = scene.face
    if v.name == "smile":
        return replace(scene, face=replace(f, mouth="smile"))
    if v.name == "close_eyes":
        return replace(scene, face=replace(f, eyes="closed"))
    return replace(scene, face=replace(f, glasses=True))


def _flip(img, v, size):
    return ImageOps.mirror(img) if v.name == "horizontal" else ImageOps.flip(img)


def _rotate(img, v, size):
    return img.transpose({"90": Image.Transpose.ROTATE_270, "180": Image.Transpose.ROTATE_180,
                          "270": Image.Transpose.ROTATE_90}[v.name])  # PIL rotates counter-clockwise


def _sepia(img, v, size):
    a = np.asarray(img, np.float32)
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    return Image.fromarray((a @ m.T).clip(0, 255).astype(np.uint8))


def _outline(img, v, size):
    edges = img.convert("L").filter(ImageFilter.FIND_EDGES)
    return ImageOps.invert(ImageOps.autocontrast(edges)).convert("RGB")


def _pixelate(img, v, size):
    k = max(2, size // 8)
    return img.resize((k, k), Image.BOX).resize((size, size), Image.NEAREST)


def _brightness(img, v, size):
    a = np.asarray(img, np.float32)
    a = a * 0.5 if v.name == "darker" else 255 - (255 - a) * 0.5
    return Image.fromarray(a.round().clip(0, 255).astype(np.uint8))


ALL_KINDS = ("shapes", "texture", "landscape", "face")
OBJECT_KINDS = ("shapes", "texture", "landscape")

FAMILIES: dict[str, EditFamily] = {f.name: f for f in [
    EditFamily("recolour", tuple(Variant(c, _para([
        "make the shapes {c}", "turn the shapes {c}", "change the colour of the shapes to {c}",
        "recolor the shapes {c}", "please make all the shapes {c}", "Paint every shape {c}."], c=c))
        for c in ("red", "green", "blue", "yellow")), OBJECT_KINDS, _scene(_recolour)),
    EditFamily("flip", (
        Variant("horizontal", ("flip the image horizontally", "mirror the image left to right",
                               "flip it horizontally", "Please flip the picture horizontally.")),
        Variant("vertical", ("flip the image vertically", "turn the image upside down",
                             "flip it vertically", "Please flip the picture vertically."))), ALL_KINDS, _pixel(_flip)),
    EditFamily("rotate", tuple(Variant(a, _para([
        "rotate the image {a} degrees clockwise", "turn the image {a} degrees clockwise",
        "rotate it by {a} degrees clockwise", "Please rotate the picture {a} degrees clockwise."], a=a))
        for a in ("90", "180")), ALL_KINDS, _pixel(_rotate)),
    EditFamily("invert", (Variant("colors", (
        "invert the colors", "make it a negative", "invert the colours of the image",
        "Please invert the colors.")),), ALL_KINDS, _pixel(lambda im, v, s: ImageOps.invert(im))),
    EditFamily("grayscale", (Variant("gray", (
        "make it black and white", "convert the image to grayscale", "remove the colour",
        "make the picture greyscale")),), ALL_KINDS, _pixel(lambda im, v, s: im.convert("L").convert("RGB"))),
    EditFamily("blur", (Variant("blur", (
        "blur the image", "make it blurry", "apply a blur", "Please blur the picture.")),), ALL_KINDS,
        _pixel(lambda im, v, s: im.filter(ImageFilter.GaussianBlur(s / 48)))),
    EditFamily("brightness", tuple(Variant(b, _para([
        "make the image {b}", "make it {b}", "make the picture a lot {b}", "Please make the image {b}."], b=b))
        for b in ("brighter", "darker")), ALL_KINDS, _pixel(_brightness)),
    EditFamily("add_object", tuple(Variant(f"{c}_{s}", _para([
        "add a {c} {s}", "put a {c} {s} in the picture", "draw a {c} {s}", "Please add one {c} {s}."], c=c, s=s))
        for c in ("red", "blue", "yellow") for s in ("circle", "square")), OBJECT_KINDS, _scene(_add)),
    EditFamily("remove_object", tuple(Variant(s, _para([
        "remove the {s}", "delete the {s}", "take out the {s}", "Please remove the {s}."], s=s))
        for s in ("circle", "square", "triangle")), OBJECT_KINDS, _scene(_remove)),
    EditFamily("background", tuple(Variant(b, _para([
        "change the background to {b}", "make the background {b}", "replace the background with {b}",
        "Please swap the background for {b}."], b=b.replace("sky", "a blue sky")))
        for b in _BG_SWAP), ("shapes", "face"), _scene(_background)),
    EditFamily("scale", tuple(Variant(k, _para([
        "make the shapes {k}", "make the objects {k}", "scale the shapes to be {k}", "Please make every shape {k}."], k=k))
        for k in ("bigger", "smaller")), OBJECT_KINDS, _scene(_scale)),
    EditFamily("move", tuple(Variant(d, _para([
        "move the shapes {d}", "shift the objects {d}", "move everything {d}", "Please move the shapes {d}."], d=d))
        for d in ("left", "right", "up", "down")), OBJECT_KINDS, _scene(_move)),
    EditFamily("face", (
        Variant("smile", ("make the face smile", "make the person smile", "add a smile", "Please make the face smile.")),
        Variant("close_eyes", ("close the eyes", "make the face close its eyes", "shut the eyes", "Please close the eyes.")),
        Variant("glasses", ("add glasses", "put glasses on the face", "give the person glasses", "Please add glasses."))),
        ("face",), _scene(_face)),
    EditFamily("outline", (Variant("edges", (
        "turn it into a line drawing", "draw only the outlines", "make it an outline sketch",
        "Please convert the image to a line drawing.")),), ALL_KINDS, _pixel(_outline)),
    EditFamily("sepia", (Variant("sepia", (
        "make it sepia", "apply a sepia tone", "give the image an old photo look", "Please add a sepia filter.")),),
        ALL_KINDS, _pixel(_sepia)),
    EditFamily("pixelate", (Variant("pixels", (
        "pixelate the image", "make it pixelated", "turn it into pixel art", "Please pixelate the picture.")),),
        ALL_KINDS, _pixel(_pixelate)),
]}

# Families never seen in training by default: style filters whose effect is visible from an example
# but whose instruction the model has not learnt, so only the in-context example can teach them.
HELD_OUT_DEFAULT = ("outline", "sepia", "pixelate")


# --------------------------------------------------------------------------- pairs
@dataclass
class SyntheticPair:
    """One before/after pair with its instruction and provenance."""

    before: Image.Image
    after: Image.Image
    instruction: str  # the paraphrase used for this pair
    canonical: str  # the family variant's canonical instruction
    family: str
    variant: str
    index: int
    mask: Image.Image | None = None  # exact face region of the after image (for SAM), if any


def _stable(*parts) -> list[int]:
    return [zlib.crc32(str(p).encode()) for p in parts]


def generate_pair(family: str, variant: str, index: int, size: int = 64, seed: int = 0,
                  paraphrase: int | None = None) -> SyntheticPair:
    """The ``index``-th pair of ``family``/``variant``: a pure function of its arguments.

    ``paraphrase`` picks the instruction wording (None: a deterministic random one)."""
    if family not in FAMILIES:
        raise ValueError(f"edit family {family!r}: expected one of {sorted(FAMILIES)}")
    if size < 8:
        raise ValueError(f"size {size}: expected at least 8 pixels")
    fam = FAMILIES[family]
    var = fam.variant(variant)
    rng = np.random.default_rng(_stable(seed, family, variant, index))
    for _ in range(50):
        kind = fam.scene_kinds[int(rng.integers(len(fam.scene_kinds)))]
        out = fam.apply(random_scene(rng, kind), var, rng, size)
        if out is not None:
            break
    else:  # pragma: no cover - every family accepts its scene kinds within a few draws
        raise RuntimeError(f"could not draw a scene for {family}/{variant}")
    scene, before, after = out
    p = int(rng.integers(len(var.paraphrases))) if paraphrase is None else paraphrase % len(var.paraphrases)
    mask = face_mask(scene, size)  # edits here never move a face except by flip/rotate
    if fam.name in ("flip", "rotate") and mask is not None:  # the mask follows the pixels
        mask = (_flip if fam.name == "flip" else _rotate)(mask, var, size)
    return SyntheticPair(before.convert("RGB"), after.convert("RGB"), var.paraphrases[p], var.canonical,
                         family, variant, index, mask)


def instructions(families: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """All ``(family, variant)`` names, in a fixed order."""
    names = families if families is not None else list(FAMILIES)
    return [(f, v.name) for f in names for v in FAMILIES[f].variants]


def split_families(held_out: Sequence[str] = HELD_OUT_DEFAULT) -> tuple[list[str], list[str]]:
    """(seen, unseen) family names."""
    bad = [f for f in held_out if f not in FAMILIES]
    if bad:
        raise ValueError(f"held-out families {bad}: expected names from {sorted(FAMILIES)}")
    return [f for f in FAMILIES if f not in held_out], [f for f in FAMILIES if f in held_out]


def iter_pairs(pairs_per_instruction: int, families: Sequence[str] | None = None, size: int = 64,
               seed: int = 0, start_index: int = 0) -> Iterator[SyntheticPair]:
    """Yields ``pairs_per_instruction`` pairs of every variant of ``families`` (default: all)."""
    for fam, var in instructions(families):
        for i in range(start_index, start_index + pairs_per_instruction):
            yield generate_pair(fam, var, i, size, seed)


def write_dataset(folder: str | Path, pairs_per_instruction: int = 8, families: Sequence[str] | None = None,
                  size: int = 64, seed: int = 0, held_out: Sequence[str] = HELD_OUT_DEFAULT,
                  start_index: int = 0, progress: bool = True) -> Path:
    """Writes a folder dataset (``metadata.jsonl`` + PNGs) the trainer's folder loader reads.

    Rows carry ``instruction``, ``before``, ``after`` and, beyond the required fields,
    ``canonical``, ``family``, ``variant``, ``seen`` (False for ``held_out`` families) and ``mask``
    (the exact face mask, when the pair has a face)."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    names = instructions(families)
    rows = []
    it = tqdm(total=len(names) * pairs_per_instruction, desc="synthetic pairs", disable=not progress)
    for fam, var in names:
        for i in range(start_index, start_index + pairs_per_instruction):
            p = generate_pair(fam, var, i, size, seed)
            stem = f"{fam}-{var}-{i:05d}"
            p.before.save(folder / "images" / f"{stem}-before.png")
            p.after.save(folder / "images" / f"{stem}-after.png")
            row = dict(instruction=p.instruction, before=f"images/{stem}-before.png", after=f"images/{stem}-after.png",
                       canonical=p.canonical, family=fam, variant=var, seen=fam not in held_out)
            if p.mask is not None:
                p.mask.save(folder / "images" / f"{stem}-mask.png")
                row["mask"] = f"images/{stem}-mask.png"
            rows.append(row)
            it.update()
    it.close()
    tmp = folder / "metadata.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(folder / "metadata.jsonl")
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.data.synthetic OUT`` writes a synthetic folder dataset."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m trainer.data.synthetic", description=write_dataset.__doc__)
    ap.add_argument("out", help="folder to write")
    ap.add_argument("--pairs-per-instruction", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start-index", type=int, default=0, help="first pair index (use another range for test data)")
    ap.add_argument("--families", nargs="*", default=None, help=f"default: all of {sorted(FAMILIES)}")
    ap.add_argument("--held-out", nargs="*", default=list(HELD_OUT_DEFAULT))
    a = ap.parse_args(argv)
    write_dataset(a.out, a.pairs_per_instruction, a.families, a.size, a.seed, a.held_out, a.start_index)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
