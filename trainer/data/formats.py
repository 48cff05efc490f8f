"""Reading editing pairs from disk: folder datasets, InstructPix2Pix-style tables, the generator.

Every loader returns a list of :class:`PairRecord` whose images are *references* (a path, encoded
bytes, a lazily read table cell or an in-memory PIL image), so nothing is decoded until a sample
needs it. :func:`load_image` decodes one reference and raises :class:`BadImage` (a ValueError)
for anything missing, corrupt or too small; the dataset skips and counts those.

Formats
- ``folder``: a directory with ``metadata.jsonl``; rows ``{"instruction", "before", "after"}`` with
  image paths relative to the folder (optional ``family``, ``seen``, ``mask``, ``canonical``,
  ``group`` — an edit id shared by the pairs of one edit, ``source``, ``before_caption``,
  ``after_caption``).
- ``ip2p``: InstructPix2Pix's layout: parquet files, or a folder saved by ``datasets``'
  ``save_to_disk``, with columns ``original_image`` / ``edited_image`` / ``edit_prompt`` (aliases
  ``input``/``input_image``/``before``, ``output``/``output_image``/``after``,
  ``instruction``/``prompt``). Image cells may be ``{"bytes", "path"}`` structs (the ``datasets``
  Image feature), raw bytes or paths.
- ``ip2p_folders``: InstructPix2Pix's released layout: a folder per prompt holding ``prompt.json``
  (``edit``, and the captions ``input``/``output``) and ``<seed>_0.jpg`` / ``<seed>_1.jpg`` pairs,
  with an optional ``seeds.json`` (``[[folder, [seed, ...]], ...]``) at the top.
- ``synthetic``: the procedural generator (``trainer.data.synthetic``), in memory.
"""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

log = logging.getLogger("trainer.data")

INSTRUCTION_COLUMNS = ("edit_prompt", "instruction", "prompt", "edit")
BEFORE_COLUMNS = ("original_image", "input_image", "input", "before", "source_image")
BEFORE_CAPTION_COLUMNS = ("original_prompt", "input_caption", "before_caption")
AFTER_CAPTION_COLUMNS = ("edited_prompt", "output_caption", "after_caption")
AFTER_COLUMNS = ("edited_image", "output_image", "output", "after", "target_image", "edited")
MIN_SIDE_DEFAULT = 16


class BadImage(ValueError):
    """An image reference that cannot be used: missing, unreadable, corrupt or too small."""


@dataclass
class LazyCell:
    """One image cell of a table, read when needed (``reader(row)`` returns the cell value)."""

    reader: Callable[[int], Any] = field(repr=False)
    row: int
    name: str
    base: Path | None = None

    def get(self):
        return self.reader(self.row)


@dataclass
class PairRecord:
    """One before/after pair. ``before``/``after``/``mask``: path, bytes, PIL image or LazyCell."""

    instruction: str
    before: Any
    after: Any
    key: str  # stable identifier (file path or table/row) for logs and the mask cache
    family: str | None = None
    seen: bool | None = None
    mask: Any = None
    canonical: str | None = None
    before_caption: str | None = None  # image captions (InstructPix2Pix has them): text CLIP direction
    after_caption: str | None = None
    # The edit this pair belongs to, when the data knows it (procedural sources: one id per set of
    # edit parameters, however generic the instruction). Evaluation groups by it before falling back
    # to the canonical or unified instruction.
    group: str | None = None
    # Where the pair comes from (InstructPix2Pix: its prompt folder). Pairs of one source are never
    # example and query of one sample; None: only the images' content hashes decide.
    source: str | None = None


def describe(ref: Any) -> str:
    """A short human-readable name for an image reference."""
    if isinstance(ref, (str, Path)):
        return str(ref)
    if isinstance(ref, LazyCell):
        return ref.name
    if isinstance(ref, Image.Image):
        return f"<in-memory {ref.size[0]}x{ref.size[1]} image>"
    return f"<{type(ref).__name__}>"


def _open(ref: Any, base: Path | None = None) -> Image.Image:
    if isinstance(ref, LazyCell):
        return _open(ref.get(), ref.base)
    if isinstance(ref, Image.Image):
        return ref
    if isinstance(ref, dict):  # datasets' Image feature: {"bytes": ..., "path": ...}
        if ref.get("bytes"):
            return _open(bytes(ref["bytes"]), base)
        if ref.get("path"):
            return _open(ref["path"], base)
        raise BadImage("image cell has neither bytes nor path")
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(ref)))
    if isinstance(ref, (str, Path)):
        p = Path(ref)
        if base is not None and not p.is_absolute():
            p = base / p
        if not p.is_file():
            raise BadImage(f"missing file {p}")
        return Image.open(p)
    if ref is None:
        raise BadImage("no image (empty cell)")
    raise BadImage(f"unsupported image reference of type {type(ref).__name__}")


def load_image(ref: Any, min_side: int = MIN_SIDE_DEFAULT, mode: str = "RGB", header_only: bool = False):
    """Decodes an image reference to a PIL image in ``mode`` (``header_only``: just check it).

    Raises BadImage when the file is missing, unreadable, truncated or smaller than ``min_side``."""
    try:
        img = _open(ref)
        w, h = img.size
        if min(w, h) < min_side:
            raise BadImage(f"{describe(ref)} is {w}x{h}, smaller than the minimum side of {min_side} px")
        if header_only:
            return img
        img.load()
        return img.convert(mode)
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError) as e:
        raise BadImage(f"{describe(ref)}: unreadable image ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- folder
def load_folder(folder: str | Path) -> list[PairRecord]:
    """Records of a folder dataset with ``metadata.jsonl``; malformed rows are skipped and logged."""
    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise ValueError(f"dataset folder {folder}: expected a metadata.jsonl file in it")
    records: list[PairRecord] = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            instr, before, after = row["instruction"], row["before"], row["after"]
            if not isinstance(instr, str) or not instr.strip():
                raise ValueError("empty instruction")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            log.warning("metadata.jsonl line %d skipped: %s (expected {instruction, before, after})", n, e)
            continue
        mask = row.get("mask")
        records.append(PairRecord(
            instr, folder / before, folder / after, f"{meta}:{n}", row.get("family"), row.get("seen"),
            folder / mask if mask else None, row.get("canonical"), row.get("before_caption"),
            row.get("after_caption"), group=row.get("group"), source=row.get("source")))
    return records


# --------------------------------------------------------------------------- InstructPix2Pix tables
def _pick(columns: Sequence[str], choices: Sequence[str], what: str, where: str) -> str:
    for c in choices:
        if c in columns:
            return c
    raise ValueError(f"{where}: no {what} column; expected one of {list(choices)}, found {list(columns)}")


class _ParquetRows:
    """Row access to one parquet file, reading one column of one row group at a time."""

    ROW_GROUP_CACHE = 4

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.path = path
        self._file = None
        meta = pq.ParquetFile(path).metadata
        self.starts, s = [], 0
        for g in range(meta.num_row_groups):
            self.starts.append(s)
            s += meta.row_group(g).num_rows
        self.num_rows = s
        self._cache: dict[tuple[int, str], Any] | None = None

    def __getstate__(self):  # DataLoader workers re-open the file
        return {**self.__dict__, "_file": None, "_cache": None}

    def cell(self, column: str, row: int):
        import bisect

        import pyarrow.parquet as pq

        g = bisect.bisect_right(self.starts, row) - 1
        if self._cache is None:
            self._cache = {}
        key = (g, column)
        chunk = self._cache.pop(key, None)
        if chunk is None:
            if self._file is None:
                self._file = pq.ParquetFile(self.path)
            # One column of one row group: a dataset far larger than memory streams through a few
            # of them (the cache keeps the ROW_GROUP_CACHE most recent).
            chunk = self._file.read_row_group(g, columns=[column]).column(0)
            while len(self._cache) >= self.ROW_GROUP_CACHE:
                self._cache.pop(next(iter(self._cache)))
        self._cache[key] = chunk  # re-inserted: most recent last
        return chunk[row - self.starts[g]].as_py()


class _ArrowRows:
    """Row access to arrow IPC files as written by ``datasets.save_to_disk`` (memory-mapped)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)
        self._table = None

    def __getstate__(self):
        return {**self.__dict__, "_table": None}

    @property
    def table(self):
        if self._table is None:
            import pyarrow as pa

            parts = []
            for p in self.paths:
                src = pa.memory_map(str(p), "r")
                try:
                    parts.append(pa.ipc.open_stream(src).read_all())
                except pa.ArrowInvalid:
                    parts.append(pa.ipc.open_file(src).read_all())
            self._table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        return self._table

    def cell(self, column: str, row: int):
        return self.table.column(column)[row].as_py()


@dataclass
class _CellReader:
    """Picklable ``row -> cell`` reader for one column (DataLoader workers may be spawned)."""

    rows: Any
    column: str

    def __call__(self, row: int):
        return self.rows.cell(self.column, row)


def _captions(read_column, columns: Sequence[str], choices: Sequence[str], n: int) -> list:
    for c in choices:
        if c in columns:
            return read_column(c)
    return [None] * n


def _records_from_rows(rows, columns: Sequence[str], num_rows: int, name: str, base: Path,
                       instructions: list, captions: tuple[list, list] | None = None) -> list[PairRecord]:
    _pick(columns, INSTRUCTION_COLUMNS, "instruction", name)  # a clear error when the column is missing
    c_b = _pick(columns, BEFORE_COLUMNS, "before-image", name)
    c_a = _pick(columns, AFTER_COLUMNS, "after-image", name)
    out = []
    for r in range(num_rows):
        instr = instructions[r]
        if not isinstance(instr, str) or not instr.strip():
            log.warning("%s row %d skipped: empty instruction", name, r)
            continue
        before_caption = captions[0][r] if captions else None
        # InstructPix2Pix's export has one row per (prompt, seed): rows sharing the input caption
        # come from one prompt folder, so they count as one source.
        source = f"caption:{before_caption}" if isinstance(before_caption, str) and before_caption else None
        out.append(PairRecord(instr, LazyCell(_CellReader(rows, c_b), r, f"{name}[{r}].{c_b}", base),
                              LazyCell(_CellReader(rows, c_a), r, f"{name}[{r}].{c_a}", base),
                              f"{name}#{r}", before_caption=before_caption,
                              after_caption=captions[1][r] if captions else None, source=source))
    return out


def load_ip2p(source: str | Path) -> list[PairRecord]:
    """Records of an InstructPix2Pix-style dataset: a parquet file, a folder of parquet files
    (searched recursively) or a ``datasets.save_to_disk`` folder (arrow files + state.json)."""
    import pyarrow.parquet as pq

    source = Path(source)
    if not source.exists():
        raise ValueError(f"dataset {source}: no such file or folder")
    arrow_files = sorted(source.glob("*.arrow")) if source.is_dir() else []
    if source.is_dir() and (source / "state.json").is_file():
        state = json.loads((source / "state.json").read_text())
        arrow_files = [source / f["filename"] for f in state.get("_data_files", [])] or arrow_files
    records: list[PairRecord] = []
    if arrow_files:
        rows = _ArrowRows(arrow_files)
        cols = rows.table.column_names
        c_ins = _pick(cols, INSTRUCTION_COLUMNS, "instruction", str(source))
        n = rows.table.num_rows
        read = lambda c: rows.table.column(c).to_pylist()  # noqa: E731
        caps = (_captions(read, cols, BEFORE_CAPTION_COLUMNS, n), _captions(read, cols, AFTER_CAPTION_COLUMNS, n))
        return _records_from_rows(rows, cols, n, str(source), source, read(c_ins), caps)
    files = [source] if source.is_file() else sorted(source.rglob("*.parquet"))
    if not files:
        raise ValueError(f"dataset {source}: expected parquet files or a datasets save_to_disk folder")
    for f in files:
        rows = _ParquetRows(f)
        cols = pq.ParquetFile(f).schema_arrow.names
        c_ins = _pick(cols, INSTRUCTION_COLUMNS, "instruction", str(f))
        read = lambda c, f=f: pq.read_table(f, columns=[c]).column(c).to_pylist()  # noqa: E731
        caps = (_captions(read, cols, BEFORE_CAPTION_COLUMNS, rows.num_rows),
                _captions(read, cols, AFTER_CAPTION_COLUMNS, rows.num_rows))
        records += _records_from_rows(rows, cols, rows.num_rows, str(f), f.parent, read(c_ins), caps)
    return records


# --------------------------------------------------------------------------- InstructPix2Pix's release
def is_ip2p_folders(folder: str | Path) -> bool:
    """Whether ``folder`` looks like InstructPix2Pix's released layout (seeds.json, or prompt folders)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if (folder / "seeds.json").is_file():
        return True
    for sub in sorted(folder.iterdir())[:16]:
        if sub.is_dir() and (sub / "prompt.json").is_file():
            return True
    return False


def _ip2p_seeds(folder: Path) -> list[tuple[str, list[str]]]:
    if (folder / "seeds.json").is_file():
        try:
            seeds = json.loads((folder / "seeds.json").read_text())
            return [(str(name), [str(s) for s in ss]) for name, ss in seeds]
        except (ValueError, TypeError) as e:
            raise ValueError(f"{folder / 'seeds.json'}: expected [[prompt folder, [seed, ...]], ...] ({e})") from None
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        seeds = sorted(p.name[:-len("_0.jpg")] for p in sub.glob("*_0.jpg"))
        if seeds:
            out.append((sub.name, seeds))
    return out


def load_ip2p_folders(folder: str | Path) -> list[PairRecord]:
    """Records of InstructPix2Pix's released dataset layout (see the module docstring). Every pair
    of a prompt folder gets the source ``ip2p:<folder>``: its seeds are one prompt drawn several
    times, so one must never serve as the example for another."""
    folder = Path(folder)
    records: list[PairRecord] = []
    for name, seeds in _ip2p_seeds(folder):
        sub = folder / name
        try:
            prompt = json.loads((sub / "prompt.json").read_text(encoding="utf-8"))
            edit = prompt["edit"]
            if not isinstance(edit, str) or not edit.strip():
                raise ValueError("empty edit")
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("%s skipped: prompt.json unusable (%s; expected {\"edit\", \"input\", \"output\"})", sub, e)
            continue
        for seed in seeds:
            records.append(PairRecord(edit, sub / f"{seed}_0.jpg", sub / f"{seed}_1.jpg", f"{sub}/{seed}",
                                      before_caption=prompt.get("input"), after_caption=prompt.get("output"),
                                      source=f"ip2p:{name}"))
    return records


def content_hash(ref: Any) -> str:
    """A hash of an image reference's *stored* content: the encoded file bytes (paths, bytes,
    datasets Image structs, table cells) or the pixels (in-memory images). Equal files hash equal
    wherever they live; nothing is decoded. Raises BadImage when the content cannot be read."""
    import hashlib

    if isinstance(ref, LazyCell):
        return content_hash(_resolve_cell(ref.get(), ref.base))
    h = hashlib.sha1()
    if isinstance(ref, Image.Image):
        h.update(f"{ref.mode}{ref.size}".encode())
        h.update(ref.tobytes())
    elif isinstance(ref, (bytes, bytearray, memoryview)):
        h.update(bytes(ref))
    elif isinstance(ref, (str, Path)):
        try:
            with open(ref, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise BadImage(f"{ref}: unreadable ({e})") from None
    elif isinstance(ref, dict):
        return content_hash(_resolve_cell(ref, None))
    else:
        raise BadImage(f"unsupported image reference of type {type(ref).__name__}")
    return h.hexdigest()


def _resolve_cell(value: Any, base: Path | None) -> Any:
    """A table cell as bytes or a path (datasets' Image struct: bytes first, then a path)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            return _resolve_cell(value["path"], base)
        raise BadImage("image cell has neither bytes nor path")
    if isinstance(value, (str, Path)) and base is not None and not Path(value).is_absolute():
        return base / value
    if value is None:
        raise BadImage("no image (empty cell)")
    return value


# --------------------------------------------------------------------------- synthetic
def load_synthetic(pairs_per_instruction: int = 8, size: int = 64, seed: int = 0,
                   families: Sequence[str] | None = None, held_out: Sequence[str] | None = None,
                   start_index: int = 0) -> list[PairRecord]:
    """Records of freshly generated synthetic pairs (in memory)."""
    from . import synthetic

    held_out = synthetic.HELD_OUT_DEFAULT if held_out is None else tuple(held_out)
    out = []
    for p in synthetic.iter_pairs(pairs_per_instruction, families, size, seed, start_index):
        out.append(PairRecord(p.instruction, p.before, p.after, f"synthetic/{p.family}/{p.variant}/{p.index}",
                              p.family, p.family not in held_out, p.mask, p.canonical))
    return out


def parse_synthetic_spec(spec: str) -> dict:
    """``"synthetic:pairs=8,size=64,seed=0,families=flip+invert,held_out=sepia"`` -> kwargs."""
    kw: dict[str, Any] = {}
    body = spec.split(":", 1)[1] if ":" in spec else ""
    for part in filter(None, body.split(",")):
        if "=" not in part:
            raise ValueError(f"synthetic spec {spec!r}: expected key=value items, got {part!r}")
        k, v = part.split("=", 1)
        k = k.strip()
        if k in ("pairs", "pairs_per_instruction"):
            kw["pairs_per_instruction"] = int(v)
        elif k in ("size", "seed", "start_index"):
            kw[k] = int(v)
        elif k in ("families", "held_out"):
            kw[k] = [x for x in v.split("+") if x]
        else:
            raise ValueError(f"synthetic spec {spec!r}: unknown key {k!r} (pairs, size, seed, start_index, "
                             "families, held_out)")
    return kw


def load_records(source: str | Path, fmt: str = "auto") -> list[PairRecord]:
    """Records from ``source``: a folder with metadata.jsonl, InstructPix2Pix parquet/arrow data or
    its released folder layout, or a ``synthetic:...`` spec. ``fmt``: ``auto``, ``folder``,
    ``ip2p``, ``ip2p_folders`` or ``synthetic``."""
    s = str(source)
    if fmt == "synthetic" or (fmt == "auto" and s.startswith("synthetic")):
        return load_synthetic(**parse_synthetic_spec(s))
    p = Path(s)
    if fmt == "folder" or (fmt == "auto" and (p / "metadata.jsonl").is_file()):
        return load_folder(p)
    if fmt == "ip2p_folders" or (fmt == "auto" and is_ip2p_folders(p)):
        if not p.is_dir():
            raise ValueError(f"dataset {s!r}: expected InstructPix2Pix's folder layout (prompt folders)")
        return load_ip2p_folders(p)
    if fmt in ("ip2p", "auto"):
        if fmt == "auto" and not p.exists():
            raise ValueError(f"dataset {s!r}: no such file or folder (nor a 'synthetic:' spec)")
        return load_ip2p(p)
    raise ValueError(f"dataset format {fmt!r}: expected auto, folder, ip2p, ip2p_folders or synthetic")
