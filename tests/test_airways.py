"""Airway removal (post#remove_airways, ours): the trachea and main bronchi are taken out of the lung mask, in any
voxel order, and only they."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from fusionlungnet_monai import make_chest_phantom
from fusionlungnet_monai.transforms import RemoveAirways, RemoveAirwaysd


def _flip(aff: np.ndarray, shape, axes) -> np.ndarray:
    """The affine of an array after flipping ``axes`` (the same world positions)."""
    aff = aff.copy()
    for a in axes:
        aff[:3, 3] += aff[:3, a] * (shape[a] - 1)
        aff[:3, a] = -aff[:3, a]
    return aff


@pytest.fixture(scope="module")
def phantom_with_trachea_in_the_mask():
    """A v2 phantom and a "network" mask that holds its lungs plus the trachea and main bronchi (the dark tube that
    crosses the midline at the top slice: what the network and the HU boundary refinement can call lung)."""
    from scipy import ndimage

    ph = make_chest_phantom(3, size=192, z_range=(0.3, 1.1))
    lab, _ = ndimage.label((ph.image < -900) & ph.body & ~ph.mask)
    c = ph.image.shape[0] // 2
    ids = np.unique(lab[c - 3 : c + 4, :, -1])  # the dark tube that crosses the midline at the top slice
    air = np.isin(lab, ids[ids > 0])
    assert air.sum() > 2000, "the phantom's trachea and main bronchi are in view"
    return ph, ph.mask | air, air


def test_the_trachea_leaves_the_mask_and_the_lungs_stay(phantom_with_trachea_in_the_mask):
    ph, mask, air = phantom_with_trachea_in_the_mask
    out = RemoveAirways()(MetaTensor(torch.from_numpy(mask[None].astype(np.uint8)), affine=ph.affine_ras),
                          torch.from_numpy(ph.image[None]))
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8 and tuple(out.shape) == (1, *mask.shape)
    out = out[0].numpy() > 0
    assert (out & air).sum() < 0.1 * air.sum(), "most of the airway air is gone"
    assert (out & ph.mask).sum() > 0.995 * ph.mask.sum(), "the lungs are kept"


@pytest.mark.parametrize("axes", [(1,), (0, 1), (2,), (0, 1, 2)])
def test_any_storage_gives_the_same_result(phantom_with_trachea_in_the_mask, axes):
    """The airway search starts at the head end: a volume stored feet first or mirrored gives the mirrored result."""
    ph, mask, _ = phantom_with_trachea_in_the_mask
    step = RemoveAirwaysd(keys="pred")

    def run(m, hu, aff):
        return step({"pred": MetaTensor(torch.from_numpy(m[None].astype(np.uint8)), affine=aff),
                     "image_hu": torch.from_numpy(np.ascontiguousarray(hu)[None])})["pred"][0].numpy()

    ref = run(mask, ph.image, ph.affine_ras)
    flipped = run(np.flip(mask, axes), np.flip(ph.image, axes), _flip(ph.affine_ras, mask.shape, axes))
    assert (np.flip(flipped, axes) == ref).all()
    assert (ref != mask).any(), "something was removed"


def test_slices_pictures_and_non_hu_images_pass_unchanged(phantom_with_trachea_in_the_mask):
    ph, mask, _ = phantom_with_trachea_in_the_mask
    m = MetaTensor(torch.from_numpy(mask[None].astype(np.uint8)), affine=ph.affine_ras)
    remove = RemoveAirways()
    for hu in (torch.from_numpy(ph.image[None]).clamp(min=0),  # no air: not HU
               torch.from_numpy(ph.image[None]).clamp(0, 255).to(torch.uint8)):  # an 8-bit picture
        assert (remove(m, hu) == m).all()
    two_d = MetaTensor(torch.from_numpy(mask[None, :, :, 40].astype(np.uint8)))
    assert (remove(two_d, torch.from_numpy(ph.image[None, :, :, 40])) == two_d).all()
    with pytest.raises(ValueError, match="not on the mask's grid"):
        remove(m, torch.from_numpy(ph.image[None, :-1]))
    with pytest.raises(KeyError, match="image_hu"):
        RemoveAirwaysd(keys="pred")({"pred": m})


def test_a_one_slice_volume_passes_unchanged():
    """One slice has no airway tree to follow: on single slices of the real elastix crop (a hemithorax without the
    trachea) the airway search, run as on a volume, took up to 418 dark lung voxels per slice for airways (163 on
    slice 22 since the coarse-grid threshold)."""
    from pathlib import Path

    from fusionlungnet_monai.classical import airway_mask
    from fusionlungnet_monai.data import LoadCTImage

    crop = Path(__file__).parent / "data" / "elastix_lung_small"
    ct = LoadCTImage(image_only=True)(str(crop / "3DCT_lung_baseline_small.mha"))
    ref = np.asarray(LoadCTImage(image_only=True)(str(crop / "3DCT_lung_baseline_small_mask.mha"))) > 0
    hu = torch.as_tensor(np.asarray(ct, dtype=np.float32))[None, :, :, 22:23]
    assert airway_mask(hu[0].numpy(), [2.7, 2.7, 5.0]).any()  # what the search would take out of this slice
    one = MetaTensor(torch.as_tensor(ref[None, :, :, 22:23].astype(np.uint8)), affine=ct.affine)
    assert (RemoveAirways()(one, hu) == one).all()


def test_a_bronchus_opening_into_dark_lung_does_not_take_the_lung():
    """Emphysema: the real LIDC-IDRI-0003 slab with its lung pulled halfway to -1000 HU (lung median -930 HU). The
    airway search used to take whole 3D components of the dark voxels, followed a bronchus into the dark lung and
    took 48 mL of it (the shipped pipeline's IoU fell from 0.990 to 0.937). Followed slice by slice, each blob ringed
    by wall, it stops at the lung. LIDC-IDRI-0002's trachea (3.7 mL in the slab) is still found."""
    from pathlib import Path

    from fusionlungnet_monai.classical import airway_mask, classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps

    slabs = Path(__file__).parent / "data" / "lidc_idri_slabs"
    ct, sp = load_ct_lps(slabs / "LIDC-IDRI-0003")
    lung = classical_lung_mask(ct, sp) > 0
    dark = ct.astype(np.float32)
    dark[lung] = -1000.0 + (dark[lung] + 1000.0) * 0.5
    dark = np.round(dark).astype(np.int16)
    assert np.median(dark[lung]) < -920
    ml = float(np.prod(sp)) / 1000.0
    assert airway_mask(dark, sp).sum() * ml < 5.0  # 1.6 mL; 48 mL before
    mask = MetaTensor(torch.from_numpy(lung[None].astype(np.uint8)), affine=np.diag([-sp[0], -sp[1], sp[2], 1.0]))
    kept = RemoveAirways()(mask, torch.from_numpy(dark[None]))[0].numpy() > 0
    assert (kept & lung).sum() > 0.99 * lung.sum()
    ct2, sp2 = load_ct_lps(slabs / "LIDC-IDRI-0002")
    assert airway_mask(ct2, sp2).sum() * float(np.prod(sp2)) / 1000.0 > 3.0


def _block_mean(ct: np.ndarray, f: int, fz: int = 1) -> np.ndarray:
    """``ct`` resampled to a coarser grid by averaging f x f x fz blocks (the partial volume a coarse scan has)."""
    x, y, z = (s // k * k for s, k in zip(ct.shape, (f, f, fz)))
    return ct[:x, :y, :z].astype(np.float32).reshape(x // f, f, y // f, f, z // fz, fz).mean(axis=(1, 3, 5))


@pytest.mark.parametrize("f, fz", [(4, 1), (8, 1), (8, 4)])
def test_the_trachea_is_found_on_coarse_grids(f, fz):
    """Airways out at any voxel size: real LIDC-IDRI-0002 (512², 0.68 x 1.25 mm) resampled to 128² (2.7 mm), to 64²
    (5.5 mm) and to 64² with 5 mm slices. At 64² the trachea is 3 pixels across and the 3x3 median erased it (recall
    0.54 and 0.33 of the native search's trachea, resampled the same way). The emphysematous LIDC-IDRI-0003 (lung
    pulled to -930 HU) on the same grids gives almost nothing."""
    from pathlib import Path

    from fusionlungnet_monai.classical import airway_mask, classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps

    slabs = Path(__file__).parent / "data" / "lidc_idri_slabs"
    ct, sp = load_ct_lps(slabs / "LIDC-IDRI-0002")
    ref = _block_mean(airway_mask(ct, sp), f, fz) > 0.5
    coarse = (sp[0] * f, sp[1] * f, sp[2] * fz)
    found = airway_mask(_block_mean(ct, f, fz), coarse)
    assert ref.sum() > 20
    assert (found & ref).sum() >= 0.85 * ref.sum(), "the trachea is found"  # 0.96, 0.90, 0.92
    assert (found & ref).sum() >= 0.7 * found.sum(), "and little else"  # 0.92, 0.84, 0.92
    ct3, sp3 = load_ct_lps(slabs / "LIDC-IDRI-0003")
    lung = classical_lung_mask(ct3, sp3) > 0
    dark = ct3.astype(np.float32)
    dark[lung] = -1000.0 + (dark[lung] + 1000.0) * 0.5
    coarse3 = (sp3[0] * f, sp3[1] * f, sp3[2] * fz)
    assert airway_mask(_block_mean(dark, f, fz), coarse3).sum() * float(np.prod(coarse3)) / 1000.0 < 1.5  # 0.4, 0, 0
