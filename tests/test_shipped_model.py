"""The shipped weights (bundle/models/model.pt): present, fp16, recorded checksum, and they segment real CT out of
the box through `fusionlungnet predict` with no training step."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import BUNDLE, DATA

MODEL = BUNDLE / "models" / "model.pt"


def test_weights_are_fp16_small_and_their_checksum_is_recorded():
    assert MODEL.is_file(), "the shipped model is part of the repository"
    assert MODEL.stat().st_size <= 100 * 2**20
    sd = torch.load(MODEL, map_location="cpu", weights_only=True)
    floats = [v for v in sd.values() if torch.is_floating_point(v)]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    digest = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert digest in (BUNDLE / "docs" / "README.md").read_text(), "sha256 in the model card"
    large = (BUNDLE / "large_files.yml").read_text()
    assert digest in large and "models/model.pt" in large


@pytest.mark.slow
def test_fresh_clone_predict_segments_real_ct(tmp_path):
    """LIDC-IDRI-0003 (never trained on): the network agrees with the checked classical segmentation."""
    out = tmp_path / "lidc"
    r = subprocess.run([sys.executable, "-m", "fusionlungnet_monai", "predict",
                        str(DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003"), str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["second_opinion"]["dice_with_network"] > 0.9
    m = np.asarray(nib.load(str(out / "lungmask.nii.gz")).dataobj)
    assert m.shape == (512, 512, 11) and 0.05 < m.mean() < 0.4


@pytest.mark.slow
def test_cropped_field_of_view_is_segmented_at_the_trained_scale(tmp_path):
    """The elastix crop (57 x 78 voxels of 2.7 mm, one hemithorax, never trained on) against its expert mask.
    Stretched straight to the network's square input it scored Dice 0.82; field-of-view padding gives 0.97 for the
    network alone (``--no-refine``), and the HU boundary refinement lifts it to 0.987."""
    from fusionlungnet_monai.data import LoadCTImage

    el = DATA / "elastix_lung_small"
    ref = np.asarray(LoadCTImage(image_only=True)(str(el / "3DCT_lung_baseline_small_mask.mha"))) > 0
    dice = {}
    for name, extra in (("shipped", []), ("network", ["--no-refine"])):
        r = subprocess.run([sys.executable, "-m", "fusionlungnet_monai", "predict",
                            str(el / "3DCT_lung_baseline_small.mha"), str(tmp_path / name), "--no-progress", *extra],
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads((tmp_path / name / "report.json").read_text())["hu_boundary_refinement"] is (not extra)
        pred = np.asarray(nib.load(str(tmp_path / name / "lungmask.nii.gz")).dataobj) > 0
        assert pred.shape == ref.shape
        dice[name] = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
    assert dice["network"] > 0.95 and dice["shipped"] > 0.98 and dice["shipped"] > dice["network"] + 0.01, dice


@pytest.mark.slow
def test_a_crop_that_cuts_through_the_lungs_is_still_lung(tmp_path):
    """The elastix crop zoomed to 0.6 of its field of view (scripts/robustness.py ``fov_small``): the lungs fill the
    picture and are cut by its edges. With the padding repeating the edge, the cut lung ran out to the border like air
    around a body and the shipped weights found almost none of it (IoU 0.05); with soft tissue beyond the cut
    (``FieldOfViewPad(cut_fill_hu=40)``), IoU 0.87."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from robustness import cases, lps_mask, save, variant

    from fusionlungnet_monai.predict import Predictor

    _, ct, ref, sp = cases(names=("elastix",))[0]
    ct, ref, sp = variant("fov_small", ct, ref, sp)
    with Predictor(progress=False) as pred:
        mask = lps_mask(pred.segment(save(ct, sp, tmp_path / "fov_small.nii.gz"))[1])
    assert (mask & ref).sum() / (mask | ref).sum() > 0.8


@pytest.mark.slow
def test_the_trachea_is_not_lung():
    """LIDC-IDRI-0002's trachea (air in the mediastinum, in all 12 slices): without the airway removal
    (``post#remove_airways``, off with --keep-airways) the pipeline calls part of it lung (the 0.2.x weights: 74 %,
    0.3.0: 24 %); with it almost none."""
    from fusionlungnet_monai.predict import Predictor

    from fusionlungnet_monai.cli import build_parser

    box = (slice(248, 273), slice(248, 275))  # the trachea's cross-section (x, y), as in the classical test
    kept = {}
    for remove in (True, False):  # False: what `fusionlungnet predict --keep-airways` asks for
        with Predictor(progress=False, remove_airways=remove) as p:
            image, mask, _ = p.segment(DATA / "lidc_idri_slabs" / "LIDC-IDRI-0002")
            assert p._switch("remove_airways") is remove
        air = np.asarray(image)[box] < -900
        kept[remove] = ((np.asarray(mask)[box] > 0) & air).sum() / air.sum()
        assert air.sum() > 12 * 300 and np.asarray(mask).mean() > 0.1, "the trachea is in view, the lungs are found"
    assert kept[True] < 0.02 and kept[False] > 0.1 and kept[False] > 10 * kept[True], kept
    assert build_parser().parse_args(["predict", "in", "out", "--keep-airways"]).keep_airways


def test_training_can_start_from_the_shipped_weights():
    """`--init_weights FILE` loads a plain (fp16) state dict into the network before training; null disables it."""
    from ignite.engine import Engine
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "train.json"))
    assert p.get_parsed_content("train#state_handlers#0#_disabled_") is True  # init_weights: null by default
    p["init_weights"] = str(MODEL)
    p["device"] = "$torch.device('cpu')"
    loader = p.get_parsed_content("train#state_handlers#0")
    net = p.get_parsed_content("network")
    loader(Engine(lambda e, b: None))
    sd = torch.load(MODEL, map_location="cpu", weights_only=True)
    key = "encoder.conv1.weight" if "encoder.conv1.weight" in sd else next(k for k in sd if k.endswith("weight"))
    assert torch.equal(net.state_dict()[key], sd[key].float())


@pytest.mark.slow
def test_every_real_sample_goes_through_the_bundle_run(tmp_path):
    """`python -m monai.bundle run` (not only `fusionlungnet predict`) on every real sample in tests/data, as one
    batch and a single slice alone: exit 0, one lung mask per input on the input's grid, lungs found in every chest
    CT, and none in the TotalSegmentator DICOM slab, which is upper abdomen only (its SOURCE.md; the 0.2.x weights
    called 12 mL of its stomach gas lung)."""
    from conftest import bundle
    from fusionlungnet_monai.data import LoadCTImage

    covid = DATA / "covid19_ny_sbu_sample" / "dicom" / "A046441" / "axial" / "19001111-045.dcm"
    cases = [covid, DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003", DATA / "totalseg_example_ct" / "dicom",
             DATA / "totalseg_example_ct" / "nifti_sm" / "example_ct_sm.nii.gz",
             DATA / "elastix_lung_small" / "3DCT_lung_baseline_small.mha"]
    out = tmp_path / "batch"
    bundle("run", "--config_file", "configs/inference.json", "--input", json.dumps([str(c) for c in cases]),
           "--output_dir", str(out), "--ckpt_path", str(MODEL))
    masks = sorted(out.glob("*_lungmask.nii.gz"))
    assert len(masks) == len(cases), [m.name for m in masks]
    for case in cases:
        stem = case.name.split(".")[0]
        m = nib.load(str(out / f"{stem}_lungmask.nii.gz"))
        img = LoadCTImage(image_only=True)(str(case))
        assert m.shape == tuple(s for s in img.shape if s > 1) or m.shape == tuple(img.shape), (case, m.shape)
        no_lung = case.parent.name == "totalseg_example_ct" and case.name == "dicom"
        assert np.asarray(m.dataobj).any() != no_lung, f"{case}: {'no lungs expected' if no_lung else 'lungs found'}"
        report = json.loads((out / f"{stem}_report.json").read_text())  # post#report, and its picture
        zooms = m.header.get_zooms()  # a one-slice mask is written 2D: its thickness is the report's alone
        assert report["spacing_mm"][: len(zooms)] == pytest.approx(zooms, abs=1e-4), case
        voxels = np.count_nonzero(np.asarray(m.dataobj)) * float(np.prod(report["spacing_mm"])) / 1000.0
        assert report["volumes_ml"]["total_ml"] == pytest.approx(voxels, abs=0.05), case
        assert ("empty mask: no lung found" in report["warnings"]) == no_lung, report["warnings"]
        assert (out / f"{stem}_qc.png").is_file()
    single = tmp_path / "single"
    bundle("run", "--config_file", "configs/inference.json", "--input", str(covid), "--output_dir", str(single),
           "--ckpt_path", str(MODEL))
    assert np.array_equal(np.asarray(nib.load(str(single / f"{covid.stem}_lungmask.nii.gz")).dataobj),
                          np.asarray(nib.load(str(out / f"{covid.stem}_lungmask.nii.gz")).dataobj))


@pytest.mark.slow
def test_robustness_script_runs_every_variant_and_flipped_storage_changes_nothing(tmp_path):
    """scripts/robustness.py (docs/validation.md's acquisition table) on a tiny phantom: every variant runs, and the
    same CT stored flipped gives the same mask."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from robustness import VARIANTS, main

    rows = main(["--smoke", "--json", str(tmp_path / "rows.json"), "--md", str(tmp_path / "table.md")])
    assert [r["variant"] for r in rows] == list(VARIANTS)
    by = {r["variant"]: r for r in rows}
    for method in ("network_pipeline", "network_alone", "classical"):
        assert by["flipped"][method] == by["native"][method]
    assert by["thick"]["shape"][2] == by["native"]["shape"][2] // 2
    assert by["grid64"]["shape"][:2] == [64, 64] and by["grid128"]["shape"] == by["native"]["shape"]  # 128² already
    assert by["table_gap"]["shape"][1] > by["native"]["shape"][1] > by["fov_crop"]["shape"][1]
    assert all(r["network_pipeline"]["iou"] > 0.8 and r["network_alone"]["iou"] > 0.8 for r in rows), rows
    assert (tmp_path / "table.md").read_text().count("\n") == len(VARIANTS) + 2


def test_robustness_consolidation_makes_the_back_of_the_lung_solid_and_keeps_its_air():
    """scripts/robustness.py ``consolidation``: the back fifth of the reference lung becomes solid (about -40 HU), its
    air below -900 HU stays (air bronchograms), the rest of the CT and the reference do not change."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from robustness import variant

    ct = np.full((20, 30, 4), 40, np.int16)
    ref = np.zeros(ct.shape, bool)
    ref[4:16, 5:25] = True  # lung rows y 5..24: the back fifth is y > 20.2
    ct[ref] = -850
    ct[10, 23, :] = -1000  # a bronchus in the back fifth
    out, ref2, _ = variant("consolidation", ct, ref, [1.0, 1.0, 1.0])
    assert (ref2 == ref).all()
    back = ref.copy()
    back[:, :21] = False
    back[10, 23, :] = False
    assert (np.abs(out[back].astype(int) + 40) <= 1).all()
    assert (out[10, 23, :] == -1000).all()
    rest = ~back
    rest[10, 23, :] = False
    assert (out[rest] == ct[rest]).all()


def test_robustness_table_gap_and_fov_crop_move_the_reference_with_the_ct():
    """scripts/robustness.py ``table_gap``: 25 mm of air between the lowest point of the back and what lies behind it
    (the table), across the whole width; ``fov_crop``: the body cut at the sides and the front. The reference moves
    with the CT, voxel for voxel."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from robustness import variant

    ct = np.full((40, 40, 3), -1000, np.int16)
    ct[5:35, 5:30] = 40  # the body, its back at row 29
    ct[2:38, 33:36] = 200  # the table
    ref = np.zeros(ct.shape, bool)
    ref[10:30, 10:25] = True
    ct[ref] = -850
    out, ref2, sp = variant("table_gap", ct, ref, [2.5, 2.5, 5.0])
    assert out.shape == (40, 50, 3) and sp == [2.5, 2.5, 5.0]
    assert (out[:, 30:40] < -900).all(), "air from the back to the table, edge to edge"
    assert (out[:, :30] == ct[:, :30]).all() and (out[:, 40:] == ct[:, 30:]).all()
    assert (ref2[:, :30] == ref[:, :30]).all() and not ref2[:, 30:].any()
    out, ref3, _ = variant("fov_crop", ct, ref, [2.5, 2.5, 5.0])
    assert out.shape[:2] == (24, 33)  # 30 body columns less 3 on each side; 25 body rows less 2 at the front
    assert (out == ct[8:32, 7:]).all() and (ref3 == ref[8:32, 7:]).all()
