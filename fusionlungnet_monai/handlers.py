"""Ignite handlers: the evaluation report (per-image CSV + summary JSON) and precise BatchNorm statistics."""

from __future__ import annotations

import csv
import json
import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EvaluationReport", "PreciseBatchNorm"]


def _names(batch) -> list[str]:
    """Source file names of a batch: MONAI engines decollate it into a list of per-image dicts."""
    items = batch if isinstance(batch, (list, tuple)) else [batch]
    out = []
    for item in items:
        img = item.get("image") if isinstance(item, dict) else None
        name = (getattr(img, "meta", None) or {}).get("filename_or_obj", "")
        out.extend(name if isinstance(name, (list, tuple)) else [name])
    return [str(n) for n in out]


class EvaluationReport:
    """Write ``per_image.csv`` (file name + each per-image metric) and ``summary.json``
    (every metric the evaluator computed, e.g. ``val_iou`` mean-of-images and ``val_iou_global`` pooled).

    Attach to a MONAI ``SupervisedEvaluator``; the metric handlers need ``save_details=True`` (the default of
    :class:`~fusionlungnet_monai.metrics.SegmentationMetricHandler`).

    Args:
        output_dir: folder for the two files (created).
        per_image_filename: CSV file name.
        summary_filename: JSON file name.
    """

    def __init__(self, output_dir: str, per_image_filename: str = "per_image.csv",
                 summary_filename: str = "summary.json") -> None:
        self.output_dir, self.per_image_filename, self.summary_filename = output_dir, per_image_filename, summary_filename
        self._files: list[str] = []

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self._files.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self._files.extend(_names(e.state.batch)))
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        details = {k: v for k, v in (getattr(engine.state, "metric_details", None) or {}).items()
                   if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == len(self._files)
                   and not k.endswith("_global")}  # pooled metrics have no per-image value
        names = sorted(details)
        with open(os.path.join(self.output_dir, self.per_image_filename), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", *names])
            for i, fn in enumerate(self._files):
                w.writerow([fn, *(f"{float(details[n][i].float().mean()):.6f}" for n in names)])
        summary = {k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float, torch.Tensor))}
        summary["num_images"] = len(self._files)
        with open(os.path.join(self.output_dir, self.summary_filename), "w") as f:
            json.dump(summary, f, indent=1)


class PreciseBatchNorm:
    """Recompute BatchNorm running statistics over ``num_batches`` training batches at the end of an epoch
    (cumulative average, weights frozen; "precise BN", Wu & Johnson 2021).

    Short runs (a few hundred iterations, e.g. on a laptop CPU) change the weights faster than BatchNorm's
    exponential running averages follow, so eval-mode predictions can be empty while train-mode ones are good.
    Attach it before the ``ValidationHandler`` so validation and the saved checkpoint use the fresh statistics.
    Not in the paper; off by default in the bundle (``precise_bn_batches: 0``).

    Args:
        network: the trained network (DDP-wrapped is fine).
        num_batches: training batches to average over.
        image_key: key of the input image in a batch.
        data_loader: loader to draw batches from (default: the engine's training loader).
    """

    def __init__(self, network: torch.nn.Module, num_batches: int = 16, image_key: str = "image",
                 data_loader=None) -> None:
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}.")
        self.network, self.num_batches, self.image_key, self.data_loader = network, num_batches, image_key, data_loader

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        bns = [m for m in self.network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        loader = self.data_loader if self.data_loader is not None else engine.data_loader
        device = next(self.network.parameters()).device
        was_training, momenta = self.network.training, [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the batches below
        self.network.train()
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= self.num_batches:
                    break
                self.network(batch[self.image_key].to(device))
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        self.network.train(was_training)
