import pytest
import torch
import torch.nn.functional as F
from testing_utils import SHAPES, assert_close, num_params, randomize_

from mmsa.attention.ulsam import ULSAM


def _bn(x, weight, bias, mean, var, eps, training):
    return F.batch_norm(x, mean.clone(), var.clone(), weight, bias, training,
                        0.1, eps)


def official_subspace(x, p, training):
    """``SubSpace.forward`` of Nandan91/ULSAM in the paper's order."""
    nin = x.shape[1]
    out = F.conv2d(x, p['dw_w'], p['dw_b'], groups=nin)
    out = F.relu(_bn(out, *p['dw_bn'], training))
    out = F.max_pool2d(out, kernel_size=3, stride=1, padding=1)
    out = F.conv2d(out, p['pw_w'], p['pw_b'])
    out = F.relu(_bn(out, *p['pw_bn'], training))
    m, n, h, w = out.shape
    out = torch.softmax(out.view(m, n, -1), dim=2).view(m, n, h, w)
    out = out.expand(x.shape)
    return torch.mul(out, x) + x


def subspace_params(ulsam, i):
    """Subspace ``i``'s own weights, sliced from the vectorised module."""
    k = ulsam.in_channels // ulsam.groups
    ch = slice(i * k, (i + 1) * k)
    g = slice(i, i + 1)
    dw, dwb, pw, pwb = ulsam.dw_conv, ulsam.dw_bn, ulsam.pw_conv, ulsam.pw_bn
    return dict(
        dw_w=dw.weight[ch], dw_b=dw.bias[ch],
        dw_bn=(dwb.weight[ch], dwb.bias[ch], dwb.running_mean[ch],
               dwb.running_var[ch], dwb.eps),
        pw_w=pw.weight[g], pw_b=pw.bias[g],
        pw_bn=(pwb.weight[g], pwb.bias[g], pwb.running_mean[g],
               pwb.running_var[g], pwb.eps))


def official_ulsam(x, ulsam, training):
    """``ULSAM.forward``: one ``SubSpace`` per channel chunk, concatenated."""
    sub_feat = torch.chunk(x, ulsam.groups, dim=1)
    out = [official_subspace(f, subspace_params(ulsam, i), training)
           for i, f in enumerate(sub_feat)]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('groups', [1, 4, 16])
def test_ulsam_matches_official_forward_eval(shape, groups):
    ulsam = randomize_(ULSAM(shape[1], groups=groups), seed=groups).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        assert_close(ulsam(x), official_ulsam(x, ulsam, training=False))


@pytest.mark.parametrize('shape', [s for s in SHAPES if s[0] >= 2])
@pytest.mark.parametrize('groups', [4, 32])
def test_ulsam_matches_official_forward_train(shape, groups):
    ulsam = randomize_(ULSAM(shape[1], groups=groups), seed=groups).train()
    x = torch.randn(shape)
    expected = official_ulsam(x, ulsam, training=True)
    assert_close(ulsam(x), expected)


def test_ulsam_depthwise_branch_is_alive():
    """Paper order: the depthwise conv feeds the max-pool, so it matters."""
    ulsam = randomize_(ULSAM(16, groups=4)).eval()
    x = torch.randn(2, 16, 6, 7)
    out = ulsam(x)
    out.sum().backward()
    assert ulsam.dw_conv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        ulsam.dw_conv.weight.mul_(-2)
        assert (ulsam(x) - out).abs().max() > 1e-4


def test_ulsam_parameter_count_formula():
    for c, g in [(64, 4), (128, 1), (256, 16), (96, 32)]:
        assert num_params(ULSAM(c, groups=g)) == 5 * c + 3 * g
    assert num_params(ULSAM(64)) == 332
