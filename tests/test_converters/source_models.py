"""The source models' layouts, re-created here independently of mmsa.

A torchvision-style ResNet (stride in the 3x3 conv, ``downsample.0/1``,
``fc``) whose bottlenecks take an attention after ``bn3`` under the source's
attribute name, and the attentions as the official repositories compute
them. Only what the converters' tests need: no init schemes, no options.
"""
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn
from testing_utils import randomize_

AttnFactory = Callable[[int, int], nn.Module]  # (channels, stage) -> module


class OfficialSA(nn.Module):
    """SA as in wofmanaf/SA-Net ``sa_layer``: groups, halves, shuffle."""

    def __init__(self, channels: int, groups: int = 64) -> None:
        super().__init__()
        self.groups = groups
        k = channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.gn = nn.GroupNorm(k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        xn = nn.functional.adaptive_avg_pool2d(x_0, 1)
        xn = x_0 * torch.sigmoid(self.cweight * xn + self.cbias)
        xs = x_1 * torch.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
        return out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3,
                                                   4).reshape(b, -1, h, w)


class OfficialECA(nn.Module):
    """ECA as in BangguWu/ECANet ``eca_layer``."""

    def __init__(self, k_size: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1,
                              1,
                              k_size,
                              padding=(k_size - 1) // 2,
                              bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2))
        y = torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))
        return x * y.expand_as(x)


class TimmSE(nn.Module):
    """timm ``SEModule``: fc1, bn (identity), act, fc2, sigmoid gate."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.bn(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * s.sigmoid()


class _ConvAct(nn.Module):
    """mmcv ``ConvModule`` without norm: ``conv`` then the activation."""

    def __init__(self, cin: int, cout: int, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=True)
        self.activate = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.conv(x))


class MMPretrainSE(nn.Module):
    """mmpretrain ``SELayer``: pool, ConvModule+ReLU, ConvModule+Sigmoid."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = _ConvAct(channels, hidden, nn.ReLU(inplace=True))
        self.conv2 = _ConvAct(hidden, channels, nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv2(self.conv1(self.global_avgpool(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int,
                 attn: Optional[nn.Module], attn_name: str) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.attn_name = attn_name if attn is not None else None
        if attn is not None:
            self.add_module(attn_name, attn)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias=False),
                nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attn_name is not None:
            out = getattr(self, self.attn_name)(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class SourceResNet(nn.Module):
    """torchvision ResNet-50 layout with ``fc``; ``features`` returns the
    four stage outputs."""

    def __init__(self,
                 attn: Optional[AttnFactory] = None,
                 attn_name: str = 'attn',
                 layers: Sequence[int] = (3, 4, 6, 3),
                 last_only: bool = False,
                 with_fc: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for s, n in enumerate(layers):
            planes = 64 * 2**s
            blocks = []
            for b in range(n):
                use = attn is not None and (not last_only or b == n - 1)
                module = attn(planes * 4, s) if use else None
                blocks.append(
                    Bottleneck(inplanes, planes, 2 if b == 0 and s else 1,
                               module, attn_name))
                inplanes = planes * 4
            self.add_module(f'layer{s + 1}', nn.Sequential(*blocks))
        if with_fc:
            self.fc = nn.Linear(inplanes, 1000)

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for s in range(1, 5):
            x = getattr(self, f'layer{s}')(x)
            outs.append(x)
        return outs


class MMPretrainClassifier(nn.Module):
    """mmpretrain ``ImageClassifier`` naming: ``backbone.*``, ``head.fc``."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.backbone = SourceResNet(with_fc=False, **kwargs)
        self.head = nn.Module()
        self.head.fc = nn.Linear(2048, 1000)

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.backbone.features(x)


def randomize_network_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random parameters and BN statistics (``randomize_``), with conv
    weights scaled by ``1/sqrt(fan_in)`` so 16 blocks keep features O(1)."""
    randomize_(model, seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.mul_(2 / fan_in**0.5)
    return model.eval()
