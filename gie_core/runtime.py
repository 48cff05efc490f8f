"""Process settings for the programs gie_core runs in: torch's thread count, numba's thread pool and
the library notes that do not apply to this project.

Why threads are chosen here: torch starts one intra-op thread per CPU it sees. For small models (the
bundled demo stack, the test models) an op's work is smaller than the cost of handing it to a second
thread, and when another process keeps the CPUs busy every hand-off waits for a time slice: the demo
ran 20x slower with torch's default threads than with one on a busy 2-CPU machine. So the count is

    min(CPUs this process may use, CPUs idle right now, work size / WORK_PER_THREAD)

where "may use" is the affinity mask capped by a cgroup CPU quota, "idle" is sampled from
/proc/stat over those CPUs for a tenth of a second (os.getloadavg elsewhere), and the work size is
what the caller knows about the job (e.g. the UNet's first feature map). An explicit count wins:
the ``threads`` argument (``--threads``), then ``GIE_THREADS``, then ``OMP_NUM_THREADS``.

Nothing here runs at import. Library code (ComfyUI nodes included) never calls it: it changes
process-wide state, which belongs to the program's entry point.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

THREADS_ENV = "GIE_THREADS"
# Elements of the largest per-step feature map that make a second thread worth its hand-offs.
# Measured with benchmarks/threads.py (docs/pipeline.md): one 3x3 conv + GroupNorm + SiLU layer on
# an idle 2-CPU machine is slower on two threads below about this size and faster above it.
WORK_PER_THREAD = 1 << 16
SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count set and why: ``source`` is "argument", an environment variable's name, or
    "auto" (then ``cpus``, ``busy`` and ``work_cap`` say what limited it)."""

    threads: int
    source: str
    cpus: int
    busy: float | None = None
    work_cap: int | None = None

    def describe(self) -> str:
        if self.source != "auto":
            return f"{self.threads} CPU thread{'s' * (self.threads != 1)} (set by {self.source})"
        why = [f"{self.cpus} CPU{'s' * (self.cpus != 1)} available"]
        if self.busy is not None:
            why.append(f"{self.busy:.1f} busy with other work")
        if self.work_cap is not None and self.work_cap < self.cpus:
            why.append("a small model")
        return f"{self.threads} CPU thread{'s' * (self.threads != 1)} ({', '.join(why)}; --threads to override)"


def parse_thread_count(value, name: str) -> int | None:
    """A positive int, or None for "auto" / "0" / empty; anything else is a ValueError naming ``name``."""
    if value is None or isinstance(value, bool):
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected a positive number of threads or 'auto', got {value!r}")
        return None
    text = str(value).strip().lower()
    if text in ("", "auto", "0"):
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise ValueError(f"{name}: expected a positive number of threads or 'auto', got {value!r}")
    return n


def _cgroup_quota(proc_cgroup: str, cgroup_root: Path) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None without one."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    candidates: list[tuple[Path, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":  # cgroup v2
            candidates += [(cgroup_root / rel / "cpu.max", "v2"), (cgroup_root / "cpu.max", "v2")]
        elif "cpu" in controllers.split(","):
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                candidates += [(cgroup_root / mount / rel / "cpu.cfs_quota_us", "v1"),
                               (cgroup_root / mount / "cpu.cfs_quota_us", "v1")]
    for path, kind in candidates:
        try:
            if kind == "v2":  # "max 100000" or "<quota> <period>"
                fields = path.read_text().split()
                quota, period = fields[0], (fields[1] if len(fields) > 1 else "100000")
            else:
                quota = path.read_text().strip()
                period = (path.parent / "cpu.cfs_period_us").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            q, p = float(quota), float(period)
        except ValueError:
            continue
        if q > 0 and p > 0:
            return q / p
    return None


def available_cpus(proc_cgroup: str = "/proc/self/cgroup", cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup CPU quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota(proc_cgroup, cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return max(1, n)


def _cpu_times(stat_text: str, cpus: set[int] | None) -> tuple[float, float]:
    """(busy, total) jiffies summed over ``cpus`` from /proc/stat text (all CPUs when None)."""
    busy = total = 0.0
    for line in stat_text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + values[4]
        total += sum(values)
        busy += sum(values) - idle
    return busy, total


def busy_cpus(seconds: float = SAMPLE_SECONDS, stat: str = "/proc/stat") -> float | None:
    """How many of this process's CPUs other work keeps busy, sampled over ``seconds``; None if unknown.

    Linux: the non-idle share of /proc/stat over the affinity CPUs, minus this process's own CPU time
    in the interval. Elsewhere: the 1-minute load average minus this process."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    try:
        before = _cpu_times(Path(stat).read_text(), cpus)
        own_before = time.process_time()
        time.sleep(seconds)
        after = _cpu_times(Path(stat).read_text(), cpus)
        own = time.process_time() - own_before
    except (OSError, ValueError, IndexError):
        try:
            return max(0.0, os.getloadavg()[0] - 1.0)
        except (AttributeError, OSError):
            return None
    d_busy, d_total = after[0] - before[0], after[1] - before[1]
    if d_total <= 0:
        return None
    n = len(cpus) if cpus is not None else os.cpu_count() or 1
    wall_share = d_total / n  # jiffies per CPU in the interval
    return max(0.0, min(float(n), d_busy / wall_share - own / seconds))


def choose_threads(threads=None, *, work: int | None = None, environ=None,
                   sample: float = SAMPLE_SECONDS) -> ThreadChoice:
    """The thread count for this process (see the module docstring); sets nothing."""
    environ = os.environ if environ is None else environ
    explicit = parse_thread_count(threads, "--threads")
    if explicit is not None:
        return ThreadChoice(explicit, "--threads", available_cpus())
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        if environ.get(name, "").strip():
            try:
                n = parse_thread_count(environ[name], name)
            except ValueError:
                if name == THREADS_ENV:
                    raise
                n = None  # OMP_NUM_THREADS is the OpenMP runtime's, e.g. "4,2": not ours to police
            if n is not None:
                return ThreadChoice(n, name, available_cpus())
    cpus = available_cpus()
    work_cap = None if work is None else max(1, int(work) // WORK_PER_THREAD)
    limit = cpus if work_cap is None else min(cpus, work_cap)
    busy = busy_cpus(sample) if limit > 1 else None
    n = limit if busy is None else max(1, min(limit, round(cpus - busy)))
    return ThreadChoice(n, "auto", cpus, busy, work_cap)


def set_threads(threads=None, *, work: int | None = None) -> ThreadChoice:
    """Choose (:func:`choose_threads`) and apply torch's intra-op thread count; numba's kernels
    follow it (ops/numba_scan.py reads ``torch.get_num_threads()``)."""
    import torch

    choice = choose_threads(threads, work=work)
    torch.set_num_threads(choice.threads)
    return choice


def unet_work(unet_config, vae_scale_factor: int, height: int, width: int) -> int:
    """Elements of a UNet's first feature map for one ``height`` x ``width`` image: the work-size
    measure :func:`choose_threads` expects."""
    cfg = dict(unet_config)
    channels = int(cfg.get("block_out_channels", (320,))[0])
    f = max(1, int(vae_scale_factor))
    return channels * max(1, height // f) * max(1, width // f)


class _DropNote(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


_QUIET_NOTES = {
    # transformers 5 wants torchvision for its default image processors and falls back to the PIL ones
    # with a note; this project deliberately runs without torchvision (it would replace the CPU torch).
    "transformers.utils.import_utils": ("requires torchvision (not installed)",),
}


def quiet_library_notes() -> None:
    """Drop library notes that only advise what this project must not do (install torchvision)."""
    for name, fragments in _QUIET_NOTES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNote) for f in logger.filters):
            logger.addFilter(_DropNote(*fragments))


def prefer_numba_workqueue() -> None:
    """Use numba's own "workqueue" thread pool unless the user chose one (``NUMBA_THREADING_LAYER``).

    numba's default here is its OpenMP layer, a second GNU OpenMP runtime beside torch's; once it has
    run the two spin against each other and every later torch op slows down (measured: a 1.5 M-element
    ``torch.sum`` went from 0.05 ms to 16 ms). It is a process-wide choice, so programs opt in here;
    the library (and ComfyUI) leave numba's default alone. Effective before numba's first parallel
    kernel runs."""
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return
    os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
    numba = sys.modules.get("numba")
    if numba is not None:  # already imported: its config read the environment before we set it
        numba.config.THREADING_LAYER = "workqueue"


def prepare_process(threads=None, *, work: int | None = None) -> ThreadChoice:
    """What a gie_core program does first: quiet inapplicable library notes, prefer numba's workqueue
    pool, and set torch's thread count (:func:`set_threads`). Raises ValueError for a bad count."""
    quiet_library_notes()
    prefer_numba_workqueue()
    return set_threads(threads, work=work)
