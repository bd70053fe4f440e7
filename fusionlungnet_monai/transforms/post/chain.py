"""The network's output to a binary mask, defined once: training, validation, evaluation and inference threshold
the probability at the same value."""

from __future__ import annotations

from monai.transforms import Activationsd, AsDiscreted, Compose, Lambdad

__all__ = ["MASK_THRESHOLD", "LogitsToMaskd", "main_output"]

#: a pixel is lung where the network's probability is at least this
MASK_THRESHOLD = 0.5


def main_output(pred):
    """The main output of a deep-supervised network (the first of its list of outputs); any other output as it is."""
    return pred[0] if isinstance(pred, (list, tuple)) else pred


class LogitsToMaskd(Compose):
    """The network's logits under ``keys`` to a binary mask: its main output (:func:`main_output`), sigmoid, then
    the threshold :data:`MASK_THRESHOLD` (MONAI ``Lambdad``, ``Activationsd``, ``AsDiscreted``).

    Args:
        keys: the prediction's key.
        threshold: probability threshold.
        dtype: the mask's dtype (``None``: the probability's float type).
    """

    def __init__(self, keys: str = "pred", threshold: float = MASK_THRESHOLD, dtype=None) -> None:
        super().__init__([Lambdad(keys, func=main_output), Activationsd(keys, sigmoid=True),
                          AsDiscreted(keys, threshold=threshold, **({} if dtype is None else {"dtype": dtype}))])
