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
