"""Suite-wide settings: offline, deterministic, Triton through its interpreter on CPU-only machines."""
import os

import pytest
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


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: on a shared CPU, torch's intra-op thread hand-offs cost more than
    the maths (measured 20x slower with 2 threads under load). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
