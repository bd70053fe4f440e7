"""Where `itk` is not installed (the GPU machine: its wheels are too large to carry there), PNG and NIfTI are read,
checked and segmented; DICOM, MetaImage and NRRD stop with one line that says `itk` is needed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import BUNDLE

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["itk"] = None  # import itk now raises ImportError, as where it is not installed
    from fusionlungnet_monai.data import InputError, LoadCTImage, check_input
    from fusionlungnet_monai.predict import Predictor
    nifti, png, dicom, model, bundle, out = sys.argv[1:]
    result = {"kinds": [check_input(nifti), check_input(png)],
              "shapes": [list(LoadCTImage(image_only=True)(p).shape) for p in (nifti, png)]}
    try:
        LoadCTImage(image_only=True)(dicom)
    except InputError as e:
        result["dicom_error"] = str(e)
    with Predictor(bundle_dir=bundle, model=model, input_size=64, progress=False) as p:
        res = p.predict(nifti, out)
        result["predict"] = [res.ok, res.error, sorted(res.report.get("outputs", {}))]
    result["itk_loaded"] = sys.modules.get("itk") is not None
    print("RESULT " + json.dumps(result))
""")


@pytest.mark.slow
def test_png_and_nifti_need_no_itk(trained, phantom_dir, tmp_path):
    nifti = phantom_dir / "nifti" / "ph000_image.nii.gz"
    png = sorted((phantom_dir / "png" / "images").glob("*.png"))[0]
    dicom = phantom_dir / "dicom" / "ph000"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(nifti), str(png), str(dicom),
                        str(trained / "models" / "model.pt"), str(BUNDLE), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert result["kinds"] == ["volume", "picture"] and result["shapes"][0] == [128, 128, 12]
    assert "needs the `itk` package" in result["dicom_error"]
    assert result["predict"][0], result["predict"]
    assert "mask_nifti" in result["predict"][2] and not result["itk_loaded"]
