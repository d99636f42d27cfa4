"""The official forwards of SA, SE, ECA, SGE and CBAM, written out from the
authors' code on explicit tensors, and :func:`randomize_`.

The tests compare mmsa's modules with these forms and the benchmark times
them as the "official" baseline, so both measure against one reference.
Nothing in :mod:`mmsa` imports this module: the forms are independent of
mmsa's implementations (no mmsa op, no fused kernel).
"""
from typing import Callable, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['randomize_', 'official_sa', 'official_se', 'official_eca',
           'official_sge', 'official_cbam', 'OFFICIAL_FORWARDS']


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and norm buffer with seeded non-init values.

    The paper inits (SA's and SGE's zero weights) make half the math
    vanish and would hide a bug; running variances stay in [0.5, 1.5).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        for name, buf in module.named_buffers():
            if name.endswith('running_mean'):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.2)
            elif name.endswith('running_var'):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    return module


def official_sa(x: torch.Tensor, groups: int, cweight: torch.Tensor,
                cbias: torch.Tensor, sweight: torch.Tensor,
                sbias: torch.Tensor, gn_weight: torch.Tensor,
                gn_bias: torch.Tensor) -> torch.Tensor:
    """``sa_layer.forward`` of wofmanaf/SA-Net."""
    b, c, h, w = x.shape
    x = x.reshape(b * groups, -1, h, w)
    x_0, x_1 = x.chunk(2, dim=1)
    xn = F.adaptive_avg_pool2d(x_0, 1)
    xn = cweight * xn + cbias
    xn = x_0 * torch.sigmoid(xn)
    xs = F.group_norm(x_1, x_1.shape[1], gn_weight, gn_bias, eps=1e-5)
    xs = sweight * xs + sbias
    xs = x_1 * torch.sigmoid(xs)
    out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
    out = out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4)
    return out.reshape(b, -1, h, w)


def official_se(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Hu et al.'s SE block: GAP, Linear, ReLU, Linear, sigmoid, scale
    (``w1``: hidden x C, ``w2``: C x hidden)."""
    b, c = x.shape[:2]
    y = F.adaptive_avg_pool2d(x, 1).view(b, c)
    y = F.relu(F.linear(y, w1, b1))
    y = torch.sigmoid(F.linear(y, w2, b2))
    return x * y.view(b, c, 1, 1).expand_as(x)


def official_eca(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``eca_layer.forward`` of BangguWu/ECANet (``weight``: its Conv1d's,
    1 x 1 x k, no bias)."""
    k = weight.shape[-1]
    y = F.adaptive_avg_pool2d(x, 1)
    y = F.conv1d(y.squeeze(-1).transpose(-1, -2), weight,
                 padding=(k - 1) // 2).transpose(-1, -2).unsqueeze(-1)
    return x * torch.sigmoid(y).expand_as(x)


def official_sge(x: torch.Tensor, groups: int, weight: torch.Tensor,
                 bias: torch.Tensor) -> torch.Tensor:
    """``SpatialGroupEnhance.forward`` of implus/PytorchInsight."""
    b, c, h, w = x.size()
    x = x.view(b * groups, -1, h, w)
    xn = x * F.adaptive_avg_pool2d(x, 1)
    xn = xn.sum(dim=1, keepdim=True)
    t = xn.view(b * groups, -1)
    t = t - t.mean(dim=1, keepdim=True)
    std = t.std(dim=1, keepdim=True) + 1e-5
    t = t / std
    t = t.view(b, groups, h, w)
    t = t * weight + bias
    t = t.view(b * groups, 1, h, w)
    x = x * torch.sigmoid(t)
    return x.view(b, c, h, w)


def official_cbam(x: torch.Tensor, fc1_w: torch.Tensor, fc1_b: torch.Tensor,
                  fc2_w: torch.Tensor, fc2_b: torch.Tensor,
                  conv_w: torch.Tensor, bn_mean: torch.Tensor,
                  bn_var: torch.Tensor, bn_w: torch.Tensor,
                  bn_b: torch.Tensor, training: bool) -> torch.Tensor:
    """``CBAM.forward`` of Jongchan/attention-module. The spatial BN's
    running statistics are copied, not updated."""
    # ChannelGate: a Flatten-Linear-ReLU-Linear MLP on each pooled vector.
    channel_att_sum = None
    for pool_type in ('avg', 'max'):
        size = (x.size(2), x.size(3))
        if pool_type == 'avg':
            pool = F.avg_pool2d(x, size, stride=size)
        else:
            pool = F.max_pool2d(x, size, stride=size)
        flat = pool.view(pool.size(0), -1)
        channel_att_raw = F.linear(F.relu(F.linear(flat, fc1_w, fc1_b)),
                                   fc2_w, fc2_b)
        if channel_att_sum is None:
            channel_att_sum = channel_att_raw
        else:
            channel_att_sum = channel_att_sum + channel_att_raw
    scale = torch.sigmoid(channel_att_sum).unsqueeze(2).unsqueeze(3)
    x = x * scale.expand_as(x)
    # SpatialGate: ChannelPool (max first) -> BasicConv(conv, BN, no ReLU).
    x_compress = torch.cat((torch.max(x, 1)[0].unsqueeze(1),
                            torch.mean(x, 1).unsqueeze(1)), dim=1)
    k = conv_w.shape[-1]
    x_out = F.conv2d(x_compress, conv_w, padding=(k - 1) // 2)
    x_out = F.batch_norm(x_out, bn_mean.clone(), bn_var.clone(), bn_w, bn_b,
                         training=training, momentum=0.01, eps=1e-5)
    return x * torch.sigmoid(x_out)


def _flat(conv: nn.Module) -> tuple:
    """A 1x1 convolution's weight and bias as a Linear's."""
    return conv.weight.flatten(1), conv.bias


#: name -> ``forward(module, x)``: the official form on the parameters of
#: an mmsa module of that name (ShuffleAttention, SqueezeExcitation,
#: EfficientChannelAttention, SpatialGroupEnhance, CBAM).
OFFICIAL_FORWARDS: Dict[str, Callable[[nn.Module, torch.Tensor],
                                      torch.Tensor]] = {
    'SA': lambda m, x: official_sa(x, m.groups, m.cweight, m.cbias,
                                   m.sweight, m.sbias, m.gn.weight,
                                   m.gn.bias),
    'SE': lambda m, x: official_se(x, *_flat(m.fc1), *_flat(m.fc2)),
    'ECA': lambda m, x: official_eca(x, m.conv.weight),
    'SGE': lambda m, x: official_sge(x, m.groups, m.weight, m.bias),
    'CBAM': lambda m, x: official_cbam(
        x, m.channel_fc1.weight, m.channel_fc1.bias, m.channel_fc2.weight,
        m.channel_fc2.bias, m.spatial_conv.weight, m.spatial_bn.running_mean,
        m.spatial_bn.running_var, m.spatial_bn.weight, m.spatial_bn.bias,
        m.training),
}
