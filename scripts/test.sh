#!/usr/bin/env bash
# The README's test command: install the project with its test extras into ./.venv, then run the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k network -x`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/scripts/_env.sh" test
cd "$ROOT"
python -m pytest "$@"
