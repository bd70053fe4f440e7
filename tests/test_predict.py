"""`fusionlungnet predict` end to end with a checkpoint trained in this test session (tests/conftest.py)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BUNDLE, DATA


def predict(*args, expect_rc=0):
    r = subprocess.run([sys.executable, "-m", "fusionlungnet_monai", "predict", *map(str, args), "--no-progress"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == expect_rc, f"rc={r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="module")
def model(trained):
    return trained / "models" / "model.pt"


def test_dicom_series_mask_seg_report_and_qc(model, phantom_dir, tmp_path):
    import highdicom as hd
    import nibabel as nib
    import pydicom
    from monai.transforms import LoadImage
    from PIL import Image

    from fusionlungnet_monai.data import CTSeriesReader, select_ct_series
    from fusionlungnet_monai.volumes import lung_volumes

    series = phantom_dir / "dicom" / "ph001"  # CT series + a localizer series
    out = tmp_path / "out"
    predict(series, out, "--model", model, "--input-size", "64", "--format", "dicom-seg", "--split-lr",
            "--bundle", BUNDLE)
    report = json.loads((out / "report.json").read_text())
    mask = nib.load(str(out / "lungmask.nii.gz"))
    ref = LoadImage(reader=CTSeriesReader(), image_only=True)(str(series))
    assert mask.shape == tuple(ref.shape) == (128, 128, 12)
    np.testing.assert_allclose(mask.affine, ref.affine.numpy(), atol=1e-4)
    labels = np.asarray(mask.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2} and labels.any(), "a trained model finds lungs"
    info = select_ct_series(series)
    assert report["series_uid"] == info.uid and report["num_slices"] == 12
    assert report["spacing_mm"] == pytest.approx([3.0, 3.0, 5.0])  # 128 voxels of a 384 mm chest phantom
    v = report["volumes_ml"]
    assert v["total_ml"] == pytest.approx((labels > 0).sum() * 3.0 * 3.0 * 5 / 1000, abs=0.1)
    assert v["right_ml"] + v["left_ml"] == pytest.approx(v["total_ml"], abs=0.2)
    implausible = not 1000 <= v["total_ml"] <= 10000  # a 12-slice phantom covers only part of the lungs
    assert implausible == any("outside the plausible adult range" in w for w in report["warnings"])
    assert set(report["timings_s"]) >= {"read_and_bundle_inference", "total"}
    # the same volume code on the exact phantom mask: within 10 % of the phantom's lung volume (in fact exact)
    gt = nib.load(str(phantom_dir / "nifti" / "ph001_label.nii.gz"))
    from fusionlungnet_monai.phantom import make_phantom

    exact = make_phantom(12, size=128, seed=1).lung_volume_ml
    gt_ml = lung_volumes(np.asarray(gt.dataobj), np.linalg.norm(gt.affine[:3, :3], axis=0), gt.affine)["total_ml"]
    assert gt_ml == pytest.approx(exact, rel=0.10)
    # DICOM SEG: loads with highdicom and pydicom; frames align with the source instances
    seg = hd.seg.segread(str(out / "seg.dcm"))
    assert seg.get_segment_numbers() == [1, 2]
    assert pydicom.dcmread(str(out / "seg.dcm")).Modality == "SEG"
    uids = [pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID for f in info.files]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True, relabel=False)
    for k in range(12):
        np.testing.assert_array_equal(frames[k], labels[:, :, k].T)
    qc = Image.open(out / "qc.png")
    assert qc.size[1] == 300 and qc.size[0] > 300 * 2  # axial + coronal + sagittal side by side, enlarged to 300 px


def test_png_in_png_out(model, phantom_dir, tmp_path):
    from PIL import Image

    src = phantom_dir / "png" / "images" / "ph000_s006.png"
    predict(src, tmp_path / "o", "--model", model, "--input-size", "64")
    m = Image.open(tmp_path / "o" / "lungmask.png")
    assert m.size == Image.open(src).size
    assert json.loads((tmp_path / "o" / "report.json").read_text())["kind"] == "picture"


def test_batch_mode_reports_a_broken_case_and_finishes_the_rest(model, phantom_dir, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copytree(phantom_dir / "dicom" / "ph000", cases / "patientA")
    shutil.copy(phantom_dir / "nifti" / "ph001_image.nii.gz", cases / "patientB.nii.gz")
    (cases / "broken").mkdir()
    (cases / "broken" / "CT0001.dcm").write_bytes(b"\x00" * 300)  # not DICOM at all
    r = predict(cases, tmp_path / "out", "--model", model, "--input-size", "64", expect_rc=1)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cases"] == 3 and summary["failed"] == 1
    failed = [x for x in summary["results"] if not x["ok"]]
    assert "broken" in failed[0]["error"] and "no DICOM files" in failed[0]["error"]
    assert (tmp_path / "out" / "patientA" / "lungmask.nii.gz").is_file()
    assert (tmp_path / "out" / "patientB" / "lungmask.nii.gz").is_file()
    assert "2 of 3 cases done" in r.stdout


def test_clear_errors_for_missing_model_and_input(tmp_path, phantom_dir):
    r = predict(phantom_dir / "dicom" / "ph000", tmp_path / "o", "--model", tmp_path / "none.pt", expect_rc=2)
    assert "no trained weights here" in r.stderr and "Traceback" not in r.stderr
    r = predict(tmp_path / "missing", tmp_path / "o", expect_rc=2)
    assert "no such file or folder" in r.stderr and "Traceback" not in r.stderr


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "fusionlungnet_monai", "predict", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "--series-uid" in r.stdout and "example" in r.stdout


def test_segment_in_memory_scans_the_series_once(model, phantom_dir, tmp_path, monkeypatch):
    """``Predictor.segment`` returns (image, uint8 mask MetaTensor on the image's grid, SeriesInfo); one predict of a
    DICOM folder reads its headers once (input check, reader and report share the scan); a changed folder is
    scanned again."""
    import torch
    from monai.data import MetaTensor

    from fusionlungnet_monai.data import series as series_mod
    from fusionlungnet_monai.predict import Predictor

    folder = tmp_path / "ph001"
    shutil.copytree(phantom_dir / "dicom" / "ph001", folder)
    calls = []
    real = series_mod._scan_files
    monkeypatch.setattr(series_mod, "_scan_files", lambda *a: calls.append(a[0]) or real(*a))
    with Predictor(bundle_dir=str(BUNDLE), model=str(model), input_size=64, progress=False) as p:
        assert p.predict(folder, tmp_path / "out").ok
        assert len(calls) == 1, f"the series headers were scanned {len(calls)} times"
        image, mask, info = p.segment(folder)
        assert len(calls) == 1, "same files: the earlier scan is reused"
        assert isinstance(mask, MetaTensor) and mask.dtype == torch.uint8 and tuple(mask.shape) == tuple(image.shape)
        assert torch.allclose(mask.affine, image.affine) and set(torch.unique(mask).tolist()) <= {0, 1}
        assert info.kind == "series" and info.num_slices == 12 and info.uid == str(image.meta["0020|000e"]).strip()
        written = np.asarray(__import__("nibabel").load(str(tmp_path / "out" / "lungmask.nii.gz")).dataobj)
        np.testing.assert_array_equal(written, np.asarray(mask))  # the file holds the in-memory mask
        extra = folder / "note.txt"
        extra.write_text("not DICOM")  # the folder changed: scanned again
        p.segment(folder)
        assert len(calls) == 2
        png = sorted((phantom_dir / "png" / "images").glob("*.png"))[0]
        _, pmask, pinfo = p.segment(png)
        assert pinfo.kind == "picture" and pinfo.files == [png] and pmask.ndim == 2


def test_the_weights_are_checked_once_per_predict(model, phantom_dir, tmp_path, monkeypatch):
    """``fusionlungnet predict`` checks its weights file once (``Predictor``); the bundle workflow it runs does not
    check them again (its ``check_weights`` is switched off), it only loads them."""
    from fusionlungnet_monai import config
    from fusionlungnet_monai import predict as predict_mod

    checked = []
    real = config.check_weights
    for mod in (config, predict_mod):
        monkeypatch.setattr(mod, "check_weights", lambda path: checked.append(str(path)) or real(path))
    with predict_mod.Predictor(bundle_dir=str(BUNDLE), model=str(model), input_size=64, progress=False) as p:
        assert p.predict(phantom_dir / "dicom" / "ph001", tmp_path / "out").ok
        assert p.predict(phantom_dir / "dicom" / "ph000", tmp_path / "out2").ok
    assert checked == [str(model)], checked


def test_slabs_give_the_whole_volume_mask(model, phantom_dir, tmp_path):
    """Volumes go through the bundle's workflow in slabs; the stitched mask with the 3D steps run once equals the
    bundle's own whole-volume result (``infer_tensors`` with its full post-processing), for any slab size, up to
    the network's floating-point rounding on batches of other sizes (a voxel at probability 0.5 may flip)."""
    from fusionlungnet_monai.predict import Predictor
    from fusionlungnet_monai.workflow import infer_tensors, load_inference_workflow

    series = phantom_dir / "dicom" / "ph000"
    wf = load_inference_workflow(BUNDLE, {"ckpt_path": str(model), "spatial_size": [64, 64], "input": [],
                                          "device": "$torch.device('cpu')"}, save=False)
    with Predictor(bundle_dir=str(BUNDLE), model=str(model), input_size=64, progress=False, slab_slices=5) as p:
        image, mask, _ = p.segment(series)
        whole = np.asarray(infer_tensors(wf, [image])[0]["pred"])[0] > 0
        assert whole.any() and mask.shape[-1] == 12
        for slab in (5, 1):
            p.slab_slices = slab
            differ = int(((np.asarray(p.segment(series)[1]) > 0) != whole).sum())
            assert differ <= 2, f"slabs of {slab}: {differ} of {whole.size} voxels differ from the whole-volume run"


def test_fast_profile_is_four_fifths_of_the_bundle_input(tmp_path):
    """``--fast`` runs the network at 0.8 x the bundle's spatial_size, on a multiple of 32: 128 for the shipped
    160² bundle, 256 for the paper's 320²; an explicit --input-size wins."""
    from fusionlungnet_monai.predict import Predictor, fast_size

    assert fast_size(BUNDLE) == 128
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "inference.json").write_text(json.dumps({"spatial_size": [320, 320]}))
    assert fast_size(tmp_path) == 256
    with Predictor(bundle_dir=str(BUNDLE), fast=True, progress=False) as p:
        assert p.network_size == 128 and p._overrides()["spatial_size"] == [128, 128]
    with Predictor(bundle_dir=str(BUNDLE), fast=True, input_size=96, progress=False) as p:
        assert p._overrides()["spatial_size"] == [96, 96]
    with Predictor(bundle_dir=str(BUNDLE), progress=False) as p:
        assert p.network_size is None and "spatial_size" not in p._overrides()


def test_colour_pictures_and_a_nifti_without_voxel_size(model, phantom_dir, tmp_path):
    """A slice exported as RGB PNG or grey + alpha PNG gets the grey PNG's mask, an RGB or CMYK JPG the mask of the
    grey picture it decodes to (RGB pictures were refused before 0.2.5: the mask's shape was compared with the
    image's colour axis; the test's two-epoch model turns JPEG's ±1 grey levels into a few % of other pixels, so the
    JPGs are not compared with the PNG); a NIfTI whose header gives no voxel size is segmented with a warning that
    its volumes in mL are not to be trusted."""
    import nibabel as nib
    from PIL import Image

    from fusionlungnet_monai.predict import Predictor

    grey = sorted((phantom_dir / "png" / "images").glob("*.png"))[5]
    pics = {}
    for mode, suffix in (("RGB", ".png"), ("RGB", ".jpg"), ("CMYK", ".jpg"), ("LA", ".png")):
        pics[f"{mode}{suffix}"] = tmp_path / f"{mode}{suffix}"
        Image.open(grey).convert(mode).save(pics[f"{mode}{suffix}"], quality=100)
    nii = nib.load(str(phantom_dir / "nifti" / "ph000_image.nii.gz"))
    bare = nib.Nifti1Image(np.asarray(nii.dataobj), None)
    bare.header["pixdim"][1:4] = 0
    bare.header.set_qform(None, code=0)
    bare.header.set_sform(None, code=0)
    nib.save(bare, str(tmp_path / "bare.nii.gz"))
    with Predictor(bundle_dir=str(BUNDLE), model=str(model), input_size=64, progress=False) as p:
        _, want, _ = p.segment(grey)
        for name, path in pics.items():
            res = p.predict(path, tmp_path / "out" / name)
            assert res.ok, res.error
            got = np.asarray(Image.open(tmp_path / "out" / name / "lungmask.png")) > 0
            assert got.shape == tuple(want.shape)[::-1]
            if name.endswith(".jpg"):  # JPEG is lossy: the reference is the grey picture it decodes to
                path_grey = tmp_path / f"{name}.grey.png"
                Image.open(path).convert("L").save(path_grey)  # ITU-R 601 luma, the weights the network's reader uses
                _, want_here, _ = p.segment(path_grey)
            else:
                want_here = want
            np.testing.assert_array_equal(got, np.asarray(want_here).T > 0, err_msg=name)
        res = p.predict(tmp_path / "bare.nii.gz", tmp_path / "out" / "bare")
        assert res.ok and any("no voxel size" in w for w in res.report["warnings"]), res.report["warnings"]


def test_qc_picture_of_a_single_slice_is_the_axial_view_alone(tmp_path):
    """A slice or a thin slab (< 20 mm) gets the axial view only (its side views would be strips of a few pixels);
    taller volumes get coronal and sagittal views beside it."""
    from PIL import Image

    from fusionlungnet_monai.outputs.qc import qc_overlay

    ct = np.full((64, 48, 1), -1000.0, dtype=np.float32)
    ct[10:30, 10:40] = -850
    mask = (ct > -900).astype(np.uint8)
    one = Image.open(qc_overlay(ct, mask, tmp_path / "one.png", spacing=(0.7, 0.7, 5.0)))
    assert one.size == (400, 300)  # (width: x, height: y), enlarged to 300 px high in proportion
    tall = np.repeat(ct, 40, axis=2)
    three = Image.open(qc_overlay(tall, np.repeat(mask, 40, axis=2), tmp_path / "three.png", spacing=(0.7, 0.7, 1.0)))
    assert three.size[1] == 300 and three.size[0] > 400 + 100


def test_qc_picture_of_a_64_grid_ct_is_readable(tmp_path):
    """The COPD case's QC picture was drawn at the CT's 64 pixels: every view is now at least 300 pixels high, the
    CT enlarged and both outlines drawn at that resolution as thin lines (red: network, cyan: second opinion), in
    the pixels' physical proportions."""
    from PIL import Image

    from fusionlungnet_monai.outputs.qc import qc_overlay

    ct = np.full((64, 64, 20), -1000.0, dtype=np.float32)
    ct[8:56, 12:52] = 40
    ct[14:30, 18:46], ct[34:50, 18:46] = -850, -850
    mask = (ct == -850).astype(np.uint8)
    second = np.zeros_like(mask)
    second[12:32, 16:48] = 1  # the second opinion: lung 1 a little larger, lung 2 missed (no cyan there)
    pic = np.asarray(Image.open(qc_overlay(ct, mask, tmp_path / "qc.png", spacing=(4.2, 4.2, 4.0), second=second)))
    assert pic.shape[0] == 300 and pic.shape[1] >= 3 * 250
    axial = pic[:, :300]
    red = (axial[..., 0] > 200) & (axial[..., 1] < 80)
    cyan = (axial[..., 0] < 80) & (axial[..., 1] > 200) & (axial[..., 2] > 200)
    assert 0.005 < red.mean() < 0.05  # outlines, not filled 5-pixel blocks
    assert cyan.any() and not cyan[:, 150:].any()  # lung 2 (x 34-50: the right half of the view) has no cyan


def test_a_one_slice_volume_gets_the_steps_of_a_slice(monkeypatch):
    """A one-slice volume (a NIfTI with one slice) is a slice: its mask gets the 2D hole filling and component rule,
    as a single DICOM file or picture does. MONAI's 3D hole filling found no hole there (every voxel of one slice
    touches the z border), and the airway search ran on it as on a volume."""
    import torch
    from monai.data import MetaTensor

    import fusionlungnet_monai.predict as P

    net = np.zeros((1, 64, 64, 1), dtype=np.uint8)
    net[0, 8:56, 8:30] = 1  # a lung with a hole where the network saw a dense nodule
    net[0, 20:30, 14:22] = 0
    net[0, 8:56, 36:56] = 1  # the other lung
    net[0, 2:5, 60:63] = 1  # a speck: under 5 % of the largest
    monkeypatch.setattr(P, "infer_tensors", lambda wf, items: [{"pred": MetaTensor(torch.as_tensor(net))}])
    monkeypatch.setattr(P.Predictor, "workflow", lambda self, kind: None)
    hu = np.where(net[0] > 0, -850, 40).astype(np.int16)
    hu[:3] = -1000
    image = MetaTensor(torch.as_tensor(hu), affine=torch.diag(torch.tensor([0.7, 0.7, 5.0, 1.0], dtype=torch.float64)))
    with P.Predictor(bundle_dir=str(BUNDLE), progress=False) as p:
        mask = p._infer_volume(image).numpy()
    assert mask.shape == (64, 64, 1)
    assert mask[25, 18, 0] == 1  # the hole is filled
    assert mask[30, 45, 0] == 1 and mask[3, 61, 0] == 0  # both lungs kept, the speck dropped


def _enhanced_ct(files, path):
    """The single-frame CT ``files`` converted to one multi-frame (enhanced) CT file, as modern scanners export."""
    import highdicom as hd
    import pydicom

    mf = hd.legacy.LegacyConvertedEnhancedCTImage([pydicom.dcmread(str(f)) for f in files],
                                                  series_instance_uid=hd.UID(), series_number=99,
                                                  sop_instance_uid=hd.UID(), instance_number=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    mf.save_as(str(path))
    return mf


def test_a_multiframe_ct_gives_the_mask_and_seg_of_its_series(model, phantom_dir, tmp_path):
    import highdicom as hd
    import nibabel as nib

    from fusionlungnet_monai.data import select_ct_series

    series = phantom_dir / "dicom" / "ph001"
    mf = _enhanced_ct(select_ct_series(series).files, tmp_path / "enhanced" / "ct.dcm")
    assert mf.NumberOfFrames == 12
    ref = tmp_path / "ref"
    predict(series, ref, "--model", model, "--input-size", "64", "--bundle", BUNDLE)
    want = nib.as_closest_canonical(nib.load(str(ref / "lungmask.nii.gz")))
    for case in (tmp_path / "enhanced", tmp_path / "enhanced" / "ct.dcm"):  # the folder and the file itself
        out = tmp_path / f"out_{case.name}"
        predict(case, out, "--model", model, "--input-size", "64", "--format", "dicom-seg", "--bundle", BUNDLE)
        got = nib.load(str(out / "lungmask.nii.gz"))
        canon = nib.as_closest_canonical(got)
        np.testing.assert_allclose(canon.affine, want.affine, atol=1e-3)
        np.testing.assert_array_equal(np.asarray(canon.dataobj), np.asarray(want.dataobj))
        report = json.loads((out / "report.json").read_text())
        assert report["num_slices"] == 12 and report["series_uid"] == mf.SeriesInstanceUID
        labels = np.asarray(got.dataobj)
        seg = hd.seg.segread(str(out / "seg.dcm"))  # frame k of the SEG is frame k of the source file
        frames = seg.get_pixels_by_source_frame(source_sop_instance_uid=mf.SOPInstanceUID,
                                                source_frame_numbers=list(range(1, 13)), combine_segments=True)
        for k in range(12):
            np.testing.assert_array_equal(frames[k], labels[:, :, k].T)


@pytest.mark.parametrize("drop", ["FrameOfReferenceUID", "PixelSpacing", "PatientID"])
def test_a_series_that_cannot_carry_a_dicom_seg_still_gets_its_other_outputs(drop, model, phantom_dir, tmp_path):
    """highdicom raised AttributeError/ValueError from deep inside on such a series, and the whole case failed:
    now the SEG is skipped with a warning naming what is missing, and the mask, picture and report are written."""
    import pydicom

    from fusionlungnet_monai.data import select_ct_series
    from fusionlungnet_monai.outputs import DicomSegUnavailable, write_dicom_seg

    series = tmp_path / "series"
    series.mkdir()
    files = []
    for f in select_ct_series(phantom_dir / "dicom" / "ph000").files:
        ds = pydicom.dcmread(str(f))
        delattr(ds, drop)
        ds.save_as(str(series / f.name))
        files.append(series / f.name)
    with pytest.raises(DicomSegUnavailable, match=fr"12 of 12 source images have no \(or an empty\) {drop}"):
        write_dicom_seg(np.ones((128, 128, 12), np.uint8), files, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()
    if drop != "FrameOfReferenceUID":
        return  # one run through the CLI is enough
    out = tmp_path / "out"
    r = predict(series, out, "--model", model, "--input-size", "64", "--format", "dicom-seg")
    report = json.loads((out / "report.json").read_text())
    assert any(w.startswith("DICOM SEG not written") and drop in w for w in report["warnings"]), report["warnings"]
    assert sorted(p.name for p in out.iterdir()) == ["lungmask.nii.gz", "qc.png", "report.json"]
    assert "dicom_seg" not in report["outputs"] and "DICOM SEG not written" in r.stdout + r.stderr


def test_a_real_series_with_empty_uids_gets_no_seg_but_a_reason():
    """The TotalSegmentator sample's DICOM files have empty SOP, study and series UIDs: highdicom raised KeyError('')
    and `predict --format dicom-seg` failed the whole case with "KeyError: ''" (0.3.10)."""
    from fusionlungnet_monai.data import select_ct_series
    from fusionlungnet_monai.outputs import DicomSegUnavailable, write_dicom_seg

    files = select_ct_series(DATA / "totalseg_example_ct" / "dicom").files
    with pytest.raises(DicomSegUnavailable, match=r"20 of 20 source images have no \(or an empty\) SOPClassUID, "
                                                  r"SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID \(e.g. "):
        write_dicom_seg(np.zeros((512, 512, 20), np.uint8), files, "/nonexistent/seg.dcm")
