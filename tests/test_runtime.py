"""gie_core.runtime: the thread count from CPUs, quota, load and work size; the overrides; numba's pool
and the library notes as a program's entry point sets them."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gie_core import runtime

ROOT = Path(__file__).resolve().parents[1]


def test_parse_thread_count():
    assert runtime.parse_thread_count(None, "x") is None
    assert runtime.parse_thread_count("auto", "x") is None
    assert runtime.parse_thread_count(" 0 ", "x") is None
    assert runtime.parse_thread_count("3", "x") == 3 and runtime.parse_thread_count(2, "x") == 2
    for bad in ("-1", "two", "1.5", True):
        with pytest.raises(ValueError, match="x: expected a positive number of threads or 'auto'"):
            runtime.parse_thread_count(bad, "x")


def test_overrides_in_order_and_bad_values():
    env = {"GIE_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert runtime.choose_threads(2, environ=env).threads == 2
    assert runtime.choose_threads(2, environ=env).source == "--threads"
    assert (runtime.choose_threads(None, environ=env).threads, runtime.choose_threads(None, environ=env).source) == \
        (3, "GIE_THREADS")
    assert runtime.choose_threads(None, environ={"OMP_NUM_THREADS": "5"}).threads == 5
    with pytest.raises(ValueError, match="GIE_THREADS"):
        runtime.choose_threads(None, environ={"GIE_THREADS": "many"})
    # OMP_NUM_THREADS belongs to the OpenMP runtime (it may read "4,2"): not ours to reject
    assert runtime.choose_threads(None, environ={"OMP_NUM_THREADS": "4,2"}, work=1).source == "auto"
    assert "set by GIE_THREADS" in runtime.choose_threads(None, environ=env).describe()


def test_small_work_gets_one_thread_without_sampling_the_load(monkeypatch):
    monkeypatch.setattr(runtime, "busy_cpus", lambda *a, **k: pytest.fail("sampled the load for a small job"))
    choice = runtime.choose_threads(None, environ={}, work=runtime.WORK_PER_THREAD - 1)
    assert choice.threads == 1 and choice.work_cap == 1
    assert "a small model" in choice.describe() or choice.cpus == 1


def test_thread_count_follows_cpus_load_and_work(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda *a, **k: 8)
    monkeypatch.setattr(runtime, "busy_cpus", lambda *a, **k: 0.2)
    assert runtime.choose_threads(None, environ={}).threads == 8
    assert runtime.choose_threads(None, environ={}, work=3 * runtime.WORK_PER_THREAD).threads == 3
    monkeypatch.setattr(runtime, "busy_cpus", lambda *a, **k: 5.4)
    assert runtime.choose_threads(None, environ={}).threads == 3  # round(8 - 5.4)
    monkeypatch.setattr(runtime, "busy_cpus", lambda *a, **k: 8.0)
    assert runtime.choose_threads(None, environ={}).threads == 1
    monkeypatch.setattr(runtime, "busy_cpus", lambda *a, **k: None)  # unknown load: the CPUs and the work
    assert runtime.choose_threads(None, environ={}, work=10 ** 9).threads == 8


def _cgroup(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[str, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "cgroup"
    proc.write_text(proc_line + "\n")
    root = tmp_path / "fs"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return str(proc), root


def test_cgroup_quotas_v2_and_v1(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    proc, root = _cgroup(tmp_path / "a", "0::/job", {"job/cpu.max": "150000 100000\n"})
    assert runtime._cgroup_quota(proc, root) == 1.5
    assert runtime.available_cpus(proc, root) == 2
    proc, root = _cgroup(tmp_path / "b", "0::/", {"cpu.max": "max 100000\n"})
    assert runtime._cgroup_quota(proc, root) is None and runtime.available_cpus(proc, root) == 16
    proc, root = _cgroup(tmp_path / "c", "4:cpu,cpuacct:/docker/abc",
                         {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us":
                          "100000"})
    assert runtime.available_cpus(proc, root) == 3
    proc, root = _cgroup(tmp_path / "d", "4:cpu,cpuacct:/", {"cpu/cpu.cfs_quota_us": "-1",
                                                               "cpu/cpu.cfs_period_us": "100000"})
    assert runtime.available_cpus(proc, root) == 16
    assert runtime.available_cpus(str(tmp_path / "missing"), tmp_path / "none") == 16


def test_proc_stat_parsing_counts_only_the_given_cpus():
    text = ("cpu  100 0 100 800 0 0 0 0 0 0\n"
            "cpu0 50 0 50 0 0 0 0 0 0 0\n"       # fully busy
            "cpu1 0 0 0 100 0 0 0 0 0 0\n"       # idle
            "cpu2 10 5 5 60 20 0 0 0 0 0\n"      # busy 20 of 100 (iowait counts as idle)
            "intr 1 2 3\n")
    assert runtime._cpu_times(text, {0, 1}) == (100.0, 200.0)
    assert runtime._cpu_times(text, {2}) == (20.0, 100.0)
    assert runtime._cpu_times(text, None) == (120.0, 300.0)


def _spin(stop):
    while not stop.is_set():
        pass


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs Linux /proc/stat")
def test_busy_neighbours_are_seen_and_leave_one_thread():
    """The real measurement: with one busy-looping process per CPU, the load is seen and torch gets one
    thread; alone it sees less than that."""
    cpus = runtime.available_cpus()
    stop = mp.Event()
    workers = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(cpus)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.3)
        busy = runtime.busy_cpus(0.3)
        choice = runtime.choose_threads(None, environ={}, sample=0.3)
    finally:
        stop.set()
        for w in workers:
            w.join(5)
    assert busy is not None and busy > cpus - 0.7, (busy, cpus)
    assert choice.threads == 1 and choice.busy is not None


def test_set_threads_applies_it():
    before = torch.get_num_threads()
    try:
        choice = runtime.set_threads(1)
        assert choice.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_unet_work():
    assert runtime.unet_work({"block_out_channels": [320, 640]}, 8, 512, 512) == 320 * 64 * 64
    assert runtime.unet_work({"block_out_channels": (32, 64)}, 8, 128, 128) < runtime.WORK_PER_THREAD


def _python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "GIE_THREADS")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**clean, **env}, timeout=900)  # minutes only on a crowded machine


@pytest.mark.slow  # two fresh processes importing transformers
def test_library_notes_about_torchvision_are_dropped_by_the_programs_only():
    """transformers advises installing torchvision when diffusers pulls in its image processors; the
    project runs without it on purpose. The programs drop the note; plain library use keeps it."""
    code = ("import sys\n"
            "if sys.argv[-1] == 'quiet':\n"
            "    from gie_core.runtime import quiet_library_notes; quiet_library_notes()\n"
            "import transformers\n"
            "transformers.CLIPImageProcessor\n")
    if __import__("importlib").util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here: transformers has nothing to say")
    loud = subprocess.run([sys.executable, "-c", code, "loud"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    quiet = subprocess.run([sys.executable, "-c", code, "quiet"], capture_output=True, text=True, cwd=ROOT,
                           timeout=900)
    assert "requires torchvision" in loud.stderr  # the note exists (so the test can fail)
    assert quiet.returncode == 0 and "torchvision" not in quiet.stderr, quiet.stderr


@pytest.mark.slow  # three fresh processes importing numba
@pytest.mark.skipif(__import__("importlib").util.find_spec("numba") is None, reason="numba is not installed")
def test_numba_threading_layer_is_left_alone_by_the_library_and_chosen_by_programs():
    scan = ("import torch\n"
            "from gie_core.ops import selective_scan\n"
            "u = torch.randn(1, 4, 9); A = -torch.rand(4, 2); B = torch.randn(1, 2, 9)\n"
            "selective_scan(u, torch.rand(1, 4, 9), A, B, B, backend='cpu')\n"
            "import numba; print(numba.config.THREADING_LAYER, numba.threading_layer())\n")
    library = _python("import gie_core.ops.numba_scan\n" + scan)
    assert library.returncode == 0, library.stderr
    configured, _ = library.stdout.split()
    assert configured == "default"  # importing and running the scan changed nothing process-wide
    program = _python("from gie_core.runtime import prepare_process; prepare_process(1)\n" + scan)
    assert program.returncode == 0, program.stderr
    assert program.stdout.split() == ["workqueue", "workqueue"]
    # numba imported before the program opts in, and a user's own choice: the configuration only
    configs = _python("import os, numba\n"
                      "from gie_core.runtime import prefer_numba_workqueue\n"
                      "prefer_numba_workqueue(); print(numba.config.THREADING_LAYER)\n"
                      "os.environ['NUMBA_THREADING_LAYER'] = 'omp'; numba.config.THREADING_LAYER = 'omp'\n"
                      "prefer_numba_workqueue(); print(numba.config.THREADING_LAYER)\n")
    assert configs.returncode == 0, configs.stderr
    assert configs.stdout.split() == ["workqueue", "omp"]  # late import handled; the user's choice stands
