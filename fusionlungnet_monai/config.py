"""Small helpers that the bundle configs call to read their own knobs: booleans and the AMP dtype.

``python -m monai.bundle run ... --amp false`` hands the config the *string* ``'false'`` (python-fire parses only
``False``), which Python treats as true. Every boolean knob of the configs is therefore read through
:func:`as_bool`, which accepts ``true/false``, ``True/False``, ``1/0`` (and ``yes/no``, ``on/off``) and stops the
run with a one-line error for anything else.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["as_bool", "amp_dtype", "default_amp_dtype"]

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f", "none", "null", ""}


def as_bool(value: Any, name: str = "value") -> bool:
    """A config knob as a bool: ``True``/``False``, ``1``/``0`` or their spellings as strings.

    Raises:
        ValueError: for anything else, naming the knob.
    """
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name}: expected true/false (or 1/0), got {value!r}")


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
        ValueError: for any other value.
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
        raise ValueError(f"amp_dtype: expected bfloat16 or float16 (or auto), got {name!r}")
    return table[key]
