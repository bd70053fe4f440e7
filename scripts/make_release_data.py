"""Build the release training set: domain-randomised phantoms (v2) plus the licence-clean real CT in tests/data.

Every slice is written as a one-slice NIfTI (HU, int16) with its mask, in the LPS voxel order the model is trained
in (x to the patient's left, y to the back), and a MONAI decathlon datalist ``datalist.json``:

- training: phantom cases ``0..N-1`` (seeds, drawn with ``varied_setup``: a table gap, an off-centre patient cut by
  the field of view, a coarse matrix, since 0.3.14; ``--same-setup`` without; ``--sliver-slices`` adds slices from
  each case's apices and thin basal rims), and ``REAL_TRAINING``: LIDC-IDRI-0002 (labels from :func:`classical_lung_mask`, checked in
  ``docs/classical_qc.png``), the TotalSegmentator small CT (its lung labels; the abdomen slices are negatives);
  real slices are repeated ``--real-repeat`` times so that they weigh more than their number;
- validation (never trained on): ``REAL_VALIDATION``, LIDC-IDRI-0003 (classical labels) and the elastix lung crop
  (expert mask, every 4th slice), and held-out phantom seeds.

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
_LIDC, _TS, _EL = DATA / "lidc_idri_slabs", DATA / "totalseg_example_ct" / "nifti_sm", DATA / "elastix_lung_small"
# the real CT of the release set: name -> (image, label or None for the classical segmentation, every n-th slice)
REAL_TRAINING = {
    "lidc0002": (_LIDC / "LIDC-IDRI-0002", None, 1),
    "totalseg_sm": (_TS / "example_ct_sm.nii.gz", _TS / "lung_mask.nii.gz", 1),
}
REAL_VALIDATION = {
    "lidc0003": (_LIDC / "LIDC-IDRI-0003", None, 1),
    "elastix": (_EL / "3DCT_lung_baseline_small.mha", _EL / "3DCT_lung_baseline_small_mask.mha", 4),
}


def write_slices(out: Path, name: str, ct: np.ndarray, mask: np.ndarray, spacing, every=1) -> list[dict]:
    """One-slice NIfTI pairs for every ``every``-th slice (or for the slice indices ``every`` lists)."""
    import nibabel as nib

    items = []
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS voxel order, RAS affine (as NIfTI stores)
    for k in (range(0, ct.shape[2], every) if isinstance(every, int) else every):
        ip, mp = out / "images" / f"{name}_s{k:03d}.nii.gz", out / "labels" / f"{name}_s{k:03d}.nii.gz"
        nib.save(nib.Nifti1Image(np.rint(ct[:, :, k : k + 1]).astype(np.int16), aff), str(ip))
        nib.save(nib.Nifti1Image((mask[:, :, k : k + 1] > 0).astype(np.uint8), aff), str(mp))
        items.append({"image": str(ip.relative_to(out)), "label": str(mp.relative_to(out))})
    return items


def sliver_slices(mask: np.ndarray, count: int, fraction: float = 0.4) -> list[int]:
    """``count`` slice indices spread evenly over the slices whose lung area is above 0 and under ``fraction`` of the
    case's largest (the apices and the thin basal rims above the diaphragm domes: the hardest slices to segment)."""
    area = (mask > 0).sum(axis=(0, 1))
    thin = np.flatnonzero((area > 0) & (area < fraction * area.max()))
    if count <= 0 or thin.size == 0:
        return []
    return sorted({int(thin[i]) for i in np.linspace(0, thin.size - 1, min(count, thin.size)).round().astype(int)})


def phantom_case(args) -> list[dict]:
    out, seed, n_slices, size, n_sliver, varied = args
    from fusionlungnet_monai.phantom import make_chest_phantom

    ph = make_chest_phantom(seed, size=size, varied_setup=varied)
    every = max(ph.image.shape[2] // n_slices, 1)
    picked = set(range(0, ph.image.shape[2], every)) | set(sliver_slices(ph.mask, n_sliver))
    return write_slices(out, f"phantom{seed:04d}", ph.image, ph.mask, ph.spacing, sorted(picked))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--phantoms", type=int, default=48)
    ap.add_argument("--val-phantoms", type=int, default=4)
    ap.add_argument("--slices-per-case", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--sliver-slices", type=int, default=0,
                    help="extra slices per training phantom from its apices and thin basal rims (sliver_slices)")
    ap.add_argument("--real-repeat", type=int, default=4)
    ap.add_argument("--same-setup", action="store_true",
                    help="training phantoms without varied_setup (table gap, off-centre patient, coarse matrix), as "
                         "up to 0.3.13")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--real-from", default=None, help="reuse the real slices of an earlier OUT instead of tests/data")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(out, s, a.slices_per_case, a.size, a.sliver_slices, not a.same_setup) for s in range(a.phantoms)]
    val_jobs = [(out, 10_000 + s, a.slices_per_case // 2, a.size, 0, False) for s in range(a.val_phantoms)]
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
    """The licence-clean real CT in tests/data as slices: ``REAL_TRAINING`` for training, ``REAL_VALIDATION`` for
    validation."""
    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps

    split = []
    for sources in (REAL_TRAINING, REAL_VALIDATION):
        items = []
        for name, (image, label, every) in sources.items():
            ct, sp = load_ct_lps(image)
            mask = classical_lung_mask(ct, sp) if label is None else load_ct_lps(label)[0]
            items += write_slices(out, name, ct, mask, sp, every)
        split.append(items)
    return split[0], split[1]


if __name__ == "__main__":
    main()
