#!/usr/bin/env bash
# The project's test command: installs everything from scratch into .venv, then runs the suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k scan).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# Triton kernels are checked on the CPU through Triton's interpreter.
export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Lint gate: the rules are in pyproject.toml [tool.ruff].
.venv/bin/ruff check --quiet .
# A real ComfyUI 0.8 (temporary copy + its own Python) for tests/test_comfyui.py; see the script.
source scripts/comfyui_env.sh
.venv/bin/python -m pytest -q "$@"
