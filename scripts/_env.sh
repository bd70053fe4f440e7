#!/usr/bin/env bash
# Shared by demo.sh and test.sh: create ./.venv (or reuse it) and install the project into it.
# torch==2.13.0 goes in first: it is a local CPU wheel here, and a bare `torch` would pull a multi-GB CUDA build.
# Usage: source scripts/_env.sh [EXTRAS]    e.g.  source scripts/_env.sh test
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FLN_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0 (CPU)"
  python -m pip install -q "torch==2.13.0" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
fi
SPEC="$ROOT"
[ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
echo "[setup] installing fusionlungnet-monai${EXTRAS:+[$EXTRAS]} into $VENV"
# (pipefail: a failing pip fails the script; the filter only drops pip's notes about missing local index folders)
python -m pip install -q -e "$SPEC" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
python -c "import fusionlungnet_monai, monai, torch; print('[setup] fusionlungnet_monai', fusionlungnet_monai.__version__, '| monai', monai.__version__, '| torch', torch.__version__)"
