"""The package installs from the repo into a fresh virtualenv and its console script runs."""

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _not_the_source(folder: str, names: list) -> list:
    """What the copy leaves out: environments, caches, builds, the demo's ``outputs/`` and the weights, by their
    place (the package's own ``outputs`` sub-package is source: an ``outputs`` pattern dropped it, unseen while the
    CLI imported it lazily)."""
    where = Path(folder)
    return [n for n in names if n in (".venv", ".git", "build", "__pycache__") or n.endswith(".egg-info")
            or (where == ROOT and n == "outputs") or (where == ROOT / "bundle" and n == "models")]


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
    shutil.copytree(ROOT, src, ignore=_not_the_source)
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
