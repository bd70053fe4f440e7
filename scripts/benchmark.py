#!/usr/bin/env python
"""Speed and memory of FusionLungNet inference, measured side by side in one run.

Sections (all in one process/run, so ratios are comparable on a shared, noisy machine):

- gemm:       fp32 ``torch.mm`` GFLOP/s (the machine's practical compute ceiling)
- forward:    bare model forward (eval, inference_mode) at 320² and 160², eager and channels_last;
              ResNet-50 encoder alone; FLOPs counted with ``torch.utils.flop_counter``; achieved GFLOP/s ÷ GEMM
- preprocess: paper preprocessing of one 512² slice to 320² (ms) ÷ model forward per slice
- e2e:        bundle inference (``configs/inference.json``) on a phantom DICOM series of N slices:
              read -> preprocess -> SliceInferer -> post-process -> write NIfTI; slices/s and peak RSS, each run
              in its own subprocess; 320² and 160²; and ``fusionlungnet predict``'s Predictor on the same series
              (slab streaming, 3D steps, NIfTI, classical second opinion, QC, report) at 320², 160² and the
              ``--fast`` profile's size (128² for the 160² bundle), per series after a 4-slice warm-up case in
              the same process (batch mode's steady state)
- lungmask:   lungmask's R231 U-Net (pip ``lungmask``, random weights: none can be downloaded) on the same
              series through its own ``LMInferer`` pipeline, and its bare forward at 256²
- rss:        peak RSS of the 160² bundle run and of ``fusionlungnet predict`` as the series grows
- train:      training throughput (img/s) at 320², batch 8, with the hybrid loss and deep supervision

Usage: ``python scripts/benchmark.py [--quick] [--json out.json] [--markdown out.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timeit(fn, repeat: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def bench_gemm(n: int, repeat: int) -> dict:
    a, b = torch.rand(n, n), torch.rand(n, n)
    s = timeit(lambda: torch.mm(a, b), repeat)
    return {"n": n, "gflops": 2 * n**3 / s / 1e9}


def count_flops(module, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        module(x)
    return float(fc.get_total_flops())


def bench_forward(size: int, batch: int, repeat: int, channels_last: bool, fused: bool = False) -> dict:
    """The eval forward; ``fused``: BatchNorm folded into the convs, as the bundle's inference runs it."""
    from fusionlungnet_monai import FusionLungNet
    from fusionlungnet_monai.networks import fuse_conv_bn

    torch.manual_seed(0)
    net = FusionLungNet().eval()
    x = torch.rand(batch, 1, size, size)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if fused:
        fuse_conv_bn(net)
    with torch.inference_mode():
        s = timeit(lambda: net(x), repeat)
        enc = timeit(lambda: net.encoder(x), repeat)
    flops = count_flops(net, x[:1])
    return {"size": size, "batch": batch, "channels_last": channels_last, "fused": fused, "s_per_slice": s / batch,
            "slices_per_s": batch / s, "encoder_s_per_slice": enc / batch, "gflop_per_slice": flops / 1e9,
            "achieved_gflops": flops * batch / s / 1e9}


def bench_preprocess(repeat: int) -> dict:
    import numpy as np
    from monai.data import MetaTensor

    from fusionlungnet_monai.transforms import paper_preprocessing

    pre = paper_preprocessing(keys=["image"], spatial_size=(320, 320))
    from fusionlungnet_monai.phantom import make_phantom

    sl = make_phantom(1, size=512, seed=0).image[..., 0].astype(np.float32)
    img = MetaTensor(torch.from_numpy(sl), meta={"filename_or_obj": "slice.dcm", "original_channel_dim": "no_channel"})
    s = timeit(lambda: pre({"image": img.clone()}), repeat)
    return {"ms_per_slice": s * 1000}


# Peak RSS of a child process: VmHWM of its own address space. (ru_maxrss is not usable here: Linux carries it
# over fork+exec, so every child would report at least the parent's peak.)
_PEAK_RSS = r"""
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_E2E_CHILD = _PEAK_RSS + r"""
import json, os, sys, time, torch
from monai.bundle import ConfigWorkflow
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
wf = ConfigWorkflow(config_file=args["config"], workflow_type="inference", bundle_root=args["bundle_root"],
                    input=args["input"], output_dir=args["out"], load_pretrain=args["pretrained"],
                    spatial_size=args["size"], sw_batch_size=args["batch"], logging_file=False)
wf.initialize()
t = time.perf_counter()
wf.run()
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "max_rss_mb": peak_rss_mb()}))
"""


def bench_e2e(series: Path, n: int, size: int, batch: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        arg = {"config": str(ROOT / "bundle" / "configs" / "inference.json"), "bundle_root": str(ROOT / "bundle"),
               "input": str(series), "out": out, "size": [size, size], "batch": batch, "threads": threads,
               # the shipped weights when present: post-processing time and memory depend on the mask (random
               # weights give masks everywhere); the network's speed does not
               "pretrained": (ROOT / "bundle" / "models" / "model.pt").is_file()}
        r = subprocess.run([sys.executable, "-c", _E2E_CHILD, json.dumps(arg)], capture_output=True, text=True,
                           cwd=ROOT / "bundle")
        if r.returncode != 0:
            raise RuntimeError(f"end-to-end run failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
    return {"slices": n, "size": size, "seconds": res["seconds"], "slices_per_s": n / res["seconds"],
            "max_rss_mb": res["max_rss_mb"]}


_PREDICT_CHILD = _PEAK_RSS + r"""
import json, sys, time, torch
from fusionlungnet_monai.predict import Predictor
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
with Predictor(bundle_dir=args["bundle_root"], input_size=args["size"][0], batch_size=args["batch"],
               progress=False) as p:
    p.workflow("volume"), p.volume_steps()  # built before the clock, as the bundle run's initialize
    warm = None
    if args.get("warmup"):  # batch mode's steady state: a first, small case pays the one-time costs
        t = time.perf_counter()
        assert p.predict(args["warmup"], args["out"] + "/warmup").ok
        warm = time.perf_counter() - t
    t = time.perf_counter()
    res = p.predict(args["input"], args["out"])
    elapsed = time.perf_counter() - t
assert res.ok, res.error
print(json.dumps({"seconds": elapsed, "max_rss_mb": peak_rss_mb(), "timings": res.report["timings_s"],
                  "warmup_seconds": warm}))
"""


def bench_predict(series: Path, n: int, size: int, batch: int, threads: int, warmup: Path | None = None) -> dict:
    """``fusionlungnet predict``'s Predictor on the series (shipped weights): slab inference, 3D steps, NIfTI, the
    classical second opinion, QC picture and report; in its own subprocess. With ``warmup`` (a small series), the
    Predictor segments that first, outside the clock: the figure is then batch mode's per-series time, without the
    one-time costs of a process's first case (lazy imports, the first forward's kernel set-up)."""
    with tempfile.TemporaryDirectory() as out:
        arg = {"bundle_root": str(ROOT / "bundle"), "input": str(series), "out": out, "size": [size, size],
               "batch": batch, "threads": threads, "warmup": str(warmup) if warmup else None}
        r = subprocess.run([sys.executable, "-c", _PREDICT_CHILD, json.dumps(arg)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"predict run failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
    return {"slices": n, "size": size, "seconds": res["seconds"], "slices_per_s": n / res["seconds"],
            "max_rss_mb": res["max_rss_mb"], "timings": res["timings"], "warmup_seconds": res["warmup_seconds"]}


_LM_CHILD = _PEAK_RSS + r"""
import json, sys, time, torch
import SimpleITK as sitk
from lungmask.mask import LMInferer
from lungmask.resunet import UNet
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
net = UNet(n_classes=3, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)
torch.save(net.state_dict(), args["weights"])
inf = LMInferer(modelpath=args["weights"], force_cpu=True, batch_size=args["batch"], tqdm_disable=True)
reader = sitk.ImageSeriesReader()
files = reader.GetGDCMSeriesFileNames(args["input"], args["uid"])
reader.SetFileNames(files)
t = time.perf_counter()
img = reader.Execute()
inf.apply(img)
e2e = time.perf_counter() - t
x = torch.rand(args["batch"], 1, 256, 256)
net.eval()
with torch.inference_mode():
    net(x)
    t = time.perf_counter(); net(x); fwd = (time.perf_counter() - t) / args["batch"]
print(json.dumps({"seconds": e2e, "forward_s_per_slice": fwd, "max_rss_mb": peak_rss_mb()}))
"""


def bench_lungmask(series: Path, uid: str, n: int, batch: int, threads: int) -> dict:
    try:
        import lungmask  # noqa: F401
    except ImportError:
        return {"skipped": "pip package lungmask not installed (pip install '.[bench]')"}
    with tempfile.TemporaryDirectory() as tmp:
        arg = {"input": str(series), "uid": uid, "weights": os.path.join(tmp, "r231_random.pth"), "batch": batch,
               "threads": threads}
        r = subprocess.run([sys.executable, "-c", _LM_CHILD, json.dumps(arg)], capture_output=True, text=True)
        if r.returncode != 0:
            return {"skipped": f"lungmask run failed: {r.stderr.strip().splitlines()[-1][:200]}"}
        res = json.loads(r.stdout.strip().splitlines()[-1])
    return {"slices": n, "seconds": res["seconds"], "slices_per_s": n / res["seconds"],
            "forward_slices_per_s": 1 / res["forward_s_per_slice"], "max_rss_mb": res["max_rss_mb"]}


def bench_train(size: int, batch: int, repeat: int) -> dict:
    from fusionlungnet_monai import FusionLungNet, HybridLoss

    torch.manual_seed(0)
    net = FusionLungNet().train()
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    loss_fn = HybridLoss()
    x, y = torch.rand(batch, 1, size, size), (torch.rand(batch, 1, size, size) > 0.5).float()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    s = timeit(step, repeat)
    return {"size": size, "batch": batch, "img_per_s": batch / s}


def make_series(folder: Path, n: int) -> tuple[Path, str]:
    """A 512² phantom DICOM series of ``n`` slices under ``folder`` (reused when already there)."""
    from fusionlungnet_monai.data import select_ct_series
    from fusionlungnet_monai.phantom import write_phantom_case

    series = folder / "dicom" / f"n{n}"
    if not series.exists():
        write_phantom_case(str(folder), f"n{n}", seed=n, num_slices=n, size=512, formats=("dicom",), localizer=False)
    return series, select_ct_series(series).uid


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), "
             f"{m['date']}. Command: `{m['command']}`.", ""]
    lines += [f"- fp32 GEMM (torch.mm {res['gemm']['n']}²): **{res['gemm']['gflops']:.0f} GFLOP/s**", ""]
    lines += ["| forward (eval, inference_mode) | batch | slices/s | encoder share | GFLOP/slice | GFLOP/s | ÷ GEMM |",
              "|---|---|---|---|---|---|---|"]
    for f in res["forward"]:
        kind = ("channels_last" if f["channels_last"] else "eager") + (", BN folded" if f.get("fused") else "")
        lines.append(f"| {f['size']}² {kind} | {f['batch']} | "
                     f"{f['slices_per_s']:.2f} | {f['encoder_s_per_slice'] / f['s_per_slice']:.0%} | "
                     f"{f['gflop_per_slice']:.1f} | {f['achieved_gflops']:.0f} | "
                     f"{f['achieved_gflops'] / res['gemm']['gflops']:.2f} |")
    p = res["preprocess"]
    lines += ["", f"- preprocessing 512²→320² (median, dynamic threshold, artifact removal): "
                  f"{p['ms_per_slice']:.1f} ms/slice = {p['ratio_to_forward']:.3f} × model forward per slice", ""]
    lines += ["| end to end (DICOM series → NIfTI) | slices | slices/s | ÷ bare forward | peak RSS MB |",
              "|---|---|---|---|---|"]
    for e in res["e2e"]:
        lines.append(f"| FusionLungNet {e['size']}² | {e['slices']} | {e['slices_per_s']:.2f} | "
                     f"{e['ratio_to_forward']:.2f} | {e['max_rss_mb']:.0f} |")
    for e in res.get("predict", []):
        lines.append(f"| `fusionlungnet predict` {e['size']}² (slabs; + second opinion, QC, report; after a warm-up "
                     f"case) | {e['slices']} | "
                     f"{e['slices_per_s']:.2f} | {e['ratio_to_forward']:.2f} | {e['max_rss_mb']:.0f} |")
    lm = res.get("lungmask", {})
    if "skipped" in lm:
        lines.append(f"| lungmask R231 256² | – | skipped: {lm['skipped']} | | |")
    elif lm:
        lines.append(f"| lungmask R231 256² (own pipeline, random weights) | {lm['slices']} | "
                     f"{lm['slices_per_s']:.2f} | forward only: {lm['forward_slices_per_s']:.2f} slices/s | "
                     f"{lm['max_rss_mb']:.0f} |")
    lines += ["", "| peak RSS vs series length (160², the default profile) | " + " | ".join(str(r["slices"]) for r in res["rss"]) + " |",
              "|---|" + "---|" * len(res["rss"]),
              "| bundle inference, peak RSS MB | " + " | ".join(f"{r['max_rss_mb']:.0f}" for r in res["rss"]) + " |",
              "| `fusionlungnet predict`, peak RSS MB | "
              + " | ".join(f"{r.get('predict_max_rss_mb', float('nan')):.0f}" for r in res["rss"]) + " |", ""]
    t = res["train"]
    lines.append(f"- training throughput at {t['size']}², batch {t['batch']} (CPU, fp32): {t['img_per_s']:.2f} img/s")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repeat (CI)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--batch", type=int, default=8, help="slices per forward batch")
    p.add_argument("--json", help="write results as JSON here")
    p.add_argument("--markdown", help="write the result tables as markdown here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    q = a.quick
    rep = 1 if q else 3
    res: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "torch": torch.__version__, "threads": a.threads,
                             "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python"] + sys.argv)}}
    res["gemm"] = bench_gemm(512 if q else 2048, rep)
    print(f"gemm {res['gemm']['gflops']:.1f} GFLOP/s", flush=True)
    from fusionlungnet_monai.predict import fast_size

    fast = fast_size(ROOT / "bundle")
    sizes = ([(64, False, False), (64, True, True)] if q else
             [(320, False, False), (320, True, False), (320, True, True), (160, False, False), (160, True, False),
              (160, True, True), (fast, True, True)])
    res["forward"] = [bench_forward(s, 2 if q else a.batch, rep, cl, fu) for s, cl, fu in sizes]
    for f in res["forward"]:
        print(f"forward {f['size']} cl={f['channels_last']} fused={f['fused']}: {f['slices_per_s']:.2f} slices/s",
              flush=True)
    best = {s: max((f for f in res["forward"] if f["size"] == s), key=lambda f: f["slices_per_s"])
            for s in {f["size"] for f in res["forward"]}}
    res["preprocess"] = bench_preprocess(2 if q else 10)
    ref = best.get(320, next(iter(best.values())))
    res["preprocess"]["ratio_to_forward"] = res["preprocess"]["ms_per_slice"] / 1000 / ref["s_per_slice"]
    with tempfile.TemporaryDirectory() as tmp:
        ns = [8] if q else [64, 256]
        res["e2e"] = []
        warm, _ = make_series(Path(tmp), 4)  # predict's warm-up case
        for n in ns:
            series, uid = make_series(Path(tmp), n)
            for size in ([64] if q else [320, 160, fast]):
                base = best.get(size) or bench_forward(size, a.batch, rep, False)
                if size != fast or q:  # the fast profile is a predict option only
                    e = bench_e2e(series, n, size, a.batch, a.threads)
                    e["ratio_to_forward"] = e["slices_per_s"] / base["slices_per_s"]
                    res["e2e"].append(e)
                    print(f"e2e n={n} size={size}: {e['slices_per_s']:.2f} slices/s, {e['max_rss_mb']:.0f} MB",
                          flush=True)
                e = bench_predict(series, n, size, a.batch, a.threads, warmup=warm)
                e["ratio_to_forward"] = e["slices_per_s"] / base["slices_per_s"]
                res.setdefault("predict", []).append(e)
                print(f"predict n={n} size={size}: {e['slices_per_s']:.2f} slices/s, {e['max_rss_mb']:.0f} MB",
                      flush=True)
        series, uid = make_series(Path(tmp), ns[0])
        res["lungmask"] = bench_lungmask(series, uid, ns[0], a.batch, a.threads)
        print("lungmask", res["lungmask"], flush=True)
        res["rss"] = []
        for n in ([8, 16] if q else [100, 200, 400, 600]):
            series, _ = make_series(Path(tmp), n)
            res["rss"].append(bench_e2e(series, n, 64 if q else 160, a.batch, a.threads))
            res["rss"][-1]["predict_max_rss_mb"] = bench_predict(series, n, 64 if q else 160, a.batch,
                                                                 a.threads)["max_rss_mb"]
            print(f"rss n={n}: bundle {res['rss'][-1]['max_rss_mb']:.0f} MB, "
                  f"predict {res['rss'][-1]['predict_max_rss_mb']:.0f} MB", flush=True)
            shutil.rmtree(series)
    res["train"] = bench_train(64 if q else 320, 2 if q else 8, 1 if q else 2)
    print(f"train {res['train']['img_per_s']:.2f} img/s", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    md = markdown(res)
    if a.markdown:
        Path(a.markdown).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
