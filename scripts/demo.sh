#!/usr/bin/env bash
# The README's main job on embedded sample data: install into ./.venv, make phantoms, run the best
# end-to-end path that exists, and print where the outputs are.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/scripts/_env.sh"
cd "$ROOT"
OUT="${FLN_DEMO_OUT:-$ROOT/outputs/demo}"
python scripts/demo.py --output "$OUT" "$@"
