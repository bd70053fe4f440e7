"""The body outline as post-processing (RemoveOutsideBody, ``post#body``) on real chest CT: the room air and the
padding leave the mask, and lung reaching the image's edge or a narrow reconstruction circle never does."""

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from fusionlungnet_monai.transforms import RemoveOutsideBody, RemoveOutsideBodyd

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def lidc():
    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps

    out = []
    for case in ("LIDC-IDRI-0002", "LIDC-IDRI-0003"):
        ct, sp = load_ct_lps(DATA / "lidc_idri_slabs" / case)
        out.append((ct.astype(np.int16), classical_lung_mask(ct, sp) > 0))
    return out


def _run(ct, mask, affine=None):
    kw = {} if affine is None else {"affine": torch.as_tensor(affine)}
    got = RemoveOutsideBody()(MetaTensor(torch.as_tensor(mask[None].astype(np.uint8)), **kw),
                              MetaTensor(torch.as_tensor(ct[None]), **kw))
    return np.asarray(got)[0] > 0


def test_room_air_and_padding_leave_the_mask_lung_stays(lidc):
    """Lung plus every air and padding voxel outside it: all lung stays, over 80 % of that air goes (what stays is
    inside the body: airways, gas, air enclosed by the arms or the table), at 512² and at 64²."""
    for ct, lung in lidc:
        for step in (1, 8):  # 0.7-0.8 mm and 6 mm pixels
            c, m = ct[::step, ::step], lung[::step, ::step]
            air = (c < -900) & ~m
            out = _run(c, m | air)
            assert (out & m).sum() == m.sum()
            assert (out & air).sum() < 0.2 * air.sum(), (step, (out & air).sum() / air.sum())


def test_lung_at_a_narrow_field_of_view_or_a_crop_is_never_cut(lidc):
    """The failure that made lungmask switch its body mask off: a reconstruction circle that cuts through the lungs
    (padding at -2048 beyond it), and a crop through the chest, leave the lung at the edge; none of it is cut."""
    for ct, lung in lidc:
        x, y = np.mgrid[: ct.shape[0], : ct.shape[1]]
        beyond = np.hypot(x - ct.shape[0] / 2, y - ct.shape[1] / 2) > 0.3 * ct.shape[0]
        narrow = ct.copy()
        narrow[beyond] = -2048
        inside = lung & ~beyond[..., None]
        ring = np.abs(np.hypot(x - ct.shape[0] / 2, y - ct.shape[1] / 2) - 0.3 * ct.shape[0]) < 1.5
        assert (inside & ring[..., None]).sum() > 100  # the lung reaches the circle
        air = (narrow < -900) & (narrow > -1500) & ~inside
        out = _run(narrow, inside | air | beyond[..., None])
        assert (out & inside).sum() == inside.sum()
        assert not (out & beyond[..., None]).any()  # the padding goes
        cols = np.flatnonzero(lung.any(axis=(1, 2)))  # across the lungs, right to left: cut through both
        box = slice(cols[0] + 40, cols[-1] - 40)
        crop, m = np.ascontiguousarray(ct[box]), lung[box]
        assert m[0].sum() > 100 and m[-1].sum() > 100  # the lungs reach the crop's edges
        assert (_run(crop, m) & m).sum() == m.sum()


def test_expert_masks_of_real_crops_are_kept():
    """The elastix crop (57 x 78 voxels of 2.7 mm: the lung fills it, edge to edge) and the TotalSegmentator crop
    keep every voxel of their reference lung masks."""
    from fusionlungnet_monai.data import load_ct_lps

    pairs = [("elastix_lung_small/3DCT_lung_baseline_small.mha", "elastix_lung_small/3DCT_lung_baseline_small_mask.mha"),
             ("totalseg_example_ct/nifti_sm/example_ct_sm.nii.gz", "totalseg_example_ct/nifti_sm/lung_mask.nii.gz")]
    for image, mask in pairs:
        ct = load_ct_lps(DATA / image)[0].astype(np.int16)
        m = load_ct_lps(DATA / mask)[0] > 0
        assert (_run(ct, m) & m).sum() == m.sum(), image


@pytest.mark.parametrize("variant", ["emphysema", "sharp_kernel", "low_dose"])
def test_dark_or_sharpened_lung_cut_by_a_crop_is_kept_room_air_goes(variant):
    """The elastix crop (lung edge to edge) as ``scripts/robustness.py`` re-makes it: emphysematous (lung median
    about -950 HU), under a sharp kernel, at low dose. With -950 HU as the rule's air (0.3.14 before this fix) the
    lung cut by the crop's edges read as room air: 47 % of the expert mask was cleared under emphysema (14 % under
    the sharp kernel), and the shipped pipeline's IoU fell to 0.49 (sharp kernel 0.84). Now every lung voxel stays,
    and the room air around a whole-chest slice (LIDC-IDRI-0003, same variant) still goes."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from robustness import variant as remake

    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps

    ct, sp = load_ct_lps(DATA / "elastix_lung_small/3DCT_lung_baseline_small.mha")
    ref = load_ct_lps(DATA / "elastix_lung_small/3DCT_lung_baseline_small_mask.mha")[0] > 0
    ct, ref, _ = remake(variant, ct, ref, sp)
    kept = (_run(ct.astype(np.float32), ref) & ref).sum() / ref.sum()
    assert kept > 0.999, kept
    ct, sp = load_ct_lps(DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003")
    lung = classical_lung_mask(ct, sp) > 0
    ct, lung, _ = remake(variant, ct, lung, sp)
    air = (ct < -900) & ~lung
    out = _run(ct.astype(np.float32), lung | air)
    assert (out & lung).sum() / lung.sum() > 0.999
    assert (out & air).sum() < 0.2 * air.sum(), (out & air).sum() / air.sum()


def test_any_storage_order_and_inputs_not_in_hu(lidc):
    """A volume stored as coronal slices gives the same voxels as stored axially; a picture scaled 0-255 (no HU)
    and the dictionary version's missing HU key behave as the other HU steps do."""
    ct, lung = lidc[1]
    air = (ct < -900) & ~lung
    axial = _run(ct, lung | air)
    coronal = _run(np.ascontiguousarray(ct.transpose(0, 2, 1)), np.ascontiguousarray((lung | air).transpose(0, 2, 1)),
                   affine=np.array([[-0.8, 0, 0, 0], [0, 0, 1.0, 0], [0, -0.8, 0, 0], [0, 0, 0, 1]]))
    assert np.array_equal(coronal.transpose(0, 2, 1), axial)
    picture = MetaTensor(torch.full((1, 20, 20), 200, dtype=torch.uint8), meta={"filename_or_obj": "a.png"})
    mask = MetaTensor(torch.ones((1, 20, 20), dtype=torch.uint8))
    assert torch.equal(RemoveOutsideBody()(mask, picture), mask)
    with pytest.raises(KeyError, match="image_hu"):
        RemoveOutsideBodyd("pred")({"pred": mask})


def test_predict_keeps_a_real_slice_inside_the_body(tmp_path):
    """A real COVID-19 slice exported as a picture, on which the network takes the air pocket between the arm and
    the chest wall for lung: with post#body nothing of the mask lies outside the body, and the network alone
    (``--no-refine``) holds it too; switched off (``body_mask`` false), a quarter of it did."""
    from PIL import Image

    from fusionlungnet_monai.data import load_ct_lps
    from fusionlungnet_monai.predict import Predictor
    from fusionlungnet_monai.transforms import render_window

    dcm = next((DATA / "covid19_ny_sbu_sample" / "dicom").glob("*/*/19010101-23.dcm"))
    pic = render_window(load_ct_lps(dcm)[0][:, :, 0], 1500, -600)
    path = tmp_path / "slice.png"
    Image.fromarray(np.ascontiguousarray(pic.T)).save(path)
    for refine in (True, False):
        rep = Predictor(progress=False, refine=refine).predict(path, tmp_path / f"out{refine}").report
        assert rep["body_mask"] is True and rep["second_opinion"]["outside_body"] < 0.01, rep["second_opinion"]
    off = Predictor(progress=False)
    base = off._overrides
    off._overrides = lambda: {**base(), "body_mask": False}
    rep = off.predict(path, tmp_path / "off").report
    assert rep["body_mask"] is False and rep["second_opinion"]["outside_body"] > 0.1
