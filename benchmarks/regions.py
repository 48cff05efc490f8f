"""Region-mask throughput at 512 px: images/s per backend, as ratios against a baseline in this run.

Usage:
    .venv/bin/python benchmarks/regions.py                      # Haar variants, cache, tiny models
    .venv/bin/python benchmarks/regions.py --mask2former DIR --face-parsing DIR --device cuda

Baseline: the textbook OpenCV recipe — ``haarcascade_frontalface_default`` on the full-resolution
gray image, scaleFactor 1.1, minNeighbors 5 — measured in this process on the same images.
Images: scikit-image's photographs (astronaut has a face; coffee, chelsea, rocket do not) resized to
512x512, so detection time on both kinds is included. Throughput is images / best-of-repeats wall time,
whole ``region_mask`` calls (input conversion, detection, ellipses, post-processing).
Without --mask2former / --face-parsing, tiny random models stand in: their figures measure the code
path (pre/post-processing), not the speed of a real model.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gie_core.regions import MaskCache, load_detector, region_mask  # noqa: E402


def photos(n: int) -> np.ndarray:
    from PIL import Image

    try:
        import skimage.data as d

        src = [d.astronaut(), d.coffee(), d.chelsea(), d.rocket()]
    except ImportError:  # noise still times the no-face path
        src = [np.random.default_rng(i).integers(0, 256, (512, 512, 3), dtype=np.uint8) for i in range(4)]
    imgs = [np.asarray(Image.fromarray(s).resize((512, 512), Image.BILINEAR)) for s in src]
    return np.stack([imgs[i % len(imgs)] for i in range(n)])


def images_per_s(fn, images, repeats: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process), best of ``repeats``.
    On a shared machine the CPU-second figure is the steadier one."""
    fn(images[:1])  # warm-up: loads cascades / models
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn(images)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return len(images) / best, len(images) / best_cpu


def textbook_haar(images):
    import cv2

    clf = textbook_haar.clf = getattr(textbook_haar, "clf", None) or cv2.CascadeClassifier(
        cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    for im in images:
        clf.detectMultiScale(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), 1.1, 5)


def one_by_one(**kw):
    return lambda imgs: [region_mask(im, **kw) for im in imgs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mask2former", default=None, help="local Mask2Former folder (default: a tiny random one)")
    ap.add_argument("--face-parsing", default=None, help="local face-parsing SegFormer folder (default: tiny)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="cv2/torch threads (default: library default)")
    args = ap.parse_args()
    if args.threads:
        import cv2
        import torch

        cv2.setNumThreads(args.threads)
        torch.set_num_threads(args.threads)
    images = photos(args.images)
    rows = []
    base = images_per_s(textbook_haar, images, args.repeats)
    rows.append(("baseline: cv2 frontalface_default, full res, boxes only", base))
    rows.append(("haar (region_mask default)", images_per_s(one_by_one(), images, args.repeats)))
    rows.append(("haar, batch [B,512,512,3] in one call", images_per_s(lambda x: region_mask(x), images, args.repeats)))
    rows.append(("haar + dilate 8 + feather 12", images_per_s(one_by_one(dilate=8, feather=12), images, args.repeats)))
    rows.append(("haar, profile=True", images_per_s(one_by_one(profile=True), images, max(1, args.repeats - 1))))
    rows.append(("haar, detect_size=512", images_per_s(one_by_one(detect_size=512), images, args.repeats)))

    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        paths = []
        for i, im in enumerate(images):
            p = os.path.join(tmp, f"{i}.png")
            Image.fromarray(im).save(p)
            paths.append(p)
        cache = MaskCache(os.path.join(tmp, "cache"))
        for p in paths:
            cache.get(p)  # fill
        rows.append(("MaskCache hits (decoded image given; reads the .npz)",
                     images_per_s(lambda _: [cache.get(p, im) for p, im in zip(paths, images)], images, args.repeats)))

        m2f, fp = args.mask2former, args.face_parsing
        if m2f is None or fp is None:
            from gie_core.regions.tiny import save_tiny_face_parser, save_tiny_mask2former

            if m2f is None:
                m2f = os.path.join(tmp, "m2f")
                save_tiny_mask2former(m2f, "person")
            if fp is None:
                fp = os.path.join(tmp, "fp")
                save_tiny_face_parser(fp, "skin")
        det = load_detector("mask2former", m2f, device=args.device)
        rows.append((f"mask2former person{'' if args.mask2former else ' (tiny random model)'}",
                     images_per_s(lambda x: region_mask(x, region="person", model=det), images, args.repeats)))
        det = load_detector("face_parsing", fp, device=args.device)
        rows.append((f"face_parsing face{'' if args.face_parsing else ' (tiny random model)'}",
                     images_per_s(lambda x: region_mask(x, region="face", model=det), images, args.repeats)))

    print(f"{len(images)} images at 512x512, best of {args.repeats}; ratio = images/s / baseline images/s "
          f"(os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")
    print(f"  {'':<58} {'img/s':>8} {'ratio':>6} {'img/cpu-s':>10} {'ratio':>6}")
    for name, (ips, ipc) in rows:
        print(f"  {name:<58} {ips:8.1f} {ips / base[0]:6.2f} {ipc:10.1f} {ipc / base[1]:6.2f}")


if __name__ == "__main__":
    main()
