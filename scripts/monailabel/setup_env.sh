#!/usr/bin/env bash
# Create (or reuse) the separate MONAI Label virtualenv: ./.venv-monailabel at the repository root.
# MONAI Label's pins (numpy<2 through pydicom-seg, pydicom<3, torchvision) clash with the project's environment,
# so it lives beside it. torch==2.13.0 (local CPU wheel) goes in first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${FLN_MONAILABEL_VENV:-$ROOT/.venv-monailabel}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import monailabel" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0"
  "$PY" -m pip install -q -r "$ROOT/scripts/monailabel/requirements.txt"
  "$PY" -m pip install -q --no-deps "monailabel==0.8.5"
fi
# our package, without its dependencies (they are satisfied above, with MONAI Label's older pydicom/numpy)
"$PY" -m pip install -q --no-deps "$ROOT"
"$PY" -c "import monailabel, monai, torch, fusionlungnet_monai; print('[monailabel-env]', monailabel.__version__, 'monai', monai.__version__, 'torch', torch.__version__)"
