"""Property-based tests (hypothesis) of the array transforms and the classical segmentation: random shapes and
dtypes, NaN/Inf, constant images, 1x1 slices. Each call either works (finite output of the right shape) or raises
the project's InputError / a ValueError naming the argument - never a crash from deep inside a library."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fusionlungnet_monai import ArtifactRemoval, CTIntensityNormalize, DynamicThreshold, MedianFilter, classical_lung_mask

shapes = st.tuples(st.integers(1, 48), st.integers(1, 48))
values = st.one_of(st.floats(-3024, 3071, width=32), st.just(float("nan")), st.just(float("inf")),
                   st.just(float("-inf")))
images = shapes.flatmap(lambda s: arrays(np.float32, s, elements=values))
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(images)
def test_paper_chain_on_any_slice(img):
    x = torch.as_tensor(CTIntensityNormalize()(img[None]))
    assert torch.isfinite(x).all() and 0 <= float(x.min()) and float(x.max()) <= 1
    for t in (MedianFilter(radius=1), DynamicThreshold(window=5), ArtifactRemoval(threshold=0.3)):
        y = t(x)
        assert tuple(y.shape) == tuple(x.shape) and torch.isfinite(torch.as_tensor(y)).all()
        x = y


@FAST
@given(st.integers(1, 40), st.integers(1, 40), st.floats(-3024, 3071, width=32))
def test_constant_images(h, w, v):
    img = np.full((1, h, w), v, np.float32)
    y = ArtifactRemoval()(DynamicThreshold(window=3)(MedianFilter()(CTIntensityNormalize()(img))))
    assert torch.isfinite(torch.as_tensor(y)).all()


@FAST
@given(st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 6)).flatmap(
    lambda s: arrays(np.float32, s, elements=values)))
def test_classical_segmentation_on_any_volume(vol):
    m = classical_lung_mask(vol, (0.8, 0.8, 2.0))
    assert m.shape == vol.shape and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float64])
def test_dtypes_and_a_4096_slice(dtype):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(1, 4096, 4096)).astype(dtype)
    x = torch.as_tensor(CTIntensityNormalize()(img))
    assert x.shape == (1, 4096, 4096) and torch.isfinite(x).all()
    one = CTIntensityNormalize()(np.zeros((1, 1, 1), dtype))
    assert one.shape == (1, 1, 1)
    assert ArtifactRemoval()(DynamicThreshold()(MedianFilter()(one))).shape == (1, 1, 1)


READ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
dtypes = st.sampled_from([np.uint8, np.int16, np.uint16, np.float32, np.float64])


@READ
@given(st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 4)), dtypes, st.booleans())
def test_reader_on_any_nifti(tmp_path_factory, shape, dtype, nan):
    """Random NIfTI volumes (1x1 slices, one slice, every dtype, NaN): read with the right shape, or an InputError."""
    import nibabel as nib

    from fusionlungnet_monai.data import InputError, LoadCTImage

    arr = np.random.default_rng(sum(shape)).uniform(-1024, 1000, shape).astype(dtype)
    if nan and np.issubdtype(dtype, np.floating):
        arr.flat[0] = np.nan
    path = tmp_path_factory.mktemp("nii") / "x.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.diag([-0.7, -0.7, 2.0, 1.0])), str(path))
    try:
        img = LoadCTImage(image_only=True)(str(path))
    except InputError as e:
        assert str(path) in str(e)
        return
    assert int(np.prod(img.shape)) == int(np.prod(shape))


@READ
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from(["L", "RGB", "RGBA", "I;16", "F"]))
def test_reader_on_any_picture(tmp_path_factory, w, h, mode):
    """Random PNG/TIFF pictures of any size and mode: read as (W, H[, C]) or refused with an InputError."""
    from PIL import Image

    from fusionlungnet_monai.data import InputError, LoadCTImage

    suffix = ".tif" if mode == "F" else ".png"
    path = tmp_path_factory.mktemp("pic") / f"x{suffix}"
    Image.new(mode, (w, h)).save(path)
    try:
        img = LoadCTImage(image_only=True)(str(path))
    except InputError as e:
        assert str(path) in str(e)
        return
    assert tuple(img.shape[:2]) == (w, h)


@FAST
@given(st.integers(1, 200), st.integers(1, 200), st.floats(0.05, 5.0), st.floats(0, 600))
def test_field_of_view_pad_on_any_slice(h, w, spacing, fov):
    from monai.data import MetaTensor

    from fusionlungnet_monai import FieldOfViewPad

    img = MetaTensor(torch.rand(1, h, w), affine=torch.diag(torch.tensor([spacing, spacing, 1.0, 1.0],
                                                                          dtype=torch.float64)))
    out = FieldOfViewPad(min_fov=fov)(img)
    side = max(h, w, min(4 * max(h, w), int(np.ceil(fov / spacing))) if fov else 0)  # padded at most 4x
    assert tuple(out.shape) == (1, side, side)
    top, left = (side - h) // 2, (side - w) // 2
    assert torch.equal(out[:, top : top + h, left : left + w], img)


affines = st.tuples(
    st.lists(st.floats(-3.0, 3.0, allow_nan=False, width=32), min_size=9, max_size=9),  # any 3x3: shear, flips, ...
    st.sampled_from(["any", "oblique", "singular", "nan"]),
)


@FAST
@given(affines, st.integers(0, 2**16))
def test_reported_volume_is_voxels_times_the_determinant(tmp_path_factory, drawn, seed):
    """Any affine a NIfTI header may hold (shear, flips, oblique, singular, not finite): the report's total in mL is the
    mask's voxel count times |det| of the voxel-to-world matrix, with a warning when the grid is sheared, or the file
    is refused in one line. (0.3.13 took the product of the column lengths: a sheared grid came out 7.7 % high.)"""
    import nibabel as nib

    from fusionlungnet_monai.data import InputError, LoadCTImage
    from fusionlungnet_monai.outputs.report import describe_lungs
    from fusionlungnet_monai.volumes import MAX_SHEAR_DEG, shear_degrees

    values, kind = drawn
    m = np.array(values, dtype=float).reshape(3, 3)
    if kind == "oblique":  # a rotation times positive voxel sizes: no shear
        q, _ = np.linalg.qr(m + np.eye(3) * 4)
        m = q @ np.diag(np.abs(np.diag(m)) + 0.3)
    elif kind == "singular":
        m[:, 2] = m[:, 0] * 2.0
    aff = np.eye(4)
    aff[:3, :3] = m
    rng = np.random.default_rng(seed)
    ct = rng.integers(-1000, 100, (20, 18, 4)).astype(np.int16)
    if kind == "nan":
        aff[1, 1] = np.nan
    path = tmp_path_factory.mktemp("aff") / "ct.nii"
    nib.save(nib.Nifti1Image(ct, np.eye(4)), str(path))
    # nibabel writes no singular or NaN matrix into a header: the sform's rows (bytes 280-327) as drawn, qform off
    raw = bytearray(path.read_bytes())
    raw[252:256] = np.array([0, 2], "<i2").tobytes()  # qform_code 0, sform_code 2 (aligned)
    raw[280:328] = aff[:3].astype("<f4").tobytes()
    raw[80:92] = np.linalg.norm(aff[:3, :3], axis=0).astype("<f4").tobytes()  # pixdim[1:4], as nibabel writes them
    path.write_bytes(bytes(raw))
    try:
        img = LoadCTImage(image_only=True, dtype=None)(str(path))
    except InputError as e:
        assert "\n" not in str(e) and "ct.nii" in str(e)
        return
    det = abs(float(np.linalg.det(np.asarray(img.affine, dtype=float)[:3, :3])))
    assert np.isfinite(det) and det > 0
    mask = np.asarray(img) < -500
    report = describe_lungs(mask, np.asarray(img), np.asarray(img.affine), second=False)
    assert report["volumes_ml"]["total_ml"] == pytest.approx(round(mask.sum() * det / 1000.0, 1), abs=0.051)
    sheared = shear_degrees(np.asarray(img.affine)) > MAX_SHEAR_DEG
    assert sheared == any("sheared" in w for w in report["warnings"])
