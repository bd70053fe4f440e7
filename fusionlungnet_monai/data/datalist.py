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

__all__ = ["pair_images_and_masks", "split_by_patient", "make_datalist", "load_datalist"]

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


#: a slice file's patient id: the name before ``_s<number>`` (``phantom003_s012.png`` -> ``phantom003``)
PATIENT_PATTERN = r"(.+?)_s\d+"


def _patient(path: str, pattern: str = PATIENT_PATTERN) -> str:
    m = re.match(pattern, Path(path).name)
    return m.group(1) if m else file_stem(Path(path))


def check_fraction(value: float, name: str = "fraction") -> float:
    """``value`` if it is a share of patients in [0, 1).

    Raises:
        ValueError: otherwise, naming ``name``.
    """
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be at least 0 and below 1, got {value}")
    return value


def split_by_patient(items: Sequence[dict], val_fraction: float = 0.2, test_fraction: float = 0.0,
                     patient_pattern: str = PATIENT_PATTERN) -> dict[str, list[dict]]:
    """Deterministic split: every patient (file name prefix by ``patient_pattern``) lands in one subset,
    chosen by a hash of the patient id, so adding data never moves a patient. Validation gets at least one
    patient when there are two or more.

    Raises:
        ValueError: when a fraction is outside [0, 1) or both together reach 1 (nothing left to train on).
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        check_fraction(f, name)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be below 1 (the rest trains), got "
                         f"{val_fraction} + {test_fraction}")
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

    Raises:
        InputError: missing or empty ``images``/``masks`` folders, an image without its mask, no patient left for
            training, or ``output`` existing without ``overwrite``.
        ValueError: fractions out of range (see :func:`split_by_patient`).
    """
    root = Path(root)
    items = pair_images_and_masks(root / "images", root / "masks")
    if relative:
        items = [{k: os.path.relpath(v, root) for k, v in it.items()} for it in items]
    datalist = split_by_patient(items, val_fraction, test_fraction)
    if not datalist["training"]:
        n = len({_patient(it["image"]) for it in items})
        raise InputError(root, f"{n} patient(s) and fractions validation {val_fraction}, test {test_fraction} leave "
                               "none to train on; add cases or lower the fractions")
    if output is not None:
        output = Path(output)
        if output.exists() and not overwrite:
            raise InputError(output, "already exists; refusing to overwrite")
        output.write_text(json.dumps(datalist, indent=1))
    return datalist


def load_datalist(path: str | os.PathLike, key: str = "training", base_dir: str | os.PathLike | None = None) -> list[dict]:
    """``monai.data.load_decathlon_datalist`` with the project's checks: a missing or unreadable datalist, a
    missing ``key`` section, an empty section or a listed file that does not exist is an :class:`InputError`
    naming the file (instead of a ``FileNotFoundError``/``KeyError`` from inside MONAI, or a failure at the
    first epoch).

    Args:
        path: the datalist JSON (``make_datalist`` / ``scripts/make_datalist.py`` writes one).
        key: the section, e.g. ``"training"``, ``"validation"``.
        base_dir: folder that relative paths start from (default: the datalist's folder).

    Returns:
        the items, with absolute paths.

    Raises:
        InputError: for any of the problems above.
    """
    from monai.data import load_decathlon_datalist

    path = Path(path)
    if not path.is_file():
        hint = "make one with scripts/make_datalist.py (images/ + masks/ folders)"
        raise InputError(path, f"no datalist here; {hint}" if path.parent.is_dir() else "no such folder")
    try:
        sections = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not a readable JSON datalist ({e})") from None
    if not isinstance(sections, dict) or key not in sections:
        raise InputError(path, f"has no '{key}' section")
    if not sections[key]:
        raise InputError(path, f"the '{key}' section is empty")
    items = load_decathlon_datalist(str(path), True, key, None if base_dir is None else str(base_dir))
    for item in items:
        for name in ("image", "label"):
            if name in item and not os.path.exists(item[name]):
                raise InputError(item[name], f"listed in {path.name} ('{key}') but missing")
    return items
