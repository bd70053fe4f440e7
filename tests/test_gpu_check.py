"""scripts/gpu_check.py stays runnable: its --cpu-smoke mode runs every CPU-capable stage at tiny sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["precision"] for s in res["steps"]] == ["bf16", "fp16", "fp32"]
    for s in res["steps"]:
        assert s["loss_dtype"] == "float32" and s["images_per_s"] > 0 and 0 < s["loss_share"] < 1
    assert res["bundle"][0]["rc"] == 0 and len(res["bundle"][0]["val_iou_per_epoch"]) == 2
    inf = res["inference"]
    assert inf["forward_slices_per_s"] > 0 and len(inf["rows"]) == 3
    for row in inf["rows"]:
        assert "error" not in row, row
        assert row["slices_per_s"] > 0 and row["ratio_to_forward"] > 0
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| bf16 |" in md and "CPU smoke run" in md
