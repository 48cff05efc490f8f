#!/usr/bin/env bash
# The project's test command: installs everything from scratch into .venv, then runs the suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k scan).
# --fast: the quick lane while working: no reinstall when .venv exists, and no tests marked slow
# (Triton's interpreter, fresh-process checks, full-size models, real ComfyUI).
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=0
if [ "${1:-}" = "--fast" ]; then FAST=1; shift; fi
if [ "$FAST" = 0 ] || [ ! -x .venv/bin/python ]; then bash scripts/setup_env.sh; fi
# Triton kernels are checked on the CPU through Triton's interpreter.
export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Lint gate: the rules are in pyproject.toml [tool.ruff].
.venv/bin/ruff check --quiet .
# Type gate: the files and settings are in pyproject.toml [tool.mypy].
.venv/bin/mypy
if [ "$FAST" = 1 ]; then
  exec .venv/bin/python -m pytest -q -m "not slow" "$@"
fi
# A real ComfyUI 0.8 (temporary copy + its own Python) for tests/test_comfyui.py; see the script.
# Not exec: the copy is removed when this shell exits.
source scripts/comfyui_env.sh
.venv/bin/python -m pytest -q "$@"
