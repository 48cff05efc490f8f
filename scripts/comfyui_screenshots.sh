#!/usr/bin/env bash
# Screenshots of the shipped workflows in ComfyUI's real frontend (docs, Templates thumbnails); not CI.
#     bash scripts/comfyui_screenshots.sh [--steps N] [--only NAME]
# Needs Debian's Chromium (apt-get install -y chromium) and Node.js; playwright-core is installed
# from npm into a scratch folder outside the repo ($PLAYWRIGHT_DIR, default
# ~/.cache/instructgie/playwright), never a browser download. ComfyUI and its Python come from
# scripts/comfyui_env.sh. What it writes: scripts/comfyui_screenshots.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "comfyui_screenshots: needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)" >&2
  exit 1
fi
export PLAYWRIGHT_DIR=${PLAYWRIGHT_DIR:-$HOME/.cache/instructgie/playwright}
if [ ! -d "$PLAYWRIGHT_DIR/node_modules/playwright-core" ]; then
  mkdir -p "$PLAYWRIGHT_DIR"
  npm install --prefix "$PLAYWRIGHT_DIR" --silent --no-audit --no-fund playwright-core@1
fi
source scripts/comfyui_env.sh
if [ -z "${COMFYUI_PATH:-}" ]; then
  echo "comfyui_screenshots: no ComfyUI (see scripts/comfyui_env.sh)" >&2
  exit 1
fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/python scripts/comfyui_screenshots.py "$@"
