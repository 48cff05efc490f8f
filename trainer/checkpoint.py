"""Atomic, pickle-free training checkpoints.

A checkpoint is a folder ``checkpoint-{step:08d}`` holding

- ``modules.safetensors``   the trained modules' weights (``{module}.{key}``),
- ``optimizer.safetensors`` the optimizer's tensors; its structure in ``state.json``,
- ``ema.safetensors``       the EMA shadow weights (when EMA is on),
- ``rng.safetensors``       torch's CPU (and CUDA) generator states,
- ``state.json``            step, samples seen, LR-scheduler state, config, data report.

It is written to ``*.tmp`` and renamed into place, so a crash never leaves a half checkpoint under a
real name; loading reads safetensors and JSON only (no pickle).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

PREFIX = "checkpoint-"


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def optimizer_to_safe(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Splits ``optimizer.state_dict()`` into tensors and a JSON structure."""
    tensors, scalars = {}, {}
    for pid, st in state_dict["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}/{k}"] = v.detach().cpu().contiguous()
            elif _jsonable(v):
                scalars[f"{pid}/{k}"] = v
            else:
                raise ValueError(f"optimizer state {pid}/{k} of type {type(v).__name__} cannot be checkpointed")
    groups = [{k: v for k, v in g.items() if _jsonable(v)} for g in state_dict["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def optimizer_from_safe(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split("/", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def scheduler_state(sched) -> dict:
    return {k: v for k, v in sched.state_dict().items() if _jsonable(v)}


def current_umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_like_umask(path: str | Path) -> None:
    """Gives ``path`` (a file, or every file in a folder tree) the mode a plain ``open()`` would:
    ``0666 & ~umask``. safetensors writes its files 0600, which hides weights and checkpoints from
    the group a shared training machine relies on."""
    mode = 0o666 & ~current_umask()
    path = Path(path)
    for f in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        os.chmod(f, mode)


def save(folder: str | Path, step: int, modules: dict[str, torch.nn.Module], optimizer, lr_scheduler,
         ema=None, extra: dict | None = None, keep: int = 2) -> Path:
    """Writes ``checkpoint-{step}`` atomically into ``folder`` and prunes all but ``keep`` newest."""
    folder = Path(folder)
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f"{PREFIX}{step:08d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    save_file(weights, str(tmp / "modules.safetensors"))
    opt_tensors, opt_meta = optimizer_to_safe(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    if ema is not None:
        save_file({f"shadow.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                  str(tmp / "ema.safetensors"))
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    save_file(rng, str(tmp / "rng.safetensors"))
    state = {"step": step, "optimizer": opt_meta, "lr_scheduler": scheduler_state(lr_scheduler),
             "ema": None if ema is None else {"optimization_step": int(ema.optimization_step), "decay": ema.decay},
             **(extra or {})}
    (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str))
    share_like_umask(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first (``*.tmp`` leftovers are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
           and (p / "state.json").is_file()]
    return sorted(out, key=lambda p: int(p.name[len(PREFIX):]))


def resolve(resume: str, output_dir: str | Path) -> Path | None:
    """Which checkpoint a run starts from.

    - ``''``: none — and an output folder that already holds checkpoints is an error (a new run
      would mix its checkpoints and logs with the old run's);
    - ``'latest'``: the newest checkpoint in ``output_dir``; an error when there is none;
    - ``'auto'``: the newest checkpoint if there is one, else none (for job scripts that always
      pass it);
    - a checkpoint folder."""
    cps = list_checkpoints(output_dir)
    if not resume:
        if cps:
            raise ValueError(f"output_dir {str(output_dir)!r} already holds {cps[-1].name}: continue it with "
                             "--resume latest, or choose another --output-dir")
        return None
    if resume in ("latest", "auto"):
        if not cps and resume == "latest":
            raise ValueError(f"resume='latest': no checkpoint in {str(output_dir)!r} (use --resume auto to "
                             "start from scratch when there is none)")
        return cps[-1] if cps else None
    p = Path(resume)
    if not (p / "state.json").is_file():
        raise ValueError(f"resume={resume!r}: expected 'latest', 'auto' or a checkpoint folder containing state.json")
    return p


def trim_jsonl(path: str | Path, last_step: int) -> int:
    """Keeps only the rows of a ``{"step": ...}`` JSON-lines log with ``step <= last_step`` (atomic
    rewrite); returns how many rows were dropped. A missing file is fine."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1  # a line cut short by a kill
            continue
        if step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(x + "\n" for x in kept))
        os.replace(tmp, path)
    return dropped


def load(path: str | Path, modules: dict[str, torch.nn.Module], optimizer, lr_scheduler, ema=None) -> dict:
    """Restores everything :func:`save` wrote; returns the state.json dict."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    weights = load_file(str(path / "modules.safetensors"))
    for name, m in modules.items():
        sub = {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}
        m.load_state_dict(sub, strict=True)
    optimizer.load_state_dict(optimizer_from_safe(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
    sched = lr_scheduler.state_dict()
    sched.update(state["lr_scheduler"])
    lr_scheduler.load_state_dict(sched)
    if ema is not None and (path / "ema.safetensors").is_file():
        shadow = load_file(str(path / "ema.safetensors"))
        ema.shadow_params = [shadow[f"shadow.{i}"].to(p.device) for i, p in enumerate(ema.shadow_params)]
        ema.optimization_step = state["ema"]["optimization_step"]
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    if not math.isfinite(float(state.get("last_loss", 0.0))):
        raise ValueError(f"checkpoint {path}: its last loss was not finite; refusing to resume from it")
    return state
