import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, LoadImaged, Resized

from fusionlungnet_monai.phantom import make_phantom
from fusionlungnet_monai.transforms import (
    FieldOfViewPad,
    FieldOfViewPadd,
    ArtifactRemoval,
    ArtifactRemovald,
    CTIntensityNormalize,
    DynamicThreshold,
    DynamicThresholdd,
    MedianFilter,
    MedianFilterd,
    paper_preprocessing,
)


def test_median_removes_salt_and_pepper_in_plane_only():
    rng = np.random.default_rng(0)
    img = np.full((1, 32, 32), 0.5, dtype=np.float32)
    idx = rng.integers(0, 32, size=(2, 40))
    img[0, idx[0], idx[1]] = rng.choice([0.0, 1.0], size=40)
    out = MedianFilter(1)(img)
    assert isinstance(out, np.ndarray)
    assert np.abs(out - 0.5).max() < 1e-6
    vol = np.zeros((1, 9, 9, 3), dtype=np.float32)
    vol[0, :, :, 1] = 1.0  # a bright middle slice survives: no filtering across slices
    np.testing.assert_array_equal(MedianFilter(1)(torch.as_tensor(vol)).numpy()[0, 4, 4], [0, 1, 0])


def test_dynamic_threshold_changes_exactly_the_pixels_above_t():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 40, 40, generator=g)
    dt = DynamicThreshold(window=7, k=0.3, alpha=1.5, beta=0.05, clamp=False)
    t = dt.threshold(img)
    out = dt(img)
    above = img > t
    torch.testing.assert_close(out[above], 1.5 * img[above] + 0.05)
    torch.testing.assert_close(out[~above], img[~above])
    # reference threshold for one interior pixel: mean + k * std of its 7x7 window
    win = img[0, 10:17, 20:27]
    ref = win.mean() + 0.3 * win.std(unbiased=False)
    torch.testing.assert_close(t[0, 13, 23], ref, rtol=1e-4, atol=1e-5)
    clamped = DynamicThreshold(window=7, alpha=3.0)(img)
    assert clamped.max() <= img.max() + 1e-6 and clamped.min() >= img.min() - 1e-6
    # numpy in -> numpy out; volumes slice by slice
    vol = np.random.default_rng(1).random((1, 20, 20, 3)).astype(np.float32)
    v_out = DynamicThreshold(window=5)(vol)
    assert isinstance(v_out, np.ndarray) and v_out.shape == vol.shape
    np.testing.assert_allclose(v_out[..., 1], DynamicThreshold(window=5)(vol[..., 1]), rtol=1e-5)


@pytest.mark.parametrize("kwargs,name", [({"window": 0}, "window"), ({"window": 4}, "window"),
                                         ({"alpha": 0}, "alpha"), ({"alpha": -1}, "alpha")])
def test_dynamic_threshold_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DynamicThreshold(**kwargs)


def test_bad_parameters_and_dims():
    with pytest.raises(ValueError, match="radius"):
        MedianFilter(0)
    with pytest.raises(ValueError, match="opening_radius"):
        ArtifactRemoval(opening_radius=-1)
    with pytest.raises(ValueError, match="channel-first"):
        DynamicThreshold()(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="hu_window"):
        CTIntensityNormalize(hu_window=(100, -100))


def test_artifact_removal_deletes_table_and_text_but_keeps_lungs():
    ph = make_phantom(4, size=128, seed=5, text="FLN 7")
    hu = torch.as_tensor(ph.image[None].astype(np.float32))  # (1, X, Y, Z) volume in HU
    cleaned, body = ArtifactRemoval(return_mask=True)(hu)
    body = body[0].numpy().astype(bool)
    assert body[ph.mask > 0].all(), "every lung pixel must stay inside the body mask"
    assert cleaned.numpy()[0][ph.mask > 0].tolist() == hu.numpy()[0][ph.mask > 0].tolist()
    outside = ~ph.body
    assert not body[outside & (ph.image > 1000)].any(), "burnt-in text must be removed"
    assert not body[outside & (ph.image > 100) & (ph.image < 200)].any(), "table must be removed"
    assert float(cleaned[0][torch.as_tensor(outside)].max()) == float(hu.min())
    # same on a [0, 1] slice with an explicit background
    sl = torch.clamp((hu[..., 2] + 1024) / 1624, 0, 1)
    out = ArtifactRemoval(background=0.0)(sl)
    assert float(out[0][torch.as_tensor(outside[..., 2])].max()) == 0.0
    assert torch.equal(out[0][torch.as_tensor(ph.mask[..., 2] > 0)], sl[0][torch.as_tensor(ph.mask[..., 2] > 0)])


def test_dict_versions_agree_and_keep_meta():
    img = MetaTensor(torch.rand(1, 32, 32), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])),
                     meta={"filename_or_obj": "x.dcm"})
    d = {"image": img}
    for arr, dct in [(MedianFilter(1), MedianFilterd("image", 1)), (DynamicThreshold(5), DynamicThresholdd("image", 5))]:
        out = dct(d)["image"]
        torch.testing.assert_close(torch.as_tensor(out), torch.as_tensor(arr(img)))
        assert isinstance(out, MetaTensor)
        assert out.meta["filename_or_obj"] == "x.dcm" and torch.equal(out.affine, img.affine)
    res = ArtifactRemovald("image", threshold=0.5, mask_key="{key}_body")(d)
    assert "image_body" in res and res["image_body"].shape == img.shape
    assert isinstance(res["image"], MetaTensor) and res["image"].meta["filename_or_obj"] == "x.dcm"


def test_intensity_normalize_hu_png_and_rgb():
    hu = MetaTensor(torch.tensor([[[-2000.0, -1024.0, 600.0, 3000.0]]]), meta={"filename_or_obj": "a.dcm"})
    torch.testing.assert_close(torch.as_tensor(CTIntensityNormalize()(hu)), torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))
    png = MetaTensor(torch.tensor([[[0.0, 51.0, 255.0]]]), meta={"filename_or_obj": "slice.PNG"})
    torch.testing.assert_close(torch.as_tensor(CTIntensityNormalize()(png)), torch.tensor([[[0.0, 0.2, 1.0]]]))
    rgb = MetaTensor(torch.full((3, 2, 2), 255.0), meta={"filename_or_obj": "slice.jpg"})
    assert CTIntensityNormalize()(rgb).shape == (1, 2, 2)
    three = CTIntensityNormalize(channels=3)(png)
    assert three.shape == (3, 1, 3)


def test_paper_chain_on_png_and_invert(phantom_dir):
    keys = ["image", "label"]
    pre = Compose([LoadImaged(keys=keys, image_only=True), paper_preprocessing(keys, spatial_size=(96, 96))])
    name = "ph000_s005.png"
    d = pre({"image": str(phantom_dir / "png" / "images" / name), "label": str(phantom_dir / "png" / "masks" / name)})
    assert d["image"].shape == (1, 96, 96) and d["label"].shape == (1, 96, 96)
    assert float(d["image"].min()) >= 0 and float(d["image"].max()) <= 1
    assert set(d["label"].unique().tolist()) == {0.0, 1.0}
    inv = Invertd(keys="label", transform=pre, orig_keys="image", nearest_interp=True)(dict(d))
    assert inv["label"].shape == (1, 128, 128)


def test_paper_chain_on_volume_keeps_slices_and_inverts(phantom_dir):
    from fusionlungnet_monai.data import CTSeriesReader

    pre = Compose([LoadImaged(keys="image", reader=CTSeriesReader(), image_only=True),
                   paper_preprocessing(["image"], spatial_size=(64, 64), volume=True)])
    d = pre({"image": str(phantom_dir / "dicom" / "ph000")})
    assert d["image"].shape == (1, 64, 64, 12)
    d["pred"] = d["image"].clone()
    inv = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(d)
    assert inv["pred"].shape == (1, 128, 128, 12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_dynamic_threshold_cuda_matches_cpu():
    img = torch.rand(1, 64, 64)
    torch.testing.assert_close(DynamicThreshold()(img.cuda()).cpu(), DynamicThreshold()(img), rtol=1e-5, atol=1e-6)


def test_stacked_hole_filling_equals_per_slice_scipy():
    from scipy import ndimage

    from fusionlungnet_monai.transforms.pre.array import _box_mean
    from fusionlungnet_monai.utils import fill_holes_2d

    rng = np.random.default_rng(3)
    masks = rng.random((6, 40, 33)) > 0.55
    np.testing.assert_array_equal(fill_holes_2d(masks), np.stack([ndimage.binary_fill_holes(m) for m in masks]))
    x = torch.rand(2, 1, 30, 27)
    torch.testing.assert_close(_box_mean(x, 9), torch.nn.functional.avg_pool2d(x, 9, stride=1))


def _ct(shape, spacing):
    aff = torch.diag(torch.tensor([*spacing, 1.0][: len(shape) + 1], dtype=torch.float64))
    if len(shape) == 2:
        aff = torch.diag(torch.tensor([spacing[0], spacing[1], 1.0, 1.0], dtype=torch.float64))
    return MetaTensor(torch.rand(1, *shape), affine=aff)


def test_field_of_view_pad_squares_and_reaches_the_minimum_field_of_view():
    # a 57 x 78 crop of 2.7 mm: 154 x 213 mm -> square and at least 300 mm: ceil(300 / 2.7) = 112 voxels a side
    out = FieldOfViewPad(min_fov=300)(_ct((57, 78, 5), (2.7, 2.7, 5.0)))
    assert out.shape == (1, 112, 112, 5)
    # a whole-chest slice (512 x 0.7 mm = 358 mm) is left as it is; a non-square one is squared
    assert FieldOfViewPad(min_fov=300)(_ct((512, 512, 2), (0.7, 0.7, 1.0))).shape == (1, 512, 512, 2)
    assert FieldOfViewPad(min_fov=300)(_ct((512, 400), (0.8, 0.8))).shape == (1, 512, 512)
    # square only
    assert FieldOfViewPad(min_fov=None)(_ct((57, 78, 5), (2.7, 2.7, 5.0))).shape == (1, 78, 78, 5)
    # a voxel size far too small for a chest (0.01 mm: 300 mm would be 30000 pixels) is padded at most 4x, not
    # without bound (it took 22 GB); 75 mm is still padded to the full 300 mm
    assert FieldOfViewPad(min_fov=300)(_ct((64, 64, 2), (0.01, 0.01, 0.5))).shape == (1, 256, 256, 2)
    assert FieldOfViewPad(min_fov=300)(_ct((100, 100, 1), (0.75, 0.75, 1.0))).shape == (1, 400, 400, 1)
    with pytest.raises(ValueError, match="max_factor"):
        FieldOfViewPad(max_factor=0.5)
    # edge mode continues the border; the original sits in the middle
    img = MetaTensor(torch.arange(4.0)[None, :, None].repeat(1, 1, 6), affine=torch.diag(torch.tensor([100.0] * 4)))
    out = FieldOfViewPad(min_fov=0)(img)
    assert torch.equal(out[:, 1:5], img) and torch.equal(out[:, 0], img[:, 0]) and torch.equal(out[:, 5], img[:, -1])
    with pytest.raises(ValueError, match="channel-first"):
        FieldOfViewPad()(torch.zeros(4, 4))


def test_field_of_view_pad_does_not_smear_one_outlying_edge_pixel():
    """Edge mode repeats each edge line after a median of 5 along it: one corrupt pixel at a corner (1e6) or on an
    edge (3000 HU) is not continued as a 43 x 43 block or a stripe out to the border (a 1e6 corner voxel made the
    shipped weights find no lung on its slice)."""
    clean = torch.full((1, 64, 64, 2), -1000.0)
    clean[:, 8:56, 8:56] = 40.0
    hot = clean.clone()
    hot[0, 0, 0, 0], hot[0, 63, 30, 1], hot[0, 20, 63, 0] = 1e6, 3000.0, -3000.0
    aff = torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0], dtype=torch.float64))
    pad = FieldOfViewPad(min_fov=300)
    out, ref = pad(MetaTensor(hot, affine=aff)), pad(MetaTensor(clean, affine=aff))
    assert out.shape == (1, 150, 150, 2) and torch.equal(out[:, 43:107, 43:107], hot), "the image itself is kept"
    outside = torch.ones(150, 150, dtype=torch.bool)
    outside[43:107, 43:107] = False
    assert torch.equal(out[:, outside], ref[:, outside]), "the padding is the clean image's"
    # a structure wider than two pixels at the edge (a table, a rib) is continued
    table = clean.clone()
    table[:, 60:64, 20:44] = 300.0
    assert (pad(MetaTensor(table, affine=aff))[:, 107:, 65:85] == 300).all()


def test_field_of_view_pad_ignores_the_unit_spacing_of_pictures(tmp_path):
    from PIL import Image

    from fusionlungnet_monai.data import LoadCTImage

    Image.fromarray(np.zeros((100, 120), np.uint8)).save(tmp_path / "s.png")  # 1 "mm" pixels: no real spacing
    img = LoadCTImage(image_only=True, ensure_channel_first=True)(str(tmp_path / "s.png"))
    assert FieldOfViewPad(min_fov=300)(img).shape == (1, 120, 120)


def test_field_of_view_padd_keeps_label_aligned_and_inverts():
    img = _ct((57, 78, 3), (2.7, 2.7, 5.0))
    lab = torch.zeros(1, 57, 78, 3)
    lab[:, 10:40, 20:70] = 1
    lab = MetaTensor(lab, affine=img.affine)
    pad = FieldOfViewPadd(["image", "label"], min_fov=300)
    d = pad({"image": img, "label": lab})
    assert d["image"].shape == d["label"].shape == (1, 112, 112, 3)
    assert d["label"].sum() == lab.sum() and d["label"][:, 37:67, 37:87].min() == 1  # offsets (27, 17)
    d["pred"] = d["label"].clone()
    assert torch.equal(Invertd("pred", Compose([pad]), orig_keys="label")(d)["pred"], lab)
    # inside the bundle's chain, followed by the resize: Invertd undoes both
    chain = Compose([pad, Resized(["image", "label"], [64, 64, -1])])
    d = chain({"image": img, "label": lab})
    d["pred"] = d["label"].clone()
    assert Invertd("pred", chain, orig_keys="label", nearest_interp=True)(d)["pred"].shape == (1, 57, 78, 3)


def _crop_through_the_chest():
    """A 60 x 60 crop of 2.7 mm inside a chest: tissue (100 HU) with lung (-850 HU) cut by the crop's first x edge
    (rows 20-39), and its lung mask."""
    hu = torch.full((1, 60, 60, 2), 100.0)
    hu[:, :25, 20:40] = -850.0
    lab = torch.zeros_like(hu)
    lab[:, :25, 20:40] = 1
    aff = torch.diag(torch.tensor([2.7, 2.7, 5.0, 1.0], dtype=torch.float64))
    return MetaTensor(hu, affine=aff), MetaTensor(lab, affine=aff)


def test_field_of_view_pad_ends_lung_cut_by_a_crop_in_tissue():
    hu, _ = _crop_through_the_chest()
    out = FieldOfViewPad(min_fov=300)(hu)  # 112 a side: 26 voxels before, 26 after
    assert out.shape == (1, 112, 112, 2) and torch.equal(out[:, 26:86, 26:86], hu)
    assert (out[:, :26, 46:66] == 40).all(), "beyond the cut lung: soft tissue, not lung running to the border"
    assert (out[:, :26, 26:46] == 100).all() and (out[:, :26, 66:86] == 100).all(), "beyond tissue: the tissue"
    # the same crop, never filled: edge mode repeats the lung out to the border (what 0.3.3 did)
    assert (FieldOfViewPad(min_fov=300, cut_fill_hu=None)(hu)[:, :26, 46:66] == -850).all()
    # a whole chest in room air: the air goes on, however dark the lungs inside
    chest = torch.full((1, 60, 60, 2), -1000.0)
    chest[:, 10:50, 10:50] = 100.0
    chest[:, 15:28, 15:45] = -850.0
    chest = MetaTensor(chest, affine=hu.affine)
    assert (FieldOfViewPad(min_fov=300)(chest)[:, :26] == -1000).all()
    # lung touching the edge of such a slice is not filled either: most of that edge is room air
    chest[:, :28, 25:35] = -850.0
    assert (FieldOfViewPad(min_fov=300)(chest)[:, :26, 51:61] == -850).all()
    # not HU (an 8-bit picture's values): no fill
    grey = MetaTensor(torch.where(hu.as_tensor() > 0, 200.0, 30.0), affine=hu.affine)
    assert (FieldOfViewPad(min_fov=300)(grey)[:, :26, 46:66] == 30).all()


def test_field_of_view_padd_leaves_no_label_where_it_fills_tissue():
    hu, lab = _crop_through_the_chest()
    pad = FieldOfViewPadd(["image", "label"], min_fov=300)
    d = pad({"image": hu, "label": lab})
    assert (d["image"][:, :26, 46:66] == 40).all() and d["label"][:, :26].sum() == 0
    assert torch.equal(d["label"][:, 26:86, 26:86], lab)
    d["pred"] = d["label"].clone()
    assert torch.equal(Invertd("pred", Compose([pad]), orig_keys="label")(d)["pred"], lab)


def test_bounding_box_grows_by_the_margin_within_the_array_and_is_none_when_empty():
    from fusionlungnet_monai.utils import bounding_box

    m = np.zeros((6, 7, 5), dtype=np.uint8)
    m[0, 2:4, 3] = 1
    assert bounding_box(m) == (slice(0, 1), slice(2, 4), slice(3, 4))
    assert bounding_box(torch.as_tensor(m), margin=1) == (slice(0, 2), slice(1, 5), slice(2, 5))
    assert bounding_box(np.zeros((3, 3), dtype=bool)) is None


def test_keep_largest_components_is_monais_rule_on_less_memory():
    """post#keep_lungs: the same components as MONAI's KeepLargestConnectedComponent (ties for the last place kept
    aside), for numpy, torch and MetaTensor masks of any dtype, 2D and 3D, on 16-bit labels of the bounding box."""
    from monai.transforms import KeepLargestConnectedComponent
    from scipy import ndimage

    from fusionlungnet_monai.transforms import KeepLargestComponents, KeepLargestComponentsd

    rng = np.random.default_rng(0)
    compared = 0
    for shape, k in [((40, 30, 16), 2), ((40, 30, 16), 1), ((64, 48), 2), ((20, 20, 20), 3)]:
        for _ in range(6):
            m = np.zeros((1, *shape), dtype=np.float32)
            inner = tuple(slice(3, s - 2) for s in shape)  # leave a margin: the bounding box is smaller than the grid
            m[(0, *inner)] = ndimage.binary_opening(rng.random([s - 5 for s in shape]) > 0.55)
            sizes = sorted(np.bincount(ndimage.label(m[0], np.ones((3,) * len(shape)))[0].ravel())[1:])[::-1]
            if len(sizes) > k and sizes[k - 1] == sizes[k]:
                continue  # a tie for the last place kept may be broken either way
            want = np.asarray(KeepLargestConnectedComponent(applied_labels=[1], num_components=k)(m))
            np.testing.assert_array_equal(KeepLargestComponents(k)(m), want)
            m8 = torch.as_tensor(m).to(torch.uint8)  # read as a view since 0.3.8: it must stay as it was
            got = KeepLargestComponents(k)(m8)
            np.testing.assert_array_equal(got.numpy(), want)
            assert got.dtype == torch.uint8 and torch.equal(m8, torch.as_tensor(m).to(torch.uint8))
            compared += 1
    assert compared >= 15
    mt = MetaTensor(torch.as_tensor(m).to(torch.uint8), meta={"filename_or_obj": "x.nii.gz"})
    out = KeepLargestComponentsd("pred", 3)({"pred": mt})["pred"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8 and out.meta["filename_or_obj"] == "x.nii.gz"
    assert KeepLargestComponents()(torch.zeros(1, 8, 8)).sum() == 0
    with pytest.raises(ValueError):
        KeepLargestComponents(0)


def test_keep_largest_components_drops_pure_air_given_the_ct():
    """post#keep_lungs with the CT in HU: a component of a volume that is nearly all pure air (stomach gas, air
    outside the body) is not lung, so when the lungs touch (one component) the stray air is not kept as the second.
    Dark lung stays (60 % of it at or below -950 HU), lung-like components stay whatever their size, and without HU
    (pictures), on raw stored values, on 2D slices and on one-slice volumes the rule is off."""
    from fusionlungnet_monai.transforms import KeepLargestComponents, KeepLargestComponentsd

    rng = np.random.default_rng(1)
    hu = (40 + 10 * rng.standard_normal((1, 60, 50, 12))).astype(np.float32)
    mask = np.zeros((1, 60, 50, 12), dtype=np.uint8)
    hu[0, 5:45, 5:45, :] = -850 + 30 * rng.standard_normal((40, 40, 12))  # the joined lungs
    mask[0, 5:45, 5:45, :] = 1
    hu[0, 50:56, 10:20, 2:8] = -1000 + 15 * rng.standard_normal((6, 10, 6))  # stomach gas, taken for lung
    mask[0, 50:56, 10:20, 2:8] = 1
    hu[0, 50:54, 30:34, 2:6] = -860  # a small lung piece, separate
    mask[0, 50:54, 30:34, 2:6] = 1
    out = KeepLargestComponents(2)(mask, hu)
    assert out[0, 52, 15, 4] == 0 and out[0, 52, 32, 3] == 1 and out[0, 20, 20, 5] == 1
    assert KeepLargestComponents(2)(mask)[0, 52, 15, 4] == 1  # without the CT: MONAI's rule, the gas is second
    assert KeepLargestComponents(2)(mask, hu + 2000)[0, 52, 15, 4] == 1  # no air at all: not a CT in HU
    d = KeepLargestComponentsd("pred", 2, hu_key="image_hu")({"pred": torch.as_tensor(mask), "image_hu": hu})
    torch.testing.assert_close(d["pred"], torch.as_tensor(out))
    dark = hu.copy()
    dark[0, 5:45, 5:29, :] = -1000  # 60 % of the lungs' voxels pure air (emphysema, a dark scan): still lung
    assert KeepLargestComponents(2)(mask, dark)[0, 20, 20, 5] == 1
    assert KeepLargestComponents(2)(mask[..., 4], hu[..., 4])[0, 52, 15] == 1  # a 2D slice: rule off
    assert KeepLargestComponents(2)(mask[..., 4:5], hu[..., 4:5])[0, 52, 15, 0] == 1  # one slice: rule off
    with pytest.raises(KeyError, match="image_hu"):
        KeepLargestComponentsd("pred", hu_key="image_hu")({"pred": torch.as_tensor(mask)})
    with pytest.raises(ValueError, match="grid"):
        KeepLargestComponents()(mask, hu[..., :6])


def test_single_slices_keep_every_sizeable_piece():
    """On one slice a lung is often several pieces (diaphragm domes, consolidation): with slice_fraction, every
    component of at least that fraction of the largest is kept on 2D masks and one-slice volumes; volumes keep
    the num_components largest."""
    from fusionlungnet_monai.transforms import KeepLargestComponents

    m = np.zeros((1, 80, 80), dtype=np.uint8)
    m[0, 2:34, 2:34] = 1  # 1024 px
    m[0, 40:64, 2:27] = 1  # 600 px
    m[0, 2:12, 50:70] = 1  # 200 px: 20 % of the largest, a lung piece
    m[0, 70:75, 70:76] = 1  # 30 px: under 5 %
    out = KeepLargestComponents(2, slice_fraction=0.05)(m)
    assert out[0, 5, 5] and out[0, 50, 10] and out[0, 5, 60] and not out[0, 72, 72]
    two = KeepLargestComponents(2)(m)
    assert two[0, 5, 5] and two[0, 50, 10] and not two[0, 5, 60]
    np.testing.assert_array_equal(KeepLargestComponents(2, slice_fraction=0.05)(m[..., None])[..., 0], out)
    vol = np.repeat(m[..., None], 3, axis=-1)
    np.testing.assert_array_equal(KeepLargestComponents(2, slice_fraction=0.05)(vol), KeepLargestComponents(2)(vol))
    with pytest.raises(ValueError, match="slice_fraction"):
        KeepLargestComponents(slice_fraction=0.0)


def _blobs(shape, seed, touch_border=False):
    """A random binary mask of smoothed noise: many components, holes (in-plane and 3D) and tunnels."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    g = ndimage.gaussian_filter(rng.random(shape), 1.2)
    m = g > np.quantile(g, 0.3)
    if not touch_border:
        m[(0, -1), ...] = False
        m[:, (0, -1)] = False
    return m


@pytest.mark.parametrize("shape,touch", [((40, 36, 12), False), ((40, 36, 12), True), ((50, 44), False),
                                         ((50, 44), True)])
def test_fill_mask_holes_equals_monai_fill_holes(shape, touch):
    from monai.transforms import FillHoles

    from fusionlungnet_monai.transforms import FillMaskHoles

    filled = 0
    for seed in range(4):
        m = _blobs(shape, seed, touch)[None].astype(np.uint8)
        ref = FillHoles(applied_labels=[1])(torch.as_tensor(m.copy()))
        before = m.copy()
        got = FillMaskHoles()(torch.as_tensor(m))
        assert got.dtype == torch.uint8
        np.testing.assert_array_equal(m, before)  # the mask is read as a view since 0.3.8: it must stay as it was
        np.testing.assert_array_equal(got.numpy(), np.asarray(ref))
        filled += int(ref.sum()) - int(m.sum())
    assert filled > 0, "the random masks must have holes for this test to mean anything"


def test_fill_mask_holes_fills_a_one_slice_volume_as_its_slice_and_keeps_meta():
    from monai.data import MetaTensor
    from monai.transforms import FillHoles

    from fusionlungnet_monai.transforms import FillMaskHoles, FillMaskHolesd

    ring = np.zeros((30, 30), np.uint8)
    ring[5:25, 5:25] = 1
    ring[10:20, 10:20] = 0
    vol = MetaTensor(torch.as_tensor(ring[None, :, :, None]), affine=torch.diag(torch.tensor([0.7, 0.7, 2.0, 1.0])))
    out = FillMaskHolesd("pred")({"pred": vol})["pred"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, vol.affine)
    assert int(out.sum()) == 400  # the 10x10 hole is filled
    assert int(FillHoles(applied_labels=[1])(vol.clone()).sum()) == 300  # MONAI's 3D fill finds no hole there
    assert torch.equal(FillMaskHoles()(torch.as_tensor(ring[None])), out[..., 0].as_tensor())
    empty = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    assert FillMaskHoles()(empty) is empty


def test_binarize_mask_reads_0_1_0_255_and_jpg_masks_alike(tmp_path):
    from PIL import Image

    from fusionlungnet_monai.data import LoadCTImaged
    from fusionlungnet_monai.transforms import BinarizeMask, BinarizeMaskd

    m = np.zeros((96, 96), np.uint8)
    m[20:80, 10:40] = 1
    m[20:80, 55:85] = 1
    Image.fromarray(m * 255).save(tmp_path / "mask.jpg", quality=75)
    Image.fromarray(m * 255).save(tmp_path / "mask.png")
    jpg = np.asarray(Image.open(tmp_path / "mask.jpg"))
    assert ((jpg > 0) & (m == 0)).sum() > 100  # the compression noise MONAI's AsDiscrete(threshold=0.5) called lung
    for name in ("mask.jpg", "mask.png"):
        item = LoadCTImaged(keys="label")({"label": str(tmp_path / name)})
        out = BinarizeMaskd(keys="label")(item)["label"]
        assert isinstance(out, MetaTensor) and out.is_floating_point()
        np.testing.assert_array_equal(np.asarray(out).T, m)  # the reader's (x, y) order
    for arr in (m.astype(np.float32), torch.from_numpy(m * 2), np.zeros((8, 8), np.uint8)):  # 0/1, 0/1/2, empty
        out = BinarizeMask()(arr)
        assert type(out) is type(arr)
        np.testing.assert_array_equal(np.asarray(out), (np.asarray(arr) > 0).astype(np.float32))
