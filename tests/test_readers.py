"""The readers on files that ITK or MONAI's defaults read wrongly or raise on from deep inside: truncated or
corrupt NIfTI, RGB/complex/int8/scaled voxels, sheared affines, missing voxel sizes, NaN, and pictures in every PIL
mode a user may export (RGB, CMYK, grey + alpha, palette). Each one is read right or refused in one line."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fusionlungnet_monai.data import InputError, LoadCTImage, check_input
from fusionlungnet_monai.data.readers import SPACING_UNKNOWN

AFFINE = np.diag([-0.8, -0.8, 2.5, 1.0])


def _ct(shape=(24, 20, 6)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-1024, 400, size=shape).astype(np.int16)


def _refused(path: Path, words: str) -> None:
    with pytest.raises(InputError) as e:
        check_input(path)
        LoadCTImage(image_only=True)(str(path))
    msg = str(e.value)
    assert str(path) in msg and words in msg and "\n" not in msg, msg


def test_truncated_empty_and_text_nifti_are_refused(tmp_path):
    whole = tmp_path / "whole.nii.gz"
    nib.save(nib.Nifti1Image(_ct((64, 64, 20)), AFFINE), str(whole))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # ITK read this as half zeros, silently
    _refused(cut, "truncated or corrupt")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    _refused(tmp_path / "empty.nii.gz", "not a readable NIfTI")
    (tmp_path / "text.nii").write_text("not a volume")
    _refused(tmp_path / "text.nii", "not a readable NIfTI")


def test_a_singular_nifti_affine_is_refused_in_one_line(tmp_path):
    """A zero sform gave MONAI's orientation step "Unable to find out axis 0.0 in start_ornt" (MONAI's header
    correction rebuilds other singular matrices from ``pixdim``, and those are read)."""
    for name, rows in (("zero", [[0] * 4] * 3), ("zero_rotation", [[0, 0, 0, -90], [0, 0, 0, 20], [0, 0, 0, 5]])):
        img = nib.Nifti1Image(_ct(), None)
        hdr = img.header
        hdr["sform_code"], hdr["qform_code"] = 1, 0
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = rows
        path = tmp_path / f"{name}.nii.gz"
        nib.save(img, str(path))
        _refused(path, "voxel-to-world matrix (sform/qform) is singular or not finite")
    ok = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(_ct(), AFFINE), str(ok))
    assert check_input(ok) == "volume"


def test_rgb_and_complex_nifti_are_refused(tmp_path):
    rgb = np.zeros((8, 8, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, AFFINE), str(tmp_path / "rgb.nii.gz"))
    with pytest.raises(InputError, match="RGB voxels"):
        LoadCTImage(image_only=True)(str(tmp_path / "rgb.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.complex64), AFFINE), str(tmp_path / "c.nii.gz"))
    with pytest.raises(InputError, match="complex voxels"):
        LoadCTImage(image_only=True)(str(tmp_path / "c.nii.gz"))


def test_int8_sheared_scaled_and_singleton_dims_are_read(tmp_path):
    ct = _ct()
    nib.save(nib.Nifti1Image((ct // 16).astype(np.int8), AFFINE), str(tmp_path / "i8.nii.gz"))
    img = LoadCTImage(image_only=True, dtype=None)(str(tmp_path / "i8.nii.gz"))
    np.testing.assert_array_equal(np.asarray(img), ct // 16)
    sheared = AFFINE.copy()
    sheared[0, 2] = 0.7
    nib.save(nib.Nifti1Image(ct, sheared), str(tmp_path / "sheared.nii.gz"))
    assert check_input(tmp_path / "sheared.nii.gz") == "volume"
    img = LoadCTImage(image_only=True, dtype=None)(str(tmp_path / "sheared.nii.gz"))
    np.testing.assert_array_equal(np.asarray(img), ct)
    np.testing.assert_allclose(np.asarray(img.affine)[0, 2], 0.7)  # the shear is kept (ITK refused the file)
    scaled = nib.Nifti1Image((ct.astype(np.int32) + 1024).astype(np.uint16), AFFINE)
    scaled.header.set_slope_inter(1.0, -1024.0)
    nib.save(scaled, str(tmp_path / "scaled.nii.gz"))
    img = LoadCTImage(image_only=True, dtype=None)(str(tmp_path / "scaled.nii.gz"))
    assert str(img.dtype) == "torch.float32"  # not float64 (twice the memory)
    np.testing.assert_array_equal(np.asarray(img), ct.astype(np.float32))
    nib.save(nib.Nifti1Image(ct[..., None, None], AFFINE), str(tmp_path / "five.nii.gz"))
    assert tuple(LoadCTImage(image_only=True)(str(tmp_path / "five.nii.gz")).shape) == ct.shape


def test_nan_is_kept_and_missing_voxel_size_is_flagged(tmp_path, capfd):
    ct = _ct().astype(np.float32)
    ct[3, 4, 2] = np.nan
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "nan.nii.gz"))
    img = LoadCTImage(image_only=True, dtype=None)(str(tmp_path / "nan.nii.gz"))
    assert int(np.isnan(np.asarray(img)).sum()) == 1  # ITK read it as 0 HU: soft tissue inside the lung
    assert img.meta[SPACING_UNKNOWN] is False
    bare = nib.Nifti1Image(_ct(), None)
    bare.header["pixdim"][1:4] = 0
    bare.header.set_qform(None, code=0)
    bare.header.set_sform(None, code=0)
    nib.save(bare, str(tmp_path / "bare.nii.gz"))
    capfd.readouterr()
    img = LoadCTImage(image_only=True)(str(tmp_path / "bare.nii.gz"))
    assert img.meta[SPACING_UNKNOWN] is True
    np.testing.assert_allclose(np.asarray(img.pixdim[:3]), 1.0)
    assert "pixdim" not in capfd.readouterr().err  # nibabel's "setting 0 dims to 1" log: the flag says it once


def test_a_series_with_a_missing_slice_reads_without_itk_printing(phantom_dir, tmp_path, capfd):
    """ITK prints "Non uniform sampling or missing slices detected" to stderr (in the middle of a progress bar);
    the series check reports irregular spacing in the case's warnings instead. ITK's switch is restored."""
    import shutil

    import itk

    from fusionlungnet_monai.data import select_ct_series

    series = tmp_path / "gap"
    shutil.copytree(phantom_dir / "dicom" / "ph000", series)
    sorted(series.glob("*.dcm"))[4].unlink()
    capfd.readouterr()
    img = LoadCTImage(image_only=True)(str(series))
    assert img.ndim == 3 and "Non uniform" not in capfd.readouterr().err
    assert any("irregular slice spacing" in w for w in select_ct_series(series).warnings)
    assert itk.Object.GetGlobalWarningDisplay()


@pytest.mark.parametrize("mode,suffix", [("RGB", ".png"), ("RGB", ".jpg"), ("CMYK", ".jpg"), ("LA", ".png"),
                                         ("RGBA", ".png"), ("P", ".png")])
def test_pictures_in_every_mode_read_as_grey_or_rgb(mode, suffix, tmp_path):
    from PIL import Image

    grey = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) % 251).astype(np.uint8)  # (rows, columns)
    path = tmp_path / f"x{suffix}"
    Image.fromarray(grey, mode="L").convert(mode).save(path)
    assert check_input(path) == "picture"
    img = LoadCTImage(image_only=True)(str(path))
    assert tuple(img.shape[:2]) == (40, 30)  # (x, y)
    assert img.ndim == 2 or img.shape[2] == 3, f"{mode} read with shape {tuple(img.shape)}"


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_the_picture_reader_refuses_transparency_as_the_input_checks_do(mode, tmp_path):
    """The grey under transparent pixels is arbitrary (a mask exported as an overlay keeps its colour only where it is
    opaque): the bundle's reader converted grey + alpha to grey and read it anyway, while the CLI's checks refused
    it. Both refuse it now; a fully opaque alpha channel is dropped, as before."""
    from PIL import Image

    grey = np.full((20, 24), 90, np.uint8)
    alpha = np.full((20, 24), 255, np.uint8)
    alpha[5:9, 5:9] = 0
    opaque, clear = tmp_path / "opaque.png", tmp_path / "clear.png"
    base = Image.fromarray(grey, mode="L").convert(mode)
    base.save(opaque)
    base.putalpha(Image.fromarray(alpha, mode="L"))
    base.save(clear)
    assert Image.open(clear).mode == mode
    img = LoadCTImage(image_only=True)(str(opaque))
    assert tuple(img.shape[:2]) == (24, 20) and check_input(opaque) == "picture"
    for read in (lambda p: LoadCTImage(image_only=True)(str(p)), check_input):
        with pytest.raises(InputError, match=f"clear.png: {mode} image with transparency not supported"):
            read(clear)


def test_a_truncated_slice_is_named_and_itk_errors_read_in_one_line(phantom_dir, tmp_path):
    """A slice whose pixel bytes are cut (a file cut short, or PixelData shorter than Rows x Columns, which ITK reads
    as zeros or garbage without a word) is refused from its header and named; ITK's own failures read in one line
    (its first line is a C++ source location)."""
    import shutil

    import itk
    import pydicom

    for how in ("file", "element"):
        series = tmp_path / f"series_{how}"
        shutil.copytree(phantom_dir / "dicom" / "ph000", series)
        bad = sorted(series.glob("*.dcm"))[5]
        if how == "file":
            bad.write_bytes(bad.read_bytes()[:3000])  # headers intact, pixels cut
        else:
            ds = pydicom.dcmread(bad)
            ds.PixelData = ds.PixelData[:1000]
            ds.save_as(bad)
        with pytest.raises(InputError) as e:
            LoadCTImage(image_only=True)(str(series))
        msg = str(e.value)
        assert e.value.path == str(series) and bad.name in msg and "fewer pixel bytes" in msg, msg
        assert "truncated" in msg and ".cxx" not in msg
    vol = itk.image_from_array(_ct((6, 20, 24)))
    itk.imwrite(vol, str(tmp_path / "v.mha"))
    cut = tmp_path / "cut.mha"
    cut.write_bytes((tmp_path / "v.mha").read_bytes()[:-2000])
    _refused(cut, "truncated or corrupt image file")
    (tmp_path / "lost.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 24 24 2\nElementType = MET_SHORT\n"
                                       "ElementDataFile = lost.raw\n")
    _refused(tmp_path / "lost.mhd", "data file is missing")


def test_metaimage_reasons_come_in_the_error_not_on_stderr(tmp_path, capfd):
    """ITK's MetaImage reader prints why it failed to stderr (C++), and raises 'File cannot be read': the printed
    reason goes into the one-line error instead, and nothing else reaches stderr. A good file still reads, and
    stderr works afterwards."""
    import itk

    itk.imwrite(itk.image_from_array(_ct((6, 20, 24))), str(tmp_path / "v.mha"))
    cut = tmp_path / "cut.mha"
    whole = (tmp_path / "v.mha").read_bytes()
    cut.write_bytes(whole[:-2000])
    capfd.readouterr()
    _refused(cut, f"MetaImage: data not read completely, {6 * 20 * 24 * 2 - 2000} of {6 * 20 * 24 * 2} bytes")
    (tmp_path / "lost.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 24 24 2\nElementType = MET_SHORT\n"
                                       "ElementDataFile = lost.raw\n")
    _refused(tmp_path / "lost.mhd", "Cannot open data file")
    assert "MetaImage" not in capfd.readouterr().err
    assert tuple(LoadCTImage(image_only=True)(str(tmp_path / "v.mha")).shape) == (24, 20, 6)
    import sys

    print("still here", file=sys.stderr)
    assert "still here" in capfd.readouterr().err


def test_monochrome1_ct_is_refused_not_read_inverted(phantom_dir, tmp_path):
    import shutil

    import pydicom

    series = tmp_path / "mono1"
    shutil.copytree(phantom_dir / "dicom" / "ph000", series)
    for f in series.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        if ds.Modality == "CT" and "LOCALIZER" not in ds.ImageType:
            ds.PhotometricInterpretation = "MONOCHROME1"
            ds.save_as(f)
    _refused(series, "MONOCHROME1")
    _refused(sorted(series.glob("*.dcm"))[3], "MONOCHROME1")  # one file alone


def test_vector_metaimage_and_missing_paths_are_refused_in_one_line(tmp_path):
    import itk

    vec = itk.image_from_array(np.zeros((6, 20, 24, 2), np.float32), is_vector=True)
    path = tmp_path / "vector.mha"
    itk.imwrite(vec, str(path))
    for call in (check_input, LoadCTImage(image_only=True)):  # the CLI's checks and the bundle's reader
        with pytest.raises(InputError, match="2 values per voxel") as e:
            call(str(path))
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="no such file or folder"):
        LoadCTImage(image_only=True)(str(tmp_path / "missing"))


def test_pictures_too_small_for_a_ct_slice_are_refused(tmp_path):
    from PIL import Image

    for size in ((1, 1), (5, 3)):
        path = tmp_path / f"tiny_{size[0]}x{size[1]}.png"
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(path)
        for call in (check_input, LoadCTImage(image_only=True)):  # the CLI's checks and the bundle's reader
            with pytest.raises(InputError, match=f"image of {size[0]}x{size[1]} pixels: too small") as e:
                call(str(path))
            assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_nifti_named_against_its_compression_says_how_to_rename_it(tmp_path):
    import shutil

    plain, gz = tmp_path / "ct.nii", tmp_path / "ct2.nii.gz"
    nib.save(nib.Nifti1Image(_ct(), AFFINE), str(plain))
    nib.save(nib.Nifti1Image(_ct(), AFFINE), str(gz))
    shutil.copy(plain, tmp_path / "plain_named.nii.gz")
    shutil.copy(gz, tmp_path / "gzip_named.nii")
    for name, words in (("plain_named.nii.gz", "not gzip-compressed: rename it to .nii"),
                        ("gzip_named.nii", "gzip-compressed but named .nii: rename it to .nii.gz")):
        with pytest.raises(InputError, match=words):
            LoadCTImage(image_only=True)(str(tmp_path / name))
        with pytest.raises(InputError, match=words):
            check_input(tmp_path / name)


def test_building_the_loaders_does_not_announce_monais_gpu_dicom_reader(caplog, recwarn, tmp_path):
    """MONAI's LoadImage builds all of its readers, and its GPU DICOM reader says "nvImageCodec is not available" (a
    log line and a warning) each time; the project's loaders never use that reader, so nothing is said. The logger's
    own level is put back afterwards (a MONAI user who asked for the notice still gets it elsewhere). The training
    data checks' mask reader is one of them."""
    import logging

    from monai.transforms import LoadImage

    from PIL import Image

    from fusionlungnet_monai.data import LoadCTImaged, check_pair

    grey = np.zeros((24, 20), np.uint8)
    Image.fromarray(grey).save(tmp_path / "image.png")
    grey[5:9, 5:9] = 255
    Image.fromarray(grey).save(tmp_path / "mask.png")
    plugin = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    before = plugin.level
    with caplog.at_level(logging.INFO):
        LoadCTImage(image_only=True)
        LoadCTImaged("image")
        check_pair(tmp_path / "image.png", tmp_path / "mask.png", require_foreground=True)  # the training checks
    said = [r.getMessage() for r in caplog.records if "nvImageCodec" in r.getMessage()]
    said += [str(w.message) for w in recwarn if "NvImgCodec" in str(w.message)]
    assert not said, said
    assert plugin.level == before
    try:
        from monai.data.nvimgcodec_pydicom_plugin import is_nvimgcodec_available
    except ImportError:
        return
    if not is_nvimgcodec_available():  # where the notice exists, MONAI's own LoadImage still gives it
        with caplog.at_level(logging.INFO):
            LoadImage(image_only=True)
        assert any("nvImageCodec" in r.getMessage() for r in caplog.records)
