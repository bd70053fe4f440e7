"""The ``fusionlungnet`` command line (also ``python -m fusionlungnet_monai``)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist

from fusionlungnet_monai.data.checks import check_output_dir
from fusionlungnet_monai.data.errors import InputError
from fusionlungnet_monai.outputs import write_json
from fusionlungnet_monai.outputs.lock import output_lock, remove_stale_partials
from fusionlungnet_monai.phantom import write_phantom_case
from fusionlungnet_monai.predict import CaseResult, Predictor, case_name, list_cases
from fusionlungnet_monai.version import __version__

__all__ = ["main", "build_parser"]


def _int_at_least(low: int):
    """An argparse ``type``: a whole number of at least ``low`` (argparse then says which option is wrong)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}")
        return value

    return parse


def _phantom_formats(text: str) -> tuple[str, ...]:
    """An argparse ``type``: a comma list of ``dicom``, ``nifti``, ``png``."""
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = sorted(set(formats) - {"dicom", "nifti", "png"})
    if bad or not formats:
        raise argparse.ArgumentTypeError(f"expected a comma list of dicom, nifti, png, got {text!r}")
    return formats


def _case_prefix(text: str) -> str:
    """An argparse ``type``: a case id prefix, which names files and folders, so without path separators."""
    if "/" in text or "\\" in text:
        raise argparse.ArgumentTypeError(f"a case id prefix names files: no path separators, got {text!r}")
    return text


def _cmd_phantom(args: argparse.Namespace) -> int:
    for i in range(args.cases):
        case_id = f"{args.prefix}{i:03d}"
        res = write_phantom_case(
            args.output,
            case_id=case_id,
            seed=args.seed + i,
            num_slices=args.slices,
            size=args.size,
            formats=args.formats,
            localizer=not args.no_localizer,
            png_every=args.png_every,
            overwrite=args.overwrite,
        )
        print(f"{case_id}: {args.slices} slices, lung volume {res['phantom'].lung_volume_ml:.1f} mL -> {args.output}")
    return 0


def _earlier_result(case, case_out: Path):
    """The result of an earlier run of ``case`` in ``case_out`` (its readable ``report.json``), or ``None``."""

    try:
        report = json.loads((case_out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return CaseResult(input=str(case), ok=True, report={**report, "kept_from_earlier_run": True})


def _write_summary(out: Path, results: list, skipped: list, interrupted: bool) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    summary = {"cases": len(results), "ok": sum(r.ok for r in results), "failed": sum(not r.ok for r in results),
               "interrupted": interrupted,
               "results": [{"input": r.input, "ok": r.ok, "error": r.error,
                            "volumes_ml": r.report.get("volumes_ml"), "warnings": r.report.get("warnings", [])}
                           for r in results],
               "skipped": [{"input": str(p), "reason": why} for p, why in skipped]}
    write_json(summary, out / "summary.json")
    return out / "summary.json"


def _init_distributed(args: argparse.Namespace) -> tuple[int, int]:
    """Under ``torchrun`` with ``--distributed``: join the process group (NCCL on GPUs, gloo on CPU) and pick this
    process's GPU. Returns ``(rank, world_size)``; ``(0, 1)`` otherwise."""

    if not getattr(args, "distributed", False):
        return 0, 1

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise InputError(None, "--distributed needs torchrun (torchrun --nproc_per_node N -m fusionlungnet_monai "
                               "predict ... --distributed)")

    cuda = args.device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
    return dist.get_rank(), dist.get_world_size()


def _gather(results: list, interrupted: bool, n_cases: int) -> tuple[list, bool, int]:
    """All processes' results, in case order, with the run's interrupted flag and case count."""

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (results, interrupted, n_cases))
    # rank r held cases r, r + world, ...: interleaving the ranks' lists restores the folder's order
    longest = max(len(p[0]) for p in parts)
    merged = [p[0][i] for i in range(longest) for p in parts if i < len(p[0])]
    dist.destroy_process_group()
    return merged, any(p[1] for p in parts), sum(p[2] for p in parts)


def _cmd_predict(args: argparse.Namespace) -> int:


    inp, out = Path(args.input), Path(args.output)
    if args.skip_existing and args.overwrite:
        raise InputError(None, "--skip-existing and --overwrite exclude each other")
    skipped: list = []
    cases = list_cases(inp, skipped)
    created = not out.exists() and not getattr(args, "distributed", False)  # torchrun: the processes share it
    check_output_dir(out, inputs=(inp,))  # an output inside the input, or unwritable, is a usage error (exit 2)
    try:
        return _predict_into(args, inp, out, cases, skipped)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a refused run leaves no empty output folder behind


def _predict_into(args, inp, out, cases, skipped) -> int:
    """:func:`_cmd_predict` once the cases are listed and the output folder exists."""

    batch = len(cases) > 1 or inp.resolve() != cases[0].resolve()
    names = [case_name(c) for c in cases]
    counts = {n: names.count(n) for n in names}  # two inputs never write to the same output (a.nii.gz, a.png)
    names = [n if counts[n] == 1 else c.name.replace(".", "_") for n, c in zip(names, cases)]
    rank, world = _init_distributed(args)
    if world > 1:  # each process takes every world-th case; rank 0 merges the results into one summary
        batch = True
        cases, names = cases[rank::world], names[rank::world]
        skipped = skipped if rank == 0 else []
        args.no_progress = True
    formats = {"nifti"} | set(args.format or [])
    if "dicom-seg" in formats:
        if importlib.util.find_spec("highdicom") is None:  # before the run, not after it
            raise InputError(None, "--format dicom-seg needs the highdicom package (pip install highdicom, or "
                                   "reinstall fusionlungnet-monai, which requires it)")
    with _run_lock(out, args.overwrite, rank, world):
        return _run_cases(args, out, cases, names, skipped, batch, rank, world, formats)


def _run_lock(out, overwrite: bool, rank: int, world: int):
    """The output folder's lock for this run (:func:`~fusionlungnet_monai.outputs.lock.output_lock`): taken by
    rank 0 of a distributed run, whose other processes learn whether it was, and refuse with it."""

    stack, error = contextlib.ExitStack(), None
    if rank == 0:
        try:
            stack.enter_context(output_lock(out, wait=overwrite))
            remove_stale_partials(out)  # the folder is this run's now: what a killed run left is garbage
        except Exception as e:  # noqa: BLE001  handed to every process below
            if world == 1:
                raise
            error = e
    if world == 1:
        return stack

    shared = [error]
    dist.broadcast_object_list(shared, src=0)
    if shared[0] is not None:
        raise shared[0]
    return stack


def _run_cases(args, out, cases, names, skipped, batch, rank, world, formats) -> int:
    """Segment ``cases`` into ``out`` (the output folder locked), print each result, write the batch summary;
    returns the exit code."""

    for p, why in skipped:
        print(f"skipped {p}: {why}", file=sys.stderr)
    results: list = []
    interrupted = False
    try:
        with Predictor(args.bundle, args.model, args.device, args.batch_size, args.fast, args.series_uid,
                       args.split_lr, sorted(formats), progress=not args.no_progress,
                       input_size=args.input_size, slab_slices=args.slab_slices,
                       refine=not args.no_refine, remove_airways=not args.keep_airways,
                       picture_polarity=args.picture_polarity) as predictor:
            iterator = cases
            if batch and not args.no_progress:
                from tqdm import tqdm

                iterator = tqdm(cases, desc="cases", unit="case")
            for case, name in zip(iterator, names):
                case_out = out / name if batch else out
                kept = _earlier_result(case, case_out) if args.skip_existing else None
                if kept is not None:
                    results.append(kept)
                    print(f"kept    {case} -> {case_out} (done in an earlier run)")
                    continue
                try:
                    res = predictor.predict(case, case_out, overwrite=args.overwrite)
                except KeyboardInterrupt:
                    done = predictor.last_done  # interrupted as predict returned: its files are all in place
                    finished = done is not None and done.input == str(case)
                    results.append(done if finished else CaseResult(input=str(case), error=f"{case}: interrupted"))
                    raise
                results.append(res)
                if res.ok:
                    total = res.report.get("volumes_ml", {}).get("total_ml")
                    vol = f", lungs {total:.0f} mL" if total is not None else ""
                    print(f"ok      {case}{vol} -> {case_out}")
                    for w in res.report.get("warnings", []):
                        print(f"warning {case}: {w}")
                elif batch and res.nothing_to_segment:
                    print(f"skipped {case}: {res.nothing_to_segment}", file=sys.stderr)
                elif not batch and res.input_error:  # the one input refused: an input error, as before the run
                    print(f"error: {res.error}", file=sys.stderr)
                    return 2
                else:
                    print(f"FAILED  {res.error}", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: the current case was not written; finished cases are kept", file=sys.stderr)
    n_cases = len(cases)
    if world > 1:
        results, interrupted, n_cases = _gather(results, interrupted, n_cases)
    empty = [r for r in results if r.nothing_to_segment] if batch else []
    if empty:  # a study's localizer, reformat or report folders: skipped, not failed
        results = [r for r in results if not r.nothing_to_segment]
        skipped = skipped + [(Path(r.input), r.nothing_to_segment) for r in empty]
    failed = [r for r in results if not r.ok]
    done = len(results) - len(failed)
    if batch and rank == 0:
        path = _write_summary(out, results, skipped, interrupted)
        print(f"{done} of {n_cases} cases done, {len(failed)} failed"
              f"{f', {len(empty)} skipped (no CT volume to segment)' if empty else ''}"
              f"{', interrupted' if interrupted else ''}; summary: {path}")
    if interrupted:
        return 130
    return 1 if failed or not done else 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with all subcommands."""
    p = argparse.ArgumentParser(
        prog="fusionlungnet",
        description="FusionLungNet lung CT segmentation (MONAI bundle) command line.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  fusionlungnet phantom outputs/phantoms --cases 2 --slices 32\n",
    )
    p.add_argument("--version", action="version", version=f"fusionlungnet-monai {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    ph = sub.add_parser(
        "phantom",
        help="write synthetic chest-CT phantoms with exact lung masks",
        description="Write deterministic chest-CT phantoms as a DICOM series (+ localizer), NIfTI and PNG slices.",
        epilog="example: fusionlungnet phantom outputs/phantoms --cases 3 --slices 48 --formats dicom,png",
    )
    ph.add_argument("output", help="output folder (created)")
    ph.add_argument("--cases", type=_int_at_least(1), default=1, help="number of phantoms (default 1)")
    ph.add_argument("--slices", type=_int_at_least(1), default=64, help="axial slices per phantom (default 64)")
    ph.add_argument("--size", type=_int_at_least(64), default=512, help="in-plane matrix size (default 512)")
    ph.add_argument("--seed", type=_int_at_least(0), default=0,
                    help="seed of the first case; case i uses seed+i (default 0)")
    ph.add_argument("--formats", type=_phantom_formats, default=("dicom", "nifti", "png"),
                    help="comma list of dicom,nifti,png (default all)")
    ph.add_argument("--png-every", type=_int_at_least(1), default=1, help="write every n-th slice as PNG (default 1)")
    ph.add_argument("--prefix", type=_case_prefix, default="phantom", help="case id prefix (default 'phantom')")
    ph.add_argument("--no-localizer", action="store_true", help="do not add a localizer series to the DICOM folder")
    ph.add_argument("--overwrite", action="store_true", help="replace existing files")
    ph.set_defaults(func=_cmd_phantom)

    pr = sub.add_parser(
        "predict",
        help="segment the lungs of a DICOM series, DICOM file, NIfTI, PNG/JPG, or a folder of cases",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Lung masks with the bundle's inference workflow, plus 3D post-processing (two largest "
                    "components, hole filling), lung volumes (mL), a QC picture, optional DICOM SEG and report.json.",
        epilog="examples:\n"
               "  fusionlungnet predict /data/ct/patient01 out/patient01            # DICOM series folder\n"
               "  fusionlungnet predict scan.nii.gz out/scan --split-lr            # right/left labels\n"
               "  fusionlungnet predict /data/ct/patient01 out/p01 --format dicom-seg\n"
               "  fusionlungnet predict /data/all_cases out/all --fast             # batch: one sub-folder/file per case\n"
               "  fusionlungnet predict slice.png out/slice                        # PNG in, PNG mask out\n"
               "outputs per case: lungmask.nii.gz (or .png), report.json, qc.png, seg.dcm (with --format dicom-seg)\n"
               "exit codes: 0 all cases done, 1 some cases failed, 2 usage or input error, 130 interrupted",
    )
    pr.add_argument("input", help="DICOM series folder, DICOM file, NIfTI/MHA, PNG/JPG, or a folder of such cases")
    pr.add_argument("output", help="output folder (one sub-folder per case in batch mode); inputs are never overwritten")
    pr.add_argument("--bundle", help="bundle folder (default: $FUSIONLUNGNET_BUNDLE or this repository's bundle/)")
    pr.add_argument("--model", help="trained weights (state dict); default <bundle>/models/model.pt")
    pr.add_argument("--device", default="cpu", help="cpu or cuda (default cpu), e.g. --device cuda:0")
    pr.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    pr.add_argument("--slab-slices", type=int, default=64,
                    help="slices per slab: volumes are segmented slab by slab, so memory grows with the series only "
                         "by the image and a uint8 mask (default 64; the mask does not depend on it)")
    pr.add_argument("--series-uid", help="SeriesInstanceUID to segment when a folder holds several series")
    pr.add_argument("--format", action="append", choices=["nifti", "png", "dicom-seg"],
                    help="extra outputs; repeatable. dicom-seg writes a DICOM SEG referencing the source series")
    pr.add_argument("--split-lr", action="store_true", help="label 1 = right lung, 2 = left lung")
    pr.add_argument("--fast", action="store_true",
                    help="the network at 0.8x the bundle's input size (128x128 for the shipped 160x160 weights): about "
                         "1.4x faster end to end, IoU about 0.005-0.01 lower (docs/validation.md)")
    pr.add_argument("--input-size", type=int, help="network input size when the weights were trained at a size other "
                                                   "than the bundle's spatial_size (e.g. 96 for the demo's weights)")
    pr.add_argument("--no-refine", action="store_true",
                    help="the network's mask alone: no HU boundary refinement (the bundle's refine_boundary step, "
                         "which re-decides the network's blurred lung border by the CT's HU)")
    pr.add_argument("--keep-airways", action="store_true",
                    help="no airway removal (the bundle's remove_airways step, which takes the trachea and main "
                         "bronchi, found in the CT's HU, out of the lung mask)")
    pr.add_argument("--picture-polarity", choices=["auto", "normal", "inverted"], default="auto",
                    help="PNG/JPG input: auto (default) detects a picture exported inverted (air bright) and reads it "
                         "inverted, saying so in report.json; normal or inverted say which it is")
    pr.add_argument("--no-progress", action="store_true", help="no progress bars")
    pr.add_argument("--overwrite", action="store_true",
                    help="replace results of an earlier run in the output folder (default: keep them, report an error)")
    pr.add_argument("--skip-existing", action="store_true",
                    help="resume: keep the cases whose output folder holds a report.json of an earlier run "
                         "(listed as ok in summary.json, not segmented again)")
    pr.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    pr.add_argument("--distributed", action="store_true",
                    help="under torchrun: shard the cases across processes/GPUs (gloo on CPU, NCCL with --device "
                         "cuda); one merged summary.json from rank 0")
    pr.set_defaults(func=_cmd_predict)
    return p


def _sigterm_as_interrupt(signum, frame):  # SIGTERM ends the run like Ctrl-C: clean up, write the summary
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 1 some cases failed, 2 usage/input error, 130 interrupted)."""

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False)
    # the run's log levels, put back afterwards (main() called in-process leaves the caller's logging as it was);
    # MONAI's optional GPU DICOM decoder announces its absence on every import: not news on the command line
    levels = {"fusionlungnet_monai": logging.WARNING, "monai.data.nvimgcodec_pydicom_plugin": logging.ERROR}
    loggers = {name: logging.getLogger(name) for name in levels}
    before = {name: log.level for name, log in loggers.items()}
    for name, log in loggers.items():
        log.setLevel(logging.DEBUG if debug else levels[name])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for name, log in loggers.items():
            log.setLevel(before[name])
