"""One prepared GPU check: training (mixed precision, speed, learning through the bundle), inference speed, CUDA tests,
torchrun.

Runs where only torch with CUDA is installed plus wheels of monai, pytorch-ignite, nibabel, pydicom and fire (no
itk: phantoms go through PNG). Every stage has its own time limit; the whole check is planned for 8 minutes on one
H100/H200. Results: ``OUT/gpu_check.json``, ``OUT/gpu_check.md`` (a table for docs/benchmarks.md) and ``OUT/logs/``.

    python scripts/gpu_check.py --out OUT                # on a GPU machine
    python scripts/gpu_check.py --out OUT --cpu-smoke    # the same stages at tiny sizes on CPU (the test suite runs it)
    python scripts/gpu_check.py --out OUT --stages steps,inference   # some stages only (a short GPU slot)

Stages:
1. device and versions;
2. training-step images/s for bf16, fp16 and fp32 autocast (and, unless --no-compile, bf16 with the loss compiled,
   train.json's ``compile_loss``, then with network and loss compiled, ``compile``), the loss's share of a
   step, peak memory (synthetic lung-like batches, channels_last, Adam, HybridLoss, GradScaler for fp16);
3. phantom PNG slices and a datalist;
4. learning check through ``python -m monai.bundle run training`` for bf16 and fp16: validation IoU per epoch,
   optimizer steps skipped by GradScaler, and end-to-end training images/s (data loading included);
5. inference with the shipped weights: bare forward (bf16), and end to end through the bundle's workflow with
   preprocessing on the CPU and on the device (``preprocess_on_device``) and through ``Predictor``, each ÷ forward;
6. the suite's CUDA tests (``pytest -m cuda``);
7. a one-process ``torchrun`` run of ``multi_gpu_train.json`` on NCCL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
STAGES = ("steps", "bundle", "inference", "cuda", "torchrun")


def _env(out: Path) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    return env


def _run(cmd: list[str], log: Path, timeout: float, out: Path) -> tuple[int, str, float]:
    """Run a stage as a subprocess with its own time limit; the log goes to ``log``."""
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=timeout, env=_env(out))
        text, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        text = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        text, rc = text + f"\n[gpu_check] stage timed out after {timeout:.0f} s", 124
    log.write_text(" ".join(cmd) + "\n\n" + text)
    return rc, text, time.time() - t0


def device_info() -> dict:
    import ignite
    import monai
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "ignite": ignite.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "device": "cpu", "bf16_supported": False}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, memory_gb=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    bf16_supported=bool(torch.cuda.is_bf16_supported()))
    return info


def _lung_batch(n: int, size: int, device):
    """A synthetic batch that looks like CT slices: body disc, two dark lungs, noise (for speed, not accuracy)."""
    import torch

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    body = ((xx / 0.9) ** 2 + (yy / 0.7) ** 2 <= 1).float()
    lungs = (((xx.abs() - 0.4) / 0.3) ** 2 + (yy / 0.45) ** 2 <= 1).float()
    x = (0.6 * body - 0.45 * lungs).expand(n, 1, size, size).clone() + 0.02 * torch.randn(n, 1, size, size)
    return x.to(device).contiguous(memory_format=torch.channels_last), lungs.expand(n, 1, size, size).clone().to(device)


def step_benchmark(size: int, batch: int, steps: int, compile_: bool, device_name: str, warmup: int = 3) -> list[dict]:
    """Training-step images/s per precision, the loss's share of a step and peak memory."""
    import torch

    from fusionlungnet_monai import FusionLungNet, HybridLoss

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    x, y = _lung_batch(batch, size, device)
    rows = []
    # (name, autocast dtype, torch.compile the network, torch.compile the loss: train.json's compile / compile_loss)
    plans = [("bf16", torch.bfloat16, False, False), ("fp16", torch.float16, False, False), ("fp32", None, False, False)]
    if compile_:
        plans += [("bf16+compiled loss", torch.bfloat16, False, True), ("bf16+compile", torch.bfloat16, True, True)]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for name, dtype, comp, comp_loss in plans:
        row = {"precision": name}
        try:
            torch.manual_seed(0)
            net = FusionLungNet(spatial_dims=2, in_channels=1, out_channels=1).to(device)
            net = net.to(memory_format=torch.channels_last)
            model = torch.compile(net) if comp else net
            opt = torch.optim.Adam(net.parameters(), 1e-4)
            loss_fn = HybridLoss(compile=comp_loss)
            scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
            skipped = 0

            def step():
                nonlocal skipped
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = loss_fn(model(x), y)
                before = scaler.get_scale() if scaler.is_enabled() else None
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                if before is not None and scaler.get_scale() < before:
                    skipped += 1
                return loss

            t_warm = time.time()
            for _ in range(warmup if not (comp or comp_loss) else warmup + 2):
                step()
            sync()
            row["warmup_s"] = round(time.time() - t_warm, 1)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            skipped = 0
            t0 = time.time()
            for _ in range(steps):
                loss = step()
            sync()
            dt = (time.time() - t0) / steps
            # the loss alone (forward + backward from fixed network outputs), in the same precision context
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                outs = net(x)
            outs = [o.detach().float().requires_grad_(True) for o in outs]
            sync()
            t1 = time.time()
            for _ in range(steps):
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    lv = loss_fn(outs, y)
                lv.backward()
            sync()
            dl = (time.time() - t1) / steps
            row.update(images_per_s=float(f"{batch / dt:.4g}"), step_ms=round(dt * 1000, 1),
                       loss_ms=float(f"{dl * 1000:.3g}"), loss_share=float(f"{dl / dt:.3g}"), final_loss=round(float(loss.detach()), 4),
                       loss_dtype=str(lv.dtype).replace("torch.", ""), skipped_steps=skipped,
                       peak_memory_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None)
        except Exception as e:  # one precision failing must not hide the others
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        rows.append(row)
        print(f"[gpu_check] step {name}: {row}", flush=True)
        del row
        if cuda:
            torch.cuda.empty_cache()
    return rows


def make_data(out: Path, cases: int, slices: int, size: int) -> Path:
    from fusionlungnet_monai.data import make_datalist
    from fusionlungnet_monai.phantom import write_phantom_case

    data = out / "data"
    for i in range(cases):
        write_phantom_case(str(data), f"p{i:03d}", seed=i, num_slices=slices, size=size, formats=("png",),
                           overwrite=True)
    make_datalist(data / "png", data / "png" / "datalist.json", val_fraction=0.25, overwrite=True)
    return data / "png"


def parse_training_log(text: str) -> dict:
    ious = [float(v) for v in re.findall(r"Metrics -- .*?val_iou: ([0-9.]+)", text)]
    skipped = [int(v) for v in re.findall(r"AMP: (\d+) optimizer steps skipped", text)]
    epoch_times = [sum(int(a) * m for a, m in zip(t.split(":"), (3600, 60, 1)))
                   for t in re.findall(r"SupervisedTrainer - INFO - Epoch\[\d+\] Complete\. Time taken: ([0-9:]+)", text)]
    return {"val_iou_per_epoch": ious, "amp_skipped_steps": skipped[-1] if skipped else None,
            "epoch_seconds": epoch_times}


def bundle_training(data: Path, out: Path, amp: bool, dtype: str, size: int, batch: int, epochs: int,
                    timeout: float, n_train: int) -> dict:
    name = f"train_{dtype if amp else 'fp32'}"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
           "--dataset_dir", str(data), "--bundle_root", str(out / name), "--max_epochs", str(epochs),
           "--spatial_size", f"[{size},{size}]", "--batch_size", str(batch), "--amp", str(amp).lower(),
           "--amp_dtype", dtype, "--progress_bar", "false", "--num_workers", str(min(8, os.cpu_count() or 1))]
    rc, text, secs = _run(cmd, out / "logs" / f"{name}.log", timeout, out)
    res = {"run": name, "rc": rc, "seconds": round(secs, 1), **parse_training_log(text)}
    ep = res["epoch_seconds"]
    if len(ep) >= 2:  # steady state: epochs after the first (which includes cuDNN autotuning)
        res["end_to_end_images_per_s"] = round(n_train / (sum(ep[1:]) / len(ep[1:])), 1) if sum(ep[1:]) else None
    print(f"[gpu_check] bundle {name}: rc {rc}, IoU {res['val_iou_per_epoch']}, skipped {res['amp_skipped_steps']}",
          flush=True)
    return res


def inference_benchmark(device_name: str, smoke: bool, model: Path) -> dict:
    """Inference speed with the shipped weights: the bare forward (eval, channels_last, BatchNorm folded, bf16
    autocast on CUDA) and end to end on a phantom NIfTI volume through the bundle's workflow, with preprocessing on
    the CPU (default) and on the device (``preprocess_on_device``), and through ``fusionlungnet predict``'s
    ``Predictor`` (slabs, 3D steps, second opinion, QC, report); each after one warm-up run."""
    import tempfile

    import torch

    from fusionlungnet_monai import FusionLungNet
    from fusionlungnet_monai.networks import fuse_conv_bn
    from fusionlungnet_monai.phantom import make_chest_phantom, write_nifti
    from fusionlungnet_monai.predict import Predictor
    from fusionlungnet_monai.workflow import infer_tensors, load_inference_workflow

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    size, batch, slices, matrix = (160, 2, 4, 96) if smoke else (160, 64, 64, 512)
    net = FusionLungNet(deep_supervision=False).to(device).eval().to(memory_format=torch.channels_last)
    net.load_state_dict({k: v.float() for k, v in torch.load(model, map_location=device, weights_only=True).items()})
    fuse_conv_bn(net)  # as the bundle's inference runs it (fuse_conv_bn: true)
    x = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        net(x)
        sync()
        t = time.perf_counter()
        reps = 1 if smoke else 10
        for _ in range(reps):
            net(x)
        sync()
        fwd = batch * reps / (time.perf_counter() - t)
    del net, x
    res = {"size": size, "slices": slices, "forward_slices_per_s": round(fwd, 1), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        ph = make_chest_phantom(1, num_slices=slices, size=matrix)
        path = write_nifti(ph.image, ph.affine_ras, Path(tmp) / "ct.nii.gz")

        def timed(fn) -> float:
            fn()  # warm-up: cuDNN autotuning, lazy imports
            sync()
            t = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - t

        for on_device in (False, True):
            try:
                wf = load_inference_workflow(BUNDLE, {"ckpt_path": str(model), "device": f"$torch.device('{device}')",
                                                      "amp": cuda, "preprocess_on_device": on_device, "input": [],
                                                      "sw_batch_size": batch}, save=False)
                secs = timed(lambda: infer_tensors(wf, [path]))
                row = {"pipeline": f"bundle workflow, preprocessing on {'the device' if on_device else 'the CPU'}",
                       "seconds": round(secs, 2), "slices_per_s": round(slices / secs, 1)}
            except Exception as e:  # one failing variant must not hide the others
                row = {"pipeline": f"bundle workflow, preprocess_on_device={on_device}", "error": repr(e)[:300]}
            res["rows"].append(row)
        try:
            with Predictor(device=str(device), batch_size=batch, progress=False) as pred:
                pred.workflow("volume")
                n = iter(range(10))
                secs = timed(lambda: pred.predict(path, Path(tmp) / f"out{next(n)}"))
            res["rows"].append({"pipeline": "fusionlungnet predict (+ 3D steps, second opinion, QC, report)",
                                "seconds": round(secs, 2), "slices_per_s": round(slices / secs, 1)})
        except Exception as e:
            res["rows"].append({"pipeline": "fusionlungnet predict", "error": repr(e)[:300]})
    for row in res["rows"]:
        if "slices_per_s" in row:
            row["ratio_to_forward"] = round(row["slices_per_s"] / fwd, 3)
    print(f"[gpu_check] inference: {res}", flush=True)
    return res


def markdown(res: dict) -> str:
    d = res["device"]
    lines = [f"GPU check on **{d['device']}** (torch {d['torch']}, CUDA {d['cuda']}, MONAI {d['monai']}), "
             f"{'CPU smoke run, tiny sizes: plumbing only' if res['cpu_smoke'] else 'full run'}, "
             f"{res['size']}², batch {res['batch']}; total {res['total_seconds']} s.", "",
             "| precision | images/s (step) | step ms | loss ms | loss share | peak GB | skipped steps |",
             "|---|---|---|---|---|---|---|"]
    for r in res["steps"]:
        if "error" in r:
            lines.append(f"| {r['precision']} | error: {r['error'][:80]} | | | | | |")
        else:
            lines.append(f"| {r['precision']} | {r['images_per_s']} | {r['step_ms']} | {r['loss_ms']} | "
                         f"{r['loss_share']:.1%} | {r['peak_memory_gb']} | {r['skipped_steps']} |")
    lines += ["", "| bundle training | rc | val IoU per epoch | GradScaler skipped | end-to-end images/s |",
              "|---|---|---|---|---|"]
    for r in res["bundle"]:
        lines.append(f"| {r['run']} | {r['rc']} | {', '.join(f'{v:.3f}' for v in r['val_iou_per_epoch'])} | "
                     f"{r['amp_skipped_steps']} | {r.get('end_to_end_images_per_s')} |")
    inf = res.get("inference")
    if inf:
        lines += ["", f"Inference, shipped weights at {inf['size']}², a {inf['slices']}-slice phantom NIfTI; bare forward "
                      f"(bf16 on CUDA, channels_last): **{inf['forward_slices_per_s']} slices/s**", "",
                  "| pipeline | slices/s | ÷ bare forward |", "|---|---|---|"]
        for r in inf["rows"]:
            lines.append(f"| {r['pipeline']} | error: {r['error'][:80]} | |" if "error" in r else
                         f"| {r['pipeline']} | {r['slices_per_s']} | {r['ratio_to_forward']:.2f} |")
    lines += ["", f"CUDA tests: {res['cuda_tests']['summary']}; torchrun (1 process, NCCL): {res['torchrun']['summary']}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/gpu_check")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (plumbing check)")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--dtypes", default="bfloat16,float16", help="AMP dtypes of the bundle learning check")
    ap.add_argument("--model", default=str(BUNDLE / "models" / "model.pt"), help="weights for the inference stage")
    a = ap.parse_args(argv)
    stages = set(a.stages.split(","))
    if stages - set(STAGES):
        ap.error(f"unknown stage(s) {sorted(stages - set(STAGES))}; choose from {','.join(STAGES)}")
    import torch

    t_start = time.time()
    out = Path(a.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    smoke = a.cpu_smoke
    if smoke:
        a.size, a.batch, a.steps, a.epochs = 64, 2, 1, 2
    elif not torch.cuda.is_available():
        print("[gpu_check] no CUDA device: use --cpu-smoke for the plumbing check", file=sys.stderr)
        return 2
    dev = "cpu" if smoke else "cuda"
    res: dict = {"cpu_smoke": smoke, "size": a.size, "batch": a.batch, "device": device_info()}
    print(f"[gpu_check] {res['device']}", flush=True)
    res["steps"], res["bundle"] = [], []
    if "steps" in stages:
        res["steps"] = step_benchmark(a.size, a.batch, a.steps, compile_=not (smoke or a.no_compile), device_name=dev,
                                      warmup=1 if smoke else 3)
    data = None
    if stages & {"bundle", "torchrun"}:
        cases, slices = (3, 4) if smoke else (12, 24)
        data = make_data(out, cases, slices, 128 if smoke else 512)
    if "bundle" in stages:
        n_train = len(json.loads((data / "datalist.json").read_text())["training"])
        limit = 300 if smoke else 150
        runs = [(dt, True) for dt in a.dtypes.split(",")] if not smoke else [("float16", False)]
        res["bundle"] = [bundle_training(data, out, amp, dt, a.size, a.batch, a.epochs, limit, n_train)
                         for dt, amp in runs]
    if "inference" in stages:
        res["inference"] = inference_benchmark(dev, smoke, Path(a.model))
    not_run = "skipped (no GPU)" if smoke else "not run"
    res["cuda_tests"], res["torchrun"] = {"summary": not_run}, {"summary": not_run}
    if "cuda" in stages and not smoke:
        rc, text, _ = _run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                            str(ROOT / "tests" / "test_transforms.py"), str(ROOT / "tests" / "test_amp_and_flags.py"),
                            str(ROOT / "tests" / "test_refine.py")],
                           out / "logs" / "cuda_tests.log", 180, out)
        last = [ln for ln in text.strip().splitlines() if "passed" in ln or "failed" in ln or "error" in ln]
        res["cuda_tests"] = {"rc": rc, "summary": last[-1] if last else f"rc {rc}"}
    if "torchrun" in stages and not smoke:
        rc, text, secs = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m",
                               "monai.bundle", "run", "training", "--config_file",
                               "['configs/train.json','configs/multi_gpu_train.json']", "--dataset_dir", str(data),
                               "--bundle_root", str(out / "torchrun"), "--max_epochs", "1", "--spatial_size",
                               f"[{a.size},{a.size}]", "--batch_size", str(a.batch), "--amp", "true"],
                              out / "logs" / "torchrun.log", 150, out)
        res["torchrun"] = {"rc": rc, "seconds": round(secs, 1), **parse_training_log(text),
                           "summary": f"rc {rc} in {secs:.0f} s"}
    res["total_seconds"] = round(time.time() - t_start, 1)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (out / "gpu_check.md").write_text(md)
    print(md)
    ok = all("error" not in r for r in res["steps"]) and all(r["rc"] == 0 for r in res["bundle"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
