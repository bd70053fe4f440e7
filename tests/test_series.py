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
    assert any("too few to reformat axial planes" in s.rejected for s in rejected)  # one coronal/sagittal image
    picked = select_ct_series(folder)
    assert "ORIGINAL" in picked.image_type  # the derived axial reformat loses the tie
    assert picked.num_slices == 1


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
    from fusionlungnet_monai.transforms.array import planewise_copy

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
