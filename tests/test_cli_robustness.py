"""`fusionlungnet predict` on real slices, odd input, bad options, reruns and interruptions: one clear line, the
documented exit code (0 ok, 1 some cases failed, 2 usage/input error, 130 interrupted), nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BUNDLE, DATA

pytestmark = pytest.mark.slow

COVID = DATA / "covid19_ny_sbu_sample" / "dicom"
REAL_CASES = {
    "covid_slice": COVID / "A046441" / "axial" / "19001111-045.dcm",
    "lidc_series": DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003",
    "totalseg_jpeg2000": DATA / "totalseg_example_ct" / "dicom",
    "totalseg_nifti": DATA / "totalseg_example_ct" / "nifti_sm" / "example_ct_sm.nii.gz",
    "elastix_mha": DATA / "elastix_lung_small" / "3DCT_lung_baseline_small.mha",
}


def predict(*args, expect_rc=0, timeout=900):
    r = subprocess.run([sys.executable, "-m", "fusionlungnet_monai", "predict", *map(str, args), "--no-progress",
                        "--bundle", str(BUNDLE)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == expect_rc, f"rc={r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def model(trained):
    return trained / "models" / "model.pt"


@pytest.mark.parametrize("name", sorted(REAL_CASES))
def test_every_real_sample_goes_through_predict(name, model, tmp_path):
    out = tmp_path / name
    predict(REAL_CASES[name], out, "--model", model, "--input-size", "64")
    report = json.loads((out / "report.json").read_text())
    assert (out / "lungmask.nii.gz").is_file() and (out / "qc.png").is_file()
    assert report["num_slices"] >= 1 and "second_opinion" in report
    assert 0.0 <= report["second_opinion"]["dice_with_network"] <= 1.0
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary folder left"


def test_real_slices_in_batch_mode(model, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    for f in sorted((COVID / "A046441" / "axial").glob("*.dcm")) + sorted((COVID / "A072894" / "axial").glob("*.dcm")):
        shutil.copy(f, cases / f.name)
    shutil.copytree(DATA / "lidc_idri_slabs" / "LIDC-IDRI-0002", cases / "lidc0002")
    r = predict(cases, tmp_path / "out", "--model", model, "--input-size", "64", expect_rc=0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cases"] == 1 and summary["failed"] == 0
    # loose single-slice DICOM files next to a case folder are not swallowed into one series: reported skipped
    assert len(summary["skipped"]) == 4 and all("loose DICOM" in s["reason"] for s in summary["skipped"])
    assert "skipped" in r.stderr


def test_a_study_folder_segments_its_ct_and_skips_its_scout_and_reformats(model, phantom_dir, tmp_path):
    """A study exported series by series: the CT is segmented; the localizer and the reformats of a few slices hold
    no CT volume and are skipped with their reason, not failed (exit 0). A batch of them alone segments nothing
    (exit 1), and one of them given alone is an error, as before."""
    study = tmp_path / "study"
    shutil.copytree(phantom_dir / "dicom" / "ph000", study / "2_axial", ignore=shutil.ignore_patterns("SCOUT*"))
    (study / "1_scout").mkdir(parents=True)
    shutil.copy(phantom_dir / "dicom" / "ph000" / "SCOUT0001.dcm", study / "1_scout")
    shutil.copytree(COVID / "A072894" / "coronal", study / "3_coronal")
    r = predict(study, tmp_path / "out", "--model", model, "--input-size", "64", expect_rc=0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ok"] == 1 and summary["failed"] == 0, summary
    reasons = {Path(s["input"]).name: s["reason"] for s in summary["skipped"]}
    assert "localizer" in reasons["1_scout"] and "a lone coronal slice" in reasons["3_coronal"], reasons
    assert "2 skipped (no CT volume to segment)" in r.stdout and "FAILED" not in r.stderr
    shutil.rmtree(study / "2_axial")
    r = predict(study, tmp_path / "out2", "--model", model, "--input-size", "64", expect_rc=1)
    assert "0 of 2 cases done, 0 failed, 2 skipped" in r.stdout
    r = predict(study / "1_scout", tmp_path / "out3", "--model", model, "--input-size", "64", expect_rc=2)
    assert "localizer" in r.stderr and not (tmp_path / "out3").exists()  # one input refused: exit 2, no empty folder
    # a damaged CT series still fails the batch: only folders without any CT volume are skipped
    (study / "4_damaged").mkdir()
    (study / "4_damaged" / "x.dcm").write_bytes(b"\x00" * 200)
    predict(study, tmp_path / "out4", "--model", model, "--input-size", "64", expect_rc=1)
    assert json.loads((tmp_path / "out4" / "summary.json").read_text())["failed"] == 1


def test_single_slices_as_a_batch_of_files(model, tmp_path):
    cases = tmp_path / "slices"
    cases.mkdir()
    for i, f in enumerate(sorted(COVID.rglob("axial/*.dcm"))):
        (cases / f"s{i}").mkdir()
        shutil.copy(f, cases / f"s{i}" / f.name)
    predict(cases, tmp_path / "out", "--model", model, "--input-size", "64")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cases"] == 4 and summary["ok"] == 4


@pytest.mark.parametrize("opts,msg", [(["--device", "tpu"], "expected cpu, cuda or cuda:N"),
                                      (["--batch-size", "0"], "--batch-size must be 1 or more"),
                                      (["--batch-size", "-3"], "--batch-size must be 1 or more")])
def test_bad_options_are_one_line(opts, msg, model, tmp_path):
    r = predict(COVID / "A046441" / "axial" / "19001111-045.dcm", tmp_path / "o", "--model", model, *opts,
                expect_rc=2)
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_main_in_process_leaves_the_callers_log_levels(tmp_path, capsys):
    """`main()` called from Python sets quieter log levels for its run only: afterwards MONAI's own loggers and the
    package's are as the caller left them (a leaked ERROR level hid MONAI's notices from later code)."""
    import logging

    from fusionlungnet_monai.cli import main

    names = ("fusionlungnet_monai", "monai.data.nvimgcodec_pydicom_plugin")
    for name in names:
        logging.getLogger(name).setLevel(logging.INFO)
    assert main(["predict", str(tmp_path / "missing.nii.gz"), str(tmp_path / "o"), "--no-progress"]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err
    assert [logging.getLogger(name).level for name in names] == [logging.INFO, logging.INFO]
    for name in names:
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_a_wrong_bundle_folder_never_falls_back_to_another(tmp_path, monkeypatch):
    """`--bundle DIR` or $FUSIONLUNGNET_BUNDLE naming a folder without a bundle is an error naming it; the repository's
    bundle/ is used only when neither is given (a wrong --bundle silently ran the repository's bundle)."""
    from fusionlungnet_monai.data import InputError
    from fusionlungnet_monai.workflow import find_bundle

    monkeypatch.delenv("FUSIONLUNGNET_BUNDLE", raising=False)
    assert find_bundle() == BUNDLE.resolve()
    with pytest.raises(InputError, match="no MONAI bundle here"):
        find_bundle(tmp_path)
    monkeypatch.setenv("FUSIONLUNGNET_BUNDLE", str(tmp_path))
    with pytest.raises(InputError, match=r"no MONAI bundle here \(\$FUSIONLUNGNET_BUNDLE\)"):
        find_bundle()
    assert find_bundle(BUNDLE) == BUNDLE.resolve()


def test_model_files_that_are_not_fusionlungnet_weights(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    r = predict(COVID / "A046441" / "axial" / "19001111-045.dcm", tmp_path / "o", "--model", text, expect_rc=2)
    assert "not a PyTorch weights file" in r.stderr
    other = tmp_path / "unet.pt"
    torch.save(torch.nn.Conv2d(1, 2, 3).state_dict(), other)
    r = predict(COVID / "A046441" / "axial" / "19001111-045.dcm", tmp_path / "o", "--model", other, expect_rc=2)
    assert "does not hold FusionLungNet weights" in r.stderr


def test_output_inside_input_is_refused_even_through_a_symlink(model, phantom_dir, tmp_path):
    series = tmp_path / "series"
    shutil.copytree(phantom_dir / "dicom" / "ph000", series)
    before = sorted(p.name for p in series.rglob("*"))
    r = predict(series, series, "--model", model, expect_rc=2)
    assert "is the input itself" in r.stderr
    link = tmp_path / "link"
    link.symlink_to(series)
    r = predict(series, link / "out", "--model", model, expect_rc=2)
    assert "inside the input" in r.stderr
    assert sorted(p.name for p in series.rglob("*")) == before, "the input is never written to"


def test_rerun_keeps_results_unless_overwrite_and_drops_stale_files(model, phantom_dir, tmp_path):
    series, out = phantom_dir / "dicom" / "ph000", tmp_path / "o"
    predict(series, out, "--model", model, "--input-size", "64", "--format", "dicom-seg")
    assert (out / "seg.dcm").is_file()
    stamp = (out / "lungmask.nii.gz").stat().st_mtime_ns
    r = predict(series, out, "--model", model, "--input-size", "64", expect_rc=2)
    assert "--overwrite" in r.stderr and (out / "lungmask.nii.gz").stat().st_mtime_ns == stamp
    predict(series, out, "--model", model, "--input-size", "64", "--overwrite")
    assert (out / "lungmask.nii.gz").stat().st_mtime_ns != stamp
    assert not (out / "seg.dcm").exists(), "the earlier run's DICOM SEG does not mix with the new results"
    assert json.loads((out / "report.json").read_text())["outputs"].keys() == {"mask_nifti", "qc_png"}


def test_batch_where_every_case_fails_still_writes_its_summary(model, tmp_path):
    cases = tmp_path / "bad"
    for n in ("a", "b"):
        (cases / n).mkdir(parents=True)
        (cases / n / "x.dcm").write_bytes(b"\x00" * 200)
    predict(cases, tmp_path / "out", "--model", model, expect_rc=1)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cases"] == 2 and summary["failed"] == 2


def test_4d_nifti_and_nan_voxels(model, phantom_dir, tmp_path):
    import nibabel as nib

    img = nib.load(str(phantom_dir / "nifti" / "ph000_image.nii.gz"))
    data = np.asarray(img.dataobj).astype(np.float32)
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), img.affine), str(four))
    r = predict(four, tmp_path / "o4", "--model", model, "--input-size", "64", expect_rc=2)
    assert "four.nii.gz" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    data[40:50, 40:50, 3] = np.nan
    data[60:62, 60:62, 4] = [[np.inf, -np.inf], [np.inf, np.inf]]
    nan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), str(nan))
    predict(nan, tmp_path / "on", "--model", model, "--input-size", "64")
    report = json.loads((tmp_path / "on" / "report.json").read_text())
    assert any(w.startswith("100 voxels are NaN") for w in report["warnings"]), report["warnings"]
    assert any(w.startswith("4 voxels are infinite") for w in report["warnings"]), report["warnings"]
    assert 0.0 <= report["second_opinion"]["dice_with_network"] <= 1.0


def test_sigterm_ends_a_batch_cleanly_with_exit_130(model, phantom_dir, tmp_path):
    cases = tmp_path / "many"
    cases.mkdir()
    for i in range(6):
        shutil.copy(phantom_dir / "nifti" / "ph000_image.nii.gz", cases / f"c{i}.nii.gz")
    out, tmpdir = tmp_path / "out", tmp_path / "tmpdir"
    tmpdir.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "fusionlungnet_monai", "predict", str(cases), str(out), "--model",
                          str(model), "--input-size", "64", "--no-progress", "--bundle", str(BUNDLE)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "TMPDIR": str(tmpdir)})
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "c0" / "report.json").exists():
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["ok"] >= 1
    for d in out.iterdir():
        if d.is_dir():
            assert not [x for x in d.iterdir() if x.name.startswith(".")], f"temporary folder left in {d}"
            files = {x.name for x in d.iterdir()}
            assert files in (set(), {"lungmask.nii.gz", "qc.png", "report.json"}), f"half-written case {d}: {files}"
    assert not list(tmpdir.iterdir()), "the run's temporary folder is removed"


def test_an_interrupt_as_a_case_lands_counts_that_case_done(model, phantom_dir, tmp_path, monkeypatch):
    """SIGTERM the moment a case's last file is moved into place (the window the batch test above hit now and then):
    the case's files are all there, so the summary counts it done; the run still ends with 130 and nothing else is
    written. Before, the summary called that complete case interrupted."""
    from fusionlungnet_monai.cli import main

    cases = tmp_path / "two"
    cases.mkdir()
    for i in range(2):
        shutil.copy(phantom_dir / "nifti" / "ph000_image.nii.gz", cases / f"c{i}.nii.gz")
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if Path(dst).name == "report.json" and Path(dst).parent.name == "c0":  # into place, not into staging
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    rc = main(["predict", str(cases), str(out), "--model", str(model), "--input-size", "64", "--no-progress",
               "--bundle", str(BUNDLE)])
    assert rc == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["ok"] == 1, summary
    assert {x.name for x in (out / "c0").iterdir()} == {"lungmask.nii.gz", "qc.png", "report.json"}
    assert not (out / "c1").exists() or not any((out / "c1").iterdir())


def test_two_inputs_with_one_stem_never_share_an_output_folder(model, phantom_dir, tmp_path):
    cases = tmp_path / "same_stem"
    cases.mkdir()
    shutil.copy(phantom_dir / "nifti" / "ph000_image.nii.gz", cases / "a.nii.gz")
    shutil.copy(phantom_dir / "png" / "images" / "ph000_s006.png", cases / "a.png")
    (cases / ".hidden").write_text("x")
    predict(cases, tmp_path / "out", "--model", model, "--input-size", "64")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cases"] == 2 and summary["ok"] == 2
    assert (tmp_path / "out" / "a_nii_gz" / "lungmask.nii.gz").is_file()
    assert (tmp_path / "out" / "a_png" / "lungmask.png").is_file()
    assert [s["reason"] for s in summary["skipped"]] == ["hidden"]


def test_disk_full_while_writing_leaves_nothing_half_written(model, phantom_dir, tmp_path, monkeypatch):
    """ENOSPC in the middle of a case's outputs (simulated: the QC picture cannot be written): the case fails with
    one line, the earlier results stay as they were, and no partial file or staging folder remains."""
    import errno

    from fusionlungnet_monai.outputs import report
    from fusionlungnet_monai.predict import Predictor

    series, out = phantom_dir / "dicom" / "ph000", tmp_path / "o"
    with Predictor(bundle_dir=str(BUNDLE), model=str(model), input_size=64, progress=False) as p:
        assert p.predict(series, out).ok
        before = {f.name: f.read_bytes() for f in out.iterdir()}

        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "qc.png"))

        monkeypatch.setattr(report, "qc_overlay", full)  # the writer the report calls (outputs.describe_lungs)
        res = p.predict(series, out, overwrite=True)
    assert not res.ok and "No space left on device" in res.error and "\n" not in res.error
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before, "earlier results untouched, nothing added"


def test_read_only_output_location_is_one_line_and_exit_2(model, phantom_dir, tmp_path, monkeypatch):
    """An output folder that cannot be created (read-only file system, simulated for root, whom chmod does not stop)."""
    import errno

    from fusionlungnet_monai.data import InputError, check_output_dir

    real_mkdir = Path.mkdir

    def ro(self, *a, **k):
        if self.name == "ro_out":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", ro)
    with pytest.raises(InputError, match="cannot create output folder \\(Read-only file system\\)"):
        check_output_dir(tmp_path / "ro_out")
    monkeypatch.undo()
    if os.geteuid() == 0:  # root: /sys refuses new folders even to root, a real non-writable location
        r = predict(phantom_dir / "dicom" / "ph000", "/sys/fln_ro_out", "--model", model, expect_rc=2)
        assert r.stderr.strip().splitlines()[-1].count("/sys/fln_ro_out") == 1


def test_skip_existing_resumes_a_batch(model, phantom_dir, tmp_path):
    """A rerun with --skip-existing keeps the finished cases untouched and lists them as ok; the others run."""
    cases, out = tmp_path / "cases", tmp_path / "out"
    cases.mkdir()
    for n in ("ph000", "ph001"):
        shutil.copytree(phantom_dir / "dicom" / n, cases / n)
    predict(cases / "ph000", out / "ph000", "--model", model, "--input-size", "64")  # an earlier, partial run
    stamp = (out / "ph000" / "lungmask.nii.gz").stat().st_mtime_ns
    r = predict(cases, out, "--model", model, "--input-size", "64", "--skip-existing")
    assert "kept    " in r.stdout and (out / "ph000" / "lungmask.nii.gz").stat().st_mtime_ns == stamp
    assert (out / "ph001" / "report.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 2 and summary["failed"] == 0
    r = predict(cases, out, "--model", model, "--skip-existing", "--overwrite", expect_rc=2)
    assert "exclude each other" in r.stderr


def test_a_second_run_into_the_same_output_folder_refuses_or_waits(model, phantom_dir, tmp_path):
    """Two runs into one output folder at once: 0.3.13 let both print "ok", one case's mask beside the other's
    seg.dcm. The folder is locked for a run's duration: a second run refuses in one line and writes nothing; with
    --overwrite it waits for the first and then writes a consistent set."""
    import threading

    from fusionlungnet_monai.outputs.lock import BUSY, output_lock

    series, out = phantom_dir / "dicom" / "ph000", tmp_path / "o"
    out.mkdir()
    with output_lock(out):  # another run holds the folder
        r = predict(series, out, "--model", model, "--input-size", "64", expect_rc=2)
        assert r.stderr.strip().splitlines() == [f"error: {out}: {BUSY}"]
        assert not any(out.iterdir())
    held, release = threading.Event(), threading.Event()

    def other_run():
        with output_lock(out):
            held.set()
            release.wait(60)
            (out / "seg.dcm").write_text("the first run's result")

    t = threading.Thread(target=other_run)
    t.start()
    held.wait(10)
    proc = subprocess.Popen([sys.executable, "-m", "fusionlungnet_monai", "predict", str(series), str(out), "--model",
                             str(model), "--input-size", "64", "--overwrite", "--no-progress", "--bundle",
                             str(BUNDLE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, waiting = [], threading.Event()

    def read_stderr():
        for line in proc.stderr:
            lines.append(line)
            if "another fusionlungnet run is writing there" in line:
                waiting.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    assert waiting.wait(300), "".join(lines)[-2000:]
    time.sleep(1)
    assert proc.poll() is None and not (out / "lungmask.nii.gz").exists(), "it waits"
    release.set()
    t.join()
    stdout = proc.stdout.read()
    proc.wait(600)
    reader.join()
    assert proc.returncode == 0, "".join(lines)[-2000:]
    assert "ok" in stdout
    assert (out / "lungmask.nii.gz").is_file() and (out / "report.json").is_file()
    assert not (out / "seg.dcm").exists(), "--overwrite replaced what the first run wrote: one consistent set"


def test_a_killed_runs_staging_folder_is_swept_and_reports_are_as_readable_as_masks(model, phantom_dir, tmp_path):
    """SIGKILL during a write left a hidden `.fusionlungnet-partial-*` folder that no later run removed; report.json
    was written 0600 (mkstemp) while the masks were 0644. The next run into the folder (holding its lock) removes
    what a killed run staged, and the report gets the masks' mode."""
    series, out = phantom_dir / "dicom" / "ph000", tmp_path / "o"
    (out / ".fusionlungnet-partial-k1ll3d").mkdir(parents=True)
    (out / "case" / ".fusionlungnet-partial-0ld").mkdir(parents=True)
    old = os.umask(0o022)
    try:
        predict(series, out, "--model", model, "--input-size", "64", "--overwrite")
    finally:
        os.umask(old)
    assert not list(out.rglob(".fusionlungnet-partial-*"))
    mode = lambda name: (out / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("report.json") == mode("lungmask.nii.gz") == 0o644


def test_dicom_seg_without_highdicom_is_refused_before_the_run(phantom_dir, tmp_path, monkeypatch, capsys):
    """0.3.13 ran the whole case (27 s) and then failed on the missing package, throwing the mask away. highdicom is
    a core requirement now; where it is missing anyway, the run refuses at once and says how to install it."""
    import importlib.util

    from fusionlungnet_monai.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "highdicom" else real(name, *a))
    out = tmp_path / "o"
    t0 = time.perf_counter()
    assert main(["predict", str(phantom_dir / "dicom" / "ph000"), str(out), "--format", "dicom-seg",
                 "--no-progress"]) == 2
    assert time.perf_counter() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --format dicom-seg needs the highdicom package (pip install highdicom, or reinstall "
                   "fusionlungnet-monai, which requires it)"]
    assert not out.exists()
