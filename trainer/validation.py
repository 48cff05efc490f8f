"""Validation images during training: sample the target cells with ``gie_core.pipeline`` and write
one PNG sheet per validation, a row per sample: example before | example after | query | edit |
ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def prompt_from_batch(batch: dict, tile: int, k: int, resize: str = "crop"):
    """A ``VisualPrompt`` from a training batch (square cells, no padding)."""
    from gie_core.visual_prompt import GridLayout, QueryPlacement, VisualPrompt

    b = batch["grid"].shape[0]
    full = QueryPlacement((tile, tile), (0, 0, tile, tile), (0, 0, tile, tile), tile)
    layout = GridLayout(tile=tile, num_examples=k, resize=resize, placements=[full] * b)
    return VisualPrompt(grid=batch["grid"].permute(0, 2, 3, 1).float(), hint=batch["hint"].permute(0, 2, 3, 1).float(),
                        target_mask=batch["target_mask"].float(), layout=layout)


def make_pipeline(trainer):
    """An ``InstructGIEPipeline`` over the trainer's current (unwrapped) models."""
    from diffusers import DDIMScheduler

    from gie_core.pipeline import InstructGIEPipeline

    acc, sd = trainer.acc, trainer.sd
    unwrap = acc.unwrap_model
    return InstructGIEPipeline(
        vae=sd.vae, text_encoder=unwrap(trainer.wrapped.get("text_encoder", sd.text_encoder)),
        tokenizer=sd.tokenizer, unet=unwrap(trainer.wrapped.get("unet", sd.unet)),
        controlnet=unwrap(trainer.wrapped["controlnet"]),
        scheduler=DDIMScheduler.from_config(sd.noise_scheduler.config))


def sheet(prompt, edits: torch.Tensor) -> Image.Image:
    """Rows of [examples (before, after)... | query | edit | ground truth] as one RGB image."""
    lay = prompt.layout
    cells = [lay.cell(prompt.grid, n) for n in lay.cells if n.startswith("example")]
    row = torch.cat(cells + [lay.cell(prompt.grid, "query"), edits.to(prompt.grid.dtype),
                             lay.cell(prompt.grid, "target")], dim=2)  # side by side
    img = torch.cat(list(row), dim=0)  # samples stacked vertically
    return Image.fromarray((img.clamp(0, 1).numpy() * 255).round().astype(np.uint8))


@torch.no_grad()
def validation_images(trainer, batch: dict, step: int) -> Path:
    """Samples the validation batch and writes ``validation/step-XXXXXXXX.png``; returns its path."""
    cfg = trainer.cfg
    pipe = make_pipeline(trainer)
    pipe.set_progress_bar_config(disable=True)
    training = {n: m.training for n, m in trainer.wrapped.items()}
    for m in trainer.wrapped.values():
        m.eval()
    try:
        prompt = prompt_from_batch(batch, cfg.tile, cfg.k_examples, cfg.resize).to(trainer.device)
        edits = []
        for i, text in enumerate(batch["instruction"]):  # one instruction per call
            one = prompt_from_batch({k: v[i:i + 1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()},
                                    cfg.tile, cfg.k_examples, cfg.resize)
            out = pipe.edit_prompt(one.to(trainer.device), text, num_inference_steps=cfg.validation_inference_steps,
                                   guidance_scale=1.0, seed=cfg.seed + i, unify=False)
            edits.append(out.edits.float().cpu())
    finally:
        for n, m in trainer.wrapped.items():
            m.train(training[n])
    folder = Path(cfg.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.png"
    sheet(prompt.to("cpu"), torch.cat(edits)).save(path)
    return path
