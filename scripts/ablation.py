"""Ablation runner (paper Table 4: without CAA / MFF / SR / RRM; Table 5: input sizes) through the bundle.

Every variant is one ``python -m monai.bundle run training`` on the same data with the same seed, then the bundle's
``evaluating`` run on the validation split; the table goes to ``docs/ablation.md`` (or ``--md``), labelled with the
device and the sizes it was run at.

    python scripts/ablation.py --data DATASET_DIR            # a datalist.json with training/validation
    python scripts/ablation.py --phantoms 6 --size 64 --epochs 3   # small CPU run on v2 phantoms (labelled so)

Use a GPU when one is available (``--sizes 160 320 --epochs 30``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
VARIANTS = {
    "full model": {},
    "without CAA": {"ablation#use_caa": "false"},
    "without MFF (sum fusion)": {"ablation#use_mff": "false"},
    "without SR": {"ablation#use_sr": "false"},
    "without RRM": {"ablation#use_rrm": "false"},
    "baseline (none of the four)": {"ablation#use_caa": "false", "ablation#use_mff": "false",
                                    "ablation#use_sr": "false", "ablation#use_rrm": "false"},
}


def phantom_data(out: Path, cases: int) -> Path:
    """PNG slices of v2 phantoms (8 per case) with a datalist split by case."""
    from fusionlungnet_monai.data import make_datalist
    from fusionlungnet_monai.phantom import make_chest_phantom, write_png_slices

    for seed in range(cases):
        ph = make_chest_phantom(30_000 + seed, size=256)
        n = ph.image.shape[2]
        write_png_slices(ph.image, ph.mask, out, f"case{seed:03d}", slices=range(0, n, max(n // 8, 1)), overwrite=True)
    make_datalist(out, out / "datalist.json", val_fraction=0.25, overwrite=True)
    return out


def run(args: list[str], log: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", *args], cwd=BUNDLE, capture_output=True,
                       text=True)
    log.write_text(r.stdout + r.stderr)
    if r.returncode:
        raise SystemExit(f"bundle run failed, see {log}")
    return r.stdout + r.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset_dir with datalist.json (default: v2 phantoms)")
    ap.add_argument("--phantoms", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "ablation"))
    ap.add_argument("--md", default=str(ROOT / "docs" / "ablation.md"))
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    a = ap.parse_args()
    import torch

    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(a.data).resolve() if a.data else phantom_data(out / "data", a.phantoms)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    rows = []
    for size in a.sizes:
        for name in a.variants:
            t0 = time.time()
            root = out / f"{size}_{name.split(' ')[0]}_{len(rows)}"
            common = ["--dataset_dir", str(data), "--bundle_root", str(root), "--spatial_size", f"[{size},{size}]",
                      "--batch_size", str(a.batch_size), "--progress_bar", "false", "--seed", "0"]
            flags = [x for k, v in VARIANTS[name].items() for x in (f"--{k}", v)]
            run(["training", "--config_file", "configs/train.json", "--max_epochs", str(a.epochs),
                 "--precise_bn_batches", "4", *common, *flags], out / f"{root.name}_train.log")
            run(["evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']", *common, *flags],
                out / f"{root.name}_eval.log")
            summary = json.loads((root / "eval" / "summary.json").read_text())
            rows.append({"size": size, "variant": name, "iou": summary["val_iou"], "f1": summary["val_f1"],
                         "iou_global": summary["val_iou_global"], "minutes": round((time.time() - t0) / 60, 1)})
            print(json.dumps(rows[-1]), flush=True)
    label = (f"**{device}**, {a.epochs} epochs, sizes {a.sizes}, data: "
             f"{'v2 phantoms (' + str(a.phantoms) + ' cases, PNG slices)' if not a.data else a.data}")
    lines = ["# Ablations (paper Tables 4 and 5) through the bundle", "",
             f"Run: `python scripts/ablation.py {' '.join(sys.argv[1:])}` on {label}. Same data, seed 0, same "
             "schedule for every variant; metrics from the bundle's `evaluating` run on the validation split.",
             "" if device != "CPU" else "\n**CPU run at small size: it checks the plumbing only (at this size and length "
             "even the order of the variants means nothing); the paper's figures need 320² and a GPU.**", "",
             "| size | variant | mean IoU | mean F1 | global IoU | minutes |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['variant']} | {r['iou']:.4f} | {r['f1']:.4f} | {r['iou_global']:.4f} | "
                     f"{r['minutes']} |")
    Path(a.md).write_text("\n".join(lines) + "\n")
    (out / "ablation.json").write_text(json.dumps(rows, indent=1))
    print(f"table: {a.md}")


if __name__ == "__main__":
    main()
