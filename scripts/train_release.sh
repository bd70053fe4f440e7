#!/usr/bin/env bash
# Release recipe of the shipped weights, from scratch and seeded, through `python -m monai.bundle run training`:
#   1. the training set: domain-randomised phantoms v2 + the licence-clean real CT in tests/data (make_release_data.py)
#   2. training with configs/train.json + configs/train_release.json
#   3. fp16 export with its sha256, and validation per real case (evaluate_real.py)
# It never replaces bundle/models/model.pt itself: compare docs/validation.md, then copy OUT/model_fp16.pt there.
#
# Profiles (FLN_PROFILE):
#   cpu160 (default)  160x160, batch 8, 10 epochs, 96 phantoms: the 0.2.x weights on the 2-core CPU machine (~2 h)
#   gpu160            160x160, batch 32, bf16 autocast, 192 phantoms, 18 epochs (stopped earlier at an epoch end if
#                     FLN_MAX_TIME seconds of training, default 840, would pass): the shipped 0.3.0 weights, on one
#                     H100 in 267 s of training, 7 min in all (bundle/docs/README.md)
#   gpu320            the same at 320x320, the paper's input size (not run yet)
# Environment: FLN_PHANTOMS (training phantom cases), FLN_WORKERS (data workers: training 1 on CPU, 12 on GPU; phantom generation 2), FLN_SKIP_SETUP=1 (use the current python,
#   e.g. a GPU node with wheels on PYTHONPATH), FLN_REAL_FROM=DIR (real slices from an earlier data folder, for
#   machines without itk), FLN_SKIP_EVAL=1 (no evaluate_real.py: it reads MetaImage through itk).
# Usage: bash scripts/train_release.sh [OUT] [extra `monai.bundle run` overrides...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${FLN_SKIP_SETUP:-}" ]; then
  # shellcheck disable=SC1091
  source "$ROOT/scripts/_env.sh"
fi
PY="${PYTHON:-python}"
OUT="$(realpath -m "${1:-$ROOT/outputs/release}")"
shift || true
PROFILE="${FLN_PROFILE:-cpu160}"
GPU=(--batch_size 32 --val_batch_size 32 --amp true --amp_dtype bfloat16 --learning_rate 0.0005 --max_epochs 18
     --checkpoint_interval 10 --max_time_s "${FLN_MAX_TIME:-840}" --num_workers "${FLN_WORKERS:-12}")
case "$PROFILE" in
  cpu160) EXTRA=(--max_epochs 10 --num_workers "${FLN_WORKERS:-1}"); SIZE=160; DATA=(--phantoms 96 --real-repeat 4) ;;
  gpu160) EXTRA=("${GPU[@]}"); SIZE=160; DATA=(--phantoms 192 --real-repeat 8) ;;
  gpu320) EXTRA=("${GPU[@]}"); SIZE=320; DATA=(--phantoms 192 --real-repeat 8) ;;
  *) echo "unknown FLN_PROFILE=$PROFILE (cpu160, gpu160 or gpu320)" >&2; exit 2 ;;
esac
cd "$ROOT"
if [ ! -f "$OUT/data/datalist.json" ]; then
  REAL=()
  [ -n "${FLN_REAL_FROM:-}" ] && REAL=(--real-from "$FLN_REAL_FROM")
  [ -n "${FLN_PHANTOMS:-}" ] && DATA[1]="$FLN_PHANTOMS"
  "$PY" scripts/make_release_data.py "$OUT/data" "${DATA[@]}" --val-phantoms 6 --slices-per-case 6 \
    --workers "${FLN_WORKERS:-2}" "${REAL[@]}"
fi
cd "$ROOT/bundle"
start=$(date +%s)
"$PY" -m monai.bundle run training --config_file "['configs/train.json','configs/train_release.json']" \
  --dataset_dir "$OUT/data" --bundle_root "$OUT/run" --progress_bar false --spatial_size "[$SIZE,$SIZE]" \
  "${EXTRA[@]}" "$@"
echo "[release] training took $(( $(date +%s) - start )) s"
cd "$ROOT"
SRC="$OUT/run/models/model.pt"  # the best validation epoch
if [ ! -f "$SRC" ]; then
  echo "[release] no validated model.pt (the time limit ended the first epoch): exporting checkpoint_final.pt" >&2
  SRC="$OUT/run/models/checkpoint_final.pt"
fi
"$PY" scripts/export_weights.py "$SRC" "$OUT/model_fp16.pt"
if [ -z "${FLN_SKIP_EVAL:-}" ]; then
  "$PY" scripts/evaluate_real.py --model "$OUT/model_fp16.pt" --input-size "$SIZE" --md "$OUT/validation.md" \
    --json "$OUT/validation.json"
fi
echo "[release] weights: $OUT/model_fp16.pt${FLN_SKIP_EVAL:+ (not validated here: run scripts/evaluate_real.py)}"
