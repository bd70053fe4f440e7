import pytest
import torch

from fusionlungnet_monai import networks
from fusionlungnet_monai.networks import FusionLungNet, ResidualRefinementModule


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FusionLungNet()


def test_parameter_count_matches_official(net):
    assert abs(n_params(net) / 1e6 - 46.1) < 0.1


@pytest.mark.parametrize("in_channels,size", [(1, 160), (3, 64), (1, 96)])
def test_train_and_eval_shapes(in_channels, size):
    m = FusionLungNet(in_channels=in_channels)
    x = torch.rand(2, in_channels, size, size)
    m.train()
    out = m(x)
    assert isinstance(out, list) and len(out) == 5
    assert all(o.shape == (2, 1, size, size) for o in out)
    m.eval()
    with torch.no_grad():
        y = m(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 1, size, size)


def test_eval_320_and_512_and_odd_sizes(net):
    net.eval()
    with torch.no_grad():
        for shape in [(320, 320), (512, 512), (100, 70)]:
            assert net(torch.rand(1, 1, *shape)).shape == (1, 1, *shape)


def test_outputs_are_logits_not_probabilities(net):
    net.eval()
    with torch.no_grad():
        y = net(torch.rand(1, 1, 64, 64) * 10)
    assert (y < 0).any() or (y > 1).any()


def test_every_parameter_gets_a_gradient():
    from fusionlungnet_monai.losses import HybridLoss

    m = FusionLungNet().train()
    x = torch.rand(2, 1, 64, 64)
    y = (torch.rand(2, 1, 64, 64) > 0.5).float()
    loss = HybridLoss()(m(x), y)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]


def test_deep_supervision_off_returns_tensor_in_train_mode():
    m = FusionLungNet(deep_supervision=False).train()
    assert isinstance(m(torch.rand(2, 1, 64, 64)), torch.Tensor)


def test_ablation_switches_change_parameter_count(net):
    full = n_params(net)
    features = 256
    no_caa = FusionLungNet(use_caa=False)
    # CAA (1x1 2048->256, 3x3, 1x1 2048->256, 1x3, 3x1) replaced by a single 1x1 conv + BN
    assert full - n_params(no_caa) == (256 * 256 * 9 + 256 + 2 * 256) + (2048 * 256 + 256) + 2 * (256 * 256 * 3 + 256)
    no_mff = FusionLungNet(use_mff=False)
    assert full - n_params(no_mff) == 3 * (3 * features * features * 9 + features + 2 * features)  # three fuse convs
    no_sr = FusionLungNet(use_sr=False)
    sr = features * features * 9 + 3 * features + features * 2 * features * 9 + 2 * features
    assert full - n_params(no_sr) == 4 * sr
    no_rrm = FusionLungNet(use_rrm=False)
    assert full - n_params(no_rrm) == n_params(ResidualRefinementModule(2, 1, 1, 64, 4))
    for m in (no_caa, no_mff, no_sr):
        out = m.train()(torch.rand(2, 1, 64, 64))
        assert len(out) == 5
    out = no_rrm.train()(torch.rand(2, 1, 64, 64))
    assert len(out) == 4  # no refined output: [side2, side3, side4, side5]
    baseline = FusionLungNet(use_caa=False, use_mff=False, use_sr=False, use_rrm=False).eval()
    assert baseline(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_torchscript_matches_eager(net):
    net.eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 1, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-4)
    scripted.train()
    assert isinstance(scripted(torch.rand(2, 1, 64, 64)), list)


def _torchvision_state_dict(net, channels=3):
    """A torchvision-keyed ResNet-50 state dict with random values (conv1 with RGB input, plus fc)."""
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(v.shape, generator=g) if v.dtype.is_floating_point else v.clone()
          for k, v in net.encoder.state_dict().items()}
    sd["conv1.weight"] = torch.randn(64, channels, 7, 7, generator=g)
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return sd


def test_pretrained_weights_load_exactly(tmp_path, net, caplog):
    sd = _torchvision_state_dict(net)
    del sd["layer4.2.bn3.running_var"]  # one missing key must be reported
    path = tmp_path / "resnet50.pth"
    torch.save(sd, path)
    m1 = FusionLungNet(in_channels=1, pretrained_weights=str(path))
    e1 = m1.encoder.state_dict()
    torch.testing.assert_close(e1["conv1.weight"], sd["conv1.weight"].sum(1, keepdim=True))
    for k in ("layer1.0.conv1.weight", "layer3.5.bn2.running_mean", "layer4.2.conv3.weight"):
        torch.testing.assert_close(e1[k], sd[k])
    assert "layer4.2.bn3.running_var" in caplog.text and "missing" in caplog.text
    m3 = FusionLungNet(in_channels=3, pretrained_weights=str(path))
    torch.testing.assert_close(m3.encoder.state_dict()["conv1.weight"], sd["conv1.weight"])
    missing, unexpected = networks.load_resnet50_weights(m3.encoder, str(path), 3)
    assert missing == ["layer4.2.bn3.running_var"] and unexpected == []


def test_bad_pretrained_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        FusionLungNet(pretrained_weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable"):
        FusionLungNet(pretrained_weights=str(bad))
    other = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="no ResNet-50 keys"):
        FusionLungNet(pretrained_weights=str(other))


def test_rrm_standalone_refines_any_logits():
    rrm = ResidualRefinementModule(spatial_dims=2, in_channels=3, out_channels=2, features=16, levels=3)
    coarse = torch.randn(2, 3, 50, 46)
    out = rrm(coarse)
    assert out.shape == (2, 2, 50, 46)
    # zero residual head => identity on the logits it refines
    torch.nn.init.zeros_(rrm.head.conv.weight)
    torch.nn.init.zeros_(rrm.head.conv.bias)
    torch.testing.assert_close(rrm(coarse), coarse[:, :2])
    with pytest.raises(ValueError, match="in_channels"):
        ResidualRefinementModule(in_channels=1, out_channels=2)
    assert isinstance(torch.jit.script(ResidualRefinementModule(features=8)), torch.jit.ScriptModule)


def test_exported_from_package_root():
    import fusionlungnet_monai as fln

    assert fln.FusionLungNet is FusionLungNet and fln.ResidualRefinementModule is ResidualRefinementModule
    assert networks.CAA is networks.ChannelAggregationAttention


def _bn_count(m):
    return sum(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())


def _random_bn_stats(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    for bn in m.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            bn.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return m


def test_fuse_conv_bn_folds_every_batchnorm_of_the_shipped_network():
    """The bundle's inference folds BatchNorm into the convs: no BatchNorm left, the same logits, channels_last kept."""
    from pathlib import Path

    sd = torch.load(Path(__file__).parents[1] / "bundle" / "models" / "model.pt", map_location="cpu",
                    weights_only=True)
    net = FusionLungNet(deep_supervision=False).to(memory_format=torch.channels_last)
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    net.eval()
    x = torch.rand(2, 1, 96, 96).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = net(x)
    assert _bn_count(net) == 80
    assert networks.fuse_conv_bn(net) is net and not net.training
    assert _bn_count(net) == 0
    assert net.encoder.layer1[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = net(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert ((out > 0) == (ref > 0)).float().mean() > 0.999
    networks.fuse_conv_bn(net)  # idempotent
    with torch.no_grad():
        torch.testing.assert_close(net(x), out)


@pytest.mark.parametrize("kwargs", [dict(spatial_dims=3, features=32, rrm_features=8),
                                    dict(use_caa=False, use_mff=False, use_sr=False, use_rrm=False)])
def test_fuse_conv_bn_3d_and_ablations(kwargs):
    torch.manual_seed(0)
    net = _random_bn_stats(FusionLungNet(deep_supervision=False, **kwargs)).eval()
    size = (32, 32, 32) if kwargs.get("spatial_dims") == 3 else (64, 64)
    x = torch.rand(1, 1, *size)
    with torch.no_grad():
        ref = net(x)
        out = networks.fuse_conv_bn(net)(x)
    assert _bn_count(net) == 0
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


def test_fuse_conv_bn_leaves_what_it_cannot_fold():
    """A MONAI ResNet with basic blocks folds; a norm before the conv, or after a transposed conv, stays."""
    from monai.networks.blocks import Convolution
    from monai.networks.nets import resnet18

    net = _random_bn_stats(resnet18(spatial_dims=2, n_input_channels=1, num_classes=3)).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = net(x)
        out = networks.fuse_conv_bn(net)(x)
    assert _bn_count(net) == 0
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)

    keep = torch.nn.Sequential(
        Convolution(2, 1, 4, norm="BATCH", act="RELU", adn_ordering="AN"),  # ReLU before the norm
        Convolution(2, 4, 4, strides=2, is_transposed=True, norm="BATCH", act="RELU"),  # transposed
        torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1),  # a norm before a conv
    )
    _random_bn_stats(keep).eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        ref = keep(x)
        out = networks.fuse_conv_bn(keep)(x)
    assert _bn_count(keep) == 3
    torch.testing.assert_close(out, ref)
