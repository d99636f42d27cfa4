"""Attention for ResNet blocks and stages, shared by the mmdet and mmseg
backbones.

mmdet's and mmseg's ResNets have the same block layout (``conv1..3``,
``norm1..3``, ``relu``, ``downsample``, ``with_cp``) and the same stem, so the
forwards below are written once and mixed into subclasses of each
framework's blocks and backbone (``det_resnet.py``, ``seg_resnet.py``).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from ...attention import build_attention
from ...errors import ConfigError, ConfigKeyError
from ...ops import block_end
from ..utils import attention_config_errors

POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')
BLOCK_CHOICES = ('all', 'last')

AttentionCfg = Optional[Union[str, dict, Sequence[Optional[dict]]]]


def attention_name(module: nn.Module, taken) -> str:
    """Attribute name from ``_abbr_`` (``sa``, ``eca``...): the official
    checkpoints' key, e.g. ``layer1.0.sa.cweight``; numbered when reused."""
    base = getattr(module, '_abbr_', type(module).__name__.lower())
    name, n = base, 1
    while name in taken:
        n += 1
        name = f'{base}{n}'
    return name


def _hooked(module: nn.Module) -> bool:
    """Whether forward hooks watch ``module`` (its own or global ones)."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks)


class AttentionBlockMixin:
    """Runs stock plugins, then mmsa attentions, at each block position,
    and ends the block with :func:`~mmsa.ops.block_end`.

    Unlike mmseg 1.2.2's ``forward_plugin`` every module at a position gets
    the previous one's output, so several attentions at one position all
    take effect.
    """

    def add_attention(self, cfg: Union[str, dict], position: str) -> str:
        channels = self._position_channels(position)
        if not hasattr(self, 'attention_names'):
            self.attention_names: Dict[str, List[str]] = {
                p: []
                for p in POSITIONS
            }
        # The module's message names its channels; say which block.
        where = getattr(self, 'attention_path', type(self).__name__)
        with attention_config_errors(f'{where}, {position} ({channels} '
                                     f'channels)'):
            module = build_attention(cfg, channels)
        name = attention_name(module, dict(self.named_children()))
        self.add_module(name, module)
        self.attention_names[position].append(name)
        return name

    def _position_channels(self, position: str) -> int:
        raise NotImplementedError

    def _steps(self, position: str) -> List[Tuple[nn.Module, bool]]:
        """The modules at ``position`` in order, each with whether it is an
        mmsa attention: stock plugins first, then mmsa attentions."""
        steps = []
        if getattr(self, 'with_plugins', False):
            steps += [(getattr(self, name), False)
                      for name in getattr(self, f'{position}_plugin_names')]
        names = getattr(self, 'attention_names', {}).get(position, ())
        return steps + [(getattr(self, name), True) for name in names]

    def _after(self, position: str, out: torch.Tensor) -> torch.Tensor:
        """Stock plugins, then mmsa attentions, at ``position``."""
        for module, _ in self._steps(position):
            out = module(out)
        return out

    def _end(self, z: torch.Tensor, norm: nn.Module,
             identity: torch.Tensor, positions: Sequence[str]
             ) -> torch.Tensor:
        """The block's last steps on its last conv's output ``z``: the norm,
        the modules at ``positions``, the residual add and the ReLU.

        Where the last of them is an mmsa attention, it ends the block
        through :func:`~mmsa.ops.block_end` (one op; with the norm too where
        the attention is the only module there). A module with forward
        hooks runs as a module, so that its hooks see its input and output.
        Without any attention: the stock ResNet's steps, bit for bit.
        """
        steps = [step for p in positions for step in self._steps(p)]
        fuse = bool(steps) and steps[-1][1] and not _hooked(steps[-1][0])
        if fuse and len(steps) == 1 and not _hooked(norm):
            return block_end(z, steps[0][0], norm, identity)
        out = norm(z)
        for module, _ in steps[:-1] if fuse else steps:
            out = module(out)
        if fuse:
            return block_end(out, steps[-1][0], None, identity)
        out += identity
        return self.relu(out)

    def _checkpointed(self, inner, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(inner, x, use_reentrant=False)
        return inner(x)


class AttentionBottleneckMixin(AttentionBlockMixin):
    """Bottleneck forward with attention after conv1/conv2/conv3(+norm)."""

    def _position_channels(self, position: str) -> int:
        conv = {'after_conv1': self.conv1, 'after_conv2': self.conv2,
                'after_conv3': self.conv3}[position]
        return conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def inner(x):
            identity = x
            out = self.relu(self.norm1(self.conv1(x)))
            out = self._after('after_conv1', out)
            out = self.relu(self.norm2(self.conv2(out)))
            out = self._after('after_conv2', out)
            out = self.conv3(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            return self._end(out, self.norm3, identity, ('after_conv3', ))

        return self._checkpointed(inner, x)


class AttentionBasicBlockMixin(AttentionBlockMixin):
    """BasicBlock forward with attention (stock mmdet/mmseg refuse plugins
    here). A BasicBlock has two convs: ``after_conv3`` (the default, "after
    the last norm, before the residual add") means the same place as
    ``after_conv2``."""

    def _position_channels(self, position: str) -> int:
        conv = self.conv1 if position == 'after_conv1' else self.conv2
        return conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def inner(x):
            identity = x
            out = self.relu(self.norm1(self.conv1(x)))
            out = self._after('after_conv1', out)
            out = self.conv2(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            return self._end(out, self.norm2, identity,
                             ('after_conv2', 'after_conv3'))

        return self._checkpointed(inner, x)


def per_stage(value, num_stages: int, what: str) -> list:
    """Expand a single value to one per stage, or check a per-stage list."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_stages:
            raise ConfigError(
                f'{what} has {len(value)} entries but the backbone has '
                f'num_stages={num_stages}; give one per stage or a single '
                f'value for all')
        return list(value)
    return [value] * num_stages


def stage_mask(value, num_stages: int, what: str) -> List[bool]:
    """One bool per stage from ``value``, refusing what reads ambiguously.

    A sequence of bools (or 0/1) with one entry per stage, or a string of
    ``T``/``F`` letters such as ``'FTTT'`` (case-insensitive). Anything
    else, in particular ``True`` or ``'all'``, is an error: ``bool('F')`` is
    True, so letters must never be read as truthy values.
    """
    example = ', '.join(['True'] * num_stages)
    fix = (f'give one bool per stage, e.g. ({example}) for all '
           f'{num_stages} stages, or a string of T/F letters such as '
           f"{'F' + 'T' * (num_stages - 1)!r}")
    if isinstance(value, str):
        letters = value.upper()
        if len(letters) == num_stages and set(letters) <= set('TF'):
            return [c == 'T' for c in letters]
        raise ConfigError(f'{what}={value!r} is not a stage mask; {fix}')
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f'{what}={value!r} is not a stage mask; {fix}')
    if len(value) != num_stages:
        raise ConfigError(
            f'{what} has {len(value)} entries but the backbone has '
            f'num_stages={num_stages}; {fix}')
    bad = [v for v in value if not (isinstance(v, bool) or
                                    (isinstance(v, int) and v in (0, 1)))]
    if bad:
        raise ConfigError(f'{what}={value!r}: entries must be True/False, '
                         f'got {bad[0]!r}; {fix}')
    return [bool(v) for v in value]


def check_not_also_a_plugin(block: nn.Module, name: str, position: str,
                            where: str) -> None:
    """Refuse an attention that a stock ``plugins`` entry already puts at
    the same position of ``block`` (e.g. ``attention=dict(type='SE')`` plus
    an SE plugin would give every block two SE modules, ``se`` and
    ``se2``). Different types at one position are a legitimate stack."""
    if not getattr(block, 'with_plugins', False):
        return
    module = getattr(block, name)
    for plugin_name in getattr(block, f'{position}_plugin_names', ()):
        plugin = getattr(block, plugin_name)
        if isinstance(plugin, type(module)) or isinstance(module,
                                                          type(plugin)):
            raise ConfigError(
                f'attention ({where}.{name}: {type(module).__name__}) and '
                f'a plugins entry ({where}.{plugin_name}: '
                f'{type(plugin).__name__}) are both at {position}, so every '
                f'block would apply it twice; keep one: remove that '
                f'plugins entry or set attention=None')


class AttentionResNetMixin:
    """Adds block-level and stage-level attention to a ResNet backbone.

    Every option given has an effect, or the backbone is refused with a
    :class:`~mmsa.errors.ConfigError` naming it: a placement option
    (``attention_stages``, ``attention_position``, ``attention_blocks``,
    ``stage_attention_stages``) without its attention, or a stage mask or
    per-stage list that leaves no stage an attention.

    Args (keyword, in addition to the framework ResNet's):
        attention (str | dict | list, optional): Block attention, e.g.
            ``dict(type='SA', groups=64)``; a list gives one config (or None)
            per stage. None: the plain ResNet, bit-identical to the
            framework's with the same seed. Defaults to None.
        attention_stages (Sequence[bool], optional): Stages whose blocks
            get the attention. Defaults to None: all.
        attention_position (str, optional): ``'after_conv1'``,
            ``'after_conv2'`` or ``'after_conv3'`` (after the last norm,
            before the residual add, as in SE/ECA/SA). Defaults to None:
            ``'after_conv3'``.
        attention_blocks (str | Sequence[str], optional): ``'all'`` blocks
            of a stage or only its ``'last'`` (the SA author's advice for
            speed); one value or one per stage. Defaults to None: ``'all'``.
        stage_attention (str | dict | list, optional): Stage-level attention
            applied to a stage's output before the next stage (BAM sits
            after layer1..3). Defaults to None.
        stage_attention_stages (Sequence[bool], optional): Stages after
            which the stage attention runs. Defaults to None: all but the
            last.
    """

    def __init__(self,
                 depth: int,
                 attention: AttentionCfg = None,
                 attention_stages: Optional[Sequence[bool]] = None,
                 attention_position: Optional[str] = None,
                 attention_blocks: Optional[Union[str,
                                                  Sequence[str]]] = None,
                 stage_attention: AttentionCfg = None,
                 stage_attention_stages: Optional[Sequence[bool]] = None,
                 **kwargs) -> None:
        if depth not in self.arch_settings:
            raise ConfigKeyError(
                f'{type(self).__name__}: invalid depth {depth}; choose one '
                f'of {sorted(self.arch_settings)}')
        super().__init__(depth=depth, **kwargs)
        for layer_name in self.res_layers:
            for j, block in enumerate(getattr(self, layer_name)):
                block.attention_path = f'{layer_name}.{j}'
        self._restore_zero_init_residual(kwargs.get('init_cfg'),
                                         kwargs.get('pretrained'))
        self._init_attention(attention, attention_stages, attention_position,
                             attention_blocks, stage_attention,
                             stage_attention_stages)

    def _init_attention(
        self,
        attention: AttentionCfg,
        attention_stages: Optional[Sequence[bool]],
        attention_position: Optional[str],
        attention_blocks: Optional[Union[str, Sequence[str]]],
        stage_attention: AttentionCfg,
        stage_attention_stages: Optional[Sequence[bool]],
    ) -> None:
        n = self.num_stages
        cfgs = self._stage_cfgs(
            attention, attention_stages, n, 'attention', default=[True] * n,
            placement=dict(attention_position=attention_position,
                           attention_blocks=attention_blocks))
        stage_cfgs = self._stage_cfgs(
            stage_attention, stage_attention_stages, n, 'stage_attention',
            default=[True] * (n - 1) + [False])
        if attention_position is None:
            attention_position = 'after_conv3'
        if attention_position not in POSITIONS:
            raise ConfigError(
                f'attention_position={attention_position!r} is unknown; '
                f'choose one of {list(POSITIONS)} (after_conv3 = after the '
                f'last norm, before the residual add)')
        blocks = per_stage('all' if attention_blocks is None else
                           attention_blocks, n, 'attention_blocks')
        for b in blocks:
            if b not in BLOCK_CHOICES:
                raise ConfigError(f'attention_blocks={attention_blocks!r}: '
                                  f'each entry must be one of '
                                  f'{list(BLOCK_CHOICES)}')
        self.attention_position = attention_position
        for i, layer_name in enumerate(self.res_layers):
            layer = getattr(self, layer_name)
            if cfgs[i] is not None:
                first = 0 if blocks[i] == 'all' else len(layer) - 1
                for j in range(first, len(layer)):
                    name = layer[j].add_attention(cfgs[i], attention_position)
                    check_not_also_a_plugin(layer[j], name,
                                            attention_position,
                                            f'{layer_name}.{j}')
        self.stage_attention_names: List[Optional[str]] = []
        for i, cfg in enumerate(stage_cfgs):
            name = None
            if cfg is not None:
                channels = self._stage_out_channels(i)
                with attention_config_errors(
                        f'stage_attention after {self.res_layers[i]} '
                        f'({channels} channels)'):
                    module = build_attention(cfg, channels)
                name = f'{attention_name(module, ())}{i + 1}'
                self.add_module(name, module)
            self.stage_attention_names.append(name)
        # The framework froze stages before the attention modules existed.
        self._freeze_stages()

    @staticmethod
    def _stage_cfgs(cfg: AttentionCfg,
                    stages: Optional[Sequence[bool]],
                    n: int,
                    what: str,
                    default: List[bool],
                    placement: Optional[Dict] = None) -> list:
        """The attention config of each stage (None: no attention there).

        Errors, not warnings: a config whose placement options place
        nothing would train another model than the one it reads as.
        """
        given = {f'{what}_stages': stages, **(placement or {})}
        given = {k: v for k, v in given.items() if v is not None}
        if cfg is None:
            if given:
                values = ', '.join(f'{k}={v!r}' for k, v in given.items())
                raise ConfigError(
                    f'{values} {"is" if len(given) == 1 else "are"} set but '
                    f'{what} is None, so no stage would get attention; set '
                    f"{what}=dict(type='SA') (or another type) or remove "
                    f'{" and ".join(given)} ({next(iter(given))}=None where '
                    f'a base config sets it)')
            return [None] * n
        cfgs = per_stage(cfg, n, what)
        mask = default if stages is None else stage_mask(
            stages, n, f'{what}_stages')
        chosen = [c if on else None for c, on in zip(cfgs, mask)]
        if all(c is None for c in chosen):
            if stages is not None:
                raise ConfigError(
                    f'{what}_stages={stages!r} selects no stage, so {what} '
                    f"is built nowhere; select the stages to get it (e.g. "
                    f"{what}_stages={'F' + 'T' * (n - 1)!r}) or set "
                    f'{what}=None for the plain ResNet')
            raise ConfigError(
                f'{what}={cfg!r} gives no stage an attention; set {what}='
                f'None for the plain ResNet')
        return chosen

    def _stage_out_channels(self, i: int) -> int:
        return self.base_channels * 2**i * self.block.expansion

    def _restore_zero_init_residual(self, init_cfg, pretrained) -> None:
        """The frameworks set a block init_cfg only if ``block is
        BasicBlock/Bottleneck`` (their own classes); redo it for ours."""
        if not (self.zero_init_residual and init_cfg is None
                and pretrained is None):
            return
        last_norm = 'norm3' if self.block.expansion == 4 else 'norm2'
        for layer_name in self.res_layers:
            for block in getattr(self, layer_name):
                block.init_cfg = dict(
                    type='Constant', val=0, override=dict(name=last_norm))

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        for i, name in enumerate(getattr(self, 'stage_attention_names', ())):
            if name is not None and i < self.frozen_stages:
                module = getattr(self, name)
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def init_weights(self) -> None:
        """As the framework's; after a ``Pretrained`` init, logs the
        attention modules the checkpoint had no tensors for: they keep their
        paper initialisation. INFO when the checkpoint has no attention at
        all (a plain ResNet), WARNING when it has some but not these."""
        import logging

        from mmengine.logging import print_log

        from ...utils.checkpoint import (attention_modules_without_weights,
                                         checkpoint_keys)
        done = getattr(self, '_is_init', False)
        super().init_weights()
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) \
            else [self.init_cfg]
        pretrained = [
            c for c in cfgs
            if isinstance(c, dict) and c.get('type') == 'Pretrained'
        ]
        if done or not pretrained:
            return
        cfg = pretrained[-1]
        keys = checkpoint_keys(cfg['checkpoint'], cfg.get('prefix'),
                               cfg.get('map_location', 'cpu'))
        at_init = attention_modules_without_weights(self, keys)
        if not at_init:
            return
        every = attention_modules_without_weights(self, ())
        partial = len(at_init) < len(every)
        print_log(
            f'{cfg["checkpoint"]} has no tensors for {len(at_init)} of '
            f'{len(every)} attention modules; they keep their paper '
            f'initialisation: {", ".join(at_init)}',
            logger='current',
            level=logging.WARNING if partial else logging.INFO)

    def train(self, mode: bool = True):
        """As the framework's (frozen stages, ``norm_eval``), but returns
        ``self`` like ``nn.Module.train`` so ``model.eval()`` chains."""
        super().train(mode)
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            name = self.stage_attention_names[i]
            if name is not None:
                x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def attention_summary(self) -> Dict[str, int]:
        """Count of attention modules per type, e.g. ``{'sa': 16}``."""
        counts: Dict[str, int] = {}
        for layer_name in self.res_layers:
            for block in getattr(self, layer_name):
                for names in getattr(block, 'attention_names', {}).values():
                    for name in names:
                        key = type(getattr(block, name)).__name__
                        counts[key] = counts.get(key, 0) + 1
        for name in self.stage_attention_names:
            if name is not None:
                key = type(getattr(self, name)).__name__
                counts[key] = counts.get(key, 0) + 1
        return counts
