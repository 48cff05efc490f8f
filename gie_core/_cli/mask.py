"""`instructgie mask`: region masks (faces, hair, person, any model label) for image files as PNGs."""
from __future__ import annotations

import argparse
import sys

from gie_core._cli.common import check_out_dir, image_files

HELP = "write region masks (face, hair, person, label:<name>, ...) of images as PNG files"
DESCRIPTION = """Writes one grayscale PNG mask per input image (white = region) into --output-dir.

Faces work offline with OpenCV's bundled Haar cascades. For pixel-accurate face parts, hair or skin
pass --model with a local face-parsing SegFormer folder; for person or any other label pass a local
Mask2Former folder (transformers format: config.json, model.safetensors, preprocessor_config.json).

examples:
  instructgie mask photos/ -o masks/
  instructgie mask a.jpg b.png --region face+hair --model ./face-parsing --dilate 8 --feather 12
  instructgie mask street.jpg --region label:car --model ./mask2former-coco --overlay

An unreadable image is reported and skipped; the others are still written, and the exit status is 1.
"""

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output-dir", default="masks", help="where the PNG masks go (default: ./masks)")
    p.add_argument("--region", default="face",
                   help="face, hair, skin, person, label:<name> or a combination like face+hair (default: face)")
    p.add_argument("--backend", default="auto", choices=("auto", "haar", "mask2former", "face_parsing"),
                   help="detector (default: auto = haar for faces, else from --model's config)")
    p.add_argument("--model", default=None, metavar="PATH", help="local Mask2Former or face-parsing SegFormer folder")
    p.add_argument("--dilate", type=int, default=0,
                   help="grow (or, negative, shrink) regions by N pixels; a shrink that removes a found region "
                        "is reported and makes the exit status 1")
    p.add_argument("--feather", type=float, default=0, help="soft edge of N pixels around each region")
    p.add_argument("--min-area", type=int, default=0, help="ignore regions smaller than N pixels")
    p.add_argument("--profile", action="store_true", help="haar: also look for faces in profile (slower)")
    p.add_argument("--whole-image", action="store_true",
                   help="face parsing: parse whole images instead of crops around detected faces")
    p.add_argument("--device", default=None, help="learned backends: torch device (default: cuda if available)")
    p.add_argument("--overlay", action="store_true",
                   help="also write <name>_overlay.png: the image with the mask tinted red, for checking")
    p.add_argument("--suffix", default="_mask", help="mask file name suffix (default: _mask -> photo_mask.png)")


def _detector(args, options: dict):
    """Load (and so check) the detector and the region once, before any image is read."""
    from gie_core.cli import CLIError
    from gie_core.regions import load_detector
    from gie_core.regions.spec import parse_region

    try:
        parts = parse_region(args.region)
        det = load_detector(args.backend, args.model, region=args.region, **options)
        det.check_region(parts)
    except (ValueError, RuntimeError, ImportError, OSError) as e:
        raise CLIError(str(e)) from None
    return det


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from gie_core.cli import CLIError
    from gie_core.regions import detect_regions
    from gie_core.regions.inputs import load_image_file

    if args.feather < 0:
        raise CLIError(f"--feather: expected >= 0 pixels, got {args.feather}")
    if args.min_area < 0:
        raise CLIError(f"--min-area: expected >= 0 pixels, got {args.min_area}")
    files = image_files(args.inputs, "input")
    out_dir = check_out_dir(args.output_dir, "--output-dir")
    options = {}
    if args.profile:
        options["profile"] = True
    if args.whole_image:
        options["face_crops"] = False
    if args.device is not None:
        options["device"] = args.device
    det = _detector(args, options)
    empty: list[str] = []
    erased: list[str] = []
    failed: list[tuple[str, str]] = []
    stems: set[str] = set()
    written = 0
    for f in tqdm(files, desc="masks", unit="img", disable=len(files) < 2):
        try:
            img = load_image_file(f)
            res = detect_regions(img, args.region, "auto", args.dilate, args.feather,
                                 min_area=args.min_area, model=det)
        except (ValueError, RuntimeError, OSError) as e:  # this image only: report it and go on
            failed.append((str(f), str(e)))
            continue
        stem = f.stem if f.stem not in stems else f"{f.parent.name}_{f.stem}"  # same name in two folders
        stems.add(stem)
        mask = res.masks[0].cpu().numpy()
        Image.fromarray((mask * 255.0 + 0.5).astype(np.uint8), "L").save(out_dir / f"{stem}{args.suffix}.png")
        written += 1
        if args.overlay:
            tint = np.array([255.0, 0.0, 0.0])
            a = 0.5 * mask[..., None]
            over = img.astype(np.float32) * (1 - a) + tint * a
            Image.fromarray(over.round().astype(np.uint8)).save(out_dir / f"{stem}_overlay.png")
        if not res.found[0]:
            empty.append(str(f))
        elif not mask.any():
            erased.append(str(f))
    print(f"wrote {written} mask(s) to {out_dir} (region {args.region!r}, backend {det.name})")
    if empty:
        print(f"no region found in {len(empty)} image(s) (all-black masks): {_few(empty)}")
    status = 0
    if erased:
        print(f"instructgie mask: --dilate {args.dilate} shrank the region found in {len(erased)} image(s) to "
              f"nothing (all-black masks): {_few(erased)}; use a smaller shrink", file=sys.stderr)
        status = 1
    if failed:
        print(f"instructgie mask: {len(failed)} of {len(files)} image(s) could not be read and have no mask:",
              file=sys.stderr)
        for _, why in failed:
            print(f"  {why}", file=sys.stderr)
        status = 1
    return status
