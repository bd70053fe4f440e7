"""The bundle inside a real MONAI Label server (its own virtualenv), on 127.0.0.1 with an ephemeral port.

Builds the app with scripts/monailabel/make_app.py around a checkpoint trained in this test session, serves a
datastore of phantom NIfTI volumes (with final labels) and one of PNG slices, checks /info/, /infer/ on both and a
one-epoch /train/. The server runs in its own process group and is always killed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.monailabel
VENV_PY = ROOT / ".venv-monailabel" / "bin" / "python"
NAME = "lung_ct_segmentation"


@pytest.fixture(scope="module")
def monailabel_python() -> Path:
    r = subprocess.run(["bash", str(ROOT / "scripts" / "monailabel" / "setup_env.sh")], capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return VENV_PY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 300):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def multipart(field: str, path: Path) -> tuple[bytes, str]:
    boundary = "fusionlungnet-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@contextmanager
def server(python: Path, app: Path, studies: Path, tmp: Path):
    port = free_port()
    log = open(tmp / f"server_{port}.log", "w")
    env = {**os.environ, "MONAI_LABEL_SESSION_PATH": str(tmp / "sessions"), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([str(python), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies",
                             str(studies), "--conf", "models", NAME, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                status, body = http("GET", base + "/info/", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail(f"MONAI Label server did not start:\n{(tmp / f'server_{port}.log').read_text()[-4000:]}")
            time.sleep(1)
        yield base, json.loads(body)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the whole group: server and any training subprocess
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def app(trained, tmp_path_factory) -> Path:
    app = tmp_path_factory.mktemp("mlapp") / "app"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "monailabel" / "make_app.py"), str(app), "--model",
                        str(trained / "models" / "model.pt"), "--set", "spatial_size=[64,64]", "--set",
                        "batch_size=2", "--set", "val_batch_size=1", "--set", "num_workers=0", "--set",
                        "cache_rate=0", "--set", "precise_bn_batches=2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "start_server" in r.stdout
    return app


def test_volume_datastore_info_infer_and_train(monailabel_python, app, tmp_path):
    import nibabel as nib

    from fusionlungnet_monai.phantom import write_phantom_case

    studies = tmp_path / "volumes"
    (studies / "labels" / "final").mkdir(parents=True)
    for i in range(3):
        r = write_phantom_case(str(tmp_path / "src"), f"vol{i}", seed=20 + i, num_slices=6, size=128,
                               formats=("nifti",))
        shutil.copy(r["nifti"][0], studies / f"vol{i}.nii.gz")
        shutil.copy(r["nifti"][1], studies / "labels" / "final" / f"vol{i}.nii.gz")
    with server(monailabel_python, app, studies, tmp_path) as (base, info):
        assert NAME in info["models"] and info["models"][NAME]["labels"] == {"lung": 1}
        assert info["models"][NAME]["type"] == "segmentation" and NAME in info["trainers"]
        status, body = http("POST", f"{base}/infer/{NAME}?image=vol0&output=image")
        assert status == 200
        (tmp_path / "pred.nii.gz").write_bytes(body)
        pred = np.asarray(nib.load(str(tmp_path / "pred.nii.gz")).dataobj) > 0
        gt = np.asarray(nib.load(str(studies / "labels" / "final" / "vol0.nii.gz")).dataobj) > 0
        assert pred.shape == gt.shape == (128, 128, 6)
        assert pred.any()
        # MONAI Label serves the bundle's own result: the same mask as the bundle's inference workflow in this process
        from fusionlungnet_monai.workflow import infer_tensors, load_inference_workflow

        wf = load_inference_workflow(app / "model" / NAME, {"device": "$torch.device('cpu')", "input": []}, save=False)
        ref = np.asarray(infer_tensors(wf, [studies / "vol0.nii.gz"])[0]["pred"][0]) > 0
        dice = 2 * (pred & ref).sum() / max(pred.sum() + ref.sum(), 1)
        assert dice > 0.99, f"MONAI Label's mask differs from the bundle's, Dice {dice:.3f}"
        assert (pred & gt).any(), "the mask overlaps the phantom lungs"
        models = app / "model" / NAME / "models"
        before = (models / "model.pt").stat().st_mtime
        status, _ = http("POST", f"{base}/train/{NAME}", json.dumps({"max_epochs": 1, "val_split": 0.34,
                                                                      "device": "cpu"}).encode(),
                         {"Content-Type": "application/json"})
        assert status == 200
        deadline, state = time.time() + 600, {}
        while time.time() < deadline:
            _, body = http("GET", f"{base}/train/?check_if_running=false")
            state = json.loads(body)
            if state.get("status") not in ("SUBMITTED", "RUNNING"):
                break
            time.sleep(2)
        assert state.get("status") == "DONE", str(state)[-2000:]
        assert (models / "checkpoint_final.pt").is_file()
        assert (models / "model.pt").stat().st_mtime > before, "training wrote a new served checkpoint"


def test_png_datastore_infer(monailabel_python, app, phantom_dir, tmp_path):
    from PIL import Image

    studies = tmp_path / "slices"
    studies.mkdir()
    for name in ("ph000_s004.png", "ph001_s006.png"):
        shutil.copy(phantom_dir / "png" / "images" / name, studies / name)
    with server(monailabel_python, app, studies, tmp_path) as (base, info):
        assert f"{NAME}_2d" in info["models"]
        status, body = http("POST", f"{base}/infer/{NAME}_2d?image=ph000_s004&output=image")
        assert status == 200
        (tmp_path / "pred.png").write_bytes(body)
        pred = np.array(Image.open(tmp_path / "pred.png"))
        gt = np.array(Image.open(phantom_dir / "png" / "masks" / "ph000_s004.png")) > 0
        assert pred.shape == gt.shape == (128, 128)
        assert (pred > 0).any() and ((pred > 0) & gt).sum() > 0.3 * gt.sum()
        body, ctype = multipart("file", phantom_dir / "png" / "images" / "ph001_s006.png")
        status, out = http("POST", f"{base}/infer/{NAME}_2d?output=image", body, {"Content-Type": ctype})
        assert status == 200 and out[:4] == b"\x89PNG"
