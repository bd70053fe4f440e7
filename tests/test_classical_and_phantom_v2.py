"""The classical HU lung segmentation (second opinion, pseudo-labels) and the domain-randomised phantoms v2."""

from pathlib import Path

import numpy as np
import pytest

from fusionlungnet_monai import classical_lung_mask, make_chest_phantom
from fusionlungnet_monai.classical import dice_score
from fusionlungnet_monai.data import load_ct_lps

DATA = Path(__file__).parent / "data"


def test_classical_on_real_ct_with_an_expert_mask():
    """elastix lung crop: the lung touches the crop border (kept: lung-like HU), outside air is dropped."""
    ct, sp = load_ct_lps(DATA / "elastix_lung_small" / "3DCT_lung_baseline_small.mha")
    ref, _ = load_ct_lps(DATA / "elastix_lung_small" / "3DCT_lung_baseline_small_mask.mha")
    assert dice_score(classical_lung_mask(ct, sp), ref) > 0.97


def test_classical_skips_bowel_gas_at_the_lung_bases():
    ct, sp = load_ct_lps(DATA / "totalseg_example_ct" / "nifti_sm" / "example_ct_sm.nii.gz")
    ref, _ = load_ct_lps(DATA / "totalseg_example_ct" / "nifti_sm" / "lung_mask.nii.gz")
    assert dice_score(classical_lung_mask(ct, sp), ref) > 0.9


def test_classical_removes_the_trachea_and_finds_two_lungs():
    from scipy import ndimage

    ct, sp = load_ct_lps(DATA / "lidc_idri_slabs" / "LIDC-IDRI-0002")
    m = classical_lung_mask(ct, sp)
    lab, n = ndimage.label(m)
    sizes = sorted(np.bincount(lab.ravel())[1:], reverse=True)
    assert n >= 2 and sizes[1] > 0.3 * sizes[0], "two lungs of similar size"
    box = (slice(248, 273), slice(248, 275))  # the trachea's cross-section in this slab (x, y), all 12 slices
    air = ct[box] < -900
    assert air.sum() > 12 * 300, "the trachea is in view"
    assert (m[box] & air).sum() < 0.01 * air.sum(), "and it is not in the mask (a few box-corner lung voxels)"


def test_classical_median_thresholds_are_exact_and_types_agree():
    """The classical method thresholds the 3x3 in-plane median through 5-of-9 counts (no filtered float copy): the
    same maps as ``median_filter`` (reflect border), ties included; int16 and float32 CT give the same mask."""
    from scipy import ndimage

    from fusionlungnet_monai.classical import _median_below

    rng = np.random.default_rng(0)
    ct = rng.choice(np.array([-1000, -950, -900, -320, -100, 40], dtype=np.int16), size=(23, 17, 4))
    med = ndimage.median_filter(ct, size=(3, 3, 1))
    for t in (-950, -320, -100):
        np.testing.assert_array_equal(_median_below(ct, t), med < t)
        np.testing.assert_array_equal(_median_below(ct, t, strict=False), med <= t)
    ph = make_chest_phantom(5, size=96)
    hu = np.round(ph.image).astype(np.int16)
    np.testing.assert_array_equal(classical_lung_mask(hu, ph.spacing),
                                  classical_lung_mask(hu.astype(np.float32), ph.spacing))


def test_phantom_v2_is_deterministic_and_varies_by_seed():
    a, b, c = make_chest_phantom(3, size=128), make_chest_phantom(3, size=128), make_chest_phantom(4, size=128)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    vols = [make_chest_phantom(s, size=128).lung_volume_ml for s in range(6)]
    assert np.std(vols) / np.mean(vols) > 0.1, f"lung volumes vary by case: {vols}"
    assert a.spacing != c.spacing or a.image.shape != c.image.shape


def test_phantom_v2_anatomy_and_labels():
    ph = make_chest_phantom(7, size=256, z_range=(-0.1, 1.05), effusion=True, slice_mm=5.0, noise_hu=5.0,
                            kernel="soft", tilt_deg=0.0, padding=-3024.0)
    img, m = ph.image.astype(float), ph.mask > 0
    per_slice = m.sum((0, 1))
    assert per_slice[-1] == 0, "above the apices: no lung"
    assert per_slice[0] < 0.05 * per_slice.max(), "below the domes only the deepest recesses"
    assert per_slice.max() > 0.1 * m.shape[0] * m.shape[1] / 2
    # the trachea (air near the midline in the upper chest) is not lung
    top = np.flatnonzero(per_slice)[-3]
    mid = m.shape[0] // 2
    air_mid = img[mid - 6 : mid + 6, :, top] < -900
    assert air_mid.any() and not (m[mid - 6 : mid + 6, :, top] & air_mid).any()
    # effusion (fluid HU at the back of the lower chest) is outside the mask
    low = np.flatnonzero(per_slice)[1]
    fluid = (img[:, :, low] > -50) & (img[:, :, low] < 60)
    assert not (fluid & m[:, :, low]).all()
    assert ph.image.min() == -3024, "FOV padding"


def test_phantom_v2_dependent_consolidation_is_lung_with_air_bronchograms():
    """Dependent consolidation: a dense band at the back of the lung that stays in the mask, with open airways in it
    (an effusion at the same place is not lung: test above). It is drawn from a generator of its own, so a seed drawn
    without it gives the case it gave before the option existed (hash of seed 1 at this size, taken before)."""
    import hashlib

    kw = dict(size=128, z_range=(-0.05, 0.9), tilt_deg=0.0, effusion=False, ggo=0, pleural_nodules=0)
    with_c, without = make_chest_phantom(5, consolidation=True, **kw), make_chest_phantom(5, consolidation=False, **kw)
    assert (with_c.mask == without.mask).all(), "consolidated lung is lung: the mask does not change"
    m = with_c.mask > 0
    dense = m & (with_c.image > -300) & (without.image < -500)  # was aerated lung, is now dense
    assert dense.sum() > 0.03 * m.sum()
    ys = np.nonzero(dense)[1]
    assert np.median(ys) > np.median(np.nonzero(m)[1]), "the band lies at the back (LPS: y to the back)"
    from scipy import ndimage

    # air bronchograms: dark voxels enclosed by the dense band
    holes = [ndimage.binary_fill_holes(dense[:, :, k]) & ~dense[:, :, k] & (with_c.image[:, :, k] < -700)
             for k in range(dense.shape[2])]
    assert sum(int(h.sum()) for h in holes) > 0
    drawn = make_chest_phantom(1, size=96, num_slices=12)
    assert hashlib.sha256(drawn.image.tobytes() + drawn.mask.tobytes()).hexdigest()[:16] == "1582c102a2ae8424"


def test_phantom_v2_setup_gap_off_centre_and_cut_by_the_field_of_view():
    """varied_setup (the release training phantoms): the air gap under the back and the off-centre patient are what
    real scans have (air outside the body reaching the image's edge; a body cut by the reconstruction circle); lung
    the circle cuts off is in neither the picture nor the mask. The drawn anatomy does not move with the setup."""
    from scipy import ndimage

    kw = dict(size=128, z_range=(0.3, 0.6), tilt_deg=0.0, table=True, padding=-3024.0, fov_mm=320.0, arms_down=False)
    base = make_chest_phantom(2, **kw)
    gap = make_chest_phantom(2, table_gap_mm=40.0, **kw)
    k = base.image.shape[2] // 2
    x = base.image.shape[0] // 2
    below = lambda ph: np.flatnonzero(ph.body[x, :, k])[-1]  # the back's edge (LPS: y to the back)
    table = lambda ph: below(ph) + 1 + np.flatnonzero(ph.image[x, below(ph) + 1 :, k] > 100)[0]
    sp = base.spacing[0]
    assert (table(gap) - below(gap)) * sp > (table(base) - below(base)) * sp + 20, "a wider air gap under the back"
    assert (gap.mask == base.mask).all()
    off = make_chest_phantom(2, offset_mm=(70.0, 0.0), **kw)
    cols = lambda ph: np.flatnonzero(ph.mask.any(axis=(1, 2)))
    assert cols(off).mean() > cols(base).mean() + 40 / sp, "the patient lies off the scanner's centre"
    circle = base.image[..., k] == -3024
    assert (off.body[..., k] & ndimage.binary_dilation(circle)).any(), "the field of view cuts the body"
    assert not (off.mask > 0)[off.image == -3024].any(), "no lung under the padding"
    assert off.lung_volume_ml < base.lung_volume_ml, "the lung the circle cuts off is not in the mask"
    drawn = [make_chest_phantom(s, size=256, num_slices=2, varied_setup=True) for s in range(12)]
    assert len({d.image.shape[0] for d in drawn}) > 1, "some cases on a coarser matrix"
    assert all(abs(d.image.shape[0] * d.spacing[0] - p.image.shape[0] * p.spacing[0]) < 1e-3 for d, p in
               zip(drawn, [make_chest_phantom(s, size=256, num_slices=2) for s in range(12)])), "same field of view"


@pytest.mark.parametrize("seed", [0, 11])
def test_phantom_v2_masks_are_mostly_dark(seed):
    ph = make_chest_phantom(seed, size=128)
    lung = ph.image[ph.mask > 0]
    if lung.size:
        assert np.median(lung) < -600


def test_second_opinion_on_a_coarser_grid_agrees_with_the_full_grid():
    """The report's second opinion runs on every 2nd voxel in-plane for sub-millimetre pixels: its agreement with the
    network moves by little against the full grid, and the classical mask comes back on the input's grid."""
    from fusionlungnet_monai.outputs import second_opinion

    ct, sp = load_ct_lps(DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003")  # 0.82 mm pixels
    full = classical_lung_mask(ct, sp)
    net = np.zeros_like(full)
    net[:, :, : ct.shape[2] // 2] = full[:, :, : ct.shape[2] // 2]  # a "network" that misses half of the lung
    fine, fine_mask, _ = second_opinion(net, ct, sp, grid_mm=0)
    coarse, coarse_mask, warn = second_opinion(net, ct, sp)
    assert fine["grid_mm"] == [round(sp[0], 3)] * 2 and coarse["grid_mm"] == [round(2 * sp[0], 3)] * 2
    assert (fine_mask == full).all() and coarse_mask.shape == ct.shape
    assert dice_score(coarse_mask, full) > 0.98
    assert abs(coarse["dice_with_network"] - fine["dice_with_network"]) < 0.01
    assert abs(coarse["classical_ml"] - fine["classical_ml"]) < 0.02 * fine["classical_ml"]
    assert fine["dice_with_network"] < 0.85 and warn and warn[0].startswith("check this case")
    # 2.7 mm pixels (elastix): already coarse, the full grid
    ct, sp = load_ct_lps(DATA / "elastix_lung_small" / "3DCT_lung_baseline_small.mha")
    summary, mask, _ = second_opinion(classical_lung_mask(ct, sp), ct, sp)
    assert summary["grid_mm"] == [round(sp[0], 3)] * 2 and summary["dice_with_network"] == 1.0


def test_release_data_reuses_real_slices_on_a_machine_without_itk(tmp_path):
    """make_release_data.py --real-from: new phantoms, the real slices (and their split) copied from an earlier run."""
    import json
    import subprocess
    import sys

    import nibabel as nib

    prev = tmp_path / "prev"
    for sub in ("images", "labels"):
        (prev / sub).mkdir(parents=True)
    real_train = {"image": "images/lidc0002_s000.nii.gz", "label": "labels/lidc0002_s000.nii.gz"}
    real_val = {"image": "images/elastix_s000.nii.gz", "label": "labels/elastix_s000.nii.gz"}
    for item, value in ((real_train, -700), (real_val, -800)):
        for key in ("image", "label"):
            nib.save(nib.Nifti1Image(np.full((8, 8, 1), value if key == "image" else 1, np.int16), np.eye(4)),
                     str(prev / item[key]))
    phantom = {"image": "images/phantom0000_s000.nii.gz", "label": "labels/phantom0000_s000.nii.gz"}
    (prev / "datalist.json").write_text(json.dumps({"training": [phantom, real_train, real_train],
                                                    "validation": [real_val], "real_validation": [real_val]}))
    out = tmp_path / "new"
    r = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "make_release_data.py"), str(out),
                        "--phantoms", "1", "--val-phantoms", "1", "--slices-per-case", "2", "--size", "64",
                        "--workers", "1", "--real-repeat", "3", "--real-from", str(prev)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    dl = json.loads((out / "datalist.json").read_text())
    phantoms = [i for i in dl["training"] if "phantom" in i["image"]]
    assert len(phantoms) >= 2 and dl["training"].count(real_train) == 3  # each real slice once, then repeated
    assert dl["real_validation"] == [real_val] and dl["validation"][-1] == real_val
    assert nib.load(str(out / real_val["image"])).get_fdata().min() == -800  # copied, not re-read from tests/data


def _script(name: str):
    """A module of scripts/ (not a package), imported from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sliver_slices_pick_the_thin_apical_and_basal_slices():
    """--sliver-slices: the extra slices have lung, under 40 % of the largest slice's area, spread apex to base."""
    mask = np.zeros((20, 20, 30), np.uint8)
    for k, width in enumerate([0, 0, 2, 4, 6, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
                               20, 20, 6, 4, 2, 1, 0, 0]):
        mask[:width, :10, k] = 1  # area 10 * width: the largest is 200
    sliver_slices = _script("make_release_data").sliver_slices
    pick = sliver_slices(mask, 3)
    assert len(pick) == 3 and pick[0] == 2 and pick[-1] == 27  # the apex's first and the base's last thin slice
    assert all(0 < mask[:, :, k].sum() < 0.4 * 200 for k in pick)
    assert sliver_slices(np.zeros((4, 4, 5)), 3) == []


def test_validation_knows_which_real_cases_the_release_trains_on(tmp_path):
    """evaluate_real.py reads the release split from make_release_data.py: a training image is never reported as
    held out, and held-out images are never in the training sources."""
    release, evaluate = _script("make_release_data"), _script("evaluate_real")
    train = {Path(src).resolve() for src, _, _ in release.REAL_TRAINING.values()}
    held_out = {Path(src).resolve() for src, _, _ in release.REAL_VALIDATION.values()}
    assert train and held_out and not train & held_out
    cases = evaluate.real_cases(tmp_path)
    for name, image, _, kind in cases:
        seen = Path(image).resolve() in train
        assert kind.endswith("-trained") == seen and ("seen in training" in name) == seen, name
    assert {Path(image).resolve() for _, image, _, kind in cases if not kind.endswith("-trained")} <= held_out
    assert any(kind.endswith("-trained") for *_, kind in cases)  # the TotalSegmentator CT is a training image
