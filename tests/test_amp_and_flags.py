"""Mixed precision that learns, booleans on the command line that mean what they say, atomic checkpoints."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BUNDLE, SMALL

from fusionlungnet_monai import FusionLungNet, HybridLoss, amp_dtype, as_bool
from fusionlungnet_monai.config import default_amp_dtype


def _batch(size: int = 64, n: int = 2):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=g)
    y = torch.zeros(n, 1, size, size)
    y[..., size // 4 : size // 2, size // 5 : size - size // 5] = 1
    return x, y


def test_hybrid_loss_is_float32_and_finite_under_cpu_bf16_autocast():
    x, y = _batch()
    logits = [torch.randn_like(y) * 4 for _ in range(5)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = HybridLoss()([lg.bfloat16() for lg in logits], y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    ref = HybridLoss()(logits, y)  # the bf16 inputs only round the logits: same value to bf16 precision
    assert abs(loss.item() - ref.item()) < 0.05


def test_training_step_under_cpu_bf16_autocast_has_finite_gradients():
    torch.manual_seed(0)
    net = FusionLungNet(spatial_dims=2, in_channels=1, out_channels=1, features=32, rrm_features=16)
    x, y = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        loss = HybridLoss()(out, y)
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert len(grads) > 100
    assert all(torch.isfinite(g).all() for g in grads)
    assert loss.dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_amp_steps_learn(dtype):
    """On a GPU: 12 Adam steps under autocast; GradScaler (fp16) settles after a few skipped steps, the loss falls."""
    torch.manual_seed(0)
    net = FusionLungNet(spatial_dims=2, in_channels=1, out_channels=1).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 3e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    x, y = (t.cuda() for t in _batch(128, 4))
    losses, skipped = [], 0
    for _ in range(12):
        opt.zero_grad()
        with torch.autocast("cuda", dtype=dtype):
            loss = HybridLoss()(net(x), y)
        before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        skipped += int(before is not None and scaler.get_scale() < before)
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert skipped <= 8, f"GradScaler skipped {skipped} of 12 steps"


def _fake_trainer(scaler, dtype=torch.float16, amp=True):
    import types

    return types.SimpleNamespace(scaler=scaler, amp=amp, amp_kwargs={"dtype": dtype},
                                 state=types.SimpleNamespace(metrics={}), logger=types.SimpleNamespace(info=print))


def test_amp_monitor_counts_skipped_steps_without_a_sync_per_iteration(monkeypatch):
    """A real GradScaler (on the CPU) over four steps, two with infinite gradients: two skipped steps, counted on the
    scaler's device and read only at the epoch's end."""
    from fusionlungnet_monai.handlers import AmpMonitor

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    engine, monitor = _fake_trainer(scaler), AmpMonitor(log=False)
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or item(t))
    for bad in (True, False, True, False):
        monitor._before(engine)
        opt.zero_grad()
        scaler.scale((w * (float("inf") if bad else 1.0)).sum()).backward()
        scaler.step(opt)
        scaler.update()
        n = len(reads)
        monitor._after(engine)
        assert len(reads) == n, "the monitor read a device value during the iteration"
    monitor._epoch(engine)
    assert engine.state.metrics["amp_skipped_steps"] == 2
    assert engine.state.metrics["amp_scale"] == 2.0**14


def test_bf16_trains_without_loss_scaling_and_fp16_keeps_its_scaler():
    from fusionlungnet_monai.handlers import BF16WithoutLossScaling

    for dtype in (torch.bfloat16, torch.float16):
        scaler = torch.amp.GradScaler("cpu")
        engine = _fake_trainer(scaler, dtype)
        BF16WithoutLossScaling._started(engine)
        if dtype is torch.bfloat16:
            assert engine.scaler is not scaler and not engine.scaler.is_enabled()
            x = torch.tensor(3.0)
            assert engine.scaler.scale(x) is x  # a disabled scaler passes the loss through
        else:
            assert engine.scaler is scaler and scaler.is_enabled()
    off = _fake_trainer(None, torch.bfloat16, amp=False)
    BF16WithoutLossScaling._started(off)
    assert off.scaler is None


def test_amp_dtype_is_chosen_as_documented(monkeypatch):
    assert amp_dtype("bf16") is torch.bfloat16 and amp_dtype("float16") is torch.float16
    assert amp_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="amp_dtype"):
        amp_dtype("float64")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert default_amp_dtype() == "bfloat16" and amp_dtype("auto") is torch.bfloat16 and amp_dtype(None) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert default_amp_dtype() == "float16" and amp_dtype("auto") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_amp_dtype() == "float16"


@pytest.mark.parametrize("value,expected", [("false", False), ("False", False), ("0", False), (0, False),
                                            (False, False), ("true", True), ("True", True), ("1", True), (1, True),
                                            (True, True)])
def test_as_bool_spellings(value, expected):
    assert as_bool(value) is expected


def test_as_bool_rejects_anything_else_with_the_knob_name():
    with pytest.raises(ValueError, match=r"^amp: expected true/false"):
        as_bool("maybe", "amp")
    with pytest.raises(ValueError):
        as_bool(2, "amp")


_SHOW_TRAIN = {"show": ["$print('FLAGS=' + str({"
                        "'amp': bool(@train#trainer.amp), 'compile': bool(@train#trainer.compile), "
                        "'compile_loss': @loss._compiled_terms is not None, "
                        "'progress_bar': any(type(h).__name__ == 'ProgressBar' for h in @train#handlers), "
                        "'resume': any(type(h).__name__ == 'CheckpointLoader' for h in @train#state_handlers), "
                        "'channels_last': next(@network.parameters()).dim() == 4 and "
                        "@network.encoder.layer1[0].conv2.weight.is_contiguous(memory_format=torch.channels_last), "
                        "'use_caa': type(@network_def.caa).__name__ == 'ChannelAggregationAttention', "
                        "'use_mff': type(@network_def.fuse4).__name__ == 'MultiScaleFeatureFusion', "
                        "'use_sr': type(@network_def.sr5).__name__ == 'SelfRefinement', "
                        "'use_rrm': bool(@network_def.use_rrm), 'decollate': any(getattr(h[0], '__name__', '') == '_decollate_data' for hs in @train#trainer._event_handlers.values() for h in hs)}))"]}
_SHOW_INFER = {"show": ["$print('FLAGS=' + str({"
                        "'amp': bool(@evaluator.amp), "
                        "'fill_holes': any(type(t).__name__ == 'FillMaskHolesd' for t in @postprocessing.transforms), "
                        "'refine_boundary': any(type(t).__name__ == 'HUBoundaryRefined' for t in @post#invert.slab_transforms) "
                        "and any(type(t).__name__ == 'KeepHUd' for t in @preprocessing.transforms), "
                        "'remove_airways': any(type(t).__name__ == 'RemoveAirwaysd' for t in @postprocessing.transforms) "
                        "and any(type(t).__name__ == 'KeepHUd' for t in @preprocessing.transforms), "
                        "'body_mask': any(type(t).__name__ == 'RemoveOutsideBodyd' for t in @post#invert.slab_transforms) "
                        "and any(type(t).__name__ == 'KeepHUd' for t in @preprocessing.transforms), "
                        "'drop_air_components': [t for t in @postprocessing.transforms "
                        "if type(t).__name__ == 'KeepLargestComponentsd'][0].hu_key == 'image_hu', "
                        "'preprocess_on_device': any(type(t).__name__ == 'EnsureTyped' and t.converter.device is not None "
                        "for t in @preprocessing.transforms), "
                        "'channels_last': @network.encoder.layer1[0].conv2.weight.is_contiguous(memory_format=torch.channels_last), "
                        "'fuse_conv_bn': not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in @network.modules()), "
                        "'load_pretrain': fusionlungnet_monai.as_bool(@load_pretrain), "
                        "'write_report': any(type(t).__name__ == 'SaveLungReportd' for t in @postprocessing.transforms), "
                        "'report_second_opinion': @post#report#second_opinion, "
                        "'separate_folder': [t for t in @postprocessing.transforms if type(t).__name__ == 'SaveImaged'][0]"
                        ".saver.folder_layout.parent}))"]}


def _show(config: list[str], extra: list[str], tmp: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "show", "--config_file", str(config), *extra],
                       cwd=BUNDLE, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("FLAGS=")][-1]
    return ast.literal_eval(line[len("FLAGS="):])


@pytest.mark.slow
@pytest.mark.parametrize("spelling,expected", [("false", False), ("False", False), ("0", False),
                                               ("true", True), ("True", True), ("1", True)])
def test_boolean_overrides_through_monai_bundle_run(spelling, expected, png_dataset, tmp_path):
    """Every boolean knob of train.json and inference.json, given on the command line as users type it."""
    show = tmp_path / "show_train.json"
    show.write_text(json.dumps(_SHOW_TRAIN))
    knobs = ["amp", "compile", "compile_loss", "progress_bar", "resume", "channels_last", "ablation#use_caa", "ablation#use_mff",
             "ablation#use_sr", "ablation#use_rrm", "train#decollate"]
    last = tmp_path / "checkpoint_last.pt"  # resume true needs a checkpoint to exist (it is not loaded here)
    last.write_bytes(b"")
    args = ["--dataset_dir", str(png_dataset), "--bundle_root", str(tmp_path), *SMALL, "--cache_rate", "0",
            "--resume_path", str(last)]
    for k in knobs:
        args += [f"--{k}", spelling]
    got = _show(["configs/train.json", str(show)], args, tmp_path)
    assert got == {k.split("#")[-1]: expected for k in knobs}

    show = tmp_path / "show_infer.json"
    show.write_text(json.dumps(_SHOW_INFER))
    knobs = ["amp", "fill_holes", "refine_boundary", "body_mask", "remove_airways", "drop_air_components", "preprocess_on_device",
             "channels_last", "fuse_conv_bn", "load_pretrain", "separate_folder", "write_report", "report_second_opinion"]
    ckpt = tmp_path / "model.pt"  # load_pretrain true must find weights: the network's own initial ones
    torch.save(FusionLungNet(spatial_dims=2, in_channels=1, out_channels=1, deep_supervision=False).state_dict(), ckpt)
    args = ["--bundle_root", str(tmp_path), "--ckpt_path", str(ckpt), "--input", "[]"]
    for k in knobs:
        args += [f"--{k}", spelling]
    got = _show(["configs/inference.json", str(show)], args, tmp_path)
    assert got == {k: expected for k in knobs}


def _train(bundle_root: Path, data: Path, epochs: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                             "configs/train.json", "--bundle_root", str(bundle_root), "--dataset_dir", str(data),
                             "--max_epochs", str(epochs), "--progress_bar", "false", *SMALL, *extra],
                            cwd=BUNDLE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, start_new_session=True)


def _wait_for_save(p: subprocess.Popen, models: Path, timeout: float = 300) -> None:
    """Wait until a save starts (a temporary file appears) or finishes (a checkpoint changes) after now."""
    before = {f.name: f.stat().st_mtime_ns for f in models.glob("*.pt")} if models.exists() else {}
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if models.exists():
            now = {f.name: f.stat().st_mtime_ns for f in models.glob("*.pt")}
            if list(models.glob("*.tmp*")) or any(now.get(k) != v for k, v in before.items()) or set(now) - set(before):
                return
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint save seen; training output:\n{(p.stdout.read() if p.poll() is not None else '')[-3000:]}")


@pytest.mark.slow
def test_sigkill_never_leaves_a_broken_checkpoint_and_resume_carries_on(png_dataset, tmp_path):
    """Kill training with SIGKILL during saves and mid-epoch; model.pt always loads and --resume continues."""
    run = tmp_path / "run"
    models = run / "models"
    p = _train(run, png_dataset, 50)
    while not ((models / "model.pt").exists() and (models / "checkpoint_last.pt").exists()):  # epoch 1 saved
        assert p.poll() is None, p.stdout.read()[-3000:]
        time.sleep(0.05)
    for delay in (0.0, 0.05, 0.4):  # as a save starts, during it, after it (mid-epoch)
        if p is None:
            p = _train(run, png_dataset, 50, "--resume", "true")
        _wait_for_save(p, models)
        time.sleep(delay)
        assert p.poll() is None, p.stdout.read()[-3000:]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        p = None
        sd = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
        assert "encoder.conv1.weight" in sd
        last = torch.load(models / "checkpoint_last.pt", map_location="cpu", weights_only=True)
        assert last["trainer"]["iteration"] >= last["trainer"]["epoch_length"]
    state = torch.load(models / "checkpoint_last.pt", map_location="cpu", weights_only=True)["trainer"]
    epoch_before = state["iteration"] // state["epoch_length"]
    p = _train(run, png_dataset, epoch_before + 1, "--resume", "true")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    assert f"Epoch: {epoch_before + 1}/{epoch_before + 1}" in out and "Epoch: 1/" not in out
    assert not list(models.glob("*.tmp*")), "the next run clears temporary files of killed saves"


def _timed_run(limit_s: float, step_s: float, n_iter: int, max_epochs: int):
    from ignite.engine import Engine, Events

    from fusionlungnet_monai.handlers import TrainingTimeLimit

    eng = Engine(lambda e, b: time.sleep(step_s))
    TrainingTimeLimit(limit_s).attach(eng)
    completed = []
    eng.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.epoch))
    t0 = time.monotonic()
    eng.run(range(n_iter), max_epochs=max_epochs)
    return eng.state.epoch, eng.state.iteration, completed, time.monotonic() - t0


def test_training_time_limit_stops_at_an_epoch_end_within_the_budget():
    """max_time_s (TrainingTimeLimit): epochs of ~0.2 s and 0.7 s allowed end the run at an epoch boundary, long
    before max_epochs, within the budget, and COMPLETED still fires (the final checkpoint is written)."""
    epoch, iteration, completed, secs = _timed_run(0.7, 0.05, 4, 50)
    assert 1 <= epoch <= 3 and iteration == 4 * epoch and completed == [epoch]
    assert secs < 0.7 + 0.1


def test_training_time_limit_stops_mid_epoch_when_one_epoch_is_too_long():
    epoch, iteration, completed, secs = _timed_run(0.15, 0.05, 40, 5)
    assert epoch == 1 and 3 <= iteration < 40 and completed == [1]
    with pytest.raises(ValueError, match="limit_s"):
        from fusionlungnet_monai.handlers import TrainingTimeLimit

        TrainingTimeLimit(0)


def test_max_time_s_is_a_config_id_that_adds_the_time_limit():
    from monai.bundle import ConfigParser

    from fusionlungnet_monai.handlers import TrainingTimeLimit

    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "train.json"))
    names = [h.get("_target_") for h in p.get("train#handlers")]
    i = names.index("fusionlungnet_monai.handlers.TrainingTimeLimit")
    assert p.get_parsed_content(f"train#handlers#{i}#_disabled_") is True  # null: no limit by default
    p["max_time_s"] = 300
    p.parse(True)
    h = p.get_parsed_content(f"train#handlers#{i}")
    assert isinstance(h, TrainingTimeLimit) and h.limit_s == 300


@pytest.mark.parametrize("decollate,log_every,logged", [("false", 1, [1, 2, 3, 4, 5, 6]), ("true", 4, [4, 6])])
def test_training_logs_its_loss_with_or_without_decollation(decollate, log_every, logged, png_dataset, tmp_path):
    """train#decollate false (the default: the batch is post-processed whole, no per-image metric in training)
    and true (MONAI's default) both train and log a finite train_loss; ``log_every`` N logs every N-th iteration
    and the epoch's last (each log reads the loss from the device)."""
    from conftest import bundle

    r = bundle("run", "training", "--config_file", "configs/train.json", "--bundle_root", str(tmp_path),
               "--dataset_dir", str(png_dataset), "--max_epochs", "1", "--progress_bar", "false",
               "--train#decollate", decollate, "--log_every", str(log_every), *SMALL)
    found = re.findall(r"Iter: (\d+)/6 -- train_loss: ([0-9.]+)", r.stdout + r.stderr)  # 24 slices, batch 4
    assert [int(i) for i, _ in found] == logged, found
    assert all(np.isfinite([float(v) for _, v in found]))


def test_every_n_iterations_filter():
    from types import SimpleNamespace

    from fusionlungnet_monai.handlers import every_n_iterations

    f = every_n_iterations(10)
    engine = SimpleNamespace(state=SimpleNamespace(epoch_length=25))
    assert [i for i in range(1, 76) if f(engine, i)] == [10, 20, 25, 30, 40, 50, 60, 70, 75]
    with pytest.raises(ValueError, match="positive integer"):
        every_n_iterations(0)


def _rank_run(rank: int, world: int, port: int, results) -> None:
    """One gloo rank: rank 1's iterations are slower, so its clock passes the limit first; another handler
    terminates both ranks at iteration 3 of a second run (the ranks still check together, none waits)."""
    import torch.distributed as dist
    from ignite.engine import Engine, Events

    from fusionlungnet_monai.handlers import TrainingTimeLimit

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        eng = Engine(lambda e, b: time.sleep(0.02 if rank == 0 else 0.06))
        TrainingTimeLimit(0.5, check_every=4).attach(eng)
        eng.run(range(100), max_epochs=1)
        stop_at_3 = Engine(lambda e, b: None)
        stop_at_3.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
        TrainingTimeLimit(60, check_every=1).attach(stop_at_3)
        stop_at_3.run(range(8), max_epochs=1)
        results[rank] = (eng.state.iteration, stop_at_3.state.iteration)
    finally:
        dist.destroy_process_group()


def test_training_time_limit_ranks_stop_together_under_torch_distributed():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_rank_run, args=(2, port, results), nprocs=2, join=True)
    (it0, third0), (it1, third1) = results[0], results[1]
    assert it0 == it1 and it0 % 4 == 0 and it0 < 100, (it0, it1)  # one agreed stop, at a check iteration
    assert third0 == third1 == 3
