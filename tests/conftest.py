"""Shared fixtures: small phantoms written once per session under a temp folder (never into the source tree)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
#: small, CI-friendly overrides for bundle runs
SMALL = ["--spatial_size", "[64,64]", "--num_workers", "0", "--batch_size", "4", "--val_batch_size", "4"]


def bundle(*args: str, cwd: Path = BUNDLE, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle ARGS`` as a user would; fail the test with the log tail on error."""
    r = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, f"{args[:2]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """Two small phantoms (128x128x12) as DICOM series (+ localizer), NIfTI and PNG slices."""
    from fusionlungnet_monai.phantom import write_phantom_case

    out = tmp_path_factory.mktemp("phantoms")
    for i in range(2):
        write_phantom_case(str(out), case_id=f"ph{i:03d}", seed=i, num_slices=12, size=128)
    return out


@pytest.fixture(scope="session")
def png_dataset(phantom_dir, tmp_path_factory) -> Path:
    """PNG slices of the two session phantoms plus a third, with a datalist split by patient."""
    from fusionlungnet_monai.data import make_datalist
    from fusionlungnet_monai.phantom import write_phantom_case

    root = tmp_path_factory.mktemp("pngset")
    shutil.copytree(phantom_dir / "png", root, dirs_exist_ok=True)
    write_phantom_case(str(root.parent / (root.name + "_extra")), "ph002", seed=2, num_slices=12, size=128,
                       formats=("png",))
    shutil.copytree(root.parent / (root.name + "_extra") / "png", root, dirs_exist_ok=True)
    dl = make_datalist(root, root / "datalist.json")
    assert len(dl["validation"]) == 12 and len(dl["training"]) == 24
    return root


@pytest.fixture(scope="session")
def trained(png_dataset, tmp_path_factory) -> Path:
    """A bundle root with models/ after two epochs of `run training` on PNG slices (64x64 input)."""
    out = tmp_path_factory.mktemp("bundle_run")
    r = bundle("run", "training", "--config_file", "configs/train.json", "--bundle_root", str(out),
               "--dataset_dir", str(png_dataset), "--max_epochs", "2", "--precise_bn_batches", "3", *SMALL)
    assert "Epoch: 2/2" in r.stdout + r.stderr
    return out
