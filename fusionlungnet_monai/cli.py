"""The ``fusionlungnet`` command line (also ``python -m fusionlungnet_monai``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fusionlungnet_monai.version import __version__

__all__ = ["main", "build_parser"]


def _cmd_phantom(args: argparse.Namespace) -> int:
    from fusionlungnet_monai.data.phantom import write_phantom_case

    for i in range(args.cases):
        case_id = f"{args.prefix}{i:03d}"
        res = write_phantom_case(
            args.output,
            case_id=case_id,
            seed=args.seed + i,
            num_slices=args.slices,
            size=args.size,
            formats=tuple(args.formats.split(",")),
            localizer=not args.no_localizer,
            png_every=args.png_every,
            overwrite=args.overwrite,
        )
        print(f"{case_id}: {args.slices} slices, lung volume {res['phantom'].lung_volume_ml:.1f} mL -> {args.output}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fusionlungnet_monai.predict import Predictor, case_name, list_cases

    cases = list_cases(args.input)
    out = Path(args.output)
    formats = {"nifti"} | set(args.format or [])
    with Predictor(args.bundle, args.model, args.device, args.batch_size, args.fast, args.series_uid, args.split_lr,
                   sorted(formats), progress=not args.no_progress, input_size=args.input_size) as predictor:
        batch = len(cases) > 1 or Path(args.input).resolve() != cases[0].resolve()
        results = []
        iterator = cases
        if batch and not args.no_progress:
            from tqdm import tqdm

            iterator = tqdm(cases, desc="cases", unit="case")
        for case in iterator:
            case_out = out / case_name(case) if batch else out
            res = predictor.predict(case, case_out)
            results.append(res)
            if res.ok:
                total = res.report.get("volumes_ml", {}).get("total_ml")
                vol = f", lungs {total:.0f} mL" if total is not None else ""
                print(f"ok      {case}{vol} -> {case_out}")
                for w in res.report.get("warnings", []):
                    print(f"warning {case}: {w}")
            else:
                print(f"FAILED  {res.error}", file=sys.stderr)
    failed = [r for r in results if not r.ok]
    if batch:
        (out / "summary.json").write_text(json.dumps(
            {"cases": len(results), "failed": len(failed),
             "results": [{"input": r.input, "ok": r.ok, "error": r.error,
                          "volumes_ml": r.report.get("volumes_ml")} for r in results]}, indent=1))
        print(f"{len(results) - len(failed)} of {len(results)} cases done, {len(failed)} failed; summary: "
              f"{out / 'summary.json'}")
    return 1 if failed else 0


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
    ph.add_argument("--cases", type=int, default=1, help="number of phantoms (default 1)")
    ph.add_argument("--slices", type=int, default=64, help="axial slices per phantom (default 64)")
    ph.add_argument("--size", type=int, default=512, help="in-plane matrix size (default 512)")
    ph.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed+i (default 0)")
    ph.add_argument("--formats", default="dicom,nifti,png", help="comma list of dicom,nifti,png (default all)")
    ph.add_argument("--png-every", type=int, default=1, help="write every n-th slice as PNG (default 1)")
    ph.add_argument("--prefix", default="phantom", help="case id prefix (default 'phantom')")
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
               "outputs per case: lungmask.nii.gz (or .png), report.json, qc.png, seg.dcm (with --format dicom-seg)",
    )
    pr.add_argument("input", help="DICOM series folder, DICOM file, NIfTI/MHA, PNG/JPG, or a folder of such cases")
    pr.add_argument("output", help="output folder (one sub-folder per case in batch mode); inputs are never overwritten")
    pr.add_argument("--bundle", help="bundle folder (default: $FUSIONLUNGNET_BUNDLE or this repository's bundle/)")
    pr.add_argument("--model", help="trained weights (state dict); default <bundle>/models/model.pt")
    pr.add_argument("--device", default="cpu", help="cpu or cuda (default cpu), e.g. --device cuda:0")
    pr.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    pr.add_argument("--series-uid", help="SeriesInstanceUID to segment when a folder holds several series")
    pr.add_argument("--format", action="append", choices=["nifti", "png", "dicom-seg"],
                    help="extra outputs; repeatable. dicom-seg writes a DICOM SEG referencing the source series")
    pr.add_argument("--split-lr", action="store_true", help="label 1 = right lung, 2 = left lung")
    pr.add_argument("--fast", action="store_true",
                    help="160x160 network input: ~6x fewer FLOPs, slightly lower accuracy (paper Table 5)")
    pr.add_argument("--input-size", type=int, help="network input size when the weights were trained at a size other "
                                                   "than the bundle's spatial_size (e.g. 96 for the demo's weights)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bars")
    pr.set_defaults(func=_cmd_predict)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from fusionlungnet_monai.data.errors import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
