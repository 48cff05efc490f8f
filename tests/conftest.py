"""Suite-wide settings: offline, deterministic, Triton through its interpreter on CPU-only machines,
one process setup for every test (threads, numba's pool), and the fixtures several files share."""
import json
import os
from pathlib import Path

import pytest
import torch

from gie_core.runtime import prepare_process

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Triton kernels run under the interpreter where there is no GPU (must be set before triton loads).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# What the programs do first, here once for the whole session: the tests' models are tiny (their
# largest per-step feature map is a few thousand elements), so gie_core.runtime picks one torch
# thread unless GIE_THREADS / OMP_NUM_THREADS say otherwise (two threads on a busy 2-CPU machine made
# the suite 4x slower); numba runs on its workqueue pool, compiled once per session (and cached on
# disk for the next).
TEST_WORK = 32 * 16 * 16
THREADS = prepare_process(work=TEST_WORK)
# Commands run in-process by the tests (instructgie-train, -eval) set up their process too: keep them
# on the session's count.
os.environ.setdefault("GIE_THREADS", str(THREADS.threads))


def pytest_report_header(config):
    return (f"torch {torch.__version__}, cuda={torch.cuda.is_available()}, torch threads {THREADS.describe()}, "
            f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}, COMFYUI_PATH={os.environ.get('COMFYUI_PATH')}")


def save_tiny_stack(folder: Path, train_config: dict | None = None) -> Path:
    """A random tiny SD + VMamba ControlNet saved the way instructgie-train exports a from-scratch stack:
    base/ (diffusers folder), controlnet.safetensors and, when given, train_config.json."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from gie_core.models import VMambaControlNetModel
    from gie_core.models.io import save_vmamba_controlnet
    from gie_core.tiny import make_tiny_sd_components

    c = make_tiny_sd_components(0)
    StableDiffusionPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
                            scheduler=DDIMScheduler.from_config(c["scheduler"].config), safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(
        str(folder / "base"), safe_serialization=True)
    torch.manual_seed(0)
    cn = VMambaControlNetModel.from_unet(c["unet"], hint_encoder_config={"dims": [16, 32], "depths": [0, 1]})
    with torch.no_grad():  # from_unet zero-initialises the outputs: make the ControlNet matter
        for p in cn.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    save_vmamba_controlnet(cn, folder / "controlnet.safetensors")
    if train_config is not None:
        (folder / "train_config.json").write_text(json.dumps(train_config))
    return folder


@pytest.fixture(scope="session")
def tiny_stack(tmp_path_factory) -> Path:
    """A tiny stack folder with the train_config.json of a 64-px-tile, crop-resize, LIU model."""
    return save_tiny_stack(tmp_path_factory.mktemp("stack"), {"tile": 64, "resize": "crop", "liu": True})
