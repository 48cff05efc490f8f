"""Two processes through ``accelerate launch`` on the CPU (gloo DDP), the real trainer on the tiny stack.

Three launches: two processes killed abruptly after step 3 of 4 (the last checkpoint is step 2),
the same two resuming it, and a negative control with DDP's gradient reduction switched off.
Against one process at the same global batch (2 samples × 2 micro-batches per step):

- each process trains on its own disjoint half of the global batch's samples;
- the first step's (averaged) gradients equal the one-process gradients to float32 summation
  order (1e-4 of each tensor's largest value); the trained weights are bit-identical on both
  processes; the logged losses (global means) equal the one-process losses to 1e-4 relative,
  before the kill and after the resume. (Weights are not compared with the one-process run's:
  Adam moves an element whose gradient is within rounding of zero by ±lr either way, so ~0.5% of
  the elements differ by 2·lr after one step however exact the reduction is.)
- only process 0 writes checkpoints, validation images and losses.jsonl rows;
- the resumed run's log has every step once;
- without gradient reduction the processes' weights part at once: the checks above catch it.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_worker import capture_first_step_gradients
from safetensors.torch import load_file

from trainer import checkpoint as ckpt
from trainer.config import make_config
from trainer.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("dist_worker.py")
STEPS = 4
BASE = dict(data="synthetic:pairs=3,size=64,families=flip+invert+face", tile=64, base_model="tiny",
            hint_encoder_config='{"dims": [16, 32], "depths": [0, 1]}', esm_embedder="colour",
            esm_max_timestep=1000, esm_decode="latent", learning_rate=1e-3, gradient_accumulation_steps=2,
            max_steps=STEPS, checkpoint_every=2, validate_every=2, num_validation=1, validation_inference_steps=1,
            ema=True, progress=False, liu=False, verify="header", val_fraction=0.0, controlnet_zero_init=False)
TERMS = ("ldm", "esm", "sam", "total")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, report: Path, env_extra: dict | None = None, **overrides) -> subprocess.CompletedProcess:
    report.mkdir(parents=True, exist_ok=True)
    cfg = {**BASE, "batch_size": 1, "output_dir": str(out), **overrides}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(WORKER), json.dumps(cfg), str(report)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def _reports(report: Path) -> list[dict]:
    return [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]


def _weights(report: Path, rank: int) -> dict[str, torch.Tensor]:
    return load_file(str(report / f"weights-rank{rank}.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the one-process reference: 2 samples per micro-batch, the same global batch
        single = Trainer(make_config(**{**BASE, "batch_size": 2, "output_dir": str(tmp / "single")})).setup()
        capture_first_step_gradients(single, tmp / "single_grads.safetensors")
        history = single.train()["history"]
    finally:
        torch.set_num_threads(n)
    killed = _launch(tmp / "two", tmp / "rep_killed", {"KILL_AT_STEP": "3"})
    resumed = _launch(tmp / "two", tmp / "rep_resumed", resume="latest") if killed.returncode else None
    unsynced = _launch(tmp / "unsynced", tmp / "rep_unsynced", {"NO_GRAD_SYNC": "1"}, max_steps=1, validate_every=0)
    return dict(tmp=tmp, single=history, killed=killed, resumed=resumed, unsynced=unsynced)


def _ok(proc):
    assert proc is not None and proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-6000:]) if proc else None


def _same_losses(single: list[dict], two: list[dict]):
    assert two and all(a["step"] == b["step"] for a, b in zip(single, two))
    for a, b in zip(single, two):
        for k in (*TERMS, "lr"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-7), (k, a, b)


def test_two_processes_shard_the_data_and_stay_in_sync(runs):
    killed = runs["killed"]  # both processes died right after step 3 (os._exit(3))
    assert killed.returncode != 0 and "exitcode: 3" in killed.stderr, killed.stderr[-6000:]
    rep = runs["tmp"] / "rep_killed"
    r0, r1 = _reports(rep)
    assert r0["world"] == r1["world"] == 2 and r0["backend"] == "gloo"
    # Own shards: disjoint, together the one-process run's samples (2 per micro-batch, 2 per step).
    assert not set(r0["indices"]) & set(r1["indices"])
    assert sorted(r0["indices"] + r1["indices"]) == list(range(3 * 2 * 2))
    assert _max_diff(_weights(rep, 0), _weights(rep, 1)) == 0.0  # bit-identical after 3 steps
    single = load_file(str(runs["tmp"] / "single_grads.safetensors"))
    for r in (0, 1):
        grads = load_file(str(rep / f"grads-rank{r}.safetensors"))
        assert grads.keys() == single.keys()
        for k, g in single.items():
            assert (grads[k] - g).abs().max() <= 1e-4 * g.abs().max() + 1e-12, k
    # Losses: both processes log the global batch's mean, equal to the one-process losses.
    assert r0["history"] == r1["history"] and [h["step"] for h in r0["history"]] == [1, 2, 3]
    _same_losses(runs["single"][:3], r0["history"])
    assert any(h["sam"] > 0 for h in r0["history"]) and all(h["esm"] > 0 for h in r0["history"])


def test_only_process_0_writes(runs):
    r0, r1 = _reports(runs["tmp"] / "rep_killed")
    assert r1["checkpoint_saves"] == r1["images_saved"] == r1["log_rows_opened"] == 0
    assert r0["checkpoint_saves"] == 1 and r0["images_saved"] == 1 and r0["log_rows_opened"] == 3
    out = runs["tmp"] / "two"
    assert (out / "validation" / "step-00000002.png").is_file()


def test_a_killed_two_process_run_resumes_on_the_same_trajectory(runs):
    _ok(runs["resumed"])
    rep, out = runs["tmp"] / "rep_resumed", runs["tmp"] / "two"
    r0, r1 = _reports(rep)
    assert r0["start_step"] == r1["start_step"] == 2 and r1["checkpoint_saves"] == 0
    assert sorted(r0["indices"] + r1["indices"]) == list(range(2 * 2 * 2, STEPS * 2 * 2))
    assert [h["step"] for h in r0["history"]] == [3, 4]
    _same_losses(runs["single"][2:], r0["history"])
    assert _max_diff(_weights(rep, 0), _weights(rep, 1)) == 0.0
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-00000002", "checkpoint-00000004"]
    assert (out / "controlnet.safetensors").is_file() and (out / "validation" / "step-00000004.png").is_file()
    logged = [json.loads(x)["step"] for x in (out / "losses.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]


def test_without_gradient_reduction_the_checks_fail(runs):
    # The negative control: what the checks above would see if synchronisation were removed.
    _ok(runs["unsynced"])
    rep = runs["tmp"] / "rep_unsynced"
    assert _max_diff(_weights(rep, 0), _weights(rep, 1)) > 1e-4
    single = load_file(str(runs["tmp"] / "single_grads.safetensors"))
    grads = load_file(str(rep / "grads-rank0.safetensors"))
    assert max((grads[k] - g).abs().max() / g.abs().max().clamp_min(1e-12) for k, g in single.items()) > 1e-2


@pytest.mark.parametrize("name,machines", [("gpu8.yaml", 1), ("nodes2_gpu8.yaml", 2)])
def test_shipped_accelerate_configs_load(name, machines):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "trainer" / "launch" / name))
    assert str(cfg.distributed_type).endswith("MULTI_GPU") and cfg.num_machines == machines
    assert cfg.num_processes == 8 * machines and cfg.mixed_precision == "bf16"
