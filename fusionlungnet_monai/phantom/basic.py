"""Synthetic chest-CT phantoms in Hounsfield units with an exact lung mask.

The phantom is a stand-in for real chest CT where none may be shipped: air outside a body ellipse of soft tissue
with a fat rim, two lungs (about -850 HU, smooth texture, vessels, a few nodules), ribs and a spine at bone HU, a
scanner table under the body, an optional circular field of view padded at -2000 or -3024 HU and optional
burnt-in text. Arrays use MONAI's ITK layout ``(x, y, z)`` in the DICOM patient frame (LPS): ``x`` grows towards
the patient's left, ``y`` towards the back, ``z`` towards the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fusionlungnet_monai.phantom.writers import write_dicom_series, write_localizer, write_nifti, write_png_slices

__all__ = ["Phantom", "make_phantom"]

# 5x7 bitmap glyphs for the burnt-in text (enough for ids like "FLN 0042 L").
_GLYPHS = {
    "F": ["11111", "10000", "10000", "11110", "10000", "10000", "10000"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "N": ["10001", "11001", "10101", "10011", "10001", "10001", "10001"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
    " ": ["00000"] * 7,
}


@dataclass
class Phantom:
    """A synthetic CT volume and its exact lung mask.

    Attributes:
        image: int16 HU volume, shape ``(x, y, z)``.
        mask: uint8 lung mask (1 = lung, both lungs), same shape.
        spacing: voxel size in mm ``(x, y, z)``.
        origin: LPS position in mm of voxel ``(0, 0, 0)``.
        body: bool mask of the patient's body (table, text and padding excluded).
    """

    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    body: np.ndarray

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 voxel-to-LPS affine (axial slices, no rotation)."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 voxel-to-RAS affine, as NIfTI files and MONAI (``affine_lps_to_ras=True``) use."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps

    @property
    def lung_volume_ml(self) -> float:
        """Exact lung volume of the mask in millilitres."""
        return float(self.mask.sum()) * float(np.prod(self.spacing)) / 1000.0


def _draw_text(img: np.ndarray, text: str, x0: int, y0: int, scale: int, value: float) -> None:
    """Burn ``text`` into a 2D ``(x, y)`` slice in place with the 5x7 glyphs."""
    for n, ch in enumerate(text.upper()):
        glyph = _GLYPHS.get(ch, _GLYPHS[" "])
        for r, row in enumerate(glyph):
            for c, bit in enumerate(row):
                if bit == "1":
                    xs = x0 + (n * 6 + c) * scale
                    ys = y0 + r * scale
                    img[xs : xs + scale, ys : ys + scale] = value


def make_phantom(
    num_slices: int = 64,
    size: int = 512,
    spacing: tuple[float, float, float] | None = None,
    seed: int = 0,
    fov_padding: float | None = -2000.0,
    table: bool = True,
    text: str | None = "FLN 0042",
    nodules: int = 3,
    vessels: int = 24,
    noise_hu: float = 15.0,
) -> Phantom:
    """Build a deterministic chest-CT phantom.

    Args:
        num_slices: number of axial slices ``N``.
        size: in-plane matrix (``size x size``).
        spacing: voxel size in mm ``(x, y, z)``; default ``(0.75 * 512 / size, same, 5.0)``: a 384 mm field of
            view (a chest-sized phantom) at every matrix size.
        seed: random seed; the same seed gives the same phantom.
        fov_padding: HU outside the circular reconstruction field of view (-2000 or -3024 as scanners write),
            or ``None`` for no field-of-view circle.
        table: draw a scanner table under the body.
        text: burnt-in text drawn at the top left of every slice (``None`` for none).
        nodules: number of spherical nodules inside the lungs.
        vessels: number of vessel tubes running through the lungs.
        noise_hu: standard deviation of the additive Gaussian noise.

    Returns:
        a :class:`Phantom`.

    Raises:
        ValueError: when ``num_slices < 1`` or ``size < 64``.
    """
    if num_slices < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}.")
    if size < 64:
        raise ValueError(f"size must be >= 64, got {size}.")
    rng = np.random.default_rng(seed)
    s = size / 512.0  # all geometry below is given for a 512 matrix and scaled
    spacing = tuple(spacing) if spacing is not None else (0.75 / s, 0.75 / s, 5.0)
    xs = np.arange(size, dtype=np.float32)[:, None]
    ys = np.arange(size, dtype=np.float32)[None, :]
    cx, cy = size / 2 + rng.uniform(-6, 6) * s, size / 2 + 4 * s + rng.uniform(-6, 6) * s
    body_a, body_b = (215 + rng.uniform(-10, 10)) * s, (150 + rng.uniform(-8, 8)) * s

    # smooth lung texture: low-resolution noise upsampled (cheap for long series)
    low = rng.normal(0.0, 1.0, size=(max(size // 8, 8), max(size // 8, 8), max(num_slices // 2, 1)))
    texture = ndimage.zoom(ndimage.gaussian_filter(low, 1.0), [size / low.shape[0], size / low.shape[1],
                                                             num_slices / low.shape[2]], order=1)[:size, :size]
    texture = texture[..., :num_slices] / max(float(texture.std()), 1e-6)

    vessel_seeds = rng.uniform(-0.75, 0.75, size=(vessels, 4))  # start/end offsets in lung units
    vessel_r = rng.uniform(1.5, 4.0, size=vessels) * s
    vessel_side = rng.integers(0, 2, size=vessels)
    nodule_pos = rng.uniform(-0.55, 0.55, size=(nodules, 2))
    nodule_z = rng.uniform(0.25, 0.75, size=nodules) * num_slices
    nodule_r = rng.uniform(4.0, 8.0, size=nodules)  # mm
    nodule_side = rng.integers(0, 2, size=nodules)
    rib_angles = np.deg2rad(np.r_[np.linspace(-150, -30, 5), np.linspace(30, 150, 5), 0, 180])

    image = np.empty((size, size, num_slices), dtype=np.float32)
    mask = np.zeros((size, size, num_slices), dtype=np.uint8)
    body_mask = np.zeros((size, size, num_slices), dtype=bool)
    r_fov = np.hypot(xs - size / 2, ys - size / 2)
    for k in range(num_slices):
        t = (k + 0.5) / num_slices
        prof = 0.35 + 0.65 * np.sin(np.pi * t) ** 0.6  # lungs narrow at the apex and the base
        sl = np.full((size, size), -1000.0, dtype=np.float32)
        body = ((xs - cx) / body_a) ** 2 + ((ys - cy) / body_b) ** 2 <= 1.0
        inner = ((xs - cx) / (body_a - 14 * s)) ** 2 + ((ys - cy) / (body_b - 14 * s)) ** 2 <= 1.0
        sl[body] = -100.0  # subcutaneous fat rim
        sl[inner] = 40.0  # soft tissue
        lungs = np.zeros((size, size), dtype=bool)
        lung_params = []
        for side in (-1, 1):  # -1: patient's right lung (low x), +1: left lung
            lcx = cx + side * 98 * s
            lcy = cy - 12 * s
            la, lb = 68 * s * prof, 100 * s * prof
            lung_params.append((lcx, lcy, la, lb))
            lungs |= ((xs - lcx) / la) ** 2 + ((ys - lcy) / lb) ** 2 <= 1.0
        sl[lungs] = -850.0 + 35.0 * texture[:, :, k][lungs]
        for v in range(vessels):  # vessels: tubes drifting linearly through z
            lcx, lcy, la, lb = lung_params[vessel_side[v]]
            px = lcx + la * (vessel_seeds[v, 0] + (vessel_seeds[v, 2] - vessel_seeds[v, 0]) * t) * 0.8
            py = lcy + lb * (vessel_seeds[v, 1] + (vessel_seeds[v, 3] - vessel_seeds[v, 1]) * t) * 0.8
            sl[((xs - px) ** 2 + (ys - py) ** 2 <= vessel_r[v] ** 2) & lungs] = 30.0
        for n in range(nodules):  # spherical nodules, radius in mm
            dz = (k - nodule_z[n]) * spacing[2]
            if abs(dz) >= nodule_r[n]:
                continue
            rr = np.sqrt(nodule_r[n] ** 2 - dz**2) / spacing[0]
            lcx, lcy, la, lb = lung_params[nodule_side[n]]
            px, py = lcx + nodule_pos[n, 0] * la, lcy + nodule_pos[n, 1] * lb
            sl[((xs - px) ** 2 + (ys - py) ** 2 <= rr**2) & lungs] = 20.0
        # spine (posterior midline) and ribs around the chest wall
        spine = (xs - cx) ** 2 + (ys - (cy + body_b * 0.72)) ** 2 <= (22 * s) ** 2
        sl[spine] = 700.0
        for ang in rib_angles:  # rib cross-sections just inside the fat rim
            rx, ry = cx + np.cos(ang) * (body_a - 24 * s), cy + np.sin(ang) * (body_b - 22 * s)
            sl[((xs - rx) / (8 * s)) ** 2 + ((ys - ry) / (6 * s)) ** 2 <= 1.0] = 450.0
        if table:
            ty = cy + body_b + 16 * s
            curve = ty + 0.00018 / s * (xs - cx) ** 2
            tab = (ys >= curve) & (ys <= curve + 12 * s) & (np.abs(xs - cx) <= 200 * s)
            sl[tab] = 150.0
        sl += rng.normal(0.0, noise_hu, size=sl.shape).astype(np.float32)
        if fov_padding is not None:
            sl[r_fov > size / 2 - 2] = fov_padding
        if text:
            _draw_text(sl, text, int(12 * s), int(10 * s), max(int(2 * s), 1), 3071.0)
        image[:, :, k] = sl
        mask[:, :, k] = lungs
        body_mask[:, :, k] = body
    image = np.clip(np.rint(image), -3024, 3071).astype(np.int16)
    origin = (-size / 2 * spacing[0], -size / 2 * spacing[1], -num_slices * spacing[2])
    return Phantom(image=image, mask=mask, spacing=tuple(map(float, spacing)), origin=origin, body=body_mask)


def write_phantom_case(
    out_dir: str,
    case_id: str = "phantom000",
    seed: int = 0,
    num_slices: int = 64,
    size: int = 512,
    formats: tuple[str, ...] = ("dicom", "nifti", "png"),
    localizer: bool = True,
    png_every: int = 1,
    overwrite: bool = False,
    **phantom_kwargs,
) -> dict:
    """Generate one phantom and write it in the requested formats under ``out_dir``.

    Layout: ``dicom/<case_id>/`` (CT series, plus a localizer series when ``localizer``),
    ``nifti/<case_id>_image.nii.gz`` + ``nifti/<case_id>_label.nii.gz``, ``png/images|masks/<case_id>_sNNN.png``.

    Returns:
        a dict with the :class:`Phantom` (``"phantom"``) and the written paths per format.
    """
    from pathlib import Path

    unknown = set(formats) - {"dicom", "nifti", "png"}
    if unknown:
        raise ValueError(f"formats: unsupported {sorted(unknown)}; choose from dicom, nifti, png.")
    ph = make_phantom(num_slices=num_slices, size=size, seed=seed, **phantom_kwargs)
    out = Path(out_dir)
    res: dict = {"phantom": ph}
    if "dicom" in formats:
        folder = out / "dicom" / case_id
        res["dicom"] = write_dicom_series(ph.image, ph.spacing, ph.origin, folder, patient_id=case_id,
                                          overwrite=overwrite)
        if localizer:
            res["localizer"] = write_localizer(folder, patient_id=case_id, overwrite=overwrite)
    if "nifti" in formats:
        res["nifti"] = (
            write_nifti(ph.image, ph.affine_ras, out / "nifti" / f"{case_id}_image.nii.gz", overwrite),
            write_nifti(ph.mask, ph.affine_ras, out / "nifti" / f"{case_id}_label.nii.gz", overwrite),
        )
    if "png" in formats:
        res["png"] = write_png_slices(ph.image, ph.mask, out / "png", case_id,
                                      slices=range(0, num_slices, max(int(png_every), 1)), overwrite=overwrite)
    return res
