import contextlib
import re
import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage

from fusionlungnet_monai.data import CTSeriesReader, InputError, scan_dicom_folder, select_ct_series

from pathlib import Path

DATA = Path(__file__).parent / "data"


def test_phantom_folder_picks_ct_over_localizer(phantom_dir):
    series = scan_dicom_folder(phantom_dir / "dicom" / "ph000")
    assert len(series) == 2
    assert {s.rejected for s in series} == {"", "localizer/scout image"}
    picked = select_ct_series(phantom_dir / "dicom" / "ph000")
    assert picked.num_slices == 12
    img = LoadImage(reader=CTSeriesReader(), image_only=True)(str(phantom_dir / "dicom" / "ph000"))
    assert img.shape == (128, 128, 12)


def test_jpeg2000_series_with_empty_uids_decodes():
    folder = DATA / "totalseg_example_ct" / "dicom"
    picked = select_ct_series(folder)
    assert picked.uid == "" and picked.num_slices == 20
    img = LoadImage(reader=CTSeriesReader(), image_only=True)(str(folder))
    assert img.shape == (512, 512, 20)
    # ITK's HU equal pydicom's decode + rescale for the first slice (sorted by position)
    ds = pydicom.dcmread(str(picked.files[0]))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(np.asarray(img[..., 0]), hu.T)
    np.testing.assert_allclose(img.pixdim[:3].numpy(), [0.9765625, 0.9765625, 2.0], atol=1e-4)


def test_tcia_folder_rejects_reformats_and_duplicates():
    folder = DATA / "covid19_ny_sbu_sample" / "dicom" / "A072894"
    series = scan_dicom_folder(folder)
    files = sum(s.num_slices for s in series)
    assert files == 6  # 8 files, two byte-identical duplicates dropped
    rejected = [s for s in series if s.rejected]
    assert any("a lone coronal slice" in s.rejected or "a lone sagittal slice" in s.rejected for s in rejected)
    picked = select_ct_series(folder)
    assert "ORIGINAL" in picked.image_type  # the derived axial reformat loses the tie
    assert picked.num_slices == 1
    other = next(s for s in series if not s.rejected and s.uid != picked.uid)
    note = [w for w in picked.warnings if w.startswith("the folder holds 2 usable CT series; segmented ")]
    assert note and f"--series-uid picks another: {other.uid} ('{other.description}', 1 slices)" in note[0]  # 0.3.12
    assert not [w for w in select_ct_series(DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").warnings if "usable" in w]


def test_series_uid_override_and_errors(tmp_path, phantom_dir):
    folder = phantom_dir / "dicom" / "ph001"
    loc = [s for s in scan_dicom_folder(folder) if s.rejected][0]
    with pytest.raises(InputError, match="cannot be used: localizer"):
        select_ct_series(folder, series_uid=loc.uid)
    with pytest.raises(InputError, match="not found"):
        select_ct_series(folder, series_uid="1.2.3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder") as e:
        select_ct_series(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM files"):
        select_ct_series(tmp_path / "txt")
    only_loc = tmp_path / "loc"
    only_loc.mkdir()
    (only_loc / "a.dcm").write_bytes((folder / "SCOUT0001.dcm").read_bytes())
    with pytest.raises(InputError, match="no axial CT series"):
        select_ct_series(only_loc)


def test_a_slice_without_pixels_or_of_another_size_rejects_the_series(phantom_dir, tmp_path):
    import shutil

    from fusionlungnet_monai.data import check_input

    src = phantom_dir / "dicom" / "ph000"
    files = sorted(f for f in src.rglob("*.dcm") if pydicom.dcmread(str(f), stop_before_pixels=True).Modality == "CT"
                   and "LOCALIZER" not in "\\".join(pydicom.dcmread(str(f), stop_before_pixels=True).ImageType))
    a = tmp_path / "nopix"
    a.mkdir()
    for f in files:
        shutil.copy(f, a / f.name)
    ds = pydicom.dcmread(str(a / files[5].name))
    del ds.PixelData
    ds.save_as(str(a / files[5].name))
    with pytest.raises(InputError, match="1 of 12 slices have no pixel data"):
        check_input(a)
    b = tmp_path / "mixed"
    b.mkdir()
    for f in files:
        shutil.copy(f, b / f.name)
    ds = pydicom.dcmread(str(b / files[3].name))
    small = np.asarray(ds.pixel_array)[::2, ::2].copy()
    ds.Rows, ds.Columns, ds.PixelData = small.shape[0], small.shape[1], small.tobytes()
    ds.save_as(str(b / files[3].name))
    with pytest.raises(InputError, match="slices of different sizes 64x64, 128x128"):
        check_input(b)


def test_reader_keeps_integer_ct_as_int16_in_xyz_order():
    """ITK's int32 ``(z, y, x)`` buffer comes out of the reader as a C-contiguous int16 ``(x, y, z)`` copy with the
    same values; integers beyond int16, floats and 8-bit pictures pass unchanged; the plane-wise copy gives either
    memory order."""
    from fusionlungnet_monai.data.series import compact_integers
    from fusionlungnet_monai.utils import planewise_copy

    zyx = np.random.default_rng(0).integers(-3024, 3071, (5, 7, 9)).astype(np.int32)
    xyz = zyx.transpose(2, 1, 0)
    out = compact_integers(xyz)
    assert out.dtype == np.int16 and out.flags.c_contiguous and (out == xyz).all()
    wide = xyz * 100  # beyond int16: kept
    assert compact_integers(wide) is wide
    for same in (xyz.astype(np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.int16)):
        assert compact_integers(same) is same
    f = planewise_copy(xyz, np.uint8, order="F")
    assert f.flags.f_contiguous and (f == xyz.astype(np.uint8)).all()
    assert (planewise_copy(zyx[0]) == zyx[0]).all()  # 2D: one copy


def test_series_without_pixel_spacing_or_rescale_is_read_with_a_warning(tmp_path):
    src = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))
    spacing = "no usable PixelSpacing (absent, zero or negative) in 11 of 11 files: 1 mm pixels were assumed"
    for tag, value, words in (("PixelSpacing", None, spacing), ("PixelSpacing", [0, 0], spacing),
                              ("PixelSpacing", [-0.7, 0.7], spacing),
                              ("RescaleIntercept", None, "no RescaleIntercept in 11 of 11 files")):
        folder = tmp_path / f"{tag}{value}"
        folder.mkdir()
        for i, f in enumerate(src):
            ds = pydicom.dcmread(str(f))
            if value is None:
                delattr(ds, tag)
            else:
                setattr(ds, tag, value)  # a header that gives a size ITK cannot use (it reads 1 mm)
            ds.save_as(folder / f"{i}.dcm")
        with pytest.warns(UserWarning, match=re.escape(words)):
            picked = select_ct_series(folder)
        assert not picked.rejected and [w for w in picked.warnings if words in w]
    assert not select_ct_series(src[0].parent).warnings  # the untouched series gives neither warning


def test_an_rgb_series_or_file_is_refused_in_one_line(tmp_path):
    """A CT-modality secondary capture in RGB (a screenshot of a viewer) holds no HU: refused by the series scan and by
    the single-file check with the reason, not failing later inside the bundle's transforms."""
    from fusionlungnet_monai.data import check_input

    src = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))[:4]
    folder = tmp_path / "rgb"
    folder.mkdir()
    for i, f in enumerate(src):
        ds = pydicom.dcmread(str(f))
        grey = np.clip((ds.pixel_array.astype(np.float32) + 1024) / 8, 0, 255).astype(np.uint8)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.repeat(grey[..., None], 3, -1).tobytes()
        ds.save_as(folder / f"{i}.dcm")
    with pytest.raises(InputError, match=r"3 values per pixel \(RGB"):
        select_ct_series(folder)
    with pytest.raises(InputError, match="0.dcm: 3 values per voxel"):
        check_input(folder / "0.dcm")


def test_a_multiframe_file_is_a_series_and_its_frames_must_be_in_order(tmp_path):
    import highdicom as hd

    from fusionlungnet_monai.data import check_input
    from fusionlungnet_monai.data.series import multiframe_info

    src = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))
    mf = hd.legacy.LegacyConvertedEnhancedCTImage([pydicom.dcmread(str(f)) for f in src], series_instance_uid=hd.UID(),
                                                  series_number=9, sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "mf").mkdir()
    path = tmp_path / "mf" / "ct.dcm"
    mf.save_as(str(path))
    picked = select_ct_series(path.parent)
    assert picked.files == [path] and picked.num_slices == 11 and not picked.warnings
    assert check_input(path) == "dicom" and multiframe_info(path).num_slices == 11
    assert multiframe_info(src[0]) is None  # a single-frame file is a slice
    # in a batch folder beside case folders, a multi-frame file is a case; a loose single-frame file is skipped
    import shutil

    from fusionlungnet_monai.predict import list_cases

    batch = tmp_path / "batch"
    shutil.copytree(src[0].parent, batch / "series_folder")
    shutil.copy(path, batch / "enhanced.dcm")
    shutil.copy(src[0], batch / "loose.dcm")
    skipped: list = []
    assert list_cases(batch, skipped) == [batch / "enhanced.dcm", batch / "series_folder"]
    assert [p.name for p, _ in skipped] == ["loose.dcm"]
    # frames out of position order: ITK would stack them as stored, so the volume would be scrambled
    ds = pydicom.dcmread(str(path))
    groups = ds.PerFrameFunctionalGroupsSequence
    groups[0], groups[5] = groups[5], groups[0]
    ds.save_as(str(path))
    with pytest.raises(InputError, match="frames are not in slice-position order"):
        check_input(path)
    with pytest.raises(InputError, match="frames are not in slice-position order"):
        select_ct_series(path.parent)


@pytest.mark.parametrize("edit,words", [
    (lambda ds, k: ds.__delattr__("ImagePositionPatient") if k == 5 else None,
     r"1 of 12 slices have no ImagePositionPatient \(e.g. \S+\): their order and spacing are unknown"),
    (lambda ds, k: ds.__delattr__("ImageOrientationPatient"), "no ImageOrientationPatient"),
    (lambda ds, k: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]), "gives no slice plane"),
    (lambda ds, k: setattr(ds, "ImageOrientationPatient", [0] * 6), "gives no slice plane"),
])
def test_broken_slice_geometry_is_named(edit, words, phantom_dir, tmp_path):
    """Headers without a position for one slice, or without a plane, were "missing ImageOrientationPatient/
    ImagePositionPatient" or "oblique slices (slice normal [0, 0, 0])": now what is wrong, and where."""
    from fusionlungnet_monai.data import check_input

    folder = tmp_path / "series"
    folder.mkdir()
    for k, f in enumerate(select_ct_series(phantom_dir / "dicom" / "ph000").files):
        ds = pydicom.dcmread(str(f))
        edit(ds, k)
        ds.save_as(str(folder / f.name))
    with pytest.raises(InputError, match=words) as e:
        check_input(folder)
    assert "\n" not in str(e.value)


def test_a_series_of_dotted_file_names_is_one_case_and_nothing_is_skipped(tmp_path):
    """The TotalSegmentator sample names its files ``CT.1.3.12.2...16573``: `predict` listed every file as
    "skipped: not an image file or case folder" and then segmented the folder anyway (20 wrong lines)."""
    import shutil

    from fusionlungnet_monai.predict import list_cases

    folder = DATA / "totalseg_example_ct" / "dicom"
    skipped: list = []
    assert list_cases(folder, skipped) == [folder] and skipped == []
    batch = tmp_path / "batch"
    (batch / "case").mkdir(parents=True)
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, batch / first.name)  # next to a case folder: a loose DICOM file, said as such
    (batch / "notes.txt").write_text("x")
    assert list_cases(batch, skipped) == [batch / "case"]
    assert [(p.name, why.split(":")[0]) for p, why in skipped] == [
        (first.name, "loose DICOM file next to case folders"), ("notes.txt", "not an image file or case folder")]
    shutil.copy(first, batch / "DICOMDIR")  # a disc's index beside its folders: said as such (0.3.12)
    skipped.clear()
    assert list_cases(batch, skipped) == [batch / "case"]
    assert (batch / "DICOMDIR", "the index of a DICOM disc or export, not an image; the series in the folders beside "
                                "it are read") in skipped


def test_dicom_without_preamble_is_read_like_the_original(tmp_path, capfd):
    """Older exports store the dataset alone: no 128-byte preamble, no ``DICM`` marker (implicit VR, or with the file
    meta group first). GDCM/ITK read them; the series scan used to find "no DICOM files" in such a folder. Now the
    series, one file, and a folder of files without suffix read as the original; a file meta group without the
    preamble (which ITK cannot read) is refused by name; bytes that merely begin like a tag are still not DICOM."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from fusionlungnet_monai.data import LoadCTImage, check_input, is_dicom_file
    from fusionlungnet_monai.data.readers import read_dicom
    from fusionlungnet_monai.predict import list_cases

    src = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))
    raw, meta = tmp_path / "raw", tmp_path / "meta"
    raw.mkdir(), meta.mkdir()
    for i, f in enumerate(src):
        ds = pydicom.dcmread(str(f))
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, True
        write_dataset(fp, ds)  # the dataset alone, implicit VR
        (raw / f"IM{i:04d}").write_bytes(fp.getvalue())
        ds.preamble = None  # the file meta group first, no preamble
        ds.save_as(meta / f"{i}.dcm", enforce_file_format=False)
    assert (raw / "IM0000").read_bytes()[:2] == b"\x08\x00" and (meta / "0.dcm").read_bytes()[:2] == b"\x02\x00"
    original = LoadCTImage(image_only=True)(str(src[0].parent))
    for folder in (raw,):
        assert is_dicom_file(next(folder.iterdir())) and list_cases(folder) == [folder]
        assert not select_ct_series(folder).rejected and check_input(folder) == "series"
        image = LoadCTImage(image_only=True)(str(folder))
        assert image.shape == original.shape and torch_equal(image, original)
        assert np.allclose(image.affine, original.affine)
    assert check_input(raw / "IM0003") == "dicom" and read_dicom(raw / "IM0003").pixel_array.shape == (512, 512)
    # the file meta group without the preamble: pydicom reads it when forced, ITK does not, so it is refused by name
    assert pydicom.dcmread(meta / "0.dcm", force=True).pixel_array.shape == (512, 512)
    layout = "DICOM file meta group without the 128-byte preamble and 'DICM' marker before it, a layout ITK cannot read"
    with pytest.raises(InputError, match=re.escape(f"no DICOM files found (11 file(s) checked); 11 file(s) such as "
                                                   f"0.dcm hold a {layout}")):
        select_ct_series(meta)
    with pytest.raises(InputError, match=re.escape(f"0.dcm: {layout}")):
        check_input(meta / "0.dcm")
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x08\x00\x10\x00" + bytes(range(256)) * 4)  # a tag's first bytes, then noise
    assert not is_dicom_file(junk)
    with pytest.raises(pydicom.errors.InvalidDicomError):
        read_dicom(junk)
    # noise after the first tag of a meta group, a character set, a SOP Class UID ...: not DICOM, and nothing said
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise"
    noise.mkdir()
    capfd.readouterr()
    for i, head in enumerate([b"\x02\x00\x00\x00", b"\x08\x00\x05\x00", b"\x08\x00\x16\x00", b"\x08\x00\x08\x00"] * 15):
        (noise / f"f{i}").write_bytes(head + rng.integers(0, 256, int(rng.integers(0, 3000)), np.uint8).tobytes())
        assert not is_dicom_file(noise / f"f{i}")
    with pytest.raises(InputError, match=re.escape("no DICOM files found (60 file(s) checked)") + "$"):
        select_ct_series(noise)
    assert capfd.readouterr().err == ""


def torch_equal(a, b) -> bool:
    return bool((np.asarray(a) == np.asarray(b)).all())


def test_a_zero_rescale_slope_is_said_and_a_negative_one_refused(tmp_path):
    """ITK reads RescaleSlope 0 as 1 (the same HU as slope 1: now said in a warning) and applies a negative slope,
    which turned the CT's HU upside down without a word: such a series, or file, is now refused by name."""
    from fusionlungnet_monai.data import LoadCTImage, check_input

    src = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))
    folders = {}
    for slope in ("0", "-1"):
        folders[slope] = tmp_path / f"slope{slope}"
        folders[slope].mkdir()
        for i, f in enumerate(src):
            ds = pydicom.dcmread(str(f))
            ds.RescaleSlope = slope
            ds.save_as(folders[slope] / f"{i}.dcm")
    with pytest.warns(UserWarning, match=re.escape("RescaleSlope 0 (invalid) in 11 of 11 files: read as 1")):
        assert not select_ct_series(folders["0"]).rejected
    zero, one = (np.asarray(LoadCTImage(image_only=True)(str(d))) for d in (folders["0"], src[0].parent))
    assert np.array_equal(zero, one)
    assert "11 of 11 slices have a negative RescaleSlope (e.g. 0.dcm)" in scan_dicom_folder(folders["-1"])[0].rejected
    with pytest.raises(InputError, match="no axial CT series.*negative RescaleSlope"):
        select_ct_series(folders["-1"])
    with pytest.raises(InputError, match=re.escape("3.dcm: negative RescaleSlope -1: its HU would be read inverted")):
        check_input(folders["-1"] / "3.dcm")


def _resave(src: list, folder: Path, syntax: str) -> None:
    """``src`` re-saved under ``folder`` in transfer syntax ``syntax`` (a pydicom UID name, or ``"jpeg_lossless"``:
    JPEG Lossless SV1, which pydicom cannot encode, written by ITK's GDCM with the source's tags)."""
    import locale

    import itk
    import pydicom.uid as uids

    folder.mkdir()
    for i, f in enumerate(src):
        if syntax == "jpeg_lossless":
            io = itk.GDCMImageIO.New()
            img = itk.imread(str(f), itk.SS, imageio=io)
            tags = io.GetMetaDataDictionary()
            for key in list(tags.GetKeys()):
                if key.startswith("0002|"):  # the source's transfer syntax would override the compression
                    tags.Erase(key)
            writer = itk.GDCMImageIO.New(UseCompression=True, CompressionType=itk.GDCMImageIOEnums.Compression_JPEG)
            writer.SetMetaDataDictionary(tags)
            writer.KeepOriginalUIDOn()
            img.SetMetaDataDictionary(tags)
            saved = locale.setlocale(locale.LC_ALL, None)
            try:
                itk.imwrite(img, str(folder / f"{i}.dcm"), imageio=writer, compression=True)
            finally:  # GDCM's writer sets the process's locale to "C": Python's default encoding became ASCII
                locale.setlocale(locale.LC_ALL, saved)
            continue
        ds, uid = pydicom.dcmread(str(f)), getattr(uids, syntax)
        if uid.is_compressed:
            ds.compress(uid)
        elif uid == uids.ExplicitVRBigEndian:  # pydicom does not swap the pixel bytes itself
            arr = ds.pixel_array
            ds.file_meta.TransferSyntaxUID = uid
            ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
            pydicom.dcmwrite(folder / f"{i}.dcm", ds, little_endian=False, implicit_vr=False, force_encoding=True)
            continue
        else:
            ds.file_meta.TransferSyntaxUID = uid
        ds.save_as(folder / f"{i}.dcm", implicit_vr=uid.is_implicit_VR, little_endian=uid.is_little_endian)


@pytest.mark.parametrize("syntax", ["jpeg_lossless", "RLELossless", "JPEG2000Lossless", "JPEGLSLossless",
                                    "DeflatedExplicitVRLittleEndian", "ExplicitVRBigEndian", "ImplicitVRLittleEndian"])
def test_every_transfer_syntax_reads_as_the_original(syntax, tmp_path):
    """A real series in every lossless transfer syntax reads with the original's voxels and affine, as a series and
    as one file. Before 0.3.12 a deflated series was refused as "truncated" (the file-size check read offsets in the
    inflated stream as offsets in the file) and one JPEG Lossless file, the most common compressed CT, as "cannot be
    decoded" (pydicom has no decoder for it without a GPL plugin; ITK reads it). A corrupt slice of a JPEG Lossless
    series is named (the search decoded the first file with pydicom, failed, and named it)."""
    import pydicom.uid as uids

    from fusionlungnet_monai.data import LoadCTImage, check_input

    src = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))
    folder = tmp_path / syntax
    _resave(src, folder, syntax)
    expected = uids.JPEGLosslessSV1 if syntax == "jpeg_lossless" else getattr(uids, syntax)
    assert pydicom.dcmread(folder / "0.dcm").file_meta.TransferSyntaxUID == expected
    original = LoadCTImage(image_only=True)(str(src[0].parent))
    assert check_input(folder) == "series" and not select_ct_series(folder).rejected
    image = LoadCTImage(image_only=True)(str(folder))
    assert np.array_equal(np.asarray(image), np.asarray(original)) and np.allclose(image.affine, original.affine)
    assert check_input(folder / "3.dcm") == "dicom"
    one = LoadCTImage(image_only=True)(str(folder / "3.dcm"))
    assert np.array_equal(np.asarray(one).squeeze(), np.asarray(LoadCTImage(image_only=True)(str(src[3]))).squeeze())
    if syntax == "jpeg_lossless":
        bad = bytearray((folder / "3.dcm").read_bytes())
        bad[len(bad) // 2: len(bad) // 2 + 2000] = b"\xff\x00" * 1000  # compressed bytes broken mid-stream
        (folder / "3.dcm").write_bytes(bytes(bad))
        culprit = f"{folder / '3.dcm'}: slice of the series {folder} is truncated"
        with pytest.raises(InputError, match=re.escape(culprit)):
            LoadCTImage(image_only=True)(str(folder))


def test_a_long_series_is_read_in_chunks_with_the_whole_reads_voxels_and_geometry(tmp_path, monkeypatch):
    """Series of more than SERIES_READ_CHUNK files are read a chunk at a time into one int16 volume (GDCM widens most
    16-bit CT to int32, and the whole read held that beside its int16 copy: 3x the volume at its peak). Real series
    (LIDC-IDRI-0003; the JPEG 2000 TotalSegmentator series, which ITK reads as 16-bit), a series with a gap, and
    one whose later slices are scaled beyond int16 (the volume widens as the whole read's does) read the same as
    in one go: voxels, type, affine and meta."""
    import shutil

    import torch

    import fusionlungnet_monai.data.series as series
    from fusionlungnet_monai.data import LoadCTImage

    gap, scaled = tmp_path / "gap", tmp_path / "scaled"
    src = DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003"
    for folder in (gap, scaled):
        folder.mkdir()
        for f in sorted(src.rglob("*.dcm")):
            shutil.copy(f, folder / f.name)
    sorted(gap.iterdir())[5].unlink()
    for f in sorted(scaled.iterdir())[8:]:
        ds = pydicom.dcmread(str(f))
        ds.RescaleSlope = 1000  # HU beyond int16 in the last chunk only
        ds.save_as(f)
    for case in (src, DATA / "totalseg_example_ct" / "dicom", gap, scaled):
        read = {}
        for chunk in (10**6, 4):
            monkeypatch.setattr(series, "SERIES_READ_CHUNK", chunk)
            with pytest.warns() if case == gap else contextlib.nullcontext():  # the gap's own warning
                read[chunk] = [LoadCTImage(image_only=True, dtype=dt)(str(case)) for dt in ("compact", None)]
        for whole, chunked in zip(read[10**6], read[4]):
            assert whole.dtype == chunked.dtype and whole.shape == chunked.shape, case
            assert torch.equal(whole.as_tensor(), chunked.as_tensor()) and torch.equal(whole.affine, chunked.affine)
            assert {k: str(v) for k, v in whole.meta.items()} == {k: str(v) for k, v in chunked.meta.items()}
    assert read[4][0].dtype == torch.float32  # the scaled case: compact is float32 when HU leave int16
    raw = series._read_in_chunks([str(f) for f in select_ct_series(scaled).files], chunk=4)
    assert raw.data.dtype == np.int32 and raw.data.flags.c_contiguous  # widened at the last chunk, as the whole read


@pytest.mark.parametrize("key,what", [("PatientID", "patients"), ("StudyInstanceUID", "studies"),
                                      ("FrameOfReferenceUID", "frames of reference")])
def test_a_series_of_two_patients_studies_or_frames_is_refused(key, what, tmp_path):
    """Real LIDC-IDRI-0002 with half its slices given another PatientID (or study, or frame of reference) under the
    same SeriesInstanceUID: 0.3.13 merged them into one volume (2040 mL) without a word, in the CLI and the bundle."""
    from fusionlungnet_monai.data import LoadCTImage, check_input

    folder = tmp_path / "mixed"
    folder.mkdir()
    files = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0002").rglob("*.dcm"))
    other = "OTHER-0001" if key == "PatientID" else pydicom.uid.generate_uid()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(str(f))
        if k % 2:
            setattr(ds, key, other)
        ds.save_as(str(folder / f.name))
    original = str(pydicom.dcmread(str(files[0])).get(key))
    words = rf"its slices belong to 2 different {what} \({key} .*{re.escape(original)}.*\) under one SeriesInstanceUID"
    for read in (check_input, lambda p: LoadCTImage(image_only=True)(str(p))):
        with pytest.raises(InputError, match=words) as e:
            read(folder)
        assert "\n" not in str(e.value) and str(folder) in str(e.value)
    assert check_input(DATA / "lidc_idri_slabs" / "LIDC-IDRI-0002") == "series"  # one patient, study and frame


def test_a_lone_slice_is_as_deep_as_its_slice_thickness():
    """A real LIDC-IDRI-0003 slice alone (SliceThickness 2.5, no SpacingBetweenSlices): ITK assumed 1 mm, so its
    lungs came out 2.5 times too small in mL (the probe's 5 mm slice: 23 mL against 118 mL as NIfTI). The depth is
    the file's SliceThickness now, in the CLI and the bundle (one reader), and the report says what it counted with."""
    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import LoadCTImage
    from fusionlungnet_monai.outputs import describe_lungs

    f = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003").rglob("*.dcm"))[5]
    ds = pydicom.dcmread(str(f), stop_before_pixels=True)
    assert "SpacingBetweenSlices" not in ds and float(ds.SliceThickness) == 2.5
    img = LoadCTImage(image_only=True)(str(f))
    assert tuple(img.shape) == (512, 512, 1)
    np.testing.assert_allclose(np.asarray(img.affine)[:3, 2], [0, 0, 2.5])  # the slice normal, 2.5 mm long
    np.testing.assert_allclose(np.asarray(img.meta["spacing"]), [0.820312, 0.820312, 2.5], rtol=1e-6)
    mask = classical_lung_mask(np.asarray(img)[..., 0], [0.820312, 0.820312]) > 0
    report = describe_lungs(mask[..., None], np.asarray(img), np.asarray(img.affine), second=False)
    assert report["one_slice_depth_mm"] == 2.5
    assert report["volumes_ml"]["total_ml"] == pytest.approx(round(mask.sum() * 0.820312**2 * 2.5 / 1000, 1), abs=0.1)
    series = LoadCTImage(image_only=True)(str(f.parent))
    assert float(np.linalg.norm(np.asarray(series.affine)[:3, 2])) == pytest.approx(2.5, abs=0.01)  # a series: as before


def test_a_slice_under_another_slices_sop_instance_uid_is_kept_and_named(tmp_path):
    """Real LIDC-IDRI-0002 with slice 5 given slice 4's SOPInstanceUID (a broken export): 0.3.13 dropped it as a
    duplicate and said only "irregular spacing". Another position is another slice: it is read, and the warning
    names the cause. A true copy (same position) is still dropped without a word."""
    folder = tmp_path / "shared_uid"
    folder.mkdir()
    files = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0002").rglob("*.dcm"))
    sops = [pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID for f in files]
    for k, f in enumerate(files):
        ds = pydicom.dcmread(str(f))
        if k == 5:
            ds.SOPInstanceUID = sops[4]
        ds.save_as(str(folder / f.name))
    (folder / "copy_of_4.dcm").write_bytes(files[4].read_bytes())
    info = select_ct_series(folder)
    assert info.num_slices == len(files) == 12
    words = [w for w in info.warnings if "share their SOPInstanceUID with another slice" in w]
    assert len(words) == 1 and files[5].name in words[0] and files[4].name in words[0], info.warnings
    assert not any("irregular" in w for w in info.warnings), info.warnings


def test_a_slice_of_another_pixel_spacing_rejects_the_series_and_coarse_slices_are_said(tmp_path):
    """Real LIDC-IDRI-0002 with one slice's PixelSpacing changed (0.682 -> 0.8 mm: ITK gave every slice the first
    one's, without a word in 0.3.13) is refused in one line naming both spacings and a file; the same series with
    its slices 100 mm apart (6,608 mL without a warning in the probe) gets a warning that the spacing is suspect,
    in the report of the CLI and of the bundle (one rule: ``describe_lungs``)."""
    from fusionlungnet_monai.data import LoadCTImage, check_input
    from fusionlungnet_monai.outputs import describe_lungs

    files = sorted((DATA / "lidc_idri_slabs" / "LIDC-IDRI-0002").rglob("*.dcm"))
    odd = tmp_path / "odd_spacing"
    odd.mkdir()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(str(f))
        if k == 7:
            ds.PixelSpacing = [0.8, 0.8]
        ds.save_as(str(odd / f.name))
    for read in (check_input, lambda p: LoadCTImage(image_only=True)(str(p))):
        with pytest.raises(InputError, match=r"slices of different PixelSpacing 0\.682x0\.682 mm .*, 0\.8x0\.8 mm "
                                             rf"\({re.escape(files[7].name)}\)") as e:
            read(odd)
        assert "\n" not in str(e.value)
    img = LoadCTImage(image_only=True)(str(files[0].parent))
    mask = np.asarray(img) < -400
    for gap, said in ((1.25, False), (100.0, True)):
        affine = np.asarray(img.affine).copy()
        affine[:3, 2] *= gap / np.linalg.norm(affine[:3, 2])
        report = describe_lungs(mask, np.asarray(img), affine, second=False)
        assert any(f"slices {gap:.1f} mm apart" in w for w in report["warnings"]) == said, report["warnings"]
        assert not any("pixels of" in w for w in report["warnings"])
