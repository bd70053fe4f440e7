"""Synthetic chest CT, version 2: domain-randomised anatomy, pathology and scanner, with an exact lung mask.

Every case draws its own patient and scanner from a seed (same seed, same case):

- anatomy: body size and shape (superellipse), fat and chest-wall thickness, arms up or down; lungs that run from
  the apex to the diaphragm domes (right dome higher) with costophrenic recesses, left/right asymmetry, a
  mediastinum, the heart (with its notch into the left lung), aorta, spine and ribs; liver, spleen and stomach (with
  its gas bubble) under the domes;
- airways: the trachea and the main bronchi are air but **not lung**; small airways and vessels inside the lung
  **are lung**;
- pathology inside the mask: ground glass to consolidation (often subpleural), dependent consolidation (a dense band
  at the back of the lower lungs with air bronchograms: lung, where an effusion would not be), nodules touching the
  pleura, emphysema; outside the mask: pleural effusion (dependent, fluid HU);
- scanner: pixel spacing 0.5-1 mm (field of view), slice thickness 0.6-5 mm, soft or sharp kernel, noise level,
  contrast or not, field-of-view padding (-3024/-2000/-1024 or none), a table, gantry tilt, burnt-in text;
- with ``varied_setup=True`` (the release training set) also how the patient lies: an air gap of 2-45 mm between
  the back and the table (12 mm otherwise), the patient off the scanner's centre (so the field of view cuts the
  body), and a coarse matrix (64-512 pixels for the same field of view).

Arrays are ``(x, y, z)`` in the DICOM patient frame (LPS): ``x`` to the patient's left, ``y`` to the back, ``z`` to
the head, like :mod:`fusionlungnet_monai.phantom.basic` and an axial DICOM series read through ITK.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fusionlungnet_monai.phantom.basic import Phantom, _draw_text

__all__ = ["make_chest_phantom"]


def _superellipse(x: np.ndarray, y: np.ndarray, a: float, b: float, p: float) -> np.ndarray:
    return np.abs(x / max(a, 1e-3)) ** p + np.abs(y / max(b, 1e-3)) ** p <= 1.0


def _segments(rng: np.random.Generator, n: int, start: np.ndarray, spread: np.ndarray, r: tuple[float, float]):
    """``n`` straight 3D segments from ``start`` (mm, per segment or shared) to random ends, with radii in mm."""
    start = np.broadcast_to(start, (n, 3)).astype(float)
    end = start + rng.uniform(-1, 1, size=(n, 3)) * spread
    return start, end, rng.uniform(*r, size=n)


def _draw_segments(X, Y, z, seg, region, out, value, wall=None, wall_value=None):
    """Draw the cross-sections at height ``z`` of 3D segments (tubes) into ``out`` inside ``region``."""
    start, end, radius = seg
    for (x0, y0, z0), (x1, y1, z1), r in zip(start, end, radius):
        if (z - z0) * (z - z1) > 0 or abs(z1 - z0) < 1e-6:
            continue
        f = (z - z0) / (z1 - z0)
        px, py = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
        d2 = (X - px) ** 2 + (Y - py) ** 2
        if wall is not None:
            out[(d2 <= (r + wall) ** 2) & region] = wall_value
        out[(d2 <= r * r) & region] = value


def make_chest_phantom(seed: int = 0, num_slices: int | None = None, size: int = 512, varied_setup: bool = False,
                       **overrides) -> Phantom:
    """Build one domain-randomised chest CT with its exact lung mask.

    Args:
        seed: random seed; the same seed gives the same case.
        num_slices: number of axial slices; default: enough to cover neck to upper abdomen at the drawn thickness
            (capped at 64).
        size: in-plane matrix (with ``varied_setup`` the largest: a case may draw a coarser one).
        varied_setup: also draw the table gap, an off-centre patient and a coarse matrix (from a generator of their
            own: the drawn anatomy and scanner of the seed stay as without it; the noise and texture differ on a
            coarser matrix).
        overrides: fix any drawn parameter, e.g. ``slice_mm=5.0``, ``fov_mm=400``, ``effusion=True``,
            ``consolidation=True``, ``table_gap_mm=30``, ``offset_mm=(40, -20)`` (the patient's centre in the
            scanner's frame, x and y),
            ``noise_hu=10``, ``kernel="sharp"``, ``tilt_deg=0``, ``z_range=(0.0, 1.0)`` (in units of the chest
            length, 0 = lowest diaphragm point, 1 = apex).

    Returns:
        a :class:`~fusionlungnet_monai.phantom.basic.Phantom` (``image`` int16 HU, ``mask`` uint8, LPS geometry).
    """
    rng = np.random.default_rng(seed)
    u = rng.uniform
    p = dict(
        fov_mm=u(300, 480), slice_mm=float(rng.choice([0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0])),
        body_a=u(135, 195), body_b=u(95, 140), body_p=u(2.0, 2.7), fat_mm=u(4, 35), wall_mm=u(10, 20),
        chest_len=u(200, 290), asym=u(-0.08, 0.08), dome_r=u(0.12, 0.22), dome_l=u(0.06, 0.14),
        heart=u(0.85, 1.2), med_w=u(0.16, 0.26), lung_hu=u(-900, -780), gradient_hu=u(0, 80),
        noise_hu=u(6, 40), kernel=str(rng.choice(["soft", "standard", "sharp"])), contrast=bool(rng.random() < 0.5),
        padding=rng.choice([-3024.0, -2000.0, -1024.0, np.nan]), table=bool(rng.random() < 0.85),
        arms_down=bool(rng.random() < 0.35), tilt_deg=float(u(-15, 15)) if rng.random() < 0.2 else 0.0,
        text=bool(rng.random() < 0.4), effusion=bool(rng.random() < 0.25), ggo=int(rng.integers(0, 4)) * (rng.random() < 0.5),
        emphysema=bool(rng.random() < 0.25), pleural_nodules=int(rng.integers(0, 4)), vessels=int(rng.integers(30, 70)),
        z_range=None,
    )
    # dependent consolidation is drawn from a generator of its own, so the cases drawn without it stay as they were
    # before it existed (same seed, same image and mask)
    rc = np.random.default_rng([seed, 7])
    p["consolidation"] = bool(rc.random() < 0.2)
    p.update(table_gap_mm=12.0, offset_mm=(0.0, 0.0))
    if varied_setup:  # how the patient lies, and the matrix: a generator of its own too
        rv = np.random.default_rng([seed, 11])
        gap, off, coarse = rv.uniform(2, 45), rv.uniform(-1, 1, 2) * (60, 35), rv.choice([64, 96, 128, 192, 256, 512])
        p["table_gap_mm"] = float(gap) if rv.random() < 0.5 else 12.0
        p["offset_mm"] = tuple(float(o) for o in off) if rv.random() < 0.4 else (0.0, 0.0)
        size = int(min(size, coarse)) if rv.random() < 0.3 else size
    p.update(overrides)
    sp = p["fov_mm"] / size
    dz = p["slice_mm"]
    L = p["chest_len"]
    if p["z_range"] is None:
        lo = u(-0.25, 0.15)
        p["z_range"] = (lo, lo + u(0.8, 1.3))
    t0, t1 = p["z_range"]
    if num_slices is None:
        num_slices = int(np.clip(round((t1 - t0) * L / dz), 1, 64))
        dz = (t1 - t0) * L / num_slices if num_slices == 64 else dz
    coords = (np.arange(size) - size / 2 + 0.5) * sp
    Xs, Ys = np.meshgrid(coords, coords, indexing="ij")  # the scanner's frame: field of view, table extent, text
    X, Y = Xs - p["offset_mm"][0], Ys - p["offset_mm"][1]  # the patient's (the table moves up and down with it)
    a, b = p["body_a"], p["body_b"]
    ca, cb = a - p["fat_mm"] - p["wall_mm"], b - p["fat_mm"] - p["wall_mm"]  # thoracic cavity half-axes
    vessel_hu = u(150, 350) if p["contrast"] else u(30, 50)
    # 3D structures in mm (x, y, z): z is the height above the lowest diaphragm point
    hilum = np.array([[-0.42 * ca, 0.05 * cb, 0.5 * L], [0.42 * ca, 0.05 * cb, 0.5 * L]])
    nv = p["vessels"]
    vs = _segments(rng, nv, hilum[rng.integers(0, 2, nv)], np.array([0.5 * ca, 0.8 * cb, 0.45 * L]), (1.0, 4.5))
    aw = _segments(rng, nv // 3, hilum[rng.integers(0, 2, nv // 3)], np.array([0.45 * ca, 0.7 * cb, 0.4 * L]),
                   (0.8, 2.5))
    t_car = u(0.58, 0.68)
    ggo = [(u(-0.9, 0.9) * ca, u(-0.6, 0.95) * cb, u(0.1, 0.9) * L, u(12, 45), u(-700, 30)) for _ in range(p["ggo"])]
    nod = []
    for _ in range(p["pleural_nodules"]):
        ang = u(0, 2 * np.pi)
        nod.append((0.97 * ca * np.cos(ang), 0.97 * cb * np.sin(ang), u(0.15, 0.9) * L, u(3, 11)))
    emph = [(u(-0.8, 0.8) * ca, u(-0.8, 0.5) * cb, u(0.4, 1.0) * L, u(20, 60)) for _ in range(3 * p["emphysema"])]
    eff_side, eff_h = int(rng.integers(-1, 2)), u(0.2, 0.45)
    cons_lo = rc.uniform(-0.05, 0.3)  # dependent consolidation: heights (chest lengths), side, depth, HU
    cons_z, cons_side = (cons_lo, cons_lo + rc.uniform(0.2, 0.6)), int(rc.integers(-1, 2))
    cons_depth, cons_hu = rc.uniform(0.15, 0.45), rc.uniform(-250, 40)
    bronchograms = _segments(rc, 10, np.array([[s * 0.45 * ca, 0.75 * cb, (cons_z[0] + 0.2) * L] for s in
                                                rc.choice([-1, 1], 10)]), np.array([0.35 * ca, 0.2 * cb, 0.3 * L]),
                             (1.0, 2.5))
    low = rng.normal(size=(max(size // 16, 4), max(size // 16, 4), max(num_slices // 3, 2)))
    texture = ndimage.zoom(ndimage.gaussian_filter(low, 1.0), [size / low.shape[0], size / low.shape[1],
                                                             num_slices / low.shape[2]], order=1)
    texture = texture[:size, :size, :num_slices] / max(float(texture.std()), 1e-6)
    rib_ang = np.deg2rad(np.r_[np.linspace(-160, -25, 6), np.linspace(25, 160, 6)])

    image = np.empty((size, size, num_slices), np.float32)
    mask = np.zeros((size, size, num_slices), np.uint8)
    body_mask = np.zeros((size, size, num_slices), bool)
    tilt = np.tan(np.deg2rad(p["tilt_deg"]))
    for k in range(num_slices):
        z = (t0 + (k + 0.5) / num_slices * (t1 - t0)) * L
        t = z / L
        Yk = Y - (z - 0.5 * L) * tilt  # gantry tilt shifts the anatomy along y from slice to slice
        neck = np.clip((t - 0.95) / 0.25, 0, 1)
        ak, bk = a * (1 - 0.45 * neck), b * (1 - 0.3 * neck)
        body = _superellipse(X, Yk, ak, bk, p["body_p"])
        inner = _superellipse(X, Yk, ak - p["fat_mm"], bk - p["fat_mm"], p["body_p"])
        sl = np.full((size, size), -1000.0, np.float32)
        sl[body] = u(-110, -80)
        sl[inner] = 45.0
        if p["arms_down"]:
            for s in (-1, 1):
                arm = ((X - s * (ak + 45)) / 42) ** 2 + (Yk / 48) ** 2 <= 1
                sl[arm] = -90.0
                sl[((X - s * (ak + 45)) / 30) ** 2 + (Yk / 36) ** 2 <= 1] = 50.0
                sl[((X - s * (ak + 45)) / 11) ** 2 + (Yk / 11) ** 2 <= 1] = 600.0
                body |= arm
        # the lungs: thoracic cavity minus mediastinum, spine, above the diaphragm domes, below the apices
        prof = np.clip(1.0 - ((t - 0.45) / 0.62) ** 2, 0, 1) ** 0.5 if t > 0.45 else 1.0
        cav = _superellipse(X / (1 + p["asym"] * np.sign(X)), Yk - 0.08 * cb, ca * (0.55 + 0.45 * prof), cb * (0.6 + 0.4 * prof), 2.2)
        lungs = cav & (t < 1.0)
        if t > 0.7:  # apices: each lung narrows to a dome around its own centre
            r_apex = max(0.0, (1.0 - t) / 0.3) ** 0.5
            for s in (-1, 1):
                out = ((X - s * 0.48 * ca) / (0.5 * ca * r_apex + 1e-3)) ** 2 + (Yk / (0.75 * cb * r_apex + 1e-3)) ** 2 > 1
                lungs &= ~(out & (s * X > 0))
        mx = 0.06 * ca * (1 if t < 0.5 else 0.3)
        mw = p["med_w"] * ca * (1.0 + 0.5 * (t < 0.5))
        med = ((X - mx) / mw) ** 4 + ((Yk + 0.1 * cb) / (0.8 * cb)) ** 4 <= 1  # rounded; lungs wrap behind it
        hs = p["heart"] * np.clip(np.sin(np.pi * (t - 0.05) / 0.55), 0, 1) if t < 0.6 else 0.0
        heart = (hs > 0) & (((X - 0.22 * ca) / (0.5 * ca * hs + 1e-3)) ** 2
                            + ((Yk + 0.15 * cb) / (0.62 * cb * hs + 1e-3)) ** 2 <= 1)
        spine = (X**2 + (Yk - 0.92 * cb) ** 2) <= (0.3 * cb) ** 2
        aorta = ((X - 0.22 * ca) ** 2 + (Yk - 0.62 * cb) ** 2) <= 12.0**2
        lungs &= ~(med | heart | spine | aorta)
        for s, dome in ((-1, p["dome_r"]), (1, p["dome_l"])):  # domes: higher centrally, recesses at the rim
            h = dome * L - 0.55 * L * ((X - s * 0.45 * ca) ** 2 / (1.1 * ca) ** 2 + (Yk / (1.3 * cb)) ** 2)
            below = (s * X >= 0) & (z < h * (1 + p["asym"] * s))
            lungs &= ~below
            organ = below & cav
            sl[organ] = 55.0 if s < 0 else 42.0  # liver / spleen
            if s > 0 and z < h.max() - 15:
                gas = (((X - 0.45 * ca) / 35) ** 2 + ((Yk + 0.35 * cb) / 25) ** 2 <= 1) & organ
                sl[gas] = -1000.0
        sl[lungs] = (p["lung_hu"] + p["gradient_hu"] * Yk / cb
                     + 25.0 * texture[:, :, k])[lungs]
        mask_k = lungs.copy()
        if p["consolidation"] and cons_z[0] <= t <= cons_z[1]:  # dependent consolidation: dense, but lung
            cons = lungs & (Yk > cb * (0.9 - cons_depth) + 8.0 * texture[:, :, k])
            if cons_side:
                cons &= cons_side * X > 0
            sl[cons] = (cons_hu + 30.0 * texture[:, :, k])[cons]
            _draw_segments(X, Yk, z, bronchograms, cons, sl, -950.0)  # air bronchograms: open airways in it
        # structures inside the lung: vessels, small airways (lung), pathology (lung), emphysema (lung)
        _draw_segments(X, Yk, z, vs, lungs, sl, vessel_hu)
        _draw_segments(X, Yk, z, aw, lungs, sl, -980.0, wall=1.0, wall_value=-150.0)
        for gx, gy, gz, gr, ghu in ggo:
            d = ((X - gx) ** 2 + (Yk - gy) ** 2 + (z - gz) ** 2) / gr**2 + 0.3 * texture[:, :, k]
            sl[(d <= 1) & lungs] = ghu + 20.0 * texture[:, :, k][(d <= 1) & lungs]
        for nx, ny, nz, nr in nod:
            d2 = (X - nx) ** 2 + (Yk - ny) ** 2 + (z - nz) ** 2
            inside = (d2 <= nr**2) & cav & ~(med | spine)
            sl[inside] = 35.0
            if lungs.any():
                mask_k |= inside
        for ex, ey, ez, er in emph:
            d = ((X - ex) ** 2 + (Yk - ey) ** 2 + (z - ez) ** 2) / er**2 + 0.5 * texture[:, :, k]
            sl[(d <= 1) & lungs] = -990.0
        # trachea and main bronchi: air with a wall, never lung
        if t > t_car - 0.12:
            if t >= t_car:
                tubes = [(mx * 0.3, 0.45 * cb, 9.0)]
            else:
                f = (t_car - t) / 0.12
                tubes = [(-f * 0.4 * ca, 0.45 * cb - f * 0.3 * cb, 6.5), (f * 0.4 * ca, 0.45 * cb - f * 0.3 * cb, 5.5)]
            for tx, ty, tr in tubes:
                d2 = (X - tx) ** 2 + (Yk - ty) ** 2
                sl[(d2 <= (tr + 2) ** 2) & inner] = 20.0
                sl[(d2 <= tr**2) & inner] = -1000.0
                mask_k &= ~(d2 <= (tr + 2) ** 2)
        if p["effusion"] and z < eff_h * L:  # dependent fluid: takes the back of the lung, is not lung
            depth = (1.0 - z / (eff_h * L)) * 0.6 * cb + 5.0
            eff = mask_k & (Yk > cb * 0.9 - depth)
            if eff_side:
                eff &= eff_side * X > 0
            sl[eff] = u(5, 25)
            mask_k &= ~eff
        sl[heart & inner] = vessel_hu if p["contrast"] else 40.0
        sl[aorta & inner] = vessel_hu
        sl[spine & inner] = 650.0
        sl[(X**2 + (Yk - 0.92 * cb) ** 2 <= (0.22 * cb) ** 2) & inner] = 250.0
        if t < 1.05:
            for ang in rib_ang:
                rx, ry = np.cos(ang) * (ak - p["fat_mm"] - 0.5 * p["wall_mm"]), np.sin(ang) * (bk - p["fat_mm"] - 0.5 * p["wall_mm"])
                sl[((X - rx) / 7) ** 2 + ((Yk - ry) / 5) ** 2 <= 1] = 500.0
        if p["table"]:
            curve = bk + p["table_gap_mm"] + 0.0012 * Xs**2
            tab = (Y >= curve) & (Y <= curve + 9) & (np.abs(Xs) <= 0.9 * p["fov_mm"] / 2)
            sl[tab & ~body] = 180.0
        # scanner: kernel blur or sharpening, correlated noise
        sigma = {"soft": 1.1, "standard": 0.7, "sharp": 0.4}[p["kernel"]] * 0.7 / sp
        sl = ndimage.gaussian_filter(sl, sigma)
        noise = rng.normal(0.0, 1.0, sl.shape)
        if p["kernel"] != "sharp":
            noise = ndimage.gaussian_filter(noise, 0.8)
        sl += (p["noise_hu"] * noise / max(float(noise.std()), 1e-6)).astype(np.float32)
        if not np.isnan(p["padding"]):
            outside = np.hypot(Xs, Ys) > p["fov_mm"] / 2 - sp
            sl[outside] = p["padding"]
            mask_k &= ~outside  # lung the reconstruction circle cuts off is not in the picture, nor in the mask
            body &= ~outside
        if p["text"]:
            _draw_text(sl, f"FLN {seed % 10000:04d}", int(0.03 * size), int(0.03 * size), max(size // 256, 1), 3071.0)
        image[:, :, k] = sl
        mask[:, :, k] = mask_k
        body_mask[:, :, k] = body
    image = np.clip(np.rint(image), -3024, 3071).astype(np.int16)
    spacing = (sp, sp, float(dz))
    origin = (-size / 2 * sp, -size / 2 * sp, t0 * L)
    return Phantom(image=image, mask=mask, spacing=spacing, origin=origin, body=body_mask)
