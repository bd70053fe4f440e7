#!/usr/bin/env python
"""Write a MONAI decathlon-style datalist JSON from DATASET/images + DATASET/masks (matched by file stem)."""

import argparse
import json

from fusionlungnet_monai.data import make_datalist


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dataset", help="folder holding images/ and masks/")
    p.add_argument("--output", help="datalist path (default DATASET/datalist.json)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args()
    out = a.output or f"{a.dataset}/datalist.json"
    dl = make_datalist(a.dataset, out, a.val_fraction, a.test_fraction, overwrite=a.overwrite)
    print(json.dumps({k: len(v) for k, v in dl.items()}), "->", out)


if __name__ == "__main__":
    main()
