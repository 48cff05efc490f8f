#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras, saying what it does.
# torch is installed first and pinned through a constraint for every later step: a bare "torch"
# requirement (or torchvision, which pins its own torch) would otherwise pull a multi-GB CUDA build
# on a CPU machine. Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.6.0").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
LOG=$(mktemp)
constraint=$(mktemp)
PIP_PID=
trap '[ -n "$PIP_PID" ] && kill "$PIP_PID" 2>/dev/null; rm -f "$LOG" "$constraint"' EXIT

say() { echo "setup_env: $*"; }

# pip's own output goes to $LOG (shown only when it fails); meanwhile a line every 15 s says how far
# it got, so a first install (minutes) is never silent.
pip_install() {
  local start=$SECONDS next=15
  "$PY" -m pip install --progress-bar off "$@" >"$LOG" 2>&1 &
  PIP_PID=$!
  while kill -0 "$PIP_PID" 2>/dev/null; do
    sleep 1
    if (( SECONDS - start >= next )); then
      next=$((next + 15))
      if grep -q '^Installing collected packages' "$LOG"; then
        say "  ... $((SECONDS - start)) s: installing $(grep '^Installing collected packages' "$LOG" | tr ',' '\n' | wc -l) packages"
      else
        say "  ... $((SECONDS - start)) s: $(grep -c '^Collecting' "$LOG" || true) packages resolved"
      fi
    fi
  done
  if ! wait "$PIP_PID"; then
    PIP_PID=
    grep -v "is ignored: it is neither" "$LOG" >&2
    say "pip install $* failed" >&2
    exit 1
  fi
  PIP_PID=
  say "  done in $((SECONDS - start)) s"
}

if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
say "upgrading pip"
pip_install --upgrade pip
say "installing $TORCH_SPEC (the CPU build unless TORCH_SPEC names another)"
pip_install "$TORCH_SPEC"
# The installed version, read from its metadata: importing torch before NumPy is installed warns.
"$PY" -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" >"$constraint"
say "installing the project and its test extras (about 100 packages on a first run; torch stays $(cat "$constraint"))"
pip_install -c "$constraint" -e ".[test]"
"$PY" -c "import torch, gie_core; print('setup_env: environment ready: torch', torch.__version__, '| gie_core', gie_core.__version__)" 2>/dev/null
