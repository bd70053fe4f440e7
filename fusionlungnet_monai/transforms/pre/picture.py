"""CT pictures (PNG/JPG slices exported from a viewer) mapped back to approximate HU, and HU slices rendered as such
pictures (ours, not in the paper).

A picture's grey levels depend on the viewer's window, on inversion, gamma and JPEG compression; the network and the
HU post-processing know HU. :func:`estimate_picture_window` reads each picture's own histogram: which side is air
(polarity), the grey of air outside the body (or of the lungs), the soft-tissue peak of the body, and whether the
window clipped either end. :class:`PictureToHU` maps the picture linearly through those two anchors (air -1000 HU,
soft tissue +40 HU), so pictures take the volume path's chain. :class:`RandCTWindow` renders an HU slice through a
randomly drawn window (lung, mediastinal, wide, narrow, clipped, inverted, gamma, JPEG, noise) for training, so
the network sees what :class:`PictureToHU` makes of real exports.
"""

from __future__ import annotations

import io
import json
from typing import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy
from scipy import ndimage

from fusionlungnet_monai.utils.hu import PICTURE_META, is_eight_bit

__all__ = ["estimate_picture_window", "PictureToHU", "RandCTWindow", "PICTURE_META", "POLARITIES", "LUMA", "AIR_HU_ANCHOR",
           "TISSUE_HU_ANCHOR", "LUNG_HU_ANCHOR", "CLINICAL_WINDOWS", "render_window", "to_grey"]

#: HU given to the air anchor (outside the body), the lung anchor (when no outside air is seen) and the soft tissue
AIR_HU_ANCHOR, LUNG_HU_ANCHOR, TISSUE_HU_ANCHOR = -1000.0, -850.0, 40.0
#: a clipped end's assumed distance from the soft-tissue peak in HU: the mediastinal window W400/L40 ends 200 HU
#: below soft tissue; a narrow lung window ends at tissue
CLIPPED_LOW_SPAN_HU, CLIPPED_HIGH_HU = 200.0, -50.0
#: clinical windows ``(width, level)`` in HU: lung, mediastinal, wide (full CT range)
CLINICAL_WINDOWS = {"lung": (1500.0, -600.0), "mediastinal": (400.0, 40.0), "wide": (4096.0, 1024.0)}
#: the least grey span between the air and tissue anchors for a peak estimate (below: percentile fallback)
MIN_SPAN_GREY = 16.0
#: ITU-R 601 luma weights of R, G, B (colour pictures to grey; CTIntensityNormalize uses the same)
LUMA = (0.299, 0.587, 0.114)
#: what ``polarity`` may be
POLARITIES = ("auto", "normal", "inverted")


def to_grey(img: np.ndarray) -> np.ndarray:
    """A channel-first picture ``(C, ...)`` as one float32 grey plane ``(...)`` (ITU-R 601 luma for 3-4 channels)."""
    a = np.asarray(img, dtype=np.float32)
    if a.shape[0] in (3, 4):
        return np.tensordot(np.asarray(LUMA, np.float32), a[:3], axes=1)
    return a[0]


def _otsu(values: np.ndarray) -> float:
    hist = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    w = np.cumsum(hist)
    m = np.cumsum(hist * np.arange(256))
    total, mean = w[-1], m[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean * w - m * total) ** 2 / (w * (total - w))
    between[~np.isfinite(between)] = -1
    return float(np.argmax(between)) + 0.5


def _mode(values: np.ndarray) -> float | None:
    """The peak of a lightly smoothed grey histogram of ``values`` (None when empty)."""
    if values.size == 0:
        return None
    hist = np.bincount(np.clip(np.round(values), 0, 255).astype(np.int64), minlength=256).astype(np.float64)
    hist = ndimage.gaussian_filter1d(hist, 2.0)
    return float(np.argmax(hist))


def _grey_noise(g: np.ndarray) -> float:
    """A robust estimate of a picture's grey-level noise (standard deviation): the median absolute difference of
    each pixel from its 3x3 median, scaled to a Gaussian's, over the pixels off the grey scale's ends (a clipped
    end is flat); about 0 for a clean export."""
    diff = np.abs(g - ndimage.median_filter(g, size=3))
    inside = (g > g.min() + 1) & (g < g.max() - 1)
    return float(1.4826 * np.median(diff[inside] if inside.sum() > 0.01 * g.size else diff))


def _low_tolerance(noise: float) -> float:
    """How far above a picture's lowest grey a pixel still counts as at that end: 1 grey level, or 3 standard
    deviations of visible noise (over 2 grey levels; below that, the estimate is the 8-bit rounding of a wide
    window, where a few grey levels separate air from lung)."""
    return 3.0 * noise if noise > 2.0 else 1.0


def _ring(shape: Sequence[int], width: int | None = None) -> np.ndarray:
    w = width or max(2, int(round(0.03 * min(shape))))
    ring = np.ones(shape, bool)
    ring[w:-w, w:-w] = False
    return ring


def _centre(shape: Sequence[int]) -> np.ndarray:
    c = np.zeros(shape, bool)
    (a0, a1), (b0, b1) = ((int(0.35 * s), int(np.ceil(0.65 * s))) for s in shape)
    c[a0:a1, b0:b1] = True
    return c


def _enclosed_fraction(where: np.ndarray, min_fraction: float = 0.002) -> float:
    """The fraction of the picture covered by components of ``where`` that touch no edge and are at least
    ``min_fraction`` of the picture (the lungs, not noise)."""
    labels, n = ndimage.label(where)
    if not n:
        return 0.0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    edge = np.unique(labels[_ring(where.shape, 1)])
    sizes[edge] = 0
    sizes[0] = 0
    return float(sizes[sizes >= min_fraction * where.size].sum()) / where.size


def estimate_picture_window(grey: np.ndarray, polarity: str = "auto") -> dict:
    """Estimate how a CT picture's grey levels relate to HU, from the picture alone.

    Polarity: air outside the body touches the picture's edge and the mediastinum sits in its centre; a picture
    whose edge is mostly on the bright side of its Otsu threshold and whose centre is mostly on the dark side is
    inverted; when that is undecided (a clipped window puts lungs and outside air at one end), the edge's flat end
    (pixels at 0 or 255) is air. Anchors, on the picture with air dark: the body is the largest bright component (holes filled); the
    soft-tissue anchor is the peak of its bright pixels, the air anchor the median grey of the dark pixels outside
    it (the lungs' median, anchored at -850 HU, when the picture shows no outside air); pixels at the lowest grey
    (padding, a clipped end; the lowest grey that holds 0.2 % of the picture, plus 3 standard deviations of visible
    noise, so that JPEG ringing and grain do not hide it) are left out of both. When regions at the lowest grey that touch no edge cover more
    than 2 % of the picture, the window clipped the lungs too: that grey is taken as
    ``CLIPPED_LOW_SPAN_HU`` below soft tissue (a mediastinal window) and the clipped pixels as air; a soft-tissue
    peak at the top grey means the window ends below tissue (a narrow lung window). Without two anchors
    ``MIN_SPAN_GREY`` apart, the 0.5th/99.5th percentiles are taken as -1000 and +300 HU.

    Args:
        grey: one grey plane, 0-255.
        polarity: ``"auto"`` (detect), ``"normal"`` or ``"inverted"`` (as told).

    Returns:
        a dict: ``inverted``, ``polarity`` (``"detected"``, ``"given"``, ``"assumed"``), ``method`` (``"peaks"`` or
        ``"percentiles"``), ``air_grey``, ``tissue_grey``, ``air_hu``, ``tissue_hu``, ``clipped_low``,
        ``clipped_high``, ``noise_grey`` (the grey-level noise estimate), ``hu_at_0``, ``hu_at_255`` (the estimated window's ends) and ``trusted`` (peaks found,
        neither end clipped).

    Raises:
        ValueError: for an unknown ``polarity``.
    """
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be 'auto', 'normal' or 'inverted', got {polarity!r}.")
    g = np.asarray(grey, dtype=np.float32)
    t = _otsu(g)
    if polarity == "auto":
        ring = g[_ring(g.shape)]
        score = float((ring > t).mean() - (g[_centre(g.shape)] > t).mean())
        if abs(score) <= 0.2:  # undecided (a clipped window puts lungs and outside air at one end): the edge's
            # flat end is air (outside air or padding, clipped to the window's dark end when the picture is normal)
            score = float((ring >= 254).mean() - (ring <= 1).mean())
            score = score if abs(score) > 0.3 else 0.0
        inverted, how = score > 0.2, ("detected" if abs(score) > 0.2 else "assumed")
    else:
        inverted, how = polarity == "inverted", "given"
    if inverted:
        g = 255.0 - g
    hist = np.bincount(np.clip(np.round(g), 0, 255).astype(np.int64).ravel(), minlength=256)
    low = float(np.flatnonzero(hist >= 0.002 * g.size)[0]) if (hist >= 0.002 * g.size).any() else float(g.min())
    # a clipped end, or the scanner's padding outside its field of view, spread by the picture's noise or JPEG
    noise = _grey_noise(g)
    at_low = g <= low + _low_tolerance(noise)
    mid = ~at_low & (g < 254)  # without the spikes of the window's ends (padding, clipped lungs, bone)
    t = _otsu(g[mid]) if mid.sum() > 0.01 * g.size else t
    bright = g > t
    labels, n = ndimage.label(bright)
    body = np.zeros_like(bright)
    if n:
        body = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:])))
    clipped_low = _enclosed_fraction(at_low) > 0.02  # the lungs at the lowest grey too: the window clipped them
    body_bright = g[body & bright]
    saturated = body_bright >= 254  # bone and contrast at the top of the window, or tissue when it clipped there
    clipped_high = bool(body_bright.size and saturated.mean() > 0.5)
    tissue = 255.0 if clipped_high else _mode(body_bright[~saturated])
    est = {"inverted": bool(inverted), "polarity": how, "clipped_low": clipped_low, "clipped_high": False,
           "noise_grey": round(noise, 2)}
    if clipped_low:
        air_grey, air_hu = low, TISSUE_HU_ANCHOR - CLIPPED_LOW_SPAN_HU
    else:
        outside, lungs = g[~body & ~bright & ~at_low], g[body & ~bright & ~at_low]
        use_outside = outside.size >= 0.01 * g.size
        air_grey = float(np.median(outside if use_outside else lungs)) if (use_outside or lungs.size) else None
        air_hu = AIR_HU_ANCHOR if use_outside else LUNG_HU_ANCHOR
    tissue_hu = CLIPPED_HIGH_HU if clipped_high else TISSUE_HU_ANCHOR
    if tissue is not None and air_grey is not None and tissue - air_grey >= MIN_SPAN_GREY:
        est.update(method="peaks", air_grey=air_grey, tissue_grey=tissue, air_hu=air_hu, tissue_hu=tissue_hu,
                   clipped_high=bool(clipped_high))
    else:
        lo_p, hi_p = np.percentile(g, [0.5, 99.5])
        est.update(method="percentiles", air_grey=float(lo_p), tissue_grey=float(max(hi_p, lo_p + 1.0)),
                   air_hu=AIR_HU_ANCHOR, tissue_hu=300.0)
    scale = (est["tissue_hu"] - est["air_hu"]) / (est["tissue_grey"] - est["air_grey"])
    est["hu_at_0"] = round(est["air_hu"] - scale * est["air_grey"], 1)
    est["hu_at_255"] = round(est["air_hu"] + scale * (255.0 - est["air_grey"]), 1)
    est["trusted"] = est["method"] == "peaks" and not (est["clipped_low"] or est["clipped_high"])
    for k in ("air_grey", "tissue_grey"):
        est[k] = round(float(est[k]), 1)
    if inverted:  # the anchors as the picture stores them
        est["air_grey"], est["tissue_grey"] = round(255.0 - est["air_grey"], 1), round(255.0 - est["tissue_grey"], 1)
    return est


class PictureToHU(Transform):
    """A CT picture (8-bit PNG/JPG grey or colour, channel-first) as one channel of approximate HU, through
    :func:`estimate_picture_window`; the estimate goes into the MetaTensor's meta under :data:`PICTURE_META`, and
    :class:`~fusionlungnet_monai.transforms.CTIntensityNormalize` then treats the image as HU. Pixels at a clipped
    low end become air (-1000 HU). Images that are not pictures (HU volumes, DICOM) pass unchanged.

    Args:
        polarity: ``"auto"``, ``"normal"`` or ``"inverted"`` (see :func:`estimate_picture_window`).
        only_pictures: act only on images whose source is a picture file or whose type is ``uint8``
            (``False``: on every input, for arrays already known to be pictures).

    Raises:
        ValueError: for an unknown ``polarity``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, polarity: str = "auto", only_pictures: bool = True) -> None:
        if polarity not in POLARITIES:
            raise ValueError(f"polarity must be 'auto', 'normal' or 'inverted', got {polarity!r}.")
        self.polarity, self.only_pictures = polarity, only_pictures

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.only_pictures and not is_eight_bit(img):
            return img
        grey = to_grey(convert_to_numpy(img))
        est = estimate_picture_window(grey, self.polarity)
        g = 255.0 - grey if est["inverted"] else grey
        air = 255.0 - est["air_grey"] if est["inverted"] else est["air_grey"]
        tissue = 255.0 - est["tissue_grey"] if est["inverted"] else est["tissue_grey"]
        scale = (est["tissue_hu"] - est["air_hu"]) / (tissue - air)
        hu = est["air_hu"] + scale * (g - air)
        if est["clipped_low"]:
            hu[g <= air + _low_tolerance(est["noise_grey"])] = AIR_HU_ANCHOR
        out, *_ = convert_to_dst_type(torch.from_numpy(np.ascontiguousarray(hu[None], dtype=np.float32)), img,
                                      dtype=torch.float32)
        if isinstance(out, MetaTensor):
            out.meta[PICTURE_META] = json.dumps(est)  # a string: collates and decollates unchanged
        return out


def render_window(hu: np.ndarray, width: float, level: float, gamma: float = 1.0, invert: bool = False,
                  jpeg_quality: int | None = None, noise: float = 0.0, rng: np.random.Generator | None = None
                  ) -> np.ndarray:
    """An HU slice as a viewer exports it: window ``(width, level)``, gamma, inversion, 8-bit, optional grey
    noise (standard deviation in grey levels) and JPEG compression; returns ``uint8`` of the input's shape."""
    x = np.clip((np.asarray(hu, np.float32) - (level - width / 2.0)) / width, 0.0, 1.0) ** gamma
    x = x * 255.0
    if invert:
        x = 255.0 - x
    if noise:
        x = x + (rng or np.random.default_rng()).normal(0.0, noise, x.shape)
    out = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if jpeg_quality is not None:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(jpeg_quality))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"), dtype=np.uint8)
    return out


class RandCTWindow(RandomizableTransform):
    """Training augmentation (ours): with probability ``prob``, render a one-channel HU slice ``(1, H, W)`` as a
    viewer's picture (:func:`render_window` through a randomly drawn window: lung, mediastinal or wide, or a random
    width 300-4000 HU and level -800-100 HU, gamma 0.5-2, inverted, JPEG quality 30-95, grey noise), then map it
    back with :class:`PictureToHU`, so training sees the intensities inference makes of real exports. Volumes
    ``(1, H, W, D)`` are rendered slice by slice with one draw.

    Args:
        prob: probability of rendering.
        invert_prob, gamma_prob, jpeg_prob, noise_prob: probabilities of each degradation once rendering.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, prob: float = 0.5, invert_prob: float = 0.2, gamma_prob: float = 0.3, jpeg_prob: float = 0.4,
                 noise_prob: float = 0.3) -> None:
        RandomizableTransform.__init__(self, prob)
        self.invert_prob, self.gamma_prob, self.jpeg_prob, self.noise_prob = invert_prob, gamma_prob, jpeg_prob, \
            noise_prob
        self.params: dict = {}

    def randomize(self, data=None) -> None:
        super().randomize(None)
        r = self.R
        kind = r.choice(["lung", "mediastinal", "wide", "random"])
        width, level = CLINICAL_WINDOWS[kind] if kind != "random" else (r.uniform(300, 4000), r.uniform(-800, 100))
        self.params = {"width": float(width), "level": float(level),
                       "gamma": float(r.uniform(0.5, 2.0)) if r.rand() < self.gamma_prob else 1.0,
                       "invert": bool(r.rand() < self.invert_prob),
                       "jpeg_quality": int(r.randint(30, 96)) if r.rand() < self.jpeg_prob else None,
                       "noise": float(r.uniform(1, 8)) if r.rand() < self.noise_prob else 0.0}

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        a = convert_to_numpy(img, dtype=np.float32)
        rng = np.random.default_rng(int(self.R.randint(0, 2**31 - 1)))
        planes = a[0][..., None] if a.ndim == 3 else a[0]
        hu = np.empty(planes.shape, np.float32)
        to_hu = PictureToHU(only_pictures=False)
        for z in range(planes.shape[-1]):
            pic = render_window(planes[..., z], rng=rng, **self.params)
            hu[..., z] = to_hu(pic[None].astype(np.float32))[0]
        hu = hu[..., 0] if a.ndim == 3 else hu
        out, *_ = convert_to_dst_type(torch.from_numpy(hu[None]), img, dtype=torch.float32)
        return out
