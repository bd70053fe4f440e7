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


@pytest.fixture(scope="module")
def lidc_0003():
    from pathlib import Path

    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps

    ct, sp = load_ct_lps(Path(__file__).parent / "data" / "lidc_idri_slabs" / "LIDC-IDRI-0003")
    return ct, classical_lung_mask(ct, sp) > 0, np.diag([-sp[0], -sp[1], sp[2], 1.0])  # LPS array, RAS affine


def test_split_by_the_bodys_midline_on_real_ct_in_every_storage_order(lidc_0003):
    """With the CT, a real chest slab (lungs that touch at the front) is split where they meet, in patient
    coordinates: the right lung on the patient's right, the same voxels for all six storage orders."""
    ct, m, affine = lidc_0003
    lab = split_left_right(m, affine, ct)
    right, left = np.nonzero(lab == RIGHT_LABEL)[0], np.nonzero(lab == LEFT_LABEL)[0]
    assert right.max() < left.min() + 40 and right.mean() < left.mean() - 100  # LPS x grows to the patient's left
    assert 0.45 < right.size / m.sum() < 0.55
    for perm in [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]:
        stored = np.eye(4)
        stored[:3, :3] = affine[:3, :3][:, perm]
        got = split_left_right(np.transpose(m, perm), stored, np.transpose(ct, perm))
        assert np.array_equal(np.transpose(got, np.argsort(perm)), lab), perm


def test_split_is_not_fooled_by_a_blob_of_outside_air_and_warns(lidc_0003):
    """The COPD failure: a block of air beside the body, larger than either lung and joined to nothing, was the
    'left lung' of the component rule (the right lung then the second largest). By the body's midline each lung
    stays on its side; the report's warning names an implausible share."""
    from fusionlungnet_monai.volumes import right_share_warning

    ct, m, affine = lidc_0003
    blob = np.zeros_like(m)
    blob[430:, 20:480] = ct[430:, 20:480] < -900  # room air at the patient's left side
    assert blob.sum() > 0.5 * m.sum()
    by_components = split_left_right(m | blob, affine)
    by_midline = split_left_right(m | blob, affine, ct)
    lungs = split_left_right(m, affine, ct)
    assert not np.array_equal(by_components[m], lungs[m])  # the component rule moved lung to the other side
    assert np.array_equal(by_midline[m], lungs[m])
    v = lung_volumes(m | blob, (0.82, 0.82, 2.5), affine, ct)
    assert right_share_warning(v["right_ml"], v["left_ml"]).startswith("right/left split implausible")
    v = lung_volumes(m, (0.82, 0.82, 2.5), affine, ct)
    assert right_share_warning(v["right_ml"], v["left_ml"]) is None
