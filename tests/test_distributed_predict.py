"""`fusionlungnet predict --distributed` under torchrun: 2 gloo processes on CPU give the single process's outputs
and one merged summary; the bundle's multi_gpu_inference.json shards a datalist the same way."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import BUNDLE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cases(phantom_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist_cases")
    for i in range(3):
        shutil.copy(phantom_dir / "nifti" / f"ph00{i % 2}_image.nii.gz", folder / f"case{i}.nii.gz")
    return folder


def _torchrun(*args, timeout=900):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args],
                       capture_output=True, text=True, timeout=timeout, cwd=BUNDLE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-4000:]
    return r


def test_distributed_predict_matches_one_process(cases, trained, tmp_path):
    model = trained / "models" / "model.pt"
    common = ["--model", str(model), "--input-size", "64", "--no-progress", "--bundle", str(BUNDLE)]
    # torchrun gives each process one thread (OMP_NUM_THREADS=1); the reference runs with one thread as well, since
    # a different thread count changes the order of float sums and may flip a voxel at the 0.5 threshold
    r = subprocess.run([sys.executable, "-m", "fusionlungnet_monai", "predict", str(cases), str(tmp_path / "one"),
                        *common], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    _torchrun("-m", "fusionlungnet_monai", "predict", str(cases), str(tmp_path / "two"), *common, "--distributed")
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["cases"] == one["cases"] == 3 and two["ok"] == 3
    assert [x["input"] for x in two["results"]] == [x["input"] for x in one["results"]], "one summary, in order"
    for i in range(3):
        a = np.asarray(nib.load(str(tmp_path / "one" / f"case{i}" / "lungmask.nii.gz")).dataobj)
        b = np.asarray(nib.load(str(tmp_path / "two" / f"case{i}" / "lungmask.nii.gz")).dataobj)
        np.testing.assert_array_equal(a, b)


def test_multi_gpu_inference_config_shards_the_inputs(cases, trained, tmp_path):
    files = sorted(str(p) for p in cases.glob("*.nii.gz"))
    _torchrun("-m", "monai.bundle", "run", "--config_file",
              "['configs/inference.json','configs/multi_gpu_inference.json']", "--bundle_root", str(trained), "--input", json.dumps(files), "--output_dir", str(tmp_path / "masks"), "--spatial_size", "[64,64]")
    assert sorted(p.name for p in (tmp_path / "masks").glob("*_lungmask.nii.gz")) == [
        f"case{i}_lungmask.nii.gz" for i in range(3)]
