"""Build the release training set: domain-randomised phantoms (v2) plus the licence-clean real CT in tests/data.

Every slice is written as a one-slice NIfTI (HU, int16) with its mask, in the LPS voxel order the model is trained
in (x to the patient's left, y to the back), and a MONAI decathlon datalist ``datalist.json``:

- training: phantom cases ``0..N-1`` (seeds), LIDC-IDRI-0002 (labels from :func:`classical_lung_mask`, checked in
  ``docs/classical_qc.png``), the TotalSegmentator small CT (its lung labels; the abdomen slices are negatives);
  real slices are repeated ``--real-repeat`` times so that they weigh more than their number;
- validation (never trained on): LIDC-IDRI-0003 (classical labels), elastix lung crop (expert mask, every 4th
  slice) and held-out phantom seeds.

Usage: python scripts/make_release_data.py OUT [--phantoms 48] [--slices-per-case 12] [--size 256]
       python scripts/make_release_data.py OUT --real-from PREVIOUS_OUT   # on a machine without itk (a GPU node):
           new phantoms, the real slices copied from an earlier run (reading the MetaImage/DICOM originals needs itk)
"""

from __future__ import annotations

import argparse
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def write_slices(out: Path, name: str, ct: np.ndarray, mask: np.ndarray, spacing, every: int = 1) -> list[dict]:
    import nibabel as nib

    items = []
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS voxel order, RAS affine (as NIfTI stores)
    for k in range(0, ct.shape[2], every):
        ip, mp = out / "images" / f"{name}_s{k:03d}.nii.gz", out / "labels" / f"{name}_s{k:03d}.nii.gz"
        nib.save(nib.Nifti1Image(np.rint(ct[:, :, k : k + 1]).astype(np.int16), aff), str(ip))
        nib.save(nib.Nifti1Image((mask[:, :, k : k + 1] > 0).astype(np.uint8), aff), str(mp))
        items.append({"image": str(ip.relative_to(out)), "label": str(mp.relative_to(out))})
    return items


def phantom_case(args) -> list[dict]:
    out, seed, n_slices, size = args
    from fusionlungnet_monai.phantom import make_chest_phantom

    ph = make_chest_phantom(seed, size=size)
    every = max(ph.image.shape[2] // n_slices, 1)
    return write_slices(out, f"phantom{seed:04d}", ph.image, ph.mask, ph.spacing, every)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--phantoms", type=int, default=48)
    ap.add_argument("--val-phantoms", type=int, default=4)
    ap.add_argument("--slices-per-case", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--real-repeat", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--real-from", default=None, help="reuse the real slices of an earlier OUT instead of tests/data")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(out, s, a.slices_per_case, a.size) for s in range(a.phantoms)]
    val_jobs = [(out, 10_000 + s, a.slices_per_case // 2, a.size) for s in range(a.val_phantoms)]
    with ProcessPoolExecutor(a.workers) as ex:
        train = [i for items in ex.map(phantom_case, jobs) for i in items]
        val = [i for items in ex.map(phantom_case, val_jobs) for i in items]
    if a.real_from:
        real_train, real_val = reuse_real(Path(a.real_from).resolve(), out)
    else:
        real_train, real_val = real_slices(out)
    datalist = {"training": train + real_train * a.real_repeat, "validation": val + real_val,
                "real_validation": real_val}
    (out / "datalist.json").write_text(json.dumps(datalist, indent=1))
    print(f"[data] {out}: training {len(train)} phantom + {len(real_train)} real slices (x{a.real_repeat}); "
          f"validation {len(val)} phantom + {len(real_val)} real slices")


def reuse_real(src: Path, out: Path) -> tuple[list[dict], list[dict]]:
    """The real slices of an earlier run's ``datalist.json`` (training ones once each), copied into ``out``."""
    dl = json.loads((src / "datalist.json").read_text())
    real = [i for i in dl["training"] if not Path(i["image"]).name.startswith("phantom")]
    real_train = list({i["image"]: i for i in real}.values())
    for item in real_train + dl["real_validation"]:
        for key in ("image", "label"):
            shutil.copyfile(src / item[key], out / item[key])
    return real_train, dl["real_validation"]


def real_slices(out: Path) -> tuple[list[dict], list[dict]]:
    """The licence-clean real CT in tests/data as slices: LIDC-IDRI-0002 and the TotalSegmentator CT for training,
    LIDC-IDRI-0003 and the elastix crop for validation."""
    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps

    real_train, real_val = [], []
    lidc = DATA / "lidc_idri_slabs"
    ct, sp = load_ct_lps(lidc / "LIDC-IDRI-0002")
    real_train += write_slices(out, "lidc0002", ct, classical_lung_mask(ct, sp), sp)
    ct, sp = load_ct_lps(lidc / "LIDC-IDRI-0003")
    real_val += write_slices(out, "lidc0003", ct, classical_lung_mask(ct, sp), sp)
    ts = DATA / "totalseg_example_ct" / "nifti_sm"
    ct, sp = load_ct_lps(ts / "example_ct_sm.nii.gz")
    real_train += write_slices(out, "totalseg_sm", ct, load_ct_lps(ts / "lung_mask.nii.gz")[0], sp)
    el = DATA / "elastix_lung_small"
    ct, sp = load_ct_lps(el / "3DCT_lung_baseline_small.mha")
    ref = load_ct_lps(el / "3DCT_lung_baseline_small_mask.mha")[0]
    real_val += write_slices(out, "elastix", ct, ref, sp, every=4)
    return real_train, real_val


if __name__ == "__main__":
    main()
