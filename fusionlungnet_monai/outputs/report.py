"""The case report: sanity warnings, the classical second opinion and the atomic JSON writer (``report.json``,
``summary.json``)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Sequence

import numpy as np

from fusionlungnet_monai.classical import classical_lung_mask, dice_score, finite_hu
from fusionlungnet_monai.outputs.masks import affine_3d
from fusionlungnet_monai.outputs.qc import qc_overlay
from fusionlungnet_monai.utils.geometry import head_foot_axis, lps_orientation
from fusionlungnet_monai.utils.hu import HU_AIR_CHECK
from fusionlungnet_monai.utils.masks import binary_view
from fusionlungnet_monai.volumes import MAX_SHEAR_DEG, lung_volumes, right_share_warning, shear_degrees, voxel_volume_ml

__all__ = ["CT_MEDIAN_HU", "MIN_CHEST_FOV_MM", "PLAUSIBLE_LUNG_ML", "SECOND_OPINION_DICE", "SECOND_OPINION_GRID_MM",
           "describe_lungs", "sanity_warnings", "second_opinion", "write_json"]

#: adult total lung volume range used for the plausibility warning (mL)
PLAUSIBLE_LUNG_ML = (1000.0, 10000.0)
#: chest CT slices lie at most this far apart (mm); beyond, the slice spacing in the file is suspect
MAX_SLICE_MM = 10.0
#: chest CT pixels are at most this large (mm; a 64² matrix over a 350 mm field of view has 5.5 mm pixels)
MAX_PIXEL_MM = 8.0
#: the median of a CT in HU lies in this range (mostly air or soft tissue; padding such as -3024 or -32768 covers at
#: most the corners outside the reconstruction circle, 21 % of a slice): beyond it the values are scaled, not HU
CT_MEDIAN_HU = (-1500.0, 4000.0)
#: a volume whose larger in-plane side spans less than this (mm) is no chest: its voxel size is likely wrong
MIN_CHEST_FOV_MM = 80.0
#: below this Dice between the network and the classical segmentation, the report says "check this case"
SECOND_OPINION_DICE = 0.85
#: the second opinion runs on every s-th voxel in-plane, s chosen so that its pixels are about this size (mm)
SECOND_OPINION_GRID_MM = 1.5


def sanity_warnings(mask: np.ndarray, ct: np.ndarray, affine: np.ndarray, total_ml: float) -> list[str]:
    """Warnings about a ``(x, y, z)`` mask and its CT: empty, implausible volume, not HU (no air, or scaled values),
    slices or pixels coarser than a chest CT's, a field of view too small for a chest, a sheared grid, not axial."""
    w = []
    if not mask.any():
        w.append("empty mask: no lung found")
    elif mask.shape[2] > 1 and not PLAUSIBLE_LUNG_ML[0] <= total_ml <= PLAUSIBLE_LUNG_ML[1]:
        w.append(f"lung volume {total_ml:.0f} mL is outside the plausible adult range "
                 f"{PLAUSIBLE_LUNG_ML[0]:.0f}-{PLAUSIBLE_LUNG_ML[1]:.0f} mL (partial chest coverage, a child, "
                 "or a failed segmentation)")
    lo = float(np.min(ct))
    if lo >= HU_AIR_CHECK:
        w.append(f"intensities do not look like HU (minimum {lo:.0f}, no air below {HU_AIR_CHECK:.0f}): is the input "
                 "a CT in HU? (the HU boundary refinement skips such images)")
    else:
        mid = float(np.nanmedian(ct[::4, ::4]))  # every 16th voxel of each slice: enough for a median
        if np.isfinite(mid) and not CT_MEDIAN_HU[0] <= mid <= CT_MEDIAN_HU[1]:
            w.append(f"intensities are beyond any CT's HU range (median {mid:.0f}, where a CT's lies between "
                     f"{CT_MEDIAN_HU[0]:.0f} and {CT_MEDIAN_HU[1]:.0f} HU): are the values scaled, by a rescale "
                     "slope (DICOM) or scl_slope (NIfTI) other than the scanner's?")
    to_lps, _, spacing = lps_orientation(affine)
    fov = [n * spacing[int(to_lps[a, 0])] for a, n in enumerate(mask.shape)]  # mm, per stored axis
    plane = [v for a, v in enumerate(fov) if int(to_lps[a, 0]) != 2] if mask.shape[2] > 1 else fov[:2]
    pixel = spacing[:2]  # LPS order: x and y are in-plane
    if spacing[2] > MAX_SLICE_MM:
        w.append(f"slices {spacing[2]:.1f} mm apart, more than the {MAX_SLICE_MM:.0f} mm of any chest CT: is the slice "
                 "spacing in the file right (in mm)? The volumes in mL are not to be trusted")
    if max(pixel) > MAX_PIXEL_MM:
        w.append(f"pixels of {pixel[0]:.1f} x {pixel[1]:.1f} mm, coarser than any chest CT's ({MAX_PIXEL_MM:.0f} mm or "
                 "less): is the voxel size in the file right (in mm)? The volumes in mL are not to be trusted")
    if max(plane) < MIN_CHEST_FOV_MM:
        w.append(f"the in-plane field of view is {plane[0]:.0f} x {plane[1]:.0f} mm, smaller than any chest: is the "
                 "voxel size in the file right (in mm)? The mask and the volumes in mL are not to be trusted")
    if (shear := shear_degrees(affine)) > MAX_SHEAR_DEG:
        w.append(f"the voxel grid is sheared ({shear:.1f} degrees from square, e.g. a gantry tilt kept in the affine): "
                 "the volumes use the sheared voxel's true size, but the 2D model saw each slice as a square grid")
    if head_foot_axis(affine) != 2 and mask.shape[2] > 1:  # the same rule the pipeline reorients by
        w.append(f"the volume is stored as coronal/sagittal slices: the 2D model saw axial planes reformatted from "
                 f"them ({spacing[0]:.2f} x {spacing[1]:.2f} mm pixels), and the mask was written back in the "
                 "file's own geometry")
    return w


def second_opinion(mask: np.ndarray, ct: np.ndarray, spacing: Sequence[float],
                   grid_mm: float = SECOND_OPINION_GRID_MM, affine: np.ndarray | None = None
                   ) -> tuple[dict, np.ndarray, list[str]]:
    """Compare the network's mask with the classical 3D HU segmentation of the same CT.

    Both are compared on a coarser in-plane grid: every ``s``-th voxel, with ``s`` the whole number that brings the
    pixel size nearest to ``grid_mm`` (2 for 0.6-1 mm pixels; 1, the full grid, from 1.2 mm or with ``grid_mm``
    0). A quarter of the voxels makes the classical segmentation about 4.5x faster; with the shipped model on the real
    CT in ``tests/data`` and on phantoms, ``dice_with_network`` moved by 0.006 or less against the full grid.

    With the volume's ``affine``, both are viewed in LPS voxel order first (axial planes, head at the top, as the
    classical segmentation's airway step expects), whatever the storage order; ``spacing`` is then the affine's.

    Returns:
        ``(summary, classical_mask, warnings)``: the report's ``second_opinion`` entry, the classical mask on the
        input's grid (for the QC picture) and a "check this case" warning when they agree below
        :data:`SECOND_OPINION_DICE`.
    """
    from nibabel import orientations as nio


    back = None
    if affine is not None:
        to_lps, back, spacing = lps_orientation(affine)
        mask, ct = nio.apply_orientation(mask, to_lps), nio.apply_orientation(ct, to_lps)
    spacing = [float(v) for v in spacing]
    s = max(1, int(round(grid_mm / min(spacing[0], spacing[1])))) if grid_mm > 0 else 1
    second = classical_lung_mask(ct[::s, ::s], [spacing[0] * s, spacing[1] * s, *spacing[2:]])
    agreement = dice_score(mask[::s, ::s], second)
    summary = {"method": "classical 3D HU segmentation (threshold, components, hole filling)",
               "grid_mm": [round(spacing[0] * s, 3), round(spacing[1] * s, 3)],
               "dice_with_network": round(agreement, 4), "check_below": SECOND_OPINION_DICE,
               "classical_ml": round(float(second.sum()) * voxel_volume_ml(spacing, affine) * s * s, 1)}
    if s > 1:  # back to the input's grid, nearest neighbour
        second = np.repeat(np.repeat(second, s, axis=0), s, axis=1)[: mask.shape[0], : mask.shape[1]]
    if back is not None:
        second = np.ascontiguousarray(nio.apply_orientation(second, back))
    warn = []
    if mask.any() and agreement < SECOND_OPINION_DICE:
        warn.append(f"check this case: the network and the classical HU segmentation agree only at Dice "
                    f"{agreement:.2f} (< {SECOND_OPINION_DICE}); see qc.png (red: network, cyan: classical). Dense "
                    "lung (consolidation, effusion) lowers the classical score; a failed network lowers both")
    return summary, second, warn


def describe_lungs(mask: np.ndarray, ct: np.ndarray, affine: np.ndarray, qc_path: str | os.PathLike | None = None,
                   labels: np.ndarray | None = None, second: bool = True, spacing_known: bool = True,
                   nonfinite: Sequence[int] = (0, 0)) -> dict:
    """The lung part of a case's report, for a mask on its CT's grid (the CLI's ``report.json`` and the bundle's
    ``post#report``).

    Args:
        mask: binary lung mask ``(x, y, z)`` (or one ``(x, y)`` slice).
        ct: the CT in HU on the same grid, in its stored type; NaN and infinite voxels are reported, then read as
            :func:`~fusionlungnet_monai.classical.finite_hu` reads them.
        affine: voxel-to-RAS affine (MONAI's).
        qc_path: where to write the QC picture (``None``: no picture).
        labels: the mask's right/left label map when the caller made one (else the volumes split it here).
        second: run the classical second opinion (its Dice and "check this case" warning; cyan in the picture).
        spacing_known: ``False`` when the file gave no voxel size and 1 mm was assumed (a warning says so).
        nonfinite: NaN and infinite voxel counts of the input when ``ct`` is a finite copy of it
            (:data:`~fusionlungnet_monai.utils.hu.NONFINITE_META`); a float ``ct`` is counted itself.

    Returns:
        ``shape``, ``spacing_mm``, ``num_slices``, ``volumes_ml`` (``total_ml``, ``right_ml``, ``left_ml``),
        ``warnings``, ``outputs`` (``qc_png``: axial, coronal and sagittal views in radiological orientation, the
        same for any storage order), with ``second`` ``second_opinion``, and for a one-slice volume (a lone DICOM
        slice) ``one_slice_depth_mm``, the depth its mL are counted with (SpacingBetweenSlices, else SliceThickness).
    """

    mask, ct = binary_view(mask), np.asarray(ct)  # the CT in its stored type: int16 and float32 alike
    two_d = mask.ndim == 2  # a picture
    if two_d:  # one slice: a slice axis for the volumes and the picture
        mask, ct = mask[..., None], ct[..., None]
        labels = None if labels is None else labels[..., None]
    affine = affine_3d(np.asarray(affine))
    spacing = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    volumes = lung_volumes(mask if labels is None else labels, spacing, affine, ct=ct)
    out: dict = {"shape": list(mask.shape), "spacing_mm": spacing, "num_slices": int(mask.shape[2]),
                 "volumes_ml": {k: (None if v is None else round(v, 1)) for k, v in volumes.items()},
                 "warnings": [], "outputs": {}}
    if mask.shape[2] == 1 and not two_d:
        out["one_slice_depth_mm"] = round(spacing[2], 3)  # the mL are the lung area times this depth
    if not spacing_known:
        out["warnings"].append("the file gives no voxel size (NIfTI pixdim 0): 1 mm was assumed, so the volumes in mL "
                               "and the field-of-view padding are not to be trusted")
    nan, inf = (int(n) for n in nonfinite)
    if ct.dtype.kind == "f" and not np.isfinite(ct).all():  # one pass over the volume when it is finite
        nan, inf = int(np.isnan(ct).sum()), int(np.isinf(ct).sum())
        ct = finite_hu(ct)
    if nan or inf:
        if nan:
            out["warnings"].append(f"{nan} voxels are NaN (not a number) in the input; they were read as air "
                                   "(-1024 HU), which may add holes or lung where they lie")
        if inf:
            out["warnings"].append(f"{inf} voxels are infinite in the input; they were read as the brightest or "
                                   "darkest value of the network's HU window")
    out["warnings"] += sanity_warnings(mask, ct, affine, out["volumes_ml"]["total_ml"])
    if mask.shape[2] > 1 and (split := right_share_warning(volumes["right_ml"], volumes["left_ml"])):
        out["warnings"].append(split)
    classical = None
    if second:
        out["second_opinion"], classical, warn = second_opinion(mask, ct, spacing, affine=affine)
        out["warnings"] += warn
    if qc_path is not None:  # radiological views whatever the storage order: the volumes viewed in LPS order
        from nibabel.orientations import apply_orientation

        to_lps, _, lps_spacing = lps_orientation(affine)
        lps = [None if a is None else apply_orientation(a, to_lps) for a in (ct, mask, classical)]
        out["outputs"]["qc_png"] = qc_overlay(lps[0], lps[1], qc_path, spacing=lps_spacing, second=lps[2])
    return out


def write_json(obj: dict, path: str | os.PathLike) -> str:
    """Write ``obj`` as JSON through a temporary file in the same folder, so a reader never sees half of it.

    Returns:
        the written path.
    """
    path = Path(path)
    tmp = path.parent / f".{path.stem}-{secrets.token_hex(6)}.json"
    # created like any other file (mode 0666 less the umask, as the masks are): mkstemp's 0600 made reports private
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(path)
