"""Validate a model on whole volumes: the real CT in tests/data with a reference mask, and held-out v2 phantoms.

For every case it runs ``fusionlungnet predict``'s ``Predictor`` (the bundle's inference workflow with its 3D
post-processing) twice, with the HU boundary refinement (the default) and without it (the network's mask alone), and
the classical HU baseline, and reports IoU and Dice against the reference, per case:

- ``elastix_lung_small``: real chest CT crop (2.7 x 2.7 x 5 mm) with an expert-derived lung mask; held out;
- ``LIDC-IDRI-0003``: real chest CT slab; its reference is the classical segmentation checked by eye in
  ``docs/classical_qc.png`` (so it measures agreement with that baseline, not truth); held out;
- TotalSegmentator's ``example_ct_sm``: real CT, 3 mm isotropic, lung bases only (about 116 mL); its reference is
  TotalSegmentator's own lung-lobe labels (another model's output, not an expert's). It is in the release training
  set (``make_release_data.REAL_TRAINING``), so it shows how well the network fits thin basal slices, not how it
  generalises; its row says "seen in training" and the real mean leaves it out;
- phantoms v2 with seeds from 10000 (never trained on): exact masks;
- with ``--consolidation K``: the first K of those phantoms again with dependent consolidation (a dense band at the
  back of the lower lungs with air bronchograms, which is lung; ``make_chest_phantom(..., consolidation=True)``),
  the same case otherwise, so the pair of rows shows what dense lung at the border costs.

Which real case is held out is read from ``make_release_data.py`` (``REAL_TRAINING``), not written here.

With ``--slices`` it scores single slices instead (what a picture or one DICOM file gets): the network's mask of
each slice (every slice of a volume under 20 slices, else every 4th, with at least 200 lung pixels in the reference)
goes through the bundle's post-processing for a one-slice volume (``post#keep_lungs`` with its slice rule,
``keep_lungs_slice_fraction``, and the hole filling), against the two largest components; mean IoU per case.

Usage: python scripts/evaluate_real.py --model bundle/models/model.pt [--input-size 160] [--phantoms 4]
       [--consolidation 2] [--md OUT.md]
       python scripts/evaluate_real.py --slices [--phantoms 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "scripts") not in sys.path:  # imported from elsewhere (the tests), not run as a script
    sys.path.insert(0, str(ROOT / "scripts"))
from make_release_data import REAL_TRAINING, REAL_VALIDATION  # noqa: E402  the release split, one source


def real_cases(tmp: Path) -> list[tuple]:
    """(name, image, reference mask, kind) of the real cases, their paths from ``make_release_data.py``; kind "real"
    or "real-pseudo" (a reference that is another method's output), with "-trained" appended when the release recipe
    trains on the image (``REAL_TRAINING``)."""
    import nibabel as nib

    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import LoadCTImage

    el_image, el_ref, _ = REAL_VALIDATION["elastix"]
    cases = [("elastix_lung_small (real, expert mask)", el_image, el_ref, "real")]
    lidc = REAL_VALIDATION["lidc0003"][0]
    ct = LoadCTImage(image_only=True)(str(lidc))
    ref = classical_lung_mask(np.asarray(ct), [float(s) for s in ct.pixdim[:3]])
    ref_path = tmp / "lidc0003_classical.nii.gz"
    nib.save(nib.Nifti1Image(ref.astype(np.uint8), np.asarray(ct.affine)), str(ref_path))
    cases.append(("LIDC-IDRI-0003 (real, classical pseudo-label)", lidc, ref_path, "real-pseudo"))
    ts_image, ts_ref, _ = REAL_TRAINING["totalseg_sm"]
    cases.append(("TotalSegmentator example, lung bases (real, 3 mm, TotalSegmentator labels)", ts_image, ts_ref,
                  "real-pseudo"))
    trained = {Path(src).resolve() for src, _, _ in REAL_TRAINING.values()}
    return [(name + ", seen in training", image, ref, kind + "-trained") if Path(image).resolve() in trained
            else (name, image, ref, kind) for name, image, ref, kind in cases]


def scores(pred: np.ndarray, ref: np.ndarray) -> dict:
    p, r = pred > 0, ref > 0
    inter, union, total = int((p & r).sum()), int((p | r).sum()), int(p.sum() + r.sum())
    return {"iou": round(inter / union, 4) if union else 1.0, "dice": round(2 * inter / total, 4) if total else 1.0}


def slice_scores(pred, image_path, ref: np.ndarray) -> dict:
    """Mean per-slice IoU of one volume case scored slice by slice (see ``--slices``): the bundle's post-processing
    for single slices, and the two largest components for comparison."""
    import torch
    from monai.data import MetaTensor

    from fusionlungnet_monai.data import LoadCTImage
    from fusionlungnet_monai.transforms import FillMaskHoles, KeepLargestComponents
    from fusionlungnet_monai.workflow import infer_tensors

    image = LoadCTImage(image_only=True, dtype="compact")(str(image_path))
    raw = (infer_tensors(pred.workflow("volume"), [image])[0]["pred"].as_tensor() > 0).to(torch.uint8)[0]
    ref = ref.reshape(raw.shape)
    two, fill = KeepLargestComponents(2), FillMaskHoles()
    out = {"shipped": [], "two_largest": []}
    for z in range(0, raw.shape[2], 1 if raw.shape[2] < 20 else 4):
        r = ref[:, :, z]
        if r.sum() < 200:
            continue
        item = {"pred": MetaTensor(raw[None, :, :, z].clone(), affine=image.affine.clone()),
                "image_hu": image.as_tensor()[None, :, :, z]}  # a slice as Predictor hands it to the 3D steps
        for step in pred.volume_steps():  # remove_airways (a no-op on a slice), keep_lungs, fill_holes
            item = step(item)
        for key, m in (("shipped", item["pred"]), ("two_largest", fill(two(raw[None, :, :, z])))):
            m = np.asarray(m)[0] > 0
            out[key].append((m & r).sum() / (m | r).sum())
    return {k: round(float(np.mean(v)), 4) for k, v in out.items()} | {"slices": len(out["shipped"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "bundle" / "models" / "model.pt"))
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--phantoms", type=int, default=4)
    ap.add_argument("--consolidation", type=int, default=0,
                    help="also score the first K phantoms with dependent consolidation (lung at the border, dense)")
    ap.add_argument("--md", help="also write the markdown table here")
    ap.add_argument("--json", help="also write the per-case results here")
    ap.add_argument("--slices", action="store_true", help="score single slices (the slice rule of post#keep_lungs)")
    a = ap.parse_args()
    import nibabel as nib

    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import LoadCTImage
    from fusionlungnet_monai.phantom import make_chest_phantom, write_nifti
    from fusionlungnet_monai.predict import Predictor

    tmp = Path(tempfile.mkdtemp(prefix="fln_eval_"))
    load = LoadCTImage(image_only=True)
    cases = real_cases(tmp)
    for i, consolidation in [(i, None) for i in range(a.phantoms)] + [(i, True) for i in range(a.consolidation)]:
        ph = make_chest_phantom(10_000 + i, size=512, **({"consolidation": True} if consolidation else {}))
        tag = "c" if consolidation else ""
        img = write_nifti(ph.image, ph.affine_ras, tmp / f"ph{i}{tag}_image.nii.gz")
        lab = write_nifti(ph.mask, ph.affine_ras, tmp / f"ph{i}{tag}_label.nii.gz")
        name = f"phantom v2 seed {10_000 + i} ({ph.image.shape[2]} slices, {ph.spacing[2]:.2f} mm)"
        cases.append((name + (", dependent consolidation" if consolidation else ""), img, lab,
                      "phantom-consolidation" if consolidation else "phantom"))
    rows = [{"case": name, "kind": kind} for name, *_, kind in cases]
    if a.slices:
        with Predictor(model=a.model, input_size=a.input_size, progress=False) as pred:
            for row, (name, image, label, kind) in zip(rows, cases):
                row.update(slice_scores(pred, image, np.asarray(load(str(label))) > 0))
                print(json.dumps(row), flush=True)
        lines = ["| case | slices | shipped (slice rule) | two largest |", "|---|---|---|---|"]
        lines += [f"| {r['case']} | {r['slices']} | {r['shipped']:.4f} | {r['two_largest']:.4f} |" for r in rows]
        n = sum(r["slices"] for r in rows)
        lines.append(f"| all, weighted by slices | {n} | " + " | ".join(
            f"{sum(r[k] * r['slices'] for r in rows) / n:.4f}" for k in ("shipped", "two_largest")) + " |")
        _write("\n".join(lines) + "\n", rows, a)
        return
    for column, refine in (("shipped", True), ("network", False)):
        with Predictor(model=a.model, input_size=a.input_size, progress=False, refine=refine) as pred:
            for row, (name, image, label, kind) in zip(rows, cases):
                res = pred.predict(image, tmp / column / Path(str(image)).name.replace(".", "_"))
                if not res.ok:
                    row["error"] = res.error
                    continue
                ref = np.asarray(load(str(label))) > 0
                mask = np.asarray(nib.load(res.report["outputs"]["mask_nifti"]).dataobj).reshape(ref.shape)
                row[column] = scores(mask, ref)
                row[f"{column}_seconds"] = res.report["timings_s"]["total"]
                if "classical" not in row:
                    row["classical"] = scores(classical_lung_mask(np.asarray(load(str(image))),
                                                                  res.report["spacing_mm"]), ref)
                print(json.dumps(row), flush=True)
    columns = ("shipped", "network", "classical")
    lines = ["| case | shipped IoU | shipped Dice | network alone IoU | network alone Dice | classical IoU | "
             "classical Dice |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | error: {r['error'][:60]} | | | | | |")
        else:
            lines.append(f"| {r['case']} | " + " | ".join(f"{r[c][m]:.4f}" for c in columns for m in ("iou", "dice"))
                         + " |")
    for label, kinds in (("held-out real", ("real", "real-pseudo")), ("phantoms", ("phantom",)),
                         ("phantoms with consolidation", ("phantom-consolidation",))):
        sel = [r for r in rows if r["kind"] in kinds and "error" not in r]
        if len(sel) > 1:
            lines.append(f"| mean of {len(sel)} {label} | " + " | ".join(
                f"{np.mean([r[c][m] for r in sel]):.4f}" for c in columns for m in ("iou", "dice")) + " |")
    _write("\n".join(lines) + "\n", rows, a)


def _write(md: str, rows: list, a) -> None:
    """Print the markdown table, and write it and the per-case rows where ``--md`` and ``--json`` say."""
    print(md)
    if a.md:
        Path(a.md).write_text(md)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
