"""Neck hook: an attention on each output level of any neck."""
import logging
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule

from ...attention import build_attention
from ...attention.builder import ADAPTABLE_DEFAULTS, parse_attention_cfg
from ...errors import ConfigError
from ...registry import MODELS, build_model
from ..utils import attention_config_errors

AttentionCfg = Union[str, dict]


@MODELS.register_module()
class AttnNeck(BaseModule):
    """Wrap a neck so that an attention runs on each of its output levels.

    Detection: ``neck=dict(type='AttnNeck', neck=dict(type='FPN', ...),
    attention=dict(type='SA', groups=64))``. Segmentation (UperNet has no
    neck): ``neck=dict(type='AttnNeck', neck=None, in_channels=[256, 512,
    1024, 2048], attention=...)`` gates the decode head's inputs.

    Args:
        neck (dict, optional): The wrapped neck's config; None passes the
            backbone features through. Defaults to None.
        attention (str | dict | list): One attention config for all levels,
            or one per level (None to skip a level).
        in_channels (Sequence[int], optional): Channels per level when
            ``neck`` is None. Defaults to None.
        out_channels (int | Sequence[int], optional): Channels of the
            neck's outputs, if it has no ``out_channels``/``num_outs``
            attributes (FPN has). Defaults to None.
        adapt_groups (bool): When a level's channels do not fit the
            attention's default ``groups`` (or ``reduction``), use the
            largest value below it that fits, with a warning, instead of
            failing. A value written in the attention config is never
            changed: one that does not fit is an error naming the level,
            the value and the values that fit. Defaults to True.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    def __init__(self,
                 attention: Union[AttentionCfg, Sequence[Optional[dict]]],
                 neck: Optional[dict] = None,
                 in_channels: Optional[Sequence[int]] = None,
                 out_channels: Optional[Union[int, Sequence[int]]] = None,
                 adapt_groups: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.neck = build_model(neck) if neck is not None else None
        channels = self._level_channels(in_channels, out_channels)
        if isinstance(attention, (list, tuple)):
            if len(attention) != len(channels):
                raise ConfigError(
                    f'AttnNeck: {len(attention)} attention configs for '
                    f'{len(channels)} levels {channels}; give one per level '
                    f'or a single dict')
            cfgs = list(attention)
        else:
            cfgs = [attention] * len(channels)
        self.attentions = nn.ModuleList(
            nn.Identity() if cfg is None else self._build(cfg, c, level,
                                                          adapt_groups)
            for level, (cfg, c) in enumerate(zip(cfgs, channels)))

    def _level_channels(self, in_channels, out_channels) -> List[int]:
        if out_channels is not None:
            if isinstance(out_channels, int):
                num = getattr(self.neck, 'num_outs', None)
                if num is None:
                    raise ConfigError(
                        'AttnNeck: out_channels is an int but the neck has '
                        'no num_outs; give out_channels as a list per level')
                return [out_channels] * num
            return list(out_channels)
        if self.neck is None:
            if in_channels is None:
                raise ConfigError(
                    'AttnNeck(neck=None) needs in_channels, the channels of '
                    'each backbone level, e.g. [256, 512, 1024, 2048]')
            return list(in_channels)
        c = getattr(self.neck, 'out_channels', None)
        n = getattr(self.neck, 'num_outs', None)
        if isinstance(c, int) and isinstance(n, int):
            return [c] * n
        raise ConfigError(
            f'AttnNeck: cannot infer the output channels of '
            f'{type(self.neck).__name__}; pass out_channels=[...] per level')

    @staticmethod
    def _build(cfg: AttentionCfg, channels: int, level: int,
               adapt_groups: bool) -> nn.Module:
        """The attention of one level; only a default may be adapted."""
        where = f'AttnNeck level {level} ({channels} channels)'
        with attention_config_errors(where):
            try:
                return build_attention(cfg, channels, adapt_defaults=False)
            except ValueError as err:
                strict = err
            written = [
                k for k in ADAPTABLE_DEFAULTS if k in parse_attention_cfg(cfg)
            ]
            if not adapt_groups or written:
                raise strict
            # the builder lowers a default that does not fit to the
            # largest value that does
            module = build_attention(cfg, channels)
        print_log(
            f'{where}: {strict}; the attention\'s default does not fit, so '
            f'the neck uses {type(module).__name__}({module.extra_repr()}); '
            f'set the value in the attention config to choose another',
            logger='current', level=logging.WARNING)
        return module

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor]:
        outs = self.neck(inputs) if self.neck is not None else inputs
        if len(outs) != len(self.attentions):
            raise ConfigError(
                f'AttnNeck: got {len(outs)} levels, built attention for '
                f'{len(self.attentions)}; check in_channels/out_channels')
        return tuple(att(x) for att, x in zip(self.attentions, outs))
