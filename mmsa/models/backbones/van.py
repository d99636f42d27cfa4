"""VAN: the Visual Attention Network backbone, for mmdet and mmseg."""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from ...attention import build_attention
from ...errors import ConfigError, ConfigKeyError
from ..utils import attention_config_errors
from ...registry import MODELS


class VANSpatialAttention(nn.Module):
    """VAN's attention unit: ``proj_2(LKA(GELU(proj_1(x)))) + x``.

    Guo et al., "Visual Attention Network" (arXiv:2202.09741), Fig. 3; the
    shortcut is inside the unit, as in the official code. ``proj_1`` and
    ``proj_2`` are 1x1 convs ``C -> C``; ``spatial_gating_unit`` is mmsa's
    :class:`~mmsa.attention.LargeKernelAttention`, or another attention for
    an ablation (the attribute keeps its name, so the other weights of a
    VAN checkpoint still load).

    Args:
        dim (int): Channels C.
        attention (str | dict): The gating unit. Defaults to ``'LKA'``.
    """

    def __init__(self, dim: int,
                 attention: Union[str, dict] = 'LKA') -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        with attention_config_errors(f'VAN gating unit ({dim} channels)'):
            self.spatial_gating_unit = build_attention(attention, dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.spatial_gating_unit(self.activation(self.proj_1(x)))
        return self.proj_2(out) + x


class VANDepthwiseConv(nn.Module):
    """3x3 depthwise conv, wrapped so its key is ``dwconv.dwconv``.

    Args:
        dim (int): Channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class VANMlp(nn.Module):
    """Conv-MLP: 1x1 ``C -> rC``, 3x3 depthwise, GELU, 1x1 ``rC -> C``.

    Args:
        dim (int): Channels C.
        hidden_dim (int): Hidden channels rC.
        drop_rate (float): Dropout after GELU and after ``fc2``.
            Defaults to 0.
    """

    def __init__(self, dim: int, hidden_dim: int,
                 drop_rate: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.dwconv = VANDepthwiseConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class VANBlock(nn.Module):
    """One VAN block: attention and MLP branches, each with layer scale.

    ``x = x + DropPath(ls1 * attn(norm1(x)))``, then
    ``x = x + DropPath(ls2 * mlp(norm2(x)))``; norms are BatchNorm in the
    official code, layer scales start at 1e-2.

    Args:
        dim (int): Channels C.
        mlp_ratio (float): MLP hidden channels are ``int(C * mlp_ratio)``.
        drop_rate (float): Dropout inside the MLP. Defaults to 0.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        norm_cfg (dict): Config of ``norm1``/``norm2``.
            Defaults to ``dict(type='BN')``.
        attention (str | dict): The gating unit of the attention branch.
            Defaults to ``'LKA'``.
    """

    def __init__(self,
                 dim: int,
                 mlp_ratio: float,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_cfg: Optional[dict] = None,
                 attention: Union[str, dict] = 'LKA') -> None:
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN')
        self.norm1 = build_norm_layer(norm_cfg, dim)[1]
        self.attn = VANSpatialAttention(dim, attention)
        self.drop_path = (DropPath(drop_path_rate)
                          if drop_path_rate > 0. else nn.Identity())
        self.norm2 = build_norm_layer(norm_cfg, dim)[1]
        self.mlp = VANMlp(dim, int(dim * mlp_ratio), drop_rate)
        self.layer_scale_1 = nn.Parameter(torch.full((dim, ), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, ), 1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale_1 = self.layer_scale_1.view(1, -1, 1, 1)
        scale_2 = self.layer_scale_2.view(1, -1, 1, 1)
        x = x + self.drop_path(scale_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(scale_2 * self.mlp(self.norm2(x)))


class VANPatchEmbed(nn.Module):
    """Overlapping patch embedding: strided conv (padding k // 2), then norm.

    Args:
        in_channels (int): Input channels.
        embed_dim (int): Output channels.
        kernel_size (int): 7 for the first stage, 3 after.
        stride (int): 4 for the first stage, 2 after.
        norm_cfg (dict): Config of the norm. Defaults to ``dict(type='BN')``.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dim: int,
                 kernel_size: int,
                 stride: int,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_channels,
            embed_dim,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2)
        self.norm = build_norm_layer(norm_cfg or dict(type='BN'),
                                     embed_dim)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


@MODELS.register_module()
class VAN(BaseModule):
    """VAN backbone: four stages of LKA blocks at strides 4, 8, 16, 32.

    Guo et al., "Visual Attention Network", CVMJ 2023 (arXiv:2202.09741);
    official code Visual-Attention-Network/VAN-Classification (ImageNet) and
    VAN-Segmentation (the backbone used for UperNet on ADE20K).

    Stage ``i`` is an overlapping patch embedding (7x7 stride 4 for the
    first stage, 3x3 stride 2 after, each followed by BatchNorm), ``depths[i]``
    :class:`VANBlock`, and a LayerNorm (eps 1e-6, as the official B0-B6)
    over channels. The outputs are the NCHW maps after each stage's
    LayerNorm. Module and parameter names are the official ones, so the
    ImageNet checkpoints load after
    :func:`mmsa.converters.van.convert_van` (which drops ``head.*``).

    Variants (Table 2 of the paper; params with the 1000-class head):

    ====  =====================  ==============  ============  ======
    arch  embed_dims             depths          mlp_ratios    params
    ====  =====================  ==============  ============  ======
    b0    (32, 64, 160, 256)     (3, 3, 5, 2)    (8, 8, 4, 4)  4.1M
    b1    (64, 128, 320, 512)    (2, 2, 4, 2)    (8, 8, 4, 4)  13.9M
    b2    (64, 128, 320, 512)    (3, 3, 12, 3)   (8, 8, 4, 4)  26.6M
    b3    (64, 128, 320, 512)    (3, 5, 27, 3)   (8, 8, 4, 4)  44.8M
    ====  =====================  ==============  ============  ======

    Example:
        >>> backbone = VAN(arch='b2', out_indices=(0, 1, 2, 3))
        >>> [o.shape[1] for o in backbone(torch.rand(1, 3, 64, 64))]
        [64, 128, 320, 512]

    Args:
        arch (str | dict): ``'b0'``-``'b3'``, or a dict with
            ``embed_dims``, ``depths`` and ``mlp_ratios`` (one per stage).
            Defaults to ``'b0'``.
        in_channels (int): Input image channels. Defaults to 3.
        drop_rate (float): Dropout in the MLPs. Defaults to 0.
        drop_path_rate (float): Stochastic depth rate of the last block;
            it rises linearly from 0 over all blocks. Defaults to 0.
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Defaults to ``(0, 1, 2, 3)``.
        frozen_stages (int): Freeze (eval mode, no gradients) the patch
            embedding, blocks and LayerNorm of the first ``frozen_stages``
            stages; -1 or 0 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep the BatchNorm layers in eval mode while
            training. Defaults to False.
        norm_cfg (dict): Config of the BatchNorm layers in the patch
            embeddings and blocks (VAN-Segmentation uses SyncBN).
            Defaults to ``dict(type='BN', requires_grad=True)``.
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained',
            checkpoint=...)`` for a converted ImageNet checkpoint. Without
            it the official initialisation is used. Defaults to None.
        attention (str | dict): The gating unit inside every block's
            attention branch: ``'LKA'`` (VAN), or any mmsa attention for an
            ablation, e.g. ``'SE'``. Defaults to ``'LKA'``.
    """

    arch_settings: Dict[str, Dict[str, Tuple]] = {
        'b0': dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2),
                   mlp_ratios=(8, 8, 4, 4)),
        'b1': dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2),
                   mlp_ratios=(8, 8, 4, 4)),
        'b2': dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3),
                   mlp_ratios=(8, 8, 4, 4)),
        'b3': dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3),
                   mlp_ratios=(8, 8, 4, 4)),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'b0',
                 in_channels: int = 3,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 attention: Union[str, dict] = 'LKA') -> None:
        super().__init__(init_cfg=init_cfg)
        settings = self._parse_arch(arch)
        self.embed_dims = settings['embed_dims']
        self.depths = settings['depths']
        self.mlp_ratios = settings['mlp_ratios']
        self.num_stages = len(self.depths)
        self.out_indices = tuple(out_indices)
        for index in self.out_indices:
            if not 0 <= index < self.num_stages:
                raise ConfigError(
                    f'VAN: out_indices={self.out_indices} has {index}; each '
                    f'index must be in [0, {self.num_stages - 1}]')
        if not -1 <= frozen_stages <= self.num_stages:
            raise ConfigError(
                f'VAN: frozen_stages={frozen_stages} must be in '
                f'[-1, {self.num_stages}]')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        norm_cfg = norm_cfg or dict(type='BN', requires_grad=True)

        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        first = 0
        for i, (dim, depth, ratio) in enumerate(
                zip(self.embed_dims, self.depths, self.mlp_ratios)):
            patch_embed = VANPatchEmbed(
                in_channels if i == 0 else self.embed_dims[i - 1],
                dim,
                kernel_size=7 if i == 0 else 3,
                stride=4 if i == 0 else 2,
                norm_cfg=norm_cfg)
            blocks = nn.ModuleList([
                VANBlock(dim, ratio, drop_rate, rates[first + j], norm_cfg,
                         attention) for j in range(depth)
            ])
            first += depth
            setattr(self, f'patch_embed{i + 1}', patch_embed)
            setattr(self, f'block{i + 1}', blocks)
            setattr(self, f'norm{i + 1}', nn.LayerNorm(dim, eps=1e-6))
        self._freeze_stages()

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> Dict[str, Tuple]:
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_settings:
                raise ConfigKeyError(
                    f'VAN: unknown arch {arch!r}; choose one of '
                    f'{sorted(cls.arch_settings)} or pass a dict')
            return cls.arch_settings[arch.lower()]
        keys = ('embed_dims', 'depths', 'mlp_ratios')
        if not isinstance(arch, dict) or set(arch) != set(keys):
            raise ConfigError(f'VAN: a custom arch must be a dict with '
                              f'exactly the keys {keys}; got {arch!r}')
        settings = {key: tuple(arch[key]) for key in keys}
        if len({len(value) for value in settings.values()}) != 1:
            raise ConfigError(f'VAN: embed_dims, depths and mlp_ratios need '
                              f'one entry per stage; got {settings}')
        return settings

    def _stage_modules(self, i: int) -> Tuple[nn.Module, ...]:
        return (getattr(self, f'patch_embed{i + 1}'),
                getattr(self, f'block{i + 1}'), getattr(self, f'norm{i + 1}'))

    def _freeze_stages(self) -> None:
        for i in range(max(self.frozen_stages, 0)):
            for module in self._stage_modules(i):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def init_weights(self) -> None:
        """Official initialisation unless ``init_cfg`` is Pretrained; then
        ``init_cfg``, if any."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [
            self.init_cfg
        ]
        if not any(
                isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'
                for cfg in cfgs):
            self._official_init()
        if self.init_cfg is not None:
            super().init_weights()

    def _official_init(self) -> None:
        """VAN-Classification's ``_init_weights`` (its truncated-normal
        Linear init only reaches the classifier head, absent here)."""
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = (m.kernel_size[0] * m.kernel_size[1] *
                           m.out_channels) // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = []
        for i in range(self.num_stages):
            patch_embed, blocks, norm = self._stage_modules(i)
            x = patch_embed(x)
            for block in blocks:
                x = block(x)
            x = norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'VAN':
        """Set the mode, keeping frozen stages and (if norm_eval) BN in eval.
        """
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
