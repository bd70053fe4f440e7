import subprocess
import sys

import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from fusionlungnet_monai.phantom import make_phantom, write_phantom_case


def test_deterministic_and_plausible():
    a, b = make_phantom(8, size=128, seed=3), make_phantom(8, size=128, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    c = make_phantom(8, size=128, seed=4)
    assert not np.array_equal(a.image, c.image)
    ph = make_phantom(16, size=512, seed=0)
    assert ph.image.dtype == np.int16 and ph.image.shape == (512, 512, 16)
    assert set(np.unique(ph.mask)) == {0, 1}
    # lungs are inside the body, at lung HU, and form exactly two components
    assert not np.any(ph.mask.astype(bool) & ~ph.body)
    assert -900 < ph.image[ph.mask > 0].mean() < -700
    _, n = ndimage.label(ph.mask)
    assert n == 2
    # air, padding, table and text are there
    assert ph.image.min() == -2000 and ph.image.max() == 3071
    assert 0.5 < ph.lung_volume_ml / 1000 * 64 / 16 < 10  # a 64-slice phantom lands in the adult range


def test_dicom_series_reads_back_identically_with_itk_and_pydicom(tmp_path):
    res = write_phantom_case(str(tmp_path), case_id="c0", seed=1, num_slices=6, size=96, formats=("dicom", "nifti"))
    ph = res["phantom"]
    folder = tmp_path / "dicom" / "c0"
    # pydicom: HU from RescaleSlope/Intercept, (x, y, z) layout
    ds = [pydicom.dcmread(p) for p in res["dicom"]]
    assert all(d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" for d in ds)
    ds.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    vol = np.stack([d.pixel_array.T * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in ds], -1)
    np.testing.assert_array_equal(vol, ph.image)
    assert [float(v) for v in ds[0].PixelSpacing] == [ph.spacing[1], ph.spacing[0]]
    # ITK: only the CT series (the localizer is another series)
    names = itk.GDCMSeriesFileNames.New(Directory=str(folder))
    uids = names.GetSeriesUIDs()
    assert len(uids) == 2
    ct_uid = ds[0].SeriesInstanceUID
    files = names.GetFileNames(ct_uid)
    img = itk.imread(list(files), itk.SS)
    arr = itk.array_view_from_image(img).transpose(2, 1, 0)  # itk gives (z, y, x)
    np.testing.assert_array_equal(arr, ph.image)
    np.testing.assert_allclose(np.array(img.GetSpacing()), ph.spacing, atol=1e-4)
    np.testing.assert_allclose(np.array(img.GetOrigin()), ph.origin, atol=1e-3)
    np.testing.assert_allclose(np.array(img.GetDirection()), np.eye(3))
    # NIfTI: same voxels, affine = LPS geometry flipped to RAS
    nii = nib.load(str(res["nifti"][0]))
    np.testing.assert_array_equal(np.asarray(nii.dataobj), ph.image)
    np.testing.assert_allclose(nii.affine, ph.affine_ras, atol=1e-4)
    lps_from_itk = np.eye(4)
    lps_from_itk[:3, :3] = np.diag(img.GetSpacing())
    lps_from_itk[:3, 3] = img.GetOrigin()
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ lps_from_itk, nii.affine, atol=1e-3)
    lab = nib.load(str(res["nifti"][1]))
    np.testing.assert_array_equal(np.asarray(lab.dataobj), ph.mask)


def test_png_slices_match_mask(tmp_path):
    from PIL import Image

    res = write_phantom_case(str(tmp_path), case_id="p", seed=2, num_slices=4, size=64, formats=("png",))
    ph = res["phantom"]
    for k, (ip, mp) in enumerate(res["png"]):
        im, m = np.array(Image.open(ip)), np.array(Image.open(mp))
        assert im.dtype == np.uint8 and im.shape == (64, 64)
        assert set(np.unique(m)) <= {0, 255}
        np.testing.assert_array_equal(m.T > 0, ph.mask[:, :, k] > 0)  # PNG rows are y


def test_no_overwrite(tmp_path):
    from fusionlungnet_monai.data import InputError

    write_phantom_case(str(tmp_path), case_id="c", num_slices=2, size=64, formats=("png",))
    with pytest.raises(InputError, match="already exists"):
        write_phantom_case(str(tmp_path), case_id="c", num_slices=2, size=64, formats=("png",))


def test_cli_version_and_phantom(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fusionlungnet_monai", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "fusionlungnet-monai" in out.stdout
    out = subprocess.run([sys.executable, "-m", "fusionlungnet_monai", "phantom", str(tmp_path), "--slices", "3",
                          "--size", "64", "--formats", "png"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "png" / "images").glob("*.png"))) == 3


@pytest.mark.parametrize("opts,words", [
    (["--cases", "0"], "argument --cases: must be 1 or more, got 0"),  # wrote nothing and said nothing
    (["--cases", "-1"], "argument --cases: must be 1 or more, got -1"),
    (["--slices", "0"], "argument --slices: must be 1 or more"),  # ValueError: num_slices must be >= 1
    (["--size", "17"], "argument --size: must be 64 or more, got 17"),
    (["--seed", "-5"], "argument --seed: must be 0 or more"),  # ValueError: expected non-negative integer
    (["--png-every", "0"], "argument --png-every: must be 1 or more"),  # wrote every slice silently
    (["--formats", "dicom,foo"], "argument --formats: expected a comma list of dicom, nifti, png"),
    (["--prefix", "a/b"], "argument --prefix: a case id prefix names files: no path separators"),
])
def test_cli_phantom_refuses_bad_numbers_and_names(opts, words, tmp_path, capsys):
    """The phantom command's options are checked by argparse: exit 2, the option named, nothing written."""
    from fusionlungnet_monai.cli import main

    with pytest.raises(SystemExit) as e:
        main(["phantom", str(tmp_path / "out"), *opts])
    assert e.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

