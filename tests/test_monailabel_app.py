"""scripts/monailabel/make_app.py on bad arguments: one line, exit status 1 or 2, nothing written (the server itself
is tested in tests/test_monailabel.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import BUNDLE, ROOT


@pytest.mark.parametrize("args,rc,words", [
    (["--set", "x"], 2, "--set 'x': expected ID=JSON"),  # was: ValueError traceback from json.loads
    (["--set", "spatial_size=[1,"], 2, "--set 'spatial_size=[1,': Expecting value"),
    (["--set", "nonsense_id=1"], 1, "--set nonsense_id: no config of"),  # was: ignored without a word
    (["--model", "/no/such/model.pt"], 1, "/no/such/model.pt: no weights file here"),  # was: a half-written app
    (["--model", str(ROOT / "README.md")], 1, "not a PyTorch weights file"),
    (["--bundle", str(ROOT / "docs")], 1, "no MONAI bundle here"),
])
def test_make_app_refuses_bad_arguments_before_writing(args, rc, words, tmp_path):
    app = tmp_path / "app"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "monailabel" / "make_app.py"), str(app), *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == rc and words in r.stderr.strip().splitlines()[-1], r.stderr
    assert "Traceback" not in r.stderr
    assert not app.exists() or not any(app.iterdir())


def test_make_app_writes_an_app_with_the_shipped_weights(tmp_path):
    app = tmp_path / "app"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "monailabel" / "make_app.py"), str(app), "--set",
                        "spatial_size=[160,160]"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    served = app / "model" / "lung_ct_segmentation"
    assert (served / "models" / "model.pt").read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes()
    assert (app / "main.py").is_file() and (served / "configs" / "inference_picture.json").is_file()
    # the server answers with the mask: the bundle's report step (volumes, QC picture) is off in the served configs
    assert json.loads((served / "configs" / "inference.json").read_text())["write_report"] is False
    picture = json.loads((served / "configs" / "inference_picture.json").read_text())
    assert picture["postprocessing"]["transforms"].endswith("@post#report, @post#squeeze, @post#cast] if t is not None]")
