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
