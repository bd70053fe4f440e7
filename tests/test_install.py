"""The package installs from the repo into a fresh virtualenv and its console script runs."""

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pip_install_into_clean_venv(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # dependencies come from the test environment (no downloads); the package itself is built and installed
    sp = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in site.getsitepackages() if "site-packages" in p]
    Path(sp, "_deps.pth").write_text("\n".join(deps) + "\n")
    src = tmp_path / "src"  # build from a copy so nothing is written into the source tree
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "__pycache__",
                                                              "models", "outputs"))
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    exe = env_dir / "bin" / "fusionlungnet"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert "fusionlungnet-monai" in r.stdout
    r = subprocess.run([str(py), "-c", "import fusionlungnet_monai, sys; print(fusionlungnet_monai.__file__)"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert str(env_dir) in r.stdout, "imported the source tree instead of the installed package"
