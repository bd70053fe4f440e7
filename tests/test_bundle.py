"""The MONAI bundle, driven exactly as users drive it: `python -m monai.bundle ...` subprocesses on phantoms."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BUNDLE, SMALL, bundle


def test_training_writes_checkpoints(trained):
    assert (trained / "models" / "model.pt").is_file()
    assert (trained / "models" / "checkpoint_final.pt").is_file()
    sd = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "encoder.conv1.weight" in sd  # a plain state dict (what MONAI Label loads)
    ckpt = torch.load(trained / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"]  # two epochs done
    assert list((trained / "eval").glob("events.out.tfevents.*")), "TensorBoard logs"


def test_resume_continues_epoch_count(trained, png_dataset, tmp_path):
    run = tmp_path / "resume"
    shutil.copytree(trained / "models", run / "models")
    r = bundle("run", "training", "--config_file", "configs/train.json", "--bundle_root", str(run),
               "--dataset_dir", str(png_dataset), "--max_epochs", "3", "--resume", "true", *SMALL)
    log = r.stdout + r.stderr
    assert "Epoch: 3/3" in log and "Epoch: 1/3" not in log
    ckpt = torch.load(run / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 3 * ckpt["trainer"]["epoch_length"]


def test_evaluate_writes_six_metrics_both_aggregations(trained, png_dataset):
    bundle("run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']",
           "--bundle_root", str(trained), "--dataset_dir", str(png_dataset), *SMALL, "--save_predictions", "true")
    summary = json.loads((trained / "eval" / "summary.json").read_text())
    for m in ("iou", "f1", "precision", "recall", "accuracy", "mcc"):
        assert 0.0 <= summary[f"val_{m}"] <= 1.0 and 0.0 <= summary[f"val_{m}_global"] <= 1.0 or m == "mcc"
    assert summary["num_images"] == 12
    rows = (trained / "eval" / "per_image.csv").read_text().strip().splitlines()
    assert len(rows) == 13 and rows[0].startswith("filename,") and "val_mcc" in rows[0]
    assert len(list((trained / "eval" / "predictions").glob("*_seg.nii.gz"))) == 12


def test_inference_on_dicom_series_keeps_geometry(trained, phantom_dir, tmp_path):
    from monai.transforms import LoadImage

    from fusionlungnet_monai.data import CTSeriesReader

    series = phantom_dir / "dicom" / "ph001"  # holds a localizer series too
    bundle("run", "--config_file", "configs/inference.json", "--bundle_root", str(trained), "--input", str(series),
           "--output_dir", str(tmp_path), "--spatial_size", "[64,64]", "--report_second_opinion", "true")
    out = list(tmp_path.glob("*_lungmask.nii.gz"))
    assert len(out) == 1
    import nibabel as nib

    mask = nib.load(str(out[0]))
    ref = LoadImage(reader=CTSeriesReader(), image_only=True)(str(series))
    assert mask.shape == tuple(ref.shape) == (128, 128, 12)
    np.testing.assert_allclose(mask.affine, ref.affine.numpy(), atol=1e-4)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    # post#report: the lung volume in mL and the picture to check it, beside the mask, named like it
    report = json.loads((tmp_path / "ph001_report.json").read_text())
    voxel_ml = float(np.prod(mask.header.get_zooms()[:3])) / 1000.0
    vol = report["volumes_ml"]
    assert vol["total_ml"] == pytest.approx(np.count_nonzero(np.asarray(mask.dataobj)) * voxel_ml, abs=0.05)
    assert vol["total_ml"] > 0
    assert vol["right_ml"] + vol["left_ml"] == pytest.approx(vol["total_ml"], abs=0.2) and vol["left_ml"] > 0
    assert report["num_slices"] == 12 and report["input"] == str(series)
    assert 0.0 <= report["second_opinion"]["dice_with_network"] <= 1.0
    assert (tmp_path / "ph001_qc.png").is_file() and report["outputs"]["qc_png"] == str(tmp_path / "ph001_qc.png")


def test_inference_2d_png_keeps_size(trained, phantom_dir, tmp_path):
    from PIL import Image

    src = phantom_dir / "png" / "images" / "ph000_s003.png"
    bundle("run", "--config_file", "['configs/inference.json','configs/inference_2d.json']", "--bundle_root",
           str(trained), "--input", str(src), "--output_dir", str(tmp_path), "--spatial_size", "[64,64]")
    out = Image.open(tmp_path / "ph000_s003_lungmask.png")
    assert out.size == Image.open(src).size and out.mode == "L"
    assert set(np.unique(np.array(out))) <= {0, 255}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ph000_s003_lungmask.png"], "pictures get no volume report"


def test_training_on_dicom_slices(phantom_dir, tmp_path):
    """LungSegDB-V1 style: single DICOM slices with PNG masks in one datalist."""
    files = sorted((phantom_dir / "dicom" / "ph000").glob("CT*.dcm"))
    masks = sorted((phantom_dir / "png" / "masks").glob("ph000_s*.png"))
    items = [{"image": str(f), "label": str(m)} for f, m in zip(files, masks)]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items[:8], "validation": items[8:]}))
    bundle("run", "training", "--config_file", "configs/train.json", "--bundle_root", str(tmp_path / "b"),
           "--dataset_dir", str(tmp_path), "--max_epochs", "1", *SMALL)
    assert (tmp_path / "b" / "models" / "model.pt").is_file()


def test_verify_metadata_net_in_out_and_export(trained, phantom_dir):
    bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", "docs/metadata_schema.json")
    bundle("verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file",
           "configs/inference.json")
    ts = trained / "models" / "model.ts"
    bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(trained / "models" / "model.pt"),
           "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json")
    scripted = torch.jit.load(str(ts))
    from fusionlungnet_monai import FusionLungNet

    net = FusionLungNet(deep_supervision=False).eval()
    net.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    from monai.transforms import Compose, LoadImaged

    from fusionlungnet_monai.transforms import paper_preprocessing

    # an input like the training data: the paper preprocessing of a phantom slice (the multiplicative MFF/SR fusion
    # of a 2-epoch model overflows on inputs far from its BatchNorm statistics, e.g. uniform noise)
    pre = Compose([LoadImaged(keys="image", image_only=True), paper_preprocessing(["image"], spatial_size=(64, 64))])
    x = pre({"image": str(phantom_dir / "png" / "images" / "ph001_s005.png")})["image"].as_tensor()[None]
    with torch.no_grad():
        ref = net(x)
        assert torch.isfinite(ref).all()
        torch.testing.assert_close(scripted(x), ref, rtol=1e-4, atol=1e-4)


def test_metadata_matches_network():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == train["network_def"]["out_channels"]
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == train["spatial_size"]
    assert meta["version"] in meta["changelog"]


def test_multi_gpu_config_instantiates_on_cpu(png_dataset, monkeypatch, tmp_path):
    """torchrun config: parse train + multi_gpu_train and build its DDP objects on one CPU process (gloo)."""
    import torch.distributed as dist
    from monai.bundle import ConfigParser

    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29517")
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "multi_gpu_train.json")])
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(png_dataset), "device": "$torch.device('cpu')",
                   "network#device_ids": None, "num_workers": 0, "spatial_size": [64, 64],
                   "cache_rate": 0.0})
    init = parser.get("initialize")
    assert "dist.init_process_group(backend='nccl')" in " ".join(init)
    dist.init_process_group(backend="gloo", rank=0, world_size=1)
    try:
        trainer = parser.get_parsed_content("train#trainer")
        assert isinstance(trainer.network, torch.nn.parallel.DistributedDataParallel)
        sampler = parser.get_parsed_content("train#sampler")
        assert isinstance(sampler, torch.utils.data.DistributedSampler)
        evaluator = parser.get_parsed_content("validate#evaluator")
        assert evaluator.data_loader.sampler is parser.get_parsed_content("validate#sampler")
    finally:
        import ignite.distributed as idist

        idist.finalize()  # destroys the group and resets ignite's cached distributed model (metrics sync on it)
        assert not dist.is_initialized()


def test_multi_gpu_inference_loads_and_folds_the_network_by_id():
    """multi_gpu_inference.json takes inference.json's weight loading and BatchNorm folding by id (``%load_weights``,
    ``%fold_batchnorm``), not as copies: after parsing, both initialize lists run the same expressions, and a change
    to inference.json's step reaches the distributed run."""
    from monai.bundle import ConfigParser

    cfg = BUNDLE / "configs"
    single, multi = ConfigParser(), ConfigParser()
    single.read_config(str(cfg / "inference.json"))
    multi.read_config([str(cfg / "inference.json"), str(cfg / "multi_gpu_inference.json")])
    steps = [single.get(k) for k in ("load_weights", "fold_batchnorm")]
    assert "checkpointloader" in steps[0] and "fuse_conv_bn" in steps[1]
    for parser in (single, multi):
        parser.parse()  # resolves the % macros
        init = parser.get("initialize")
        assert [s for s in init if s in steps] == steps, init
    multi = ConfigParser()
    multi.read_config([str(cfg / "inference.json"), str(cfg / "multi_gpu_inference.json")])
    multi["fold_batchnorm"] = "$print('changed')"
    multi.parse()
    assert "$print('changed')" in multi.get("initialize")


def _series(log: str, pattern: str) -> list[float]:
    import re

    return [float(v) for v in re.findall(pattern, log)]


def test_learning_happens(png_dataset, tmp_path):
    """A short run on phantoms lowers the loss and raises validation IoU (precise BN on, as the demo runs)."""
    r = bundle("run", "training", "--config_file", "configs/train.json", "--bundle_root", str(tmp_path),
               "--dataset_dir", str(png_dataset), "--max_epochs", "5", "--precise_bn_batches", "3", *SMALL)
    log = r.stdout + r.stderr
    iou = _series(log, r"Metrics -- .*?val_iou: ([0-9.]+)")
    loss = _series(log, r"Iter: 6/6 -- train_loss: ([0-9.]+)")
    assert len(iou) == 5 and len(loss) == 5, log[-2000:]
    print("val_iou per epoch", iou, "last-iteration loss per epoch", loss)
    assert max(iou[-2:]) > 0.5 and max(iou[-2:]) > iou[0] + 0.2
    assert loss[-1] < loss[0]


def test_mask_writer_writes_the_mask_as_it_is_and_where_monais_does(tmp_path):
    """post#save's writer: the same file as MONAI's NibabelWriter (voxels, dtype, affine of an oblique LPS grid),
    without its float32 working copy (5x a uint8 mask) when nothing is resampled; NIfTI outputs only."""
    import nibabel as nib
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor, NibabelWriter
    from monai.transforms import SaveImaged

    from fusionlungnet_monai.outputs import MaskNibabelWriter

    rng = np.random.default_rng(0)
    mask = torch.as_tensor(rng.random((1, 30, 20, 7)) > 0.6, dtype=torch.uint8)
    c, s = np.cos(0.3), np.sin(0.3)
    affine = torch.tensor([[-0.7 * c, -0.7 * s, 0, 120.0], [0.7 * s, -0.7 * c, 0, -80.0], [0, 0, 2.5, -300.0],
                           [0, 0, 0, 1]], dtype=torch.float64)
    written = {}
    for name, writer in (("monai", NibabelWriter), ("ours", MaskNibabelWriter)):
        m = MetaTensor(mask.clone(), affine=affine, meta={"filename_or_obj": f"{name}.nii.gz"})
        SaveImaged(keys="pred", output_dir=str(tmp_path), output_postfix="mask", output_dtype=np.uint8,
                   resample=False, separate_folder=False, writer=writer, print_log=False)({"pred": m})
        written[name] = nib.load(str(tmp_path / f"{name}_mask.nii.gz"))
    assert written["ours"].get_data_dtype() == np.uint8 == written["monai"].get_data_dtype()
    np.testing.assert_array_equal(np.asarray(written["ours"].dataobj), mask[0].numpy())
    np.testing.assert_array_equal(np.asarray(written["monai"].dataobj), mask[0].numpy())
    np.testing.assert_allclose(written["ours"].affine, written["monai"].affine, atol=1e-6)
    np.testing.assert_allclose(written["ours"].affine, affine.numpy(), atol=1e-6)
    w = MaskNibabelWriter(output_dtype=np.uint8)
    w.set_data_array(MetaTensor(mask, affine=affine))
    w.set_metadata({"affine": affine}, resample=False)
    assert w.data_obj.dtype == np.uint8  # MONAI's set_metadata leaves a float32 copy here
    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "inference.json"))
    assert p.get_parsed_content("post#save#writer") is MaskNibabelWriter
    p["output_ext"] = ".png"
    assert p.get_parsed_content("post#save#writer") is None  # MONAI picks the writer for other outputs
