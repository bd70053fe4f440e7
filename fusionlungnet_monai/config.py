"""Small helpers that the bundle configs call to read their own knobs: booleans, the AMP dtype, and the training
settings' ranges (checked before anything is built, so a bad value is one line, not a traceback from ignite).

``python -m monai.bundle run ... --amp false`` hands the config the *string* ``'false'`` (python-fire parses only
``False``), which Python treats as true. Every boolean knob of the configs is therefore read through
:func:`as_bool`, which accepts ``true/false``, ``True/False``, ``1/0`` (and ``yes/no``, ``on/off``) and stops the
run with a one-line error for anything else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from fusionlungnet_monai.data.errors import InputError
from fusionlungnet_monai.networks.fusionlungnet import ENCODER_STRIDE

__all__ = ["as_bool", "amp_dtype", "default_amp_dtype", "check_training_settings", "check_checkpoint", "check_weights"]

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f", "none", "null", ""}


def as_bool(value: Any, name: str = "value") -> bool:
    """A config knob as a bool: ``True``/``False``, ``1``/``0`` or their spellings as strings.

    Raises:
        InputError: (a ``ValueError``) for anything else, naming the knob: a bundle run ends in that one line.
    """
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InputError(name, f"expected true/false (or 1/0), got {value!r}")


def default_amp_dtype() -> str:
    """``"bfloat16"`` on a CUDA GPU that supports it (Ampere and newer), else ``"float16"``.

    bf16 has float32's exponent range, so FusionLungNet's activations and gradients cannot overflow and no loss
    scaling is needed; fp16 stays selectable (``amp_dtype: "float16"``) for older GPUs.
    """
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float16"


def amp_dtype(name: str | torch.dtype | None = None) -> torch.dtype:
    """The autocast dtype for a config value ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"``/``"half"``, or
    ``None``/``"auto"`` for :func:`default_amp_dtype`.

    Raises:
        InputError: (a ``ValueError``) for any other value.
    """
    if isinstance(name, torch.dtype):
        if name in (torch.bfloat16, torch.float16):
            return name
        name = str(name)
    key = (name or "auto").strip().lower().replace("torch.", "")
    if key == "auto":
        key = default_amp_dtype()
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16}
    if key not in table:
        raise InputError("amp_dtype", f"expected bfloat16 or float16 (or auto), got {name!r}")
    return table[key]


def _whole(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value < low:
        raise InputError(name, f"expected a whole number of at least {low}, got {value!r}")
    return int(value)


def check_training_settings(max_epochs: Any, batch_size: Any, val_batch_size: Any, learning_rate: Any,
                            val_interval: Any, spatial_size: Any, num_workers: Any, resume: bool = False,
                            resume_path: str | os.PathLike | None = None) -> None:
    """Check train.json's settings before the run builds anything (its ``initialize`` calls this): each bad value is
    one line naming its config id, instead of a traceback from ignite, the DataLoader or the optimizer at the first
    epoch.

    Args:
        max_epochs, batch_size, val_batch_size, val_interval: whole numbers, at least 1.
        learning_rate: a positive number.
        spatial_size: the network input, two whole numbers of at least 32 (the encoder divides by 32).
        num_workers: a whole number, at least 0.
        resume: whether the run resumes from ``resume_path``, which must then exist.

    Raises:
        InputError: naming the config id.
    """
    for name, value in (("max_epochs", max_epochs), ("batch_size", batch_size), ("val_batch_size", val_batch_size),
                        ("val_interval", val_interval)):
        _whole(name, value, 1)
    _whole("num_workers", num_workers, 0)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise InputError("learning_rate", f"expected a positive number, got {learning_rate!r}")
    size = list(spatial_size) if isinstance(spatial_size, Sequence) and not isinstance(spatial_size, str) else None
    if size is None or len(size) != 2:
        raise InputError("spatial_size", f"expected two sizes, e.g. [160, 160], got {spatial_size!r}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= ENCODER_STRIDE for n in size):
        raise InputError("spatial_size", f"expected two whole numbers of at least {ENCODER_STRIDE} (the encoder divides "
                                         f"by {ENCODER_STRIDE}), got {spatial_size!r}")
    if resume and (resume_path is None or not os.path.isfile(resume_path)):
        raise InputError(resume_path, "no checkpoint to resume from (resume is true): run once without it, or give "
                                      "--resume_path")


def check_checkpoint(path: str | os.PathLike, option: str = "ckpt_path") -> str:
    """Check that ``path`` holds FusionLungNet weights before a bundle workflow loads them (its ``initialize`` calls
    this), so a missing or foreign file is one line instead of a ``FileNotFoundError`` from inside a handler.

    Args:
        path: a state dict, or a checkpoint holding one under ``"model"``.
        option: the config id that gives the path, for the message.

    Returns:
        the path, as a string.

    Raises:
        InputError: naming the file.
    """
    if not os.path.isfile(path):
        raise InputError(path, f"no weights file here: train first, or give --{option} PATH")
    check_weights(Path(path))
    return str(path)


def check_weights(path: Path) -> None:
    """A FusionLungNet state dict (plain, or a checkpoint holding one under ``"model"``).

    Raises:
        InputError: when the file is not a PyTorch checkpoint or holds another network's weights.
    """
    try:  # memory-mapped: only the keys are looked at here; the workflow loads the tensors once, later
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise InputError(path, f"not a PyTorch weights file ({type(e).__name__})") from None
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if not isinstance(sd, dict) or not any(str(k).startswith("encoder.conv1") for k in sd) or \
            not any(str(k).startswith(("caa.", "fuse2.")) for k in sd):
        raise InputError(path, "does not hold FusionLungNet weights (a state dict with encoder/caa/fuse keys)")
