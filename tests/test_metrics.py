import math

import numpy as np
import pytest
import torch

from fusionlungnet_monai.metrics import (
    BinarySegmentationMetric,
    SegmentationMetricHandler,
    compute_segmentation_metrics,
    metrics_from_confusion,
)


def np_metrics(p, g):
    """Plain numpy reference from one (pooled) confusion matrix; NaN where a denominator is 0."""
    p, g = p.astype(bool), g.astype(bool)
    tp, fp = np.sum(p & g), np.sum(p & ~g)
    tn, fn = np.sum(~p & ~g), np.sum(~p & g)
    div = lambda a, b: a / b if b else float("nan")  # noqa: E731
    mcc_den = math.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    return {"iou": div(tp, tp + fp + fn), "f1": div(2 * tp, 2 * tp + fp + fn), "precision": div(tp, tp + fp),
            "recall": div(tp, tp + fn), "accuracy": (tp + tn) / (tp + tn + fp + fn),
            "mcc": div(tp * tn - fp * fn, mcc_den)}


def test_hand_computed_confusion():
    # 2x3 image: tp=2, fp=1, fn=1, tn=2
    g = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float)[None, None]
    p = torch.tensor([[1, 1, 1], [0, 0, 0]], dtype=torch.float)[None, None]
    r = compute_segmentation_metrics(p, g)["mean"]
    assert r["iou"] == pytest.approx(2 / 4)
    assert r["f1"] == pytest.approx(4 / 6)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["mcc"] == pytest.approx((2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3))


def test_empty_masks_have_defined_values():
    z = torch.zeros(1, 1, 4, 4)
    both_empty = compute_segmentation_metrics(z, z)
    assert all(v == 1.0 for v in both_empty["mean"].values())
    assert all(v == 1.0 for v in both_empty["global"].values())
    fp_only = z.clone()
    fp_only[..., 0, 0] = 1
    r = compute_segmentation_metrics(fp_only, z)["mean"]  # empty ground truth, one false positive
    assert r["iou"] == 0 and r["f1"] == 0 and r["precision"] == 0 and r["recall"] == 0 and r["mcc"] == 0
    assert r["accuracy"] == pytest.approx(15 / 16)
    r = compute_segmentation_metrics(z, fp_only)["mean"]  # empty prediction, one missed pixel
    assert r["precision"] == 0 and r["recall"] == 0
    for agg in ("mean", "global"):
        assert not any(math.isnan(v) for v in compute_segmentation_metrics(fp_only, z)[agg].values())


def test_agrees_with_numpy_on_random_masks():
    rng = np.random.default_rng(0)
    preds = rng.random((5, 1, 16, 16)) > 0.5
    gts = rng.random((5, 1, 16, 16)) > 0.4
    r = compute_segmentation_metrics(torch.tensor(preds).float(), torch.tensor(gts).float())
    pooled = np_metrics(preds, gts)
    per = [np_metrics(preds[i], gts[i]) for i in range(5)]
    for name in pooled:
        assert r["global"][name] == pytest.approx(pooled[name], rel=1e-6)
        assert r["mean"][name] == pytest.approx(np.mean([d[name] for d in per]), rel=1e-6)
        assert r["per_image"][name] == pytest.approx([d[name] for d in per], rel=1e-6)


def test_mean_and_global_differ_where_they_should():
    # a small lung slice segmented badly and a big one segmented well: per-image mean punishes the small one
    g1 = torch.zeros(1, 1, 10, 10)
    g1[..., :2, :2] = 1
    p1 = torch.zeros_like(g1)
    p1[..., 0, 0] = 1
    g2 = torch.zeros(1, 1, 10, 10)
    g2[..., :, :8] = 1
    p2 = g2.clone()
    r = compute_segmentation_metrics([p1[0], p2[0]], [g1[0], g2[0]])
    assert r["mean"]["iou"] == pytest.approx((0.25 + 1.0) / 2)
    assert r["global"]["iou"] == pytest.approx(81 / 84)
    assert r["global"]["iou"] > r["mean"]["iou"]


def test_cumulative_metric_and_handler_in_an_evaluator():
    from ignite.engine import Engine
    from monai.handlers import from_engine

    m = BinarySegmentationMetric("f1", "global")
    g = torch.ones(2, 1, 4, 4)
    m(g, g)
    m(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
    assert float(m.aggregate()) == pytest.approx(2 * 32 / (2 * 32 + 16))
    assert m.get_buffer().shape == (3, 1)
    with pytest.raises(ValueError, match="metric_name"):
        BinarySegmentationMetric("dice")

    batches = [{"pred": torch.ones(2, 1, 4, 4), "label": torch.ones(2, 1, 4, 4)},
               {"pred": torch.zeros(2, 1, 4, 4), "label": torch.ones(2, 1, 4, 4)}]
    engine = Engine(lambda e, b: b)
    SegmentationMetricHandler("iou", "mean", output_transform=from_engine(["pred", "label"])).attach(engine, "val_iou")
    engine.run(batches, max_epochs=1)
    assert engine.state.metrics["val_iou"] == pytest.approx(0.5)
    assert engine.state.metric_details["val_iou"].shape == (4, 1)


def test_metrics_from_confusion_rejects_unknown():
    with pytest.raises(ValueError):
        metrics_from_confusion(torch.zeros(1, 4), "hausdorff")
