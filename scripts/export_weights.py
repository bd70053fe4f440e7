"""Export a trained checkpoint as the shipped weights: an fp16 state dict (floating tensors halved), its sha256.

Usage: python scripts/export_weights.py RUN/models/model.pt OUT.pt
Loading casts back: ``FusionLungNet(...).load_state_dict(torch.load(OUT.pt))`` copies fp16 into the fp32 model.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch


def export(src: str, dst: str) -> str:
    sd = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    half = {k: (v.half() if torch.is_floating_point(v) else v) for k, v in sd.items()}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{dst}.tmp")
    torch.save(half, tmp)
    tmp.replace(dst)
    digest = hashlib.sha256(Path(dst).read_bytes()).hexdigest()
    print(f"{dst}: {Path(dst).stat().st_size / 1e6:.1f} MB, sha256 {digest}")
    return digest


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    export(sys.argv[1], sys.argv[2])
