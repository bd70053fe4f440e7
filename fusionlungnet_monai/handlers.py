"""Ignite handlers: the evaluation report (per-image CSV + summary JSON), precise BatchNorm statistics, atomic
checkpoints, a GradScaler monitor, bf16 without loss scaling and a training time limit."""

from __future__ import annotations

import csv
import glob
import json
import os
import time
from typing import TYPE_CHECKING

import torch
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver

from fusionlungnet_monai.data.errors import find_input_error

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["AmpMonitor", "AtomicCheckpointSaver", "BF16WithoutLossScaling", "EvaluationReport", "InputErrorHandler",
           "PreciseBatchNorm", "TrainingTimeLimit", "every_n_iterations"]


def _names(batch) -> list[str]:
    """Source file names of a batch: MONAI engines decollate it into a list of per-image dicts."""
    items = batch if isinstance(batch, (list, tuple)) else [batch]
    out = []
    for item in items:
        img = item.get("image") if isinstance(item, dict) else None
        name = (getattr(img, "meta", None) or {}).get("filename_or_obj", "")
        out.extend(name if isinstance(name, (list, tuple)) else [name])
    return [str(n) for n in out]


def every_n_iterations(n: int):
    """An ignite event filter for MONAI ``StatsHandler(iteration_log=...)`` and ``TensorBoardStatsHandler``: true on
    every ``n``-th iteration and on the last of each epoch. Logging the loss reads it from the device (a sync that
    stops the CPU from running ahead of a GPU), so a GPU run logs every few iterations rather than every one.

    Raises:
        ValueError: when ``n`` is not a positive integer.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"every_n_iterations: n must be a positive integer, got {n!r}")
    n = int(n)

    def log_this(engine: Engine, iteration: int) -> bool:
        return iteration % n == 0 or iteration % max(engine.state.epoch_length or 1, 1) == 0

    return log_this


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


class _AtomicDiskSaver(BaseSaveHandler):
    """Write a checkpoint to a temporary file in the target folder, flush it to disk, then rename it over the
    target: a reader (or a run killed mid-save) sees the old file or the new one, never half of one.

    With a fixed ``filename`` the old file is replaced by the rename, not deleted first.
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        self.dirname, self.filename = str(dirname), filename
        os.makedirs(self.dirname, exist_ok=True)
        for stale in glob.glob(os.path.join(self.dirname, "*.pt.tmp*")):  # left by a killed run
            pid = stale.rsplit(".tmp", 1)[-1]
            if not (pid.isdigit() and _alive(int(pid))):
                os.remove(stale)

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        path = os.path.join(self.dirname, self.filename or filename)
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def remove(self, filename: str) -> None:
        if self.filename is None:  # fixed names are replaced by the next save
            path = os.path.join(self.dirname, filename)
            if os.path.exists(path):
                os.remove(path)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` whose files are written atomically (temporary file + rename).

    MONAI's own saver writes in place (``atomic=False``) and removes a fixed-name file before writing the next one,
    so a run killed at that moment leaves no ``model.pt`` or a truncated one. Same arguments as
    ``CheckpointSaver``, plus ``interval_filename``: a fixed name for the ``save_interval`` checkpoints (e.g.
    ``checkpoint_last.pt``, the file ``--resume true`` reads) instead of one file per epoch.
    """

    def __init__(self, *args, interval_filename: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        fixed = {"_final_checkpoint": self._final_filename, "_interval_checkpoint": interval_filename,
                 "_key_metric_checkpoint": kwargs.get("key_metric_filename")}
        for attr, name in fixed.items():
            ckpt = getattr(self, attr, None)
            if ckpt is not None:
                ckpt.save_handler = _AtomicDiskSaver(self.save_dir, name)
                if name is not None and attr == "_interval_checkpoint":
                    ckpt.n_saved = 1


class BF16WithoutLossScaling:
    """Train bf16 autocast without loss scaling: MONAI's ``SupervisedTrainer`` makes a ``GradScaler`` whenever
    ``amp`` is on, but bf16 has float32's exponent range, so its gradients do not underflow the way float16's do.
    At the run's start, under bf16 autocast, the scaler is swapped for a disabled one: autocast stays on, and each
    step loses the scaler's unscale pass and its device sync (the check for non-finite gradients reads them back).
    fp16 keeps MONAI's scaler. Attach it to the trainer (``train#handlers``)."""

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)

    @staticmethod
    def _started(engine: Engine) -> None:
        dtype = (getattr(engine, "amp_kwargs", None) or {}).get("dtype")
        if getattr(engine, "amp", False) and dtype == torch.bfloat16 and getattr(engine, "scaler", None) is not None:
            engine.scaler = torch.amp.GradScaler("cuda", enabled=False)


class AmpMonitor:
    """Count the optimizer steps that mixed precision skipped: ``torch.amp.GradScaler`` lowers its scale only
    when a step had non-finite gradients and was skipped.

    Puts ``amp_skipped_steps`` (cumulative) and ``amp_scale`` into ``engine.state.metrics`` and logs them at every
    epoch end. Does nothing when the trainer has no enabled scaler (AMP off, or bf16 with
    :class:`BF16WithoutLossScaling`). The count is kept on the scaler's device and read once an epoch: no device
    sync per iteration.
    """

    def __init__(self, log: bool = True) -> None:
        self.log, self.skipped = log, 0
        self._last = self._count = None

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED, self._before)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._after)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    @staticmethod
    def _scaler(engine):
        scaler = getattr(engine, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    @staticmethod
    def _scale(scaler):
        """The scale as a tensor on the scaler's device, or its initial value (a float) before its first step."""
        scale = getattr(scaler, "_scale", None)
        return scale.detach().clone() if isinstance(scale, torch.Tensor) else float(scaler.get_scale())

    def _before(self, engine: Engine) -> None:
        scaler = self._scaler(engine)
        self._last = None if scaler is None else self._scale(scaler)

    def _after(self, engine: Engine) -> None:
        scaler = self._scaler(engine)
        if scaler is None or self._last is None:
            return
        lowered = torch.as_tensor(self._scale(scaler) < self._last).to(torch.int64)
        self._count = lowered if self._count is None else self._count + lowered

    def _epoch(self, engine: Engine) -> None:
        scaler = self._scaler(engine)
        if scaler is None:
            return
        if self._count is not None:
            self.skipped += int(self._count.item())
            self._count = None
        engine.state.metrics["amp_skipped_steps"] = self.skipped
        engine.state.metrics["amp_scale"] = float(scaler.get_scale())
        if self.log:
            engine.logger.info(f"AMP: {self.skipped} optimizer steps skipped so far, scale {engine.state.metrics['amp_scale']}")


class TrainingTimeLimit:
    """End training cleanly within a time budget (a GPU slot, a cluster job): at an epoch's end the run stops when
    one more epoch as long as the last (validation and checkpoints included) would pass ``limit_s``; mid-epoch it
    stops once ``limit_s`` has passed.
    The clock starts with the run (after the datasets are cached). ``engine.terminate()`` still fires ``COMPLETED``,
    so the final checkpoint is written; the best model has been saved by validation all along.

    Args:
        limit_s: seconds of training allowed.
        check_every: under torch.distributed, the ranks agree on the mid-epoch check every this many iterations
            (one all-reduce each); a single process checks its clock every iteration.

    Raises:
        ValueError: when ``limit_s`` is not positive.
    """

    def __init__(self, limit_s: float, check_every: int = 10) -> None:
        if not limit_s or float(limit_s) <= 0:
            raise ValueError(f"TrainingTimeLimit: limit_s must be a positive number of seconds, got {limit_s!r}")
        self.limit_s = float(limit_s)
        self.check_every = max(int(check_every), 1)
        self._start = self._epoch_start = self._cycle = 0.0

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)

    def _started(self, engine: Engine) -> None:
        self._start = time.monotonic()

    def _epoch_started(self, engine: Engine) -> None:
        now = time.monotonic()
        if self._epoch_start:  # a whole epoch cycle: training, validation and checkpoints
            self._cycle = now - self._epoch_start
        self._epoch_start = now

    def _stop(self, engine: Engine, why: str) -> None:
        engine.logger.info(f"TrainingTimeLimit: {why}; stopping after epoch {engine.state.epoch} "
                           f"({time.monotonic() - self._start:.0f} s of {self.limit_s:.0f} s)")
        engine.terminate()

    @staticmethod
    def _agreed(engine: Engine, flag: bool) -> bool:
        """Under torch.distributed every rank stops together (rank clocks differ): true when any rank says so."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return flag
        t = torch.tensor([float(flag)], device=getattr(engine.state, "device", None) or "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def _epoch_completed(self, engine: Engine) -> None:
        now = time.monotonic()
        epoch = max(self._cycle, now - self._epoch_start)
        late = engine.state.epoch < engine.state.max_epochs and now + epoch > self._start + self.limit_s
        if self._agreed(engine, late):
            self._stop(engine, "another epoch would pass the time limit")

    def _iteration_completed(self, engine: Engine) -> None:
        # under torch.distributed every rank joins the check (a rank that skipped it would leave the others waiting),
        # every check_every-th iteration: the all-reduce reads a flag from the device, a sync per check
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and engine.state.iteration % self.check_every:
            return
        late = self._agreed(engine, time.monotonic() - self._start > self.limit_s)
        if late and not engine.should_terminate:
            self._stop(engine, "time limit reached mid-epoch")


class InputErrorHandler:
    """Let bad input end an engine run without the traceback that MONAI's ``StatsHandler`` logs: for an
    :class:`~fusionlungnet_monai.data.InputError` (also wrapped by ``apply_transform``) it raises the error
    alone, so that ``report_input_errors`` prints the one-line message; other exceptions are re-raised
    as they are (Python prints their traceback once). Attach it before ``StatsHandler``: ignite runs the
    ``EXCEPTION_RAISED`` handlers in order, and the first that raises ends the chain."""

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EXCEPTION_RAISED, self)

    def __call__(self, engine: Engine, e: Exception) -> None:
        err = find_input_error(e)
        if err is not None:
            raise err from None
        raise e
