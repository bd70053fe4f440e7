"""Datalists in MONAI's decathlon JSON form from ``images/`` + ``masks/`` folders of 2D slices."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Sequence

from fusionlungnet_monai.data.checks import IMAGE_SUFFIXES, file_stem
from fusionlungnet_monai.data.errors import InputError

__all__ = ["pair_images_and_masks", "split_by_patient", "make_datalist"]

def pair_images_and_masks(images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> list[dict]:
    """Match images and masks by file stem (``a.dcm`` <-> ``a.png``).

    Raises:
        InputError: for a missing/empty folder or an image without a mask.
    """
    out = []
    idir, mdir = Path(images_dir), Path(masks_dir)
    for d in (idir, mdir):
        if not d.is_dir():
            raise InputError(d, "no such folder")
    masks = {file_stem(p): p for p in sorted(mdir.iterdir()) if p.name.lower().endswith(IMAGE_SUFFIXES)}
    images = [p for p in sorted(idir.iterdir()) if p.name.lower().endswith(IMAGE_SUFFIXES)]
    if not images:
        raise InputError(idir, f"empty folder: no images ({', '.join(IMAGE_SUFFIXES)})")
    for img in images:
        m = masks.get(file_stem(img))
        if m is None:
            raise InputError(img, f"no mask with the same name in {mdir}")
        out.append({"image": str(img), "label": str(m)})
    return out


def _patient(path: str, pattern: str) -> str:
    m = re.match(pattern, Path(path).name)
    return m.group(1) if m else file_stem(Path(path))


def split_by_patient(items: Sequence[dict], val_fraction: float = 0.2, test_fraction: float = 0.0,
                     patient_pattern: str = r"(.+?)_s\d+") -> dict[str, list[dict]]:
    """Deterministic split: every patient (file name prefix by ``patient_pattern``) lands in one subset,
    chosen by a hash of the patient id, so adding data never moves a patient. Validation gets at least one
    patient when there are two or more."""
    patients = sorted({_patient(it["image"], patient_pattern) for it in items},
                      key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    n = len(patients)
    n_test = int(round(n * test_fraction))
    n_val = max(int(round(n * val_fraction)), 1 if n >= 2 and val_fraction > 0 else 0)
    test, val = set(patients[:n_test]), set(patients[n_test : n_test + n_val])
    out: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    for it in items:
        p = _patient(it["image"], patient_pattern)
        out["test" if p in test else "validation" if p in val else "training"].append(dict(it))
    return out


def make_datalist(root: str | os.PathLike, output: str | os.PathLike | None = None, val_fraction: float = 0.2,
                  test_fraction: float = 0.0, relative: bool = True, overwrite: bool = False) -> dict:
    """Build a decathlon-style datalist from ``root/images`` + ``root/masks`` and optionally write it.

    Paths are stored relative to ``root`` when ``relative`` (load with
    ``monai.data.load_decathlon_datalist(path, True, "training", base_dir=root)``).
    """
    root = Path(root)
    items = pair_images_and_masks(root / "images", root / "masks")
    if relative:
        items = [{k: os.path.relpath(v, root) for k, v in it.items()} for it in items]
    datalist = split_by_patient(items, val_fraction, test_fraction)
    if output is not None:
        output = Path(output)
        if output.exists() and not overwrite:
            raise InputError(output, "already exists; refusing to overwrite")
        output.write_text(json.dumps(datalist, indent=1))
    return datalist
