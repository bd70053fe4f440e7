"""Shared fixtures: small phantoms written once per session under a temp folder (never into the source tree)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """Two small phantoms (128x128x12) as DICOM series (+ localizer), NIfTI and PNG slices."""
    from fusionlungnet_monai.data import write_phantom_case

    out = tmp_path_factory.mktemp("phantoms")
    for i in range(2):
        write_phantom_case(str(out), case_id=f"ph{i:03d}", seed=i, num_slices=12, size=128)
    return out
