"""The second opinion on a picture (a PNG/JPG slice): a picture has no HU of its own, so the volume path's
classical second opinion runs on the picture's estimated HU (the preprocessing's ``picture_hu`` step), beside three plausibility
rules that need no HU at all. Any failure makes the report say "check this case"."""

from __future__ import annotations


import numpy as np
from scipy import ndimage

from fusionlungnet_monai.classical import classical_lung_mask, dice_score
from fusionlungnet_monai.outputs.report import SECOND_OPINION_DICE

__all__ = ["PICTURE_FOV_MM", "MAX_OUTSIDE_BODY", "MAX_LUNG_HU", "LUNG_SHARE_OF_BODY", "MAX_GREY_CHANNEL_DIFF",
           "picture_second_opinion", "colour_warning"]

#: a picture has no voxel size: its larger side is taken to span this many mm (a chest CT's field of view)
PICTURE_FOV_MM = 350.0
#: more than this share of the mask outside the body outline (the air around the patient, the table) is implausible
MAX_OUTSIDE_BODY = 0.05
#: a lung's mean estimated HU is below this (parenchyma about -850 HU; dense disease raises it, tissue is above 0)
MAX_LUNG_HU = -300.0
#: the mask's share of the body's area on an axial chest slice (a blob over the mediastinum goes above the top)
LUNG_SHARE_OF_BODY = (0.01, 0.75)
#: a piece of the mask counts as a lung from this share of the body's area (smaller pieces are fragments)
MIN_LUNG_SHARE = 0.005
#: a grey picture's colour channels differ by at most this on average (grey levels; JPEG's colour noise on a grey
#: export stays under 1); a colour photo's differ by tens
MAX_GREY_CHANNEL_DIFF = 3.0


def colour_warning(picture: np.ndarray) -> str | None:
    """A "check this case" warning when a picture ``(x, y, channels)`` is in colour (its red, green and blue differ
    by more than :data:`MAX_GREY_CHANNEL_DIFF` on average): CT slices are grey, so it is a photo, a colour
    screenshot or an overlay, not a slice as a viewer exports it. ``None`` for grey pictures."""
    p = np.asarray(picture, dtype=np.float32)
    if p.ndim != 3 or p.shape[-1] < 3:
        return None
    diff = float(np.mean(np.abs(p[..., 0] - p[..., 1]) + np.abs(p[..., 1] - p[..., 2])) / 2)
    if diff <= MAX_GREY_CHANNEL_DIFF:
        return None
    return (f"check this case: a colour picture (its red, green and blue differ by {diff:.0f} grey levels on "
            "average), where a CT slice is grey: is it a CT slice? (a photo, a colour screenshot or an overlay is not)")


def _body(hu: np.ndarray) -> np.ndarray:
    """The body outline: the largest component denser than -500 HU, holes filled (lungs inside, outside air not)."""
    labels, n = ndimage.label(hu > -500.0)
    if not n:
        return np.zeros(hu.shape, bool)
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:])))


def picture_second_opinion(mask: np.ndarray, hu: np.ndarray, trusted_hu: bool = True,
                           fov_mm: float = PICTURE_FOV_MM) -> tuple[dict, np.ndarray | None, list[str]]:
    """Check a picture's lung mask against its estimated HU.

    Rules (each a "check this case" warning when it fails): the mask lies inside the body outline (at most
    :data:`MAX_OUTSIDE_BODY` outside); its mean estimated HU is that of lung (below :data:`MAX_LUNG_HU`); it covers a
    plausible share of the body (:data:`LUNG_SHARE_OF_BODY`) in one or two lungs (pieces of at least
    :data:`MIN_LUNG_SHARE` of the body; three or more say a fragmented mask); and, when the picture's window was
    estimated from its air and tissue peaks (``trusted_hu``), the classical HU segmentation of the estimated HU (air
    inside the body read as lung, -850 HU) agrees at Dice :data:`~fusionlungnet_monai.outputs.SECOND_OPINION_DICE` or more.

    Args:
        mask: binary mask ``(x, y)``.
        hu: the picture's estimated HU on the same grid.
        trusted_hu: run the classical segmentation (``False`` for the percentile fallback: its HU is a guess).
        fov_mm: the millimetres the larger side is taken to span (the classical segmentation's closing radius).

    Returns:
        ``(summary, classical_mask or None, warnings)``.
    """

    m, hu = np.asarray(mask) > 0, np.asarray(hu, dtype=np.float32)
    body = _body(hu)
    body_px = max(int(body.sum()), 1)
    lungs = 0
    if m.any():
        labels, n = ndimage.label(m)
        sizes = np.bincount(labels.ravel())[1:]
        lungs = int((sizes >= MIN_LUNG_SHARE * body_px).sum())
    summary = {"method": "picture rules on the estimated HU, and the classical HU segmentation of it",
               "outside_body": round(float((m & ~body).sum()) / max(int(m.sum()), 1), 4),
               "mean_hu": round(float(hu[m].mean()), 1) if m.any() else None,
               "share_of_body": round(float(m.sum()) / body_px, 4), "lungs": lungs}
    warn = []
    if m.any():
        if summary["outside_body"] > MAX_OUTSIDE_BODY:
            warn.append(f"check this case: {100 * summary['outside_body']:.0f} % of the mask lies outside the body "
                        "outline (the air around the patient, the table): see qc.png")
        if summary["mean_hu"] > MAX_LUNG_HU:
            warn.append(f"check this case: the mask's mean is {summary['mean_hu']:.0f} HU as estimated from the "
                        f"picture, above {MAX_LUNG_HU:.0f} HU: soft tissue rather than lung (a wrong polarity or "
                        "window? --picture-polarity), or dense lung")
        lo, hi = LUNG_SHARE_OF_BODY
        if not lo <= summary["share_of_body"] <= hi:
            warn.append(f"check this case: the mask covers {100 * summary['share_of_body']:.0f} % of the body's area, "
                        f"outside the {100 * lo:.0f}-{100 * hi:.0f} % of lungs on an axial chest slice")
        if lungs > 2:
            warn.append(f"check this case: the mask is in {lungs} pieces, where a slice shows one or two lungs")
    second = None
    if trusted_hu:
        spacing = [fov_mm / max(hu.shape)] * 2
        # inside the body, air-dark pixels are lung: a window that clipped the lungs puts them at -1000 HU, where the
        # classical segmentation would take them for room air
        second = classical_lung_mask(np.where(body & (hu < -950.0), -850.0, hu), spacing) > 0
        agreement = dice_score(m, second)
        summary["dice_with_classical"] = round(agreement, 4)
        summary["check_below"] = SECOND_OPINION_DICE
        if m.any() and agreement < SECOND_OPINION_DICE:
            warn.append(f"check this case: the network and the classical HU segmentation of the picture's estimated "
                        f"HU agree only at Dice {agreement:.2f} (< {SECOND_OPINION_DICE}); see qc.png (red: network, "
                        "cyan: classical)")
    return summary, second, warn
