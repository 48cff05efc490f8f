"""One process of the multi-process training test (tests/test_trainer_dist.py), started by
``accelerate launch``. Not a test module itself.

    accelerate launch --multi_gpu --num_processes 2 tests/dist_worker.py CONFIG_JSON REPORT_DIR

Trains with the real Trainer and records, per process, in ``REPORT_DIR/rank{r}.json``: the dataset
indices it trained on, its loss history, and how often it wrote a checkpoint, a validation image
or a losses.jsonl row (counted where the writing happens: ``checkpoint.save``, PIL's ``save`` and
the log file's ``open``); its trained weights go to ``REPORT_DIR/weights-rank{r}.safetensors`` and
the gradients of its first optimizer step to ``REPORT_DIR/grads-rank{r}.safetensors``.

Environment: ``KILL_AT_STEP=N`` ends every process abruptly (``os._exit``) right after step N, as
a node failure would (the report is written first); ``NO_GRAD_SYNC=1`` runs every forward/backward under DDP's ``no_sync`` (the
negative control: what removing gradient synchronisation does).
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys


def capture_first_step_gradients(trainer, path) -> None:
    """Saves the trained parameters' gradients as the first optimizer step sees them (after DDP's
    averaging and clipping) to ``path`` (safetensors)."""
    from safetensors.torch import save_file

    opt = trainer.optimizer
    step = opt.step

    def first_step(*a, **kw):
        grads = {f"{n}.{k}": p.grad.detach().cpu().contiguous() for n, m in trainer.wrapped.items()
                 for k, p in trainer.acc.unwrap_model(m).named_parameters() if p.grad is not None}
        save_file(grads, str(path))
        opt.step = step
        return step(*a, **kw)

    opt.step = first_step


def main(config_json: str, report_dir: str) -> int:
    import PIL.Image
    import torch
    from safetensors.torch import save_file

    from trainer import checkpoint
    from trainer.config import make_config
    from trainer.train import Trainer

    report = pathlib.Path(report_dir)
    counts = {"checkpoint_saves": 0, "images_saved": 0, "log_rows_opened": 0}
    indices: list[int] = []

    real_save = checkpoint.save

    def counting_save(*a, **kw):
        counts["checkpoint_saves"] += 1
        return real_save(*a, **kw)

    checkpoint.save = counting_save
    real_image_save = PIL.Image.Image.save

    def counting_image_save(self, fp, *a, **kw):
        counts["images_saved"] += 1
        return real_image_save(self, fp, *a, **kw)

    PIL.Image.Image.save = counting_image_save
    real_open = pathlib.Path.open

    def counting_open(self, mode="r", *a, **kw):
        if self.name == "losses.jsonl" and "a" in mode:
            counts["log_rows_opened"] += 1
        return real_open(self, mode, *a, **kw)

    pathlib.Path.open = counting_open

    kill_at = int(os.environ.get("KILL_AT_STEP", "0"))
    state: dict = {}

    def dump():
        tr = state["trainer"]
        rank = tr.acc.process_index
        weights = {f"{n}.{k}": v.detach().cpu().contiguous()
                   for n, m in tr.wrapped.items() for k, v in tr.acc.unwrap_model(m).state_dict().items()}
        save_file(weights, str(report / f"weights-rank{rank}.safetensors"))
        (report / f"rank{rank}.json").write_text(json.dumps({
            "rank": rank, "world": tr.acc.num_processes, "backend": state["backend"], "indices": indices,
            "history": tr.history, "start_step": tr.start_step, **counts}))

    def on_step(step, rec):
        if step == kill_at:
            dump()
            os._exit(3)  # no cleanup, no checkpoint of this step: a dead node

    cfg = make_config(**json.loads(config_json))
    tr = state["trainer"] = Trainer(cfg, on_step=on_step).setup()
    state["backend"] = str(torch.distributed.get_backend())  # end_training() closes the process group
    real_compute = tr.compute_losses

    def recording_compute(batch, rng, train=True, timesteps=None):
        if train:
            indices.extend(int(i) for i in batch["index"])
        if not os.environ.get("NO_GRAD_SYNC"):
            return real_compute(batch, rng, train, timesteps)
        with contextlib.ExitStack() as stack:  # the forward decides whether DDP reduces in backward
            for m in tr.wrapped.values():
                stack.enter_context(tr.acc.no_sync(m))
            return real_compute(batch, rng, train, timesteps)

    tr.compute_losses = recording_compute
    if tr.start_step == 0:
        capture_first_step_gradients(tr, report / f"grads-rank{tr.acc.process_index}.safetensors")
    tr.train()
    dump()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
