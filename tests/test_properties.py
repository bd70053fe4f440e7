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
