"""How the shipped model holds up across scanners and reconstructions, on the held-out real CT.

Each held-out real case (``make_release_data.REAL_VALIDATION``: the elastix crop with its expert mask, LIDC-IDRI-0003
with its classical pseudo-label) is re-made as another acquisition would have given it, its reference mask carried
along on the same grid, and segmented by ``fusionlungnet predict``'s ``Predictor`` (the shipped pipeline) and by the
classical HU baseline. IoU against the reference, per case and variant:

- ``native``: the case as stored;
- ``fov_small``: a smaller reconstruction field of view (pixels x 0.6: the lungs fill the picture, cut at its edge);
- ``fov_large``: a larger field of view (pixels x 1.5, air around the body);
- ``low_dose``: Gaussian noise, sigma 40 HU (about a quarter of the dose of a routine chest CT);
- ``soft_kernel`` / ``sharp_kernel``: in-plane Gaussian blur (sigma 1 pixel) / unsharp masking (x + (x - blur));
- ``thick``: slices averaged in pairs (twice the slice thickness);
- ``fov_circle``: a scanner's reconstruction circle (inscribed in the square matrix), -2048 HU outside (the padding
  value many scanners store);
- ``emphysema``: the lung (the reference mask) pulled halfway to -1000 HU, vessels included (lung median about
  -930 to -960 HU: diffuse severe emphysema, or a scanner whose air reads low);
- ``ground_glass``: +300 HU in the back (dependent) fifth of the lung's extent, every slice (lung median there about
  -550 to -600 HU: ground glass, which is lung);
- ``consolidation``: the same back fifth made solid: lung voxels there to about -40 HU (15 % of their contrast kept, so
  vessels stay a little brighter), air below -900 HU left open as air bronchograms (dependent consolidation, lung);
- ``flipped``: stored right-to-left and head-first reversed (the reader reorients; the mask must come back).

The references: resampled linearly and thresholded at 0.5 (fov, thick), unchanged otherwise. Transforms act on the
``(x, y, z)`` LPS arrays that ``load_ct_lps`` gives, written as NIfTI with their spacing.

Usage: python scripts/robustness.py [--model bundle/models/model.pt] [--variants native,low_dose] [--md OUT.md]
       python scripts/robustness.py --smoke   # one tiny phantom, every variant: the test suite runs this
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))
from evaluate_real import scores  # noqa: E402
from make_release_data import REAL_VALIDATION  # noqa: E402

AIR = -1024.0


def _resample_xy(vol: np.ndarray, scale: float, fill: float) -> np.ndarray:
    """The same field, sampled ``scale`` times coarser in-plane around the centre, on the same matrix size."""
    x = torch.as_tensor(vol, dtype=torch.float32).permute(2, 0, 1)[:, None] - fill  # (z, 1, x, y), fill -> 0
    theta = torch.zeros(x.shape[0], 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return out[:, 0].permute(1, 2, 0).numpy()


def _blur_xy(vol: np.ndarray, sigma: float) -> np.ndarray:
    """In-plane Gaussian blur; the edges continue the image (no dark or bright frame)."""
    from scipy import ndimage

    return ndimage.gaussian_filter(vol.astype(np.float32), (sigma, sigma, 0.0), mode="nearest")


def variant(name: str, ct: np.ndarray, ref: np.ndarray, spacing: list[float], seed: int = 0):
    """``(ct, ref, spacing)`` of ``name`` (see the module docstring)."""
    ct, ref, sp = ct.astype(np.float32), ref.astype(np.float32), list(spacing)
    if name in ("fov_small", "fov_large"):
        s = 0.6 if name == "fov_small" else 1.5
        ct, ref = _resample_xy(ct, s, AIR), _resample_xy(ref, s, 0.0) > 0.5
        sp = [sp[0] * s, sp[1] * s, sp[2]]
    elif name == "low_dose":
        ct = ct + np.random.default_rng(seed).normal(0.0, 40.0, ct.shape).astype(np.float32)
    elif name == "soft_kernel":
        ct = _blur_xy(ct, 1.0)
    elif name == "sharp_kernel":
        ct = 2 * ct - _blur_xy(ct, 1.0)
    elif name == "thick":
        n = ct.shape[2] // 2 * 2
        ct = ct[:, :, :n].reshape(*ct.shape[:2], -1, 2).mean(3)
        ref = ref[:, :, :n].reshape(*ref.shape[:2], -1, 2).mean(3) >= 0.5
        sp = [sp[0], sp[1], sp[2] * 2]
    elif name == "fov_circle":
        nx, ny = ct.shape[:2]
        xx, yy = np.meshgrid(np.arange(nx) - (nx - 1) / 2, np.arange(ny) - (ny - 1) / 2, indexing="ij")
        outside = np.hypot(xx, yy) > max(nx, ny) / 2  # the circle inscribed in the square matrix
        ct = np.where(outside[..., None], -2048.0, ct)
        ref = np.where(outside[..., None], 0.0, ref)
    elif name == "emphysema":
        lung = ref > 0.5
        ct[lung] = -1000.0 + (ct[lung] + 1000.0) * 0.5
    elif name in ("ground_glass", "consolidation"):
        lung = ref > 0.5
        ys = np.flatnonzero(lung.any(axis=(0, 2)))
        if ys.size:  # LPS: y grows towards the patient's back
            back = lung & (np.arange(ct.shape[1])[None, :, None] > ys[-1] - 0.2 * (ys[-1] - ys[0]))
            if name == "ground_glass":
                ct[back] += 300.0
            else:
                back &= ct > -900.0
                ct[back] = -40.0 + 0.15 * (ct[back] + 850.0)
    elif name == "flipped":
        ct, ref = ct[::-1, :, ::-1], ref[::-1, :, ::-1]
    elif name != "native":
        raise ValueError(f"unknown variant {name!r}")
    ct = np.clip(np.round(ct), -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(ct), np.ascontiguousarray(ref > 0.5 if ref.dtype != bool else ref), sp


VARIANTS = ("native", "fov_small", "fov_large", "low_dose", "soft_kernel", "sharp_kernel", "thick", "fov_circle",
            "emphysema", "ground_glass", "consolidation", "flipped")


def save(ct: np.ndarray, spacing, path: Path, flipped: bool = False) -> Path:
    """Write an LPS-ordered ``(x, y, z)`` array as NIfTI; ``flipped``: stored with x and z reversed (R->L, feet
    first), which the affine records, so a reader that reorients sees the same CT."""
    import nibabel as nib

    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    if flipped:
        aff[0, 0], aff[2, 2] = -aff[0, 0], -aff[2, 2]
    nib.save(nib.Nifti1Image(ct, aff), str(path))
    return path


def cases(smoke: bool = False, names=("elastix", "lidc0003")) -> list[tuple[str, np.ndarray, np.ndarray, list]]:
    """(name, ct, reference, spacing) of the held-out real cases named (``REAL_VALIDATION`` keys), or one tiny
    phantom with ``smoke``."""
    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps

    if smoke:
        from fusionlungnet_monai.phantom import make_chest_phantom

        ph = make_chest_phantom(10_000, num_slices=6, size=128)
        return [("phantom 10000 (smoke)", ph.image, ph.mask > 0, list(ph.spacing))]
    out = []
    for key in names:
        image, label, _ = REAL_VALIDATION[key]
        ct, sp = load_ct_lps(image)
        ref = classical_lung_mask(ct, sp) if label is None else load_ct_lps(label)[0]
        folder = Path(image) if Path(image).is_dir() else Path(image).parent  # the case's folder names it
        out.append((folder.name, ct, ref > 0, sp))
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "bundle" / "models" / "model.pt"))
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--smoke", action="store_true", help="one tiny phantom (the test suite)")
    ap.add_argument("--md", help="also write the markdown table here")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.predict import Predictor

    names = [v for v in a.variants.split(",") if v]
    tmp = Path(tempfile.mkdtemp(prefix="fln_robust_"))
    rows = []
    with Predictor(model=a.model, input_size=a.input_size, progress=False) as pred:
        for case, ct0, ref0, sp0 in cases(a.smoke):
            for v in names:
                ct, ref, sp = variant(v, ct0, ref0, sp0)
                path = save(ct, sp, tmp / f"{len(rows)}_{v}.nii.gz", flipped=v == "flipped")
                t0 = time.perf_counter()
                _, mask, _ = pred.segment(path)
                seconds = time.perf_counter() - t0
                mask = lps_mask(mask)
                if v == "flipped":  # back to the native voxel order to compare with the reference as stored
                    ct, ref = ct[::-1, :, ::-1], ref[::-1, :, ::-1]
                row = {"case": case, "variant": v, "shape": list(ct.shape),
                       "spacing_mm": [round(s, 3) for s in sp], "network_pipeline": scores(mask, ref),
                       "classical": scores(classical_lung_mask(ct, sp), ref), "seconds": round(seconds, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    md = table(rows)
    print(md)
    if a.md:
        Path(a.md).write_text(md)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return rows


def lps_mask(mask) -> np.ndarray:
    """The predicted mask (on the NIfTI's stored grid) in LPS voxel order, as the references are."""
    from monai.transforms import EnsureChannelFirst, Orientation

    m = Orientation(axcodes="LPS", labels=None)(EnsureChannelFirst(channel_dim="no_channel")(mask))
    return np.asarray(m[0]) > 0


def table(rows: list[dict]) -> str:
    """Markdown: one line per variant, network pipeline and classical IoU per case, and their mean."""
    cases_ = list(dict.fromkeys(r["case"] for r in rows))
    head = "| variant | " + " | ".join(f"{c}: pipeline | {c}: classical" for c in cases_) + " | mean pipeline | " \
           "mean classical |"
    lines = [head, "|---" * (2 * len(cases_) + 3) + "|"]
    for v in dict.fromkeys(r["variant"] for r in rows):
        sel = {r["case"]: r for r in rows if r["variant"] == v}
        cells = []
        for c in cases_:
            r = sel.get(c)
            cells += [f"{r['network_pipeline']['iou']:.4f}", f"{r['classical']['iou']:.4f}"] if r else ["", ""]
        m = [np.mean([r[k]["iou"] for r in sel.values()]) for k in ("network_pipeline", "classical")]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {m[0]:.4f} | {m[1]:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
