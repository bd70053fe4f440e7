"""Drive the bundle from Python: MONAI ``ConfigWorkflow`` helpers for the bundle's inference configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fusionlungnet_monai.data.errors import InputError

__all__ = ["find_bundle", "load_inference_workflow", "infer_tensors"]


def find_bundle(bundle_dir: str | os.PathLike | None = None) -> Path:
    """The bundle folder: ``bundle_dir``, else ``$FUSIONLUNGNET_BUNDLE``, else this repository's ``bundle/``. The
    first of these that is given is the one used: a wrong ``--bundle`` never falls back to another bundle.

    Raises:
        InputError: when that folder holds no ``configs/inference.json``.
    """
    env = os.environ.get("FUSIONLUNGNET_BUNDLE")
    where = bundle_dir or env or Path(__file__).resolve().parents[1] / "bundle"
    if (Path(where) / "configs" / "inference.json").is_file():
        return Path(where).resolve()
    given = " ($FUSIONLUNGNET_BUNDLE)" if env and not bundle_dir else ""
    raise InputError(where, f"no MONAI bundle here{given} (configs/inference.json missing); pass --bundle DIR")


def load_inference_workflow(bundle_dir: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
                            pictures: bool = False, save: bool = True, initialize: bool = True):
    """The bundle's inference workflow (``configs/inference.json``; ``+ inference_2d.json`` for pictures).

    Args:
        bundle_dir: bundle folder; default: ``$FUSIONLUNGNET_BUNDLE`` or this repository's ``bundle/``.
        overrides: config ids to replace, e.g. ``{"input": "/data/ct/p01", "ckpt_path": "model.pt",
            "device": "$torch.device('cpu')", "load_pretrain": False}``.
        pictures: use the PNG/JPG variant.
        save: keep the ``SaveImaged`` and report steps (``False``: results only in memory, see :func:`infer_tensors`).
        initialize: run the workflow's ``initialize`` (builds the net and loads ``ckpt_path`` when
            ``load_pretrain``).

    Returns:
        a ``monai.bundle.ConfigWorkflow``; ``wf.evaluator``, ``wf.network_def``, ``wf.preprocessing`` ... are its parts.
    """
    from monai.bundle import ConfigWorkflow

    bundle = find_bundle(bundle_dir)
    cfg = bundle / "configs"
    files = [str(cfg / "inference.json")] + ([str(cfg / "inference_2d.json")] if pictures else [])
    ov = {"bundle_root": str(bundle), **(overrides or {})}
    if not save:
        ov["post#save#_disabled_"] = ov["post#report#_disabled_"] = True
    wf = ConfigWorkflow(config_file=files, meta_file=str(cfg / "metadata.json"), logging_file=False,
                        workflow_type="inference", **ov)
    if initialize:
        wf.initialize()
    return wf


def infer_tensors(workflow, inputs) -> list[dict]:
    """Run an inference workflow on ``inputs`` and return the post-processed items
    (``{"image": MetaTensor, "pred": MetaTensor}`` per input; ``pred`` on the input grid with its meta/affine).

    ``inputs``: a path or a list of paths, or images already loaded by ``LoadCTImage`` (MetaTensors), which are
    not read again."""
    from ignite.engine import Events
    from monai.data import MetaTensor

    items = [inputs] if isinstance(inputs, (str, os.PathLike, MetaTensor)) else list(inputs)
    workflow.parser.get_parsed_content("dataset").data = [
        {"image": i if isinstance(i, MetaTensor) else str(Path(i))} for i in items]
    evaluator = workflow.parser.get_parsed_content("evaluator")
    evaluator.state.epoch_length = len(items)
    results: list[dict] = []

    def collect(engine) -> None:
        out = engine.state.output
        results.extend(out if isinstance(out, list) else [out])

    handle = evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
    try:
        evaluator.run()
    finally:
        handle.remove()
    return results
