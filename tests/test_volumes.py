import numpy as np
import pytest

from fusionlungnet_monai.phantom import make_phantom
from fusionlungnet_monai.volumes import LEFT_LABEL, RIGHT_LABEL, lung_volumes, split_left_right


def test_volume_is_exact_on_phantom_mask():
    ph = make_phantom(10, size=128, seed=3)
    v = lung_volumes(ph.mask, ph.spacing, ph.affine_ras)
    assert v["total_ml"] == pytest.approx(ph.lung_volume_ml, rel=1e-12)
    assert ph.spacing == (3.0, 3.0, 5.0)  # 128 voxels of a 384 mm chest
    assert v["total_ml"] == pytest.approx(ph.mask.sum() * 3.0 * 3.0 * 5.0 / 1000)
    assert v["right_ml"] + v["left_ml"] == pytest.approx(v["total_ml"])
    assert lung_volumes(ph.mask, ph.spacing)["right_ml"] is None


def test_split_puts_the_patients_right_lung_at_label_1():
    ph = make_phantom(6, size=128, seed=4)
    lab = split_left_right(ph.mask, ph.affine_ras)
    # LPS voxel x grows towards the patient's left: the right lung is at low x indices
    half = ph.mask.shape[0] // 2
    assert np.all(lab[:half][ph.mask[:half] > 0] == RIGHT_LABEL)
    assert np.all(lab[half:][ph.mask[half:] > 0] == LEFT_LABEL)
    # a flipped affine (x grows towards the right) swaps the labels
    flipped = ph.affine_ras.copy()
    flipped[0, 0] *= -1
    assert np.all(split_left_right(ph.mask, flipped)[:half][ph.mask[:half] > 0] == LEFT_LABEL)


def test_split_touching_lungs_uses_the_midline_and_empty_is_empty():
    m = np.zeros((20, 10, 3), np.uint8)
    m[2:18, 2:8] = 1  # one blob
    lab = split_left_right(m, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert set(np.unique(lab)) == {0, 1, 2}
    assert abs(int((lab == 1).sum()) - int((lab == 2).sum())) <= 10 * 3 * 6
    assert not split_left_right(np.zeros((4, 4, 2)), np.eye(4)).any()
