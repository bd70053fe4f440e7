import pytest
import torch
import torch.nn.functional as F

from fusionlungnet_monai import HybridLoss


def ref_focal_official(logits, target, alpha=0.3, gamma=3.0):
    """The authors' BinaryFocalLoss value (positives weight 1, negatives alpha), written out directly."""
    p = torch.sigmoid(logits.double())
    t = target.double()
    pos = -t * (1 - p) ** gamma * torch.log(p)
    neg = -alpha * (1 - t) * p**gamma * torch.log(1 - p)
    return (pos + neg).mean()


def ref_ssim_loss(x, y, win=11, sigma=1.5, c1=0.01**2, c2=0.03**2):
    """1 - SSIM with a Gaussian window, valid convolution, averaged over the image (numpy-free torch ref)."""
    g = torch.exp(-((torch.arange(win, dtype=torch.float64) - win // 2) ** 2) / (2 * sigma**2))
    g = (g / g.sum())
    w = (g[:, None] * g[None, :])[None, None]
    x, y = x.double(), y.double()
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return 1 - ssim.flatten(1).mean(1)


def ref_iou_loss(logits, target):
    p = torch.sigmoid(logits.double())
    t = target.double()
    inter = (p * t).flatten(1).sum(1)
    union = (p + t - p * t).flatten(1).sum(1)
    return 1 - inter / union


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 32, 32, generator=g) * 3
    target = (torch.rand(3, 1, 32, 32, generator=g) > 0.6).float()
    return logits, target


def test_each_term_matches_reference(batch):
    logits, target = batch
    focal = HybridLoss(focal_weight=1, ssim_weight=0, iou_weight=0)(logits, target)
    torch.testing.assert_close(focal.double(), ref_focal_official(logits, target), rtol=1e-4, atol=1e-6)
    ssim = HybridLoss(focal_weight=0, ssim_weight=1, iou_weight=0)(logits, target)
    torch.testing.assert_close(ssim.double(), ref_ssim_loss(torch.sigmoid(logits), target).mean(), rtol=1e-4, atol=1e-5)
    iou = HybridLoss(focal_weight=0, ssim_weight=0, iou_weight=1)(logits, target)
    torch.testing.assert_close(iou.double(), ref_iou_loss(logits, target).mean(), rtol=1e-4, atol=1e-5)
    total = HybridLoss()(logits, target)
    torch.testing.assert_close(total, 0.3 * focal + 0.4 * ssim + 0.3 * iou, rtol=1e-5, atol=1e-6)


def test_perfect_prediction_is_minimum_and_worse_is_larger(batch):
    _, target = batch
    loss = HybridLoss()
    perfect = (target * 2 - 1) * 30.0
    good = (target * 2 - 1) * 2.0
    bad = -(target * 2 - 1) * 2.0
    l_perfect, l_good, l_bad = loss(perfect, target), loss(good, target), loss(bad, target)
    assert l_perfect < 1e-4
    assert l_perfect < l_good < l_bad


def test_gradients_finite_for_extreme_logits(batch):
    _, target = batch
    for v in (50.0, -50.0):
        x = torch.full_like(target, v, requires_grad=True)
        HybridLoss()(x, target).backward()
        assert torch.isfinite(x.grad).all()
    x = ((target * 2 - 1) * -50.0).requires_grad_(True)  # confidently wrong
    l = HybridLoss()(x, target)
    l.backward()
    assert torch.isfinite(l) and torch.isfinite(x.grad).all()


def test_deep_supervision_is_plain_sum(batch):
    logits, target = batch
    outs = [logits, logits * 0.5, logits + 1, -logits, logits * 2]
    loss = HybridLoss()
    torch.testing.assert_close(loss(outs, target), sum(loss(o, target) for o in outs))
    weighted = HybridLoss(deep_supervision_weights=[1, 0.5, 0.5, 0.5, 0.5])
    torch.testing.assert_close(weighted(outs, target),
                               loss(outs[0], target) + 0.5 * sum(loss(o, target) for o in outs[1:]))


def test_reduction_and_multichannel():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 2, 24, 24, generator=g)
    y = (torch.rand(4, 2, 24, 24, generator=g) > 0.5).float()
    per = HybridLoss(reduction="none")(x, y)
    assert per.shape == (4,)
    torch.testing.assert_close(HybridLoss(reduction="mean")(x, y), per.mean())
    torch.testing.assert_close(HybridLoss(reduction="sum")(x, y), per.sum())
    # channels are independent sigmoid problems: the 2-channel loss is the mean of the per-channel losses
    one = [HybridLoss(reduction="none")(x[:, c : c + 1], y[:, c : c + 1]) for c in range(2)]
    torch.testing.assert_close(per, (one[0] + one[1]) / 2, rtol=1e-5, atol=1e-6)


def test_bad_arguments(batch):
    logits, target = batch
    with pytest.raises(ValueError, match="focal_weight"):
        HybridLoss(focal_weight=-1)
    with pytest.raises(ValueError, match="at least one"):
        HybridLoss(0, 0, 0)
    with pytest.raises(ValueError, match="same shape"):
        HybridLoss()(logits, target[:, :, :16])
    with pytest.raises(ValueError):
        HybridLoss(reduction="median")


@pytest.mark.parametrize("spatial_dims,shape", [(2, (3, 2, 40, 36)), (3, (2, 1, 20, 18, 16))])
def test_separable_ssim_equals_monai_ssim(spatial_dims, shape):
    from monai.losses import SSIMLoss

    from fusionlungnet_monai.losses import SeparableSSIMLoss

    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(*shape, generator=g), (torch.rand(*shape, generator=g) > 0.5).float()
    ours = SeparableSSIMLoss(spatial_dims=spatial_dims)(x, y)
    assert ours.shape == shape[:2]
    monai = SSIMLoss(spatial_dims=spatial_dims, data_range=1.0, reduction="none")
    for c in range(shape[1]):
        torch.testing.assert_close(ours[:, c], monai(x[:, c : c + 1], y[:, c : c + 1]).view(-1), rtol=1e-5, atol=1e-6)


def test_deep_supervision_stacked_matches_monai_deep_supervision(batch):
    """Outputs on the target's grid go through the terms once, stacked; the value and gradients are the weighted sum
    of the single-output losses (MONAI DeepSupervisionLoss's, which cannot do reduction "none"), for every reduction
    and for weight lists too short (then all weights are 1, as MONAI does)."""
    logits, target = batch
    for reduction in ("mean", "sum", "none"):
        for weights in (None, [1, 0.5, 0.25, 0.25, 0.1], [2.0]):
            outs = [(logits * s).requires_grad_(True) for s in (1.0, 0.5, -1.0, 2.0, 0.3)]
            loss = HybridLoss(reduction=reduction, deep_supervision_weights=weights)
            stacked = loss(outs, target)
            grads = torch.autograd.grad(stacked.sum(), outs)
            w = weights if weights and len(weights) >= len(outs) else [1.0] * len(outs)
            ref = sum(wk * loss(o, target) for wk, o in zip(w, outs))
            torch.testing.assert_close(stacked, ref, rtol=1e-5, atol=1e-6)
            for gr, rg in zip(grads, torch.autograd.grad(ref.sum(), outs)):
                torch.testing.assert_close(gr, rg, rtol=1e-4, atol=1e-7)


def test_deep_supervision_with_smaller_side_outputs_resizes_the_target(batch):
    logits, target = batch
    small = F.avg_pool2d(logits, 2)
    loss = HybridLoss()
    expected = loss(logits, target) + loss(small, F.interpolate(target, size=small.shape[2:], mode="nearest-exact"))
    torch.testing.assert_close(loss([logits, small], target), expected)


def test_compiled_loss_matches_eager_value_and_gradients(batch):
    """compile=True (train.json's compile_loss): torch.compile'd terms give the eager loss and gradients, for the
    stacked deep-supervision outputs, also under bf16 autocast (float32 loss, finite)."""
    logits, target = batch
    eager, compiled = HybridLoss(), HybridLoss(compile=True)
    assert eager._compiled_terms is None and compiled._compiled_terms is not None
    outs = [(logits * s).requires_grad_(True) for s in (1.0, 0.5, -1.0)]
    ref, got = eager(outs, target), compiled(outs, target)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(torch.autograd.grad(got, outs), torch.autograd.grad(ref, outs)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = compiled([o.bfloat16() for o in outs], target)
    assert got.dtype == torch.float32 and torch.isfinite(got)
