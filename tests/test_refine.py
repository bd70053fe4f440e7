"""HU boundary refinement: the network's blurred lung border, re-decided by the CT's own HU."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from scipy import ndimage

from conftest import BUNDLE
from fusionlungnet_monai.classical import dice_score
from fusionlungnet_monai.utils import LUNG_HU_THRESHOLD
from fusionlungnet_monai.transforms import HUBoundaryRefine, HUBoundaryRefined, KeepHUd, compact_hu, median3x3_below


@pytest.mark.parametrize("shape", [(1, 37, 41), (1, 37, 41, 6), (1, 1, 5), (1, 2, 2, 3)])
@pytest.mark.parametrize("strict", [True, False])
def test_median3x3_below_is_the_thresholded_scipy_median(shape, strict):
    x = torch.randint(-1000, 200, shape).to(torch.int16)
    size = (3, 3) + (1,) * (len(shape) - 3)
    med = ndimage.median_filter(x[0].numpy(), size=size)
    ref = med < -400 if strict else med <= -400
    got = median3x3_below(x, -400, strict)
    assert got.dtype == torch.bool and tuple(got.shape) == shape
    np.testing.assert_array_equal(got[0].numpy(), ref)


def _chest(size=96, dense_spot=True):
    """HU slice: body at +40, two elliptic lungs at -850 (one holds a dense nodule at +40 far from its border),
    outside air -1000; and the lung mask."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    body = ((xx - size / 2) / (0.45 * size)) ** 2 + ((yy - size / 2) / (0.35 * size)) ** 2 <= 1
    lungs = np.zeros_like(body)
    for cx in (0.3 * size, 0.7 * size):
        lungs |= ((xx - cx) / (0.13 * size)) ** 2 + ((yy - size / 2) / (0.25 * size)) ** 2 <= 1
    hu = np.where(body, 40.0, -1000.0)
    hu[lungs] = -850.0
    if dense_spot:
        hu[(xx - 0.3 * size) ** 2 + (yy - size / 2) ** 2 <= (0.06 * size) ** 2] = 40.0  # consolidation inside
    return hu.astype(np.float32), lungs


def _blurred_probability(mask: np.ndarray, factor: int = 3) -> torch.Tensor:
    """What the network gives after Invertd: a mask seen at 1/factor resolution, resized back bilinearly."""
    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    small = F.interpolate(m, scale_factor=1 / factor, mode="area")
    small = (small > 0.6).float()  # the network misses a little at the border (its false-negative bias)
    return F.interpolate(small, size=mask.shape, mode="bilinear", align_corners=False)[0]


def _iou(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return (a & b).sum() / (a | b).sum()


def test_refinement_recovers_the_sharp_border_and_keeps_confident_dense_lung():
    hu, lungs = _chest()
    prob = _blurred_probability(lungs)
    refined = HUBoundaryRefine(-320, (0.01, 0.99))(prob, torch.as_tensor(hu)[None])
    before, after = _iou(prob[0] > 0.5, lungs), _iou(refined[0] > 0.5, lungs)
    assert before < 0.93 and after > 0.99, (before, after)
    size = hu.shape[0]
    assert bool(refined[0, size // 2, int(0.3 * size)] > 0.5), "dense lung the network is sure of stays lung"
    # only uncertain voxels change, and they become exactly 0 or 1
    changed = (refined != prob)[0]
    p = prob[0]
    assert bool(((p[changed] > 0.01) & (p[changed] < 0.99)).all())
    assert set(torch.unique(refined[0][changed]).tolist()) <= {0.0, 1.0}


def test_refinement_keeps_type_meta_and_works_on_volumes():
    hu, lungs = _chest(64)
    prob = _blurred_probability(lungs)[..., None].repeat(1, 1, 1, 3)
    vol_hu = np.repeat(hu[None, ..., None], 3, axis=-1).astype(np.int16)
    affine = torch.diag(torch.tensor([0.7, 0.7, 2.5, 1.0], dtype=torch.float64))
    pm = MetaTensor(prob, affine=affine, meta={"filename_or_obj": "ct.nii.gz"})
    out = HUBoundaryRefine()(pm, MetaTensor(torch.as_tensor(vol_hu), meta={"filename_or_obj": "ct.nii.gz"}))
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, affine) and out.dtype == prob.dtype
    for k in range(3):
        assert _iou(out[0, ..., k] > 0.5, lungs) > 0.98
    np_out = HUBoundaryRefine()(prob.numpy(), vol_hu)
    assert isinstance(np_out, np.ndarray)
    np.testing.assert_array_equal(np_out, out.numpy())


def test_refinement_leaves_pictures_alone_and_refuses_other_grids():
    hu, lungs = _chest(48)
    prob = _blurred_probability(lungs)
    png = MetaTensor(torch.as_tensor(hu)[None], meta={"filename_or_obj": "slice.png"})
    assert HUBoundaryRefine()(prob, png) is prob  # 8-bit sources carry no HU
    eight_bit = torch.zeros((1, 48, 48), dtype=torch.uint8)
    assert HUBoundaryRefine()(prob, eight_bit) is prob
    raw = torch.as_tensor(hu + 1024.0)[None]  # stored values without the rescale to HU: no air below -500
    assert HUBoundaryRefine()(prob, raw) is prob
    with pytest.raises(ValueError, match="grid"):
        HUBoundaryRefine()(prob, torch.zeros((1, 40, 48)))
    with pytest.raises(ValueError, match="band"):
        HUBoundaryRefine(band=(0.9, 0.1))


def test_dictionary_version_reads_the_hu_copy_and_names_a_missing_key():
    hu, lungs = _chest(48)
    prob = _blurred_probability(lungs)
    hu_t = torch.as_tensor(hu)[None]
    d = HUBoundaryRefined(keys="pred", hu_key="image_hu")({"pred": prob, "image_hu": hu_t, "image": prob * 0})
    torch.testing.assert_close(d["pred"], HUBoundaryRefine()(prob, hu_t))
    with pytest.raises(KeyError, match="image_hu"):
        HUBoundaryRefined(keys="pred")({"pred": prob})


def test_inference_config_refines_between_invert_and_threshold():
    """Named steps in inference.json: HU copy right after loading (before any intensity change), refinement on each
    inverted slab of the probability, thresholding itself (no float volume left for AsDiscreted), for pictures too
    (mapped to HU first); with refinement off (``refine_boundary`` false) AsDiscreted thresholds instead. Then the
    volume steps."""
    from monai.bundle import ConfigParser


    def parsed(files, key, **over):
        p = ConfigParser()
        p.read_config([str(BUNDLE / "configs" / f) for f in files])
        p.update({"bundle_root": str(BUNDLE), **over})
        return p.get_parsed_content(key)

    def names(transforms):
        return [type(t).__name__ for t in transforms]

    pre = names(parsed(["inference.json"], "preprocessing").transforms)
    post = names(parsed(["inference.json"], "postprocessing").transforms)
    assert pre.index("KeepHUd") < pre.index("Orientationd") < pre.index("CTIntensityNormalized")
    assert post.index("SlabwiseInvertd") < post.index("RemoveAirwaysd") and "AsDiscreted" not in post
    assert names(parsed(["inference.json"], "post#invert").slab_transforms) == ["HUBoundaryRefined", "RemoveOutsideBodyd"]
    for files, over in ((["inference.json", "inference_2d.json"], {"refine_boundary": False, "body_mask": False}),
                        (["inference.json"], {"refine_boundary": False, "body_mask": False})):
        assert names(parsed(files, "post#invert", **over).slab_transforms) == ["AsDiscreted"]
    assert "KeepHUd" not in names(parsed(["inference.json", "inference_2d.json"], "preprocessing", refine_boundary=False,
                                         body_mask=False).transforms)  # nothing left that needs HU
    # pictures: the HU copy is taken after the picture_hu step mapped the picture to HU, and the refinement runs on it
    pre_2d = names(parsed(["inference.json", "inference_2d.json"], "preprocessing").transforms)
    assert pre_2d.index("PictureToHUd") < pre_2d.index("KeepHUd") < pre_2d.index("CTIntensityNormalized")
    assert names(parsed(["inference.json", "inference_2d.json"], "post#invert").slab_transforms) == [
        "HUBoundaryRefined", "RemoveOutsideBodyd"]
    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "inference.json"))
    assert p["refine_threshold_hu"] == LUNG_HU_THRESHOLD  # one definition of lung in HU, shared with the classical


def test_report_names_inputs_that_are_not_hu():
    """The same air check that makes the refinement skip an image puts a warning in report.json."""
    from fusionlungnet_monai.outputs import sanity_warnings

    hu, lungs = _chest(48)
    vol_hu, mask = np.repeat(hu[..., None], 4, axis=-1), np.repeat(lungs[..., None], 4, axis=-1)
    affine = np.diag([8.0, 8.0, 40.0, 1.0])  # large voxels: a plausible lung volume for the check
    assert not [w for w in sanity_warnings(mask, vol_hu, affine, 3000.0) if "HU" in w]
    warns = [w for w in sanity_warnings(mask, vol_hu + 1024.0, affine, 3000.0) if "HU" in w]
    assert len(warns) == 1 and "refinement skips" in warns[0]
    # HU x 1000 (a DICOM RescaleSlope of 1000): air far below -500, so only the median shows it
    warns = [w for w in sanity_warnings(mask * 0, vol_hu * 1000.0, affine, 0.0) if "HU" in w]
    assert len(warns) == 1 and "scaled" in warns[0] and "median -1000000" in warns[0], warns
    padded = vol_hu.copy()
    yy, xx = np.mgrid[:48, :48]
    padded[(yy - 23.5) ** 2 + (xx - 23.5) ** 2 > 24 ** 2] = -32768.0  # outside the reconstruction circle
    padded[0, 0, 0] = np.nan
    assert not [w for w in sanity_warnings(mask, padded, affine, 3000.0) if "HU" in w]


def test_compact_hu_copy_is_int16_exact_for_scanner_values_and_keeps_meta():
    vol = torch.tensor([-3024.0, -1024.4, -320.6, 0.0, 40.0, 3071.0, 40000.0, float("nan")]).reshape(1, 2, 2, 2)
    vol = vol.repeat(1, 1, 1, 20)  # 40 slices: converted in chunks
    src = MetaTensor(vol, affine=torch.diag(torch.tensor([0.7, 0.7, 2.0, 1.0], dtype=torch.float64)),
                     meta={"filename_or_obj": "ct.nii.gz"})
    out = compact_hu(src)
    assert isinstance(out, MetaTensor) and out.dtype == torch.int16 and out.meta["filename_or_obj"] == "ct.nii.gz"
    assert torch.equal(out.affine, src.affine) and out.shape == src.shape
    expected = torch.tensor([-3024, -1024, -321, 0, 40, 3071, 32767, -1024], dtype=torch.int16).reshape(1, 2, 2, 2)
    assert torch.equal(out.as_tensor(), expected.repeat(1, 1, 1, 20))
    assert isinstance(compact_hu(np.zeros((1, 4, 4), dtype=np.int32)), np.ndarray)
    u8 = torch.zeros((1, 4, 4), dtype=torch.uint8)
    assert compact_hu(u8).dtype == torch.uint8  # pictures stay recognisable as 8-bit


def test_keep_hu_feeds_the_refinement_like_the_full_copy():
    hu, lungs = _chest(48)
    prob = _blurred_probability(lungs)
    d = KeepHUd(keys="image")({"image": torch.as_tensor(hu)[None]})
    assert d["image_hu"].dtype == torch.int16 and d["image_hu"] is not d["image"]
    refined = HUBoundaryRefined(keys="pred")({"pred": prob, **d})["pred"]
    torch.testing.assert_close(refined, HUBoundaryRefine()(prob, torch.as_tensor(hu)[None]))
    with pytest.raises(ValueError, match="one image"):
        KeepHUd(keys=["image", "label"])


def test_volumes_refined_in_chunks_equal_slice_by_slice():
    """Volumes are refined 16 slices at a time; every slice gets what the 2D call gives it."""
    hu, lungs = _chest(40)
    rng = np.random.default_rng(0)
    vol_hu = torch.as_tensor(np.stack([hu + rng.normal(0, 80, hu.shape) for _ in range(37)], -1))[None]
    prob = torch.stack([_blurred_probability(lungs, f)[0] for f in (2, 3, 4) for _ in range(13)][:37], -1)[None]
    out = HUBoundaryRefine()(prob, vol_hu)
    for k in range(37):
        torch.testing.assert_close(out[..., k], HUBoundaryRefine()(prob[..., k], vol_hu[..., k].float()))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_refinement_on_cuda_matches_cpu():
    """The refinement runs on the probability's device (uint8 counts, index-based edge padding)."""
    hu, lungs = _chest(64)
    prob = _blurred_probability(lungs)[..., None].repeat(1, 1, 1, 20)
    vol_hu = torch.as_tensor(np.repeat(hu[None, ..., None], 20, axis=-1)).to(torch.int16)
    cpu = HUBoundaryRefine()(prob, vol_hu)
    gpu = HUBoundaryRefine()(prob.cuda(), vol_hu)  # the HU copy may stay on the CPU: moved to the probability's device
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)
    torch.testing.assert_close(median3x3_below(vol_hu.cuda(), -320).cpu(), median3x3_below(vol_hu, -320))


def _real_masks(device: str, on_device: bool, case: str = "elastix_lung_small/3DCT_lung_baseline_small.mha"
                ) -> np.ndarray:
    from conftest import DATA
    from fusionlungnet_monai.data import LoadCTImage
    from fusionlungnet_monai.workflow import infer_tensors, load_inference_workflow

    image = LoadCTImage(image_only=True)(str(DATA / case))
    wf = load_inference_workflow(BUNDLE, {"device": f"$torch.device('{device}')", "input": [],
                                          "preprocess_on_device": on_device}, save=False)
    pred = infer_tensors(wf, [image])[0]["pred"]
    return np.asarray(pred.detach().cpu())[0] > 0


@pytest.mark.slow
def test_preprocessing_on_the_device_gives_the_same_mask():
    """``preprocess_on_device`` moves the image to ``device`` right after loading; on the CPU the chain is unchanged."""
    on, off = _real_masks("cpu", True), _real_masks("cpu", False)
    assert off.sum() > 1000 and np.array_equal(on, off)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_preprocessing_on_cuda_gives_the_same_mask():
    """On a GPU node (no itk there: the real TotalSegmentator NIfTI, not the MetaImage elastix crop)."""
    case = "totalseg_example_ct/nifti_sm/example_ct_sm.nii.gz"
    on, off = _real_masks("cuda", True, case), _real_masks("cuda", False, case)
    assert off.sum() > 1000 and dice_score(on, off) > 0.999


def test_inplace_refinement_changes_the_probability_itself_and_gives_the_same_result():
    """``inplace`` (for callers that keep the probability; post#refine thresholds instead, see below) changes the
    probability itself: no second float32 volume, and the copying transform's result; the int16 HU image KeepHUd
    keeps shares the loaded image's voxels (no copy)."""
    hu, lungs = _chest(40)
    prob = _blurred_probability(lungs)
    expected = HUBoundaryRefine()(prob.clone(), torch.as_tensor(hu)[None])
    mine = MetaTensor(prob.clone(), meta={"filename_or_obj": "ct.nii.gz"})
    out = HUBoundaryRefined(keys="pred", inplace=True)({"pred": mine, "image_hu": torch.as_tensor(hu)[None]})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "ct.nii.gz"
    torch.testing.assert_close(out.as_tensor(), expected)
    assert out.data_ptr() == mine.data_ptr() and torch.equal(mine.as_tensor(), expected)  # no second volume
    arr = prob.numpy().copy()
    HUBoundaryRefine(inplace=True)(arr, hu[None])
    np.testing.assert_allclose(arr, expected.numpy())
    untouched = prob.clone()
    HUBoundaryRefine()(untouched, torch.as_tensor(hu)[None])
    assert torch.equal(untouched, prob)  # the default copies
    img = MetaTensor(torch.as_tensor(hu, dtype=torch.int16)[None], meta={"filename_or_obj": "ct.nii.gz"})
    kept = KeepHUd(keys="image")({"image": img})["image_hu"]
    assert kept is not img and kept.data_ptr() == img.data_ptr() and kept.meta is not img.meta


def test_refinement_with_a_threshold_returns_the_uint8_mask_of_the_refined_probability():
    """post#refine thresholds itself (slab by slab: no second float volume, no whole-volume boolean): the mask is
    the refined probability's at the threshold, as uint8 with its meta; images not in HU are thresholded only."""
    hu, lungs = _chest(40)
    rng = np.random.default_rng(1)
    vol_hu = torch.as_tensor(np.stack([hu + rng.normal(0, 80, hu.shape) for _ in range(37)], -1))[None]
    prob = torch.stack([_blurred_probability(lungs, f)[0] for f in (2, 3, 4) for _ in range(13)][:37], -1)[None]
    expected = (HUBoundaryRefine()(prob, vol_hu) >= 0.5).to(torch.uint8)
    pm = MetaTensor(prob.clone(), meta={"filename_or_obj": "ct.nii.gz"})
    d = HUBoundaryRefined(keys="pred", threshold=0.5)({"pred": pm, "image_hu": vol_hu})
    out = d["pred"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8 and out.meta["filename_or_obj"] == "ct.nii.gz"
    assert torch.equal(out.as_tensor(), expected) and torch.equal(pm.as_tensor(), prob)  # the probability is kept
    assert not torch.equal(expected, (prob >= 0.5).to(torch.uint8))  # the refinement did change the border
    np_out = HUBoundaryRefine(threshold=0.5)(prob.numpy(), vol_hu.numpy())
    assert np_out.dtype == np.uint8 and np.array_equal(np_out, expected.numpy())
    png = MetaTensor(torch.as_tensor(hu)[None], meta={"filename_or_obj": "slice.png"})
    flat = _blurred_probability(lungs)
    picture = HUBoundaryRefine(threshold=0.3)(flat, png)  # no HU: thresholded as it is
    assert picture.dtype == torch.uint8 and torch.equal(picture, (flat >= 0.3).to(torch.uint8))


def test_report_names_a_field_of_view_too_small_for_a_chest():
    """A voxel size in cm read as mm (0.075 for 0.75 mm pixels) makes a 512-pixel slice 38 mm wide: report.json says
    to check the voxel size; a whole chest, stored coronally too, gets no such warning."""
    from fusionlungnet_monai.outputs import MIN_CHEST_FOV_MM, sanity_warnings

    hu, lungs = _chest(48)
    vol_hu, mask = np.repeat(hu[..., None], 4, axis=-1), np.repeat(lungs[..., None], 4, axis=-1)
    small = [w for w in sanity_warnings(mask, vol_hu, np.diag([0.075 * 512 / 48] * 2 + [0.5, 1.0]), 3000.0)
             if "field of view" in w]
    assert len(small) == 1 and "38 x 38 mm" in small[0] and MIN_CHEST_FOV_MM > 38
    for affine in (np.diag([8.0, 8.0, 40.0, 1.0]), np.array([[8.0, 0, 0, 0], [0, 0, 40.0, 0], [0, 8.0, 0, 0],
                                                             [0, 0, 0, 1]])):  # axial; coronal storage (z in y)
        assert not [w for w in sanity_warnings(mask, vol_hu, affine, 3000.0) if "field of view" in w]
    # coronal storage of a chest 384 mm wide and 20 mm deep in its stored slices: the plane is x and z, not x and y
    coronal = np.array([[8.0, 0, 0, 0], [0, 0, 5.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    assert not [w for w in sanity_warnings(mask, vol_hu, coronal, 3000.0) if "field of view" in w]
