"""Suite-wide settings: offline, deterministic, Triton through its interpreter on CPU-only machines."""
import os

import torch

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Triton kernels run under the interpreter where there is no GPU (must be set before triton loads).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_report_header(config):
    return f"torch {torch.__version__}, cuda={torch.cuda.is_available()}, " \
           f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}, COMFYUI_PATH={os.environ.get('COMFYUI_PATH')}"
