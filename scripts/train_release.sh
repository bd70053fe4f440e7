#!/usr/bin/env bash
# Release recipe of the shipped weights, from scratch and seeded, through `python -m monai.bundle run training`:
#   1. the training set: domain-randomised phantoms v2 + the licence-clean real CT in tests/data (make_release_data.py)
#   2. training with configs/train.json + configs/train_release.json
#   3. fp16 export with its sha256, and validation per real case (evaluate_real.py)
# It never replaces bundle/models/model.pt itself: compare docs/validation.md, then copy OUT/model_fp16.pt there.
#
# Profiles (FLN_PROFILE):
#   cpu160 (default)  160x160, 10 epochs: what produced the shipped weights on the 2-core CPU machine (~2 h)
#   gpu320            320x320, batch 32, bf16 autocast, 30 epochs: the paper's size on one GPU (not yet run; see
#                     docs/benchmarks.md for the GPU figures the project has)
# Usage: bash scripts/train_release.sh [OUT] [extra `monai.bundle run` overrides...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/scripts/_env.sh"
OUT="$(realpath -m "${1:-$ROOT/outputs/release}")"
shift || true
PROFILE="${FLN_PROFILE:-cpu160}"
case "$PROFILE" in
  cpu160) EXTRA=(--max_epochs 10 --num_workers 1); SIZE=160 ;;
  gpu320) EXTRA=(--spatial_size "[320,320]" --batch_size 32 --max_epochs 30 --amp true --amp_dtype bfloat16
                 --learning_rate 0.0005); SIZE=320 ;;
  *) echo "unknown FLN_PROFILE=$PROFILE (cpu160 or gpu320)" >&2; exit 2 ;;
esac
cd "$ROOT"
[ -f "$OUT/data/datalist.json" ] || python scripts/make_release_data.py "$OUT/data" --phantoms 96 --val-phantoms 6 --slices-per-case 6
cd "$ROOT/bundle"
start=$(date +%s)
python -m monai.bundle run training --config_file "['configs/train.json','configs/train_release.json']" \
  --dataset_dir "$OUT/data" --bundle_root "$OUT/run" --progress_bar false "${EXTRA[@]}" "$@"
echo "[release] training took $(( $(date +%s) - start )) s"
cd "$ROOT"
python scripts/export_weights.py "$OUT/run/models/model.pt" "$OUT/model_fp16.pt"
python scripts/evaluate_real.py --model "$OUT/model_fp16.pt" --input-size "$SIZE" --md "$OUT/validation.md" --json "$OUT/validation.json"
echo "[release] weights: $OUT/model_fp16.pt; validation: $OUT/validation.md"
