"""`instructgie mask`: region masks (faces, hair, person, any model label) for image files as PNGs."""
from __future__ import annotations

import argparse

HELP = "write region masks (face, hair, person, label:<name>, ...) of images as PNG files"
DESCRIPTION = """Writes one grayscale PNG mask per input image (white = region) into --output-dir.

Faces work offline with OpenCV's bundled Haar cascades. For pixel-accurate face parts, hair or skin
pass --model with a local face-parsing SegFormer folder; for person or any other label pass a local
Mask2Former folder (transformers format: config.json, model.safetensors, preprocessor_config.json).

examples:
  instructgie mask photos/ -o masks/
  instructgie mask a.jpg b.png --region face+hair --model ./face-parsing --dilate 8 --feather 12
  instructgie mask street.jpg --region label:car --model ./mask2former-coco --overlay
"""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output-dir", default="masks", help="where the PNG masks go (default: ./masks)")
    p.add_argument("--region", default="face",
                   help="face, hair, skin, person, label:<name> or a combination like face+hair (default: face)")
    p.add_argument("--backend", default="auto", choices=("auto", "haar", "mask2former", "face_parsing"),
                   help="detector (default: auto = haar for faces, else from --model's config)")
    p.add_argument("--model", default=None, metavar="PATH", help="local Mask2Former or face-parsing SegFormer folder")
    p.add_argument("--dilate", type=int, default=0, help="grow (or, negative, shrink) regions by N pixels")
    p.add_argument("--feather", type=float, default=0, help="soft edge of N pixels around each region")
    p.add_argument("--min-area", type=int, default=0, help="ignore regions smaller than N pixels")
    p.add_argument("--profile", action="store_true", help="haar: also look for faces in profile (slower)")
    p.add_argument("--whole-image", action="store_true",
                   help="face parsing: parse whole images instead of crops around detected faces")
    p.add_argument("--device", default=None, help="learned backends: torch device (default: cuda if available)")
    p.add_argument("--overlay", action="store_true",
                   help="also write <name>_overlay.png: the image with the mask tinted red, for checking")
    p.add_argument("--suffix", default="_mask", help="mask file name suffix (default: _mask -> photo_mask.png)")


def _collect(inputs: list[str]):
    from pathlib import Path

    from gie_core.cli import CLIError

    files = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CLIError(f"folder {s!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise CLIError(f"input {s!r} does not exist")
    return files


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from gie_core.cli import CLIError
    from gie_core.regions import detect_regions
    from gie_core.regions.inputs import load_image_file

    files = _collect(args.inputs)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {}
    if args.profile:
        options["profile"] = True
    if args.whole_image:
        options["face_crops"] = False
    if args.device is not None:
        options["device"] = args.device
    empty: list[str] = []
    stems: set[str] = set()
    for f in tqdm(files, desc="masks", unit="img", disable=len(files) < 2):
        try:
            img = load_image_file(f)
            res = detect_regions(img, args.region, args.backend, args.dilate, args.feather,
                                 min_area=args.min_area, model=args.model, **options)
        except (ValueError, RuntimeError, ImportError, OSError) as e:
            raise CLIError(str(e)) from e
        stem = f.stem if f.stem not in stems else f"{f.parent.name}_{f.stem}"  # same name in two folders
        stems.add(stem)
        mask = res.masks[0].cpu().numpy()
        Image.fromarray((mask * 255.0 + 0.5).astype(np.uint8), "L").save(out_dir / f"{stem}{args.suffix}.png")
        if args.overlay:
            tint = np.array([255.0, 0.0, 0.0])
            a = 0.5 * mask[..., None]
            over = img.astype(np.float32) * (1 - a) + tint * a
            Image.fromarray(over.round().astype(np.uint8)).save(out_dir / f"{stem}_overlay.png")
        if not res.found[0]:
            empty.append(str(f))
    print(f"wrote {len(files)} mask(s) to {out_dir} (region {args.region!r}, backend {res.backend})")
    if empty:
        shown = ", ".join(empty[:5]) + (f", ... ({len(empty)} in all)" if len(empty) > 5 else "")
        print(f"no region found in {len(empty)} image(s) (all-black masks): {shown}")
    return 0
