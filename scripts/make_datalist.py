#!/usr/bin/env python
"""Write a MONAI decathlon-style datalist JSON from DATASET/images + DATASET/masks (matched by file stem)."""

import argparse
import json
import sys

from fusionlungnet_monai.data import InputError, make_datalist
from fusionlungnet_monai.data.datalist import check_fraction


def fraction(text: str) -> float:
    """An argparse ``type``: a fraction in [0, 1) (:func:`check_fraction`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    try:
        return check_fraction(value, "the share")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main() -> None:
    """Parse the arguments, write the datalist, print its section sizes (exit 1 with one line on bad input)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dataset", help="folder holding images/ and masks/")
    p.add_argument("--output", help="datalist path (default DATASET/datalist.json)")
    p.add_argument("--val-fraction", type=fraction, default=0.2, help="share of patients for validation (default 0.2)")
    p.add_argument("--test-fraction", type=fraction, default=0.0, help="share of patients for testing (default 0)")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args()
    out = a.output or f"{a.dataset}/datalist.json"
    try:
        dl = make_datalist(a.dataset, out, a.val_fraction, a.test_fraction, overwrite=a.overwrite)
    except (InputError, ValueError) as e:  # one line naming the folder or file, no traceback
        sys.exit(f"error: {e}")
    print(json.dumps({k: len(v) for k, v in dl.items()}), "->", out)


if __name__ == "__main__":
    main()
