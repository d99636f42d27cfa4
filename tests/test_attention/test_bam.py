import pytest
import torch
import torch.nn.functional as F
from testing_utils import SHAPES, assert_close, num_params, randomize_

from mmsa.attention.bam import BAM


def _bn(x, bn, training):
    """Batch norm with copies of ``bn``'s running stats (left untouched)."""
    return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(),
                        bn.weight, bn.bias, training, bn.momentum, bn.eps)


def official_channel_gate(x, fc0, bn1, fc_final, training):
    """``ChannelGate.forward`` of Jongchan/attention-module, written out.

    The official pooling, ``avg_pool2d(x, H, stride=H)``, is a GAP only for
    square inputs; the GAP is used here so that non-square shapes compare.
    """
    y = F.adaptive_avg_pool2d(x, 1).flatten(1)
    y = F.linear(y, fc0.weight, fc0.bias)
    y = F.relu(_bn(y, bn1, training))
    y = F.linear(y, fc_final.weight, fc_final.bias)
    return y.unsqueeze(2).unsqueeze(3).expand_as(x)


def official_spatial_gate(x, layers, dilation, training):
    """``SpatialGate.forward``: reduce, dilated convs, then one map."""
    reduce0, bn_reduce0 = layers[0], layers[1]
    y = F.conv2d(x, reduce0.weight, reduce0.bias)
    y = F.relu(_bn(y, bn_reduce0, training))
    convs = [m for m in layers[3:-1] if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in layers[3:-1] if isinstance(m, torch.nn.BatchNorm2d)]
    for conv, bn in zip(convs, bns):
        y = F.conv2d(y, conv.weight, conv.bias, padding=dilation,
                     dilation=dilation)
        y = F.relu(_bn(y, bn, training))
    final = layers[-1]
    y = F.conv2d(y, final.weight, final.bias)
    return y.expand_as(x)


def official_bam(x, bam, fusion, training):
    """``BAM.forward`` with the official product, or the paper's sum."""
    fc0, bn1, _, fc_final = bam.channel_gate
    channel = official_channel_gate(x, fc0, bn1, fc_final, training)
    spatial = official_spatial_gate(x, list(bam.spatial_gate), bam.dilation,
                                    training)
    if fusion == 'mul':
        att = 1 + torch.sigmoid(channel * spatial)
        return att * x
    return x + x * torch.sigmoid(channel + spatial)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('fusion', ['add', 'mul'])
def test_bam_matches_official_forward_eval(shape, fusion):
    bam = randomize_(BAM(shape[1], fusion=fusion), seed=shape[1]).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        assert_close(bam(x), official_bam(x, bam, fusion, training=False))


@pytest.mark.parametrize('shape', [s for s in SHAPES if s[0] >= 2])
@pytest.mark.parametrize('fusion', ['add', 'mul'])
def test_bam_matches_official_forward_train(shape, fusion):
    bam = randomize_(BAM(shape[1], reduction=8, dilation=2,
                         num_dilated_convs=3, fusion=fusion)).train()
    x = torch.randn(shape)
    expected = official_bam(x, bam, fusion, training=True)
    assert_close(bam(x), expected)


def test_bam_fusions_differ():
    add = randomize_(BAM(64, fusion='add')).eval()
    mul = randomize_(BAM(64, fusion='mul')).eval()
    x = torch.randn(1, 64, 6, 5)
    with torch.no_grad():
        assert (add(x) - mul(x)).abs().max() > 1e-3


def test_bam_official_pool_is_gap_only_for_square_inputs():
    x = torch.randn(2, 8, 6, 6)
    official = F.avg_pool2d(x, x.size(2), stride=x.size(2)).flatten(1)
    assert_close(official, x.mean((2, 3)))
    x = torch.randn(2, 8, 6, 9)
    official = F.avg_pool2d(x, x.size(2), stride=x.size(2)).flatten(1)
    assert (official - x.mean((2, 3))).abs().max() > 1e-3


def test_bam_training_with_batch_one_raises():
    bam = BAM(64).train()
    with pytest.raises(ValueError, match=r'BAM\(in_channels=64\): training '
                       r'needs a batch of at least 2.*got batch size 1'):
        bam(torch.randn(1, 64, 5, 6))
    with torch.no_grad():
        assert bam.eval()(torch.randn(1, 64, 5, 6)).shape == (1, 64, 5, 6)


def _bam_params(c, r=16, n=2):
    h = c // r
    return 3 * c * h + c + 7 * h + 1 + n * (9 * h**2 + 3 * h)


def test_bam_parameter_count_formula():
    for c, r, n in [(256, 16, 2), (64, 4, 1), (96, 8, 3), (512, 16, 2)]:
        bam = BAM(c, reduction=r, num_dilated_convs=n)
        assert num_params(bam) == _bam_params(c, r, n)
    assert num_params(BAM(256)) == 17_361
    # ResNet-50: one BAM after each of layer1..3 (the paper's 25.92M total).
    total = sum(num_params(BAM(c)) for c in (256, 512, 1024))
    assert total == 358_067
