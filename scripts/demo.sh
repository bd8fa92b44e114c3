#!/usr/bin/env bash
# Set up (if needed) and run the demo: stationary CoopNets on the bundled brick texture.
# Writes demo/observed.png, demo/synthesized.png and demo/synthesized-2x.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/coopnets demo --out demo "$@"
