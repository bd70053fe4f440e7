"""How the shipped model holds up across scanners, reconstructions and patient set-ups, on real CT.

Each labelled real case is re-made as another acquisition would have given it, its reference mask carried along on
the same grid, and segmented by ``fusionlungnet predict``'s ``Predictor`` (the shipped pipeline), by the same with
``refine=False`` (the network alone, ``--no-refine``) and by the classical HU baseline; IoU and Dice against the
reference, per case and variant. The cases: ``make_release_data.REAL_VALIDATION`` (held out: the elastix crop with
its expert mask, LIDC-IDRI-0003 with its classical pseudo-label) and ``REAL_TRAINING`` (LIDC-IDRI-0002, classical
pseudo-label, and the TotalSegmentator lung bases, its own labels: in the release training set, marked so). The
variants:

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
- ``flipped``: stored right-to-left and head-first reversed (the reader reorients; the mask must come back);
- ``grid128`` / ``grid64``: the same field of view on a 128² / 64² matrix (area averages: the partial volume a coarse
  matrix has; a matrix already that coarse stays as it is);
- ``slices_5mm``: slices averaged in groups to about 5 mm (unchanged where they are 5 mm already);
- ``table_gap``: the patient lifted 25 mm off the table: everything behind the lowest point of the back moves 25 mm
  further back, air (-1000 HU, noise 15 HU) in between, reaching the image's sides (the matrix grows by as much);
- ``fov_crop``: the field of view cut through the body: a tenth of the body's width off each side and off the front
  (the lung may touch the image's edge).

The references: resampled by area and thresholded at 0.5 (fov, thick, grid, slices), moved with the CT otherwise. Transforms act on the
``(x, y, z)`` LPS arrays that ``load_ct_lps`` gives, written as NIfTI with their spacing.

Usage: python scripts/robustness.py [--model bundle/models/model.pt] [--variants native,low_dose]
       [--cases elastix,lidc0003,lidc0002,totalseg_sm] [--no-network] [--md OUT.md] [--json OUT.json]
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
from make_release_data import REAL_TRAINING, REAL_VALIDATION  # noqa: E402

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


def _area_resize(vol: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``vol`` on a coarser ``shape`` over the same extent, each voxel the mean of what it covers."""
    x = torch.as_tensor(np.asarray(vol, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool3d(x, shape)[0, 0].numpy()


def _body_extent(ct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The columns (x) and rows (y) the body covers on any slice (the largest region above -500 HU per slice)."""
    from fusionlungnet_monai.outputs.picture_check import _body

    body = np.stack([_body(ct[:, :, k]) for k in range(ct.shape[2])], axis=2)
    return body.any(axis=(1, 2)), body.any(axis=(0, 2))


def _table_gap(ct: np.ndarray, ref: np.ndarray, gap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Insert ``gap`` rows of air below the lowest point of the back on every slice (see ``table_gap``)."""
    from fusionlungnet_monai.outputs.picture_check import _body

    nx, ny, nz = ct.shape
    out_ct = np.empty((nx, ny + gap, nz), np.float32)
    out_ref = np.zeros((nx, ny + gap, nz), bool)
    air = -1000.0 + np.random.default_rng(seed).normal(0.0, 15.0, (nx, gap, nz)).astype(np.float32)
    for k in range(nz):
        rows = np.flatnonzero(_body(ct[:, :, k]).any(axis=0))
        yb = int(rows[-1]) + 1 if rows.size else ny
        out_ct[:, :yb, k], out_ct[:, yb : yb + gap, k], out_ct[:, yb + gap :, k] = ct[:, :yb, k], air[..., k], ct[:, yb:, k]
        out_ref[:, :yb, k], out_ref[:, yb + gap :, k] = ref[:, :yb, k], ref[:, yb:, k]
    return out_ct, out_ref


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
    elif name in ("grid128", "grid64"):
        n = 128 if name == "grid128" else 64
        f = max(max(ct.shape[0], ct.shape[1]) / n, 1.0)  # a matrix already this coarse stays as it is
        shape = (max(round(ct.shape[0] / f), 1), max(round(ct.shape[1] / f), 1), ct.shape[2])
        sp = [sp[0] * ct.shape[0] / shape[0], sp[1] * ct.shape[1] / shape[1], sp[2]]
        ct, ref = _area_resize(ct, shape), _area_resize(ref, shape) >= 0.5
    elif name == "slices_5mm":
        k = max(int(round(5.0 / sp[2])), 1)
        shape = (ct.shape[0], ct.shape[1], max(ct.shape[2] // k, 1))
        ct, ref = _area_resize(ct[:, :, : shape[2] * k], shape), _area_resize(ref[:, :, : shape[2] * k], shape) >= 0.5
        sp = [sp[0], sp[1], sp[2] * k]
    elif name == "table_gap":
        ct, ref = _table_gap(ct, ref > 0.5, int(round(25.0 / sp[1])), seed)
    elif name == "fov_crop":
        cols, rows = _body_extent(ct)
        xs, ys = np.flatnonzero(cols), np.flatnonzero(rows)
        if xs.size and ys.size:
            cut = int(round(0.1 * (xs[-1] - xs[0] + 1)))
            x0, x1, y0 = xs[0] + cut, xs[-1] + 1 - cut, ys[0] + int(round(0.1 * (ys[-1] - ys[0] + 1)))
            ct, ref = ct[x0:x1, y0:], ref[x0:x1, y0:]
    elif name != "native":
        raise ValueError(f"unknown variant {name!r}")
    ct = np.clip(np.round(ct), -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(ct), np.ascontiguousarray(ref > 0.5 if ref.dtype != bool else ref), sp


VARIANTS = ("native", "fov_small", "fov_large", "low_dose", "soft_kernel", "sharp_kernel", "thick", "fov_circle",
            "emphysema", "ground_glass", "consolidation", "flipped", "grid128", "grid64", "slices_5mm", "table_gap",
            "fov_crop")
#: the labelled real cases: held out, then those in the release training set
CASES = ("elastix", "lidc0003", "lidc0002", "totalseg_sm")


def save(ct: np.ndarray, spacing, path: Path, flipped: bool = False) -> Path:
    """Write an LPS-ordered ``(x, y, z)`` array as NIfTI; ``flipped``: stored with x and z reversed (R->L, feet
    first), which the affine records, so a reader that reorients sees the same CT."""
    import nibabel as nib

    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    if flipped:
        aff[0, 0], aff[2, 2] = -aff[0, 0], -aff[2, 2]
    nib.save(nib.Nifti1Image(ct, aff), str(path))
    return path


def cases(smoke: bool = False, names=CASES) -> list[tuple[str, np.ndarray, np.ndarray, list]]:
    """(name, ct, reference, spacing) of the real cases named (``REAL_VALIDATION`` and ``REAL_TRAINING`` keys; the
    training ones' names say "seen in training"), or one tiny phantom with ``smoke``."""
    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps

    if smoke:
        from fusionlungnet_monai.phantom import make_chest_phantom

        ph = make_chest_phantom(10_000, num_slices=6, size=128)
        return [("phantom 10000 (smoke)", ph.image, ph.mask > 0, list(ph.spacing))]
    out = []
    for key in names:
        image, label, _ = {**REAL_VALIDATION, **REAL_TRAINING}[key]
        ct, sp = load_ct_lps(image)
        ref = classical_lung_mask(ct, sp) if label is None else load_ct_lps(label)[0]
        folder = Path(image) if Path(image).is_dir() else Path(image).parent  # the case's folder names it
        name = "TotalSegmentator example_ct_sm" if key == "totalseg_sm" else folder.name
        name += "" if key in REAL_VALIDATION else " (seen in training)"
        out.append((name, ct, ref > 0, sp))
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "bundle" / "models" / "model.pt"))
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cases", default=",".join(CASES), help="real cases (make_release_data keys)")
    ap.add_argument("--no-network", action="store_true", help="skip the network-alone run (refine=False)")
    ap.add_argument("--smoke", action="store_true", help="one tiny phantom (the test suite)")
    ap.add_argument("--md", help="also write the markdown table here")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.predict import Predictor

    names = [v for v in a.variants.split(",") if v]
    tmp = Path(tempfile.mkdtemp(prefix="fln_robust_"))
    rows = []
    kw = dict(model=a.model, input_size=a.input_size, progress=False)
    with Predictor(**kw) as pred, Predictor(refine=False, **kw) as alone:
        for case, ct0, ref0, sp0 in cases(a.smoke, [c for c in a.cases.split(",") if c]):
            for v in names:
                ct, ref, sp = variant(v, ct0, ref0, sp0)
                path = save(ct, sp, tmp / f"{len(rows)}_{v}.nii.gz", flipped=v == "flipped")
                t0 = time.perf_counter()
                masks = {"network_pipeline": lps_mask(pred.segment(path)[1])}
                seconds = time.perf_counter() - t0
                if not a.no_network:
                    masks["network_alone"] = lps_mask(alone.segment(path)[1])
                if v == "flipped":  # the masks are in LPS order (lps_mask): compare them with the native reference
                    ct, ref = ct[::-1, :, ::-1], ref[::-1, :, ::-1]
                row = {"case": case, "variant": v, "shape": list(ct.shape), "spacing_mm": [round(s, 3) for s in sp]}
                row |= {k: scores(m, ref) for k, m in masks.items()}
                row |= {"classical": scores(classical_lung_mask(ct, sp), ref), "seconds": round(seconds, 1)}
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


METHODS = (("network_pipeline", "pipeline"), ("network_alone", "network alone"), ("classical", "classical"))


def table(rows: list[dict]) -> str:
    """Markdown: one line per case and variant (IoU and Dice of the pipeline, the network alone and the classical
    baseline), then per variant the mean over the cases not seen in training and the worst of them."""
    methods = [(k, n) for k, n in METHODS if any(k in r for r in rows)]
    head = "| case | variant | grid | " + " | ".join(f"{n} IoU | {n} Dice" for _, n in methods) + " |"
    lines = [head, "|---" * (3 + 2 * len(methods)) + "|"]
    for r in rows:
        grid = "x".join(str(n) for n in r["shape"]) + " @ " + "x".join(f"{s:g}" for s in r["spacing_mm"]) + " mm"
        cells = [f"{r[k]['iou']:.4f} | {r[k]['dice']:.4f}" for k, _ in methods]
        lines.append(f"| {r['case']} | {r['variant']} | {grid} | " + " | ".join(cells) + " |")
    held = [r for r in rows if "seen in training" not in r["case"]]
    if held and len({r["case"] for r in held}) > 1:
        lines += ["", "| variant | " + " | ".join(f"{n}: mean IoU | {n}: worst IoU" for _, n in methods) + " |",
                  "|---" * (1 + 2 * len(methods)) + "|"]
        for v in dict.fromkeys(r["variant"] for r in held):
            sel = [r for r in held if r["variant"] == v]
            cells = [f"{np.mean([r[k]['iou'] for r in sel]):.4f} | {min(r[k]['iou'] for r in sel):.4f}"
                     for k, _ in methods]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
