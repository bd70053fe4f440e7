"""Bad input through `python -m monai.bundle run` ends in one line naming the path and the problem: no traceback
from MONAI's config parser or ignite, no output written (the rules of `fusionlungnet predict`, docs/data.md)."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import BUNDLE, DATA


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FUSIONLUNGNET_DEBUG"}
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", *args], cwd=BUNDLE, capture_output=True,
                          text=True, timeout=600, env={**env, "PYTHONWARNINGS": "ignore"})


def _one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 1
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for w in words:
        assert w in last, last


def _ct_series(phantom_dir, dst):
    dst.mkdir()
    for f in sorted((phantom_dir / "dicom" / "ph000").rglob("*.dcm")):
        ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        if ds.Modality == "CT" and "LOCALIZER" not in "\\".join(ds.ImageType):
            shutil.copy(f, dst / f.name)
    return sorted(dst.iterdir())


def _bad_inputs(phantom_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    mr = tmp_path / "mr"
    for f in _ct_series(phantom_dir, mr):
        ds = pydicom.dcmread(str(f))
        ds.Modality = "MR"
        ds.save_as(str(f))
    mixed = tmp_path / "mixed"
    f = _ct_series(phantom_dir, mixed)[3]
    ds = pydicom.dcmread(str(f))
    small = ds.pixel_array[::2, ::2].copy()
    ds.Rows, ds.Columns, ds.PixelData = small.shape[0], small.shape[1], small.tobytes()
    ds.save_as(str(f))
    four_d = tmp_path / "fmri_like.nii.gz"  # two volumes in one file: refused by the reader, not by the network
    nib.save(nib.Nifti1Image(np.full((32, 32, 4, 2), -1000, np.int16), np.diag([8.0, 8.0, 8.0, 1.0])), four_d)
    rgb = tmp_path / "rgb"  # a CT screenshot series (secondary capture in RGB): no HU in it
    for f in _ct_series(phantom_dir, rgb):
        ds = pydicom.dcmread(str(f))
        grey = np.clip((ds.pixel_array.astype(np.float32) + 1024) / 8, 0, 255).astype(np.uint8)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.repeat(grey[..., None], 3, -1).tobytes()
        ds.save_as(str(f))
    real = DATA / "covid19_ny_sbu_sample" / "dicom" / "A046441" / "axial" / "19001111-045.dcm"
    lone = {}
    for name, edit in (("coronal", lambda d: setattr(d, "ImageOrientationPatient", [1, 0, 0, 0, 0, -1])),
                       ("mr", lambda d: setattr(d, "Modality", "MR"))):
        ds = pydicom.dcmread(str(real))  # a real CT slice, made a lone coronal reformat or a lone MR slice
        edit(ds)
        lone[name] = tmp_path / f"lone_{name}.dcm"
        ds.save_as(str(lone[name]))
    return {"lone_coronal": (lone["coronal"], "a lone coronal slice: the 2D model segments axial slices"),
            "lone_mr": (lone["mr"], "modality MR, not CT"),
            "empty": (empty, "empty folder"), "text": (text, str(text)), "mr": (mr, str(mr)),
            "mixed": (mixed, "different sizes"), "four_d": (four_d, "4D image of size (32, 32, 4, 2)"),
            "rgb": (rgb, "3 values per pixel")}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["empty", "text", "mr", "mixed", "four_d", "rgb", "lone_coronal", "lone_mr"])
def test_bundle_inference_refuses_bad_input_in_one_line(case, phantom_dir, tmp_path):
    """Each refused in one line, nothing written; the lone coronal slice (0.3.13: 560 s, 31 mL, a 514x1 px QC
    picture) and the lone MR slice (0.3.13: segmented as CT) by the rules a series of such slices is refused by."""
    path, word = _bad_inputs(phantom_dir, tmp_path)[case]
    out = tmp_path / "out"
    r = _run("--config_file", "configs/inference.json", "--input", str(path), "--output_dir", str(out),
             "--ckpt_path", str(BUNDLE / "models" / "model.pt"))
    _one_line_error(r, word)
    assert not out.exists() or not any(out.iterdir()), "nothing written"


@pytest.mark.slow
def test_bundle_training_names_a_missing_datalist_or_listed_file(tmp_path):
    r = _run("training", "--config_file", "configs/train.json", "--dataset_dir", str(tmp_path),
             "--bundle_root", str(tmp_path / "run"))
    _one_line_error(r, str(tmp_path / "datalist.json"), "no datalist")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "a.png", "label": "b.png"}],
                                                        "validation": [{"image": "a.png", "label": "b.png"}]}))
    r = _run("training", "--config_file", "configs/train.json", "--dataset_dir", str(tmp_path),
             "--bundle_root", str(tmp_path / "run"))
    _one_line_error(r, str(tmp_path / "a.png"), "missing")


@pytest.mark.parametrize("bad", ["mask_size", "rgb_mask", "16bit_image"])
def test_bundle_training_refuses_a_pair_that_does_not_fit(bad, phantom_dir, tmp_path):
    """A mask of another size was resized with its image and trained on, misaligned, without a word; an RGB mask
    ended in a traceback; a 16-bit image was trained on clipped (the CLI refused it). One line each, naming the file."""
    from PIL import Image

    from fusionlungnet_monai.data import make_datalist

    src = phantom_dir / "png"
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    names = sorted(p.name for p in (src / "images").glob("*.png"))
    for n in names:
        image, mask = np.asarray(Image.open(src / "images" / n)), np.asarray(Image.open(src / "masks" / n))
        Image.fromarray(image.astype(np.uint16) * 200 if bad == "16bit_image" else image).save(tmp_path / "images" / n)
        if bad == "mask_size":
            mask = mask[:-5]
        elif bad == "rgb_mask":  # a mask in colour (lung red); three equal channels are read as grey
            mask = np.stack([mask, mask // 2, np.zeros_like(mask)], -1)
        Image.fromarray(mask).save(tmp_path / "masks" / n)
    make_datalist(tmp_path, tmp_path / "datalist.json")
    r = _run("training", "--config_file", "configs/train.json", "--dataset_dir", str(tmp_path),
             "--bundle_root", str(tmp_path / "run"), "--max_epochs", "1", "--spatial_size", "[64,64]",
             "--num_workers", "0")
    words = {"mask_size": ["/masks/", "mask size (128, 123) does not match image size (128, 128)"],
             "rgb_mask": ["/masks/", "mask is a colour image whose channels differ"],
             "16bit_image": ["/images/", "16-bit image not supported"]}[bad]
    _one_line_error(r, *words)
    assert not (tmp_path / "run" / "models" / "model.pt").exists()


@pytest.mark.parametrize("override,words", [
    (["--max_epochs", "0"], "max_epochs: expected a whole number of at least 1, got 0"),  # was: ignite's ValueError
    (["--batch_size", "0"], "batch_size: expected a whole number of at least 1"),  # was: the DataLoader's
    (["--learning_rate", "-1"], "learning_rate: expected a positive number, got -1"),  # was: Adam's
    (["--spatial_size", "[16,16]"], "spatial_size: expected two whole numbers of at least 32"),  # was: BatchNorm's
    (["--resume", "true"], "checkpoint_last.pt: no checkpoint to resume from"),  # was: FileNotFoundError
    (["--amp", "maybe"], "amp: expected true/false (or 1/0), got 'maybe'"),  # was: a traceback with it inside
])
def test_bundle_training_settings_out_of_range_are_one_line(override, words, png_dataset, tmp_path):
    r = _run("training", "--config_file", "configs/train.json", "--dataset_dir", str(png_dataset),
             "--bundle_root", str(tmp_path / "run"), "--num_workers", "0", "--cache_rate", "0", *override)
    _one_line_error(r, words)
    assert not (tmp_path / "run" / "models").exists() or not any((tmp_path / "run" / "models").iterdir())


def test_missing_or_foreign_weights_are_one_line(phantom_dir, png_dataset, tmp_path):
    """inference.json with a --ckpt_path that is missing or not weights, and evaluate.json before any training, ended
    in FileNotFoundError/RuntimeError tracebacks from the checkpoint loader."""
    nifti = phantom_dir / "nifti" / "ph000_image.nii.gz"
    r = _run("--config_file", "configs/inference.json", "--input", str(nifti), "--output_dir", str(tmp_path / "o"),
             "--ckpt_path", str(tmp_path / "nope.pt"))
    _one_line_error(r, str(tmp_path / "nope.pt"), "no weights file here", "--ckpt_path")
    (tmp_path / "text.pt").write_text("not weights")
    r = _run("--config_file", "configs/inference.json", "--input", str(nifti), "--output_dir", str(tmp_path / "o"),
             "--ckpt_path", str(tmp_path / "text.pt"))
    _one_line_error(r, str(tmp_path / "text.pt"), "not a PyTorch weights file")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    r = _run("evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']", "--dataset_dir",
             str(png_dataset), "--bundle_root", str(tmp_path / "run"), "--num_workers", "0")
    _one_line_error(r, str(tmp_path / "run" / "models" / "model.pt"), "no weights file here", "--eval_ckpt")


def test_check_training_settings_accepts_the_shipped_configs():
    from monai.bundle import ConfigParser

    from fusionlungnet_monai import check_training_settings

    for files in (["train.json"], ["train.json", "train_release.json"], ["train.json", "train_volumes.json"]):
        p = ConfigParser()
        p.read_config([str(BUNDLE / "configs" / f) for f in files])
        p["bundle_root"] = str(BUNDLE)
        check_training_settings(**{k: p.get_parsed_content(k) for k in (
            "max_epochs", "batch_size", "val_batch_size", "learning_rate", "val_interval", "spatial_size",
            "num_workers")})


def test_input_error_is_found_behind_monai_wrappers():
    from fusionlungnet_monai.data import InputError, find_input_error

    err = InputError("/x", "bad")
    try:
        try:
            raise err
        except InputError as e:
            raise RuntimeError("applying transform") from e
    except RuntimeError as wrapped:
        assert find_input_error(wrapped) is err
    assert find_input_error(ValueError("other")) is None


def test_a_python_caller_keeps_its_exception_hook():
    import sys

    from fusionlungnet_monai.data import report_input_errors

    hook = sys.excepthook
    report_input_errors()  # what the configs' initialize runs; pytest is not `python -m monai.bundle`
    assert sys.excepthook is hook


@pytest.mark.slow
def test_bundle_reports_the_warnings_the_cli_reports(phantom_dir, tmp_path):
    """The bundle was silent on NaN voxels (its HU copy is made finite before the report) and logged a series'
    warnings without putting them in report.json; the CLI reported both. Now the bundle's report has them too."""
    import json

    import nibabel as nib

    img = nib.load(str(phantom_dir / "nifti" / "ph000_image.nii.gz"))
    data = np.asarray(img.dataobj).astype(np.float32)
    data[40:50, 40:50, 3] = np.nan
    nan = tmp_path / "in" / "nan.nii.gz"
    nan.parent.mkdir()
    nib.save(nib.Nifti1Image(data, img.affine), str(nan))
    study = tmp_path / "study"
    files = _ct_series(phantom_dir, study)
    uid = pydicom.uid.generate_uid()
    for k, f in enumerate(files[:6]):  # a second, shorter reconstruction of the same study
        ds = pydicom.dcmread(str(f))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, pydicom.uid.generate_uid()
        ds.save_as(str(study / f"second_{k}.dcm"))
    for path, words in ((nan, "100 voxels are NaN"), (study, "the folder holds 2 usable CT series")):
        out = tmp_path / f"out_{path.stem}"
        r = _run("--config_file", "configs/inference.json", "--input", str(path), "--output_dir", str(out),
                 "--ckpt_path", str(BUNDLE / "models" / "model.pt"))
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads(next(out.rglob("*_report.json")).read_text())
        assert sum(words in w for w in report["warnings"]) == 1, report["warnings"]
