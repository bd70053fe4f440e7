"""The paper's six segmentation metrics (§5.2) for binary masks, on MONAI's confusion-matrix metric.

IoU, F1 (Dice), Precision, Recall, Accuracy and MCC, with the two aggregations used in the literature:

- ``"mean"``: the metric of every image, averaged over images (what the paper's tables most likely report);
- ``"global"``: confusion matrices pooled over all pixels of the set, then one metric.

Empty masks: a metric whose denominator is 0 (e.g. precision with an empty prediction, recall with an empty
ground truth, IoU/F1 with both empty) is **1 when the prediction has no error (FP + FN = 0), else 0**. So an
all-background image predicted all-background scores 1 everywhere, and no NaN reaches a summary.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import CumulativeIterationMetric, get_confusion_matrix
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric

__all__ = ["METRIC_NAMES", "BinarySegmentationMetric", "SegmentationMetricHandler", "metrics_from_confusion",
           "compute_segmentation_metrics", "metric_handlers"]

#: our metric names -> MONAI confusion-matrix metric names
METRIC_NAMES = {
    "iou": "threat score",
    "f1": "f1 score",
    "precision": "precision",
    "recall": "sensitivity",
    "accuracy": "accuracy",
    "mcc": "matthews correlation coefficient",
}


def metrics_from_confusion(confusion: torch.Tensor, metric_name: str) -> torch.Tensor:
    """Metric values from confusion matrices ``(..., 4)`` ordered ``[tp, fp, tn, fn]`` (MONAI's order),
    with the documented value for zero denominators."""
    if metric_name not in METRIC_NAMES:
        raise ValueError(f"metric_name must be one of {sorted(METRIC_NAMES)}, got {metric_name!r}.")
    confusion = confusion.double()
    value = compute_confusion_matrix_metric(METRIC_NAMES[metric_name], confusion)
    no_error = (confusion[..., 1] + confusion[..., 3]) == 0
    return torch.where(torch.isnan(value), no_error.double(), value)


def _binary(x: torch.Tensor) -> torch.Tensor:
    return (x > 0.5).float() if x.is_floating_point() else (x > 0).float()


class BinarySegmentationMetric(CumulativeIterationMetric):
    """One of the six metrics, accumulated over iterations (usable in MONAI evaluators and ignite).

    Args:
        metric_name: ``iou`` | ``f1`` | ``precision`` | ``recall`` | ``accuracy`` | ``mcc``.
        aggregation: ``"mean"`` (per image, averaged) or ``"global"`` (pixels pooled over the set).

    ``y_pred`` and ``y`` are binary masks ``(B, C, *spatial)`` (floats are thresholded at 0.5); channels are
    scored separately and averaged.
    """

    def __init__(self, metric_name: str = "iou", aggregation: str = "mean") -> None:
        super().__init__()
        if metric_name not in METRIC_NAMES:
            raise ValueError(f"metric_name must be one of {sorted(METRIC_NAMES)}, got {metric_name!r}.")
        if aggregation not in ("mean", "global"):
            raise ValueError(f"aggregation must be 'mean' or 'global', got {aggregation!r}.")
        self.metric_name, self.aggregation = metric_name, aggregation

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if y_pred.shape != y.shape:
            raise ValueError(f"y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)} must have the same shape.")
        return get_confusion_matrix(_binary(y_pred), _binary(y), include_background=True)  # (B, C, 4)

    def confusion(self) -> torch.Tensor:
        """All accumulated confusion matrices, ``(N, C, 4)``."""
        buf = super().get_buffer()
        return buf if isinstance(buf, torch.Tensor) else torch.zeros(0, 1, 4)

    def get_buffer(self) -> torch.Tensor:  # type: ignore[override]
        """Per-image scores ``(N, C)`` (what MONAI's ``MetricsSaver`` writes as metric details)."""
        return metrics_from_confusion(self.confusion(), self.metric_name).float()

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        conf = self.confusion()
        if conf.shape[0] == 0:
            raise ValueError("no data was accumulated: call the metric on predictions first.")
        if self.aggregation == "global":
            return metrics_from_confusion(conf.sum(0), self.metric_name).mean().float()
        return metrics_from_confusion(conf, self.metric_name).mean().float()


class SegmentationMetricHandler(IgniteMetricHandler):
    """Ignite/MONAI handler for :class:`BinarySegmentationMetric` (attach to evaluators, use as key metric).

    Args:
        metric_name: one of :data:`METRIC_NAMES`.
        aggregation: ``"mean"`` or ``"global"``.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: keep per-image scores in ``engine.state.metric_details`` (for ``MetricsSaver``).
    """

    def __init__(self, metric_name: str = "iou", aggregation: str = "mean",
                 output_transform: Callable = lambda x: x, save_details: bool = True) -> None:
        super().__init__(metric_fn=BinarySegmentationMetric(metric_name, aggregation),
                         output_transform=output_transform, save_details=save_details)


def metric_handlers(names: Sequence[str] | None = None, exclude: Sequence[str] = (), aggregation: str = "mean",
                    pred_key: str = "pred", label_key: str = "label") -> dict[str, SegmentationMetricHandler]:
    """The metric handlers of a training's validation or an evaluation, by the names MONAI's workflows log them
    under: ``val_<name>``, ``val_<name>_global`` for the ``"global"`` aggregation.

    Args:
        names: metric names (default: all six of :data:`METRIC_NAMES`, in the paper's order).
        exclude: names to leave out (e.g. the key metric, given on its own).
        aggregation: ``"mean"`` or ``"global"``.
        pred_key, label_key: where the prediction and the reference mask are in the engine's output.

    Returns:
        ``{handler name: SegmentationMetricHandler}``, for ``key_val_metric`` or ``additional_metrics``.

    Raises:
        ValueError: for an unknown metric name.
    """
    chosen = [n for n in (METRIC_NAMES if names is None else names) if n not in exclude]
    unknown = sorted(set(chosen) - set(METRIC_NAMES))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRIC_NAMES)}.")
    suffix = "" if aggregation == "mean" else f"_{aggregation}"
    return {f"val_{n}{suffix}": SegmentationMetricHandler(n, aggregation, from_engine([pred_key, label_key]))
            for n in chosen}


def compute_segmentation_metrics(y_pred: torch.Tensor | Sequence[torch.Tensor], y: torch.Tensor | Sequence[torch.Tensor],
                                 names: Sequence[str] = tuple(METRIC_NAMES)) -> dict[str, Any]:
    """All metrics, both aggregations, for a set of binary masks.

    Args:
        y_pred: predictions, a batch ``(B, C, *spatial)`` or a list of ``(C, *spatial)`` tensors (sizes may differ).
        y: ground truths, same structure.
        names: metric names.

    Returns:
        ``{"mean": {name: float}, "global": {name: float}, "per_image": {name: [float per image]}}``.
    """
    metric = BinarySegmentationMetric()
    if isinstance(y_pred, torch.Tensor) and isinstance(y, torch.Tensor):
        metric(y_pred, y)
    else:
        if len(y_pred) != len(y):
            raise ValueError(f"got {len(y_pred)} predictions and {len(y)} ground truths.")
        for p, g in zip(y_pred, y):
            metric(torch.as_tensor(p)[None], torch.as_tensor(g)[None])
    conf = metric.confusion()
    out: dict[str, Any] = {"mean": {}, "global": {}, "per_image": {}}
    for name in names:
        per = metrics_from_confusion(conf, name).mean(1)
        out["per_image"][name] = per.tolist()
        out["mean"][name] = float(per.mean())
        out["global"][name] = float(metrics_from_confusion(conf.sum(0), name).mean())
    return out

