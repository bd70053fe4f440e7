"""The bad-input matrix: every case is one InputError naming the path and the problem."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionlungnet_monai.data import (
    InputError,
    check_input,
    check_output_dir,
    check_pair,
    image_size,
    make_datalist,
    pair_images_and_masks,
    select_ct_series,
)

DATA = Path(__file__).parent / "data"


def expect(match, fn, *args, path=None, **kw):
    with pytest.raises(InputError, match=match) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, "one line"
    if path is not None:
        assert str(path) in msg, f"names the path: {msg}"
    return msg


def test_kinds_of_valid_input(phantom_dir):
    assert check_input(phantom_dir / "dicom" / "ph000") == "series"
    assert check_input(DATA / "totalseg_example_ct" / "dicom") == "series"  # JPEG 2000, no .dcm suffix
    assert check_input(DATA / "covid19_ny_sbu_sample" / "dicom" / "A046441" / "axial" / "19001111-045.dcm") == "dicom"
    assert check_input(phantom_dir / "nifti" / "ph000_image.nii.gz") == "volume"
    assert check_input(DATA / "elastix_lung_small" / "3DCT_lung_baseline_small.mha") == "volume"
    assert check_input(phantom_dir / "png" / "images" / "ph000_s000.png") == "picture"
    assert image_size(phantom_dir / "nifti" / "ph000_image.nii.gz") == (128, 128, 12)


def test_missing_empty_and_non_dicom_folders(tmp_path):
    expect("no such file or folder", check_input, tmp_path / "nope", path=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    expect("empty folder", check_input, tmp_path / "empty", path=tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hi")
    msg = expect("no DICOM files", check_input, tmp_path / "docs", path=tmp_path / "docs")
    assert "image file" not in msg
    (tmp_path / "pictures").mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "pictures" / "a.png")
    (tmp_path / "pictures" / "b.nii.gz").write_bytes(b"")
    from fusionlungnet_monai.data import scan_dicom_folder

    # the bundle's input (a folder is read as one DICOM series) given a folder of pictures or volumes: say what it holds
    expect(r"no DICOM files found \(2 file\(s\) checked\); it holds 2 image file\(s\) such as a.png: give one file",
           scan_dicom_folder, tmp_path / "pictures", path=tmp_path / "pictures")


def test_only_localizers(tmp_path, phantom_dir):
    d = tmp_path / "scouts"
    d.mkdir()
    (d / "a.dcm").write_bytes((phantom_dir / "dicom" / "ph000" / "SCOUT0001.dcm").read_bytes())
    expect("no axial CT series.*localizer", check_input, d, path=d)


def test_non_image_and_truncated_dicom(tmp_path, phantom_dir):
    f = tmp_path / "notes.csv"
    f.write_text("a,b\n")
    expect("not an image file", check_input, f, path=f)
    src = (phantom_dir / "dicom" / "ph000" / "CT0001.dcm").read_bytes()
    t = tmp_path / "cut.dcm"
    t.write_bytes(src[: len(src) // 2])
    expect("truncated or corrupt DICOM", check_input, t, path=t)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not really a png")
    expect("not a readable image", check_input, fake, path=fake)


def test_16bit_and_transparent_pictures(tmp_path):
    p16 = tmp_path / "ct16.png"
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(p16)
    expect("16-bit image not supported", check_input, p16, path=p16)
    rgba = tmp_path / "rgba.png"
    a = np.zeros((16, 16, 4), dtype=np.uint8)
    a[..., 3] = 128
    Image.fromarray(a, "RGBA").save(rgba)
    expect("transparency", check_input, rgba, path=rgba)
    opaque = tmp_path / "opaque.png"
    a[..., 3] = 255
    Image.fromarray(a, "RGBA").save(opaque)
    assert check_input(opaque) == "picture"  # alpha without transparency is fine (dropped)


def test_pairs_size_mismatch_rgb_mask_and_empty_mask(tmp_path):
    img, mask, rgb_mask, empty = (tmp_path / n for n in ("i.png", "m.png", "rgbm.png", "e.png"))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(img)
    Image.fromarray(np.zeros((16, 12), np.uint8)).save(mask)
    expect(r"mask size \(12, 16\) does not match image size \(16, 16\)", check_pair, img, mask, path=mask)
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[4:9, 4:9, 0] = 255  # a red mask: its channels differ
    Image.fromarray(colour).save(rgb_mask)
    expect("channels differ", check_pair, img, rgb_mask, path=rgb_mask)
    colour[4:9, 4:9] = 255  # three equal channels: a grey mask stored as RGB, as many slice data sets do
    Image.fromarray(colour).save(rgb_mask)
    check_pair(img, rgb_mask, require_foreground=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(empty)
    check_pair(img, empty)
    expect("no foreground", check_pair, img, empty, require_foreground=True, path=empty)


def test_datalist_pairs_and_checks(tmp_path, phantom_dir):
    dl = make_datalist(phantom_dir / "png")
    n = sum(len(v) for v in dl.values())
    assert n == 24
    patients = {k: {Path(it["image"]).name.split("_s")[0] for it in v} for k, v in dl.items()}
    assert not (patients["training"] & patients["validation"]), "a patient is in one subset only"
    assert dl == make_datalist(phantom_dir / "png"), "deterministic"
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a_s000.png")
    expect("no mask with the same name", pair_images_and_masks, tmp_path / "images", tmp_path / "masks",
           path=tmp_path / "images" / "a_s000.png")
    out = phantom_dir / "png" / "dl.json"
    make_datalist(phantom_dir / "png", out)
    expect("already exists", make_datalist, phantom_dir / "png", out, path=out)
    os.remove(out)


def test_datalist_fractions_that_leave_nothing_to_train_on(phantom_dir, tmp_path):
    """Fractions of 1.5 or -0.1, or validation + test of 0.9 on two patients, wrote a datalist without a training
    section that training then refused; the script printed tracebacks for a missing folder."""
    import subprocess
    import sys

    for val, test in ((1.5, 0.0), (-0.1, 0.0), (0.6, 0.6)):
        with pytest.raises(ValueError, match="below 1"):
            make_datalist(phantom_dir / "png", val_fraction=val, test_fraction=test)
    expect("2 patient\\(s\\) and fractions validation 0.5, test 0.4 leave none to train on", make_datalist,
           phantom_dir / "png", None, 0.5, 0.4, path=phantom_dir / "png")
    script = [sys.executable, str(Path(__file__).parents[1] / "scripts" / "make_datalist.py")]
    r = subprocess.run([*script, str(tmp_path / "nothing")], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path / 'nothing' / 'images'}: no such folder"
    r = subprocess.run([*script, str(phantom_dir / "png"), "--val-fraction", "1.5"], capture_output=True, text=True)
    assert r.returncode == 2 and "argument --val-fraction: the share must be at least 0 and below 1, got 1.5" in r.stderr


def test_output_dir_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    expect("not a folder", check_output_dir, f, path=f)
    expect("is the input itself", check_output_dir, tmp_path, inputs=(tmp_path,), path=tmp_path)
    inside = tmp_path / "case" / "out"
    (tmp_path / "case").mkdir()
    expect("inside the input", check_output_dir, inside, inputs=(tmp_path / "case",), path=inside)
    assert not inside.exists(), "nothing is created inside an input"
    assert check_output_dir(tmp_path / "case_out", inputs=(f,)).is_dir()  # next to a file input is fine
    expect("cannot create output folder", check_output_dir, f / "sub", path=f / "sub")  # parent is a file
    assert check_output_dir(tmp_path / "new" / "deep").is_dir()


def test_an_archive_is_named_as_one(tmp_path):
    """Studies often arrive zipped from a PACS or portal: a zip or tar is named as such, with what to do (before: "not
    an image file"), and skipped as such in a batch folder."""
    import tarfile
    import zipfile

    from fusionlungnet_monai.predict import list_cases

    src = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))[:2]
    zipped, tarred = tmp_path / "study.zip", tmp_path / "study.tar.gz"
    with zipfile.ZipFile(zipped, "w") as z, tarfile.open(tarred, "w:gz") as t:
        for f in src:
            z.write(f, f.name)
            t.add(f, f.name)
    from fusionlungnet_monai.data import LoadCTImage

    for path, kind in ((zipped, "zip"), (tarred, "tar")):
        expect(f"a {kind} archive: unpack it, then give the folder", check_input, path, path=path)
        expect(f"a {kind} archive: unpack it", LoadCTImage(image_only=True), str(path), path=path)  # the bundle's loader
    (tmp_path / "case").mkdir()
    for f in src:
        (tmp_path / "case" / f.name).write_bytes(f.read_bytes())
    skipped: list = []
    assert list_cases(tmp_path, skipped) == [tmp_path / "case"]
    assert sorted((p.name, why) for p, why in skipped) == [
        ("study.tar.gz", "a tar archive: unpack it to segment what it holds"),
        ("study.zip", "a zip archive: unpack it to segment what it holds")]


def test_rgb_masks_with_equal_channels_and_jpg_masks_train_as_grey(tmp_path):
    """Published slice data sets store masks as RGB PNGs with three equal channels, or as JPG (0/255 with JPEG
    noise): the training chain's first steps (the preprocessing's load, check_pair, channel_first, binarize_label)
    give the same 0/1 label as from the grey PNG; a mask whose channels differ is refused in one line."""
    from monai.transforms import EnsureChannelFirstd
    from PIL import Image

    from fusionlungnet_monai.data import CheckPaird, InputError, LoadCTImaged
    from fusionlungnet_monai.transforms import BinarizeMaskd

    grey = np.zeros((40, 32), np.uint8)
    grey[8:30, 5:14] = 255
    grey[8:30, 18:27] = 255
    Image.fromarray(np.full((40, 32), 90, np.uint8)).save(tmp_path / "image.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    Image.fromarray(grey).save(tmp_path / "mask.jpg", quality=75)
    assert np.any((np.asarray(Image.open(tmp_path / "mask.jpg")) % 255) != 0)  # JPEG noise at the edges
    steps = [LoadCTImaged(["image", "label"]), CheckPaird(["image", "label"]), EnsureChannelFirstd(["image", "label"]),
             BinarizeMaskd("label")]

    def chain(item):  # the steps one by one (Compose would wrap the InputError)
        for step in steps:
            item = step(item)
        return item

    labels = {n: chain({"image": str(tmp_path / "image.png"), "label": str(tmp_path / n)})["label"]
              for n in ("grey.png", "rgb.png", "mask.jpg")}
    for n, lab in labels.items():
        assert lab.shape == (1, 32, 40), (n, lab.shape)
        assert set(np.unique(np.asarray(lab))) <= {0.0, 1.0}
    assert torch.equal(labels["rgb.png"], labels["grey.png"])
    assert float((labels["mask.jpg"] != labels["grey.png"]).float().mean()) < 0.01  # at 128: JPEG noise is not lung
    colour = np.stack([grey, grey // 2, np.zeros_like(grey)], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="colour.png: mask is a colour image whose channels differ"):
        chain({"image": str(tmp_path / "image.png"), "label": str(tmp_path / "colour.png")})


def test_links_to_folders_never_leave_the_input_nor_visit_a_folder_twice(tmp_path):
    """A batch folder with ``up -> ..`` (0.3.13 segmented a sibling folder through it as an "ok" case named ``up``),
    an absolute link elsewhere, and a second link to a case folder; a series folder with ``loop -> .`` (0.3.13: the
    right mask, but 26 "skipped" lines, one per slice). Each link is named once and not followed."""
    from fusionlungnet_monai.predict import list_cases

    src = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))
    sibling, batch = tmp_path / "other_patient", tmp_path / "batch"
    for folder in (sibling, batch / "case", batch / "store" / "deep"):
        folder.mkdir(parents=True)
    for f in src[:3]:
        for folder in (sibling, batch / "case", batch / "store" / "deep"):
            (folder / f.name).write_bytes(f.read_bytes())
    (batch / "store" / "notes.txt").write_text("not an image")
    (batch / "up").symlink_to("..")
    (batch / "elsewhere").symlink_to(sibling)
    (batch / "again").symlink_to("case")
    (batch / "deep_link").symlink_to("store/deep")
    skipped: list = []
    cases = list_cases(batch, skipped)
    assert cases == [batch / "case", batch / "store"]
    assert sorted((p.name, why) for p, why in skipped) == [
        ("again", "a link to a folder that is read already: not followed"),
        ("deep_link", "a link to a folder that is read already: not followed"),  # store/deep: read with store
        ("elsewhere", f"a link out of the input folder (to {sibling.resolve()}): not followed"),
        ("up", "a link to a folder above the input: not followed")]
    series = batch / "case"
    (series / "loop").symlink_to(".")
    skipped = []
    assert list_cases(series, skipped) == [series]
    assert [(p.name, why) for p, why in skipped] == [("loop", "a link back to the input folder: not followed")]


def test_files_beside_a_series_that_are_not_read_are_named(tmp_path):
    """A folder with real LIDC-IDRI-0003 slices, an empty .dcm, a broken NIfTI and an empty PNG: 0.3.13 segmented
    the series and named none of the others. Now the case's report (CLI and bundle: one scan) names each of them once;
    with a truncated slice too, the series is refused, and the error names the truncated slice and the others."""
    import json
    import shutil

    from fusionlungnet_monai.cli import main

    folder = tmp_path / "series"
    folder.mkdir()
    slices = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))
    for f in slices[:4]:
        shutil.copy(f, folder / f.name)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not a volume")
    (folder / "empty.png").write_bytes(b"")
    (folder / ".DS_Store").write_bytes(b"hidden: not named")
    assert main(["predict", str(folder), str(tmp_path / "out"), "--no-progress"]) == 0
    warnings = json.loads((tmp_path / "out" / "report.json").read_text())["warnings"]
    named = [w for w in warnings if "not DICOM slices and were not read" in w]
    assert len(named) == 1 and "3 file(s)" in named[0], warnings
    for name, why in (("empty.dcm", "empty file"), ("broken.nii.gz", "an image file, not DICOM"),
                      ("empty.png", "empty file")):
        assert f"{name} ({why}" in named[0]
    assert ".DS_Store" not in named[0]
    (folder / "truncated.dcm").write_bytes(slices[6].read_bytes()[:-5000])
    with pytest.raises(InputError) as e:
        select_ct_series(folder)
    assert "truncated.dcm" in str(e.value) and "broken.nii.gz" in str(e.value) and "\n" not in str(e.value)
