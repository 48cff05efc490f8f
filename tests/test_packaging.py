"""What the repository promises about itself: the license, one version, and what a ComfyUI install
needs (requirements.txt without numba or diffusers, and the node path working without them)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import gie_core
from gie_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_file_is_the_apache_2_text_pyproject_names():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 170  # the full text, not a notice


def test_version_is_written_once(capsys):
    version = PYPROJECT["project"]["version"]
    assert gie_core.__version__ == version
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out.strip() == f"instructgie {version}"
    # no second copy of the version string in the code
    hits = [p for p in (ROOT / "gie_core").rglob("*.py") if f'"{version}"' in p.read_text()]
    assert not hits, hits
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{version}]" in changelog and "## [Unreleased]" in changelog


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.split(">")[0].split("<")[0].split("=")[0].strip().lower() for ln in lines
            if ln.strip() and not ln.lstrip().startswith("#")]


def test_comfyui_requirements_leave_out_torch_numba_and_diffusers():
    names = _requirements()
    assert "opencv-python-headless" in names and "einops" in names
    for opt_in in ("torch", "torchvision", "numba", "diffusers"):
        assert opt_in not in names, opt_in


NODE_PATH = r'''
import sys
sys.modules["diffusers"] = None   # import diffusers -> ImportError
sys.modules["numba"] = None
import torch
from gie_core import instruction, regions, visual_prompt
from gie_core.models import CachedHintEncoder, VMambaHintEncoder, io
from gie_core.models.configs import base_family
from gie_core.ops import cpu_implementation

config, standard, hint = io.split_vmamba_state_dict(sys.argv[1], placeholder_cond_embedding=True)
assert "controlnet_cond_embedding.conv_in.weight" in standard
encoder = VMambaHintEncoder(config["hint_encoder_config"])
encoder.load_state_dict(hint, strict=True)
block = CachedHintEncoder(encoder.eval())
c = encoder.config.total_in_channels
with torch.no_grad():
    out = block(torch.rand(1, c, 64, 64))
assert out.shape[1] == config["block_out_channels"][0] and torch.isfinite(out).all()
assert cpu_implementation("cpu") == "torch"
print(instruction.unify("could you please make it winter?"), base_family(config), "OK")
'''


def test_the_node_path_needs_neither_diffusers_nor_numba(tiny_stack):
    """Everything the ComfyUI nodes use from gie_core, in a process where diffusers and numba cannot be
    imported: the loader's file split (with the placeholder conv block ComfyUI's conversion expects),
    the VMamba hint encoder on the CPU scan, the instruction unifier."""
    proc = subprocess.run([sys.executable, "-c", NODE_PATH, str(tiny_stack / "controlnet.safetensors")],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
