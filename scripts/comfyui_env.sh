# Prepares a real ComfyUI for tests/test_comfyui.py and exports COMFYUI_PATH and COMFYUI_PYTHON.
# Sourced by scripts/test.sh (hence CI); by hand:
#     source scripts/comfyui_env.sh && .venv/bin/python -m pytest -m comfyui
#
# - ComfyUI's source: $COMFYUI_SOURCE, default ../shared/comfyui-0.8.0 (read-only there). It is
#   copied to a temporary folder (ComfyUI writes into its own tree), removed when the shell exits,
#   and this repository is linked into its custom_nodes/.
# - ComfyUI's Python: the venv $COMFYUI_VENV (default .venv-comfyui), kept between runs and rebuilt
#   when this recipe or a requirements file changes. ComfyUI 0.8 imports torchvision at start, and
#   no torchvision matches the project's CPU torch build, so this venv has its own torch:
#   torch 2.14.1 + torchvision 0.29.1 (pip takes both, with their NVIDIA libraries, from this
#   machine's local wheel index; 5.5 GB but about 2 minutes), then ComfyUI's requirements.txt
#   without torch/torchvision/torchaudio, then this pack's requirements.txt. docs/comfyui.md has
#   the measured cost of this and of the alternatives. The project's .venv is never touched.
# - In CI (CI=true) Chromium is installed from Debian if missing, so the real-frontend test runs.
# - A user's own ComfyUI: set COMFYUI_PATH (and COMFYUI_PYTHON) before; nothing is prepared then.
#   INSTRUCTGIE_COMFYUI=0 prepares nothing (the ComfyUI tests are then skipped).
# Whatever was prepared here must then run: INSTRUCTGIE_REQUIRE_COMFYUI=1 turns the ComfyUI tests'
# skips into failures. In CI a failure to prepare fails the run; elsewhere it says why and goes on.

_comfyui_env_main() {
  local repo source venv py stamp want log t0 reqs
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [ -n "${COMFYUI_PATH:-}" ]; then
    echo "comfyui_env: using COMFYUI_PATH=$COMFYUI_PATH as it is"
    return 0
  fi
  if [ "${INSTRUCTGIE_COMFYUI:-1}" = 0 ]; then
    echo "comfyui_env: INSTRUCTGIE_COMFYUI=0: ComfyUI not prepared; its tests will be skipped"
    return 0
  fi
  source=${COMFYUI_SOURCE:-$repo/../shared/comfyui-0.8.0}
  if [ ! -f "$source/main.py" ]; then
    echo "comfyui_env: no ComfyUI source at $source (set COMFYUI_SOURCE to a ComfyUI 0.8 checkout)" >&2
    return 1
  fi
  t0=$SECONDS
  venv=${COMFYUI_VENV:-$repo/.venv-comfyui}
  py=$venv/bin/python
  reqs=$(mktemp)
  log=$(mktemp)
  # ComfyUI's own requirements without the torch trio (torchaudio: no build matches; only its audio
  # nodes need it), then this pack's.
  grep -Ev '^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*([<>=!~].*)?$' "$source/requirements.txt" >"$reqs"
  # ComfyUI 0.8 imports requests at start (app/frontend_management.py) without listing it; it used to
  # arrive through transformers 4 or diffusers, neither of which brings it now.
  echo "requests" >>"$reqs"
  local recipe="torch==2.14.1 torchvision==0.29.1"
  want=$( { echo "$recipe"; python3 --version; cat "$reqs" "$repo/requirements.txt"; } | sha256sum | cut -c1-16)
  stamp=$venv/.instructgie-recipe
  if [ ! -x "$py" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "comfyui_env: building ComfyUI's Python in $venv ($recipe + ComfyUI's and the pack's requirements)"
    rm -rf "$venv"
    python3 -m venv "$venv" || return 1
    # shellcheck disable=SC2086
    if ! "$py" -m pip install -q $recipe >"$log" 2>&1 ||
       ! "$py" -m pip install -q -r "$reqs" -r "$repo/requirements.txt" >>"$log" 2>&1; then
      grep -v "is ignored: it is neither" "$log" >&2
      echo "comfyui_env: pip failed building $venv" >&2
      rm -f "$reqs" "$log"
      return 1
    fi
    echo "$want" >"$stamp"
  fi
  rm -f "$reqs"
  local versions
  if ! versions=$("$py" -c "import aiohttp, torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" 2>"$log"); then
    tail -3 "$log" >&2
    echo "comfyui_env: $py cannot import torch/torchvision/aiohttp" >&2
    rm -f "$log"
    return 1
  fi
  if [ "${CI:-}" = true ] && ! command -v chromium >/dev/null 2>&1; then
    echo "comfyui_env: installing Debian's chromium for the real-frontend test"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
      tail -20 "$log" >&2
      echo "comfyui_env: apt-get install chromium failed" >&2
      rm -f "$log"
      return 1
    fi
  fi
  rm -f "$log"
  COMFYUI_PATH=$(mktemp -d "${TMPDIR:-/tmp}/instructgie-comfyui.XXXXXX") || return 1
  # shellcheck disable=SC2064
  trap "rm -rf '$COMFYUI_PATH'" EXIT
  cp -r "$source/." "$COMFYUI_PATH/" && chmod -R u+w "$COMFYUI_PATH" && mkdir -p "$COMFYUI_PATH/custom_nodes" &&
    ln -s "$repo" "$COMFYUI_PATH/custom_nodes/ComfyUI-InstructGIE" || return 1
  export COMFYUI_PATH COMFYUI_PYTHON=$py INSTRUCTGIE_REQUIRE_COMFYUI=1
  echo "comfyui_env: ComfyUI $(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$COMFYUI_PATH/comfyui_version.py") at" \
       "$COMFYUI_PATH with $py ($versions), ready in $((SECONDS - t0)) s"
}

if ! _comfyui_env_main; then
  if [ "${CI:-}" = true ]; then
    echo "comfyui_env: FAILED to prepare ComfyUI; in CI its tests must run" >&2
    exit 1
  fi
  echo "comfyui_env: ComfyUI not prepared; tests/test_comfyui.py will be skipped" >&2
fi
unset -f _comfyui_env_main
