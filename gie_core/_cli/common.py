"""Pieces the subcommands share: input checks that run before any model loads, the --threads option,
and the settings a trained model's folder records. Nothing here imports torch at module level."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default"  # the demo's small trained stack


def _error(message: str):
    from gie_core.cli import CLIError

    return CLIError(message)


def add_threads_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--threads", default=None, metavar="N",
                   help="CPU threads for torch (default: auto = from the model's size and the CPUs idle now; "
                        "$GIE_THREADS or $OMP_NUM_THREADS also set it)")


def apply_threads(args: argparse.Namespace, device: str, work: int | None) -> int | None:
    """Set torch's CPU thread count for this run (gie_core.runtime) and say it on stderr; CUDA runs
    keep torch's default. Returns the count set, or None."""
    from gie_core.runtime import set_threads

    if not str(device).startswith("cpu"):
        return None
    try:
        choice = set_threads(args.threads, work=work)
    except ValueError as e:
        raise _error(str(e)) from None
    print(f"instructgie {args.command}: using {choice.describe()}", file=sys.stderr)
    return choice.threads


def check_text(text: str, what: str) -> str:
    """Text from the command line that must be valid UTF-8. Python keeps undecodable argv bytes as
    lone surrogates, which tokenizers reject with a long TypeError; say which byte instead."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start]
        byte = ord(bad) - 0xDC00 if 0xDC80 <= ord(bad) <= 0xDCFF else None
        shown = f"byte 0x{byte:02x}" if byte is not None else f"character {bad!r}"
        raise _error(f"{what}: not valid UTF-8 text ({shown} at character {e.start + 1}); "
                     "pass the text in UTF-8") from None
    return text


def check_out_dir(path: str, what: str = "--out") -> Path:
    """Create the output folder now (before any model loads); one-line errors for a file in the way
    or a folder that cannot be created."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise _error(f"{what} {str(path)!r} is a file; expected a folder (it is created if missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _error(f"{what} {str(path)!r} cannot be created ({e.strerror or e})") from None
    return p


def read_image(path, what: str):
    """A PIL image from a file (EXIF orientation applied), or a one-line error naming ``what``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise _error(f"{what} {str(path)!r} does not exist")
    if p.is_dir():
        raise _error(f"{what} {str(path)!r} is a folder, expected an image file")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise _error(f"{what} {str(path)!r} is not a readable image ({e.__class__.__name__})") from None
    return ImageOps.exif_transpose(img)


def image_files(items: list[str], what: str) -> list[Path]:
    """Files named on the command line, folders expanded to the images in them (sorted)."""
    files: list[Path] = []
    for s in items:
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise _error(f"{what} folder {s!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise _error(f"{what} {s!r} does not exist")
    return files


def resolve_settings(args: argparse.Namespace, train_config: Path | None, names=("tile", "resize", "guidance",
                                                                                  "steps")) -> dict:
    """The sampling settings for this run: each from the command line when given, else from the model
    folder's ``train_config.json`` (what the model was trained and validated with), else the defaults.
    Also ``unify`` (off with --no-unify or when the model was trained without LIU) and ``source``."""
    from gie_core.model_files import DEFAULT_SETTINGS, ModelLoadError, inference_settings

    try:
        recorded = inference_settings(train_config) if train_config is not None else {}
    except ModelLoadError as e:
        raise _error(str(e)) from None
    settings = {}
    for name in names:
        given = getattr(args, name, None)
        settings[name] = given if given is not None else recorded.get(name, DEFAULT_SETTINGS[name])
    settings["unify"] = recorded.get("unify", True) and not getattr(args, "no_unify", False)
    settings["source"] = str(train_config) if train_config is not None else None
    return settings


def describe_settings(settings: dict) -> str:
    where = f"{settings['source']}" if settings.get("source") else "the defaults"
    return (f"tile {settings['tile']}, resize {settings['resize']}, guidance {settings['guidance']:g}, "
            f"steps {settings['steps']} (unset options from {where})")
