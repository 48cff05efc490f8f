#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras.
# torch is installed first and pinned through a constraint for every later step: a bare "torch"
# requirement (or torchvision, which pins its own torch) would otherwise pull a multi-GB CUDA build
# on a CPU machine. Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.6.0").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
LOG=$(mktemp)
constraint=$(mktemp)
trap 'rm -f "$LOG" "$constraint"' EXIT

pip_quiet() {  # pip's output only when it fails
  if ! "$PY" -m pip install -q "$@" >"$LOG" 2>&1; then
    grep -v "is ignored: it is neither" "$LOG" >&2
    echo "setup_env: pip install $* failed" >&2
    exit 1
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_quiet --upgrade pip
pip_quiet "$TORCH_SPEC"
"$PY" -c "import torch; print('torch==' + torch.__version__)" >"$constraint"
pip_quiet -c "$constraint" -e ".[test]"
"$PY" -c "import torch, gie_core; print('environment ready: torch', torch.__version__)" 2>/dev/null
