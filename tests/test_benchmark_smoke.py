"""`scripts/benchmark.py --quick` runs end to end and writes its JSON and markdown (a smoke run, not a timing test)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_quick(tmp_path):
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--quick", "--json", str(out_json),
                        "--markdown", str(out_md)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out_json.read_text())
    assert res["gemm"]["gflops"] > 0 and res["forward"][0]["gflop_per_slice"] > 0
    assert res["e2e"][0]["slices_per_s"] > 0 and res["e2e"][0]["max_rss_mb"] > 100
    assert res["predict"][0]["slices_per_s"] > 0 and res["predict"][0]["timings"]["total"] > 0
    assert len(res["rss"]) == 2 and all(r["predict_max_rss_mb"] > 100 for r in res["rss"])
    assert res["train"]["img_per_s"] > 0
    assert "lungmask" in res
    assert "| end to end" in out_md.read_text() and "`fusionlungnet predict`" in out_md.read_text()
